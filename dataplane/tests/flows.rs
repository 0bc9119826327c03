//! The OpenFlow pipeline through the real PMD loop with in-memory ports:
//! outputs, rewrites, resubmit/goto, groups, counters, and that flow changes
//! published under traffic take effect for the next batch.
use rvs_dataplane::flow::action::{ofpp, Action, Bucket, GroupType, Learn, LearnSpec, LearnSrc};
use rvs_dataplane::flow::key::{Field, Match};
use rvs_dataplane::flow::table::{Command, FlowMod, GroupCommand, GroupMod, OFPG_ANY, OFPTT_ALL};
use rvs_dataplane::mac_table::MacTable;
use rvs_dataplane::netdev::MemDev;
use rvs_dataplane::packet::{HeapBuf, PacketBuf};
use rvs_dataplane::pmd::{assign_rxqs, poll_once, Clock, PmdLocal};
use rvs_dataplane::snapshot::{BridgeEntry, BridgeFlows, PortEntry, Snapshot, Switch};
use rvs_dataplane::stats::DropReason;
use rvs_dataplane::vlan::VlanConf;
use std::sync::Arc;

struct Lab {
    sw: Arc<Switch<HeapBuf>>,
    devs: Vec<Arc<MemDev<HeapBuf>>>,
    flows: Arc<BridgeFlows>,
    local: PmdLocal<HeapBuf>,
}

fn lab(n: usize) -> Lab {
    let sw = Switch::<HeapBuf>::new(&[(0, 0)]);
    let devs: Vec<_> = (0..n).map(|_| Arc::new(MemDev::default())).collect();
    let flows = BridgeFlows::new(0);
    let mut snap = Snapshot::empty(1);
    let mut br = BridgeEntry::new("br0", Arc::new(MacTable::new(1024, 300)), flows.clone());
    for (i, d) in devs.iter().enumerate() {
        snap.ports.push(Some(PortEntry {
            name: format!("p{i}").into(),
            ofport: i as u32 + 1,
            bridge: 0,
            vlan: VlanConf::default(),
            dev: d.clone(),
            baseline: Default::default(),
            tunnel: false,
            qos: Default::default(),
        }));
        br.add_port(i as u16, i as u32 + 1);
    }
    snap.bridges.push(br);
    let q: Vec<(u16, u16, i32)> = (0..n).map(|i| (i as u16, 0, 0)).collect();
    snap.rxqs = assign_rxqs(&[(0, 0)], &q);
    sw.publish(snap);
    Lab {
        sw,
        devs,
        flows,
        local: PmdLocal::new(64),
    }
}

fn udp(src_ip: u8, dport: u16) -> HeapBuf {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let ip = [
        0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, src_ip, 10, 0, 0, 99,
    ];
    let mut ip = ip.to_vec();
    let c = rvs_dataplane::wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x30, 0x39]);
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 12, 0, 0, b'a', b'b', b'c', b'd']);
    HeapBuf::new(&f)
}

impl Lab {
    fn flow(&self, fm: FlowMod) {
        let mut t = self.flows.tables.lock().unwrap();
        t.flow_mod(&fm, self.sw.now_ns()).unwrap();
        self.flows.publish(&mut t, || self.sw.quiesce());
    }
    fn group(&self, gm: GroupMod) {
        let mut t = self.flows.tables.lock().unwrap();
        t.group_mod(&gm, 0).unwrap();
        self.flows.publish(&mut t, || self.sw.quiesce());
    }
    fn clear(&self) {
        let mut del = FlowMod::add(OFPTT_ALL, 0, Match::any(), vec![]);
        del.command = Command::Delete;
        self.flow(del);
    }
    fn send(&mut self, port: usize, pkts: Vec<HeapBuf>) {
        self.devs[port].rxq.lock().unwrap().extend(pkts);
        let me = self.sw.pmds[0].clone();
        let now = self.sw.now_secs();
        while poll_once(&self.sw, &me, &mut self.local, &Clock::monotonic(), now) > 0 {}
    }
    fn take(&self, port: usize) -> Vec<HeapBuf> {
        std::mem::take(&mut *self.devs[port].sent.lock().unwrap())
    }
    fn counts(&self) -> Vec<usize> {
        (0..self.devs.len()).map(|i| self.take(i).len()).collect()
    }
    /// (table, priority, packets) of every rule, sorted.
    fn rule_hits(&self) -> Vec<(u8, u16, u64)> {
        let t = self.flows.tables.lock().unwrap();
        let mut hits: Vec<(u8, u16, u64)> = t
            .rules()
            .map(|r| (r.table, r.priority, r.stats.get().0))
            .collect();
        hits.sort();
        hits
    }
    fn drops(&self, r: DropReason) -> u64 {
        self.sw.pmds[0].stats.drops[r as usize].get()
    }
}

