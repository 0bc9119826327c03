//! NXM and OXM match fields: the TLV format both share (class, field,
//! has-mask, length), which headers name which flow-key field, the
//! prerequisites OpenFlow requires (tcp_dst needs ip and nw_proto=6 ...),
//! and match encoding in the order ovs-ofctl's decoder accepts.
use super::error::OfError;
use super::wire::{Reader, Writer, ONF_VENDOR};
use rvs_dataplane::flow::action::ofpp;
use rvs_dataplane::flow::key::{Field, Match};

/// A field as the wire names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mf {
    InPort,
    EthDst,
    EthSrc,
    EthType,
    VlanTci,
    VlanVid,
    VlanPcp,
    IpTos,
    IpDscp,
    IpEcn,
    IpProto,
    IpTtl,
    IpFrag,
    Ipv4Src,
    Ipv4Dst,
    TcpSrc,
    TcpDst,
    UdpSrc,
    UdpDst,
    SctpSrc,
    SctpDst,
    IcmpType,
    IcmpCode,
    ArpOp,
    ArpSpa,
    ArpTpa,
    ArpSha,
    ArpTha,
    TunId,
    TunSrc,
    TunDst,
    Metadata,
    Reg(u8),
    TcpFlags,
    /// NXM_NX_COOKIE: a flow-stats/flow-mod filter, not a packet field.
    Cookie,
    CtState,
    CtZone,
    CtMark,
    /// 128 bits on the wire; rvs keeps the low 64.
    CtLabel,
    CtNwProto,
    CtNwSrc,
    CtNwDst,
    CtTpSrc,
    CtTpDst,
}

const NXM0: u16 = 0x0000;
const NXM1: u16 = 0x0001;
const OXM: u16 = 0x8000;
const EXP: u16 = 0xffff;

/// (class, field, value bytes, maskable, mf). OpenFlow 1.3's tcp_flags is an
/// ONF experimenter field (class 0xffff, field 42).
const TABLE: &[(u16, u8, u8, bool, Mf)] = &[
    (NXM0, 0, 2, false, Mf::InPort),
    (OXM, 0, 4, false, Mf::InPort),
    (NXM0, 1, 6, true, Mf::EthDst),
    (OXM, 3, 6, true, Mf::EthDst),
    (NXM0, 2, 6, true, Mf::EthSrc),
    (OXM, 4, 6, true, Mf::EthSrc),
    (NXM0, 3, 2, false, Mf::EthType),
    (OXM, 5, 2, false, Mf::EthType),
    (NXM0, 4, 2, true, Mf::VlanTci),
    (OXM, 6, 2, true, Mf::VlanVid),
    (OXM, 7, 1, false, Mf::VlanPcp),
    (NXM0, 5, 1, false, Mf::IpTos),
    (OXM, 8, 1, false, Mf::IpDscp),
    (NXM1, 28, 1, false, Mf::IpEcn),
    (OXM, 9, 1, false, Mf::IpEcn),
    (NXM0, 6, 1, false, Mf::IpProto),
    (OXM, 10, 1, false, Mf::IpProto),
    (NXM1, 29, 1, false, Mf::IpTtl),
    (NXM1, 26, 1, true, Mf::IpFrag),
    (NXM0, 7, 4, true, Mf::Ipv4Src),
    (OXM, 11, 4, true, Mf::Ipv4Src),
    (NXM0, 8, 4, true, Mf::Ipv4Dst),
    (OXM, 12, 4, true, Mf::Ipv4Dst),
    (NXM0, 9, 2, true, Mf::TcpSrc),
    (OXM, 13, 2, true, Mf::TcpSrc),
    (NXM0, 10, 2, true, Mf::TcpDst),
    (OXM, 14, 2, true, Mf::TcpDst),
    (NXM0, 11, 2, true, Mf::UdpSrc),
    (OXM, 15, 2, true, Mf::UdpSrc),
    (NXM0, 12, 2, true, Mf::UdpDst),
    (OXM, 16, 2, true, Mf::UdpDst),
    (OXM, 17, 2, true, Mf::SctpSrc),
    (OXM, 18, 2, true, Mf::SctpDst),
    (NXM0, 13, 1, false, Mf::IcmpType),
    (OXM, 19, 1, false, Mf::IcmpType),
    (NXM0, 14, 1, false, Mf::IcmpCode),
    (OXM, 20, 1, false, Mf::IcmpCode),
    (NXM0, 15, 2, false, Mf::ArpOp),
    (OXM, 21, 2, false, Mf::ArpOp),
    (NXM0, 16, 4, true, Mf::ArpSpa),
    (OXM, 22, 4, true, Mf::ArpSpa),
    (NXM0, 17, 4, true, Mf::ArpTpa),
    (OXM, 23, 4, true, Mf::ArpTpa),
    (NXM1, 17, 6, true, Mf::ArpSha),
    (OXM, 24, 6, true, Mf::ArpSha),
    (NXM1, 18, 6, true, Mf::ArpTha),
    (OXM, 25, 6, true, Mf::ArpTha),
    (NXM1, 16, 8, true, Mf::TunId),
    (OXM, 38, 8, true, Mf::TunId),
    (NXM1, 31, 4, true, Mf::TunSrc),
    (NXM1, 32, 4, true, Mf::TunDst),
    (OXM, 2, 8, true, Mf::Metadata),
    (NXM1, 34, 2, true, Mf::TcpFlags),
    (EXP, 42, 2, true, Mf::TcpFlags),
    (NXM1, 30, 8, true, Mf::Cookie),
    (NXM1, 105, 4, true, Mf::CtState),
    (NXM1, 106, 2, false, Mf::CtZone),
    (NXM1, 107, 4, true, Mf::CtMark),
    (NXM1, 108, 16, true, Mf::CtLabel),
    (NXM1, 119, 1, false, Mf::CtNwProto),
    (NXM1, 120, 4, true, Mf::CtNwSrc),
    (NXM1, 121, 4, true, Mf::CtNwDst),
    (NXM1, 124, 2, true, Mf::CtTpSrc),
    (NXM1, 125, 2, true, Mf::CtTpDst),
];

