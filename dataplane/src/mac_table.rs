//! The MAC learning table of one bridge, shared by every PMD without locks.
//!
//! A fixed array of 4-way buckets. Each entry is two atomics: the key
//! (valid bit | VLAN | MAC) and the value (port slot | key fingerprint |
//! time learned). Writers store the value before the key; readers check the
//! value's fingerprint against the key they looked for, so a reader racing a
//! replacement sees a miss (and floods), never another key's port. Port
//! slots that left the bridge are flushed by the control thread after the
//! PMDs have moved to a snapshot without them.
use crate::wire::MacAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const WAYS: usize = 4;
const VALID: u64 = 1 << 63;

struct Entry {
    key: AtomicU64,
    val: AtomicU64,
}

pub struct MacTable {
    entries: Box<[Entry]>,
    bucket_mask: usize,
    aging_secs: AtomicU32,
    /// Entries replaced while still live because their bucket was full.
    pub evictions: AtomicU64,
    pub learned: AtomicU64,
}

/// One learned address, for `fdb/show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub port: u16,
    pub vlan: u16,
    pub mac: MacAddr,
    pub age: u32,
}

#[inline]
fn make_key(vlan: u16, mac: MacAddr) -> u64 {
    VALID | ((vlan as u64 & 0xfff) << 48) | mac.as_u64()
}

