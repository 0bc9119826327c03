//! One OpenFlow session: version negotiation, then request -> replies.
//! Every request is decoded completely before anything changes, so a bad
//! message gets an error reply and changes nothing; the session goes on.
use super::actions::{decode_actions, decode_instructions, encode_actions, encode_instructions};
use super::error::OfError;
use super::oxm::{decode_match, encode_match};
use super::wire::{pad8_len, Header, Reader, Writer, HEADER_LEN, NX_VENDOR, OFP10, OFP13};
use super::{ofp10, Bridge, PortInfo};
use rvs_dataplane::flow::action::{ofpp, Bucket, GroupType};
use rvs_dataplane::flow::key::Match;
use rvs_dataplane::flow::rule::{Group, Rule};
use rvs_dataplane::flow::table::{
    Command, FlowMod, FlowModError, GroupCommand, GroupMod, GroupModError, OFPG_ANY, OFPTT_ALL,
};
use std::sync::Arc;

/// Versions rvs speaks.
pub const SUPPORTED: &[u8] = &[OFP10, OFP13];
/// Tables announced in features replies (as OVS: 0..=253 usable).
const N_TABLES: u8 = 254;
/// Largest message ovs-ofctl accepts; multipart replies are split below it.
const MAX_MSG: usize = 65_535;

/// The session must end (a peer that cannot agree on a version).
#[derive(Debug)]
pub struct Closed;

pub struct Session {
    pub bridge: Arc<Bridge>,
    /// Negotiated version; 0 until hello.
    pub version: u8,
    /// OpenFlow 1.0: NXM flow format (else the standard 40-byte match).
    nxm: bool,
    /// OpenFlow 1.0: the high byte of flow_mod's command is the table.
    table_ext: bool,
    /// A flow or group change is waiting to be published.
    pub dirty: bool,
}

