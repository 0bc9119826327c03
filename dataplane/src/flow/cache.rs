//! The per-PMD exact-match cache: packet key -> translation. Two-way set
//! associative over a power-of-two array, as OVS's EMC. An entry is valid
//! only for the pipeline generation and port snapshot it was made under,
//! so any published change retires old entries without touching them.
use super::key::{packet_words_eq, FlowKey, KEY_WORDS, PACKET_WORDS};
use super::xlate::Xlate;
use std::sync::Arc;

pub const DEFAULT_ENTRIES: usize = 8192;

struct Entry {
    key: [u64; PACKET_WORDS],
    stamp: (u64, u64),
    xlate: Arc<Xlate>,
}

pub struct FlowCache {
    /// How keys are hashed for `lookup` and `insert` (`hash`).
    pub hash: WordHash,
    slots: Box<[Option<Entry>]>,
    mask: usize,
    /// Behind the exact-match cache: translations by their megaflow mask.
    pub mega: Megaflows<PACKET_WORDS>,
    /// Megaflow hits since the last one copied into the exact-match
    /// cache: only one in EMC_INSERT_EVERY is (as OVS's emc-insert-inv-
    /// prob), so many flows do not thrash it.
    mega_hits: u32,
    /// Hit rate over the last window of probes; while it is poor the
    /// cache is bypassed for `skip` lookups (with many flows every probe
    /// is a cache-line miss that finds nothing).
    probes: u32,
    found: u32,
    skip: u32,
    /// The next bypass's length: doubled by every poor window in a row (up
    /// to MAX_SKIP), back to SKIP after a good one. With a million flows
    /// each probe is two cache-line misses that find nothing; probing a
    /// window in every 17 cost 10 % of `process_batch`.
    next_skip: u32,
}

/// Probes per hit-rate window, the rate below which the cache is
/// bypassed (1 in 4), and for how many lookups.
const WINDOW: u32 = 1024;
const SKIP: u32 = 16 * 1024;
const MAX_SKIP: u32 = 512 * 1024;

pub const EMC_INSERT_EVERY: u32 = 8;
pub const EMC_INSERT_BYPASSED: u32 = 128;

/// Most megaflows a cache keeps before starting afresh.
pub const MAX_MEGAFLOWS: usize = 1 << 18;

/// A masked key with its hash computed once (the map's hasher passes it
/// through).
#[derive(Clone, Copy)]
struct MegaKey<const N: usize> {
    h: u64,
    w: [u64; N],
}

impl<const N: usize> PartialEq for MegaKey<N> {
    // An OR of XORs rather than the derived compare, which calls memcmp.
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        self.h == o.h && self.w.iter().zip(&o.w).fold(0, |d, (a, b)| d | (a ^ b)) == 0
    }
}

impl<const N: usize> Eq for MegaKey<N> {}

impl<const N: usize> std::hash::Hash for MegaKey<N> {
    fn hash<H: std::hash::Hasher>(&self, s: &mut H) {
        s.write_u64(self.h);
    }
}

#[derive(Default)]
struct PassHasher(u64);

