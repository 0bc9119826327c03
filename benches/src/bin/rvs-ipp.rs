//! rvs-ipp: instructions per operation of the micro-benchmarked fast-path
//! steps, counted by callgrind (this machine's VM exposes no hardware
//! counters to perf). The criterion benchmarks give nanoseconds; this gives
//! the instruction counts beside them, on the same fixtures
//! (rvs_benches).
//!
//! `rvs-ipp` (no arguments) runs every operation under
//! `valgrind --tool=callgrind`, collecting only inside `ipp_measured`, and
//! prints a table; `rvs-ipp --op NAME --n N` runs one operation N times
//! (what the table's runs do). Operations that need a fresh frame per call
//! build it inside the measured loop; the cost of building it (the `frame`
//! rows) is subtracted and named in the table.
use clap::Parser;
use rvs_benches::*;
use rvs_dataplane::conntrack::nat::apply;
use rvs_dataplane::conntrack::CtRequest;
use rvs_dataplane::flow::action::Action;
use rvs_dataplane::flow::cache::{FlowCache, RecircCache};
use rvs_dataplane::flow::extract::extract_into;
use rvs_dataplane::flow::key::FlowKey;
use rvs_dataplane::flow::key::{Field, Match};
use rvs_dataplane::flow::table::FlowMod;
use rvs_dataplane::flow::xlate::translate;
use rvs_dataplane::flow_batch::process_batch;
use rvs_dataplane::packet::{HeapBuf, PacketBuf};
use rvs_dataplane::stats::PmdStats;
use rvs_dataplane::tunnel::decap::{classify, Verdict};
use rvs_dataplane::tunnel::encap::{inner_hash, Header};
use rvs_dataplane::txbuf::TxBuffers;
use rvs_dataplane::vlan::{set_egress_tag, VlanConf};
use rvs_dataplane::{Burst, BURST};
use std::hint::black_box;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "rvs-ipp",
    about = "instructions per fast-path operation (callgrind)"
)]
struct Args {
    /// Run one operation (inside callgrind); without it, run them all.
    #[arg(long)]
    op: Option<String>,
    /// Calls of the operation.
    #[arg(long, default_value_t = 20_000)]
    n: u32,
    /// Without --op: only the operations whose names contain this.
    #[arg(long)]
    only: Option<String>,
    /// With --op: print READY after set-up and wait for this file to
    /// appear before measuring.
    #[arg(long)]
    go: Option<std::path::PathBuf>,
}