#[inline]
fn hash(key: u64) -> u64 {
    (key ^ (key >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[inline]
fn fingerprint(key: u64) -> u64 {
    (hash(key) >> 16) & 0xffff
}

#[inline]
fn make_val(port: u16, key: u64, now: u32) -> u64 {
    ((port as u64) << 48) | (fingerprint(key) << 32) | now as u64
}

#[inline]
fn val_port(v: u64) -> u16 {
    (v >> 48) as u16
}

#[inline]
fn val_time(v: u64) -> u32 {
    v as u32
}

impl MacTable {
    /// A table for at least `capacity` addresses (OVS's mac-table-size),
    /// forgetting them after `aging_secs` (mac-aging-time).
    pub fn new(capacity: usize, aging_secs: u32) -> MacTable {
        let buckets = (capacity.max(WAYS) / WAYS).next_power_of_two();
        let entries = (0..buckets * WAYS)
            .map(|_| Entry {
                key: AtomicU64::new(0),
                val: AtomicU64::new(0),
            })
            .collect();
        MacTable {
            entries,
            bucket_mask: buckets - 1,
            aging_secs: AtomicU32::new(aging_secs.max(1)),
            evictions: AtomicU64::new(0),
            learned: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub fn set_aging(&self, secs: u32) {
        self.aging_secs.store(secs.max(1), Ordering::Relaxed);
    }

    #[inline]
    fn bucket(&self, key: u64) -> &[Entry] {
        let b = (hash(key) as usize >> 7) & self.bucket_mask;
        &self.entries[b * WAYS..b * WAYS + WAYS]
    }

    #[inline]
    fn live(&self, v: u64, now: u32) -> bool {
        now.wrapping_sub(val_time(v)) < self.aging_secs.load(Ordering::Relaxed)
    }

    /// The port slot `mac` was last seen on in `vlan`, if still fresh.
    #[inline]
    pub fn lookup(&self, vlan: u16, mac: MacAddr, now: u32) -> Option<u16> {
        let key = make_key(vlan, mac);
        for e in self.bucket(key) {
            if e.key.load(Ordering::Acquire) == key {
                let v = e.val.load(Ordering::Acquire);
                if (v >> 32) & 0xffff == fingerprint(key) && self.live(v, now) {
                    return Some(val_port(v));
                }
                return None;
            }
        }
        None
    }

    /// Records that `mac` in `vlan` was seen on `port` at `now` (seconds).
    #[inline]
    pub fn learn(&self, vlan: u16, mac: MacAddr, port: u16, now: u32) {
        let key = make_key(vlan, mac);
        let bucket = self.bucket(key);
        let mut victim = 0;
        let mut victim_time = u32::MAX;
        let mut victim_live = true;
        for (i, e) in bucket.iter().enumerate() {
            let k = e.key.load(Ordering::Acquire);
            if k == key {
                let v = e.val.load(Ordering::Relaxed);
                // Rewrite only on a move or once a second: a hot flow must not
                // bounce the cache line between PMDs on every frame.
                if val_port(v) != port || val_time(v) != now {
                    e.val.store(make_val(port, key, now), Ordering::Release);
                }
                return;
            }
            let v = e.val.load(Ordering::Relaxed);
            let live = k != 0 && self.live(v, now);
            if !live && victim_live {
                victim = i;
                victim_live = false;
            } else if live && victim_live && val_time(v) < victim_time {
                victim = i;
                victim_time = val_time(v);
            }
        }
        if victim_live {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        let e = &bucket[victim];
        e.val.store(make_val(port, key, now), Ordering::Release);
        e.key.store(key, Ordering::Release);
        self.learned.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets every address learned on `port`.
    pub fn flush_port(&self, port: u16) {
        for e in self.entries.iter() {
            let k = e.key.load(Ordering::Acquire);
            if k != 0 && val_port(e.val.load(Ordering::Acquire)) == port {
                let _ = e
                    .key
                    .compare_exchange(k, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
    }

    pub fn flush(&self) {
        for e in self.entries.iter() {
            e.key.store(0, Ordering::Release);
        }
    }

    /// Live entries, sorted by port, VLAN and MAC.
    pub fn entries(&self, now: u32) -> Vec<FdbEntry> {
        let mut out = Vec::new();
        for e in self.entries.iter() {
            let k = e.key.load(Ordering::Acquire);
            if k == 0 {
                continue;
            }
            let v = e.val.load(Ordering::Acquire);
            if (v >> 32) & 0xffff != fingerprint(k) || !self.live(v, now) {
                continue;
            }
            out.push(FdbEntry {
                port: val_port(v),
                vlan: ((k >> 48) & 0xfff) as u16,
                mac: MacAddr::from_u64(k & 0xffff_ffff_ffff),
                age: now.wrapping_sub(val_time(v)),
            });
        }
        out.sort_by_key(|e| (e.port, e.vlan, e.mac.as_u64()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn learns_per_vlan() {
        let t = MacTable::new(64, 300);
        t.learn(10, mac(1), 3, 100);
        assert_eq!(t.lookup(10, mac(1), 100), Some(3));
        assert_eq!(
            t.lookup(20, mac(1), 100),
            None,
            "VLANs have separate address spaces"
        );
        t.learn(10, mac(1), 4, 101);
        assert_eq!(
            t.lookup(10, mac(1), 101),
            Some(4),
            "a station that moved is relearned"
        );
        assert_eq!(t.entries(101).len(), 1);
    }

    #[test]
    fn ages_out() {
        let t = MacTable::new(64, 300);
        t.learn(0, mac(1), 1, 1000);
        assert_eq!(t.lookup(0, mac(1), 1299), Some(1));
        assert_eq!(t.lookup(0, mac(1), 1300), None);
        assert!(t.entries(1300).is_empty());
        t.set_aging(10);
        t.learn(0, mac(2), 1, 2000);
        assert_eq!(
            t.entries(2005),
            vec![FdbEntry {
                port: 1,
                vlan: 0,
                mac: mac(2),
                age: 5
            }]
        );
        assert_eq!(t.lookup(0, mac(2), 2010), None);
    }

    #[test]
    fn flush_port_forgets_only_that_port() {
        let t = MacTable::new(64, 300);
        t.learn(0, mac(1), 1, 5);
        t.learn(0, mac(2), 2, 5);
        t.flush_port(1);
        assert_eq!(t.lookup(0, mac(1), 5), None);
        assert_eq!(t.lookup(0, mac(2), 5), Some(2));
        t.flush();
        assert_eq!(t.lookup(0, mac(2), 5), None);
    }

    #[test]
    fn full_table_evicts_oldest_and_counts() {
        let t = MacTable::new(4, 300); // one bucket
        for i in 0..4 {
            t.learn(0, mac(i), i as u16, 10 + i as u32);
        }
        assert_eq!(t.evictions.load(Ordering::Relaxed), 0);
        t.learn(0, mac(9), 9, 20);
        assert_eq!(t.evictions.load(Ordering::Relaxed), 1);
        assert_eq!(t.lookup(0, mac(0), 20), None, "the oldest went");
        assert_eq!(t.lookup(0, mac(9), 20), Some(9));
        assert_eq!(t.lookup(0, mac(3), 20), Some(3));
    }
}
