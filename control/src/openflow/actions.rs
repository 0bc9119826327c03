//! Action lists and OpenFlow 1.3 instructions on the wire: OpenFlow 1.0
//! actions, 1.3 actions, and the Nicira vendor actions both versions carry
//! (resubmit, reg_load, reg_move, set_tunnel, note, dec_ttl ...). Decoding
//! refuses the whole list on the first bad action; encoding follows what
//! Open vSwitch sends for each version so that ovs-ofctl prints rules as
//! they were written.
use super::error::OfError;
use super::oxm::{self, key_field, mf_for, Mf};
use super::wire::{pad8_len, Reader, Writer, NX_VENDOR, OFP10};
use rvs_dataplane::conntrack::nat::{NatKind, NatSpec};
use rvs_dataplane::flow::action::{ofpp, Action, CtAction, CtZone, Learn, LearnSpec, LearnSrc};
use rvs_dataplane::flow::key::{Field, Match};

mod nx {
    pub const RESUBMIT: u16 = 1;
    pub const SET_TUNNEL: u16 = 2;
    pub const REG_MOVE: u16 = 6;
    pub const REG_LOAD: u16 = 7;
    pub const NOTE: u16 = 8;
    pub const SET_TUNNEL64: u16 = 9;
    pub const RESUBMIT_TABLE: u16 = 14;
    pub const OUTPUT_REG: u16 = 15;
    pub const LEARN: u16 = 16;
    pub const DEC_TTL: u16 = 18;
    pub const WRITE_METADATA: u16 = 22;
    pub const REG_LOAD2: u16 = 33;
    pub const CT: u16 = 35;
    pub const NAT: u16 = 36;
    pub const GROUP: u16 = 40;
}

const CT_F_COMMIT: u16 = 1;
const CT_F_FORCE: u16 = 2;
const NAT_F_SRC: u16 = 1;
const NAT_F_DST: u16 = 2;
const NAT_F_PERSISTENT: u16 = 4;
const NAT_F_PROTO_HASH: u16 = 8;
const NAT_F_PROTO_RANDOM: u16 = 16;
const NAT_RANGE_IPV4_MIN: u16 = 1;
const NAT_RANGE_IPV4_MAX: u16 = 2;
const NAT_RANGE_IPV6: u16 = 4 | 8;
const NAT_RANGE_PROTO_MIN: u16 = 16;
const NAT_RANGE_PROTO_MAX: u16 = 32;

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |a, &x| a << 8 | x as u64)
}

fn mac(b: &[u8]) -> u64 {
    be(&b[..6])
}

/// A set_field / reg_load2 TLV -> action.
fn set_field(r: &mut Reader) -> Result<Action, OfError> {
    let (mf, masked, n) = oxm::read_header(r).map_err(|_| OfError::ActionBadSetType)?;
    // ct_label is 128 bits on the wire; rvs keeps the low 64 and refuses
    // values above them rather than cut them off.
    let wide = |b: &[u8]| {
        if b.len() > 8 && b[..b.len() - 8].iter().any(|&x| x != 0) {
            Err(OfError::ActionBadSetArgument)
        } else {
            Ok(be(b))
        }
    };
    let v = wide(r.bytes(n)?)?;
    let full = if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    };
    let mask = if masked { wide(r.bytes(n)?)? } else { full };
    Ok(match mf {
        Mf::VlanVid if mask == full => {
            if v & 0x1000 == 0 {
                return Err(OfError::ActionBadSetArgument);
            }
            Action::SetVlanVid {
                vid: (v & 0xfff) as u16,
                push: false,
            }
        }
        Mf::VlanPcp => Action::SetVlanPcp {
            pcp: (v & 7) as u8,
            push: false,
        },
        Mf::Cookie | Mf::EthType => return Err(OfError::ActionBadSetType),
        Mf::IpDscp if v > 63 => return Err(OfError::ActionBadSetArgument),
        // The whole DSCP is what mod_nw_tos sets (and how it travels in
        // 1.1+): one action, dumped the same whichever way it came.
        Mf::IpDscp if mask == full => Action::SetNwTos((v << 2) as u8),
        _ => {
            let (field, shift) = key_field(mf).ok_or(OfError::ActionBadSetType)?;
            let fm = (if n == 8 {
                u64::MAX
            } else {
                (1u64 << oxm::n_bits(mf)) - 1
            }) << shift;
            Action::SetField {
                field,
                value: (v << shift) & fm,
                mask: (mask << shift) & fm,
            }
        }
    })
}

fn subfield(h: u32, ofs: u16, n_bits: u16) -> Result<(Field, u8, u8), OfError> {
    let mf = oxm::field_from_header(h)?;
    let (f, shift) = key_field(mf).ok_or(OfError::ActionBadArgument)?;
    if n_bits == 0 || ofs as u32 + n_bits as u32 > oxm::n_bits(mf) {
        return Err(OfError::ActionBadArgument);
    }
    Ok((f, (ofs as u32 + shift) as u8, n_bits as u8))
}

