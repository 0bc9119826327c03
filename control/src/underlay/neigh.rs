//! The tunnel neighbour cache (OVS's tnl-neigh-cache): next hops' MACs as
//! ARP replies to our endpoint addresses taught them, each aged out after
//! `tnl/neigh/aging` seconds (OVS's default, 15 minutes), or set by hand.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub const DEFAULT_AGING: Duration = Duration::from_secs(15 * 60);
pub const MAX_AGING_SECS: u64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mac: [u8; 6],
    pub bridge: String,
    pub updated: Instant,
    /// Set with tnl/neigh/set: never aged.
    pub fixed: bool,
}

#[derive(Debug, Clone)]
pub struct NeighCache {
    pub entries: BTreeMap<u32, Entry>,
    pub aging: Duration,
}

impl Default for NeighCache {
    fn default() -> Self {
        NeighCache {
            entries: BTreeMap::new(),
            aging: DEFAULT_AGING,
        }
    }
}

impl NeighCache {
    /// Records what a reply said; true when the MAC is new or changed.
    pub fn learn(&mut self, ip: u32, mac: [u8; 6], bridge: &str, now: Instant) -> bool {
        match self.entries.get_mut(&ip) {
            Some(e) if e.fixed => false,
            Some(e) if e.mac == mac => {
                e.updated = now;
                e.bridge = bridge.to_string();
                false
            }
            _ => {
                self.entries.insert(
                    ip,
                    Entry {
                        mac,
                        bridge: bridge.to_string(),
                        updated: now,
                        fixed: false,
                    },
                );
                true
            }
        }
    }

    /// Drops expired entries; true when any went.
    pub fn expire(&mut self, now: Instant) -> bool {
        let aging = self.aging;
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.fixed || now.duration_since(e.updated) < aging);
        self.entries.len() != before
    }

    /// True when an entry is past three quarters of its life: time to ask
    /// again while still using it.
    pub fn due_refresh(&self, ip: u32, now: Instant) -> bool {
        self.entries
            .get(&ip)
            .is_some_and(|e| !e.fixed && now.duration_since(e.updated) > self.aging * 3 / 4)
    }

    pub fn macs(&self) -> hashbrown::HashMap<u32, [u8; 6]> {
        self.entries.iter().map(|(ip, e)| (*ip, e.mac)).collect()
    }

    /// `tnl/neigh/show`, in OVS's layout.
    pub fn show(&self, now: Instant) -> String {
        let mut s = String::new();
        s += "IP                                            MAC                 Bridge\n";
        s += "==========================================================================\n";
        for (ip, e) in &self.entries {
            let _ = write!(
                s,
                "{:<46}{}   {}",
                Ipv4Addr::from(*ip).to_string(),
                rvs_dataplane::wire::MacAddr(e.mac),
                e.bridge
            );
            if !e.fixed && now.duration_since(e.updated) >= self.aging {
                s += " STALE";
            }
            s += "\n";
        }
        s
    }
}

/// An ARP request for `target` from (`mac`, `src`), padded to 60 bytes.
pub fn arp_request(mac: [u8; 6], src: u32, target: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&src.to_be_bytes());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.to_be_bytes());
    f.resize(60, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_ages_and_shows_like_ovs() {
        let t0 = Instant::now();
        let mut c = NeighCache {
            aging: Duration::from_secs(10),
            ..Default::default()
        };
        assert!(c.learn(0x0a00_0002, [2, 0, 0, 0, 0, 2], "br-phy", t0));
        assert!(!c.learn(0x0a00_0002, [2, 0, 0, 0, 0, 2], "br-phy", t0));
        assert!(c.learn(0x0a00_0002, [2, 0, 0, 0, 0, 3], "br-phy", t0));
        assert_eq!(
            c.show(t0),
            "IP                                            MAC                 Bridge\n\
             ==========================================================================\n\
             10.0.0.2                                      02:00:00:00:00:03   br-phy\n"
        );
        assert!(c.due_refresh(0x0a00_0002, t0 + Duration::from_secs(8)));
        assert!(!c.expire(t0 + Duration::from_secs(9)));
        assert!(c.expire(t0 + Duration::from_secs(10)));
        assert!(c.entries.is_empty());
        let f = arp_request([2; 6], 0x0a00_0001, 0x0a00_0002);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[38..42], &[10, 0, 0, 2]);
    }
}
