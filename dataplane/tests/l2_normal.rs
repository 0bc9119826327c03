//! NORMAL switching through the real PMD loop with in-memory ports: learning,
//! flooding, VLAN modes, bridge isolation, drop accounting.
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
    local: PmdLocal<HeapBuf>,
}

/// ports: (bridge index, vlan conf)
fn lab(n_bridges: usize, ports: &[(u16, VlanConf)]) -> Lab {
    let sw = Switch::<HeapBuf>::new(&[(0, 0)]);
    let devs: Vec<_> = ports.iter().map(|_| Arc::new(MemDev::default())).collect();
    let mut snap = Snapshot::empty(1);
    for b in 0..n_bridges {
        snap.bridges.push(BridgeEntry::new(
            &format!("br{b}"),
            Arc::new(MacTable::new(1024, 300)),
            BridgeFlows::new(0),
        ));
    }
    for (i, (b, v)) in ports.iter().enumerate() {
        snap.ports.push(Some(PortEntry {
            name: format!("p{i}").into(),
            ofport: i as u32 + 1,
            bridge: *b,
            vlan: v.clone(),
            dev: devs[i].clone(),
            baseline: Default::default(),
            tunnel: false,
            qos: Default::default(),
        }));
        snap.bridges[*b as usize].add_port(i as u16, i as u32 + 1);
    }
    let q: Vec<(u16, u16, i32)> = (0..ports.len()).map(|i| (i as u16, 0, 0)).collect();
    snap.rxqs = assign_rxqs(&[(0, 0)], &q);
    sw.publish(snap);
    Lab {
        sw,
        devs,
        local: PmdLocal::new(64),
    }
}

fn frame(dst: u8, src: u8, vid: Option<u16>) -> HeapBuf {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&if dst == 0xff {
        [0xff; 6]
    } else {
        [2, 0, 0, 0, 0, dst]
    });
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
    match vid {
        Some(v) => {
            f[12..14].copy_from_slice(&[0x81, 0]);
            f[14..16].copy_from_slice(&v.to_be_bytes());
            f[16..18].copy_from_slice(&[0x08, 0]);
        }
        None => f[12..14].copy_from_slice(&[0x08, 0]),
    }
    HeapBuf::new(&f)
}

impl Lab {
    fn send(&mut self, port: usize, pkts: Vec<HeapBuf>) {
        self.devs[port].rxq.lock().unwrap().extend(pkts);
        let me = self.sw.pmds[0].clone();
        while poll_once(
            &self.sw,
            &me,
            &mut self.local,
            &Clock::monotonic(),
            self.sw.now_secs(),
        ) > 0
        {}
    }
    fn take(&self, port: usize) -> Vec<HeapBuf> {
        std::mem::take(&mut *self.devs[port].sent.lock().unwrap())
    }
    fn counts(&self) -> Vec<usize> {
        (0..self.devs.len()).map(|i| self.take(i).len()).collect()
    }
    fn drops(&self, r: DropReason) -> u64 {
        self.sw.pmds[0].stats.drops[r as usize].get()
    }
}

#[test]
fn floods_unknown_then_forwards_learned_unicast_only() {
    let t = VlanConf::default();
    let mut l = lab(1, &[(0, t.clone()), (0, t.clone()), (0, t)]);
    l.send(0, (0..10).map(|_| frame(2, 1, None)).collect());
    assert_eq!(
        l.counts(),
        vec![0, 10, 10],
        "unknown destination is flooded to all but the ingress port"
    );
    l.send(1, (0..7).map(|_| frame(1, 2, None)).collect());
    assert_eq!(
        l.counts(),
        vec![7, 0, 0],
        "learned destination: only its port"
    );
    l.send(0, (0..5).map(|_| frame(2, 1, None)).collect());
    assert_eq!(l.counts(), vec![0, 5, 0], "both learned now");
    l.send(2, vec![frame(0xff, 3, None)]);
    assert_eq!(l.counts(), vec![1, 1, 0], "broadcast floods");
    let s = &l.sw.pmds[0].stats;
    assert_eq!(s.ports[0].rx_packets.get(), 15);
    assert_eq!(s.ports[1].tx_packets.get(), 16);
    assert_eq!(s.ports[1].tx_bytes.get(), 16 * 60);
    assert_eq!(s.dropped_total(), 0);
}

#[test]
fn station_seen_on_own_port_is_dropped_and_counted() {
    let t = VlanConf::default();
    let mut l = lab(1, &[(0, t.clone()), (0, t)]);
    l.send(0, vec![frame(9, 1, None)]);
    l.send(0, vec![frame(1, 9, None)]); // 9 now learned on port 0, 1 too
    l.counts();
    l.send(0, vec![frame(1, 9, None)]);
    assert_eq!(l.counts(), vec![0, 0]);
    assert_eq!(l.drops(DropReason::SamePort), 2);
}