/// NXAST_NAT's body after its subtype.
fn decode_nat(r: &mut Reader) -> Result<NatSpec, OfError> {
    r.skip(2)?;
    let flags = r.u16()?;
    let present = r.u16()?;
    let bad = OfError::ActionBadArgument;
    if flags & !0x1f != 0
        || (flags & NAT_F_SRC != 0 && flags & NAT_F_DST != 0)
        || (flags & NAT_F_PROTO_HASH != 0 && flags & NAT_F_PROTO_RANDOM != 0)
        || present & NAT_RANGE_IPV6 != 0
        || (present & NAT_RANGE_IPV4_MAX != 0 && present & NAT_RANGE_IPV4_MIN == 0)
        || (present & NAT_RANGE_PROTO_MAX != 0 && present & NAT_RANGE_PROTO_MIN == 0)
    {
        return Err(bad);
    }
    let kind = if flags & NAT_F_SRC != 0 {
        NatKind::Src
    } else if flags & NAT_F_DST != 0 {
        NatKind::Dst
    } else {
        NatKind::Reverse
    };
    let ip_min = if present & NAT_RANGE_IPV4_MIN != 0 {
        r.u32()?
    } else {
        0
    };
    let ip_max = if present & NAT_RANGE_IPV4_MAX != 0 {
        r.u32()?
    } else {
        ip_min
    };
    let port_min = if present & NAT_RANGE_PROTO_MIN != 0 {
        r.u16()?
    } else {
        0
    };
    let port_max = if present & NAT_RANGE_PROTO_MAX != 0 {
        r.u16()?
    } else {
        port_min
    };
    if ip_max < ip_min || port_max < port_min || (kind != NatKind::Reverse && ip_min == 0) {
        return Err(bad);
    }
    Ok(NatSpec {
        kind,
        ip_min,
        ip_max,
        port_min,
        port_max,
        persistent: flags & NAT_F_PERSISTENT != 0,
        hash: flags & NAT_F_PROTO_HASH != 0,
        random: flags & NAT_F_PROTO_RANDOM != 0,
    })
}

/// NXAST_CT's body after its subtype: flags, zone, table, alg, then
/// nested actions (nat, and set_field/load on ct_mark or ct_label).
fn decode_ct(r: &mut Reader, version: u8) -> Result<CtAction, OfError> {
    let bad = OfError::ActionBadArgument;
    let flags = r.u16()?;
    let zone_src = r.u32()?;
    let zone_v = r.u16()?;
    let table = r.u8()?;
    r.skip(3)?;
    let alg = r.u16()?;
    if flags & !(CT_F_COMMIT | CT_F_FORCE) != 0
        || (flags & CT_F_FORCE != 0 && flags & CT_F_COMMIT == 0)
    {
        return Err(bad);
    }
    let zone = if zone_src == 0 {
        CtZone::Imm(zone_v)
    } else {
        let (field, ofs, n_bits) = subfield(zone_src, zone_v >> 6, (zone_v & 0x3f) + 1)?;
        if n_bits > 16 {
            return Err(bad);
        }
        CtZone::Field { field, ofs, n_bits }
    };
    let mut nat = None;
    let mut exec = Vec::new();
    let nested = r.rest();
    let mut nr = Reader::new(nested, OfError::ActionBadLen);
    while !nr.is_empty() {
        // A nested NXAST_NAT is known by its header; the rest are actions.
        let h = &nested[nested.len() - nr.remaining()..];
        let is_nat = h.len() >= 10
            && h[0..2] == [0xff, 0xff]
            && u32::from_be_bytes([h[4], h[5], h[6], h[7]]) == NX_VENDOR
            && u16::from_be_bytes([h[8], h[9]]) == nx::NAT;
        if is_nat {
            nr.skip(2)?;
            let len = nr.u16()? as usize;
            if len < 16 || len - 4 > nr.remaining() {
                return Err(OfError::ActionBadLen);
            }
            let body = nr.bytes(len - 4)?;
            let mut b = Reader::new(&body[6..], OfError::ActionBadLen);
            nat = Some(decode_nat(&mut b)?);
            continue;
        }
        let a = decode_one(&mut nr, version)?;
        // As OVS: set_field, load and move, into ct_mark or ct_label.
        let field = match a {
            Action::SetField { field, .. } | Action::RegLoad { field, .. } => field,
            Action::RegMove { dst, .. } => dst,
            _ => return Err(bad),
        };
        if !matches!(field, Field::CtMark | Field::CtLabel) || flags & CT_F_COMMIT == 0 {
            return Err(bad);
        }
        exec.push(a);
    }
    Ok(CtAction {
        commit: flags & CT_F_COMMIT != 0,
        force: flags & CT_F_FORCE != 0,
        zone,
        table: (table != 255).then_some(table),
        alg,
        nat,
        exec,
    })
}