fn out(p: u32) -> Action {
    Action::Output {
        port: p,
        max_len: 0,
    }
}

/// ct(zone=`zone`[,commit][,table=`table`][,nat]) with, when given, NAT of
/// `kind` to the one address `ip` (ports kept).
fn ct_action(
    commit: bool,
    zone: u16,
    table: Option<u8>,
    nat: Option<(rvs_dataplane::conntrack::nat::NatKind, u32)>,
) -> Action {
    use rvs_dataplane::conntrack::nat::NatSpec;
    use rvs_dataplane::flow::action::{CtAction, CtZone};
    Action::Ct(Box::new(CtAction {
        commit,
        force: false,
        zone: CtZone::Imm(zone),
        table,
        alg: 0,
        nat: nat.map(|(kind, ip)| NatSpec {
            kind,
            ip_min: ip,
            ip_max: ip,
            port_min: 0,
            port_max: 0,
            persistent: false,
            hash: false,
            random: false,
        }),
        exec: Vec::new(),
    }))
}

/// IPv4 with all of ct_state's `bits` set.
fn ip_in_state(bits: u8) -> Match {
    let mut m = Match::any();
    m.exact(Field::DlType, 0x800);
    m.set(Field::CtState, bits as u64, bits as u64);
    m
}

fn in_port(p: u32) -> Match {
    let mut m = Match::any();
    m.exact(Field::InPort, p as u64);
    m
}

#[test]
fn port_to_port_with_counts_and_table_miss() {
    let mut l = lab(3);
    l.clear();
    l.flow(FlowMod::add(0, 10, in_port(1), vec![out(3)]));
    l.send(0, (0..20).map(|i| udp(i, 53)).collect());
    assert_eq!(l.counts(), vec![0, 0, 20]);
    l.send(1, (0..5).map(|i| udp(i, 53)).collect());
    assert_eq!(l.counts(), vec![0, 0, 0]);
    assert_eq!(l.drops(DropReason::TableMiss), 5);
    let t = l.flows.tables.lock().unwrap();
    let r = t.rules().next().unwrap();
    assert_eq!(r.stats.get(), (20, 20 * 46));
}

/// Three ports; from port 1, UDP to port 80 goes to port 2 (priority 20),
/// everything else to port 3 (priority 10).
fn web_and_rest() -> Lab {
    let l = lab(3);
    l.clear();
    l.flow(FlowMod::add(0, 10, in_port(1), vec![out(3)]));
    let mut web = in_port(1);
    web.exact(Field::DlType, 0x800);
    web.exact(Field::NwProto, 17);
    web.exact(Field::TpDst, 80);
    l.flow(FlowMod::add(0, 20, web, vec![out(2)]));
    l
}

#[test]
fn interleaved_translations_of_many_flows_count_exactly() {
    // Distinct keys under two megaflows, alternating: runs of one
    // translation grow across keys and break where the other one starts.
    let mut l = web_and_rest();
    l.send(
        0,
        (0..40)
            .map(|i| udp(i, if i % 3 == 0 { 80 } else { 53 }))
            .collect(),
    );
    assert_eq!(l.counts(), vec![0, 14, 26]);
    let t = l.flows.tables.lock().unwrap();
    let mut by_prio: Vec<(u16, (u64, u64))> =
        t.rules().map(|r| (r.priority, r.stats.get())).collect();
    by_prio.sort();
    assert_eq!(by_prio, vec![(10, (26, 26 * 46)), (20, (14, 14 * 46))]);
}

#[test]
fn new_keys_under_the_runs_megaflow_go_on_without_a_cache_probe() {
    // Keys that differ only outside what the rules look at continue the
    // current run (its megaflow); a key that differs inside it does not,
    // and every frame leaves by its own rule's port, in order.
    let mut l = web_and_rest();
    let dports = [53u16, 53, 80, 53, 53, 53, 80, 80, 53, 53, 53, 53];
    let burst = dports
        .iter()
        .enumerate()
        .map(|(i, &d)| udp(i as u8 + 1, d))
        .collect();
    let st = &l.sw.pmds[0].stats;
    let before = (
        st.emc_hits.get(),
        st.emc_misses.get(),
        st.megaflow_hits.get(),
    );
    l.send(0, burst);
    let src = |p: &HeapBuf| p.data()[29];
    let web_out: Vec<u8> = l.take(1).iter().map(src).collect();
    let dns_out: Vec<u8> = l.take(2).iter().map(src).collect();
    assert_eq!(web_out, vec![3, 7, 8]);
    assert_eq!(dns_out, vec![1, 2, 4, 5, 6, 9, 10, 11, 12]);
    let st = &l.sw.pmds[0].stats;
    // Twelve distinct keys: two translations (the first of each rule),
    // ten megaflow hits (the run's or the cache's), no exact-match hit.
    assert_eq!(
        (
            st.emc_hits.get() - before.0,
            st.emc_misses.get() - before.1,
            st.megaflow_hits.get() - before.2
        ),
        (0, 12, 10)
    );
    let t = l.flows.tables.lock().unwrap();
    let mut by_prio: Vec<(u16, u64)> = t.rules().map(|r| (r.priority, r.stats.get().0)).collect();
    by_prio.sort();
    assert_eq!(by_prio, vec![(10, 9), (20, 3)]);
}