#[test]
fn access_ports_of_different_tags_exchange_nothing() {
    let mut l = lab(
        1,
        &[
            (0, VlanConf::access(10)),
            (0, VlanConf::access(10)),
            (0, VlanConf::access(20)),
            (0, VlanConf::default()),
        ],
    );
    l.send(0, (0..4).map(|_| frame(0xff, 1, None)).collect());
    let out: Vec<_> = (0..4).map(|i| l.take(i)).collect();
    assert_eq!(
        out.iter().map(|v| v.len()).collect::<Vec<_>>(),
        vec![0, 4, 0, 4]
    );
    assert_eq!(out[1][0].data().len(), 60, "access egress is untagged");
    assert_eq!(
        &out[3][0].data()[12..16],
        &[0x81, 0, 0, 10],
        "trunk egress carries the tag"
    );
    l.send(2, vec![frame(0xff, 3, None)]);
    let c = l.counts();
    assert_eq!(c, vec![0, 0, 0, 1], "tag 20 reaches only the trunk");
    // A tagged frame into an access port is refused.
    l.send(0, vec![frame(0xff, 1, Some(10))]);
    assert_eq!(l.counts(), vec![0, 0, 0, 0]);
    assert_eq!(l.drops(DropReason::VlanDenied), 1);
    // Trunk ingress tagged 20 reaches the tag-20 access port untagged.
    l.send(3, vec![frame(0xff, 4, Some(20))]);
    let got = l.take(2);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].data()[12..14], &[0x08, 0]);
    assert_eq!(l.counts(), vec![0, 0, 0, 0]);
}

#[test]
fn trunks_list_filters_and_native_untagged_strips_native() {
    let trunk = VlanConf::from_ovsdb(Some("trunk"), None, &[10]).unwrap();
    let nu = VlanConf::from_ovsdb(Some("native-untagged"), Some(10), &[20]).unwrap();
    let mut l = lab(1, &[(0, trunk), (0, nu), (0, VlanConf::access(20))]);
    l.send(0, vec![frame(0xff, 1, Some(10)), frame(0xff, 1, Some(20))]);
    assert_eq!(
        l.drops(DropReason::VlanDenied),
        1,
        "VLAN 20 not in the trunk's list"
    );
    let got = l.take(1);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].data().len(),
        56,
        "native VLAN leaves untagged (tag removed)"
    );
    assert_eq!(&got[0].data()[12..14], &[0x08, 0]);
    l.send(2, vec![frame(0xff, 3, None)]);
    let got = l.take(1);
    assert_eq!(
        &got[0].data()[12..16],
        &[0x81, 0, 0, 20],
        "non-native VLAN leaves tagged"
    );
    assert_eq!(l.take(0).len(), 0, "trunk without 20 gets nothing");
}

#[test]
fn no_frame_crosses_bridges() {
    let t = VlanConf::default();
    let mut l = lab(2, &[(0, t.clone()), (0, t.clone()), (1, t.clone()), (1, t)]);
    l.send(0, (0..3).map(|_| frame(0xff, 1, None)).collect());
    l.send(2, (0..2).map(|_| frame(1, 3, None)).collect());
    assert_eq!(l.counts(), vec![0, 3, 0, 2]);
}

#[test]
fn malformed_and_lonely_frames_are_counted() {
    let mut l = lab(1, &[(0, VlanConf::default())]);
    l.send(0, vec![HeapBuf::new(&[1, 2, 3]), frame(0xff, 1, None)]);
    assert_eq!(l.drops(DropReason::Malformed), 1);
    assert_eq!(l.drops(DropReason::NoOutput), 1);
    assert_eq!(l.sw.pmds[0].stats.ports[0].rx_dropped.get(), 2);
}