fn lookup(class: u16, field: u8) -> Option<(u8, bool, Mf)> {
    if class == NXM1 && field < 16 {
        return Some((4, true, Mf::Reg(field)));
    }
    TABLE
        .iter()
        .find(|e| e.0 == class && e.1 == field)
        .map(|e| (e.2, e.3, e.4))
}

/// The NXM (`oxm` false) or OXM (true) header of a field, preferring the
/// form that version's decoders expect.
pub fn header_of(mf: Mf, oxm: bool, masked: bool) -> (u16, u8, u8) {
    if let Mf::Reg(r) = mf {
        return (NXM1, r, 4);
    }
    let pick = |class: u16| TABLE.iter().find(|e| e.4 == mf && e.0 == class);
    let e = if oxm {
        pick(OXM).or_else(|| pick(NXM1)).or_else(|| pick(NXM0))
    } else {
        pick(NXM0).or_else(|| pick(NXM1)).or_else(|| pick(OXM))
    }
    .expect("every field has a header");
    let _ = masked;
    (e.0, e.1, e.2)
}

fn hdr(class: u16, field: u8, masked: bool, len: u8) -> u32 {
    (class as u32) << 16 | (field as u32) << 9 | (masked as u32) << 8 | len as u32
}

/// The flow-key field behind a wire field, and the bit position the wire
/// value starts at in it (ip_dscp is tos >> 2, vlan_pcp is tci >> 13).
pub fn key_field(mf: Mf) -> Option<(Field, u32)> {
    Some(match mf {
        Mf::InPort => (Field::InPort, 0),
        Mf::EthDst => (Field::DlDst, 0),
        Mf::EthSrc => (Field::DlSrc, 0),
        Mf::EthType => (Field::DlType, 0),
        Mf::VlanTci | Mf::VlanVid => (Field::VlanTci, 0),
        Mf::VlanPcp => (Field::VlanTci, 13),
        Mf::IpTos => (Field::NwTos, 0),
        Mf::IpDscp => (Field::NwTos, 2),
        Mf::IpEcn => (Field::NwEcn, 0),
        Mf::IpProto | Mf::ArpOp => (Field::NwProto, 0),
        Mf::IpTtl => (Field::NwTtl, 0),
        Mf::IpFrag => (Field::NwFrag, 0),
        Mf::Ipv4Src | Mf::ArpSpa => (Field::NwSrc, 0),
        Mf::Ipv4Dst | Mf::ArpTpa => (Field::NwDst, 0),
        Mf::TcpSrc | Mf::UdpSrc | Mf::SctpSrc | Mf::IcmpType => (Field::TpSrc, 0),
        Mf::TcpDst | Mf::UdpDst | Mf::SctpDst | Mf::IcmpCode => (Field::TpDst, 0),
        Mf::ArpSha => (Field::ArpSha, 0),
        Mf::ArpTha => (Field::ArpTha, 0),
        Mf::TunId => (Field::TunId, 0),
        Mf::TunSrc => (Field::TunSrc, 0),
        Mf::TunDst => (Field::TunDst, 0),
        Mf::Metadata => (Field::Metadata, 0),
        Mf::Reg(r) => (Field::Reg(r), 0),
        Mf::TcpFlags => (Field::TcpFlags, 0),
        Mf::CtState => (Field::CtState, 0),
        Mf::CtZone => (Field::CtZone, 0),
        Mf::CtMark => (Field::CtMark, 0),
        Mf::CtLabel => (Field::CtLabel, 0),
        Mf::CtNwProto => (Field::CtNwProto, 0),
        Mf::CtNwSrc => (Field::CtNwSrc, 0),
        Mf::CtNwDst => (Field::CtNwDst, 0),
        Mf::CtTpSrc => (Field::CtTpSrc, 0),
        Mf::CtTpDst => (Field::CtTpDst, 0),
        Mf::Cookie => return None,
    })
}