fn encode_ct(w: &mut Writer, version: u8, m: &Match, c: &CtAction) {
    let start = w.len();
    nx_header(w, 0, nx::CT);
    let flags = if c.commit { CT_F_COMMIT } else { 0 } | if c.force { CT_F_FORCE } else { 0 };
    w.u16(flags);
    match c.zone {
        CtZone::Imm(z) => {
            w.u32(0).u16(z);
        }
        CtZone::Field { field, ofs, n_bits } => {
            let mf = mf_for(field, m).unwrap_or(Mf::Reg(0));
            w.u32(oxm::header_u32(mf, false))
                .u16((ofs as u16) << 6 | (n_bits as u16 - 1));
        }
    }
    w.u8(c.table.unwrap_or(255)).zeros(3).u16(c.alg);
    if let Some(n) = &c.nat {
        let ns = w.len();
        nx_header(w, 0, nx::NAT);
        let mut flags = match n.kind {
            NatKind::Src => NAT_F_SRC,
            NatKind::Dst => NAT_F_DST,
            NatKind::Reverse => 0,
        };
        if n.persistent {
            flags |= NAT_F_PERSISTENT;
        }
        if n.hash {
            flags |= NAT_F_PROTO_HASH;
        }
        if n.random {
            flags |= NAT_F_PROTO_RANDOM;
        }
        let mut present = 0;
        if n.kind != NatKind::Reverse {
            present |= NAT_RANGE_IPV4_MIN;
            if n.ip_max != n.ip_min {
                present |= NAT_RANGE_IPV4_MAX;
            }
            if n.port_min != 0 {
                present |= NAT_RANGE_PROTO_MIN;
                if n.port_max != n.port_min {
                    present |= NAT_RANGE_PROTO_MAX;
                }
            }
        }
        w.zeros(2).u16(flags).u16(present);
        if present & NAT_RANGE_IPV4_MIN != 0 {
            w.u32(n.ip_min);
        }
        if present & NAT_RANGE_IPV4_MAX != 0 {
            w.u32(n.ip_max);
        }
        if present & NAT_RANGE_PROTO_MIN != 0 {
            w.u16(n.port_min);
        }
        if present & NAT_RANGE_PROTO_MAX != 0 {
            w.u16(n.port_max);
        }
        let len = pad8_len(w.len() - ns);
        w.zeros(ns + len - w.len());
        w.put_u16_at(ns + 2, len as u16);
    }
    for a in &c.exec {
        encode_one(w, version, m, a);
    }
    let len = w.len() - start;
    w.put_u16_at(start + 2, len as u16);
}

fn decode_nx(r: &mut Reader, len: usize, version: u8) -> Result<Action, OfError> {
    let subtype = r.u16()?;
    Ok(match subtype {
        nx::RESUBMIT | nx::RESUBMIT_TABLE => {
            let port = r.u16()?;
            let table = r.u8()?;
            r.skip(3)?;
            let port = match ofpp::from16(port) {
                ofpp::IN_PORT => None,
                ofpp::LOCAL => Some(ofpp::LOCAL_OFPORT),
                p => Some(p),
            };
            let table = (subtype == nx::RESUBMIT_TABLE && table != 255).then_some(table);
            if port.is_none() && table.is_none() && subtype == nx::RESUBMIT_TABLE {
                return Err(OfError::ActionBadArgument);
            }
            Action::Resubmit { port, table }
        }
        nx::SET_TUNNEL => {
            r.skip(2)?;
            Action::SetTunnel {
                id: r.u32()? as u64,
                wide: false,
            }
        }
        nx::SET_TUNNEL64 => {
            r.skip(6)?;
            Action::SetTunnel {
                id: r.u64()?,
                wide: true,
            }
        }
        nx::REG_MOVE => {
            let n_bits = r.u16()?;
            let src_ofs = r.u16()?;
            let dst_ofs = r.u16()?;
            let (src, so, n) = subfield(r.u32()?, src_ofs, n_bits)?;
            let (dst, dof, _) = subfield(r.u32()?, dst_ofs, n_bits)?;
            Action::RegMove {
                src,
                src_ofs: so,
                dst,
                dst_ofs: dof,
                n_bits: n,
            }
        }
        nx::REG_LOAD => {
            let ofs_nbits = r.u16()?;
            let h = r.u32()?;
            let value = r.u64()?;
            let (field, ofs, n_bits) = subfield(h, ofs_nbits >> 6, (ofs_nbits & 0x3f) + 1)?;
            if n_bits < 64 && value >> n_bits != 0 {
                return Err(OfError::ActionBadArgument);
            }
            Action::RegLoad {
                field,
                ofs,
                n_bits,
                value,
            }
        }
        nx::OUTPUT_REG => {
            let ofs_nbits = r.u16()?;
            let h = r.u32()?;
            let max_len = r.u16()?;
            r.skip(6)?;
            let (field, ofs, n_bits) = subfield(h, ofs_nbits >> 6, (ofs_nbits & 0x3f) + 1)?;
            Action::OutputReg {
                field,
                ofs,
                n_bits,
                max_len,
            }
        }
        nx::REG_LOAD2 => {
            let a = set_field(r)?;
            r.rest();
            a
        }
        nx::NOTE => Action::Note(r.bytes(len - 10)?.to_vec()),
        nx::LEARN => Action::Learn(Box::new(decode_learn(r)?)),
        nx::DEC_TTL => {
            r.skip(6)?;
            Action::DecTtl
        }
        nx::GROUP => {
            r.skip(2)?;
            Action::Group(r.u32()?)
        }
        nx::CT => Action::Ct(Box::new(decode_ct(r, version)?)),
        nx::WRITE_METADATA => {
            r.skip(6)?;
            let value = r.u64()?;
            let mask = r.u64()?;
            Action::WriteMetadata { value, mask }
        }
        _ => return Err(OfError::ActionBadVendorType),
    })
}

