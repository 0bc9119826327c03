//! A bridge's service rules compiled to OpenFlow flows and groups, the
//! same ones an operator could write with ovs-ofctl (and `ovs-ofctl
//! dump-flows` shows): the gateway answers ARP and learns neighbours,
//! frames sent to its MAC go through the connection tracker, new
//! connections are translated by the rule they match, and everything is
//! forwarded to the next hop's MAC by NORMAL.
//!
//! Tables (see docs/ARCHITECTURE.md, "Service layer"):
//! - 0: ARP for served addresses, ARP replies to the gateway, IP to the
//!   gateway's MAC -> ct(nat, table=SVC).
//! - SVC: invalid dropped; established/related forwarded (per rule by
//!   ct_mark, so each rule counts its packets); new connections matched
//!   against the rules and committed with their translation and mark.
//! - ROUTE: source MAC = the gateway's; replies go back to the MAC and
//!   port that opened the connection (kept in ct_label), others are looked
//!   up in NEIGH.
//! - NEIGH: learned flows, IP -> MAC and port (and the upstream as
//!   default); unresolved dropped.
//! - STICKY / LBPICK: load balancers' source stickiness and per-backend
//!   commits.
use super::spec::{Algorithm, BridgeServices, Gateway, LoadBalancer, Proto};
use rvs_dataplane::conntrack::nat::{NatKind, NatSpec};
use rvs_dataplane::conntrack::state;
use rvs_dataplane::flow::action::{
    ofpp, Action, Bucket, CtAction, CtZone, GroupType, Learn, LearnSpec, LearnSrc,
};
use rvs_dataplane::flow::key::{Field, Match};
use rvs_dataplane::flow::table::{FlowMod, GroupCommand, GroupMod, OFPG_ANY};

pub const T_SVC: u8 = 220;
pub const T_ROUTE: u8 = 221;
pub const T_NEIGH: u8 = 222;
pub const T_STICKY: u8 = 224;
pub const T_LBPICK: u8 = 225;

/// Cookies: "rvs" in the top 24 bits, the kind of rule, then its mark.
pub const COOKIE_TAG: u64 = 0x72_7673 << 40;
pub const KIND_GATEWAY: u64 = 1;
pub const KIND_NAT: u64 = 2;
pub const KIND_PF: u64 = 3;
pub const KIND_LB: u64 = 4;
/// Flows learn actions add (neighbours, stickiness): the service layer's,
/// but not compiled, so a recompilation leaves them alone.
pub const KIND_LEARNED: u64 = 0xf;

/// How long a learned neighbour lives without traffic.
pub const NEIGH_IDLE: u16 = 300;
/// Priorities in table 0, above what CloudStack's scripts use.
pub const PRIO_ARP: u16 = 50010;
pub const PRIO_IP: u16 = 50000;

/// The register the sticky table and backends pass a backend number in.
const REG_BACKEND: u8 = 6;
const ETH_IP: u64 = 0x0800;
const ETH_ARP: u64 = 0x0806;

pub fn cookie(kind: u64, mark: u32) -> u64 {
    COOKIE_TAG | kind << 32 | mark as u64
}

/// The kind of a service flow's cookie, None for flows the service layer
/// did not write.
pub fn cookie_kind(c: u64) -> Option<u64> {
    (c & (0xff_ffff << 40) == COOKIE_TAG).then_some((c >> 32) & 0xff)
}

pub fn mark(id: u32, backend: u8) -> u32 {
    id << 8 | backend as u32
}

