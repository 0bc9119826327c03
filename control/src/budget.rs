//! Mbuf accounting per NUMA node: before a port is opened rvsd checks that
//! its pool can back the port's rings and in-flight bursts, and refuses the
//! port (Interface `error`) with how much is missing instead of running dry.
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct Budget {
    /// Pool size per NUMA node.
    pools: BTreeMap<i32, u64>,
    reserved: BTreeMap<i32, u64>,
    /// Bytes one mbuf costs in hugepage memory (for the advice).
    pub mbuf_bytes: u64,
    /// Kept free for flood copies and PMD bursts in flight.
    pub slack: u64,
}

impl Budget {
    pub fn new(mbuf_bytes: u64, slack: u64) -> Budget {
        Budget {
            mbuf_bytes,
            slack,
            ..Default::default()
        }
    }

    pub fn add_pool(&mut self, numa: i32, size: u64) {
        self.pools.insert(numa, size);
    }

    /// The node whose pool serves `numa` (its own, or the first there is).
    pub fn node_for(&self, numa: i32) -> Option<i32> {
        if self.pools.contains_key(&numa) {
            Some(numa)
        } else {
            self.pools.keys().next().copied()
        }
    }

    pub fn free(&self, numa: i32) -> u64 {
        let size = self.pools.get(&numa).copied().unwrap_or(0);
        size.saturating_sub(self.slack + self.reserved.get(&numa).copied().unwrap_or(0))
    }

    /// Reserves `need` mbufs on `numa`'s pool, or says what is missing.
    pub fn reserve(&mut self, numa: i32, need: u64) -> Result<(), String> {
        let Some(node) = self.node_for(numa) else {
            return Err("no mbuf pool exists (DPDK not initialised)".into());
        };
        let free = self.free(node);
        if need > free {
            let missing = need - free;
            let mb = (missing * self.mbuf_bytes).div_ceil(1 << 20);
            return Err(format!(
                "not enough packet buffers on NUMA node {node}: the port needs {need} mbufs, {free} of the pool's {} are unreserved ({missing} missing: raise other_config:dpdk-socket-mem by at least {mb} MB and restart rvsd)",
                self.pools[&node]
            ));
        }
        *self.reserved.entry(node).or_default() += need;
        Ok(())
    }

    pub fn release(&mut self, numa: i32, n: u64) {
        if let Some(node) = self.node_for(numa) {
            let r = self.reserved.entry(node).or_default();
            *r = r.saturating_sub(n);
        }
    }

    pub fn reserved(&self, numa: i32) -> u64 {
        self.reserved.get(&numa).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_the_pool_cannot_back_and_says_how_much() {
        let mut b = Budget::new(2432, 100);
        b.add_pool(0, 1100);
        b.reserve(0, 600).unwrap();
        let e = b.reserve(0, 600).unwrap_err();
        assert!(
            e.contains("needs 600 mbufs, 400 of the pool's 1100 are unreserved (200 missing"),
            "{e}"
        );
        assert!(e.contains("by at least 1 MB"), "{e}");
        b.release(0, 600);
        b.reserve(0, 1000).unwrap();
        assert_eq!(b.reserved(0), 1000);
        // A port on a node without its own pool uses the first pool.
        assert_eq!(b.node_for(3), Some(0));
    }
}