const LEARN_SRC_IMM: u16 = 1 << 13;
const LEARN_DST_LOAD: u16 = 1 << 11;
const LEARN_DST_OUTPUT: u16 = 2 << 11;

/// A learn subfield: an NXM header and a bit offset.
fn learn_subfield(r: &mut Reader, n_bits: u16) -> Result<(Field, u8), OfError> {
    let h = r.u32()?;
    let ofs = r.u16()?;
    let (f, o, _) = subfield(h, ofs, n_bits)?;
    Ok((f, o))
}

fn decode_learn(r: &mut Reader) -> Result<Learn, OfError> {
    let idle_timeout = r.u16()?;
    let hard_timeout = r.u16()?;
    let priority = r.u16()?;
    let cookie = r.u64()?;
    let flags = r.u16()?;
    let table = r.u8()?;
    r.skip(1)?;
    let fin_idle_timeout = r.u16()?;
    let fin_hard_timeout = r.u16()?;
    if table == 0xff {
        return Err(OfError::ActionBadArgument);
    }
    let mut specs = Vec::new();
    while r.remaining() >= 2 {
        let h = r.u16()?;
        if h == 0 {
            break;
        }
        let n_bits = h & 0x3ff;
        if n_bits == 0 || n_bits > 64 {
            return Err(OfError::ActionBadArgument);
        }
        let src = if h & LEARN_SRC_IMM != 0 {
            let b = r.bytes(2 * (n_bits as usize).div_ceil(16))?;
            LearnSrc::Imm(be(b))
        } else {
            let (field, ofs) = learn_subfield(r, n_bits)?;
            LearnSrc::Field { field, ofs }
        };
        let spec = match h & (3 << 11) {
            0 | LEARN_DST_LOAD => {
                let (dst, dst_ofs) = learn_subfield(r, n_bits)?;
                let n_bits = n_bits as u8;
                if h & (3 << 11) == 0 {
                    LearnSpec::Match {
                        src,
                        dst,
                        dst_ofs,
                        n_bits,
                    }
                } else {
                    LearnSpec::Load {
                        src,
                        dst,
                        dst_ofs,
                        n_bits,
                    }
                }
            }
            LEARN_DST_OUTPUT if matches!(src, LearnSrc::Field { .. }) => LearnSpec::Output {
                src,
                n_bits: n_bits as u8,
            },
            _ => return Err(OfError::ActionBadArgument),
        };
        specs.push(spec);
    }
    if r.rest().iter().any(|&b| b != 0) {
        return Err(OfError::ActionBadArgument);
    }
    Ok(Learn {
        table,
        priority,
        idle_timeout,
        hard_timeout,
        fin_idle_timeout,
        fin_hard_timeout,
        cookie,
        flags,
        specs,
    })
}

/// A learn spec's field, named as the flow it is read from (`m`: the
/// learning flow for sources, the learned flow for destinations) calls it:
/// nw_src is NXM_OF_ARP_SPA in an ARP flow.
fn put_learn_subfield(w: &mut Writer, f: Field, ofs: u8, m: &Match) {
    let mf = mf_for(f, m).expect("wire name");
    let shift = key_field(mf).map_or(0, |k| k.1) as u8;
    w.u32(oxm::header_u32(mf, false)).u16((ofs - shift) as u16);
}

fn encode_learn(w: &mut Writer, l: &Learn, m: &Match) {
    let start = w.len();
    // The learned flow's Ethernet type and IP protocol, when specs set
    // them: they name its L3/L4 fields (udp_src, not tcp_src, in a UDP
    // flow).
    let mut learned = Match::any();
    for s in &l.specs {
        if let LearnSpec::Match {
            src: LearnSrc::Imm(v),
            dst: dst @ (Field::DlType | Field::NwProto),
            ..
        } = s
        {
            learned.exact(*dst, *v);
        }
    }
    nx_header(w, 0, nx::LEARN);
    w.u16(l.idle_timeout)
        .u16(l.hard_timeout)
        .u16(l.priority)
        .u64(l.cookie);
    w.u16(l.flags)
        .u8(l.table)
        .u8(0)
        .u16(l.fin_idle_timeout)
        .u16(l.fin_hard_timeout);
    for s in &l.specs {
        let (src, n_bits, kind, dst) = match s {
            LearnSpec::Match {
                src,
                dst,
                dst_ofs,
                n_bits,
            } => (src, *n_bits, 0, Some((*dst, *dst_ofs))),
            LearnSpec::Load {
                src,
                dst,
                dst_ofs,
                n_bits,
            } => (src, *n_bits, LEARN_DST_LOAD, Some((*dst, *dst_ofs))),
            LearnSpec::Output { src, n_bits } => (src, *n_bits, LEARN_DST_OUTPUT, None),
        };
        let imm = matches!(src, LearnSrc::Imm(_));
        w.u16(n_bits as u16 | kind | if imm { LEARN_SRC_IMM } else { 0 });
        match *src {
            LearnSrc::Field { field, ofs } => put_learn_subfield(w, field, ofs, m),
            LearnSrc::Imm(v) => {
                let n = 2 * (n_bits as usize).div_ceil(16);
                w.bytes(&v.to_be_bytes()[8usize.saturating_sub(n)..]);
                if n > 8 {
                    w.zeros(n - 8);
                }
            }
        }
        if let Some((f, ofs)) = dst {
            put_learn_subfield(w, f, ofs, &learned);
        }
    }
    let n = pad8_len(w.len() - start);
    w.zeros(start + n - w.len());
    w.put_u16_at(start + 2, n as u16);
}