/// Each operation: its name, what one call covers (frames), and the
/// operation whose cost is subtracted (building the frames it consumes).
const OPS: &[(&str, u32, Option<&str>)] = &[
    ("empty call", 1, None),
    ("frame: refill a 64-byte frame", 1, None),
    ("parse udp", 1, None),
    ("parse 802.1q udp", 1, None),
    ("parse vxlan outer", 1, None),
    (
        "normal batch (learned unicast, per frame)",
        BURST as u32,
        None,
    ),
    (
        "openflow batch (in_port output rule, one flow, per frame)",
        BURST as u32,
        None,
    ),
    (
        "openflow batch (in_port output rule, 32 flows, per frame)",
        BURST as u32,
        None,
    ),
    (
        "openflow batch (in_port output rule, 1M flows in turn, per frame)",
        BURST as u32,
        None,
    ),
    (
        "nat loop (ct+dnat+recirc both ways, one connection, per frame)",
        2 * BURST as u32,
        None,
    ),
    (
        "nat loop (ct+dnat+recirc both ways, 32 connections, per frame)",
        2 * BURST as u32,
        None,
    ),
    (
        "switch l2 (poll_once: rx, in_port output rule, tx, per frame)",
        BURST as u32,
        Some("frame: refill a 64-byte frame"),
    ),
    (
        "switch gre encap (poll_once: rule to tunnel, encap, NORMAL underlay, per frame)",
        BURST as u32,
        Some("frame: refill a 64-byte frame"),
    ),
    (
        "switch vxlan encap (poll_once: rule to tunnel, encap, NORMAL underlay, per frame)",
        BURST as u32,
        Some("frame: refill a 64-byte frame"),
    ),
    (
        "switch gre decap (poll_once: NORMAL underlay, decap, rule to VM port, per frame)",
        BURST as u32,
        Some("frame: refill a 64-byte frame"),
    ),
    (
        "switch vxlan decap (poll_once: NORMAL underlay, decap, rule to VM port, per frame)",
        BURST as u32,
        Some("frame: refill a 64-byte frame"),
    ),
    ("mac lookup hit", 1, None),
    ("mac learn refresh", 1, None),
    ("vlan push+pop", 1, None),
    ("classifier hit, 1 rule", 1, None),
    ("classifier hit, 1000 rules", 1, None),
    ("classifier hit, 100000 rules", 1, None),
    ("classifier hit, 1000000 rules", 1, None),
    ("classifier miss, 1000000 rules", 1, None),
    ("emc hit (1000 flows)", 1, None),
    ("translate (emc miss), 1000 rules", 1, None),
    ("encap gre key", 1, Some("frame: refill a 64-byte frame")),
    (
        "encap vxlan (with flow hash)",
        1,
        Some("frame: refill a 64-byte frame"),
    ),
    ("decap gre (1000 tunnels)", 1, None),
    ("decap vxlan (1000 tunnels)", 1, None),
    ("ct lookup established, 1000 connections", 1, None),
    ("ct lookup established, 1000000 connections", 1, None),
    ("nat rewrite", 1, Some("frame: refill a 64-byte frame")),
];

/// The loop callgrind collects in (its name is the toggle).
#[inline(never)]
fn ipp_measured(n: u32, op: &mut dyn FnMut(u32)) {
    for i in 0..n {
        op(i);
    }
}

