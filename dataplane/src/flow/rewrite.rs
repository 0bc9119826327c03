//! Header rewrites on a packet, with the IPv4 header checksum and the
//! TCP/UDP checksum updated incrementally (RFC 1624); a UDP checksum of zero
//! ("none") stays zero.
use super::xlate::DpOp;
use crate::packet::PacketBuf;
use crate::vlan::{pop_vlan, push_vlan};
use crate::wire::be16;
use crate::wire::checksum::{update16, update32};
use crate::wire::ethernet::{ETHERTYPE_VLAN, HEADER_LEN, VLAN_TAG_LEN};

/// Where IPv4 and its payload start in `d`, when the frame is IPv4 and
/// both are there (a later fragment has no L4 header).
fn ip_offsets(d: &[u8]) -> Option<(usize, Option<usize>)> {
    if d.len() < HEADER_LEN {
        return None;
    }
    let (l3, et) = if be16(d, 12) == ETHERTYPE_VLAN {
        (HEADER_LEN + VLAN_TAG_LEN, be16(d, 16))
    } else {
        (HEADER_LEN, be16(d, 12))
    };
    if et != 0x0800 || d.len() < l3 + 20 || d[l3] >> 4 != 4 {
        return None;
    }
    let ihl = (d[l3] & 0xf) as usize * 4;
    let frag_later = be16(d, l3 + 6) & 0x1fff != 0;
    let l4 = l3 + ihl;
    Some((l3, (!frag_later && d.len() >= l4 + 8).then_some(l4)))
}

/// The offset of the L4 checksum for TCP/UDP, None for other protocols or a
/// UDP datagram without checksum.
fn l4_csum_at(d: &[u8], l3: usize, l4: usize) -> Option<usize> {
    match d[l3 + 9] {
        6 if d.len() >= l4 + 18 => Some(l4 + 16),
        17 if be16(d, l4 + 6) != 0 => Some(l4 + 6),
        _ => None,
    }
}