/// Bits the wire field has.
pub fn n_bits(mf: Mf) -> u32 {
    match mf {
        Mf::VlanVid => 13,
        Mf::VlanPcp => 3,
        Mf::IpDscp => 6,
        Mf::IpEcn => 2,
        Mf::IpFrag => 2,
        Mf::TcpFlags => 12,
        Mf::ArpOp => 16,
        Mf::InPort => 32,
        _ => match key_field(mf) {
            Some((f, _)) => f.bits(),
            None => 64,
        },
    }
}

/// One TLV header, decoded: the field, whether a mask follows, the value
/// length, and bytes consumed for the header (8 for experimenter fields).
pub fn read_header(r: &mut Reader) -> Result<(Mf, bool, usize), OfError> {
    let h = r.u32()?;
    let class = (h >> 16) as u16;
    let field = ((h >> 9) & 0x7f) as u8;
    let masked = h & 0x100 != 0;
    let len = (h & 0xff) as usize;
    let mut payload = len;
    if class == EXP {
        let exp = r.u32()?;
        if exp != ONF_VENDOR {
            return Err(OfError::MatchBadField);
        }
        payload = len.checked_sub(4).ok_or(OfError::MatchBadLen)?;
    }
    let (bytes, maskable, mf) = lookup(class, field).ok_or(OfError::MatchBadField)?;
    let want = bytes as usize * if masked { 2 } else { 1 };
    if payload != want {
        return Err(OfError::MatchBadLen);
    }
    if masked && !maskable {
        return Err(OfError::MatchBadMask);
    }
    Ok((mf, masked, bytes as usize))
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |a, &x| a << 8 | x as u64)
}

/// A field header as NXAST_REG_LOAD/REG_MOVE/learn name it (no
/// experimenter form).
pub fn field_from_header(h: u32) -> Result<Mf, OfError> {
    let class = (h >> 16) as u16;
    let field = ((h >> 9) & 0x7f) as u8;
    lookup(class, field)
        .map(|e| e.2)
        .ok_or(OfError::ActionBadArgument)
}

/// A value of up to 16 bytes whose bits above 63 must be zero (ct_label:
/// rvs keeps 64 bits of it).
fn wide(b: &[u8]) -> Result<u64, OfError> {
    if b.len() > 8 && b[..b.len() - 8].iter().any(|&x| x != 0) {
        return Err(OfError::MatchBadValue);
    }
    Ok(be(b))
}

pub fn header_u32(mf: Mf, oxm: bool) -> u32 {
    let (c, f, l) = header_of(mf, oxm, false);
    hdr(c, f, false, l)
}

/// Decodes a whole NXM/OXM match body. Returns the match and the
/// NXM_NX_COOKIE filter, if one was present.
pub fn decode_match(body: &[u8]) -> Result<(Match, Option<(u64, u64)>), OfError> {
    decode_fields(body, true)
}

/// As `decode_match` without prerequisites (a selection method's field
/// list names fields, not a consistent match).
pub fn decode_match_loose(body: &[u8]) -> Result<(Match, Option<(u64, u64)>), OfError> {
    decode_fields(body, false)
}

