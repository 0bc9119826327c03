//! Translation: runs a packet's flow key through the OpenFlow pipeline
//! (tables, resubmits, goto, groups, register arithmetic) and produces the
//! flat list of datapath operations that does the same to the packet, plus
//! the counters it hit. Every action only edits the flow key; before an
//! output the difference between the key and what the packet holds is
//! "committed" as header rewrites (as OVS's xlate does). The result depends
//! on nothing but the key and the published pipeline and ports, which is
//! what lets PMDs cache it per exact key.
use super::action::{ofpp, Action, GroupType, Learn, LearnSpec, LearnSrc};
use super::extract::{ETH_TYPE_IP, VLAN_CFI};
use super::key::{Field, FlowKey, Match};
use super::rule::{Group, HitStats, Pipeline};
use crate::stats::DropReason;
use std::sync::Arc;

/// OVS's limit on resubmit/goto nesting.
pub const MAX_DEPTH: u32 = 64;

/// What a translation does to the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpOp {
    SetDlSrc(u64),
    SetDlDst(u64),
    /// Push an 802.1Q header with this TCI.
    PushVlan(u16),
    SetVlan(u16),
    PopVlan,
    SetNwSrc(u32),
    SetNwDst(u32),
    SetNwTos(u8),
    SetNwEcn(u8),
    SetNwTtl(u8),
    SetTpSrc(u16),
    SetTpDst(u16),
    Output(u16),
    /// The L2 learning switch, on the packet as it is now.
    Normal,
    /// Run on a copy of the packet (group buckets).
    Clone(Box<[DpOp]>),
    /// The first bucket whose watched port (slot) is up.
    FastFailover(Box<[Watched]>),
    /// Install or refresh a flow (learn action).
    Learn(Arc<LearnOp>),
    /// Send to the controllers as a packet-in with this reason (0: no
    /// match — the table-miss flow's doing —, 1: an explicit action).
    Controller(u8),
    /// The tunnel fields outputs to tunnel ports use from here on
    /// (set_tunnel, set_field on tun_id/tun_src/tun_dst).
    SetTunnel(crate::flow::extract::TunnelMeta),
    /// Through the connection tracker (and NAT); then, with a table, a
    /// copy (or the packet, when nothing follows) recirculates there.
    Ct(Arc<CtOp>),
    /// An ARP packet's opcode and addresses (an ARP responder's flows).
    SetArp(ArpFields),
}

/// What an ARP rewrite writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFields {
    pub op: u16,
    pub sha: u64,
    pub spa: u32,
    pub tha: u64,
    pub tpa: u32,
}

/// A `ct` action, resolved for one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtOp {
    pub zone: u16,
    pub commit: bool,
    pub force: bool,
    pub nat: Option<crate::conntrack::nat::NatSpec>,
    pub set_mark: Option<(u32, u32)>,
    pub set_label: Option<(u128, u128)>,
    /// The table to recirculate to and the pipeline state (in_port,
    /// tunnel, metadata, registers) the recirculated packet carries.
    pub recirc: Option<(u8, FlowKey)>,
    /// A leastconn group's count for the bucket this ct() commits in.
    pub counter: Option<Counter>,
}

/// A shared count compared by identity.
#[derive(Debug, Clone)]
pub struct Counter(pub Arc<std::sync::atomic::AtomicI64>);

impl PartialEq for Counter {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}
impl Eq for Counter {}

impl DpOp {
    /// True when the op hands the packet (or a copy) somewhere.
    /// Whether a run of packets can take this op all at once (outputs,
    /// header rewrites, tunnel fields, NORMAL): what it does to one packet
    /// does not depend on what it did to the one before.
    pub fn runs_batched(&self) -> bool {
        !matches!(
            self,
            DpOp::Clone(_)
                | DpOp::FastFailover(_)
                | DpOp::Learn(_)
                | DpOp::Controller(_)
                | DpOp::Ct(_)
        )
    }

    pub fn consumes(&self) -> bool {
        matches!(
            self,
            DpOp::Output(_)
                | DpOp::Normal
                | DpOp::Clone(_)
                | DpOp::FastFailover(_)
                | DpOp::Controller(_)
        ) || matches!(self, DpOp::Ct(c) if c.recirc.is_some())
    }
}

/// A fast-failover bucket: the slot it watches and its ops.
pub type Watched = (Option<u16>, Box<[DpOp]>);