fn decode_one(r: &mut Reader, version: u8) -> Result<Action, OfError> {
    let kind = r.u16()?;
    let len = r.u16()? as usize;
    if len < 8 || !len.is_multiple_of(8) || len - 4 > r.remaining() {
        return Err(OfError::ActionBadLen);
    }
    let body = r.bytes(len - 4)?;
    let mut b = Reader::new(body, OfError::ActionBadLen);
    let a = if version == OFP10 {
        match kind {
            0 => {
                let port = ofpp::from16(b.u16()?);
                Action::Output {
                    port,
                    max_len: b.u16()?,
                }
            }
            1 => {
                let vid = b.u16()?;
                if vid > 0xfff {
                    return Err(OfError::ActionBadArgument);
                }
                Action::SetVlanVid { vid, push: true }
            }
            2 => {
                let pcp = b.u8()?;
                if pcp > 7 {
                    return Err(OfError::ActionBadArgument);
                }
                Action::SetVlanPcp { pcp, push: true }
            }
            3 => Action::StripVlan,
            4 => Action::SetDlSrc(mac(b.bytes(6)?)),
            5 => Action::SetDlDst(mac(b.bytes(6)?)),
            6 => Action::SetNwSrc(b.u32()?),
            7 => Action::SetNwDst(b.u32()?),
            8 => {
                let tos = b.u8()?;
                if tos & 3 != 0 {
                    return Err(OfError::ActionBadArgument);
                }
                Action::SetNwTos(tos)
            }
            9 => Action::SetTpSrc(b.u16()?),
            10 => Action::SetTpDst(b.u16()?),
            0xffff => {
                if b.u32()? != NX_VENDOR {
                    return Err(OfError::ActionBadVendor);
                }
                decode_nx(&mut b, len, version)?
            }
            _ => return Err(OfError::ActionBadType),
        }
    } else {
        match kind {
            0 => {
                let port = b.u32()?;
                Action::Output {
                    port,
                    max_len: b.u16()?,
                }
            }
            17 => {
                let tpid = b.u16()?;
                if tpid != 0x8100 && tpid != 0x88a8 {
                    return Err(OfError::ActionBadArgument);
                }
                Action::PushVlan(tpid)
            }
            18 => Action::StripVlan,
            22 => Action::Group(b.u32()?),
            23 => Action::SetField {
                field: Field::NwTtl,
                value: b.u8()? as u64,
                mask: 0xff,
            },
            24 => Action::DecTtl,
            25 => set_field(&mut b)?,
            0xffff => {
                if b.u32()? != NX_VENDOR {
                    return Err(OfError::ActionBadVendor);
                }
                decode_nx(&mut b, len, version)?
            }
            _ => return Err(OfError::ActionBadType),
        }
    };
    if let Action::Output { port, .. } = a {
        if port == 0 || (ofpp::MAX..ofpp::IN_PORT).contains(&port) || port == ofpp::ANY {
            return Err(OfError::ActionBadOutPort);
        }
    }
    Ok(a)
}

pub fn decode_actions(b: &[u8], version: u8) -> Result<Vec<Action>, OfError> {
    let mut r = Reader::new(b, OfError::ActionBadLen);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(decode_one(&mut r, version)?);
    }
    Ok(out)
}

/// OpenFlow 1.3 instructions -> one action list (apply-actions first, then
/// write-metadata, then goto-table, the order OpenFlow executes them).
pub fn decode_instructions(b: &[u8], table: u8) -> Result<Vec<Action>, OfError> {
    let mut r = Reader::new(b, OfError::BadLen);
    let (mut apply, mut meta, mut goto) = (None, None, None);
    while !r.is_empty() {
        let kind = r.u16()?;
        let len = r.u16()? as usize;
        if len < 8 || !len.is_multiple_of(8) || len - 4 > r.remaining() {
            return Err(OfError::BadLen);
        }
        let mut b = Reader::new(r.bytes(len - 4)?, OfError::BadLen);
        match kind {
            1 => {
                let t = b.u8()?;
                if t <= table || t as usize >= rvs_dataplane::flow::table::N_TABLES {
                    return Err(OfError::InstBadTableId);
                }
                goto = Some(Action::GotoTable(t));
            }
            2 => {
                b.skip(4)?;
                let value = b.u64()?;
                let mask = b.u64()?;
                meta = Some(Action::WriteMetadata { value, mask });
            }
            4 => {
                b.skip(4)?;
                apply = Some(decode_actions(b.rest(), super::wire::OFP13)?);
            }
            // Clear-Actions: rvs keeps no action set, so there is nothing
            // to clear.
            5 => {}
            3 | 6 => return Err(OfError::InstUnsupported),
            _ => return Err(OfError::InstUnknown),
        }
    }
    let mut out = apply.unwrap_or_default();
    out.extend(meta);
    out.extend(goto);
    Ok(out)
}