fn put16(d: &mut [u8], at: usize, v: u16) {
    d[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn set_addr(d: &mut [u8], src: bool, a: u32) {
    let Some((l3, l4)) = ip_offsets(d) else {
        return;
    };
    let at = l3 + if src { 12 } else { 16 };
    let old = u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
    if old == a {
        return;
    }
    d[at..at + 4].copy_from_slice(&a.to_be_bytes());
    let c = update32(be16(d, l3 + 10), old, a);
    put16(d, l3 + 10, c);
    // The pseudo-header covers the addresses.
    if let Some(l4) = l4 {
        if let Some(cs) = l4_csum_at(d, l3, l4) {
            let mut c = update32(be16(d, cs), old, a);
            if d[l3 + 9] == 17 && c == 0 {
                c = 0xffff;
            }
            put16(d, cs, c);
        }
    }
}

fn set_port(d: &mut [u8], src: bool, p: u16) {
    let Some((l3, Some(l4))) = ip_offsets(d) else {
        return;
    };
    if !matches!(d[l3 + 9], 6 | 17) {
        return;
    }
    let at = l4 + if src { 0 } else { 2 };
    let old = be16(d, at);
    put16(d, at, p);
    if let Some(cs) = l4_csum_at(d, l3, l4) {
        let mut c = update16(be16(d, cs), old, p);
        if d[l3 + 9] == 17 && c == 0 {
            c = 0xffff;
        }
        put16(d, cs, c);
    }
}

/// Rewrites one byte of the IPv4 header under `mask`.
fn set_ip_byte(d: &mut [u8], ofs: usize, v: u8, mask: u8) {
    let Some((l3, _)) = ip_offsets(d) else {
        return;
    };
    let at = l3 + ofs;
    let word = l3 + (ofs & !1);
    let old = be16(d, word);
    d[at] = (d[at] & !mask) | (v & mask);
    let new = be16(d, word);
    let c = update16(be16(d, l3 + 10), old, new);
    put16(d, l3 + 10, c);
}

/// Applies a rewrite op; false when the packet could not take it (no
/// headroom for a tag). Non-rewrite ops are ignored.
pub fn apply<P: PacketBuf>(pkt: &mut P, op: &DpOp) -> bool {
    match *op {
        DpOp::SetDlSrc(m) => {
            if let Some(d) = pkt.data_mut().get_mut(6..12) {
                d.copy_from_slice(&super::extract::mac_bytes(m));
            }
        }
        DpOp::SetDlDst(m) => {
            if let Some(d) = pkt.data_mut().get_mut(0..6) {
                d.copy_from_slice(&super::extract::mac_bytes(m));
            }
        }
        DpOp::PushVlan(tci) => return push_vlan(pkt, tci),
        DpOp::PopVlan
            if pkt.data().len() >= HEADER_LEN + VLAN_TAG_LEN
                && be16(pkt.data(), 12) == ETHERTYPE_VLAN =>
        {
            return pop_vlan(pkt);
        }
        DpOp::SetVlan(tci) => {
            let d = pkt.data_mut();
            if d.len() >= HEADER_LEN + VLAN_TAG_LEN && be16(d, 12) == ETHERTYPE_VLAN {
                put16(d, 14, tci);
            }
        }
        DpOp::SetNwSrc(a) => set_addr(pkt.data_mut(), true, a),
        DpOp::SetNwDst(a) => set_addr(pkt.data_mut(), false, a),
        DpOp::SetNwTos(t) => set_ip_byte(pkt.data_mut(), 1, t, 0xfc),
        DpOp::SetNwEcn(e) => set_ip_byte(pkt.data_mut(), 1, e, 0x03),
        DpOp::SetNwTtl(t) => set_ip_byte(pkt.data_mut(), 8, t, 0xff),
        DpOp::SetTpSrc(p) => set_port(pkt.data_mut(), true, p),
        DpOp::SetTpDst(p) => set_port(pkt.data_mut(), false, p),
        DpOp::SetArp(a) => set_arp(pkt.data_mut(), &a),
        _ => {}
    }
    true
}

/// Writes an ARP packet's opcode and addresses (Ethernet/IPv4 ARP after
/// an optional 802.1Q tag); anything else is left alone.
fn set_arp(d: &mut [u8], a: &super::xlate::ArpFields) {
    let l3 = match be16(d, 12) {
        0x0806 => HEADER_LEN,
        ETHERTYPE_VLAN if d.len() >= 18 && be16(d, 16) == 0x0806 => HEADER_LEN + VLAN_TAG_LEN,
        _ => return,
    };
    let Some(arp) = d.get_mut(l3..l3 + 28) else {
        return;
    };
    if arp[0..6] != [0, 1, 8, 0, 6, 4] {
        return;
    }
    arp[6..8].copy_from_slice(&a.op.to_be_bytes());
    arp[8..14].copy_from_slice(&super::extract::mac_bytes(a.sha));
    arp[14..18].copy_from_slice(&a.spa.to_be_bytes());
    arp[18..24].copy_from_slice(&super::extract::mac_bytes(a.tha));
    arp[24..28].copy_from_slice(&a.tpa.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::extract::tests::ip_frame;
    use crate::packet::HeapBuf;
    use crate::wire::checksum::{checksum, finish, pseudo_header, sum};

    fn checksums_ok(d: &[u8], l3: usize) -> bool {
        let ihl = (d[l3] & 0xf) as usize * 4;
        let total = be16(d, l3 + 2) as usize;
        let ip_ok = checksum(&d[l3..l3 + ihl]) == 0;
        let src = [d[l3 + 12], d[l3 + 13], d[l3 + 14], d[l3 + 15]];
        let dst = [d[l3 + 16], d[l3 + 17], d[l3 + 18], d[l3 + 19]];
        let l4 = &d[l3 + ihl..l3 + total];
        let ps = pseudo_header(src, dst, d[l3 + 9], l4.len() as u16);
        ip_ok && finish(sum(l4, ps)) == 0
    }

    #[test]
    fn nat_rewrites_keep_checksums() {
        for proto in [6u8, 17] {
            let f = ip_frame(None, proto, [10, 0, 0, 1], [192, 168, 1, 9], 1234, 80);
            let mut p = HeapBuf::new(&f);
            for op in [
                DpOp::SetNwSrc(0xc633_6401),
                DpOp::SetNwDst(0x0a00_0063),
                DpOp::SetTpSrc(40000),
                DpOp::SetTpDst(8080),
                DpOp::SetNwTtl(7),
                DpOp::SetNwTos(0xb8),
            ] {
                assert!(apply(&mut p, &op));
                assert!(checksums_ok(p.data(), 14), "{op:?} proto {proto}");
            }
            let d = p.data();
            assert_eq!(&d[26..34], &[198, 51, 100, 1, 10, 0, 0, 99]);
            assert_eq!(be16(d, 34), 40000);
            assert_eq!(be16(d, 36), 8080);
            assert_eq!(d[22], 7);
            assert_eq!(d[15], 0xb8);
        }
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut f = ip_frame(None, 17, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2);
        f[40] = 0;
        f[41] = 0;
        let mut p = HeapBuf::new(&f);
        apply(&mut p, &DpOp::SetNwSrc(0x0a00_0005));
        apply(&mut p, &DpOp::SetTpDst(99));
        assert_eq!(be16(p.data(), 40), 0);
    }

    #[test]
    fn vlan_ops() {
        let f = ip_frame(None, 17, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2);
        let mut p = HeapBuf::new(&f);
        assert!(apply(&mut p, &DpOp::PushVlan(100)));
        assert_eq!(be16(p.data(), 14), 100);
        assert!(apply(&mut p, &DpOp::SetVlan(0x2000 | 7)));
        assert_eq!(be16(p.data(), 14), 0x2007);
        apply(&mut p, &DpOp::SetNwSrc(0x0a00_0009));
        assert!(checksums_ok(p.data(), 18));
        assert!(apply(&mut p, &DpOp::PopVlan));
        assert_eq!(p.data().len(), f.len());
        assert!(
            apply(&mut p, &DpOp::PopVlan),
            "popping an untagged frame is a no-op"
        );
        assert_eq!(p.data().len(), f.len());
    }
}
