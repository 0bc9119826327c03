//! What the criterion micro-benchmarks (benches/benches) and rvs-ipp
//! (instructions per operation under callgrind) share: the frames, tables,
//! ports and connection sets each operation runs on, so that nanoseconds and
//! instructions are measured on the same inputs.
use rvs_dataplane::conntrack::{Conntrack, CtRequest};
use rvs_dataplane::flow::action::Action;
use rvs_dataplane::flow::key::{Field, FlowKey, Match};
use rvs_dataplane::flow::table::{FlowMod, FlowTables};
use rvs_dataplane::flow::xlate::PortView;
use rvs_dataplane::mac_table::MacTable;
use rvs_dataplane::netdev::{DevStatus, NetDev};
use rvs_dataplane::packet::HeapBuf;
use rvs_dataplane::snapshot::{BridgeEntry, BridgeFlows, PortEntry, Snapshot};
use rvs_dataplane::tunnel::decap::{RxMap, RxPort, Terminates};
use rvs_dataplane::tunnel::encap::Endpoints;
use rvs_dataplane::tunnel::{Param, TunnelConf};
use rvs_dataplane::vlan::VlanConf;
use rvs_dataplane::wire::MacAddr;
use rvs_dataplane::Burst;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A port that swallows what it is given (the cost of a real tx is not
/// what the micro-benchmarks measure).
pub struct Sink;
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

/// A 64-byte IPv4 frame from 02:..:src to 02:..:dst.
pub fn frame(dst: u8, src: u8) -> HeapBuf {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, dst]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
    f[12..14].copy_from_slice(&[0x08, 0]);
    HeapBuf::new(&f)
}

/// One bridge with two Sink ports (ofports 1 and 2) tagged as given.
pub fn snapshot(vlans: [VlanConf; 2]) -> Snapshot<HeapBuf> {
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

/// rvs-bench's `nat` scenario flows on `snapshot`'s bridge (ports 1 and
/// 2): table 0 sends IP from either port through ct(zone=1,nat) to table 1
/// (from port 1) or 2 (from port 2); a new UDP connection from port 1 is
/// committed with destination NAT to 10.0.0.2 and sent to port 2;
/// established packets go straight across.
pub fn nat_flows(snap: &Snapshot<HeapBuf>) {
    use rvs_dataplane::conntrack::nat::{NatKind, NatSpec};
    use rvs_dataplane::conntrack::state::{EST, NEW, TRK};
    use rvs_dataplane::flow::action::{CtAction, CtZone};
    let ct = |commit: bool, table: Option<u8>, nat: NatSpec| {
        Action::Ct(Box::new(CtAction {
            commit,
            force: false,
            zone: CtZone::Imm(1),
            table,
            alg: 0,
            nat: Some(nat),
            exec: Vec::new(),
        }))
    };
    let dnat = NatSpec {
        kind: NatKind::Dst,
        ip_min: 0x0a00_0002,
        ip_max: 0x0a00_0002,
        port_min: 0,
        port_max: 0,
        persistent: false,
        hash: false,
        random: false,
    };
    let reverse = NatSpec {
        kind: NatKind::Reverse,
        ..dnat
    };
    let out = |p| Action::Output {
        port: p,
        max_len: 0,
    };
    let m = |fields: &[(Field, u64)]| {
        let mut m = Match::any();
        for &(f, v) in fields {
            m.exact(f, v);
        }
        m
    };
    let ip = (Field::DlType, 0x800);
    let state = |bits: u8| {
        let mut m = m(&[ip]);
        m.set(Field::CtState, bits as u64, bits as u64);
        m
    };
    let mut new_udp = state(TRK | NEW);
    new_udp.exact(Field::NwProto, 17);
    let flows = &snap.bridges[0].flows;
    let mut t = flows.tables.lock().expect("tables");
    for fm in [
        FlowMod::add(
            0,
            10,
            m(&[(Field::InPort, 1), ip]),
            vec![ct(false, Some(1), reverse)],
        ),
        FlowMod::add(
            0,
            10,
            m(&[(Field::InPort, 2), ip]),
            vec![ct(false, Some(2), reverse)],
        ),
        FlowMod::add(1, 10, new_udp, vec![ct(true, None, dnat), out(2)]),
        FlowMod::add(1, 10, state(TRK | EST), vec![out(2)]),
        FlowMod::add(2, 10, state(TRK | EST), vec![out(1)]),
    ] {
        t.flow_mod(&fm, 0).expect("nat flow");
    }
    flows.publish(&mut t, || {});
}

/// Swaps a UDP/IPv4 frame's addresses and ports (testpmd's 5tswap): the
/// reply to what it was.
pub fn five_tuple_swap(f: &mut [u8]) {
    for (a, b, n) in [(26, 30, 4), (34, 36, 2)] {
        for i in 0..n {
            f.swap(a + i, b + i);
        }
    }
}

/// A MAC table that learned 4096 addresses over 16 ports.
pub fn learned_macs() -> MacTable {
    let t = MacTable::new(8192, 300);
    for i in 0..4096u64 {
        t.learn(0, mac(i), (i % 16) as u16, 1);
    }
    t
}

/// Address `i` of `learned_macs`.
pub fn mac(i: u64) -> MacAddr {
    MacAddr::from_u64(0x0200_0000_0000 | (i & 4095))
}

/// Ports 0-7 as their own ofports.
pub struct Ports(pub Vec<u16>);
impl Ports {
    pub fn eight() -> Ports {
        Ports((0..8).collect())
    }
}
impl PortView for Ports {
    fn slot(&self, ofport: u32) -> Option<u16> {
        (ofport < 8).then_some(ofport as u16)
    }
    fn slots(&self) -> &[u16] {
        &self.0
    }
}

/// The packet key of flow `i`: a distinct TCP 5-tuple.
pub fn key(i: u32) -> FlowKey {
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

/// A key no rule of `tables` matches (IPv6 on port 9).
pub fn miss_key() -> FlowKey {
    let mut k = FlowKey::default();
    k.set(Field::InPort, 9);
    k.set(Field::DlType, 0x86dd);
    k
}

/// `n` exact 5-tuple rules plus a few wildcard ones in other subtables
/// (a table a real deployment has: per-connection rules over broad ones).
pub fn tables(n: u32) -> FlowTables {
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

/// Tunnel endpoints the encapsulation benchmarks use.
pub const EP: Endpoints = Endpoints {
    src_mac: [2, 0, 0, 0, 0, 1],
    dst_mac: [2, 0, 0, 0, 0, 2],
    src_ip: 0x0a00_0001,
    dst_ip: 0x0a00_0002,
};

/// A tunnel port's configuration: remote 10.0.0.2, key 77.
pub fn tunnel_conf(kind: &str, csum: bool) -> TunnelConf {
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

/// A 64-byte inner UDP frame.
pub fn inner() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xa]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xb]);
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&50u16.to_be_bytes());
    f[23] = 17;
    f
}