fn nx_header(w: &mut Writer, len: u16, subtype: u16) {
    w.u16(0xffff).u16(len).u32(NX_VENDOR).u16(subtype);
}

fn put_set_field(w: &mut Writer, version: u8, mf: Mf, v: u64, mask: u64) {
    let start = w.len();
    let full_mask = mask == u64::MAX;
    if version == OFP10 || !full_mask {
        // NXAST_REG_LOAD2 carries a TLV (with mask) in any version.
        nx_header(w, 0, nx::REG_LOAD2);
    } else {
        w.u16(25).u16(0);
    }
    oxm::put_tlv(w, mf, version != OFP10, v, mask);
    let n = pad8_len(w.len() - start);
    w.zeros(start + n - w.len());
    w.put_u16_at(start + 2, n as u16);
}

/// Encodes a set_field on key field `f` (value/mask in key bits).
fn encode_set_field(w: &mut Writer, version: u8, m: &Match, f: Field, v: u64, mask: u64) {
    let full = mask & f.full() == f.full();
    if version == OFP10 && full {
        match f {
            Field::DlSrc => return encode_one(w, version, m, &Action::SetDlSrc(v)),
            Field::DlDst => return encode_one(w, version, m, &Action::SetDlDst(v)),
            Field::NwSrc => return encode_one(w, version, m, &Action::SetNwSrc(v as u32)),
            Field::NwDst => return encode_one(w, version, m, &Action::SetNwDst(v as u32)),
            Field::TpSrc => return encode_one(w, version, m, &Action::SetTpSrc(v as u16)),
            Field::TpDst => return encode_one(w, version, m, &Action::SetTpDst(v as u16)),
            _ => {}
        }
    }
    let Some(mf) = mf_for(f, m) else { return };
    match (mf, version != OFP10) {
        (Mf::IpTos, true) if mask & 0xfc == 0xfc => {
            put_set_field(w, version, Mf::IpDscp, v >> 2, u64::MAX)
        }
        (Mf::VlanTci, true) if mask == 0x0fff => {
            put_set_field(w, version, Mf::VlanVid, 0x1000 | (v & 0xfff), u64::MAX)
        }
        _ => {
            let wire_mask = if full { u64::MAX } else { mask };
            put_set_field(w, version, mf, v, wire_mask)
        }
    }
}