#[test]
fn rewrites_vlan_and_multiple_outputs() {
    let mut l = lab(3);
    l.clear();
    let mut m = in_port(1);
    m.exact(Field::DlType, 0x800);
    m.exact(Field::NwProto, 17);
    m.exact(Field::TpDst, 53);
    l.flow(FlowMod::add(
        0,
        10,
        m,
        vec![
            out(2),
            Action::PushVlan(0x8100),
            Action::SetVlanVid {
                vid: 100,
                push: false,
            },
            Action::SetNwDst(0x0a00_0001),
            Action::SetTpDst(5353),
            out(3),
        ],
    ));
    l.send(0, vec![udp(7, 53)]);
    let p1 = l.take(1);
    let p2 = l.take(2);
    assert_eq!(p1.len(), 1);
    assert_eq!(
        p1[0].data(),
        udp(7, 53).data(),
        "first output sees the packet unchanged"
    );
    assert_eq!(p2.len(), 1);
    let d = p2[0].data();
    assert_eq!(&d[12..16], &[0x81, 0x00, 0x00, 100]);
    assert_eq!(&d[34..38], &[10, 0, 0, 1]);
    assert_eq!(u16::from_be_bytes([d[40], d[41]]), 5353);
    // IP header checksum still right.
    assert_eq!(rvs_dataplane::wire::checksum::checksum(&d[18..38]), 0);
}