impl std::hash::Hasher for PassHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, b: &[u8]) {
        for x in b {
            self.0 = self.0.rotate_left(8) ^ *x as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type MegaMap<const N: usize> =
    hashbrown::HashMap<MegaKey<N>, Arc<Xlate>, std::hash::BuildHasherDefault<PassHasher>>;

/// OVS's megaflow layer in small: translations keyed by the key bits they
/// depend on (`Xlate::wc`, its first N words), one hash map per distinct
/// mask, searched in turn. An exact-match miss of a known megaflow costs
/// a few masked lookups instead of a translation. First passes use the
/// packet words; recirculations the whole key.
pub struct Megaflows<const N: usize> {
    hash: WordHash,
    stamp: (u64, u64),
    subs: Vec<Sub<N>>,
    len: usize,
}

/// One mask's megaflows.
struct Sub<const N: usize> {
    mask: [u64; N],
    map: MegaMap<N>,
}

impl<const N: usize> Sub<N> {
    fn new(mask: [u64; N]) -> Sub<N> {
        Sub {
            mask,
            map: Default::default(),
        }
    }

    /// Every word masked and hashed, not only the mask's non-zero ones
    /// (as OVS's miniflows): picking words is an indirect load each, and
    /// measured dearer than the straight AND the compiler vectorises.
    #[inline]
    fn key(&self, hash: &WordHash, k: &FlowKey) -> MegaKey<N> {
        let w: [u64; N] = std::array::from_fn(|i| k.w[i] & self.mask[i]);
        MegaKey {
            h: hash.words(&w),
            w,
        }
    }
}

impl<const N: usize> Default for Megaflows<N> {
    fn default() -> Self {
        Megaflows {
            hash: WordHash::random(),
            stamp: (0, 0),
            subs: Vec::new(),
            len: 0,
        }
    }
}

/// Per-cache random keys for hashing key words. Pairs of words go
/// through independent 64x64->128-bit multiplies folded to 64 bits (the
/// mixing foldhash uses), so the products do not wait on each other: the
/// word-by-word multiply chain this replaces waited on ~5 cycles per word,
/// twice per packet on a miss. A folded product is zero when an operand
/// is; random keys keep which keys collide out of a sender's reach.
#[derive(Clone)]
pub struct WordHash([u64; 2 * (KEY_WORDS / 2 + 1) + 2]);

impl WordHash {
    pub fn random() -> WordHash {
        use std::hash::BuildHasher;
        let rs = std::collections::hash_map::RandomState::new();
        WordHash(std::array::from_fn(|i| rs.hash_one(i as u64) | 1))
    }

    /// An array, not a slice: with its length known the loops unroll and
    /// lose their bounds checks (a third fewer instructions per megaflow
    /// lookup than over a slice).
    #[inline(always)]
    pub fn words<const M: usize>(&self, words: &[u64; M]) -> u64 {
        let s = &self.0;
        let n = s.len();
        let mut acc = s[n - 2];
        let mut pairs = words.chunks_exact(2);
        for (i, p) in (&mut pairs).enumerate() {
            acc = acc.wrapping_add(fold_mul(p[0] ^ s[2 * i], p[1] ^ s[2 * i + 1]));
        }
        if let [w] = pairs.remainder() {
            let i = M - 1;
            acc = acc.wrapping_add(fold_mul(*w ^ s[i], s[i + 1]));
        }
        fold_mul(acc, s[n - 1])
    }

    /// The hash of a key's packet words (what the exact-match cache keys).
    #[inline]
    pub fn key(&self, k: &FlowKey) -> u64 {
        self.words(k.packet_words())
    }
}

#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

impl<const N: usize> Megaflows<N> {
    /// The translation of `k`'s megaflow, by reference: the caller clones
    /// it only when it needs its own (an Arc clone is a locked instruction).
    pub fn lookup(&mut self, k: &FlowKey, stamp: (u64, u64)) -> Option<&Arc<Xlate>> {
        if self.stamp != stamp {
            // Another pipeline or port set: every megaflow is stale.
            self.clear();
            self.stamp = stamp;
            return None;
        }
        let hash = &self.hash;
        self.subs
            .iter()
            .find_map(|sub| sub.map.get(&sub.key(hash, k)))
    }

    pub fn insert(&mut self, k: &FlowKey, stamp: (u64, u64), x: Arc<Xlate>) {
        let Some(wc) = &x.wc else { return };
        let mut m = [0u64; N];
        m.copy_from_slice(&wc.w[..N]);
        if self.stamp != stamp || self.len >= MAX_MEGAFLOWS {
            self.clear();
            self.stamp = stamp;
        }
        let i = match self.subs.iter().position(|sub| sub.mask == m) {
            Some(i) => i,
            None => {
                self.subs.push(Sub::new(m));
                self.subs.len() - 1
            }
        };
        let sub = &mut self.subs[i];
        let mk = sub.key(&self.hash, k);
        if sub.map.insert(mk, x).is_none() {
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

impl FlowCache {
    /// A cache of `entries` (rounded up to a power of two, at least 2).
    pub fn new(entries: usize) -> FlowCache {
        let n = entries.max(2).next_power_of_two();
        FlowCache {
            hash: WordHash::random(),
            slots: (0..n).map(|_| None).collect(),
            mask: n - 1,
            mega: Megaflows::default(),
            mega_hits: 0,
            probes: 0,
            found: 0,
            skip: 0,
            next_skip: SKIP,
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
    pub fn lookup(&mut self, k: &FlowKey, h: u64, stamp: (u64, u64)) -> Option<&Arc<Xlate>> {
        if self.bypassed() {
            return None;
        }
        self.probe(k, h, stamp)
    }

    /// Whether this lookup skips the cache (it is bypassed while too few
    /// probes hit): the caller then need not hash the key.
    #[inline]
    pub fn bypassed(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return true;
        }
        false
    }

    /// A lookup the caller has decided to make (`bypassed` said no).
    #[inline]
    pub fn probe(&mut self, k: &FlowKey, h: u64, stamp: (u64, u64)) -> Option<&Arc<Xlate>> {
        self.probes += 1;
        if self.probes == WINDOW {
            if self.found < WINDOW / 4 {
                self.skip = self.next_skip;
                self.next_skip = (self.next_skip * 2).min(MAX_SKIP);
            } else {
                self.next_skip = SKIP;
            }
            self.probes = 0;
            self.found = 0;
        }
        for i in self.ways(h) {
            if let Some(e) = &self.slots[i] {
                if e.stamp == stamp && packet_words_eq(&e.key, k) {
                    self.found += 1;
                    return self.slots[i].as_ref().map(|e| &e.xlate);
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

    /// After a megaflow hit: whether to copy it into the exact-match cache.
    /// While the cache is bypassed (too many flows for it) only one in
    /// EMC_INSERT_BYPASSED is: each insert is a cache-line miss that, with
    /// a million flows, no later packet uses.
    #[inline]
    pub fn promote(&mut self) -> bool {
        self.mega_hits = self.mega_hits.wrapping_add(1);
        let every = if self.skip > 0 {
            EMC_INSERT_BYPASSED
        } else {
            EMC_INSERT_EVERY
        };
        self.mega_hits.is_multiple_of(every)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::Field;

    /// Lookups until the cache is probed again (`bypassed` says no).
    fn bypassed_run(c: &mut FlowCache) -> u32 {
        let mut n = 0;
        while c.bypassed() {
            n += 1;
        }
        n
    }

    /// A window of probes finding `hits` of WINDOW.
    fn window(c: &mut FlowCache, hits: u32) {
        let mut k = FlowKey::default();
        k.set(Field::InPort, 1);
        let stamp = (1, 1);
        let h = c.hash.key(&k);
        c.insert(&k, h, stamp, Arc::new(Xlate::default()));
        let mut miss = FlowKey::default();
        miss.set(Field::InPort, 2);
        let hm = c.hash.key(&miss);
        for i in 0..WINDOW {
            let found = if i < hits {
                c.probe(&k, h, stamp).is_some()
            } else {
                c.probe(&miss, hm, stamp).is_some()
            };
            assert_eq!(found, i < hits, "probe {i}");
        }
        // The window closes on the next probe.
        c.probe(&miss, hm, stamp);
    }

    #[test]
    fn poor_windows_in_a_row_back_off_and_a_good_one_resets() {
        let mut c = FlowCache::new(64);
        window(&mut c, WINDOW);
        assert_eq!(bypassed_run(&mut c), 0, "a good window keeps probing");
        let mut want = SKIP;
        for _ in 0..8 {
            window(&mut c, 10);
            assert_eq!(bypassed_run(&mut c), want);
            want = (want * 2).min(MAX_SKIP);
        }
        assert_eq!(want, MAX_SKIP);
        window(&mut c, WINDOW / 2);
        assert_eq!(bypassed_run(&mut c), 0);
        window(&mut c, 0);
        assert_eq!(bypassed_run(&mut c), SKIP, "backs off from the start again");
    }

    #[test]
    fn stale_stamps_miss() {
        let mut c = FlowCache::new(16);
        let mut k = FlowKey::default();
        k.set(Field::NwSrc, 1);
        let h = c.hash.key(&k);
        let x = Arc::new(Xlate::default());
        c.insert(&k, h, (1, 1), x.clone());
        assert!(c.lookup(&k, h, (1, 1)).is_some());
        assert!(c.lookup(&k, h, (2, 1)).is_none());
        assert!(c.lookup(&k, h, (1, 2)).is_none());
        let mut k2 = k;
        k2.set(Field::NwSrc, 2);
        assert!(c.lookup(&k2, c.hash.key(&k2), (1, 1)).is_none());
        // Metadata words are not part of the cached key.
        let mut k3 = k;
        k3.set(Field::Reg(0), 5);
        assert!(c.lookup(&k3, h, (1, 1)).is_some());
    }

    #[test]
    fn megaflows_match_under_their_mask() {
        let mut mf = Megaflows::<PACKET_WORDS>::default();
        let mut k = FlowKey::default();
        k.set(Field::InPort, 1);
        k.set(Field::NwSrc, 7);
        let mut wc = FlowKey::default();
        wc.set(Field::InPort, u64::MAX);
        let x = Arc::new(Xlate {
            wc: Some(wc),
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
            c.insert(&k, c.hash.key(&k), (1, 1), Arc::new(Xlate::default()));
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
    /// Megaflows of recirculated translations (over the whole key).
    pub mega: Megaflows<{ super::key::KEY_WORDS }>,
    mega_hits: u32,
}

impl RecircCache {
    const MAX: usize = 4096;

    /// As `FlowCache::promote`.
    #[inline]
    pub fn promote(&mut self) -> bool {
        self.mega_hits = self.mega_hits.wrapping_add(1);
        self.mega_hits.is_multiple_of(EMC_INSERT_EVERY)
    }

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