/// A flow a learn action asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedFlow {
    pub table: u8,
    pub priority: u16,
    pub m: Match,
    pub actions: Vec<Action>,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub cookie: u64,
}

/// A learned flow as a cached translation carries it: sent to the control
/// thread at most once a second, which is as fine as timeouts go.
#[derive(Debug)]
pub struct LearnOp {
    pub flow: LearnedFlow,
    pub last_sent: std::sync::atomic::AtomicU32,
}

impl PartialEq for LearnOp {
    fn eq(&self, o: &Self) -> bool {
        self.flow == o.flow
    }
}
impl Eq for LearnOp {}

impl LearnOp {
    /// True when this second's refresh has not been sent yet.
    pub fn due(&self, now: u32) -> bool {
        use std::sync::atomic::Ordering;
        let stamp = now.wrapping_add(1);
        if self.last_sent.load(Ordering::Relaxed) == stamp {
            return false;
        }
        self.last_sent.store(stamp, Ordering::Relaxed);
        true
    }
}

#[derive(Debug, Default)]
pub struct Xlate {
    pub ops: Box<[DpOp]>,
    /// Index of the last op that hands the packet on: it may take the packet
    /// itself, every earlier one works on a copy.
    pub last_consumer: Option<usize>,
    /// Rule, group and bucket counters to add the packet to.
    pub hits: Box<[Arc<HitStats>]>,
    /// Why the packet ends up nowhere, when it does.
    pub drop: Option<DropReason>,
    /// Depends on more than the key (a roundrobin or leastconn group's
    /// choice): translated again for every packet, never cached. Only a
    /// connection's first packet reaches such groups.
    pub volatile: bool,
    /// The packet-key bits this translation depends on (OVS's megaflow
    /// mask): every packet equal to this one under it translates alike.
    /// None when something else decides it too (learn, groups other than
    /// all/indirect/hash) or for packet-outs.
    pub wc: Option<FlowKey>,
}

/// The ports of one bridge as translation sees them.
pub trait PortView {
    /// Slot of an OpenFlow port number on this bridge.
    fn slot(&self, ofport: u32) -> Option<u16>;
    /// Every slot of the bridge, in flooding order.
    fn slots(&self) -> &[u16];
}

struct Ctx<'a, V: PortView> {
    pipe: &'a Pipeline,
    ports: &'a V,
    in_slot: u16,
    flow: FlowKey,
    base: FlowKey,
    ops: Vec<DpOp>,
    hits: Vec<Arc<HitStats>>,
    depth: u32,
    matched: bool,
    stop: Option<DropReason>,
    /// The rule whose actions run is a table-miss flow.
    in_miss_rule: bool,
    /// Steps of the translation, for ofproto/trace.
    trace: Option<Vec<String>>,
    /// Set while a leastconn group's chosen bucket is translated.
    lb_counter: Option<Counter>,
    volatile: bool,
    /// Key bits consulted so far (tables' match fields, fields actions
    /// read or write), and whether a megaflow can stand for this at all.
    wc: FlowKey,
    mega: bool,
}

pub fn translate<V: PortView>(pipe: &Pipeline, ports: &V, in_slot: u16, key: &FlowKey) -> Xlate {
    run(pipe, ports, in_slot, key, None)
}

/// Translates a recirculated packet: from the table its key names.
pub fn translate_recirc<V: PortView>(
    pipe: &Pipeline,
    ports: &V,
    in_slot: u16,
    key: &FlowKey,
) -> Xlate {
    run_traced(pipe, ports, in_slot, key, None, None)
}

/// Translates an explicit action list (a packet-out's) instead of table 0;
/// `output:TABLE` in it runs the packet through the tables.
pub fn translate_actions<V: PortView>(
    pipe: &Pipeline,
    ports: &V,
    in_slot: u16,
    key: &FlowKey,
    actions: &[Action],
) -> Xlate {
    run(pipe, ports, in_slot, key, Some(actions))
}

/// As `translate`, also returning each step taken (tables, rules
/// matched, their actions) for `ovs-appctl ofproto/trace`.
pub fn trace<V: PortView>(
    pipe: &Pipeline,
    ports: &V,
    in_slot: u16,
    key: &FlowKey,
) -> (Xlate, Vec<String>) {
    let mut steps = Vec::new();
    let x = run_traced(pipe, ports, in_slot, key, None, Some(&mut steps));
    (x, steps)
}