#[test]
fn a_run_of_one_flow_is_rewritten_and_sent_whole_in_order() {
    // A burst of one flow takes its actions op by op over all its packets:
    // the first output still sees every packet unchanged, the second every
    // packet rewritten, and both ports get them in arrival order.
    let mut l = lab(3);
    l.clear();
    l.flow(FlowMod::add(
        0,
        10,
        in_port(1),
        vec![
            out(2),
            Action::SetNwDst(0x0a00_0001),
            Action::SetTpDst(5353),
            out(3),
        ],
    ));
    let burst: Vec<HeapBuf> = (0..24u8)
        .map(|i| {
            let mut p = udp(7, 53);
            let last = p.data().len() - 1;
            p.data_mut()[last] = i;
            p
        })
        .collect();
    l.send(0, burst);
    let (p1, p2) = (l.take(1), l.take(2));
    assert_eq!((p1.len(), p2.len()), (24, 24));
    for (i, (a, b)) in p1.iter().zip(&p2).enumerate() {
        let (a, b) = (a.data(), b.data());
        assert_eq!(a[a.len() - 1], i as u8, "port 2 in arrival order");
        assert_eq!(b[b.len() - 1], i as u8, "port 3 in arrival order");
        assert_eq!(&a[30..34], &[10, 0, 0, 99], "first output unchanged");
        assert_eq!(u16::from_be_bytes([a[36], a[37]]), 53);
        assert_eq!(&b[30..34], &[10, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([b[36], b[37]]), 5353);
        assert_eq!(rvs_dataplane::wire::checksum::checksum(&b[14..34]), 0);
    }
    let t = l.flows.tables.lock().unwrap();
    assert_eq!(t.rules().next().unwrap().stats.get(), (24, 24 * 46));
}

#[test]
fn bursts_through_ct_and_nat_both_ways_count_exactly() {
    // rvs-bench's nat flows: two connections interleaved in one burst go
    // through the tracker, NAT and a recirculation as a held set; every
    // packet is rewritten, and each rule counts exactly its packets.
    use rvs_dataplane::conntrack::nat::NatKind;
    use rvs_dataplane::conntrack::state::{EST, NEW, TRK};
    let mut l = lab(2);
    l.clear();
    let ct = |commit, table, kind| ct_action(commit, 1, table, Some((kind, 0x0a00_0002)));
    let ip_from = |p: u32, table| {
        let mut m = in_port(p);
        m.exact(Field::DlType, 0x800);
        l.flow(FlowMod::add(
            0,
            10,
            m,
            vec![ct(false, Some(table), NatKind::Reverse)],
        ));
    };
    ip_from(1, 1);
    ip_from(2, 2);
    l.flow(FlowMod::add(
        1,
        10,
        ip_in_state(TRK | NEW),
        vec![ct(true, None, NatKind::Dst), out(2)],
    ));
    l.flow(FlowMod::add(1, 20, ip_in_state(TRK | EST), vec![out(2)]));
    l.flow(FlowMod::add(2, 20, ip_in_state(TRK | EST), vec![out(1)]));
    let sports = [
        1000u16, 1000, 1000, 2000, 2000, 1000, 1000, 2000, 1000, 1000, 1000, 1000,
    ];
    let burst = || -> Vec<HeapBuf> {
        sports
            .iter()
            .map(|&sp| {
                let mut p = udp(1, 80);
                p.data_mut()[34..36].copy_from_slice(&sp.to_be_bytes());
                p
            })
            .collect()
    };
    let sport = |d: &[u8]| u16::from_be_bytes([d[34], d[35]]);
    let check_ip = |d: &[u8]| assert_eq!(rvs_dataplane::wire::checksum::checksum(&d[14..34]), 0);
    // New connections: committed with DNAT to 10.0.0.2, out of port 2.
    l.send(0, burst());
    let fwd = l.take(1);
    assert_eq!(fwd.len(), 12);
    for (p, &sp) in fwd.iter().zip(&sports) {
        assert_eq!(
            (&p.data()[30..34], sport(p.data())),
            (&[10u8, 0, 0, 2][..], sp)
        );
        check_ip(p.data());
    }
    // Replies (addresses and ports swapped) come back un-NATed.
    let replies: Vec<HeapBuf> = fwd
        .into_iter()
        .map(|mut p| {
            let d = p.data_mut();
            for (a, b, n) in [(26, 30, 4), (34, 36, 2)] {
                for i in 0..n {
                    d.swap(a + i, b + i);
                }
            }
            p
        })
        .collect();
    l.send(1, replies);
    let back = l.take(0);
    assert_eq!(back.len(), 12);
    for (p, &sp) in back.iter().zip(&sports) {
        let d = p.data();
        assert_eq!(
            (&d[26..30], &d[30..34]),
            (&[10u8, 0, 0, 99][..], &[10u8, 0, 0, 1][..])
        );
        assert_eq!(u16::from_be_bytes([d[36], d[37]]), sp);
        check_ip(d);
    }
    // Established now: the same burst takes table 1's +est rule, each
    // packet counted once on its connection.
    let conns = |l: &Lab| -> Vec<(u16, [u64; 2], [u64; 2])> {
        l.sw.ct
            .dump(Some(1))
            .iter()
            .map(|c| {
                let st = c.st.lock().unwrap();
                (c.orig.sport, st.packets, st.bytes)
            })
            .collect()
    };
    let before = conns(&l);
    assert_eq!(before.len(), 2);
    l.send(0, burst());
    assert_eq!(l.take(1).len(), 12);
    let after = conns(&l);
    let fwd_delta = |i: usize| {
        (
            after[i].1[0] - before[i].1[0],
            after[i].2[0] - before[i].2[0],
        )
    };
    assert_eq!((fwd_delta(0), fwd_delta(1)), ((9, 9 * 46), (3, 3 * 46)));
    // A burst of one connection alone: counted on it at once after its
    // first packet, every packet rewritten.
    let one: Vec<HeapBuf> = (0..20u8)
        .map(|i| {
            let mut p = udp(1, 80);
            p.data_mut()[34..36].copy_from_slice(&2000u16.to_be_bytes());
            let last = p.data().len() - 1;
            p.data_mut()[last] = i;
            p
        })
        .collect();
    l.send(0, one);
    let out2 = l.take(1);
    assert_eq!(out2.len(), 20);
    for (i, p) in out2.iter().enumerate() {
        let d = p.data();
        assert_eq!(
            (&d[30..34], sport(d), d[d.len() - 1]),
            (&[10u8, 0, 0, 2][..], 2000, i as u8)
        );
        check_ip(d);
    }
    let last = conns(&l);
    assert_eq!(
        (last[1].1[0] - after[1].1[0], last[1].2[0] - after[1].2[0]),
        (20, 20 * 46)
    );
    assert_eq!(last[0].1, after[0].1, "the other connection untouched");
    // A new connection's burst: the first packet creates it, the rest
    // find it (still +new: no reply yet), each counted once.
    let fresh: Vec<HeapBuf> = (0..20)
        .map(|_| {
            let mut p = udp(1, 80);
            p.data_mut()[34..36].copy_from_slice(&3000u16.to_be_bytes());
            p
        })
        .collect();
    l.send(0, fresh);
    let out3 = l.take(1);
    assert_eq!(out3.len(), 20);
    for p in &out3 {
        assert_eq!(
            (&p.data()[30..34], sport(p.data())),
            (&[10u8, 0, 0, 2][..], 3000)
        );
        check_ip(p.data());
    }
    let now = conns(&l);
    assert_eq!(now.len(), 3);
    let c = now.iter().find(|c| c.0 == 3000).expect("new connection");
    assert_eq!((c.1, c.2), ([20, 0], [20 * 46, 0]));
    let hits = l.rule_hits();
    assert_eq!(
        hits,
        vec![
            (0, 10, 64),
            (0, 10, 12),
            (1, 10, 32),
            (1, 20, 32),
            (2, 20, 12)
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
}

#[test]
fn a_burst_of_many_connections_comes_back_from_ct_to_the_right_rules_in_order() {
    // One rule sends every packet through ct(table=1), so a burst of
    // several connections is one held set of many keys; table 1 sends
    // 10.0.0.3's packets to port 3 and the rest to port 2. Whatever groups
    // the recirculated packets form, each goes where its own key says, in
    // arrival order, and each rule counts exactly its packets.
    use rvs_dataplane::conntrack::state::{NEW, TRK};
    let mut l = lab(3);
    l.clear();
    let ct = |commit, table| ct_action(commit, 0, table, None);
    let mut m = in_port(1);
    m.exact(Field::DlType, 0x800);
    l.flow(FlowMod::add(0, 10, m, vec![ct(false, Some(1))]));
    let new_from = |src: Option<u64>| {
        let mut m = ip_in_state(TRK | NEW);
        if let Some(ip) = src {
            m.exact(Field::NwSrc, ip);
        }
        m
    };
    l.flow(FlowMod::add(
        1,
        20,
        new_from(Some(0x0a00_0003)),
        vec![ct(true, None), out(3)],
    ));
    l.flow(FlowMod::add(
        1,
        10,
        new_from(None),
        vec![ct(true, None), out(2)],
    ));
    let srcs = [1u8, 2, 3, 3, 1, 4, 3, 2, 2, 5, 3, 1];
    let burst = || -> Vec<HeapBuf> {
        srcs.iter()
            .enumerate()
            .map(|(i, &s)| {
                let mut p = udp(s, 80);
                let n = p.data().len();
                p.data_mut()[n - 1] = i as u8;
                p
            })
            .collect()
    };
    let tags = |v: Vec<HeapBuf>| -> Vec<(u8, u8)> {
        v.iter()
            .map(|p| (p.data()[29], p.data()[p.data().len() - 1]))
            .collect()
    };
    let want = |to3: bool| -> Vec<(u8, u8)> {
        srcs.iter()
            .enumerate()
            .filter(|(_, &s)| (s == 3) == to3)
            .map(|(i, &s)| (s, i as u8))
            .collect()
    };
    for round in 1..=2u64 {
        l.send(0, burst());
        assert_eq!(tags(l.take(1)), want(false), "round {round}");
        assert_eq!(tags(l.take(2)), want(true), "round {round}");
        assert!(l.take(0).is_empty());
        let hits = l.rule_hits();
        assert_eq!(
            hits,
            vec![(0, 10, 12 * round), (1, 10, 8 * round), (1, 20, 4 * round)]
        );
    }
    assert_eq!(l.sw.ct.dump(Some(0)).len(), 5);
}

#[test]
fn a_burst_of_new_connections_through_ct_and_a_committing_nat_creates_each() {
    // The CloudStack static-NAT shape with every frame of the burst a new
    // connection: ct(nat,table=1), then +new commits with DNAT and goes
    // out. Each frame gets its own connection, translated.
    use rvs_dataplane::conntrack::nat::NatKind;
    use rvs_dataplane::conntrack::state::{EST, NEW, TRK};
    let mut l = lab(2);
    l.clear();
    let ct = |commit, table, kind| ct_action(commit, 3, table, Some((kind, 0x0a01_0005)));
    let mut m = in_port(1);
    m.exact(Field::DlType, 0x800);
    l.flow(FlowMod::add(
        0,
        10,
        m,
        vec![ct(false, Some(1), NatKind::Reverse)],
    ));
    l.flow(FlowMod::add(
        1,
        10,
        ip_in_state(TRK | NEW),
        vec![ct(true, None, NatKind::Dst), out(2)],
    ));
    l.flow(FlowMod::add(1, 20, ip_in_state(TRK | EST), vec![out(2)]));
    let burst = |round: u16| -> Vec<HeapBuf> {
        (0..32u16)
            .map(|i| {
                let mut p = udp(7 + (i % 3) as u8, 9999);
                let sport = 20000 + round * 100 + i;
                p.data_mut()[34..36].copy_from_slice(&sport.to_be_bytes());
                p
            })
            .collect()
    };
    for round in 0..3u16 {
        l.send(0, burst(round));
        let got = l.take(1);
        assert_eq!(got.len(), 32, "round {round}");
        for p in &got {
            assert_eq!(&p.data()[30..34], &[10u8, 1, 0, 5][..]);
        }
        assert_eq!(l.sw.ct.dump(Some(3)).len(), 32 * (round as usize + 1));
    }
    // Sent again: the connections are found, not made again, and stay
    // +new (UDP without a reply, as Linux and OVS report it).
    l.send(0, burst(1));
    assert_eq!(l.take(1).len(), 32);
    assert_eq!(l.sw.ct.dump(Some(3)).len(), 96);
    let hits = l.rule_hits();
    assert_eq!(hits, vec![(0, 10, 128), (1, 10, 128), (1, 20, 0)]);
}

#[test]
fn the_tracker_sees_a_connections_packets_in_order_within_a_mixed_burst() {
    // Two packets of one UDP connection (keys differing in TOS) with
    // another connection's packet between them, through ct(table=1) and a
    // committing ct in table 1, both in one zone: as packet by packet,
    // the first packet's commit comes before the second packet's first
    // ct, so the connection counts all four passes of its two packets.
    use rvs_dataplane::conntrack::state::{NEW, TRK};
    let mut l = lab(2);
    l.clear();
    let ct = |commit, table| ct_action(commit, 1, table, None);
    let mut m = in_port(1);
    m.exact(Field::DlType, 0x800);
    l.flow(FlowMod::add(0, 10, m, vec![ct(false, Some(1))]));
    l.flow(FlowMod::add(
        1,
        10,
        ip_in_state(TRK | NEW),
        vec![ct(true, None), out(2)],
    ));
    let with_tos = |src: u8, tos: u8| {
        let mut p = udp(src, 80);
        let d = p.data_mut();
        d[15] = tos;
        d[24..26].copy_from_slice(&[0, 0]);
        let c = rvs_dataplane::wire::checksum::checksum(&d[14..34]);
        d[24..26].copy_from_slice(&c.to_be_bytes());
        p
    };
    l.send(0, vec![with_tos(1, 0), with_tos(2, 0), with_tos(1, 4)]);
    assert_eq!(l.take(1).len(), 3);
    let mut conns: Vec<(u32, u64)> =
        l.sw.ct
            .dump(Some(1))
            .iter()
            .map(|c| (c.orig.src, c.st.lock().unwrap().packets[0]))
            .collect();
    conns.sort();
    assert_eq!(conns, vec![(0x0a00_0001, 3), (0x0a00_0002, 1)]);
}

#[test]
fn resubmit_registers_and_goto() {
    let mut l = lab(4);
    l.clear();
    // table 0: load in_port into reg0, go to table 1
    l.flow(FlowMod::add(
        0,
        1,
        Match::any(),
        vec![
            Action::RegMove {
                src: Field::InPort,
                src_ofs: 0,
                dst: Field::Reg(0),
                dst_ofs: 0,
                n_bits: 16,
            },
            Action::Resubmit {
                port: None,
                table: Some(1),
            },
        ],
    ));
    let mut m = Match::any();
    m.exact(Field::Reg(0), 2);
    l.flow(FlowMod::add(1, 5, m, vec![out(4)]));
    l.flow(FlowMod::add(1, 1, Match::any(), vec![Action::GotoTable(2)]));
    l.flow(FlowMod::add(2, 1, Match::any(), vec![out(3)]));
    l.send(1, vec![udp(1, 1)]);
    l.send(0, vec![udp(1, 1)]);
    assert_eq!(l.counts(), vec![0, 0, 1, 1]);
}

#[test]
fn resubmit_loop_is_bounded_and_counted() {
    let mut l = lab(2);
    l.clear();
    l.flow(FlowMod::add(
        0,
        1,
        Match::any(),
        vec![Action::Resubmit {
            port: None,
            table: Some(0),
        }],
    ));
    l.send(0, vec![udp(1, 1)]);
    assert_eq!(l.counts(), vec![0, 0]);
    assert_eq!(l.drops(DropReason::RecursionLimit), 1);
}

#[test]
fn groups_all_and_select() {
    let mut l = lab(4);
    l.clear();
    let bucket = |p| Bucket {
        weight: 1,
        watch_port: ofpp::ANY,
        watch_group: OFPG_ANY,
        actions: vec![out(p)],
    };
    l.group(GroupMod {
        command: GroupCommand::Add,
        kind: GroupType::All,
        id: 1,
        buckets: vec![bucket(2), bucket(3)],
        selection_method: String::new(),
        fields: Vec::new(),
    });
    l.group(GroupMod {
        command: GroupCommand::Add,
        kind: GroupType::Select,
        id: 2,
        buckets: vec![bucket(1), bucket(3), bucket(4)],
        selection_method: String::new(),
        fields: Vec::new(),
    });
    l.flow(FlowMod::add(0, 1, in_port(1), vec![Action::Group(1)]));
    l.flow(FlowMod::add(0, 1, in_port(2), vec![Action::Group(2)]));
    l.send(0, (0..10).map(|i| udp(i, 1)).collect());
    assert_eq!(l.counts(), vec![0, 10, 10, 0]);
    // Select: every packet of one 5-tuple to one bucket; many tuples spread.
    for round in 0..2 {
        l.send(1, (0..200).map(|i| udp(i, 7)).collect());
        let c = l.counts();
        assert_eq!(c.iter().sum::<usize>(), 200, "round {round}");
        assert_eq!(c[1], 0, "never back out of the ingress port");
        assert!(c[0] > 30 && c[2] > 30 && c[3] > 30, "spread {c:?}");
    }
    for _ in 0..3 {
        l.send(1, (0..10).map(|_| udp(42, 7)).collect());
        let c = l.counts();
        assert_eq!(c.iter().filter(|&&n| n == 10).count(), 1, "{c:?}");
    }
}

#[test]
fn flow_changes_take_effect_next_batch() {
    let mut l = lab(3);
    l.send(0, vec![udp(1, 1)]);
    assert_eq!(l.counts(), vec![0, 1, 1], "default NORMAL floods");
    l.clear();
    l.flow(FlowMod::add(0, 1, in_port(1), vec![out(2)]));
    l.send(0, vec![udp(1, 1)]);
    assert_eq!(l.counts(), vec![0, 1, 0]);
    let mut fm = FlowMod::add(0, 1, in_port(1), vec![out(3)]);
    fm.command = Command::ModifyStrict;
    l.flow(fm);
    l.send(0, vec![udp(1, 1)]);
    assert_eq!(l.counts(), vec![0, 0, 1], "cached translation retired");
    let t = l.flows.tables.lock().unwrap();
    assert_eq!(
        t.rules().next().unwrap().stats.get().0,
        2,
        "modify keeps counters"
    );
}

#[test]
fn dec_ttl_expiry() {
    let mut l = lab(3);
    l.clear();
    l.flow(FlowMod::add(0, 1, in_port(1), vec![Action::DecTtl, out(2)]));
    let mut p = udp(1, 1);
    p.data_mut()[22] = 1;
    l.send(0, vec![p]);
    assert_eq!(l.counts(), vec![0, 0, 0]);
    assert_eq!(l.drops(DropReason::TtlExpired), 1);
    l.send(0, vec![udp(1, 1)]);
    let got = l.take(1);
    assert_eq!(got[0].data()[22], 63);
    assert_eq!(
        rvs_dataplane::wire::checksum::checksum(&got[0].data()[14..34]),
        0
    );
}

#[test]
fn learn_asks_the_control_thread_once_per_second() {
    let mut l = lab(3);
    l.clear();
    let learn = Learn {
        table: 1,
        priority: 7,
        idle_timeout: 30,
        hard_timeout: 0,
        fin_idle_timeout: 0,
        fin_hard_timeout: 0,
        cookie: 0x42,
        flags: 0,
        specs: vec![
            LearnSpec::Match {
                src: LearnSrc::Field {
                    field: Field::DlSrc,
                    ofs: 0,
                },
                dst: Field::DlDst,
                dst_ofs: 0,
                n_bits: 48,
            },
            LearnSpec::Load {
                src: LearnSrc::Imm(5),
                dst: Field::Reg(1),
                dst_ofs: 4,
                n_bits: 4,
            },
            LearnSpec::Output {
                src: LearnSrc::Field {
                    field: Field::InPort,
                    ofs: 0,
                },
                n_bits: 16,
            },
        ],
    };
    l.flow(FlowMod::add(
        0,
        1,
        Match::any(),
        vec![Action::Learn(Box::new(learn)), out(3)],
    ));
    l.send(1, (0..10).map(|_| udp(7, 1)).collect());
    l.send(1, (0..10).map(|_| udp(7, 1)).collect());
    assert_eq!(l.counts(), vec![0, 0, 20]);
    let rx = l.flows.learned_rx.lock().unwrap();
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(
        got.len(),
        1,
        "one request per cached translation per second"
    );
    let f = &got[0].flow;
    let mut want = Match::any();
    want.exact(Field::DlDst, 0x0200_0000_0001);
    assert_eq!(
        (f.table, f.priority, f.idle_timeout, f.cookie),
        (1, 7, 30, 0x42)
    );
    assert_eq!(f.m, want);
    assert_eq!(
        f.actions,
        vec![
            Action::RegLoad {
                field: Field::Reg(1),
                ofs: 4,
                n_bits: 4,
                value: 5
            },
            out(2)
        ]
    );
}

fn vid_match(m: &mut Match, vid: u16) {
    m.set(Field::VlanTci, (0x1000 | vid) as u64, 0x1fff);
}

/// CloudStack's PVLAN flows in miniature (vlan-limit=2): an untagged frame
/// from a VM gets the secondary then the primary tag pushed and is looked up
/// again as if from the trunk (port 3); that rule sends it out of the trunk
/// double-tagged (output to the port resubmit stood in for is allowed: the
/// real in_port is the VM's), and a second copy has both tags stripped one
/// after the other on its way to another VM, the inner tag visible between.
#[test]
fn qinq_push_twice_resubmit_as_trunk_and_strip_twice() {
    let mut l = lab(4);
    l.clear();
    let mut m = in_port(1);
    m.set(Field::VlanTci, 0, 0xffff);
    l.flow(FlowMod::add(
        0,
        50,
        m,
        vec![
            Action::PushVlan(0x8100),
            Action::SetField {
                field: Field::VlanTci,
                value: 0x1000 | 201,
                mask: 0x1fff,
            },
            Action::PushVlan(0x8100),
            Action::SetField {
                field: Field::VlanTci,
                value: 0x1000 | 200,
                mask: 0x1fff,
            },
            Action::Resubmit {
                port: Some(3),
                table: None,
            },
        ],
    ));
    let mut m = in_port(3);
    vid_match(&mut m, 200);
    l.flow(FlowMod::add(
        0,
        60,
        m,
        vec![
            out(3),
            Action::StripVlan,
            Action::Resubmit {
                port: None,
                table: Some(1),
            },
        ],
    ));
    let mut m = Match::any();
    vid_match(&mut m, 201);
    l.flow(FlowMod::add(1, 70, m, vec![Action::StripVlan, out(2)]));
    l.flow(FlowMod::add(1, 0, Match::any(), vec![]));
    l.send(0, vec![udp(7, 53)]);
    let plain = udp(7, 53).data().to_vec();
    let trunk = l.take(2);
    assert_eq!(trunk.len(), 1);
    let d = trunk[0].data();
    assert_eq!(&d[12..20], &[0x81, 0x00, 0x00, 200, 0x81, 0x00, 0x00, 201]);
    assert_eq!(&d[20..], &plain[12..]);
    let vm = l.take(1);
    assert_eq!(vm.len(), 1);
    assert_eq!(vm[0].data(), &plain[..]);
    // The same double-tagged frame arriving on the trunk: the outer tag
    // matches table 0, the inner one table 1 after the strip.
    let mut qq = plain[..12].to_vec();
    qq.extend_from_slice(&[0x81, 0x00, 0x00, 200, 0x81, 0x00, 0x00, 201]);
    qq.extend_from_slice(&plain[12..]);
    l.send(2, vec![HeapBuf::new(&qq)]);
    assert_eq!(l.counts(), vec![0, 1, 0, 0]);
    // Another inner tag: table 1's catch-all drops it.
    qq[19] = 202;
    l.send(2, vec![HeapBuf::new(&qq)]);
    assert_eq!(l.counts(), vec![0, 0, 0, 0]);
}

#[test]
fn pings_of_two_echo_ids_in_one_burst_are_two_connections() {
    // Echo requests of two IDs have the same flow key (ICMP type and
    // code); the tracker tells them apart by ID, so a burst of both is
    // counted on two connections, however it is batched.
    let mut l = lab(2);
    l.clear();
    let mut m = in_port(1);
    m.exact(Field::DlType, 0x800);
    let ct = ct_action(true, 1, Some(1), None);
    l.flow(FlowMod::add(0, 10, m, vec![ct]));
    l.flow(FlowMod::add(1, 10, Match::any(), vec![out(2)]));
    let ping = |id: u16, seq: u16| {
        let mut p = udp(1, 0);
        let d = p.data_mut();
        d[23] = 1;
        d[34..42].copy_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
        d[38..40].copy_from_slice(&id.to_be_bytes());
        d[40..42].copy_from_slice(&seq.to_be_bytes());
        let c = rvs_dataplane::wire::checksum::checksum(&d[34..]);
        d[36..38].copy_from_slice(&c.to_be_bytes());
        p
    };
    let ids = [7u16, 7, 7, 7, 9, 9, 9, 9, 7, 7];
    let burst: Vec<HeapBuf> = ids
        .iter()
        .enumerate()
        .map(|(s, &id)| ping(id, s as u16))
        .collect();
    l.send(0, burst);
    assert_eq!(l.take(1).len(), 10);
    let mut counts: Vec<(u16, u64)> =
        l.sw.ct
            .dump(Some(1))
            .iter()
            .map(|c| {
                (
                    c.orig.sport.max(c.orig.dport),
                    c.st.lock().unwrap().packets[0],
                )
            })
            .collect();
    counts.sort();
    assert_eq!(counts, vec![(7, 6), (9, 4)]);
}
