//! OpenFlow 1.0's fixed 40-byte match (wildcard bits and CIDR prefix
//! lengths), in both directions.
use super::error::OfError;
use super::wire::{Reader, Writer};
use rvs_dataplane::flow::action::ofpp;
use rvs_dataplane::flow::key::{Field, Match};

pub const MATCH_LEN: usize = 40;

const W_IN_PORT: u32 = 1 << 0;
const W_DL_VLAN: u32 = 1 << 1;
const W_DL_SRC: u32 = 1 << 2;
const W_DL_DST: u32 = 1 << 3;
const W_DL_TYPE: u32 = 1 << 4;
const W_NW_PROTO: u32 = 1 << 5;
const W_TP_SRC: u32 = 1 << 6;
const W_TP_DST: u32 = 1 << 7;
const NW_SRC_SHIFT: u32 = 8;
const NW_DST_SHIFT: u32 = 14;
const W_DL_VLAN_PCP: u32 = 1 << 20;
const W_NW_TOS: u32 = 1 << 21;
/// OFP_VLAN_NONE: matches untagged frames.
const VLAN_NONE: u16 = 0xffff;

fn prefix_mask(wild_bits: u32) -> u64 {
    let n = wild_bits.min(32);
    if n >= 32 {
        0
    } else {
        (0xffff_ffffu64 << n) & 0xffff_ffff
    }
}

pub fn decode(r: &mut Reader) -> Result<Match, OfError> {
    let wc = r.u32()?;
    let in_port = r.u16()?;
    let dl_src = r.bytes(6)?;
    let dl_dst = r.bytes(6)?;
    let dl_vlan = r.u16()?;
    let pcp = r.u8()?;
    r.skip(1)?;
    let dl_type = r.u16()?;
    let tos = r.u8()?;
    let proto = r.u8()?;
    r.skip(2)?;
    let nw_src = r.u32()?;
    let nw_dst = r.u32()?;
    let tp_src = r.u16()?;
    let tp_dst = r.u16()?;
    let mac = |b: &[u8]| b.iter().fold(0u64, |a, &x| a << 8 | x as u64);
    let mut m = Match::any();
    if wc & W_IN_PORT == 0 {
        let p = match ofpp::from16(in_port) {
            ofpp::LOCAL => ofpp::LOCAL_OFPORT,
            p if p >= ofpp::MAX => return Err(OfError::MatchBadValue),
            p => p,
        };
        m.exact(Field::InPort, p as u64);
    }
    if wc & W_DL_SRC == 0 {
        m.exact(Field::DlSrc, mac(dl_src));
    }
    if wc & W_DL_DST == 0 {
        m.exact(Field::DlDst, mac(dl_dst));
    }
    if wc & W_DL_VLAN == 0 {
        if dl_vlan == VLAN_NONE {
            m.set(Field::VlanTci, 0, 0xffff);
        } else {
            m.set(Field::VlanTci, 0x1000 | (dl_vlan as u64 & 0xfff), 0x1fff);
        }
    }
    if wc & W_DL_VLAN_PCP == 0 && !(wc & W_DL_VLAN == 0 && dl_vlan == VLAN_NONE) {
        let (v, mk) = m.field(Field::VlanTci);
        m.set(
            Field::VlanTci,
            v | ((pcp as u64 & 7) << 13) | 0x1000,
            mk | 0xf000,
        );
    }
    if wc & W_DL_TYPE == 0 {
        m.exact(Field::DlType, dl_type as u64);
    }
    let ip = wc & W_DL_TYPE == 0 && dl_type == 0x0800;
    let arp = wc & W_DL_TYPE == 0 && dl_type == 0x0806;
    if ip || arp {
        if wc & W_NW_PROTO == 0 {
            m.exact(Field::NwProto, proto as u64);
        }
        m.set(
            Field::NwSrc,
            nw_src as u64,
            prefix_mask((wc >> NW_SRC_SHIFT) & 0x3f),
        );
        m.set(
            Field::NwDst,
            nw_dst as u64,
            prefix_mask((wc >> NW_DST_SHIFT) & 0x3f),
        );
    }
    if ip {
        if wc & W_NW_TOS == 0 {
            m.set(Field::NwTos, tos as u64 & 0xfc, 0xfc);
        }
        let l4 = wc & W_NW_PROTO == 0 && matches!(proto, 1 | 6 | 17 | 132);
        if l4 {
            if wc & W_TP_SRC == 0 {
                m.exact(Field::TpSrc, tp_src as u64);
            }
            if wc & W_TP_DST == 0 {
                m.exact(Field::TpDst, tp_dst as u64);
            }
        }
    }
    Ok(m)
}