fn decode_fields(body: &[u8], prereqs: bool) -> Result<(Match, Option<(u64, u64)>), OfError> {
    let mut r = Reader::new(body, OfError::MatchBadLen);
    let mut m = Match::any();
    let mut cookie = None;
    let mut seen: Vec<Mf> = Vec::new();
    while !r.is_empty() {
        let (mf, masked, n) = read_header(&mut r)?;
        let v = wide(r.bytes(n)?)?;
        let mask = if masked {
            wide(r.bytes(n)?)?
        } else if n >= 8 {
            u64::MAX
        } else {
            u64::MAX >> (64 - 8 * n as u32)
        };
        if prereqs && seen.contains(&mf) {
            return Err(OfError::MatchDupField);
        }
        seen.push(mf);
        apply_field(&mut m, mf, v, mask, &mut cookie)?;
    }
    if prereqs {
        check_prereqs(&m, &seen)?;
    }
    Ok((m, cookie))
}

fn apply_field(
    m: &mut Match,
    mf: Mf,
    v: u64,
    mask: u64,
    cookie: &mut Option<(u64, u64)>,
) -> Result<(), OfError> {
    let v = v & mask;
    match mf {
        Mf::Cookie => *cookie = Some((v, mask)),
        Mf::InPort => {
            let p = if v >= 0xffff_ff00 || (0xff00..=0xffff).contains(&v) {
                match ofpp::from16(v as u16) {
                    ofpp::LOCAL => ofpp::LOCAL_OFPORT as u64,
                    _ => return Err(OfError::MatchBadValue),
                }
            } else {
                v
            };
            m.exact(Field::InPort, p);
        }
        Mf::VlanVid => m.set(Field::VlanTci, v & 0x1fff, mask & 0x1fff),
        Mf::VlanPcp => {
            if v > 7 {
                return Err(OfError::MatchBadValue);
            }
            m.set(Field::VlanTci, (v << 13) | 0x1000, 0xf000)
        }
        Mf::IpTos => m.set(Field::NwTos, v & 0xfc, 0xfc),
        Mf::IpDscp => {
            if v > 63 {
                return Err(OfError::MatchBadValue);
            }
            m.set(Field::NwTos, v << 2, 0xfc)
        }
        Mf::ArpOp => {
            if v > 0xff {
                return Err(OfError::MatchBadValue);
            }
            m.set(Field::NwProto, v, 0xff)
        }
        Mf::IpEcn if v > 3 => return Err(OfError::MatchBadValue),
        Mf::IpFrag => m.set(Field::NwFrag, v & 3, mask & 3),
        Mf::TcpFlags => m.set(Field::TcpFlags, v & 0xfff, mask & 0xfff),
        _ => {
            let (f, _) = key_field(mf).expect("packet field");
            m.set(f, v, mask);
        }
    }
    Ok(())
}

fn check_prereqs(m: &Match, seen: &[Mf]) -> Result<(), OfError> {
    let exact = |f: Field, v: u64| m.field(f) == (v, f.full());
    let ip = exact(Field::DlType, 0x0800);
    let arp = exact(Field::DlType, 0x0806);
    let proto = |p: u64| ip && exact(Field::NwProto, p);
    for mf in seen {
        let ok = match mf {
            Mf::IpTos | Mf::IpDscp | Mf::IpEcn | Mf::IpProto | Mf::IpTtl | Mf::IpFrag => ip,
            Mf::Ipv4Src | Mf::Ipv4Dst => ip,
            Mf::ArpOp | Mf::ArpSpa | Mf::ArpTpa | Mf::ArpSha | Mf::ArpTha => arp,
            Mf::TcpSrc | Mf::TcpDst | Mf::TcpFlags => proto(6),
            Mf::UdpSrc | Mf::UdpDst => proto(17),
            Mf::SctpSrc | Mf::SctpDst => proto(132),
            Mf::IcmpType | Mf::IcmpCode => proto(1),
            _ => true,
        };
        if !ok {
            return Err(OfError::MatchBadPrereq);
        }
    }
    Ok(())
}

/// Writes one TLV (mask omitted when it covers the whole field).
pub fn put_tlv(w: &mut Writer, mf: Mf, oxm: bool, v: u64, mask: u64) {
    let (class, field, n) = header_of(mf, oxm, false);
    let full = if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n as u32)) - 1
    };
    let masked = mask & full != full;
    let exp = class == EXP;
    let len = n * if masked { 2 } else { 1 } + if exp { 4 } else { 0 };
    w.u32(hdr(class, field, masked, len));
    if exp {
        w.u32(ONF_VENDOR);
    }
    let put = |w: &mut Writer, x: u64| {
        if n > 8 {
            w.zeros(n as usize - 8);
            w.bytes(&x.to_be_bytes());
        } else {
            w.bytes(&x.to_be_bytes()[8 - n as usize..]);
        }
    };
    put(w, v & mask);
    if masked {
        put(w, mask);
    }
}

