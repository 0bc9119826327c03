//! Wildcard classifier: tuple space search. Rules with the same mask share
//! a subtable (a hash table on the masked key); a lookup probes subtables
//! in order of their highest priority and stops as soon as no remaining
//! subtable can beat the best match found. Subtables are reference counted
//! so that a copy of the classifier (the next snapshot) shares every
//! subtable a change does not touch.
use super::key::{FlowKey, Match, KEY_WORDS};
use hashbrown::hash_table::{Entry, HashTable};
use std::sync::Arc;

#[derive(Clone)]
struct Bucket<T> {
    key: FlowKey,
    /// Highest priority first.
    rules: Vec<(u16, T)>,
}

#[derive(Clone)]
pub struct Subtable<T> {
    mask: FlowKey,
    /// Indices of the mask's non-zero words: all that hashing and compare
    /// need to look at.
    words: Vec<u8>,
    max_priority: u16,
    n_rules: usize,
    /// Rules per priority, so removals find the new maximum without a scan.
    priorities: std::collections::BTreeMap<u16, usize>,
    table: HashTable<Bucket<T>>,
}

#[inline]
fn hash_words(k: &FlowKey, words: &[u8]) -> u64 {
    let mut h = 0u64;
    for &i in words {
        h = (h.rotate_left(5) ^ k.w[i as usize]).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

impl<T: Clone> Subtable<T> {
    fn new(mask: FlowKey) -> Self {
        let words = (0..KEY_WORDS)
            .filter(|&i| mask.w[i] != 0)
            .map(|i| i as u8)
            .collect();
        Subtable {
            mask,
            words,
            max_priority: 0,
            n_rules: 0,
            priorities: Default::default(),
            table: HashTable::new(),
        }
    }

    #[inline]
    fn masked_eq(&self, a: &FlowKey, b: &FlowKey) -> bool {
        self.words
            .iter()
            .all(|&i| a.w[i as usize] == b.w[i as usize])
    }

    #[inline]
    fn find(&self, masked: &FlowKey) -> Option<&Bucket<T>> {
        let h = hash_words(masked, &self.words);
        self.table.find(h, |b| self.masked_eq(&b.key, masked))
    }

    fn count(&mut self, priority: u16, add: bool) {
        let n = self.priorities.entry(priority).or_insert(0);
        if add {
            *n += 1;
        } else {
            *n -= 1;
            if *n == 0 {
                self.priorities.remove(&priority);
            }
        }
        self.max_priority = self.priorities.keys().next_back().copied().unwrap_or(0);
    }
}

#[derive(Clone)]
pub struct Classifier<T> {
    /// Highest `max_priority` first.
    subtables: Vec<Arc<Subtable<T>>>,
    n_rules: usize,
}

impl<T: Clone> Default for Classifier<T> {
    fn default() -> Self {
        Classifier {
            subtables: Vec::new(),
            n_rules: 0,
        }
    }
}

impl<T: Clone> Classifier<T> {
    pub fn len(&self) -> usize {
        self.n_rules
    }

    pub fn is_empty(&self) -> bool {
        self.n_rules == 0
    }

    /// Every bit any rule here matches on: two keys equal under it find
    /// the same rule (what a megaflow must keep exact).
    pub fn union_mask(&self) -> FlowKey {
        let mut m = FlowKey::default();
        for st in &self.subtables {
            for (a, b) in m.w.iter_mut().zip(st.mask.w.iter()) {
                *a |= *b;
            }
        }
        m
    }

    pub fn n_subtables(&self) -> usize {
        self.subtables.len()
    }

    /// The highest-priority rule matching `k`, with its priority.
    #[inline]
    pub fn lookup(&self, k: &FlowKey) -> Option<(u16, &T)> {
        let mut best: Option<(u16, &T)> = None;
        for st in &self.subtables {
            if let Some((bp, _)) = best {
                if st.max_priority <= bp {
                    break;
                }
            }
            let masked = k.masked(&st.mask);
            if let Some(b) = st.find(&masked) {
                let (p, t) = &b.rules[0];
                if best.is_none_or(|(bp, _)| *p > bp) {
                    best = Some((*p, t));
                }
            }
        }
        best
    }

    /// Inserts a rule; a rule with the same match and priority is replaced
    /// and returned.
    pub fn insert(&mut self, m: &Match, priority: u16, value: T) -> Option<T> {
        let key = m.key.masked(&m.mask);
        let idx = match self.subtables.iter().position(|s| s.mask == m.mask) {
            Some(i) => i,
            None => {
                self.subtables.push(Arc::new(Subtable::new(m.mask)));
                self.subtables.len() - 1
            }
        };
        let st = Arc::make_mut(&mut self.subtables[idx]);
        let h = hash_words(&key, &st.words);
        let words = st.words.clone();
        let eq = |b: &Bucket<T>| {
            words
                .iter()
                .all(|&i| b.key.w[i as usize] == key.w[i as usize])
        };
        let old = match st.table.entry(h, eq, |b| hash_words(&b.key, &words)) {
            Entry::Occupied(mut e) => {
                let rules = &mut e.get_mut().rules;
                match rules.iter().position(|r| r.0 <= priority) {
                    Some(i) if rules[i].0 == priority => {
                        Some(std::mem::replace(&mut rules[i].1, value))
                    }
                    Some(i) => {
                        rules.insert(i, (priority, value));
                        None
                    }
                    None => {
                        rules.push((priority, value));
                        None
                    }
                }
            }
            Entry::Vacant(e) => {
                e.insert(Bucket {
                    key,
                    rules: vec![(priority, value)],
                });
                None
            }
        };
        if old.is_none() {
            st.n_rules += 1;
            self.n_rules += 1;
            let before = st.max_priority;
            st.count(priority, true);
            if st.max_priority != before || st.n_rules == 1 {
                self.sort();
            }
        }
        old
    }

    /// Removes the rule with exactly this match and priority.
    pub fn remove(&mut self, m: &Match, priority: u16) -> Option<T> {
        let key = m.key.masked(&m.mask);
        let idx = self.subtables.iter().position(|s| s.mask == m.mask)?;
        let h = hash_words(&key, &self.subtables[idx].words);
        // Probe before make_mut: a miss must not copy a shared subtable.
        self.subtables[idx]
            .find(&key)?
            .rules
            .iter()
            .position(|r| r.0 == priority)?;
        let st = Arc::make_mut(&mut self.subtables[idx]);
        let words = st.words.clone();
        let eq = |b: &Bucket<T>| {
            words
                .iter()
                .all(|&i| b.key.w[i as usize] == key.w[i as usize])
        };
        let Ok(mut e) = st.table.find_entry(h, eq) else {
            return None;
        };
        let rules = &mut e.get_mut().rules;
        let i = rules.iter().position(|r| r.0 == priority)?;
        let (_, old) = rules.remove(i);
        if rules.is_empty() {
            e.remove();
        }
        st.n_rules -= 1;
        self.n_rules -= 1;
        let before = st.max_priority;
        st.count(priority, false);
        if st.n_rules == 0 {
            self.subtables.remove(idx);
        } else if st.max_priority != before {
            self.sort();
        }
        Some(old)
    }

    /// The rule with exactly this match and priority.
    pub fn find_exact(&self, m: &Match, priority: u16) -> Option<&T> {
        let key = m.key.masked(&m.mask);
        let st = self.subtables.iter().find(|s| s.mask == m.mask)?;
        let b = st.find(&key)?;
        b.rules.iter().find(|r| r.0 == priority).map(|r| &r.1)
    }

    /// Every rule as (match, priority, value).
    pub fn iter(&self) -> impl Iterator<Item = (Match, u16, &T)> + '_ {
        self.subtables.iter().flat_map(|st| {
            st.table.iter().flat_map(move |b| {
                b.rules.iter().map(move |(p, t)| {
                    (
                        Match {
                            key: b.key,
                            mask: st.mask,
                        },
                        *p,
                        t,
                    )
                })
            })
        })
    }

    fn sort(&mut self) {
        // Stable: equal priorities keep insertion order.
        self.subtables
            .sort_by_key(|s| std::cmp::Reverse(s.max_priority));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::Field;
    use proptest::prelude::*;

    fn naive(rules: &[(Match, u16, u32)], k: &FlowKey) -> Option<(u16, u32)> {
        let mut best: Option<(u16, u32)> = None;
        for (m, p, v) in rules {
            if m.matches(k) && best.is_none_or(|(bp, _)| *p > bp) {
                best = Some((*p, *v));
            }
        }
        best
    }

    #[test]
    fn priority_and_removal() {
        let mut c = Classifier::default();
        let mut broad = Match::any();
        broad.exact(Field::DlType, 0x800);
        let mut narrow = broad;
        narrow.set(Field::NwDst, 0x0a00_0000, 0xff00_0000);
        c.insert(&Match::any(), 0, "normal");
        c.insert(&broad, 10, "ip");
        c.insert(&narrow, 20, "ten");
        let mut k = FlowKey::default();
        k.set(Field::DlType, 0x800);
        k.set(Field::NwDst, 0x0a01_0203);
        assert_eq!(c.lookup(&k), Some((20, &"ten")));
        k.set(Field::NwDst, 0x0b01_0203);
        assert_eq!(c.lookup(&k), Some((10, &"ip")));
        assert_eq!(c.remove(&broad, 10), Some("ip"));
        assert_eq!(c.lookup(&k), Some((0, &"normal")));
        assert_eq!(c.remove(&broad, 10), None);
        assert_eq!(c.len(), 2);
        assert_eq!(c.n_subtables(), 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(Box<Match>, u16),
        Del(usize),
    }

    /// Fields drawn from a few values so rules and packets collide often.
    fn small_key() -> impl Strategy<Value = FlowKey> {
        (0u64..4, 0u64..3, 0u64..4, 0u64..4, 0u64..3).prop_map(|(p, t, s, d, r)| {
            let mut k = FlowKey::default();
            k.set(Field::InPort, p);
            k.set(Field::DlType, [0x800, 0x806, 0x86dd][t as usize]);
            k.set(Field::NwSrc, 0x0a00_0000 | s);
            k.set(Field::NwDst, 0x0a00_0000 | (d << 8));
            k.set(Field::Reg(1), r);
            k
        })
    }

    fn small_match() -> impl Strategy<Value = Match> {
        (
            small_key(),
            proptest::collection::vec(any::<bool>(), 5),
            0u64..3,
        )
            .prop_map(|(k, used, plen)| {
                let mut m = Match::any();
                let fs = [
                    Field::InPort,
                    Field::DlType,
                    Field::NwSrc,
                    Field::NwDst,
                    Field::Reg(1),
                ];
                for (f, u) in fs.iter().zip(used) {
                    if u {
                        let mask = if *f == Field::NwDst {
                            [0xffff_ffff, 0xffff_ff00, 0xff00_0000][plen as usize]
                        } else {
                            u64::MAX
                        };
                        m.set(*f, k.get(*f), mask);
                    }
                }
                m
            })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (small_match(), 0u16..50).prop_map(|(m, p)| Op::Add(Box::new(m), p)),
            1 => any::<usize>().prop_map(Op::Del),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn agrees_with_linear_scan(ops in proptest::collection::vec(op(), 1..400),
                                   pkts in proptest::collection::vec(small_key(), 64)) {
            let mut c = Classifier::default();
            let mut rules: Vec<(Match, u16, u32)> = Vec::new();
            let mut snapshots = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Add(m, p) => {
                        let m = *m;
                        c.insert(&m, p, i as u32);
                        match rules.iter_mut().find(|r| r.0 == m && r.1 == p) {
                            Some(r) => r.2 = i as u32,
                            None => rules.push((m, p, i as u32)),
                        }
                    }
                    Op::Del(j) if !rules.is_empty() => {
                        let (m, p, v) = rules.remove(j % rules.len());
                        prop_assert_eq!(c.remove(&m, p), Some(v));
                    }
                    Op::Del(_) => {}
                }
                if i % 50 == 0 {
                    // A copy taken now must not see later changes.
                    snapshots.push((c.clone(), rules.clone()));
                }
            }
            prop_assert_eq!(c.len(), rules.len());
            snapshots.push((c, rules));
            for (c, rules) in &snapshots {
                for k in &pkts {
                    // Priority ties between overlapping rules are
                    // unspecified in OpenFlow: compare priorities, and the
                    // value only when the winner is unique.
                    let got = c.lookup(k).map(|(p, v)| (p, *v));
                    let want = naive(rules, k);
                    prop_assert_eq!(got.map(|g| g.0), want.map(|w| w.0));
                    if let Some((p, v)) = got {
                        let tied = rules.iter().filter(|r| r.1 == p && r.0.matches(k)).count();
                        prop_assert!(rules.iter().any(|r| r.1 == p && r.2 == v && r.0.matches(k)));
                        if tied == 1 {
                            prop_assert_eq!(Some(v), want.map(|w| w.1));
                        }
                    }
                }
            }
        }
    }
}