/// Sets up operation `name` and returns it.
fn op(name: &str) -> Box<dyn FnMut(u32)> {
    let frames = parse_frames();
    let parse = move |f: Vec<u8>| -> Box<dyn FnMut(u32)> {
        Box::new(move |_| {
            let mut k = FlowKey::default();
            black_box(extract_into(black_box(&f), 1, None, &mut k).is_ok());
            black_box(&k);
        })
    };
    let classifier = |n: u32| -> Box<dyn FnMut(u32)> {
        let pipe = tables(n).pipeline();
        let keys: Vec<FlowKey> = (0..4096u64)
            .map(|j| key((j * n as u64 / 4096) as u32))
            .collect();
        Box::new(move |i| {
            black_box(pipe.tables[0].lookup(&keys[i as usize & 4095]).map(|r| r.0));
        })
    };
    let ct_lookup = |n: u32| -> Box<dyn FnMut(u32)> {
        let (ct, probe) = connections(n);
        Box::new(move |_| {
            black_box(ct.process(black_box(&probe), &CtRequest::default(), 1));
        })
    };
    let encap = |kind: &str| -> Box<dyn FnMut(u32)> {
        let h = Header::new(&tunnel_conf(kind, false), &EP);
        let (f, vx) = (inner(), kind == "vxlan");
        let mut p = HeapBuf::new(&f);
        Box::new(move |_| {
            p.reset(&f);
            let hash = if vx { inner_hash(p.data()) } else { 0 };
            black_box(h.push(&mut p, 77, hash));
        })
    };
    let decap = |kind: &str| -> Box<dyn FnMut(u32)> {
        let rx = thousand_tunnels();
        let mut p = HeapBuf::new(&inner());
        Header::new(&tunnel_conf(kind, false), &EP).push(&mut p, 77, 1);
        let outer = p.data().to_vec();
        Box::new(move |_| {
            black_box(match classify(black_box(&outer), &Local) {
                Verdict::Tunnel(o) => rx.lookup(&o),
                _ => None,
            });
        })
    };
    match name {
        "empty call" => Box::new(|i| {
            black_box(i);
        }),
        "frame: refill a 64-byte frame" => {
            let f = inner();
            let mut p = HeapBuf::new(&f);
            Box::new(move |_| {
                p.reset(&f);
                black_box(&p);
            })
        }
        "parse udp" => parse(frames[0].1.clone()),
        "parse 802.1q udp" => parse(frames[1].1.clone()),
        "parse vxlan outer" => parse(frames[2].1.clone()),
        "normal batch (learned unicast, per frame)" => {
            let snap = snapshot([VlanConf::default(), VlanConf::default()]);
            let stats = PmdStats::default();
            let mut tx = TxBuffers::default();
            let mut b = Burst::new();
            b.push(frame(1, 2));
            rvs_dataplane::normal::process_batch(&snap, 1, &mut b, 0, &stats, &mut tx);
            tx.flush(|_, p, _| p.clear());
            // Forwarded frames come back from the tx buffers and go round
            // again: no allocation inside the measurement.
            let mut spare: Vec<HeapBuf> = (0..BURST).map(|_| frame(2, 1)).collect();
            Box::new(move |_| {
                let mut pkts: Burst<HeapBuf> = spare.drain(..).collect();
                rvs_dataplane::normal::process_batch(&snap, 0, &mut pkts, 0, &stats, &mut tx);
                tx.flush(|_, p, _| spare.extend(p.drain(..)));
            })
        }
        "openflow batch (in_port output rule, one flow, per frame)" => openflow_batch(1),
        "openflow batch (in_port output rule, 32 flows, per frame)" => openflow_batch(BURST as u16),
        "openflow batch (in_port output rule, 1M flows in turn, per frame)" => openflow_batch(0),
        "nat loop (ct+dnat+recirc both ways, one connection, per frame)" => nat_loop(1),
        "nat loop (ct+dnat+recirc both ways, 32 connections, per frame)" => nat_loop(BURST as u16),
        "switch l2 (poll_once: rx, in_port output rule, tx, per frame)" => whole_switch(None),
        "switch gre encap (poll_once: rule to tunnel, encap, NORMAL underlay, per frame)" => {
            whole_switch(Some(("gre", true)))
        }
        "switch vxlan encap (poll_once: rule to tunnel, encap, NORMAL underlay, per frame)" => {
            whole_switch(Some(("vxlan", true)))
        }
        "switch gre decap (poll_once: NORMAL underlay, decap, rule to VM port, per frame)" => {
            whole_switch(Some(("gre", false)))
        }
        "switch vxlan decap (poll_once: NORMAL underlay, decap, rule to VM port, per frame)" => {
            whole_switch(Some(("vxlan", false)))
        }
        "mac lookup hit" => {
            let t = learned_macs();
            Box::new(move |i| {
                black_box(t.lookup(0, mac(i as u64), 1));
            })
        }
        "mac learn refresh" => {
            let t = learned_macs();
            Box::new(move |i| t.learn(0, mac(i as u64), (i % 16) as u16, 1))
        }
        "vlan push+pop" => {
            let mut p = frame(1, 2);
            Box::new(move |_| {
                set_egress_tag(&mut p, false, Some(10));
                set_egress_tag(&mut p, true, None);
            })
        }
        "classifier hit, 1 rule" => classifier(1),
        "classifier hit, 1000 rules" => classifier(1_000),
        "classifier hit, 100000 rules" => classifier(100_000),
        "classifier hit, 1000000 rules" => classifier(1_000_000),
        "classifier miss, 1000000 rules" => {
            let pipe = tables(1_000_000).pipeline();
            let k = miss_key();
            Box::new(move |_| {
                black_box(pipe.tables[0].lookup(&k).is_none());
            })
        }
        "emc hit (1000 flows)" => {
            let pipe = tables(1_000).pipeline();
            let ports = Ports::eight();
            let mut cache = FlowCache::new(8192);
            let keys: Vec<FlowKey> = (0..1000).map(key).collect();
            for k in &keys {
                cache.insert(
                    k,
                    cache.hash.key(k),
                    (1, 1),
                    Arc::new(translate(&pipe, &ports, 1, k)),
                );
            }
            Box::new(move |i| {
                let k = &keys[(i % 1000) as usize];
                black_box(cache.lookup(k, cache.hash.key(k), (1, 1)).is_some());
            })
        }
        "translate (emc miss), 1000 rules" => {
            let pipe = tables(1_000).pipeline();
            let ports = Ports::eight();
            let keys: Vec<FlowKey> = (0..1000).map(key).collect();
            Box::new(move |i| {
                black_box(Arc::new(translate(
                    &pipe,
                    &ports,
                    1,
                    &keys[(i % 1000) as usize],
                )));
            })
        }
        "encap gre key" => encap("gre"),
        "encap vxlan (with flow hash)" => encap("vxlan"),
        "decap gre (1000 tunnels)" => decap("gre"),
        "decap vxlan (1000 tunnels)" => decap("vxlan"),
        "ct lookup established, 1000 connections" => ct_lookup(1_000),
        "ct lookup established, 1000000 connections" => ct_lookup(1_000_000),
        "nat rewrite" => {
            let (rw, f) = dnat_rewrite();
            // The frame is rebuilt each call: a rewritten frame would not
            // be rewritten again.
            let f64b = {
                let mut v = f.clone();
                v.resize(64, 0);
                v
            };
            let mut p = HeapBuf::new(&f64b);
            Box::new(move |_| {
                p.reset(&f64b);
                black_box(apply(&mut p, &rw));
            })
        }
        other => {
            eprintln!("rvs-ipp: unknown operation {other:?}; known:");
            for (n, _, _) in OPS {
                eprintln!("  {n}");
            }
            std::process::exit(2);
        }
    }
}