fn run<V: PortView>(
    pipe: &Pipeline,
    ports: &V,
    in_slot: u16,
    key: &FlowKey,
    actions: Option<&[Action]>,
) -> Xlate {
    run_traced(pipe, ports, in_slot, key, actions, None)
}

fn run_traced<V: PortView>(
    pipe: &Pipeline,
    ports: &V,
    in_slot: u16,
    key: &FlowKey,
    actions: Option<&[Action]>,
    steps: Option<&mut Vec<String>>,
) -> Xlate {
    let mut c = Ctx {
        pipe,
        ports,
        in_slot,
        flow: *key,
        base: *key,
        ops: Vec::new(),
        hits: Vec::new(),
        depth: 0,
        matched: false,
        stop: None,
        in_miss_rule: false,
        trace: steps.as_ref().map(|_| Vec::new()),
        lb_counter: None,
        volatile: false,
        wc: always_exact(),
        mega: actions.is_none(),
    };
    match actions {
        Some(a) => {
            c.matched = true;
            c.actions(a, 0);
        }
        None => c.table(key.get(Field::RecircTable) as u8),
    }
    if let (Some(out), Some(t)) = (steps, c.trace.take()) {
        *out = t;
    }
    let last_consumer = c.ops.iter().rposition(|o| o.consumes());
    // A flow that only learns must still run (`run` drops it after).
    let learns = c.ops.iter().any(|o| matches!(o, DpOp::Learn(_)));
    let drop = match (c.stop, last_consumer) {
        (Some(r), None) => Some(r),
        (None, None) if learns => None,
        (None, None) if !c.matched => Some(DropReason::TableMiss),
        (None, None) => Some(DropReason::FlowDrop),
        (_, Some(_)) => None,
    };
    Xlate {
        ops: c.ops.into(),
        last_consumer,
        hits: c.hits.into(),
        drop,
        volatile: c.volatile,
        wc: (c.mega && !c.volatile).then_some(c.wc),
    }
}

/// Fields every translation reads: the port (output to it is special),
/// what decides how rewrites are committed (Ethernet type, VLAN presence,
/// IP protocol, fragments), and for a recirculation the table it starts
/// at.
fn always_exact() -> FlowKey {
    let mut k = FlowKey::default();
    for f in [
        Field::InPort,
        Field::DlType,
        Field::VlanTci,
        Field::VlanTci2,
        Field::NwProto,
        Field::NwFrag,
        Field::RecircTable,
        // Tunnel metadata: outputs to tunnel ports and recirculation use it.
        Field::TunId,
        Field::TunSrc,
        Field::TunDst,
    ] {
        k.set(f, u64::MAX);
    }
    k
}

