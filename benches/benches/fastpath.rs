//! Micro-benchmarks of NORMAL's per-packet work on heap buffers, without
//! DPDK: the MAC table, VLAN edits and a whole 32-frame batch. Throughput is
//! reported per element (frame) so ns/frame reads directly.
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rvs_benches::{frame, learned_macs, mac, snapshot};
use rvs_dataplane::flow::extract::extract_into;
use rvs_dataplane::flow::key::FlowKey;
use rvs_dataplane::normal::process_batch;
use rvs_dataplane::packet::{HeapBuf, PacketBuf};
use rvs_dataplane::stats::PmdStats;
use rvs_dataplane::txbuf::TxBuffers;
use rvs_dataplane::vlan::{set_egress_tag, VlanConf};
use rvs_dataplane::{Burst, BURST};
use std::hint::black_box;

fn batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("normal");
    g.throughput(Throughput::Elements(BURST as u64));
    for (name, vlans) in [
        (
            "learned-unicast",
            [VlanConf::default(), VlanConf::default()],
        ),
        (
            "access-to-trunk",
            [VlanConf::access(10), VlanConf::default()],
        ),
    ] {
        let snap = snapshot(vlans);
        let stats = PmdStats::default();
        let mut tx = TxBuffers::default();
        let mut b = Burst::new();
        b.push(frame(1, 2));
        process_batch(&snap, 1, &mut b, 0, &stats, &mut tx); // learn 2 on port 1
        tx.flush(|_, p, _| p.clear());
        g.bench_function(name, |bench| {
            bench.iter_batched_ref(
                || (0..BURST).map(|_| frame(2, 1)).collect::<Burst<HeapBuf>>(),
                |pkts| {
                    process_batch(&snap, 0, pkts, 0, &stats, &mut tx);
                    tx.flush(|_, p, _| p.clear());
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn mac_table(c: &mut Criterion) {
    let t = learned_macs();
    let mut g = c.benchmark_group("mac_table");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("lookup-hit", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(t.lookup(0, mac(i), 1))
        })
    });
    g.bench_function("learn-refresh", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            t.learn(0, mac(i), (i % 16) as u16, 1)
        })
    });
    g.finish();
}

fn vlan(c: &mut Criterion) {
    let mut g = c.benchmark_group("vlan");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push-pop", |b| {
        b.iter_batched_ref(
            || frame(1, 2),
            |p| {
                assert!(set_egress_tag(p, false, Some(10)));
                assert!(set_egress_tag(p, true, None));
                black_box(p.data().len())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Flow extraction (every header into the flow key) of the frames the
/// end-to-end scenarios carry.
fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    for (name, f) in rvs_benches::parse_frames() {
        let mut k = FlowKey::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                k = FlowKey::default();
                black_box(extract_into(black_box(&f), 1, None, &mut k).is_ok())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, batch, mac_table, vlan, parse);
criterion_main!(benches);