/// A bridge of two ports with its pipeline and a PMD's caches: runs a
/// burst received on a port through flow_batch::process_batch and hands
/// back what each port was sent.
struct Rig {
    snap: rvs_dataplane::snapshot::Snapshot<HeapBuf>,
    pipe: Arc<rvs_dataplane::flow::rule::Pipeline>,
    stats: PmdStats,
    tx: TxBuffers<HeapBuf>,
    cache: FlowCache,
    rcache: RecircCache,
}

impl Rig {
    fn new(snap: rvs_dataplane::snapshot::Snapshot<HeapBuf>) -> Rig {
        let pipe = snap.bridges[0].flows.published.load_full();
        Rig {
            snap,
            pipe,
            stats: PmdStats::default(),
            tx: TxBuffers::default(),
            cache: FlowCache::new(8192),
            rcache: RecircCache::default(),
        }
    }

    /// `frames` in on `slot`; every frame sent goes to `out`.
    fn run(&mut self, slot: u16, frames: &mut Vec<HeapBuf>, mut out: impl FnMut(HeapBuf)) {
        let mut pkts: Burst<HeapBuf> = frames.drain(..).collect();
        process_batch(
            &self.snap,
            &self.pipe,
            slot,
            &mut pkts,
            None,
            0,
            &self.stats,
            &mut self.tx,
            &mut self.cache,
            &mut self.rcache,
        );
        self.tx.flush(|_, p, _| p.drain(..).for_each(&mut out));
    }
}

/// `BURST` UDP frames 10.0.0.1 -> `dst`:80 from `flows` source ports.
fn udp_burst(flows: u16, dst: u32) -> Vec<HeapBuf> {
    (0..BURST as u16)
        .map(|i| HeapBuf::new(&udp(0x0a00_0001, 1000 + i % flows, dst, 80)))
        .collect()
}