impl<V: PortView> Ctx<'_, V> {
    fn exact(&mut self, f: Field) {
        self.wc.set(f, u64::MAX);
    }

    /// What an action makes the translation depend on. A field an action
    /// writes is kept exact too: commit emits a rewrite only where the
    /// value changed, so a packet that already had it would differ.
    fn note(&mut self, a: &Action) {
        match *a {
            Action::Output { .. }
            | Action::Resubmit { .. }
            | Action::GotoTable(_)
            | Action::WriteMetadata { .. }
            | Action::Note(_) => {}
            Action::SetVlanVid { .. }
            | Action::SetVlanPcp { .. }
            | Action::StripVlan
            | Action::PushVlan(_) => {
                self.exact(Field::VlanTci);
                self.exact(Field::VlanTci2);
            }
            Action::SetDlSrc(_) => self.exact(Field::DlSrc),
            Action::SetDlDst(_) => self.exact(Field::DlDst),
            Action::SetNwSrc(_) => self.exact(Field::NwSrc),
            Action::SetNwDst(_) => self.exact(Field::NwDst),
            Action::SetNwTos(_) => self.exact(Field::NwTos),
            Action::SetTpSrc(_) => self.exact(Field::TpSrc),
            Action::SetTpDst(_) => self.exact(Field::TpDst),
            Action::SetField { field, .. } | Action::RegLoad { field, .. } => self.exact(field),
            Action::RegMove { src, dst, .. } => {
                self.exact(src);
                self.exact(dst);
            }
            Action::DecTtl => self.exact(Field::NwTtl),
            Action::SetTunnel { .. } => self.exact(Field::TunId),
            // What a ct reads from the packet beyond what recirculation
            // carries (tunnel metadata, always exact; registers and
            // metadata are the translation's own): a zone or a label.
            Action::Ct(ref ct) => {
                if let crate::flow::action::CtZone::Field { field, .. } = ct.zone {
                    self.exact(field);
                }
                for e in &ct.exec {
                    if let Action::RegMove { src, .. } = *e {
                        self.exact(src);
                    }
                }
            }
            // Which bucket depends on the hashed fields; for all and
            // indirect groups on nothing. Others (round robin, least
            // connections, fast failover's liveness) are not megaflows.
            Action::Group(id) => match self.pipe.groups.get(&id) {
                Some(g) if matches!(g.kind, GroupType::All | GroupType::Indirect) => {}
                Some(g) if g.kind == GroupType::Select && !per_packet(g) => {
                    for &f in FIVE_TUPLE.iter().chain(g.fields.iter()) {
                        self.exact(f);
                    }
                }
                _ => self.mega = false,
            },
            Action::Learn(_) => self.mega = false,
            Action::OutputReg { field, .. } => self.exact(field),
        }
    }

    fn table(&mut self, id: u8) {
        self.table_as(id, None)
    }

    /// Looks `id` up as if the packet came in on `as_port`.
    fn table_as(&mut self, id: u8, as_port: Option<u32>) {
        if self.depth >= MAX_DEPTH {
            self.stop = Some(DropReason::RecursionLimit);
            return;
        }
        if let Some(t) = self.pipe.tables.get(id as usize) {
            let u = t.union_mask();
            for (a, b) in self.wc.w.iter_mut().zip(u.w.iter()) {
                *a |= *b;
            }
        }
        let indent = "    ".repeat(self.depth as usize);
        let saved = self.flow.get(Field::InPort);
        if let Some(p) = as_port {
            self.flow.set(Field::InPort, p as u64);
        }
        let found = self
            .pipe
            .tables
            .get(id as usize)
            .and_then(|t| t.lookup(&self.flow))
            .map(|(_, r)| r.clone());
        self.flow.set(Field::InPort, saved);
        let Some(rule) = found else {
            if let Some(t) = &mut self.trace {
                t.push(format!("{indent}{id}. No match."));
            }
            return;
        };
        if let Some(t) = &mut self.trace {
            t.push(format!(
                "{indent}{id}. {:?}, priority {}, cookie {:#x}",
                rule.m.key.masked(&rule.m.mask),
                rule.priority,
                rule.cookie
            ));
            for a in rule.actions.iter() {
                t.push(format!("{indent}    {a:?}"));
            }
        }
        self.matched = true;
        self.hits.push(rule.stats.clone());
        self.depth += 1;
        let outer = self.in_miss_rule;
        self.in_miss_rule = rule.priority == 0 && rule.m.mask.is_zero();
        self.actions(&rule.actions, id);
        self.in_miss_rule = outer;
        self.depth -= 1;
    }

    fn actions(&mut self, acts: &[Action], table: u8) {
        for a in acts {
            if self.stop.is_some() {
                return;
            }
            self.action(a, table);
        }
    }

    fn action(&mut self, a: &Action, table: u8) {
        self.note(a);
        let f = &mut self.flow;
        match *a {
            Action::Output { port, .. } => self.output(port),
            Action::OutputReg {
                field, ofs, n_bits, ..
            } => {
                let p = f.get_bits(field, ofs as u32, n_bits as u32);
                // A 16-bit port field holds OpenFlow 1.0 numbers.
                let port = if n_bits <= 16 {
                    ofpp::from16(p as u16)
                } else {
                    p as u32
                };
                self.output(port)
            }
            Action::SetVlanVid { vid, push } => {
                let tci = f.get(Field::VlanTci) as u16;
                if tci & VLAN_CFI != 0 {
                    f.set(Field::VlanTci, ((tci & !0xfff) | (vid & 0xfff)) as u64);
                } else if push {
                    f.set(Field::VlanTci, (VLAN_CFI | (vid & 0xfff)) as u64);
                }
            }
            Action::SetVlanPcp { pcp, push } => {
                let tci = f.get(Field::VlanTci) as u16;
                let p = ((pcp as u16) & 7) << 13;
                if tci & VLAN_CFI != 0 {
                    f.set(Field::VlanTci, ((tci & 0x1fff) | p) as u64);
                } else if push {
                    f.set(Field::VlanTci, (VLAN_CFI | p) as u64);
                }
            }
            // The key holds two tags (vlan-limit=2): popping shows the
            // inner one, pushing moves the outer one in.
            Action::StripVlan => {
                f.set(Field::VlanTci, f.get(Field::VlanTci2));
                f.set(Field::VlanTci2, 0);
            }
            Action::PushVlan(_) => {
                // OpenFlow 1.1+: the new tag copies the current outer
                // one's VID and PCP (none: zero).
                let tci = f.get(Field::VlanTci);
                f.set(Field::VlanTci2, tci);
                f.set(Field::VlanTci, tci | VLAN_CFI as u64);
            }
            Action::SetDlSrc(m) => f.set(Field::DlSrc, m),
            Action::SetDlDst(m) => f.set(Field::DlDst, m),
            Action::SetNwSrc(a) => f.set(Field::NwSrc, a as u64),
            Action::SetNwDst(a) => f.set(Field::NwDst, a as u64),
            Action::SetNwTos(t) => f.set(Field::NwTos, (t & 0xfc) as u64),
            Action::SetTpSrc(p) => f.set(Field::TpSrc, p as u64),
            Action::SetTpDst(p) => f.set(Field::TpDst, p as u64),
            Action::SetField { field, value, mask } => {
                let cur = f.get(field);
                f.set(field, (cur & !mask) | (value & mask));
            }
            Action::RegLoad {
                field,
                ofs,
                n_bits,
                value,
            } => f.set_bits(field, ofs as u32, n_bits as u32, value),
            Action::RegMove {
                src,
                src_ofs,
                dst,
                dst_ofs,
                n_bits,
            } => {
                let v = f.get_bits(src, src_ofs as u32, n_bits as u32);
                f.set_bits(dst, dst_ofs as u32, n_bits as u32, v);
            }
            Action::DecTtl => {
                if f.get(Field::DlType) == ETH_TYPE_IP as u64 {
                    let ttl = f.get(Field::NwTtl);
                    if ttl <= 1 {
                        self.stop = Some(DropReason::TtlExpired);
                    } else {
                        f.set(Field::NwTtl, ttl - 1);
                    }
                }
            }
            Action::SetTunnel { id, wide } => {
                f.set(Field::TunId, if wide { id } else { id & 0xffff_ffff })
            }
            // As in OVS, the port stands in for the lookup only: the rule
            // found runs with the real in_port (an output to `port` is then
            // not an output to the ingress port).
            Action::Resubmit { port, table: t } => self.table_as(t.unwrap_or(table), port),
            Action::GotoTable(t) => self.table(t),
            Action::WriteMetadata { value, mask } => {
                let cur = f.get(Field::Metadata);
                f.set(Field::Metadata, (cur & !mask) | (value & mask));
            }
            Action::Group(id) => match self.pipe.groups.get(&id) {
                Some(g) => {
                    let g = g.clone();
                    self.group(&g, table);
                }
                None => self.stop = Some(DropReason::NoGroup),
            },
            Action::Learn(ref l) => {
                let flow = learned_flow(l, &self.flow);
                self.ops.push(DpOp::Learn(Arc::new(LearnOp {
                    flow,
                    last_sent: Default::default(),
                })));
            }
            Action::Note(_) => {}
            Action::Ct(ref ct) => {
                self.commit();
                let zone = match ct.zone {
                    crate::flow::action::CtZone::Imm(z) => z,
                    crate::flow::action::CtZone::Field { field, ofs, n_bits } => {
                        self.flow.get_bits(field, ofs as u32, n_bits as u32) as u16
                    }
                };
                let (mut set_mark, mut set_label) = (None, None);
                for a in &ct.exec {
                    let (field, value, mask) = match *a {
                        Action::SetField { field, value, mask } => (field, value, mask),
                        Action::RegLoad {
                            field,
                            ofs,
                            n_bits,
                            value,
                        } => (field, value << ofs, low_bits(n_bits) << ofs),
                        // A move is read from the packet now: translations
                        // are per exact key, so the value is this packet's.
                        Action::RegMove {
                            src,
                            src_ofs,
                            dst,
                            dst_ofs,
                            n_bits,
                        } => {
                            let v = self.flow.get_bits(src, src_ofs as u32, n_bits as u32);
                            (dst, v << dst_ofs, low_bits(n_bits) << dst_ofs)
                        }
                        _ => continue,
                    };
                    // Several writes to one field add up (a label built
                    // from two moves).
                    match field {
                        Field::CtMark => {
                            let (v0, m0) = set_mark.unwrap_or((0, 0));
                            let (v, m) = (value as u32, mask as u32);
                            set_mark = Some(((v0 & !m) | (v & m), m0 | m));
                        }
                        Field::CtLabel => {
                            let (v0, m0) = set_label.unwrap_or((0, 0));
                            let (v, m) = (value as u128, mask as u128);
                            set_label = Some(((v0 & !m) | (v & m), m0 | m));
                        }
                        _ => {}
                    }
                }
                let recirc = ct.table.map(|t| {
                    let mut carry = self.flow;
                    carry.set(Field::RecircTable, t as u64);
                    (t, carry)
                });
                self.ops.push(DpOp::Ct(Arc::new(CtOp {
                    zone,
                    commit: ct.commit,
                    force: ct.force,
                    nat: ct.nat,
                    set_mark,
                    set_label,
                    recirc,
                    counter: self.lb_counter.clone(),
                })));
            }
        }
    }

    fn output(&mut self, port: u32) {
        let in_port = self.flow.get(Field::InPort) as u32;
        match port {
            ofpp::IN_PORT => {
                self.commit();
                self.ops.push(DpOp::Output(self.in_slot));
            }
            ofpp::NORMAL => {
                self.commit();
                self.ops.push(DpOp::Normal);
            }
            ofpp::FLOOD | ofpp::ALL => {
                self.commit();
                let in_slot = self.in_slot;
                for &s in self.ports.slots() {
                    if s != in_slot {
                        self.ops.push(DpOp::Output(s));
                    }
                }
            }
            ofpp::CONTROLLER => {
                self.commit();
                // OpenFlow 1.3: what the table-miss flow (priority 0, no
                // match) sends up is reported as "no match".
                self.ops
                    .push(DpOp::Controller(if self.in_miss_rule { 0 } else { 1 }));
            }
            ofpp::TABLE => {
                self.commit();
                self.table(0);
            }
            ofpp::LOCAL => self.output(ofpp::LOCAL_OFPORT),
            p if p >= ofpp::MAX => {}
            // OpenFlow: output to the ingress port only through IN_PORT.
            p if p == in_port => {}
            p => {
                if let Some(s) = self.ports.slot(p) {
                    self.commit();
                    self.ops.push(DpOp::Output(s));
                }
            }
        }
    }

    /// Runs `acts` on a copy of the packet: nothing they change leaks out.
    fn sub(&mut self, acts: &[crate::flow::action::Action], table: u8) -> Box<[DpOp]> {
        self.commit();
        let saved_flow = self.flow;
        let saved_ops = std::mem::take(&mut self.ops);
        self.actions(acts, table);
        let sub = std::mem::replace(&mut self.ops, saved_ops);
        self.flow = saved_flow;
        self.base = saved_flow;
        sub.into()
    }

    fn group(&mut self, g: &Group, table: u8) {
        if self.depth >= MAX_DEPTH {
            self.stop = Some(DropReason::RecursionLimit);
            return;
        }
        self.depth += 1;
        self.hits.push(g.stats.clone());
        match g.kind {
            GroupType::All | GroupType::Indirect => {
                for (b, st) in g.buckets.iter().zip(&g.bucket_stats) {
                    self.hits.push(st.clone());
                    let ops = self.sub(&b.actions, table);
                    self.ops.push(DpOp::Clone(ops));
                }
            }
            GroupType::Select => {
                if let Some(i) = select_bucket(g, &self.flow) {
                    self.volatile |= per_packet(g);
                    self.hits.push(g.bucket_stats[i].clone());
                    let outer = self.lb_counter.take();
                    if g.selection_method == "leastconn" {
                        self.lb_counter = g.lb.active.get(i).cloned().map(Counter);
                    }
                    let ops = self.sub(&g.buckets[i].actions, table);
                    self.lb_counter = outer;
                    self.ops.push(DpOp::Clone(ops));
                }
            }
            GroupType::FastFailover => {
                let mut alts = Vec::new();
                for b in &g.buckets {
                    let watch = self.ports.slot(b.watch_port);
                    let ops = self.sub(&b.actions, table);
                    alts.push((watch, ops));
                }
                self.ops.push(DpOp::FastFailover(alts.into()));
            }
        }
        self.depth -= 1;
    }

    /// Emits the header rewrites that make the packet look like the key.
    fn commit(&mut self) {
        let (f, b) = (&self.flow, &self.base);
        if f.w[..super::key::PACKET_WORDS] == b.w[..super::key::PACKET_WORDS] {
            return;
        }
        let ch = |x: Field| f.get(x) != b.get(x);
        let ops = &mut self.ops;
        if ch(Field::TunId) || ch(Field::TunSrc) || ch(Field::TunDst) {
            ops.push(DpOp::SetTunnel(crate::flow::extract::TunnelMeta {
                id: f.get(Field::TunId),
                src: f.get(Field::TunSrc) as u32,
                dst: f.get(Field::TunDst) as u32,
            }));
        }
        if ch(Field::DlSrc) {
            ops.push(DpOp::SetDlSrc(f.get(Field::DlSrc)));
        }
        if ch(Field::DlDst) {
            ops.push(DpOp::SetDlDst(f.get(Field::DlDst)));
        }
        if ch(Field::VlanTci) || ch(Field::VlanTci2) {
            vlan_ops(
                ops,
                tags(b.get(Field::VlanTci), b.get(Field::VlanTci2)),
                tags(f.get(Field::VlanTci), f.get(Field::VlanTci2)),
            );
        }
        if f.get(Field::DlType) == crate::flow::extract::ETH_TYPE_ARP as u64
            && (ch(Field::NwProto)
                || ch(Field::NwSrc)
                || ch(Field::NwDst)
                || ch(Field::ArpSha)
                || ch(Field::ArpTha))
        {
            ops.push(DpOp::SetArp(ArpFields {
                op: f.get(Field::NwProto) as u16,
                sha: f.get(Field::ArpSha),
                spa: f.get(Field::NwSrc) as u32,
                tha: f.get(Field::ArpTha),
                tpa: f.get(Field::NwDst) as u32,
            }));
        }
        if f.get(Field::DlType) == ETH_TYPE_IP as u64 {
            if ch(Field::NwSrc) {
                ops.push(DpOp::SetNwSrc(f.get(Field::NwSrc) as u32));
            }
            if ch(Field::NwDst) {
                ops.push(DpOp::SetNwDst(f.get(Field::NwDst) as u32));
            }
            if ch(Field::NwTos) {
                ops.push(DpOp::SetNwTos(f.get(Field::NwTos) as u8));
            }
            if ch(Field::NwEcn) {
                ops.push(DpOp::SetNwEcn(f.get(Field::NwEcn) as u8));
            }
            if ch(Field::NwTtl) {
                ops.push(DpOp::SetNwTtl(f.get(Field::NwTtl) as u8));
            }
            let proto = f.get(Field::NwProto);
            if proto == 6 || proto == 17 {
                if ch(Field::TpSrc) {
                    ops.push(DpOp::SetTpSrc(f.get(Field::TpSrc) as u16));
                }
                if ch(Field::TpDst) {
                    ops.push(DpOp::SetTpDst(f.get(Field::TpDst) as u16));
                }
            }
        }
        self.base = self.flow;
    }
}

