//! Micro-benchmarks of NORMAL's per-packet work on heap buffers, without
//! DPDK: the MAC table, VLAN edits and a whole 32-frame batch. Throughput is
//! reported per element (frame) so ns/frame reads directly.
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rvs_dataplane::mac_table::MacTable;
use rvs_dataplane::netdev::{DevStatus, NetDev};
use rvs_dataplane::normal::process_batch;
use rvs_dataplane::packet::{HeapBuf, PacketBuf};
use rvs_dataplane::snapshot::{BridgeEntry, BridgeFlows, PortEntry, Snapshot};
use rvs_dataplane::stats::PmdStats;
use rvs_dataplane::txbuf::TxBuffers;
use rvs_dataplane::vlan::{set_egress_tag, VlanConf};
use rvs_dataplane::wire::MacAddr;
use rvs_dataplane::{Burst, BURST};
use std::hint::black_box;
use std::sync::Arc;

/// A port that swallows what it is given (the cost of a real tx is not
/// what these benchmarks measure).
struct Sink;
impl NetDev<HeapBuf> for Sink {
    fn n_rxq(&self) -> u16 {
        1
    }
    fn rx(&self, _: u16, _: &mut Burst<HeapBuf>) -> usize {
        0
    }
    fn tx(&self, _: u16, p: &mut Burst<HeapBuf>) -> usize {
        let n = p.len();
        p.clear();
        n
    }
    fn status(&self) -> DevStatus {
        DevStatus::default()
    }
}

fn frame(dst: u8, src: u8) -> HeapBuf {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, dst]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
    f[12..14].copy_from_slice(&[0x08, 0]);
    HeapBuf::new(&f)
}

fn snapshot(vlans: [VlanConf; 2]) -> Snapshot<HeapBuf> {
    let mut s = Snapshot::empty(1);
    let mut br = BridgeEntry::new(
        "br0",
        Arc::new(MacTable::new(8192, 300)),
        BridgeFlows::new(0),
    );
    br.add_port(0, 1);
    br.add_port(1, 2);
    s.bridges.push(br);
    for (i, v) in vlans.into_iter().enumerate() {
        s.ports.push(Some(PortEntry {
            name: format!("p{i}").into(),
            ofport: i as u32 + 1,
            bridge: 0,
            vlan: v,
            dev: Arc::new(Sink),
            baseline: Default::default(),
            tunnel: false,
            qos: Default::default(),
        }));
    }
    s
}

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
    let t = MacTable::new(8192, 300);
    for i in 0..4096u64 {
        t.learn(
            0,
            MacAddr::from_u64(0x0200_0000_0000 | i),
            (i % 16) as u16,
            1,
        );
    }
    let mut g = c.benchmark_group("mac_table");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("lookup-hit", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(t.lookup(0, MacAddr::from_u64(0x0200_0000_0000 | i), 1))
        })
    });
    g.bench_function("learn-refresh", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            t.learn(
                0,
                MacAddr::from_u64(0x0200_0000_0000 | i),
                (i % 16) as u16,
                1,
            )
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

criterion_group!(benches, batch, mac_table, vlan);
criterion_main!(benches);