/// The l2 bench scenario's pipeline (in_port=1 actions=output:2) on a
/// burst of UDP frames from `flows` distinct source ports; the frames come
/// back from the tx buffers and go round again. `flows` 0: every frame
/// of every burst is another flow (source address and port from a
/// counter over a million), as rvs-bench's flows-1m replays them.
fn openflow_batch(flows: u16) -> Box<dyn FnMut(u32)> {
    let snap = snapshot([VlanConf::default(), VlanConf::default()]);
    {
        let f = &snap.bridges[0].flows;
        let mut t = f.tables.lock().expect("tables");
        let mut m = Match::any();
        m.exact(Field::InPort, 1);
        let out = vec![Action::Output {
            port: 2,
            max_len: 0,
        }];
        t.flow_mod(&FlowMod::add(0, 1, m, out), 0).expect("flow");
        f.publish(&mut t, || {});
    }
    let mut rig = Rig::new(snap);
    let mut frames = udp_burst(flows.max(1), 0x0a00_0002);
    // Frames come back into `back`, which then takes the drained vector's
    // place: nothing is allocated inside the measured loop.
    let mut back = Vec::with_capacity(BURST);
    let mut next = 0u32;
    let mut go = move |frames: &mut Vec<HeapBuf>| {
        if flows == 0 {
            for f in frames.iter_mut() {
                next = (next + 1) % 1_000_000;
                let d = f.data_mut();
                d[28..30].copy_from_slice(&((next >> 8) as u16).to_be_bytes());
                d[34] = next as u8;
            }
        }
        rig.run(0, frames, |p| back.push(p));
        std::mem::swap(frames, &mut back);
    };
    // The first burst fills the caches.
    go(&mut frames);
    Box::new(move |_| go(&mut frames))
}

/// rvs-bench's `nat` scenario: a burst of `conns` UDP connections into port 1,
/// what comes out of port 2 reflected (5tswap) back into port 2, and what
/// comes out of port 1 reflected into port 1 again: every frame goes
/// through ct, NAT and a recirculation.
fn nat_loop(conns: u16) -> Box<dyn FnMut(u32)> {
    let snap = snapshot([VlanConf::default(), VlanConf::default()]);
    nat_flows(&snap);
    let mut rig = Rig::new(snap);
    let mut frames = udp_burst(conns, 0x0a00_0064);
    let mut back = Vec::with_capacity(BURST);
    let mut go = move |frames: &mut Vec<HeapBuf>| {
        for slot in [0u16, 1] {
            rig.run(slot, frames, |mut f| {
                five_tuple_swap(f.data_mut());
                back.push(f);
            });
            std::mem::swap(frames, &mut back);
        }
        assert_eq!(frames.len(), BURST, "every frame came back");
    };
    // Commits the connection and sees its reply: established from here.
    go(&mut frames);
    go(&mut frames);
    Box::new(move |_| go(&mut frames))
}