/// This host terminates GRE and VXLAN (4789) on 10.0.0.2.
pub struct Local;
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

/// 1000 GRE and 1000 VXLAN tunnels from 10.0.0.1, keys 0-999.
pub fn thousand_tunnels() -> RxMap {
    let mut rx = RxMap::default();
    for k in 0..1000u64 {
        for kind in ["gre", "vxlan"] {
            let c = tunnel_conf(kind, false);
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
    rx
}

/// A UDP frame (with 4 bytes of payload).
pub fn udp(src: u32, sport: u16, dst: u32, dport: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
    f.extend_from_slice(&[0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src.to_be_bytes());
    f.extend_from_slice(&dst.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 12, 0x12, 0x34, 1, 2, 3, 4]);
    f
}

/// A tracker holding `n` committed UDP connections, and a frame of one of
/// them.
pub fn connections(n: u32) -> (Conntrack, Vec<u8>) {
    let ct = Conntrack::new(2 << 20);
    let commit = CtRequest {
        commit: true,
        ..Default::default()
    };
    for i in 0..n {
        ct.process(
            &udp(
                0x0a00_0000 + (i >> 16),
                (i & 0xffff) as u16,
                0xc633_6407,
                53,
            ),
            &commit,
            0,
        );
    }
    (ct, udp(0x0a00_0000, 7, 0xc633_6407, 53))
}

/// A UDP frame to 203.0.113.10:80 and the rewrite a committed DNAT to
/// 10.1.0.5:8000 applies to it.
pub fn dnat_rewrite() -> (rvs_dataplane::conntrack::nat::Rewrite, Vec<u8>) {
    use rvs_dataplane::conntrack::nat::{NatKind, NatSpec};
    let ct = Conntrack::new(1024);
    let dnat = NatSpec {
        kind: NatKind::Dst,
        ip_min: 0x0a01_0005,
        ip_max: 0x0a01_0005,
        port_min: 8000,
        port_max: 8000,
        persistent: false,
        hash: false,
        random: false,
    };
    let f = udp(0xc633_6407, 4000, 0xcb00_710a, 80);
    let req = CtRequest {
        commit: true,
        nat: Some(&dnat),
        ..Default::default()
    };
    let rw = ct.process(&f, &req, 0).rewrite.expect("translated");
    (rw, f)
}

/// Frames whose parsing the `parse` benchmarks time: UDP, the same behind
/// an 802.1Q tag, and a VXLAN packet's outer headers.
pub fn parse_frames() -> Vec<(&'static str, Vec<u8>)> {
    use rvs_dataplane::packet::PacketBuf;
    let u = udp(0x0a00_0001, 1000, 0x0a00_0002, 53);
    let mut tagged = u.clone();
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
    let mut vx = HeapBuf::new(&inner());
    rvs_dataplane::tunnel::encap::Header::new(&tunnel_conf("vxlan", false), &EP)
        .push(&mut vx, 77, 1);
    vec![
        ("udp", u),
        ("802.1q udp", tagged),
        ("vxlan outer", vx.data().to_vec()),
    ]
}