/// Encodes a match as NXM (OpenFlow 1.0 with the Nicira extensions) or
/// OXM (1.3), without padding.
pub fn encode_match(m: &Match, oxm: bool) -> Vec<u8> {
    let mut w = Writer::default();
    let f = |x: Field| m.field(x);
    let (dl_type, _) = f(Field::DlType);
    let is_arp = m.mask.get(Field::DlType) != 0 && dl_type == 0x0806;
    let (proto, _) = f(Field::NwProto);
    let mut put = |mf: Mf, (v, mask): (u64, u64)| {
        // A mask covering the whole key field is exact, however narrow the
        // key field is next to the wire's (arp_op: 8 of 16 bits).
        let exact = key_field(mf).is_some_and(|(f, _)| mask == f.full());
        if mask != 0 {
            put_tlv(&mut w, mf, oxm, v, if exact { u64::MAX } else { mask });
        }
    };
    let (ip, ipm) = f(Field::InPort);
    if ipm != 0 {
        let wire = if oxm && ip == ofpp::LOCAL_OFPORT as u64 {
            ofpp::LOCAL as u64
        } else {
            ip
        };
        put(Mf::InPort, (wire, u64::MAX));
    }
    put(Mf::Metadata, f(Field::Metadata));
    put(Mf::EthDst, f(Field::DlDst));
    put(Mf::EthSrc, f(Field::DlSrc));
    put(Mf::EthType, f(Field::DlType));
    let (tci, tm) = f(Field::VlanTci);
    if tm != 0 {
        let vid_ok = matches!(tm & 0x1fff, 0 | 0x1000 | 0x1fff) || tm & 0x1fff != 0;
        if oxm && vid_ok && (tm & 0xe000 == 0 || tm & 0xe000 == 0xe000) {
            if tm & 0x1fff != 0 {
                put(Mf::VlanVid, (tci & 0x1fff, tm & 0x1fff));
            }
            if tm & 0xe000 == 0xe000 {
                put(Mf::VlanPcp, (tci >> 13, u64::MAX));
            }
        } else {
            put(Mf::VlanTci, (tci, tm));
        }
    }
    let (tos, tosm) = f(Field::NwTos);
    if tosm != 0 {
        if oxm {
            put(Mf::IpDscp, (tos >> 2, u64::MAX));
        } else {
            put(Mf::IpTos, (tos, u64::MAX));
        }
    }
    put(Mf::IpEcn, f(Field::NwEcn));
    put(Mf::IpTtl, f(Field::NwTtl));
    put(
        if is_arp { Mf::ArpOp } else { Mf::IpProto },
        f(Field::NwProto),
    );
    put(Mf::IpFrag, f(Field::NwFrag));
    put(
        if is_arp { Mf::ArpSpa } else { Mf::Ipv4Src },
        f(Field::NwSrc),
    );
    put(
        if is_arp { Mf::ArpTpa } else { Mf::Ipv4Dst },
        f(Field::NwDst),
    );
    let (src_mf, dst_mf) = match proto {
        6 => (Mf::TcpSrc, Mf::TcpDst),
        17 => (Mf::UdpSrc, Mf::UdpDst),
        132 => (Mf::SctpSrc, Mf::SctpDst),
        _ => (Mf::IcmpType, Mf::IcmpCode),
    };
    put(src_mf, f(Field::TpSrc));
    put(dst_mf, f(Field::TpDst));
    put(Mf::TcpFlags, f(Field::TcpFlags));
    put(Mf::ArpSha, f(Field::ArpSha));
    put(Mf::ArpTha, f(Field::ArpTha));
    put(Mf::TunId, f(Field::TunId));
    put(Mf::TunSrc, f(Field::TunSrc));
    put(Mf::TunDst, f(Field::TunDst));
    for r in 0..16 {
        put(Mf::Reg(r), f(Field::Reg(r)));
    }
    put(Mf::CtState, f(Field::CtState));
    put(Mf::CtZone, f(Field::CtZone));
    put(Mf::CtMark, f(Field::CtMark));
    put(Mf::CtLabel, f(Field::CtLabel));
    put(Mf::CtNwProto, f(Field::CtNwProto));
    put(Mf::CtNwSrc, f(Field::CtNwSrc));
    put(Mf::CtNwDst, f(Field::CtNwDst));
    put(Mf::CtTpSrc, f(Field::CtTpSrc));
    put(Mf::CtTpDst, f(Field::CtTpDst));
    w.b
}