/// Highest-random-weight choice over the 5-tuple: a bucket's removal only
/// moves the flows that were on it.
fn select_bucket(g: &Group, k: &FlowKey) -> Option<usize> {
    use std::sync::atomic::Ordering;
    let live = |i: usize| g.buckets[i].weight > 0 || g.buckets.len() == 1;
    match g.selection_method.as_str() {
        // Weighted round robin over translations: each new flow (a new
        // connection's first packet) takes the next bucket.
        "roundrobin" => {
            let total: u64 = (0..g.buckets.len())
                .filter(|&i| live(i))
                .map(|i| g.buckets[i].weight.max(1) as u64)
                .sum();
            if total == 0 {
                return None;
            }
            let mut n = g.lb.rr.fetch_add(1, Ordering::Relaxed) % total;
            for i in (0..g.buckets.len()).filter(|&i| live(i)) {
                let w = g.buckets[i].weight.max(1) as u64;
                if n < w {
                    return Some(i);
                }
                n -= w;
            }
            None
        }
        // Fewest live connections per unit of weight; ties to the first.
        "leastconn" => (0..g.buckets.len()).filter(|&i| live(i)).min_by_key(|&i| {
            let n =
                g.lb.active
                    .get(i)
                    .map(|c| c.load(Ordering::Relaxed))
                    .unwrap_or(0);
            (n.max(0) as u64 * 1_000_000) / g.buckets[i].weight.max(1) as u64
        }),
        _ => hrw(g, k),
    }
}