fn encode_one(w: &mut Writer, version: u8, m: &Match, a: &Action) {
    let of10 = version == OFP10;
    match *a {
        Action::Output { port, max_len } => {
            if of10 {
                let p = if port == ofpp::LOCAL_OFPORT {
                    0xfffe
                } else {
                    ofpp::to16(port).unwrap_or(0xffff)
                };
                w.u16(0).u16(8).u16(p).u16(max_len);
            } else {
                let p = if port == ofpp::LOCAL_OFPORT {
                    ofpp::LOCAL
                } else {
                    port
                };
                w.u16(0).u16(16).u32(p).u16(max_len).zeros(6);
            }
        }
        Action::SetVlanVid { vid, .. } => {
            if of10 {
                w.u16(1).u16(8).u16(vid).u16(0);
            } else {
                put_set_field(w, version, Mf::VlanVid, 0x1000 | vid as u64, u64::MAX);
            }
        }
        Action::SetVlanPcp { pcp, .. } => {
            if of10 {
                w.u16(2).u16(8).u8(pcp).zeros(3);
            } else {
                put_set_field(w, version, Mf::VlanPcp, pcp as u64, u64::MAX);
            }
        }
        Action::StripVlan => {
            w.u16(if of10 { 3 } else { 18 }).u16(8).u32(0);
        }
        // OpenFlow 1.0 has no push: the VLAN set actions that follow push.
        Action::PushVlan(tpid) => {
            if !of10 {
                w.u16(17).u16(8).u16(tpid).u16(0);
            }
        }
        Action::SetDlSrc(mac) | Action::SetDlDst(mac) => {
            let src = matches!(a, Action::SetDlSrc(_));
            if of10 {
                w.u16(if src { 4 } else { 5 }).u16(16);
                w.bytes(&mac.to_be_bytes()[2..]).zeros(6);
            } else {
                let mf = if src { Mf::EthSrc } else { Mf::EthDst };
                put_set_field(w, version, mf, mac, u64::MAX);
            }
        }
        Action::SetNwSrc(ip) | Action::SetNwDst(ip) => {
            let src = matches!(a, Action::SetNwSrc(_));
            if of10 {
                w.u16(if src { 6 } else { 7 }).u16(8).u32(ip);
            } else {
                let mf = if src { Mf::Ipv4Src } else { Mf::Ipv4Dst };
                put_set_field(w, version, mf, ip as u64, u64::MAX);
            }
        }
        Action::SetNwTos(tos) => {
            if of10 {
                w.u16(8).u16(8).u8(tos).zeros(3);
            } else {
                put_set_field(w, version, Mf::IpDscp, (tos >> 2) as u64, u64::MAX);
            }
        }
        Action::SetTpSrc(p) | Action::SetTpDst(p) => {
            let src = matches!(a, Action::SetTpSrc(_));
            if of10 {
                w.u16(if src { 9 } else { 10 }).u16(8).u16(p).u16(0);
            } else {
                let f = if src { Field::TpSrc } else { Field::TpDst };
                if let Some(mf) = mf_for(f, m) {
                    put_set_field(w, version, mf, p as u64, u64::MAX);
                }
            }
        }
        Action::SetField { field, value, mask } => {
            encode_set_field(w, version, m, field, value, mask)
        }
        Action::RegLoad {
            field,
            ofs,
            n_bits,
            value,
        } => {
            let mf = mf_for(field, m).expect("every key field has a wire name");
            let shift = key_field(mf).map_or(0, |k| k.1) as u8;
            nx_header(w, 24, nx::REG_LOAD);
            w.u16(((ofs - shift) as u16) << 6 | (n_bits as u16 - 1));
            w.u32(oxm::header_u32(mf, false)).u64(value);
        }
        Action::RegMove {
            src,
            src_ofs,
            dst,
            dst_ofs,
            n_bits,
        } => {
            let smf = mf_for(src, m).expect("wire name");
            let dmf = mf_for(dst, m).expect("wire name");
            let ss = key_field(smf).map_or(0, |k| k.1) as u8;
            let ds = key_field(dmf).map_or(0, |k| k.1) as u8;
            nx_header(w, 24, nx::REG_MOVE);
            w.u16(n_bits as u16)
                .u16((src_ofs - ss) as u16)
                .u16((dst_ofs - ds) as u16);
            w.u32(oxm::header_u32(smf, false))
                .u32(oxm::header_u32(dmf, false));
        }
        Action::OutputReg {
            field,
            ofs,
            n_bits,
            max_len,
        } => {
            let mf = mf_for(field, m).expect("every key field has a wire name");
            let shift = key_field(mf).map_or(0, |k| k.1) as u8;
            nx_header(w, 24, nx::OUTPUT_REG);
            w.u16(((ofs - shift) as u16) << 6 | (n_bits as u16 - 1));
            w.u32(oxm::header_u32(mf, false)).u16(max_len).zeros(6);
        }
        Action::DecTtl => {
            if of10 {
                nx_header(w, 16, nx::DEC_TTL);
                w.zeros(6);
            } else {
                w.u16(24).u16(8).u32(0);
            }
        }
        Action::SetTunnel { id, wide } => {
            if wide {
                nx_header(w, 24, nx::SET_TUNNEL64);
                w.zeros(6).u64(id);
            } else {
                nx_header(w, 16, nx::SET_TUNNEL);
                w.zeros(2).u32(id as u32);
            }
        }
        Action::Resubmit { port, table } => {
            let p = match port {
                None => 0xfff8,
                Some(ofpp::LOCAL_OFPORT) => 0xfffe,
                Some(p) => ofpp::to16(p).unwrap_or(0xffff),
            };
            match table {
                None => {
                    nx_header(w, 16, nx::RESUBMIT);
                    w.u16(p).zeros(4);
                }
                Some(t) => {
                    nx_header(w, 16, nx::RESUBMIT_TABLE);
                    w.u16(p).u8(t).zeros(3);
                }
            }
        }
        Action::Group(id) => {
            if of10 {
                nx_header(w, 16, nx::GROUP);
                w.zeros(2).u32(id);
            } else {
                w.u16(22).u16(8).u32(id);
            }
        }
        Action::Note(ref bytes) => {
            let len = pad8_len(10 + bytes.len()).max(16);
            nx_header(w, len as u16, nx::NOTE);
            w.bytes(bytes).zeros(len - 10 - bytes.len());
        }
        Action::WriteMetadata { value, mask } => {
            nx_header(w, 32, nx::WRITE_METADATA);
            w.zeros(6).u64(value).u64(mask);
        }
        // OpenFlow 1.0 has no goto: resubmit to the table does the same at
        // the end of a list.
        Action::GotoTable(t) => encode_one(
            w,
            version,
            m,
            &Action::Resubmit {
                port: None,
                table: Some(t),
            },
        ),
        Action::Learn(ref l) => encode_learn(w, l, m),
        Action::Ct(ref c) => encode_ct(w, version, m, c),
    }
}

/// Encodes an action list for an OpenFlow 1.0 message.
pub fn encode_actions(actions: &[Action], version: u8, m: &Match) -> Vec<u8> {
    let mut w = Writer::default();
    for a in actions {
        encode_one(&mut w, version, m, a);
    }
    w.b
}

