//! Property: the whole lookup path a PMD uses (exact-match cache, then
//! megaflows, in front of translation through the classifier) gives, for random rule sets and
//! packets and random interleavings of rule changes, exactly what a naive
//! linear scan of the rules gives.
use proptest::prelude::*;
use rvs_dataplane::flow::action::Action;
use rvs_dataplane::flow::cache::FlowCache;
use rvs_dataplane::flow::key::{Field, FlowKey, Match};
use rvs_dataplane::flow::table::{Command, FlowMod, FlowTables};
use rvs_dataplane::flow::xlate::{translate, DpOp, PortView, Xlate};
use std::sync::Arc;

struct Ports;
impl PortView for Ports {
    fn slot(&self, ofport: u32) -> Option<u16> {
        Some(ofport as u16)
    }
    fn slots(&self) -> &[u16] {
        &[]
    }
}

fn key(p: u64, t: u64, s: u64, d: u64, sport: u64) -> FlowKey {
    let mut k = FlowKey::default();
    // No rule matches the port: packets differing only there share a
    // megaflow.
    k.set(Field::TpSrc, sport);
    k.set(Field::InPort, p);
    k.set(Field::DlType, [0x800, 0x806][t as usize]);
    k.set(Field::NwSrc, 0x0a00_0000 | s);
    k.set(Field::NwDst, 0x0a00_0000 | (d << 8));
    k
}

fn small_key() -> impl Strategy<Value = FlowKey> {
    (1u64..4, 0u64..2, 0u64..4, 0u64..4, 0u64..8).prop_map(|(p, t, s, d, sp)| key(p, t, s, d, sp))
}

fn small_match() -> impl Strategy<Value = Match> {
    (
        small_key(),
        proptest::collection::vec(any::<bool>(), 4),
        0usize..3,
    )
        .prop_map(|(k, used, plen)| {
            let mut m = Match::any();
            for (f, u) in [Field::InPort, Field::DlType, Field::NwSrc, Field::NwDst]
                .iter()
                .zip(used)
            {
                if u {
                    let mask = if *f == Field::NwDst {
                        [0xffff_ffff, 0xffff_ff00, 0xff00_0000][plen]
                    } else {
                        u64::MAX
                    };
                    m.set(*f, k.get(*f), mask);
                }
            }
            m
        })
}

#[derive(Debug, Clone)]
enum Op {
    Add(Box<Match>, u16, u32),
    DelStrict(usize),
    Packet(FlowKey),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (small_match(), 0u16..20, 10u32..60).prop_map(|(m, p, o)| Op::Add(Box::new(m), p, o)),
        1 => any::<usize>().prop_map(Op::DelStrict),
        4 => small_key().prop_map(Op::Packet),
    ]
}

/// The output port a translation ends in (None: dropped).
fn out_of(x: &Xlate) -> Option<u16> {
    x.ops.iter().find_map(|o| match o {
        DpOp::Output(s) => Some(*s),
        _ => None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    #[test]
    fn cached_translation_equals_linear_scan(ops in proptest::collection::vec(op(), 1..300)) {
        let mut t = FlowTables::empty();
        let mut rules: Vec<(Match, u16, u32)> = Vec::new();
        let mut cache = FlowCache::new(16);
        for op in ops {
            match op {
                Op::Add(m, prio, port) => {
                    let m = *m;
                    t.flow_mod(&FlowMod::add(0, prio, m, vec![Action::Output { port, max_len: 0 }]), 0).unwrap();
                    let m = Match { key: m.key.masked(&m.mask), mask: m.mask };
                    match rules.iter_mut().find(|r| r.0 == m && r.1 == prio) {
                        Some(r) => r.2 = port,
                        None => rules.push((m, prio, port)),
                    }
                }
                Op::DelStrict(i) if !rules.is_empty() => {
                    let (m, prio, _) = rules.remove(i % rules.len());
                    let mut fm = FlowMod::add(0, prio, m, vec![]);
                    fm.command = Command::DeleteStrict;
                    prop_assert_eq!(t.flow_mod(&fm, 0).unwrap().len(), 1);
                }
                Op::DelStrict(_) => {}
                Op::Packet(k) => {
                    let pipe = t.pipeline();
                    let stamp = (pipe.generation, 1);
                    let h = cache.hash.key(&k);
                    let x = match cache.lookup(&k, h, stamp) {
                        Some(x) => x.clone(),
                        None => {
                            let x = match cache.mega.lookup(&k, stamp) {
                                Some(x) => x.clone(),
                                None => {
                                    let x = Arc::new(translate(&pipe, &Ports, 0, &k));
                                    prop_assert!(x.wc.is_some());
                                    cache.mega.insert(&k, stamp, x.clone());
                                    x
                                }
                            };
                            cache.insert(&k, h, stamp, x.clone());
                            x
                        }
                    };
                    let best = rules
                        .iter()
                        .filter(|r| r.0.matches(&k))
                        .map(|r| r.1)
                        .max();
                    let winners: Vec<u16> = rules
                        .iter()
                        .filter(|r| r.0.matches(&k) && Some(r.1) == best)
                        .map(|r| r.2 as u16)
                        .collect();
                    let got = out_of(&x);
                    match best {
                        None => prop_assert_eq!(got, None),
                        // Priority ties between overlapping rules are
                        // unspecified: any of the tied rules may win.
                        Some(_) => prop_assert!(got.is_some_and(|g| winners.contains(&g)), "{got:?} not in {winners:?}"),
                    }
                }
            }
        }
    }
}