/// The whole PMD turn (`poll_once`) of rvs-bench's one-way scenarios on
/// in-memory ports: a burst of one UDP flow into VM port p0 (slot 0) of
/// bridge br-t, whose rule sends it to p1 (slot 1) for `l2`. With a tunnel
/// (kind, encap): slot 1 is tunnel port tA (local 10.99.0.1, remote
/// 10.99.0.2, key 7) and the underlay bridge br-phy (NIC port slot 2,
/// internal port slot 3 holding 10.99.0.1) switches by NORMAL; encap sends
/// p0's frames into tA and out of the NIC, decap sends the peer's outer
/// frames into the NIC, through the internal port into tA and, by a rule,
/// out of p0. What comes out is refilled and sent again.
fn whole_switch(tunnel: Option<(&str, bool)>) -> Box<dyn FnMut(u32)> {
    use rvs_dataplane::mac_table::MacTable;
    use rvs_dataplane::netdev::MemDev;
    use rvs_dataplane::pmd::{assign_rxqs, poll_once, Clock, PmdLocal};
    use rvs_dataplane::snapshot::{BridgeEntry, BridgeFlows, PortEntry, Snapshot, Switch};
    use rvs_dataplane::tunnel::conf::TunnelConf;
    use rvs_dataplane::tunnel::encap::{Endpoints, Header};
    use rvs_dataplane::tunnel::state::{Endpoint, Route, TnlState};
    let sw = Switch::<HeapBuf>::new(&[(0, 0)]);
    let n = if tunnel.is_some() { 4 } else { 2 };
    let devs: Vec<Arc<MemDev<HeapBuf>>> = (0..n).map(|_| Arc::new(MemDev::default())).collect();
    let mut snap = Snapshot::empty(1);
    let bridge = |name: &str| {
        BridgeEntry::new(
            name,
            Arc::new(MacTable::new(8192, 300)),
            BridgeFlows::new(0),
        )
    };
    snap.bridges.push(bridge("br-t"));
    if tunnel.is_some() {
        snap.bridges.push(bridge("br-phy"));
    }
    for (slot, d) in devs.iter().enumerate() {
        let br = if slot < 2 { 0 } else { 1 };
        let ofport = slot as u32 % 2 + 1;
        snap.ports.push(Some(PortEntry {
            name: format!("p{slot}").into(),
            ofport,
            bridge: br,
            vlan: VlanConf::default(),
            dev: d.clone(),
            baseline: Default::default(),
            tunnel: tunnel.is_some() && slot == 1,
            qos: Default::default(),
        }));
        snap.bridges[br as usize].add_port(slot as u16, ofport);
    }
    let decap = matches!(tunnel, Some((_, false)));
    let (from, to) = if decap { (2, 1) } else { (1, 2) };
    {
        let f = &snap.bridges[0].flows;
        let mut t = f.tables.lock().expect("tables");
        let mut m = Match::any();
        m.exact(Field::InPort, from);
        let out = vec![Action::Output {
            port: to,
            max_len: 0,
        }];
        t.flow_mod(&FlowMod::add(0, 1, m, out), 0).expect("flow");
        f.publish(&mut t, || {});
    }
    // 64 bytes, as testpmd sends them in the end-to-end benchmark.
    let mut f = udp(0x0a00_0001, 1000, 0x0a00_0002, 80);
    f.resize(64, 0);
    f[16..18].copy_from_slice(&50u16.to_be_bytes());
    f[38..40].copy_from_slice(&30u16.to_be_bytes());
    if let Some((kind, _)) = tunnel {
        let opts: std::collections::BTreeMap<String, String> = [
            ("local_ip", "10.99.0.1"),
            ("remote_ip", "10.99.0.2"),
            ("key", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let conf = TunnelConf::from_options(kind, &opts).expect("tunnel options");
        if decap {
            // The peer's frame: from 10.99.0.2 to the internal port.
            let peer = Endpoints {
                src_mac: [2, 0, 0, 0, 0, 0x42],
                dst_mac: [2, 0, 0, 0, 0, 0x99],
                src_ip: 0x0a63_0002,
                dst_ip: 0x0a63_0001,
            };
            let mut p = HeapBuf::new(&f);
            assert!(Header::new(&conf, &peer).push(&mut p, 7, 1));
            f = p.data().to_vec();
        }
        let ep = Endpoint {
            name: "br-phy".into(),
            bridge: "br-phy".into(),
            ips: vec![0x0a63_0001],
            mac: [2, 0, 0, 0, 0, 0x99],
            mtu: 1600,
        };
        let route = Route {
            prefix: 0x0a63_0000,
            plen: 24,
            out_slot: 3,
            gw: 0,
            src: 0x0a63_0001,
        };
        let st = TnlState::build(
            &[(1, conf)],
            [(3, ep)].into_iter().collect(),
            vec![route],
            [(0x0a63_0002, [2, 0, 0, 0, 0, 0x42])].into_iter().collect(),
        );
        snap.tnl.store(Arc::new(st));
    }
    let q: Vec<(u16, u16, i32)> = (0..n).map(|i| (i as u16, 0, 0)).collect();
    snap.rxqs = assign_rxqs(&[(0, 0)], &q);
    sw.publish(snap);
    let me = sw.pmds[0].clone();
    let mut local = PmdLocal::new(8192);
    let clock = Clock::monotonic();
    let (rx, out) = match tunnel {
        None => (devs[0].clone(), devs[1].clone()),
        Some((_, true)) => (devs[0].clone(), devs[2].clone()),
        Some((_, false)) => (devs[2].clone(), devs[0].clone()),
    };
    rx.rxq
        .lock()
        .expect("rxq")
        .extend((0..BURST).map(|_| HeapBuf::new(&f)));
    let mut go = move || {
        poll_once(&sw, &me, &mut local, &clock, 1);
        let mut sent = out.sent.lock().expect("sent");
        assert_eq!(sent.len(), BURST, "the whole burst came out");
        let mut q = rx.rxq.lock().expect("rxq");
        for mut p in sent.drain(..) {
            p.reset(&f);
            q.push_back(p);
        }
    };
    // The first burst fills the caches and learns the MACs.
    go();
    go();
    Box::new(move |_| go())
}

/// Instructions callgrind collected in one run of `name`, `n` calls. The
/// set-up (a million rules, a million connections) runs uninstrumented:
/// the child says READY, instrumentation is switched on with
/// callgrind_control, and a flag file lets the child go on.
fn collected(name: &str, n: u32) -> u64 {
    use std::io::{BufRead, Read};
    let exe = std::env::current_exe().expect("own path");
    let flag = std::env::temp_dir().join(format!("rvs-ipp-go-{}", std::process::id()));
    let _ = std::fs::remove_file(&flag);
    let mut child = std::process::Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            "--toggle-collect=*ipp_measured*",
            "--callgrind-out-file=/dev/null",
        ])
        .arg(&exe)
        .args(["--op", name, "--n", &n.to_string()])
        .arg("--go")
        .arg(&flag)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("valgrind (apt-get install valgrind)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("child output");
    assert_eq!(line.trim(), "READY", "{name}: child did not get ready");
    let on = std::process::Command::new("callgrind_control")
        .args(["-i", "on", &child.id().to_string()])
        .output()
        .expect("callgrind_control");
    assert!(on.status.success(), "callgrind_control: {on:?}");
    std::fs::write(&flag, b"").expect("flag file");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .expect("child stderr");
    let st = child.wait().expect("child exit");
    let _ = std::fs::remove_file(&flag);
    assert!(st.success(), "{name}: {err}");
    err.lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name}: no 'Collected' line from callgrind:\n{err}"))
}