/// OpenFlow 1.3 has no "tag if untagged": `mod_vlan_vid`/`mod_vlan_pcp`
/// travel as push_vlan (once, and only when the rule does not already
/// require a tag) followed by set_field, as Open vSwitch sends them.
fn push_for_mod_vlan<'a>(actions: impl Iterator<Item = &'a Action>, m: &Match) -> Vec<Action> {
    let tagged = {
        let (v, mask) = m.field(Field::VlanTci);
        v & mask & 0x1000 != 0
    };
    let mut pushed = tagged;
    let mut out = Vec::new();
    for a in actions {
        match *a {
            Action::PushVlan(_) | Action::StripVlan => {
                pushed = matches!(a, Action::PushVlan(_));
                out.push(a.clone());
            }
            Action::SetVlanVid { push: true, .. } | Action::SetVlanPcp { push: true, .. } => {
                if !pushed {
                    out.push(Action::PushVlan(0x8100));
                    pushed = true;
                }
                out.push(a.clone());
            }
            _ => out.push(a.clone()),
        }
    }
    out
}

/// Encodes an action list (a group bucket's) for OpenFlow 1.3.
pub fn encode_actions13(actions: &[Action], m: &Match) -> Vec<u8> {
    let mut w = Writer::default();
    for a in push_for_mod_vlan(actions.iter(), m) {
        encode_one(&mut w, super::wire::OFP13, m, &a);
    }
    w.b
}

/// Encodes an action list as OpenFlow 1.3 instructions.
pub fn encode_instructions(actions: &[Action], m: &Match) -> Vec<u8> {
    let version = super::wire::OFP13;
    let mut w = Writer::default();
    let apply: Vec<&Action> = actions
        .iter()
        .filter(|a| !matches!(a, Action::GotoTable(_) | Action::WriteMetadata { .. }))
        .collect();
    if !apply.is_empty() {
        let start = w.len();
        w.u16(4).u16(0).u32(0);
        for a in push_for_mod_vlan(apply.into_iter(), m) {
            encode_one(&mut w, version, m, &a);
        }
        let n = w.len() - start;
        w.put_u16_at(start + 2, n as u16);
    }
    for a in actions {
        match *a {
            Action::WriteMetadata { value, mask } => {
                w.u16(2).u16(24).u32(0).u64(value).u64(mask);
            }
            Action::GotoTable(t) => {
                w.u16(1).u16(8).u8(t).zeros(3);
            }
            _ => {}
        }
    }
    w.b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openflow::wire::OFP13;

    fn sample() -> Vec<Action> {
        vec![
            Action::SetDlSrc(0x0200_0000_0001),
            Action::SetNwDst(0x0a00_0001),
            Action::RegLoad {
                field: Field::Reg(2),
                ofs: 4,
                n_bits: 8,
                value: 0xab,
            },
            Action::RegMove {
                src: Field::DlSrc,
                src_ofs: 0,
                dst: Field::DlDst,
                dst_ofs: 0,
                n_bits: 48,
            },
            Action::SetTunnel { id: 5, wide: false },
            Action::OutputReg {
                field: Field::Reg(7),
                ofs: 0,
                n_bits: 16,
                max_len: 0,
            },
            Action::Resubmit {
                port: None,
                table: Some(3),
            },
            Action::Resubmit {
                port: Some(2),
                table: None,
            },
            Action::Note(vec![1, 2, 3, 0, 0, 0]),
            Action::Group(7),
            Action::DecTtl,
            Action::StripVlan,
            Action::Output {
                port: ofpp::NORMAL,
                max_len: 0,
            },
        ]
    }

    #[test]
    fn of10_round_trip() {
        let m = Match::any();
        let a = sample();
        let b = encode_actions(&a, OFP10, &m);
        assert_eq!(decode_actions(&b, OFP10).unwrap(), a);
    }

    #[test]
    fn of13_round_trip_through_instructions() {
        let mut m = Match::any();
        m.exact(Field::DlType, 0x800);
        let mut a = sample();
        // In 1.3 the OpenFlow 1.0 rewrites travel as set_field.
        a[0] = Action::SetField {
            field: Field::DlSrc,
            value: 0x0200_0000_0001,
            mask: Field::DlSrc.full(),
        };
        a[1] = Action::SetField {
            field: Field::NwDst,
            value: 0x0a00_0001,
            mask: Field::NwDst.full(),
        };
        a.push(Action::WriteMetadata {
            value: 1,
            mask: 0xff,
        });
        a.push(Action::GotoTable(4));
        let b = encode_instructions(&a, &m);
        assert_eq!(decode_instructions(&b, 0).unwrap(), a);
        assert_eq!(
            decode_instructions(&b, 4).err(),
            Some(OfError::InstBadTableId)
        );
        let _ = OFP13;
    }

    #[test]
    fn refuses_bad_lengths_and_types() {
        assert_eq!(
            decode_actions(&[0, 0, 0, 4], OFP10).err(),
            Some(OfError::ActionBadLen)
        );
        assert_eq!(
            decode_actions(&[0, 0, 0, 8, 0, 1], OFP10).err(),
            Some(OfError::ActionBadLen)
        );
        assert_eq!(
            decode_actions(&[0, 99, 0, 8, 0, 0, 0, 0], OFP10).err(),
            Some(OfError::ActionBadType)
        );
        // vid out of range
        assert_eq!(
            decode_actions(&[0, 1, 0, 8, 0x10, 0, 0, 0], OFP10).err(),
            Some(OfError::ActionBadArgument)
        );
    }
}
