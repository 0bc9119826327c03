//! Flow-table lookup cost per packet at 1, 1,000, 100,000 and 1,000,000
//! rules: the classifier alone, a whole translation (classifier plus the
//! pipeline walk and the cached result's allocation: the exact-match-cache
//! miss path), and exact-match-cache hits. Throughput is per packet.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rvs_benches::{key, miss_key, tables, Ports};
use rvs_dataplane::flow::cache::FlowCache;
use rvs_dataplane::flow::xlate::translate;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn lookups(c: &mut Criterion) {
    let ports = Ports::eight();
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
        let miss = miss_key();
        g.bench_function("classifier miss", |b| {
            b.iter(|| black_box(pipe.tables[0].lookup(black_box(&miss)).is_none()))
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
                let h = cache.hash.key(&k);
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
                    cache.hash.key(&k),
                    (1, 1),
                    Arc::new(translate(&pipe, &ports, 1, &k)),
                );
            }
            g.bench_function("emc hit", |b| {
                b.iter(|| {
                    i = (i + 1) % n;
                    let k = key(i);
                    black_box(cache.lookup(&k, cache.hash.key(&k), (1, 1)).is_some())
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, lookups);
criterion_main!(benches);