pub fn mac_u64(m: [u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
}

/// The compiled form of one bridge's services.
#[derive(Debug, Default)]
pub struct Compiled {
    pub flows: Vec<FlowMod>,
    pub groups: Vec<GroupMod>,
    /// Addresses the gateway must resolve by ARP: (target, source).
    pub neighbours: Vec<(u32, u32)>,
}

fn m() -> Match {
    Match::any()
}

trait MatchExt {
    fn with(self, f: Field, v: u64) -> Self;
    fn ct(self, on: u8) -> Self;
}

impl MatchExt for Match {
    fn with(mut self, f: Field, v: u64) -> Match {
        self.exact(f, v);
        self
    }
    /// `ct_state=+trk+<on>`, the other flags wildcarded.
    fn ct(mut self, on: u8) -> Match {
        let bits = (state::TRK | on) as u64;
        self.set(Field::CtState, bits, bits);
        self
    }
}

fn ip() -> Match {
    m().with(Field::DlType, ETH_IP)
}

fn l4(proto: Proto) -> Match {
    ip().with(Field::NwProto, proto.number() as u64)
}

fn out(port: u32) -> Action {
    Action::Output { port, max_len: 0 }
}

fn resubmit(table: u8) -> Action {
    Action::Resubmit {
        port: None,
        table: Some(table),
    }
}

fn load(field: Field, value: u64) -> Action {
    Action::RegLoad {
        field,
        ofs: 0,
        n_bits: field.bits() as u8,
        value,
    }
}

fn mv(src: Field, dst: Field) -> Action {
    Action::RegMove {
        src,
        src_ofs: 0,
        dst,
        dst_ofs: 0,
        n_bits: dst.bits() as u8,
    }
}

fn learn(table: u8, priority: u16, idle: u16, specs: Vec<LearnSpec>) -> Action {
    Action::Learn(Box::new(Learn {
        table,
        priority,
        idle_timeout: idle,
        hard_timeout: 0,
        fin_idle_timeout: 0,
        fin_hard_timeout: 0,
        cookie: cookie(KIND_LEARNED, 0),
        flags: 0,
        specs,
    }))
}

fn spec_match(src: LearnSrc, dst: Field) -> LearnSpec {
    LearnSpec::Match {
        src,
        dst,
        dst_ofs: 0,
        n_bits: dst.bits() as u8,
    }
}

fn spec_load(src: LearnSrc, dst: Field) -> LearnSpec {
    LearnSpec::Load {
        src,
        dst,
        dst_ofs: 0,
        n_bits: dst.bits() as u8,
    }
}

fn field(f: Field) -> LearnSrc {
    LearnSrc::Field { field: f, ofs: 0 }
}

/// Where a learned neighbour is: the port the teaching packet came in on.
/// (Routed frames carry the gateway's MAC as source, so NORMAL never learns
/// the hosts behind it and would flood them.)
fn to_in_port() -> LearnSpec {
    LearnSpec::Output {
        src: field(Field::InPort),
        n_bits: 16,
    }
}

/// NEIGH gets "IP `ip_from` is at MAC `mac_from`, behind this port".
fn learn_neighbour(ip_from: Field, mac_from: Field) -> Action {
    learn(
        T_NEIGH,
        100,
        NEIGH_IDLE,
        vec![
            spec_match(LearnSrc::Imm(ETH_IP), Field::DlType),
            spec_match(field(ip_from), Field::NwDst),
            spec_load(field(mac_from), Field::DlDst),
            to_in_port(),
        ],
    )
}

/// `ct(...)`. A commit also keeps the sender's MAC and port in the
/// connection's label (bits 0-47 and 48-63): replies go back there without
/// a neighbour lookup (the first reply often comes before a learned
/// neighbour flow is in place).
fn ct(g: &Gateway, commit: bool, nat: Option<NatSpec>, mark: Option<u32>, table: u8) -> Action {
    let mut exec = Vec::new();
    if let Some(mk) = mark {
        exec.push(Action::SetField {
            field: Field::CtMark,
            value: mk as u64,
            mask: 0xffff_ffff,
        });
    }
    if commit {
        exec.push(Action::RegMove {
            src: Field::DlSrc,
            src_ofs: 0,
            dst: Field::CtLabel,
            dst_ofs: 0,
            n_bits: 48,
        });
        exec.push(Action::RegMove {
            src: Field::InPort,
            src_ofs: 0,
            dst: Field::CtLabel,
            dst_ofs: 48,
            n_bits: 16,
        });
    }
    Action::Ct(Box::new(CtAction {
        commit,
        force: false,
        zone: CtZone::Imm(g.zone),
        table: Some(table),
        alg: 0,
        nat,
        exec,
    }))
}

/// A bare `nat`: packets of known connections get their translation.
fn nat_reverse() -> NatSpec {
    NatSpec {
        kind: NatKind::Reverse,
        ip_min: 0,
        ip_max: 0,
        port_min: 0,
        port_max: 0,
        persistent: false,
        hash: false,
        random: false,
    }
}

fn nat_to(kind: NatKind, ip: u32, port: u16) -> NatSpec {
    NatSpec {
        kind,
        ip_min: ip,
        ip_max: ip,
        port_min: port,
        port_max: port,
        ..nat_reverse()
    }
}

struct Out {
    flows: Vec<FlowMod>,
}

impl Out {
    fn add(
        &mut self,
        kind: u64,
        mk: u32,
        table: u8,
        priority: u16,
        m: Match,
        actions: Vec<Action>,
    ) {
        let mut fm = FlowMod::add(table, priority, m, actions);
        fm.cookie = cookie(kind, mk);
        self.flows.push(fm);
    }
}

/// The ARP responder for `addr` (as the proxy ARP flows OVS users write).
fn arp_responder(g: &Gateway, addr: u32) -> Vec<Action> {
    vec![
        learn_neighbour(Field::NwSrc, Field::ArpSha),
        mv(Field::DlSrc, Field::DlDst),
        Action::SetDlSrc(mac_u64(g.mac)),
        load(Field::NwProto, 2),
        mv(Field::ArpSha, Field::ArpTha),
        mv(Field::NwSrc, Field::NwDst),
        load(Field::ArpSha, mac_u64(g.mac)),
        load(Field::NwSrc, addr as u64),
        out(ofpp::IN_PORT),
    ]
}

pub fn group_id(lb: &LoadBalancer) -> u32 {
    0x7000_0000 | lb.id
}

pub fn compile(b: &BridgeServices) -> Compiled {
    let Some(g) = &b.gateway else {
        return Compiled::default();
    };
    let mut o = Out { flows: Vec::new() };
    let gw = mac_u64(g.mac);
    let routed = vec![Action::SetDlSrc(gw), resubmit(T_NEIGH)];
    let replied = vec![
        Action::SetDlSrc(gw),
        Action::RegMove {
            src: Field::CtLabel,
            src_ofs: 0,
            dst: Field::DlDst,
            dst_ofs: 0,
            n_bits: 48,
        },
        Action::OutputReg {
            field: Field::CtLabel,
            ofs: 48,
            n_bits: 16,
            max_len: 0,
        },
    ];

    // Table 0: ARP for every address the gateway serves, replies to it,
    // and IP to its MAC.
    let mut served: Vec<(u32, u64, u32)> = g
        .addresses
        .iter()
        .map(|&(a, _)| (a, KIND_GATEWAY, 0))
        .collect();
    served.extend(b.nats.iter().map(|n| (n.public, KIND_NAT, mark(n.id, 0))));
    served.extend(
        b.forwards
            .iter()
            .map(|p| (p.public, KIND_PF, mark(p.id, 0))),
    );
    served.extend(b.balancers.iter().map(|l| (l.vip, KIND_LB, mark(l.id, 0))));
    served.sort_by_key(|s| s.0);
    served.dedup_by_key(|s| s.0);
    for &(a, kind, mk) in &served {
        o.add(
            kind,
            mk,
            0,
            PRIO_ARP,
            m().with(Field::DlType, ETH_ARP)
                .with(Field::NwProto, 1)
                .with(Field::NwDst, a as u64),
            arp_responder(g, a),
        );
    }
    o.add(
        KIND_GATEWAY,
        0,
        0,
        PRIO_ARP,
        m().with(Field::DlType, ETH_ARP)
            .with(Field::NwProto, 2)
            .with(Field::DlDst, gw),
        vec![learn_neighbour(Field::NwSrc, Field::ArpSha)],
    );
    if let Some(u) = g.upstream {
        // The upstream's reply also becomes the default next hop.
        o.add(
            KIND_GATEWAY,
            0,
            0,
            PRIO_ARP + 1,
            m().with(Field::DlType, ETH_ARP)
                .with(Field::NwProto, 2)
                .with(Field::DlDst, gw)
                .with(Field::NwSrc, u as u64),
            vec![
                learn_neighbour(Field::NwSrc, Field::ArpSha),
                learn(
                    T_NEIGH,
                    1,
                    NEIGH_IDLE,
                    vec![spec_load(field(Field::ArpSha), Field::DlDst), to_in_port()],
                ),
            ],
        );
    }
    o.add(
        KIND_GATEWAY,
        0,
        0,
        PRIO_IP,
        ip().with(Field::DlDst, gw),
        vec![ct(g, false, Some(nat_reverse()), None, T_SVC)],
    );

    // SVC: known connections.
    o.add(KIND_GATEWAY, 0, T_SVC, 100, m().ct(state::INV), vec![]);
    let fwd = |o: &mut Out, kind: u64, mk: u32| {
        for st in [state::EST, state::REL] {
            o.add(
                kind,
                mk,
                T_SVC,
                90,
                m().ct(st).with(Field::CtMark, mk as u64),
                vec![resubmit(T_ROUTE)],
            );
        }
    };
    for st in [state::EST, state::REL] {
        o.add(
            KIND_GATEWAY,
            0,
            T_SVC,
            80,
            m().ct(st),
            vec![resubmit(T_ROUTE)],
        );
    }
    let learn_client = learn_neighbour(Field::NwSrc, Field::DlSrc);

    // Static NAT: in to the public address, out from the private one.
    for n in &b.nats {
        let mk = mark(n.id, 0);
        fwd(&mut o, KIND_NAT, mk);
        o.add(
            KIND_NAT,
            mk,
            T_SVC,
            60,
            ip().ct(state::NEW).with(Field::NwDst, n.public as u64),
            vec![
                learn_client.clone(),
                ct(
                    g,
                    true,
                    Some(nat_to(NatKind::Dst, n.private, 0)),
                    Some(mk),
                    T_ROUTE,
                ),
            ],
        );
        o.add(
            KIND_NAT,
            mk,
            T_SVC,
            50,
            ip().ct(state::NEW).with(Field::NwSrc, n.private as u64),
            vec![ct(
                g,
                true,
                Some(nat_to(NatKind::Src, n.public, 0)),
                Some(mk),
                T_ROUTE,
            )],
        );
    }
    // Port forwarding: one flow per public port, offset to offset.
    for p in &b.forwards {
        let mk = mark(p.id, 0);
        fwd(&mut o, KIND_PF, mk);
        for port in p.public_ports.0..=p.public_ports.1 {
            o.add(
                KIND_PF,
                mk,
                T_SVC,
                65,
                l4(p.proto)
                    .ct(state::NEW)
                    .with(Field::NwDst, p.public as u64)
                    .with(Field::TpDst, port as u64),
                vec![
                    learn_client.clone(),
                    ct(
                        g,
                        true,
                        Some(nat_to(NatKind::Dst, p.private, p.private_port(port))),
                        Some(mk),
                        T_ROUTE,
                    ),
                ],
            );
        }
    }
    // Load balancers.
    let mut groups = Vec::new();
    for lb in &b.balancers {
        let vip = l4(lb.proto)
            .with(Field::NwDst, lb.vip as u64)
            .with(Field::TpDst, lb.port as u64);
        let mut entry = vec![learn_client.clone(), load(Field::Reg(REG_BACKEND), 0)];
        if lb.stickiness > 0 {
            entry.push(resubmit(T_STICKY));
        }
        entry.push(resubmit(T_LBPICK));
        o.add(
            KIND_LB,
            mark(lb.id, 0),
            T_SVC,
            65,
            vip.ct(state::NEW),
            entry,
        );
        // No live backend (or a sticky one since removed): the group picks.
        o.add(
            KIND_LB,
            mark(lb.id, 0),
            T_LBPICK,
            1,
            vip,
            vec![Action::Group(group_id(lb))],
        );
        for be in &lb.backends {
            let mk = mark(lb.id, be.index);
            fwd(&mut o, KIND_LB, mk);
            let mut acts = Vec::new();
            if lb.stickiness > 0 {
                acts.push(learn(
                    T_STICKY,
                    100,
                    lb.stickiness,
                    vec![
                        spec_match(LearnSrc::Imm(ETH_IP), Field::DlType),
                        spec_match(LearnSrc::Imm(lb.proto.number() as u64), Field::NwProto),
                        spec_match(field(Field::NwSrc), Field::NwSrc),
                        spec_match(field(Field::NwDst), Field::NwDst),
                        spec_match(field(Field::TpDst), Field::TpDst),
                        spec_load(LearnSrc::Imm(be.index as u64), Field::Reg(REG_BACKEND)),
                    ],
                ));
            }
            acts.push(ct(
                g,
                true,
                Some(nat_to(NatKind::Dst, be.ip, be.port)),
                Some(mk),
                T_ROUTE,
            ));
            o.add(
                KIND_LB,
                mk,
                T_LBPICK,
                10,
                vip.with(Field::Reg(REG_BACKEND), be.index as u64),
                acts,
            );
        }
        let (method, fields) = match lb.algorithm {
            Algorithm::RoundRobin => ("roundrobin", vec![]),
            Algorithm::LeastConn => ("leastconn", vec![]),
            Algorithm::Source => ("hash", vec![Field::NwSrc]),
        };
        groups.push(GroupMod {
            command: GroupCommand::Add,
            kind: GroupType::Select,
            id: group_id(lb),
            buckets: lb
                .backends
                .iter()
                .map(|be| Bucket {
                    weight: be.weight,
                    watch_port: ofpp::ANY,
                    watch_group: OFPG_ANY,
                    actions: vec![
                        load(Field::Reg(REG_BACKEND), be.index as u64),
                        resubmit(T_LBPICK),
                    ],
                })
                .collect(),
            selection_method: method.into(),
            fields,
        });
    }
    // Addresses served but not for this protocol or port get nothing.
    for &(a, kind, mk) in served.iter().filter(|s| s.1 != KIND_GATEWAY) {
        o.add(
            kind,
            mk,
            T_SVC,
            40,
            ip().ct(state::NEW).with(Field::NwDst, a as u64),
            vec![],
        );
    }
    // Everything else is routed as it is.
    o.add(
        KIND_GATEWAY,
        0,
        T_SVC,
        10,
        ip().ct(state::NEW),
        vec![learn_client, ct(g, true, None, None, T_ROUTE)],
    );
    o.add(KIND_GATEWAY, 0, T_ROUTE, 10, ip().ct(state::RPL), replied);
    o.add(KIND_GATEWAY, 0, T_ROUTE, 0, ip(), routed);
    // No neighbour known: dropped (counted by this flow).
    o.add(KIND_GATEWAY, 0, T_NEIGH, 0, m(), vec![]);

    // Neighbours to resolve: every private address and the upstream.
    let mut want: Vec<u32> = b.nats.iter().map(|n| n.private).collect();
    want.extend(b.forwards.iter().map(|p| p.private));
    want.extend(
        b.balancers
            .iter()
            .flat_map(|l| l.backends.iter().map(|be| be.ip)),
    );
    want.extend(g.upstream);
    want.sort();
    want.dedup();
    let neighbours = want
        .into_iter()
        .filter_map(|t| g.subnet_of(t).map(|s| (t, s)))
        .collect();
    Compiled {
        flows: o.flows,
        groups,
        neighbours,
    }
}
