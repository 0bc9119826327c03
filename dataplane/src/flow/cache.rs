//! The per-PMD exact-match cache: packet key -> translation. Two-way set
//! associative over a power-of-two array, as OVS's EMC. An entry is valid
//! only for the pipeline generation and port snapshot it was made under,
//! so any published change retires old entries without touching them.
use super::key::{packet_words_eq, FlowKey, PACKET_WORDS};
use super::xlate::Xlate;
use std::sync::Arc;

pub const DEFAULT_ENTRIES: usize = 8192;

struct Entry {
    key: [u64; PACKET_WORDS],
    stamp: (u64, u64),
    xlate: Arc<Xlate>,
}

pub struct FlowCache {
    slots: Box<[Option<Entry>]>,
    mask: usize,
    /// Behind the exact-match cache: translations by their megaflow mask.
    pub mega: Megaflows,
}

/// Most megaflows a PMD keeps before starting afresh.
pub const MAX_MEGAFLOWS: usize = 1 << 16;

type Words = [u64; PACKET_WORDS];

/// OVS's megaflow layer in small: translations keyed by the packet bits
/// they depend on (`Xlate::wc`), one hash map per distinct mask, searched
/// in turn. An exact-match miss of a known megaflow costs a few masked
/// lookups instead of a translation.
#[derive(Default)]
pub struct Megaflows {
    stamp: (u64, u64),
    subs: Vec<(Words, hashbrown::HashMap<Words, Arc<Xlate>>)>,
    len: usize,
}

fn masked(k: &FlowKey, m: &Words) -> Words {
    let mut w = [0u64; PACKET_WORDS];
    for i in 0..PACKET_WORDS {
        w[i] = k.w[i] & m[i];
    }
    w
}

impl Megaflows {
    pub fn lookup(&mut self, k: &FlowKey, stamp: (u64, u64)) -> Option<Arc<Xlate>> {
        if self.stamp != stamp {
            // Another pipeline or port set: every megaflow is stale.
            self.clear();
            self.stamp = stamp;
            return None;
        }
        self.subs
            .iter()
            .find_map(|(m, map)| map.get(&masked(k, m)).cloned())
    }