/// The wire field that names key field `f` in the context of match `m`
/// (a set_field on tp_dst is tcp_dst or udp_dst by the match's protocol).
pub fn mf_for(f: Field, m: &Match) -> Option<Mf> {
    let arp = m.field(Field::DlType) == (0x0806, 0xffff);
    let proto = m.field(Field::NwProto).0;
    Some(match f {
        Field::InPort => Mf::InPort,
        Field::DlDst => Mf::EthDst,
        Field::DlSrc => Mf::EthSrc,
        Field::DlType => Mf::EthType,
        Field::VlanTci => Mf::VlanTci,
        Field::NwTos => Mf::IpTos,
        Field::NwEcn => Mf::IpEcn,
        Field::NwTtl => Mf::IpTtl,
        Field::NwFrag => Mf::IpFrag,
        Field::NwProto if arp => Mf::ArpOp,
        Field::NwProto => Mf::IpProto,
        Field::NwSrc if arp => Mf::ArpSpa,
        Field::NwSrc => Mf::Ipv4Src,
        Field::NwDst if arp => Mf::ArpTpa,
        Field::NwDst => Mf::Ipv4Dst,
        Field::TpSrc => match proto {
            17 => Mf::UdpSrc,
            132 => Mf::SctpSrc,
            1 => Mf::IcmpType,
            _ => Mf::TcpSrc,
        },
        Field::TpDst => match proto {
            17 => Mf::UdpDst,
            132 => Mf::SctpDst,
            1 => Mf::IcmpCode,
            _ => Mf::TcpDst,
        },
        Field::TcpFlags => Mf::TcpFlags,
        Field::ArpSha => Mf::ArpSha,
        Field::ArpTha => Mf::ArpTha,
        Field::TunId => Mf::TunId,
        Field::TunSrc => Mf::TunSrc,
        Field::TunDst => Mf::TunDst,
        Field::Metadata => Mf::Metadata,
        Field::Reg(r) => Mf::Reg(r),
        Field::CtState => Mf::CtState,
        Field::CtZone => Mf::CtZone,
        Field::CtMark => Mf::CtMark,
        Field::CtLabel => Mf::CtLabel,
        Field::CtNwProto => Mf::CtNwProto,
        Field::CtNwSrc => Mf::CtNwSrc,
        Field::CtNwDst => Mf::CtNwDst,
        Field::CtTpSrc => Mf::CtTpSrc,
        Field::CtTpDst => Mf::CtTpDst,
        // Internal: no OpenFlow field names them.
        Field::RecircTable | Field::VlanTci2 => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_encodings() {
        let mut m = Match::any();
        m.exact(Field::InPort, 3);
        m.exact(Field::DlType, 0x800);
        m.exact(Field::NwProto, 6);
        m.set(Field::NwSrc, 0x0a00_0000, 0xff00_0000);
        m.exact(Field::TpDst, 80);
        m.set(Field::VlanTci, 0x1000 | 10, 0x1fff);
        m.set(Field::Reg(5), 0x10, 0xf0);
        m.exact(Field::TunId, 0x1234);
        for oxm in [false, true] {
            let b = encode_match(&m, oxm);
            let (back, cookie) = decode_match(&b).unwrap();
            assert_eq!(back, m, "oxm={oxm}");
            assert_eq!(cookie, None);
        }
    }

    #[test]
    fn refuses_bad_input() {
        // tcp_dst without ip/tcp.
        let mut w = Writer::default();
        put_tlv(&mut w, Mf::TcpDst, false, 80, u64::MAX);
        assert_eq!(decode_match(&w.b).err(), Some(OfError::MatchBadPrereq));
        // Unknown field.
        assert_eq!(
            decode_match(&[0x00, 0x00, 0x7e, 0x02, 0, 0]).err(),
            Some(OfError::MatchBadField)
        );
        // Truncated value.
        assert_eq!(
            decode_match(&[0x00, 0x00, 0x00, 0x02, 0]).err(),
            Some(OfError::MatchBadLen)
        );
        // Duplicate.
        let mut w = Writer::default();
        put_tlv(&mut w, Mf::EthType, false, 0x800, u64::MAX);
        put_tlv(&mut w, Mf::EthType, false, 0x800, u64::MAX);
        assert_eq!(decode_match(&w.b).err(), Some(OfError::MatchDupField));
    }
}
