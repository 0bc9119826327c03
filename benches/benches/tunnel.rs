//! Micro-benchmarks of tunnel work per packet on heap buffers, without
//! DPDK: building the outer header in front of a 64-byte frame (GRE with a
//! key, GRE with checksum, VXLAN with its flow hash), and on receipt
//! classifying the outer headers and finding the tunnel port.
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rvs_dataplane::packet::{HeapBuf, PacketBuf};
use rvs_dataplane::tunnel::decap::{classify, RxMap, RxPort, Terminates, Verdict};
use rvs_dataplane::tunnel::encap::{inner_hash, Endpoints, Header};
use rvs_dataplane::tunnel::{Param, TunnelConf};
use std::collections::BTreeMap;
use std::hint::black_box;

const EP: Endpoints = Endpoints {
    src_mac: [2, 0, 0, 0, 0, 1],
    dst_mac: [2, 0, 0, 0, 0, 2],
    src_ip: 0x0a00_0001,
    dst_ip: 0x0a00_0002,
};

fn conf(kind: &str, csum: bool) -> TunnelConf {
    let mut o: BTreeMap<String, String> = [
        ("remote_ip".to_string(), "10.0.0.2".to_string()),
        ("key".to_string(), "77".to_string()),
    ]
    .into();
    if csum {
        o.insert("csum".into(), "true".into());
    }
    TunnelConf::from_options(kind, &o).unwrap()
}

fn inner() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xa]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xb]);
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&50u16.to_be_bytes());
    f[23] = 17;
    f
}

struct Local;
impl Terminates for Local {
    fn is_local(&self, ip: u32) -> bool {
        ip == 0x0a00_0002
    }
    fn gre(&self) -> bool {
        true
    }
    fn udp_port(&self, p: u16) -> bool {
        p == 4789
    }
}

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
    let mut rx = RxMap::default();
    for k in 0..1000u64 {
        for kind in ["gre", "vxlan"] {
            let c = conf(kind, false);
            rx.insert(RxPort {
                slot: k as u16,
                kind: c.kind,
                port: c.dst_port,
                in_key: Param::Fixed(k),
                remote: Param::Fixed(0x0a00_0001),
                local: None,
            });
        }
    }
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