/// Encodes `m` as an OpenFlow 1.0 match; fields it cannot express (masks
/// other than CIDR, registers, tunnels ...) are left wildcarded, as a
/// standard OpenFlow 1.0 controller would see them.
pub fn encode(w: &mut Writer, m: &Match) {
    let mut wc = 0x003f_ffffu32 & !((0x3f << NW_SRC_SHIFT) | (0x3f << NW_DST_SHIFT));
    let f = |x: Field| m.field(x);
    let mut in_port = 0u16;
    if f(Field::InPort).1 != 0 {
        wc &= !W_IN_PORT;
        in_port = f(Field::InPort).0 as u16;
    }
    let mut dl_src = 0u64;
    if f(Field::DlSrc).1 == Field::DlSrc.full() {
        wc &= !W_DL_SRC;
        dl_src = f(Field::DlSrc).0;
    }
    let mut dl_dst = 0u64;
    if f(Field::DlDst).1 == Field::DlDst.full() {
        wc &= !W_DL_DST;
        dl_dst = f(Field::DlDst).0;
    }
    let (tci, tm) = f(Field::VlanTci);
    let (mut dl_vlan, mut pcp) = (0u16, 0u8);
    if tm & 0x1fff == 0x1fff {
        wc &= !W_DL_VLAN;
        dl_vlan = if tci & 0x1000 == 0 {
            VLAN_NONE
        } else {
            (tci & 0xfff) as u16
        };
    }
    if tm & 0xe000 == 0xe000 {
        wc &= !W_DL_VLAN_PCP;
        pcp = (tci >> 13) as u8;
    }
    let mut dl_type = 0u16;
    if f(Field::DlType).1 != 0 {
        wc &= !W_DL_TYPE;
        dl_type = f(Field::DlType).0 as u16;
    }
    let mut tos = 0u8;
    if f(Field::NwTos).1 != 0 {
        wc &= !W_NW_TOS;
        tos = f(Field::NwTos).0 as u8;
    }
    let mut proto = 0u8;
    if f(Field::NwProto).1 != 0 {
        wc &= !W_NW_PROTO;
        proto = f(Field::NwProto).0 as u8;
    }
    let prefix = |mask: u64| 32 - (mask as u32).count_ones().min(32);
    let (src, sm) = f(Field::NwSrc);
    let (dst, dm) = f(Field::NwDst);
    wc |= prefix(sm) << NW_SRC_SHIFT | prefix(dm) << NW_DST_SHIFT;
    let mut tp_src = 0u16;
    if f(Field::TpSrc).1 != 0 {
        wc &= !W_TP_SRC;
        tp_src = f(Field::TpSrc).0 as u16;
    }
    let mut tp_dst = 0u16;
    if f(Field::TpDst).1 != 0 {
        wc &= !W_TP_DST;
        tp_dst = f(Field::TpDst).0 as u16;
    }
    let mac = |v: u64| {
        let b = v.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    };
    w.u32(wc)
        .u16(in_port)
        .bytes(&mac(dl_src))
        .bytes(&mac(dl_dst));
    w.u16(dl_vlan)
        .u8(pcp)
        .u8(0)
        .u16(dl_type)
        .u8(tos)
        .u8(proto)
        .u16(0);
    w.u32(src as u32).u32(dst as u32).u16(tp_src).u16(tp_dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut m = Match::any();
        m.exact(Field::InPort, 2);
        m.exact(Field::DlType, 0x800);
        m.exact(Field::NwProto, 17);
        m.set(Field::NwDst, 0xc0a8_0100, 0xffff_ff00);
        m.exact(Field::TpDst, 53);
        m.set(Field::VlanTci, 0x1000 | 5, 0x1fff);
        let mut w = Writer::default();
        encode(&mut w, &m);
        assert_eq!(w.b.len(), MATCH_LEN);
        let back = decode(&mut Reader::new(&w.b, OfError::BadLen)).unwrap();
        assert_eq!(back, m);
    }
}