fn main() {
    let a = Args::parse();
    if let Some(name) = a.op {
        let mut f = op(&name);
        if let Some(go) = a.go {
            println!("READY");
            while !go.exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        ipp_measured(a.n, &mut *f);
        return;
    }
    let per_call = |name: &str| -> f64 { collected(name, a.n) as f64 / a.n as f64 };
    let empty = per_call("empty call");
    let mut cache: std::collections::HashMap<&str, f64> = Default::default();
    println!("| operation | instructions per frame | subtracted |\n| --- | --- | --- |");
    for &(name, frames, minus) in OPS.iter().skip(1) {
        let wanted = |n: &str| a.only.as_deref().is_none_or(|o| n.contains(o));
        // Run when asked for, or when an operation asked for subtracts it.
        let subtracted = OPS.iter().any(|o| o.2 == Some(name) && wanted(o.0));
        if !wanted(name) && !subtracted {
            continue;
        }
        let raw = per_call(name) - empty;
        cache.insert(name, raw);
        let base = minus
            .map(|m| cache.get(m).copied().unwrap_or(0.0))
            .unwrap_or(0.0);
        println!(
            "| {name} | {:.1} | {} |",
            (raw - base) / frames as f64,
            minus
                .map(|m| format!("{m} ({base:.0})"))
                .unwrap_or_default()
        );
    }
}