/// What `hash` without fields and `dp_hash` hash.
const FIVE_TUPLE: [Field; 6] = [
    Field::DlType,
    Field::NwSrc,
    Field::NwDst,
    Field::NwProto,
    Field::TpSrc,
    Field::TpDst,
];

/// A select group whose choice depends on more than the packet (round
/// robin position, live connections): chosen per packet, never cached.
fn per_packet(g: &Group) -> bool {
    matches!(g.selection_method.as_str(), "roundrobin" | "leastconn")
}

/// The low `n` bits set.
fn low_bits(n: u8) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Highest-random-weight over the hashed fields.
fn hrw(g: &Group, k: &FlowKey) -> Option<usize> {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let fields: &[Field] = if g.selection_method == "hash" && !g.fields.is_empty() {
        &g.fields
    } else {
        &FIVE_TUPLE
    };
    for &f in fields {
        h = mix(h ^ k.get(f));
    }
    let mut best: Option<(f64, usize)> = None;
    for (i, b) in g.buckets.iter().enumerate() {
        if b.weight == 0 && g.buckets.len() > 1 {
            continue;
        }
        let u = ((mix(h ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 11) as f64 + 1.0)
            / (1u64 << 53) as f64;
        let score = -(b.weight.max(1) as f64) / u.ln();
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    best.map(|b| b.1)
}

#[inline]
fn mix(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn learn_bits(src: &LearnSrc, n_bits: u8, flow: &FlowKey) -> u64 {
    match *src {
        LearnSrc::Field { field, ofs } => flow.get_bits(field, ofs as u32, n_bits as u32),
        LearnSrc::Imm(v) => v,
    }
}

fn learned_flow(l: &Learn, flow: &FlowKey) -> LearnedFlow {
    let mut m = Match::any();
    let mut actions = Vec::new();
    for s in &l.specs {
        match s {
            LearnSpec::Match {
                src,
                dst,
                dst_ofs,
                n_bits,
            } => {
                let v = learn_bits(src, *n_bits, flow);
                let nm = if *n_bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << n_bits) - 1
                };
                m.set(*dst, v << dst_ofs, nm << dst_ofs);
            }
            LearnSpec::Load {
                src,
                dst,
                dst_ofs,
                n_bits,
            } => actions.push(Action::RegLoad {
                field: *dst,
                ofs: *dst_ofs,
                n_bits: *n_bits,
                value: learn_bits(src, *n_bits, flow),
            }),
            LearnSpec::Output { src, n_bits } => actions.push(Action::Output {
                port: learn_bits(src, *n_bits, flow) as u32,
                max_len: 0,
            }),
        }
    }
    LearnedFlow {
        table: l.table,
        priority: l.priority,
        m,
        actions,
        idle_timeout: l.idle_timeout,
        hard_timeout: l.hard_timeout,
        cookie: l.cookie,
    }
}

/// A frame's tags, outermost first, from the key's two TCI fields.
fn tags(outer: u64, inner: u64) -> Vec<u16> {
    [outer as u16, inner as u16]
        .into_iter()
        .filter(|t| t & VLAN_CFI != 0)
        .map(|t| t & !VLAN_CFI)
        .collect()
}

/// The fewest tag operations that turn stack `old` into `new`: a rewrite of
/// the outer tag, a pop or a push when only that differs, otherwise pop
/// them all and push the new ones innermost first.
fn vlan_ops(ops: &mut Vec<DpOp>, old: Vec<u16>, new: Vec<u16>) {
    if old == new {
        return;
    }
    if old.len() == new.len() && old[1..] == new[1..] {
        ops.push(DpOp::SetVlan(new[0]));
    } else if !old.is_empty() && old[1..] == new[..] {
        ops.push(DpOp::PopVlan);
    } else if !new.is_empty() && new[1..] == old[..] {
        ops.push(DpOp::PushVlan(new[0]));
    } else {
        ops.extend(old.iter().map(|_| DpOp::PopVlan));
        ops.extend(new.iter().rev().map(|&t| DpOp::PushVlan(t)));
    }
}