/// Versions offered by a hello: its version-bitmap element, else every
/// version up to the header's.
fn hello_versions(h: &Header, body: &[u8]) -> u32 {
    let mut r = Reader::new(body, OfError::BadLen);
    while r.remaining() >= 4 {
        let (Ok(t), Ok(len)) = (r.u16(), r.u16()) else {
            break;
        };
        let len = len as usize;
        if len < 4 || len - 4 > r.remaining() {
            break;
        }
        let Ok(b) = r.bytes(len - 4) else { break };
        if t == 1 && b.len() >= 4 {
            return u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        let pad = pad8_len(len) - len;
        if r.skip(pad.min(r.remaining())).is_err() {
            break;
        }
    }
    if h.version >= 32 {
        return 0;
    }
    ((1u64 << (h.version as u32 + 1)) - 2) as u32
}

fn version_bit(name: &str) -> Option<u8> {
    Some(match name {
        "OpenFlow10" => 1,
        "OpenFlow11" => 2,
        "OpenFlow12" => 3,
        "OpenFlow13" => 4,
        "OpenFlow14" => 5,
        "OpenFlow15" => 6,
        _ => return None,
    })
}

/// The hello rvs sends: its highest version with a bitmap of all it
/// allows on this bridge.
pub fn hello(allowed: &[String]) -> Vec<u8> {
    let bits = allowed_bits(allowed);
    let top = (0..32).rev().find(|v| bits & (1 << v) != 0).unwrap_or(1) as u8;
    let mut w = Writer::msg(top, 0, 0);
    w.u16(1).u16(8).u32(bits);
    w.finish()
}

fn allowed_bits(allowed: &[String]) -> u32 {
    let ours: u32 = SUPPORTED.iter().map(|v| 1u32 << v).sum();
    if allowed.is_empty() {
        return ours;
    }
    let want: u32 = allowed
        .iter()
        .filter_map(|s| version_bit(s))
        .map(|v| 1u32 << v)
        .sum();
    ours & want
}

fn mac_bytes(m: [u8; 6]) -> [u8; 6] {
    m
}

impl Session {
    pub fn new(bridge: Arc<Bridge>) -> Session {
        Session {
            bridge,
            version: 0,
            nxm: false,
            table_ext: false,
            dirty: false,
        }
    }

    /// Handles one whole message; returns the replies. `Err` closes the
    /// session (failed hello).
    pub fn handle(&mut self, msg: &[u8]) -> Result<Vec<Vec<u8>>, Closed> {
        let h = Header::parse(msg).expect("framed by the caller");
        let body = &msg[HEADER_LEN..];
        if self.version == 0 {
            if h.kind != 0 {
                // The spec wants hello first; be lenient as OVS is and take
                // the request's version if rvs speaks it.
                if !SUPPORTED.contains(&h.version) {
                    return Err(Closed);
                }
                self.version = h.version;
            } else {
                let common = hello_versions(&h, body) & allowed_bits(&self.bridge.protocols());
                match (0..32u8).rev().find(|v| common & (1 << v) != 0) {
                    Some(v) => {
                        self.version = v;
                        return Ok(Vec::new());
                    }
                    None => {
                        let mut w = Writer::msg(h.version.min(OFP13), 1, h.xid);
                        w.u16(0).u16(0);
                        w.bytes(b"no common OpenFlow version (rvs: OpenFlow10, OpenFlow13)");
                        return Ok(vec![w.finish()]);
                    }
                }
            }
        }
        if h.kind == 0 {
            return Ok(Vec::new());
        }
        if h.version != self.version {
            return Ok(vec![OfError::BadVersion.encode(self.version, h.xid, msg)]);
        }
        match self.dispatch(&h, body) {
            Ok(r) => Ok(r),
            Err(e) => {
                log::info!(
                    "{}: OpenFlow request type {} refused: {:?}",
                    self.bridge.name,
                    h.kind,
                    e
                );
                Ok(vec![e.encode(self.version, h.xid, msg)])
            }
        }
    }

    fn reply(&self, kind: u8, xid: u32) -> Writer {
        Writer::msg(self.version, kind, xid)
    }

    fn dispatch(&mut self, h: &Header, body: &[u8]) -> Result<Vec<Vec<u8>>, OfError> {
        let of10 = self.version == OFP10;
        let (barrier_req, barrier_rep, stats_req) = if of10 { (18, 19, 16) } else { (20, 21, 18) };
        match h.kind {
            2 => {
                let mut w = self.reply(3, h.xid);
                w.bytes(body);
                Ok(vec![w.finish()])
            }
            3 => Ok(Vec::new()),
            4 => self.vendor(h, body),
            5 => Ok(vec![self.features(h.xid)]),
            7 => {
                let mut w = self.reply(8, h.xid);
                w.u16(0).u16(0);
                Ok(vec![w.finish()])
            }
            9 => Ok(Vec::new()),
            13 => {
                self.packet_out(body)?;
                Ok(Vec::new())
            }
            14 => {
                let fm = if of10 {
                    self.decode_flow_mod10(body)?
                } else {
                    decode_flow_mod13(body)?
                };
                self.apply_flow_mod(&fm)?;
                Ok(Vec::new())
            }
            15 if !of10 => {
                let gm = decode_group_mod(body)?;
                self.apply_group_mod(&gm)?;
                Ok(Vec::new())
            }
            k if k == stats_req => self.stats(h, body),
            k if k == barrier_req => {
                self.bridge.publish();
                self.dirty = false;
                Ok(vec![self.reply(barrier_rep, h.xid).finish()])
            }
            _ => Err(OfError::BadType),
        }
    }

    fn packet_out(&mut self, body: &[u8]) -> Result<(), OfError> {
        let mut r = Reader::new(body, OfError::BadLen);
        let buffer = r.u32()?;
        let (in_port, alen) = if self.version == OFP10 {
            (ofpp::from16(r.u16()?), r.u16()? as usize)
        } else {
            let p = r.u32()?;
            let l = r.u16()? as usize;
            r.skip(6)?;
            (p, l)
        };
        if buffer != u32::MAX {
            // rvs announces no buffers: every packet-in carries its frame.
            return Err(OfError::BufferUnknown);
        }
        let actions = decode_actions(r.bytes(alen)?, self.version)?;
        let data = r.rest().to_vec();
        if data.len() < 14 {
            return Err(OfError::BadLen);
        }
        let in_port = match in_port {
            ofpp::LOCAL => ofpp::LOCAL_OFPORT,
            p => p,
        };
        let f = &self.bridge.flows;
        f.inject_pending
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if f.inject
            .try_send(rvs_dataplane::snapshot::Inject {
                in_port,
                actions,
                data,
            })
            .is_err()
        {
            f.inject_pending
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Err(OfError::BufferEmpty);
        }
        Ok(())
    }

    /// A packet-in in this session's version (no buffer: the whole frame).
    pub fn packet_in(&self, p: &rvs_dataplane::snapshot::PacketIn) -> Vec<u8> {
        let mut w = self.reply(10, 0);
        w.u32(u32::MAX).u16(p.data.len() as u16);
        let port = if p.in_port == ofpp::LOCAL_OFPORT {
            ofpp::LOCAL
        } else {
            p.in_port
        };
        if self.version == OFP10 {
            w.u16(ofpp::to16(port).unwrap_or(0xffff)).u8(p.reason).u8(0);
        } else {
            w.u8(p.reason).u8(0).u64(u64::MAX);
            let mut m = Match::any();
            m.exact(rvs_dataplane::flow::key::Field::InPort, p.in_port as u64);
            put_ofp13_match(&mut w, &m);
            w.zeros(2);
        }
        w.bytes(&p.data);
        w.finish()
    }

    fn vendor(&mut self, h: &Header, body: &[u8]) -> Result<Vec<Vec<u8>>, OfError> {
        let mut r = Reader::new(body, OfError::BadLen);
        if r.u32()? != NX_VENDOR {
            return Err(OfError::BadVendor);
        }
        let sub = r.u32()?;
        match sub {
            // NXT_SET_FLOW_FORMAT
            12 => {
                match r.u32()? {
                    0 => self.nxm = false,
                    2 => self.nxm = true,
                    _ => return Err(OfError::BadSubtype),
                }
                Ok(Vec::new())
            }
            // NXT_FLOW_MOD
            13 => {
                let fm = self.decode_nx_flow_mod(&mut r)?;
                self.apply_flow_mod(&fm)?;
                Ok(Vec::new())
            }
            // NXT_FLOW_MOD_TABLE_ID
            15 => {
                self.table_ext = r.u8()? != 0;
                Ok(Vec::new())
            }
            // NXT_SET_PACKET_IN_FORMAT, NXT_SET_CONTROLLER_ID: accepted;
            // rvs sends no packet-ins yet.
            16 | 20 => Ok(Vec::new()),
            // NXT_GROUP_MOD: groups over OpenFlow 1.0 (OpenFlow 1.5's format).
            31 => {
                let gm = decode_group_mod15(r.rest())?;
                self.apply_group_mod(&gm)?;
                Ok(Vec::new())
            }
            _ => {
                let _ = h;
                Err(OfError::BadSubtype)
            }
        }
    }

    fn features(&self, xid: u32) -> Vec<u8> {
        let mut w = self.reply(6, xid);
        w.u64(self.bridge.datapath_id).u32(0).u8(N_TABLES);
        if self.version == OFP10 {
            w.zeros(3).u32(0xc7).u32(0x7ff);
            for p in self.bridge.ports() {
                put_port10(&mut w, &p);
            }
        } else {
            w.u8(0).zeros(2).u32(0x4f).u32(0);
        }
        w.finish()
    }

    fn decode_flow_mod10(&self, body: &[u8]) -> Result<FlowMod, OfError> {
        let mut r = Reader::new(body, OfError::BadLen);
        let m = ofp10::decode(&mut r)?;
        let cookie = r.u64()?;
        let (command, table) = self.command10(r.u16()?)?;
        let idle_timeout = r.u16()?;
        let hard_timeout = r.u16()?;
        let priority = r.u16()?;
        r.u32()?;
        let out_port = ofpp::from16(r.u16()?);
        let flags = r.u16()? & 3;
        let actions = decode_actions(r.rest(), OFP10)?;
        finish_flow_mod(FlowMod {
            command,
            table,
            m,
            // OpenFlow 1.0: an exact-match rule has the highest priority.
            priority: if is_exact10(body) { u16::MAX } else { priority },
            cookie: 0,
            cookie_mask: 0,
            new_cookie: keep_if_all_ones(cookie),
            idle_timeout,
            hard_timeout,
            importance: 0,
            flags,
            out_port,
            out_group: OFPG_ANY,
            actions,
        })
    }

    fn decode_nx_flow_mod(&self, r: &mut Reader) -> Result<FlowMod, OfError> {
        let new_cookie = keep_if_all_ones(r.u64()?);
        let (command, table) = self.command10(r.u16()?)?;
        let idle_timeout = r.u16()?;
        let hard_timeout = r.u16()?;
        let priority = r.u16()?;
        r.u32()?;
        let out_port = ofpp::from16(r.u16()?);
        let flags = r.u16()? & 3;
        let match_len = r.u16()? as usize;
        r.skip(6)?;
        let mb = r
            .bytes(pad8_len(match_len))
            .map_err(|_| OfError::MatchBadLen)?;
        let (m, cookie_filter) = decode_match(&mb[..match_len])?;
        let actions = decode_actions(r.rest(), OFP10)?;
        let (cookie, cookie_mask) = cookie_filter.unwrap_or((0, 0));
        finish_flow_mod(FlowMod {
            command,
            table,
            m,
            priority,
            cookie,
            cookie_mask,
            new_cookie,
            idle_timeout,
            hard_timeout,
            importance: 0,
            flags,
            out_port,
            out_group: OFPG_ANY,
            actions,
        })
    }
}

/// An OpenFlow 1.3 (or 1.5: importance, in 1.3's padding, is not read)
/// flow_mod body.
pub(crate) fn decode_flow_mod13(body: &[u8]) -> Result<FlowMod, OfError> {
    let mut r = Reader::new(body, OfError::BadLen);
    let cookie = r.u64()?;
    let cookie_mask = r.u64()?;
    let table = r.u8()?;
    let command = command(r.u8()?)?;
    let idle_timeout = r.u16()?;
    let hard_timeout = r.u16()?;
    let priority = r.u16()?;
    r.u32()?;
    let out_port = r.u32()?;
    let out_group = r.u32()?;
    let flags = r.u16()? & 0x1f;
    r.skip(2)?;
    let m = read_ofp13_match(&mut r)?;
    let actions = decode_instructions(r.rest(), table)?;
    // An add's cookie is the new rule's; otherwise it filters (under
    // the mask) and the rules keep theirs.
    let add = command == Command::Add;
    finish_flow_mod(FlowMod {
        command,
        table,
        m,
        priority,
        cookie,
        cookie_mask,
        new_cookie: add.then_some(cookie),
        idle_timeout,
        hard_timeout,
        importance: 0,
        flags,
        out_port,
        out_group,
        actions,
    })
}

impl Session {
    /// An OpenFlow 1.0 or Nicira flow_mod's command and table: the table
    /// rides in the command's high byte once NXT_FLOW_MOD_TABLE_ID is on
    /// (or on a 1.3 session); otherwise an add goes to table 0 and the rest
    /// apply to all tables.
    fn command10(&self, cmd: u16) -> Result<(Command, u8), OfError> {
        let c = command(cmd as u8)?;
        let table = if self.version != OFP10 || self.table_ext {
            (cmd >> 8) as u8
        } else if c == Command::Add {
            0
        } else {
            OFPTT_ALL
        };
        Ok((c, table))
    }

    fn apply_flow_mod(&mut self, fm: &FlowMod) -> Result<(), OfError> {
        let mut t = self.bridge.tables();
        let r = t.flow_mod(fm, self.bridge.now_ns());
        drop(t);
        match r {
            Ok(_) => {
                self.dirty = true;
                Ok(())
            }
            Err(FlowModError::BadTable(_)) => Err(OfError::FlowBadTableId),
            Err(FlowModError::Overlap) => Err(OfError::FlowOverlap),
            Err(FlowModError::UnknownGroup(_)) => Err(OfError::ActionBadOutGroup),
            Err(FlowModError::TableFull) => Err(OfError::FlowTableFull),
        }
    }

    fn apply_group_mod(&mut self, gm: &GroupMod) -> Result<(), OfError> {
        let mut t = self.bridge.tables();
        let r = t.group_mod(gm, self.bridge.now_ns());
        drop(t);
        match r {
            Ok(_) => {
                self.dirty = true;
                Ok(())
            }
            Err(GroupModError::Exists) => Err(OfError::GroupExists),
            Err(GroupModError::Unknown) => Err(OfError::GroupUnknown),
            Err(GroupModError::InvalidId) => Err(OfError::GroupInvalid),
            Err(GroupModError::BadBucket) => Err(OfError::GroupBadBucket),
            Err(GroupModError::Loop) => Err(OfError::GroupLoop),
            Err(GroupModError::WatchUnsupported) => Err(OfError::GroupWatchUnsupported),
        }
    }

    fn stats(&mut self, h: &Header, body: &[u8]) -> Result<Vec<Vec<u8>>, OfError> {
        let mut r = Reader::new(body, OfError::BadLen);
        let kind = r.u16()?;
        let _flags = r.u16()?;
        if self.version != OFP10 {
            r.skip(4)?;
        }
        let entries: Vec<Vec<u8>> = match kind {
            0 => vec![self.desc()],
            1 if self.version == OFP10 => self.flow_entries(&read_stats10(&mut r)?, false),
            1 | 2 if self.version != OFP10 => {
                let f = read_stats13(&mut r)?;
                if kind == 1 {
                    self.flow_entries(&f, false)
                } else {
                    vec![self.aggregate(&f)]
                }
            }
            2 => {
                vec![self.aggregate(&read_stats10(&mut r)?)]
            }
            3 => self.table_stats(),
            4 => {
                let port = if self.version == OFP10 {
                    ofpp::from16(r.u16()?)
                } else {
                    r.u32()?
                };
                self.port_stats(port)
            }
            6 if self.version != OFP10 => {
                let id = r.u32()?;
                self.group_stats(id)
            }
            7 if self.version != OFP10 => self.group_descs(),
            8 if self.version != OFP10 => vec![group_features()],
            12 if self.version != OFP10 => {
                if !r.is_empty() {
                    // Setting table features is not supported.
                    return Err(OfError::BadStat);
                }
                (0..N_TABLES).map(table_features).collect()
            }
            13 => self
                .bridge
                .ports()
                .iter()
                .map(|p| {
                    let mut w = Writer::default();
                    if self.version == OFP10 {
                        put_port10(&mut w, p);
                    } else {
                        put_port13(&mut w, p);
                    }
                    w.b
                })
                .collect(),
            0xffff if self.version == OFP10 => return self.nx_stats(h, &mut r),
            _ => return Err(OfError::BadStat),
        };
        Ok(self.multipart(h.xid, kind, None, entries))
    }

    fn nx_stats(&mut self, h: &Header, r: &mut Reader) -> Result<Vec<Vec<u8>>, OfError> {
        if r.u32()? != NX_VENDOR {
            return Err(OfError::BadVendor);
        }
        let sub = r.u32()?;
        r.skip(4)?;
        match sub {
            0 | 1 => {
                let out_port = ofpp::from16(r.u16()?);
                let match_len = r.u16()? as usize;
                let table = r.u8()?;
                r.skip(3)?;
                let mb = r
                    .bytes(pad8_len(match_len))
                    .map_err(|_| OfError::MatchBadLen)?;
                let (m, cookie) = decode_match(&mb[..match_len])?;
                let (cookie, cookie_mask) = cookie.unwrap_or((0, 0));
                let f = FlowFilter {
                    table,
                    m,
                    cookie,
                    cookie_mask,
                    out_port,
                    out_group: OFPG_ANY,
                };
                let entries = if sub == 0 {
                    self.flow_entries(&f, true)
                } else {
                    vec![self.aggregate(&f)]
                };
                Ok(self.multipart(h.xid, 0xffff, Some(sub), entries))
            }
            // NXST_GROUP, NXST_GROUP_DESC, NXST_GROUP_FEATURES
            7 => {
                let id = r.u32()?;
                let entries = self.group_stats(id);
                Ok(self.multipart(h.xid, 0xffff, Some(sub), entries))
            }
            8 => {
                let id = r.u32().unwrap_or(rvs_dataplane::flow::table::OFPG_ALL);
                let entries = self
                    .groups(id)
                    .iter()
                    .map(|g| group_desc15(g, false))
                    .collect();
                Ok(self.multipart(h.xid, 0xffff, Some(sub), entries))
            }
            9 => Ok(self.multipart(h.xid, 0xffff, Some(sub), vec![group_features()])),
            _ => Err(OfError::BadSubtype),
        }
    }

    /// Splits entries over as many replies as needed, all but the last
    /// flagged "more".
    fn multipart(
        &self,
        xid: u32,
        kind: u16,
        nx: Option<u32>,
        entries: Vec<Vec<u8>>,
    ) -> Vec<Vec<u8>> {
        let of10 = self.version == OFP10;
        let head = |more: bool| {
            let mut w = self.reply(if of10 { 17 } else { 19 }, xid);
            w.u16(kind).u16(more as u16);
            if !of10 {
                w.zeros(4);
            }
            if let Some(sub) = nx {
                w.u32(NX_VENDOR).u32(sub).zeros(4);
            }
            w
        };
        let mut out = Vec::new();
        let mut w = head(false);
        let base = w.len();
        for e in entries {
            if w.len() + e.len() > MAX_MSG && w.len() > base {
                let mut full = std::mem::replace(&mut w, head(false));
                full.put_u16_at(10, 1);
                out.push(full.finish());
            }
            w.bytes(&e);
        }
        out.push(w.finish());
        out
    }

    fn desc(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.str_field("The rvs project", 256);
        w.str_field("rvs userspace switch (DPDK)", 256);
        w.str_field(env!("CARGO_PKG_VERSION"), 256);
        w.str_field("None", 32);
        w.str_field("None", 256);
        w.b
    }

    fn select(&self, f: &FlowFilter) -> Vec<Arc<Rule>> {
        let t = self.bridge.tables();
        t.query(
            f.table,
            &f.m,
            f.cookie,
            f.cookie_mask,
            f.out_port,
            f.out_group,
        )
    }

    fn flow_entries(&self, f: &FlowFilter, nx: bool) -> Vec<Vec<u8>> {
        let now_ns = self.bridge.now_ns();
        let now_s = (now_ns / 1_000_000_000) as u32;
        let rules = self.select(f);
        rules
            .iter()
            .map(|r| {
                let age = now_ns.saturating_sub(r.created_ns);
                let (secs, nsecs) = ((age / 1_000_000_000) as u32, (age % 1_000_000_000) as u32);
                let (pk, by) = r.stats.get();
                let mut w = Writer::default();
                if nx {
                    let mb = encode_match(&r.m, false);
                    let ab = encode_actions(&r.actions, OFP10, &r.m);
                    let used = r.stats.used().max((r.created_ns / 1_000_000_000) as u32);
                    let len = 48 + pad8_len(mb.len()) + ab.len();
                    w.u16(len as u16).u8(r.table).u8(0).u32(secs).u32(nsecs);
                    w.u16(r.priority).u16(r.idle_timeout).u16(r.hard_timeout);
                    w.u16(mb.len() as u16);
                    w.u16((now_s.saturating_sub(used) + 1) as u16);
                    w.u16(
                        (now_s.saturating_sub((r.modified_ns / 1_000_000_000) as u32) + 1) as u16,
                    );
                    w.u64(r.cookie).u64(pk).u64(by);
                    w.bytes(&mb).pad8().bytes(&ab);
                } else if self.version == OFP10 {
                    let ab = encode_actions(&r.actions, OFP10, &r.m);
                    w.u16((88 + ab.len()) as u16).u8(r.table).u8(0);
                    ofp10::encode(&mut w, &r.m);
                    w.u32(secs).u32(nsecs).u16(r.priority).u16(r.idle_timeout);
                    w.u16(r.hard_timeout).zeros(6).u64(r.cookie).u64(pk).u64(by);
                    w.bytes(&ab);
                } else {
                    let ib = encode_instructions(&r.actions, &r.m);
                    w.u16(0).u8(r.table).u8(0).u32(secs).u32(nsecs);
                    w.u16(r.priority).u16(r.idle_timeout).u16(r.hard_timeout);
                    w.u16(r.flags).zeros(4).u64(r.cookie).u64(pk).u64(by);
                    put_ofp13_match(&mut w, &r.m);
                    w.bytes(&ib);
                    let n = w.len() as u16;
                    w.put_u16_at(0, n);
                }
                w.b
            })
            .collect()
    }

    fn aggregate(&self, f: &FlowFilter) -> Vec<u8> {
        let rules = self.select(f);
        let (mut pk, mut by) = (0u64, 0u64);
        for r in &rules {
            let (p, b) = r.stats.get();
            pk += p;
            by += b;
        }
        let mut w = Writer::default();
        w.u64(pk).u64(by).u32(rules.len() as u32).zeros(4);
        w.b
    }

    fn table_stats(&self) -> Vec<Vec<u8>> {
        let t = self.bridge.tables();
        (0..N_TABLES)
            .map(|id| {
                let active = t.table_len(id) as u32;
                let mut w = Writer::default();
                if self.version == OFP10 {
                    w.u8(id).zeros(3);
                    let name = if id == 0 {
                        "classifier".to_string()
                    } else {
                        format!("table{id}")
                    };
                    w.str_field(&name, 32);
                    w.u32(0x003f_ffff).u32(1_000_000).u32(active).u64(0).u64(0);
                } else {
                    w.u8(id).zeros(3).u32(active).u64(0).u64(0);
                }
                w.b
            })
            .collect()
    }

    fn port_stats(&self, port: u32) -> Vec<Vec<u8>> {
        let ports = self.bridge.ports();
        ports
            .iter()
            .filter(|p| {
                port == ofpp::ANY
                    || port == 0xffff_ffff
                    || wire_port(p.ofport) == port
                    || p.ofport == port
            })
            .map(|p| {
                let mut w = Writer::default();
                if self.version == OFP10 {
                    w.u16(wire_port(p.ofport) as u16).zeros(6);
                } else {
                    w.u32(wire_port(p.ofport)).zeros(4);
                }
                let s = &p.stats;
                w.u64(s.rx_packets)
                    .u64(s.tx_packets)
                    .u64(s.rx_bytes)
                    .u64(s.tx_bytes);
                w.u64(s.rx_dropped).u64(s.tx_dropped);
                // rx/tx errors, frame, overrun, crc, collisions: none
                // are counted on these ports.
                w.zeros(6 * 8);
                if self.version != OFP10 {
                    let d = self.bridge.now_ns();
                    w.u32((d / 1_000_000_000) as u32)
                        .u32((d % 1_000_000_000) as u32);
                }
                w.b
            })
            .collect()
    }

    fn groups(&self, id: u32) -> Vec<Arc<Group>> {
        let t = self.bridge.tables();
        let mut v: Vec<Arc<Group>> = t
            .groups()
            .filter(|g| id == rvs_dataplane::flow::table::OFPG_ALL || g.id == id)
            .cloned()
            .collect();
        v.sort_by_key(|g| g.id);
        v
    }

    fn group_stats(&self, id: u32) -> Vec<Vec<u8>> {
        let now = self.bridge.now_ns();
        let t = self.bridge.tables();
        let refs = |gid: u32| {
            t.rules()
                .filter(|r| {
                    r.actions
                        .contains(&rvs_dataplane::flow::action::Action::Group(gid))
                })
                .count() as u32
        };
        let groups: Vec<_> = t
            .groups()
            .filter(|g| id == rvs_dataplane::flow::table::OFPG_ALL || g.id == id)
            .cloned()
            .collect();
        let mut out: Vec<(u32, Vec<u8>)> = groups
            .iter()
            .map(|g| {
                let (pk, by) = g.stats.get();
                let age = now.saturating_sub(g.created_ns);
                let mut w = Writer::default();
                w.u16((40 + 16 * g.buckets.len()) as u16).zeros(2).u32(g.id);
                w.u32(refs(g.id)).zeros(4).u64(pk).u64(by);
                w.u32((age / 1_000_000_000) as u32)
                    .u32((age % 1_000_000_000) as u32);
                for b in &g.bucket_stats {
                    let (p, y) = b.get();
                    w.u64(p).u64(y);
                }
                (g.id, w.b)
            })
            .collect();
        out.sort_by_key(|e| e.0);
        out.into_iter().map(|e| e.1).collect()
    }

    fn group_descs(&self) -> Vec<Vec<u8>> {
        self.groups(rvs_dataplane::flow::table::OFPG_ALL)
            .iter()
            .map(|g| {
                let mut w = Writer::default();
                w.u16(0).u8(g.kind.to_wire()).u8(0).u32(g.id);
                for b in &g.buckets {
                    let ab = super::actions::encode_actions13(&b.actions, &Match::any());
                    w.u16((16 + ab.len()) as u16)
                        .u16(b.weight)
                        .u32(b.watch_port);
                    w.u32(b.watch_group).zeros(4).bytes(&ab);
                }
                let n = w.len() as u16;
                w.put_u16_at(0, n);
                w.b
            })
            .collect()
    }
}

fn command(c: u8) -> Result<Command, OfError> {
    Ok(match c {
        0 => Command::Add,
        1 => Command::Modify,
        2 => Command::ModifyStrict,
        3 => Command::Delete,
        4 => Command::DeleteStrict,
        _ => return Err(OfError::FlowBadCommand),
    })
}

/// A cookie field of all ones means "keep the rules' cookies" (what
/// ovs-ofctl sends for a modify that names none).
fn keep_if_all_ones(cookie: u64) -> Option<u64> {
    (cookie != u64::MAX).then_some(cookie)
}

/// What every flow_mod format shares past decoding: an add needs a real
/// table, and its cookie is the new rule's rather than a filter.
fn finish_flow_mod(mut fm: FlowMod) -> Result<FlowMod, OfError> {
    if fm.command == Command::Add {
        // As OVS: an add for "any table" (ovs-ofctl add-flows sends 0xff
        // for lines without table= once some line names a table) goes to
        // table 0.
        if fm.table == OFPTT_ALL {
            fm.table = 0;
        }
        fm.cookie = fm.new_cookie.take().unwrap_or(0);
        fm.cookie_mask = 0;
    }
    Ok(fm)
}

fn is_exact10(body: &[u8]) -> bool {
    let wc = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    wc & 0x003f_ffff == 0
}

/// The OpenFlow port number of a port (LOCAL for the bridge's own).
fn wire_port(ofport: u32) -> u32 {
    if ofport == ofpp::LOCAL_OFPORT {
        ofpp::LOCAL
    } else {
        ofport
    }
}

fn put_port10(w: &mut Writer, p: &PortInfo) {
    let no = if p.ofport == ofpp::LOCAL_OFPORT {
        0xfffe
    } else {
        p.ofport as u16
    };
    w.u16(no).bytes(&mac_bytes(p.mac)).str_field(&p.name, 16);
    w.u32(if p.admin_up { 0 } else { 1 });
    w.u32(if p.link_up { 0 } else { 1 });
    // 10GB-FD | COPPER
    let feat = if p.link_up { (1 << 6) | (1 << 7) } else { 0 };
    w.u32(feat).u32(0).u32(0).u32(0);
}

fn put_port13(w: &mut Writer, p: &PortInfo) {
    w.u32(wire_port(p.ofport))
        .zeros(4)
        .bytes(&mac_bytes(p.mac))
        .zeros(2);
    w.str_field(&p.name, 16);
    w.u32(if p.admin_up { 0 } else { 1 });
    w.u32(if p.link_up { 4 } else { 1 });
    let feat = if p.link_up { (1 << 6) | (1 << 11) } else { 0 };
    w.u32(feat).u32(0).u32(0).u32(0);
    w.u32(if p.link_up { 10_000_000 } else { 0 }).u32(0);
}

/// One table's OpenFlow 1.3 table-features entry, with every property
/// the spec requires.
fn table_features(id: u8) -> Vec<u8> {
    let mut w = Writer::default();
    w.u16(0).u8(id).zeros(5);
    let name = if id == 0 {
        "classifier".to_string()
    } else {
        format!("table{id}")
    };
    w.str_field(&name, 32)
        .u64(u64::MAX)
        .u64(u64::MAX)
        .u32(0)
        .u32(1_000_000);
    let prop = |w: &mut Writer, t: u16, body: &[u8]| {
        w.u16(t).u16((4 + body.len()) as u16).bytes(body).pad8();
    };
    let ids = |v: &[u16]| -> Vec<u8> {
        v.iter()
            .flat_map(|&t| [(t >> 8) as u8, t as u8, 0, 4])
            .collect()
    };
    // apply-actions, goto-table, write-metadata, clear-actions
    prop(&mut w, 0, &ids(&[4, 1, 2, 5]));
    let next: Vec<u8> = (id.saturating_add(1)..N_TABLES).collect();
    prop(&mut w, 2, &next);
    prop(&mut w, 4, &[]);
    prop(&mut w, 6, &ids(&[0, 17, 18, 22, 23, 24, 25]));
    let oxm: Vec<u8> = [
        0u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 19, 20, 21, 22, 23, 24, 25, 38,
    ]
    .iter()
    .flat_map(|&f| {
        let len = match f {
            0 | 11 | 12 | 22 | 23 => 4,
            2 | 38 => 8,
            3 | 4 | 24 | 25 => 6,
            5 | 6 | 13..=16 | 21 => 2,
            _ => 1,
        };
        (0x8000_0000u32 | (f as u32) << 9 | len).to_be_bytes()
    })
    .collect();
    prop(&mut w, 8, &oxm);
    prop(&mut w, 10, &oxm);
    prop(&mut w, 12, &[]);
    prop(&mut w, 14, &oxm);
    let n = w.len() as u16;
    w.put_u16_at(0, n);
    w.b
}

fn group_features() -> Vec<u8> {
    let mut w = Writer::default();
    // types all|select|indirect|ff; capabilities select-weight|chaining
    w.u32(0xf).u32(0x1 | 0x4);
    for _ in 0..4 {
        w.u32(65_535);
    }
    // actions bitmaps per type: output, push/pop vlan, group, set-field ...
    let acts: u32 =
        (1 << 0) | (1 << 17) | (1 << 18) | (1 << 22) | (1 << 23) | (1 << 24) | (1 << 25);
    for _ in 0..4 {
        w.u32(acts);
    }
    w.b
}

/// Which rules a flow or aggregate statistics request asks about.
struct FlowFilter {
    table: u8,
    m: Match,
    cookie: u64,
    cookie_mask: u64,
    out_port: u32,
    out_group: u32,
}

fn read_stats10(r: &mut Reader) -> Result<FlowFilter, OfError> {
    let m = ofp10::decode(r)?;
    let table = r.u8()?;
    r.skip(1)?;
    let out_port = ofpp::from16(r.u16()?);
    Ok(FlowFilter {
        table,
        m,
        cookie: 0,
        cookie_mask: 0,
        out_port,
        out_group: OFPG_ANY,
    })
}

fn read_stats13(r: &mut Reader) -> Result<FlowFilter, OfError> {
    let table = r.u8()?;
    r.skip(3)?;
    let out_port = r.u32()?;
    let out_group = r.u32()?;
    r.skip(4)?;
    let cookie = r.u64()?;
    let cookie_mask = r.u64()?;
    let m = read_ofp13_match(r)?;
    Ok(FlowFilter {
        table,
        m,
        cookie,
        cookie_mask,
        out_port,
        out_group,
    })
}

/// ofp_match of OpenFlow 1.1+: type OXM (1), length, fields, padding.
fn read_ofp13_match(r: &mut Reader) -> Result<Match, OfError> {
    let t = r.u16().map_err(|_| OfError::MatchBadLen)?;
    let len = r.u16().map_err(|_| OfError::MatchBadLen)? as usize;
    if t != 1 {
        return Err(OfError::MatchBadType);
    }
    if len < 4 {
        return Err(OfError::MatchBadLen);
    }
    let fields = r.bytes(len - 4).map_err(|_| OfError::MatchBadLen)?;
    r.skip(pad8_len(len) - len)
        .map_err(|_| OfError::MatchBadLen)?;
    let (m, _) = decode_match(fields)?;
    Ok(m)
}

pub(crate) fn put_ofp13_match(w: &mut Writer, m: &Match) {
    let mb = encode_match(m, true);
    w.u16(1).u16((4 + mb.len()) as u16).bytes(&mb);
    w.pad8();
}

/// What both group_mod formats start with: command, type, group id.
fn group_mod_head(r: &mut Reader) -> Result<(GroupCommand, GroupType, u32), OfError> {
    let command = match r.u16()? {
        0 => GroupCommand::Add,
        1 => GroupCommand::Modify,
        2 => GroupCommand::Delete,
        // OFPGC11_ADD_OR_MOD, Open vSwitch's extension that
        // `ovs-ofctl mod-group --may-create` sends.
        0x8000 => GroupCommand::AddOrModify,
        _ => return Err(OfError::GroupBadCommand),
    };
    let t = r.u8()?;
    r.skip(1)?;
    let id = r.u32()?;
    let kind = GroupType::from_wire(t).ok_or(OfError::GroupBadType)?;
    Ok((command, kind, id))
}

/// A bucket, checked against its group's type: weights are for select
/// groups, and a fast-failover bucket must watch something.
fn bucket(
    kind: GroupType,
    weight: u16,
    watch_port: u32,
    watch_group: u32,
    actions: Vec<rvs_dataplane::flow::action::Action>,
) -> Result<Bucket, OfError> {
    if kind != GroupType::Select && weight != 0 {
        return Err(OfError::GroupBadBucket);
    }
    if kind == GroupType::FastFailover && watch_port == ofpp::ANY && watch_group == OFPG_ANY {
        return Err(OfError::GroupWatchUnsupported);
    }
    Ok(Bucket {
        weight,
        watch_port,
        watch_group,
        actions,
    })
}

/// OpenFlow 1.5's group_mod (what NXT_GROUP_MOD carries over 1.0):
/// buckets with ids and properties.
pub(crate) fn decode_group_mod15(body: &[u8]) -> Result<GroupMod, OfError> {
    let mut r = Reader::new(body, OfError::BadLen);
    let (command, kind, id) = group_mod_head(&mut r)?;
    let blen = r.u16()? as usize;
    r.skip(6)?;
    let mut br = Reader::new(r.bytes(blen)?, OfError::GroupBadBucket);
    let mut buckets = Vec::new();
    while !br.is_empty() {
        let len = br.u16()? as usize;
        let alen = br.u16()? as usize;
        let _bucket_id = br.u32()?;
        if len < 8 || alen > len - 8 {
            return Err(OfError::GroupBadBucket);
        }
        let actions = decode_actions(br.bytes(alen)?, OFP10)?;
        let mut props = Reader::new(br.bytes(len - 8 - alen)?, OfError::GroupBadBucket);
        let (mut weight, mut watch_port, mut watch_group) = (1u16, ofpp::ANY, OFPG_ANY);
        while props.remaining() >= 4 {
            let pt = props.u16()?;
            let pl = props.u16()? as usize;
            if pl < 4 {
                return Err(OfError::GroupBadBucket);
            }
            let mut p = Reader::new(props.bytes(pl - 4)?, OfError::GroupBadBucket);
            props.skip((pad8_len(pl) - pl).min(props.remaining()))?;
            match pt {
                0 => weight = p.u16()?,
                1 => watch_port = p.u32()?,
                2 => watch_group = p.u32()?,
                _ => return Err(OfError::GroupBadBucket),
            }
        }
        buckets.push(bucket(
            kind,
            if kind == GroupType::Select { weight } else { 0 },
            watch_port,
            watch_group,
            actions,
        )?);
    }
    // Group properties: Netronome's selection method (hash over fields,
    // dp_hash; rvs adds roundrobin and leastconn).
    let mut selection_method = String::new();
    let mut fields = Vec::new();
    while r.remaining() >= 4 {
        let pt = r.u16()?;
        let pl = r.u16()? as usize;
        if pl < 4 || pl - 4 > r.remaining() {
            return Err(OfError::BadLen);
        }
        let mut p = Reader::new(r.bytes(pl - 4)?, OfError::BadLen);
        r.skip((pad8_len(pl) - pl).min(r.remaining()))?;
        let exp = if pt == 0xffff { p.u32()? } else { 0 };
        let exp_type = if pt == 0xffff { p.u32()? } else { 0 };
        if pt != 0xffff || !(exp == NTR_VENDOR || exp == NTR_COMPAT_VENDOR) || exp_type != 1 {
            return Err(OfError::GroupBadType);
        }
        p.skip(4)?;
        let name = p.bytes(16)?;
        let end = name
            .iter()
            .position(|&c| c == 0)
            .ok_or(OfError::GroupBadType)?;
        selection_method = String::from_utf8_lossy(&name[..end]).into_owned();
        let _param = p.u64()?;
        if !matches!(
            selection_method.as_str(),
            "hash" | "dp_hash" | "roundrobin" | "leastconn"
        ) {
            return Err(OfError::GroupBadType);
        }
        // The fields: an OXM array (values and masks), read as a match.
        let (m, _) = crate::openflow::oxm::decode_match_loose(p.rest())?;
        for &f in rvs_dataplane::flow::key::Field::ALL {
            if m.mask.get(f) != 0 {
                fields.push(f);
            }
        }
        if !fields.is_empty() && selection_method != "hash" {
            return Err(OfError::GroupBadType);
        }
    }
    if kind != GroupType::Select && !selection_method.is_empty() {
        return Err(OfError::GroupBadType);
    }
    Ok(GroupMod {
        command,
        kind,
        id,
        buckets,
        selection_method,
        fields,
    })
}

const NTR_VENDOR: u32 = 0x0000_154d;
const NTR_COMPAT_VENDOR: u32 = 0x0000_1540;

/// A group in OpenFlow 1.5's group-desc format (NXST_GROUP_DESC);
/// `own_methods`: with rvs's own selection methods too (ovs-ofctl cannot
/// decode them, rvs's saved tables need them).
pub(crate) fn group_desc15(g: &Group, own_methods: bool) -> Vec<u8> {
    let mut buckets = Writer::default();
    for (i, b) in g.buckets.iter().enumerate() {
        let ab = encode_actions(&b.actions, OFP10, &Match::any());
        let mut props = Writer::default();
        match g.kind {
            GroupType::Select => {
                props.u16(0).u16(8).u16(b.weight).u16(0);
            }
            GroupType::FastFailover => {
                props.u16(1).u16(8).u32(b.watch_port);
                props.u16(2).u16(8).u32(b.watch_group);
            }
            _ => {}
        }
        buckets
            .u16((8 + ab.len() + props.len()) as u16)
            .u16(ab.len() as u16)
            .u32(i as u32);
        buckets.bytes(&ab).bytes(&props.b);
    }
    let mut props = Writer::default();
    // ovs-ofctl refuses to decode methods other than hash and dp_hash:
    // rvs's own (roundrobin, leastconn) are not reported in group dumps.
    if matches!(g.selection_method.as_str(), "hash" | "dp_hash")
        || (own_methods && !g.selection_method.is_empty())
    {
        let mut m = Match::any();
        // OVS writes each field with its all-ones mask as the value.
        for &f in &g.fields {
            m.set(f, u64::MAX, u64::MAX);
        }
        let fields = crate::openflow::oxm::encode_match(&m, true);
        let len = 40 + fields.len();
        props
            .u16(0xffff)
            .u16(len as u16)
            .u32(NTR_VENDOR)
            .u32(1)
            .zeros(4);
        let mut name = [0u8; 16];
        let n = g.selection_method.len().min(15);
        name[..n].copy_from_slice(&g.selection_method.as_bytes()[..n]);
        props.bytes(&name).u64(0).bytes(&fields);
        props.zeros(pad8_len(len) - len);
    }
    let mut w = Writer::default();
    w.u16((16 + buckets.len() + props.len()) as u16)
        .u8(g.kind.to_wire())
        .u8(0)
        .u32(g.id);
    w.u16(buckets.len() as u16)
        .zeros(6)
        .bytes(&buckets.b)
        .bytes(&props.b);
    w.b
}

fn decode_group_mod(body: &[u8]) -> Result<GroupMod, OfError> {
    let mut r = Reader::new(body, OfError::BadLen);
    let (command, kind, id) = group_mod_head(&mut r)?;
    let mut buckets = Vec::new();
    while !r.is_empty() {
        let len = r.u16()? as usize;
        if len < 16 || len - 2 > r.remaining() {
            return Err(OfError::GroupBadBucket);
        }
        let mut b = Reader::new(r.bytes(len - 2)?, OfError::GroupBadBucket);
        let weight = b.u16()?;
        let watch_port = b.u32()?;
        let watch_group = b.u32()?;
        b.skip(4)?;
        let actions = decode_actions(b.rest(), OFP13)?;
        buckets.push(bucket(kind, weight, watch_port, watch_group, actions)?);
    }
    Ok(GroupMod {
        command,
        kind,
        id,
        buckets,
        selection_method: String::new(),
        fields: Vec::new(),
    })
}
