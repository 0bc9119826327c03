//! Micro-benchmarks of the connection tracker on heap frames: an
//! established connection's lookup with 1 K and 1 M connections in the
//! table, and the NAT translation step (rewrite with checksum updates).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rvs_benches::{connections, dnat_rewrite};
use rvs_dataplane::conntrack::nat::apply;
use rvs_dataplane::conntrack::CtRequest;
use rvs_dataplane::packet::HeapBuf;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    g.throughput(Throughput::Elements(1));
    for n in [1_000u32, 1_000_000] {
        let (ct, probe) = connections(n);
        g.bench_function(format!("lookup established ({n} connections)"), |b| {
            b.iter(|| black_box(ct.process(black_box(&probe), &CtRequest::default(), 1)))
        });
    }
    let (rw, f) = dnat_rewrite();
    g.bench_function("nat rewrite (addresses, ports, checksums)", |b| {
        b.iter_batched_ref(
            || HeapBuf::new(&f),
            |p| black_box(apply(p, &rw)),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
