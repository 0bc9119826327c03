//! Micro-benchmarks of tunnel work per packet on heap buffers, without
//! DPDK: building the outer header in front of a 64-byte frame (GRE with a
//! key, GRE with checksum, VXLAN with its flow hash), and on receipt
//! classifying the outer headers and finding the tunnel port.
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rvs_benches::{inner, thousand_tunnels, tunnel_conf as conf, Local, EP};
use rvs_dataplane::packet::{HeapBuf, PacketBuf};
use rvs_dataplane::tunnel::decap::{classify, Verdict};
use rvs_dataplane::tunnel::encap::{inner_hash, Header};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tunnel");
    g.throughput(Throughput::Elements(1));
    let f = inner();
    for (name, kind, csum) in [
        ("encap gre key", "gre", false),
        ("encap gre key+csum", "gre", true),
        ("encap vxlan", "vxlan", false),
    ] {
        let h = Header::new(&conf(kind, csum), &EP);
        let vx = kind == "vxlan";
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || HeapBuf::new(&f),
                |p| {
                    let hash = if vx { inner_hash(p.data()) } else { 0 };
                    black_box(h.push(p, 77, hash))
                },
                BatchSize::SmallInput,
            )
        });
    }
    let rx = thousand_tunnels();
    for (name, kind) in [
        ("decap gre (1000 tunnels)", "gre"),
        ("decap vxlan (1000 tunnels)", "vxlan"),
    ] {
        let h = Header::new(&conf(kind, false), &EP);
        let mut p = HeapBuf::new(&f);
        h.push(&mut p, 77, 1);
        let outer = p.data().to_vec();
        g.bench_function(name, |b| {
            b.iter(|| match classify(black_box(&outer), &Local) {
                Verdict::Tunnel(o) => black_box(rx.lookup(&o)),
                _ => None,
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