#[test]
fn tx_refusals_are_counted_per_port() {
    let sw_ports = [(0u16, VlanConf::default()), (0, VlanConf::default())];
    let mut l = lab(1, &sw_ports);
    // Rebuild port 1 with a device that takes only 3 frames.
    let small = Arc::new(MemDev::<HeapBuf> {
        tx_capacity: 3,
        ..Default::default()
    });
    let mut snap = Snapshot::empty(1);
    let mut br = BridgeEntry::new("br0", Arc::new(MacTable::new(64, 300)), BridgeFlows::new(0));
    br.add_port(0, 1);
    br.add_port(1, 2);
    snap.bridges.push(br);
    snap.ports.push(Some(PortEntry {
        name: "p0".into(),
        ofport: 1,
        bridge: 0,
        vlan: VlanConf::default(),
        dev: l.devs[0].clone(),
        baseline: Default::default(),
        tunnel: false,
        qos: Default::default(),
    }));
    snap.ports.push(Some(PortEntry {
        name: "p1".into(),
        ofport: 2,
        bridge: 0,
        vlan: VlanConf::default(),
        dev: small.clone(),
        baseline: Default::default(),
        tunnel: false,
        qos: Default::default(),
    }));
    snap.rxqs = assign_rxqs(&[(0, 0)], &[(0, 0, 0), (1, 0, 0)]);
    l.sw.publish(snap);
    l.send(0, (0..8).map(|_| frame(0xff, 1, None)).collect());
    assert_eq!(small.sent.lock().unwrap().len(), 3);
    assert_eq!(l.drops(DropReason::TxFull), 5);
    assert_eq!(l.sw.pmds[0].stats.ports[1].tx_dropped.get(), 5);
    assert_eq!(l.sw.pmds[0].stats.ports[1].tx_packets.get(), 3);
}

#[test]
fn rxqs_prefer_local_numa_and_balance() {
    let a = assign_rxqs(
        &[(1, 0), (3, 1)],
        &[(0, 0, 1), (1, 0, 1), (2, 0, 0), (3, 0, -1)],
    );
    assert_eq!(a[1].len(), 2, "both node-1 queues on the node-1 PMD");
    assert_eq!(a[0].len(), 2);
}

#[test]
fn a_destination_learned_mid_batch_is_not_served_from_a_stale_verdict() {
    let t = VlanConf::default();
    let mut l = lab(1, &[(0, t.clone()), (0, t)]);
    // One batch from port 0: A->X (X unknown: flood), X->A (X is on port 0
    // too now), A->X again: X is on the ingress port, so dropped.
    l.send(
        0,
        vec![frame(9, 1, None), frame(1, 9, None), frame(9, 1, None)],
    );
    assert_eq!(l.counts(), vec![0, 1]);
    assert_eq!(l.drops(DropReason::SamePort), 2);
}

#[test]
fn a_batch_is_decided_per_run_of_one_header_in_order() {
    let mut l = lab(
        1,
        &[
            (0, VlanConf::default()),
            (0, VlanConf::access(10)),
            (0, VlanConf::access(20)),
            (0, VlanConf::default()),
        ],
    );
    // Same addresses throughout; runs split by the tag (10, 20, none) and
    // by a frame too short to hold the tag it announces.
    let mut short = frame(2, 1, Some(10));
    short.trim(short.data().len() as u16 - 16);
    let batch = vec![
        frame(2, 1, Some(10)),
        frame(2, 1, Some(10)),
        frame(2, 1, Some(10)),
        frame(2, 1, Some(20)),
        frame(2, 1, Some(20)),
        frame(2, 1, None),
        short,
        frame(2, 1, Some(10)),
        frame(2, 1, Some(10)),
    ];
    l.send(0, batch);
    let out: Vec<_> = (0..4).map(|i| l.take(i)).collect();
    assert_eq!(
        out.iter().map(|v| v.len()).collect::<Vec<_>>(),
        vec![0, 5, 2, 8]
    );
    assert!(out[1]
        .iter()
        .all(|p| p.data().len() == 56 && p.data()[12..14] == [8, 0]));
    assert!(out[2].iter().all(|p| p.data().len() == 56));
    let tags: Vec<&[u8]> = out[3].iter().map(|p| &p.data()[12..16]).collect();
    assert_eq!(
        tags,
        vec![
            &[0x81, 0, 0, 10][..],
            &[0x81, 0, 0, 10],
            &[0x81, 0, 0, 10],
            &[0x81, 0, 0, 20],
            &[0x81, 0, 0, 20],
            &[8, 0, 0, 0],
            &[0x81, 0, 0, 10],
            &[0x81, 0, 0, 10],
        ],
        "the trunk gets every run in the order received"
    );
    let pmd = l.sw.pmds[0].clone();
    let st = &pmd.stats;
    assert_eq!(l.drops(DropReason::Malformed), 1);
    assert_eq!(st.flood_packets.get(), 8);
    assert_eq!(st.mac_misses.get(), 8);
    // Station 1 was learned in VLANs 10, 20 and 0, on port 0.
    l.send(1, (0..4).map(|_| frame(1, 2, None)).collect());
    let back = l.take(0);
    assert_eq!(back.len(), 4);
    assert!(back.iter().all(|p| p.data()[12..16] == [0x81, 0, 0, 10]));
    assert_eq!(st.mac_hits.get(), 4);
    assert_eq!(l.counts(), vec![0, 0, 0, 0]);
}
