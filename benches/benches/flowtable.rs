//! Flow-table lookup cost per packet at 1, 1,000, 100,000 and 1,000,000
//! rules: the classifier alone, a whole translation (classifier plus the
//! pipeline walk and the cached result's allocation: the exact-match-cache
//! miss path), and exact-match-cache hits. Throughput is per packet.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rvs_dataplane::flow::action::Action;
use rvs_dataplane::flow::cache::{hash_key, FlowCache};
use rvs_dataplane::flow::key::{Field, FlowKey, Match};
use rvs_dataplane::flow::table::{FlowMod, FlowTables};
use rvs_dataplane::flow::xlate::{translate, PortView};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

struct Ports(Vec<u16>);
impl PortView for Ports {
    fn slot(&self, ofport: u32) -> Option<u16> {
        (ofport < 8).then_some(ofport as u16)
    }
    fn slots(&self) -> &[u16] {
        &self.0
    }
}

/// The packet key of flow `i`: a distinct TCP 5-tuple.
fn key(i: u32) -> FlowKey {
    let mut k = FlowKey::default();
    k.set(Field::InPort, 1);
    k.set(Field::DlType, 0x800);
    k.set(Field::NwProto, 6);
    k.set(Field::NwSrc, 0x0a00_0000 | (i as u64 & 0xff_ffff));
    k.set(Field::NwDst, 0xc0a8_0001);
    k.set(Field::TpSrc, 1024 + (i as u64 >> 24));
    k.set(Field::TpDst, 80);
    k
}

/// `n` exact 5-tuple rules plus a few wildcard ones in other subtables
/// (a table a real deployment has: per-connection rules over broad ones).
fn tables(n: u32) -> FlowTables {
    let mut t = FlowTables::empty();
    let out = |p| {
        vec![Action::Output {
            port: p,
            max_len: 0,
        }]
    };
    let mut any = Match::any();
    any.exact(Field::InPort, 1);
    t.flow_mod(&FlowMod::add(0, 1, any, out(2)), 0).unwrap();
    let mut net = Match::any();
    net.exact(Field::DlType, 0x800);
    net.set(Field::NwDst, 0xc0a8_0000, 0xffff_ff00);
    t.flow_mod(&FlowMod::add(0, 5, net, out(3)), 0).unwrap();
    let mut arp = Match::any();
    arp.exact(Field::DlType, 0x806);
    t.flow_mod(&FlowMod::add(0, 5, arp, out(4)), 0).unwrap();
    for i in 0..n {
        let k = key(i);
        let mut m = Match::any();
        for f in [
            Field::DlType,
            Field::NwProto,
            Field::NwSrc,
            Field::NwDst,
            Field::TpSrc,
            Field::TpDst,
        ] {
            m.exact(f, k.get(f));
        }
        t.flow_mod(&FlowMod::add(0, 10, m, out(5)), 0).unwrap();
    }
    t
}

fn lookups(c: &mut Criterion) {
    let ports = Ports((0..8).collect());
    for n in [1u32, 1_000, 100_000, 1_000_000] {
        let pipe = tables(n).pipeline();
        let mut g = c.benchmark_group(format!("flows-{n}"));
        g.throughput(Throughput::Elements(1));
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
        let mut i = 0u32;
        g.bench_function("classifier", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(pipe.tables[0].lookup(&key(i)).map(|r| r.0))
            })
        });
        g.bench_function("translate (cache miss)", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(Arc::new(translate(&pipe, &ports, 1, &key(i))))
            })
        });
        // The PMD's miss path: probe, translate, insert, over more flows
        // than the cache holds once n is large.
        let mut cache = FlowCache::new(8192);
        g.bench_function("emc probe + miss + insert", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                let k = key(i);
                let h = hash_key(&k);
                if cache.lookup(&k, h, (1, 1)).is_none() {
                    let x = Arc::new(translate(&pipe, &ports, 1, &k));
                    black_box(cache.insert(&k, h, (1, 1), x));
                }
            })
        });
        if n <= 1_000 {
            // Every flow fits in the cache: steady-state hits.
            let mut cache = FlowCache::new(8192);
            for j in 0..n {
                let k = key(j);
                cache.insert(
                    &k,
                    hash_key(&k),
                    (1, 1),
                    Arc::new(translate(&pipe, &ports, 1, &k)),
                );
            }
            g.bench_function("emc hit", |b| {
                b.iter(|| {
                    i = (i + 1) % n;
                    let k = key(i);
                    black_box(cache.lookup(&k, hash_key(&k), (1, 1)).is_some())
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, lookups);
criterion_main!(benches);