    pub fn insert(&mut self, k: &FlowKey, stamp: (u64, u64), x: Arc<Xlate>) {
        let Some(m) = x.wc else { return };
        if self.stamp != stamp || self.len >= MAX_MEGAFLOWS {
            self.clear();
            self.stamp = stamp;
        }
        let i = match self.subs.iter().position(|(sm, _)| *sm == m) {
            Some(i) => i,
            None => {
                self.subs.push((m, Default::default()));
                self.subs.len() - 1
            }
        };
        if self.subs[i].1.insert(masked(k, &m), x).is_none() {
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.subs.clear();
        self.len = 0;
    }
}

#[inline]
pub fn hash_key(k: &FlowKey) -> u64 {
    let mut h = 0u64;
    for &w in &k.w[..PACKET_WORDS] {
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h ^ (h >> 29)
}

impl FlowCache {
    /// A cache of `entries` (rounded up to a power of two, at least 2).
    pub fn new(entries: usize) -> FlowCache {
        let n = entries.max(2).next_power_of_two();
        FlowCache {
            slots: (0..n).map(|_| None).collect(),
            mask: n - 1,
            mega: Megaflows::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn ways(&self, h: u64) -> [usize; 2] {
        let a = h as usize & self.mask;
        let b = ((h >> 32) as usize | 1) & self.mask;
        [a, if b == a { a ^ 1 } else { b }]
    }

    #[inline]
    pub fn lookup(&self, k: &FlowKey, h: u64, stamp: (u64, u64)) -> Option<&Arc<Xlate>> {
        for i in self.ways(h) {
            if let Some(e) = &self.slots[i] {
                if e.stamp == stamp && packet_words_eq(&e.key, k) {
                    return Some(&e.xlate);
                }
            }
        }
        None
    }

    /// Inserts into a free or stale way, else over the first way. Returns
    /// the entry evicted, if a valid one was, for the caller to drop when
    /// convenient.
    pub fn insert(
        &mut self,
        k: &FlowKey,
        h: u64,
        stamp: (u64, u64),
        xlate: Arc<Xlate>,
    ) -> Option<Arc<Xlate>> {
        let [a, b] = self.ways(h);
        let free = |e: &Option<Entry>| e.as_ref().is_none_or(|e| e.stamp != stamp);
        let at = if free(&self.slots[a]) {
            a
        } else if free(&self.slots[b]) {
            b
        } else {
            // Alternate victims so two hot keys sharing a set both stay.
            if h & (1 << 40) != 0 {
                b
            } else {
                a
            }
        };
        let mut key = [0u64; PACKET_WORDS];
        key.copy_from_slice(&k.w[..PACKET_WORDS]);
        self.slots[at]
            .replace(Entry { key, stamp, xlate })
            .map(|e| e.xlate)
    }

    pub fn clear(&mut self) {
        for s in self.slots.iter_mut() {
            *s = None;
        }
        self.mega.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::Field;

    #[test]
    fn stale_stamps_miss() {
        let mut c = FlowCache::new(16);
        let mut k = FlowKey::default();
        k.set(Field::NwSrc, 1);
        let h = hash_key(&k);
        let x = Arc::new(Xlate::default());
        c.insert(&k, h, (1, 1), x.clone());
        assert!(c.lookup(&k, h, (1, 1)).is_some());
        assert!(c.lookup(&k, h, (2, 1)).is_none());
        assert!(c.lookup(&k, h, (1, 2)).is_none());
        let mut k2 = k;
        k2.set(Field::NwSrc, 2);
        assert!(c.lookup(&k2, hash_key(&k2), (1, 1)).is_none());
        // Metadata words are not part of the cached key.
        let mut k3 = k;
        k3.set(Field::Reg(0), 5);
        assert!(c.lookup(&k3, h, (1, 1)).is_some());
    }

    #[test]
    fn megaflows_match_under_their_mask() {
        let mut mf = Megaflows::default();
        let mut k = FlowKey::default();
        k.set(Field::InPort, 1);
        k.set(Field::NwSrc, 7);
        let mut wc = FlowKey::default();
        wc.set(Field::InPort, u64::MAX);
        let mut w = [0u64; PACKET_WORDS];
        w.copy_from_slice(&wc.w[..PACKET_WORDS]);
        let x = Arc::new(Xlate {
            wc: Some(w),
            ..Default::default()
        });
        assert!(mf.lookup(&k, (1, 1)).is_none());
        mf.insert(&k, (1, 1), x);
        // Another source address, same port: the same megaflow.
        k.set(Field::NwSrc, 8);
        assert!(mf.lookup(&k, (1, 1)).is_some());
        k.set(Field::InPort, 2);
        assert!(mf.lookup(&k, (1, 1)).is_none());
        k.set(Field::InPort, 1);
        // A new pipeline retires them all.
        assert!(mf.lookup(&k, (2, 1)).is_none());
        assert!(mf.is_empty());
        // Translations without a mask are not kept.
        mf.insert(&k, (2, 1), Arc::new(Xlate::default()));
        assert_eq!(mf.len(), 0);
    }

    #[test]
    fn bounded() {
        let mut c = FlowCache::new(8);
        for i in 0..1000u64 {
            let mut k = FlowKey::default();
            k.set(Field::NwSrc, i);
            c.insert(&k, hash_key(&k), (1, 1), Arc::new(Xlate::default()));
        }
        assert_eq!(c.capacity(), 8);
        assert!(c.slots.iter().filter(|s| s.is_some()).count() <= 8);
    }
}

/// Translations of recirculated packets (after `ct(table=...)`), keyed by
/// the whole key: what decides them includes the connection-tracking
/// fields, registers and the table recirculation starts at. Small and
/// cleared when full; only conntrack pipelines use it.
#[derive(Default)]
pub struct RecircCache {
    map: hashbrown::HashMap<super::key::FlowKey, ((u64, u64), std::sync::Arc<super::xlate::Xlate>)>,
}

impl RecircCache {
    const MAX: usize = 4096;

    #[inline]
    pub fn get(
        &self,
        k: &super::key::FlowKey,
        stamp: (u64, u64),
    ) -> Option<std::sync::Arc<super::xlate::Xlate>> {
        match self.map.get(k) {
            Some((s, x)) if *s == stamp => Some(x.clone()),
            _ => None,
        }
    }

    pub fn insert(
        &mut self,
        k: super::key::FlowKey,
        stamp: (u64, u64),
        x: std::sync::Arc<super::xlate::Xlate>,
    ) {
        if self.map.len() >= Self::MAX {
            self.map.clear();
        }
        self.map.insert(k, (stamp, x));
    }
}
