//! Frame -> flow key, as OVS's miniflow_extract does it: fields of layers
//! that are absent or truncated stay zero (the packet still matches rules
//! that do not look at them); only a frame without a whole Ethernet header
//! is refused.
use super::key::{Field, FlowKey, PACKET_WORDS};
use crate::wire::ethernet::{ETHERTYPE_VLAN, HEADER_LEN, VLAN_TAG_LEN};
use crate::wire::ipv4::{Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::{be16, WireError};

pub const ETH_TYPE_IP: u16 = 0x0800;
pub const ETH_TYPE_ARP: u16 = 0x0806;
/// vlan_tci's "a tag is present" bit (the CFI position, as OVS uses it).
pub const VLAN_CFI: u16 = 0x1000;

/// Where the headers after Ethernet start (0 = absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offsets {
    pub l3: u16,
    pub l4: u16,
}

/// Tunnel metadata of a decapsulated frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelMeta {
    pub id: u64,
    pub src: u32,
    pub dst: u32,
}

pub fn extract(
    frame: &[u8],
    in_port: u32,
    tun: Option<&TunnelMeta>,
) -> Result<(FlowKey, Offsets), WireError> {
    let mut k = FlowKey::default();
    let off = extract_into(frame, in_port, tun, &mut k)?;
    Ok((k, off))
}

/// As `extract`, into a key the caller reuses (a returned key is 176
/// bytes to copy per packet). The packet words are overwritten; the rest
/// (metadata, registers) must be zero on entry.
///
/// Always inlined: the key is compared with the run's right after, and
/// called, its words were stored 8 bytes at a time and then loaded 16 at
/// a time, which no store forwards (a third of `process_batch`'s samples
/// with 1 M flows were that stall).
#[inline(always)]
pub fn extract_into(
    frame: &[u8],
    in_port: u32,
    tun: Option<&TunnelMeta>,
    k: &mut FlowKey,
) -> Result<Offsets, WireError> {
    // The packet words are assembled in registers and stored once: a
    // masked read-modify-write of the key per field was a third of the
    // cost of parsing a UDP frame (rvs-ipp).
    let mut w = [0u64; PACKET_WORDS];
    let off = parse(frame, in_port, tun, &mut w)?;
    k.w[..PACKET_WORDS].copy_from_slice(&w);
    Ok(off)
}

/// ORs field `f` (whose value fits its width) into the packet words.
#[inline(always)]
fn put(w: &mut [u64; PACKET_WORDS], f: Field, v: u64) {
    let (i, s, _) = f.place();
    w[i] |= v << s;
}

#[inline(always)]
fn parse(
    frame: &[u8],
    in_port: u32,
    tun: Option<&TunnelMeta>,
    w: &mut [u64; PACKET_WORDS],
) -> Result<Offsets, WireError> {
    let mut off = Offsets::default();
    let Some(eth) = frame.first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Truncated);
    };
    put(w, Field::InPort, in_port as u64);
    if let Some(t) = tun {
        put(w, Field::TunId, t.id);
        put(w, Field::TunSrc, t.src as u64);
        put(w, Field::TunDst, t.dst as u64);
    }
    // Both addresses from two 8-byte loads of the 14-byte header.
    let head = u64::from_be_bytes(*eth.first_chunk::<8>().expect("14 >= 8"));
    let tail = u64::from_be_bytes(*eth[6..].first_chunk::<8>().expect("8 of 8"));
    put(w, Field::DlDst, head >> 16);
    put(w, Field::DlSrc, tail >> 16);
    let mut ethertype = tail as u16;
    let mut l3 = HEADER_LEN;
    if ethertype == ETHERTYPE_VLAN {
        if frame.len() < HEADER_LEN + VLAN_TAG_LEN {
            return Err(WireError::Truncated);
        }
        put(w, Field::VlanTci, (be16(frame, 14) | VLAN_CFI) as u64);
        ethertype = be16(frame, 16);
        l3 += VLAN_TAG_LEN;
        // Two tags are parsed (OVS with vlan-limit=2, which CloudStack's
        // PVLAN scripts set); what lies under a third stays opaque.
        if ethertype == ETHERTYPE_VLAN {
            if frame.len() < HEADER_LEN + 2 * VLAN_TAG_LEN {
                return Err(WireError::Truncated);
            }
            put(w, Field::VlanTci2, (be16(frame, 18) | VLAN_CFI) as u64);
            ethertype = be16(frame, 20);
            l3 += VLAN_TAG_LEN;
        }
    }
    put(w, Field::DlType, ethertype as u64);
    let rest = &frame[l3..];
    match ethertype {
        ETH_TYPE_IP => {
            if Ipv4Packet::new_checked(rest).is_err() {
                return Ok(off);
            }
            // new_checked saw at least 20 bytes, a header length of 20 or
            // more and a total length within `rest`.
            let ip = rest.first_chunk::<20>().expect("checked");
            off.l3 = l3 as u16;
            put(
                w,
                Field::NwSrc,
                u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]) as u64,
            );
            put(
                w,
                Field::NwDst,
                u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]) as u64,
            );
            let proto = ip[9];
            put(w, Field::NwProto, proto as u64);
            put(w, Field::NwTos, (ip[1] & 0xfc) as u64);
            put(w, Field::NwEcn, (ip[1] & 3) as u64);
            put(w, Field::NwTtl, ip[8] as u64);
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            if frag & 0x3fff != 0 {
                let later = frag & 0x1fff != 0;
                put(w, Field::NwFrag, if later { 3 } else { 1 });
                if later {
                    return Ok(off);
                }
            }
            let hl = ((ip[0] & 0x0f) as usize) * 4;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            let l4 = rest.get(hl..total).unwrap_or_default();
            off.l4 = (l3 + hl) as u16;
            match proto {
                PROTO_TCP if l4.len() >= 20 => {
                    put(w, Field::TpSrc, be16(l4, 0) as u64);
                    put(w, Field::TpDst, be16(l4, 2) as u64);
                    put(w, Field::TcpFlags, (be16(l4, 12) & 0x0fff) as u64);
                }
                PROTO_UDP if l4.len() >= 8 => {
                    put(w, Field::TpSrc, be16(l4, 0) as u64);
                    put(w, Field::TpDst, be16(l4, 2) as u64);
                }
                PROTO_ICMP if l4.len() >= 4 => {
                    put(w, Field::TpSrc, l4[0] as u64);
                    put(w, Field::TpDst, l4[1] as u64);
                }
                _ => off.l4 = 0,
            }
        }
        // Ethernet/IPv4 ARP only, as OVS.
        ETH_TYPE_ARP
            if rest.len() >= 28
                && be16(rest, 0) == 1
                && be16(rest, 2) == ETH_TYPE_IP
                && rest[4] == 6
                && rest[5] == 4 =>
        {
            off.l3 = l3 as u16;
            let op = be16(rest, 6);
            if op <= 0xff {
                put(w, Field::NwProto, op as u64);
            }
            put(w, Field::ArpSha, mac48(&rest[8..14]));
            put(
                w,
                Field::NwSrc,
                u32::from_be_bytes([rest[14], rest[15], rest[16], rest[17]]) as u64,
            );
            put(w, Field::ArpTha, mac48(&rest[18..24]));
            put(
                w,
                Field::NwDst,
                u32::from_be_bytes([rest[24], rest[25], rest[26], rest[27]]) as u64,
            );
        }
        _ => {}
    }
    Ok(off)
}

/// Bytes of a frame `SameHeader` compares.
const SAME: usize = 64;

/// The previous frame's header, for recognising a frame of the same flow
/// without parsing it: the bytes its key was extracted from (and the IPv4
/// total and header lengths that bounded what was read), minus those that
/// change from packet to packet of one flow (IPv4 identification and
/// checksum, L4 checksums, TCP sequence numbers and window). A frame equal
/// to it under that mask, of the same length and with the same tunnel
/// fields, has the previous frame's key. Only frames whose parsing read
/// nothing beyond their 64th byte are remembered.
#[derive(Default)]
pub struct SameHeader {
    words: [u64; SAME / 8],
    mask: [u64; SAME / 8],
    len: usize,
    tun: Option<TunnelMeta>,
    valid: bool,
}

impl SameHeader {
    /// Whether `frame` has the remembered frame's key.
    #[inline]
    pub fn matches(&self, frame: &[u8], tun: Option<&TunnelMeta>) -> bool {
        if !self.valid || frame.len() != self.len || tun.copied() != self.tun {
            return false;
        }
        let pad;
        let b = match frame.first_chunk::<SAME>() {
            Some(b) => b,
            None => {
                pad = padded(frame);
                &pad
            }
        };
        let mut diff = 0;
        for (i, c) in b.chunks_exact(8).enumerate() {
            let w = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            diff |= (w ^ self.words[i]) & self.mask[i];
        }
        diff == 0
    }

    /// Whether a frame is remembered.
    #[inline]
    pub fn armed(&self) -> bool {
        self.valid
    }

    /// Forgets the remembered frame.
    #[inline]
    pub fn clear(&mut self) {
        self.valid = false;
    }

    /// Remembers `frame`, whose key was just extracted.
    pub fn remember(&mut self, frame: &[u8], tun: Option<&TunnelMeta>) {
        self.valid = false;
        let b = padded(frame);
        let Some(mask) = key_bytes(&b) else {
            return;
        };
        for (i, (c, m)) in b.chunks_exact(8).zip(mask.chunks_exact(8)).enumerate() {
            self.words[i] = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            self.mask[i] = u64::from_ne_bytes(m.try_into().expect("8 bytes"));
        }
        self.len = frame.len();
        self.tun = tun.copied();
        self.valid = true;
    }
}

/// The first `SAME` bytes of `frame`, zero-filled past its end (frames
/// compared are of one length, so both are filled alike).
#[inline]
fn padded(frame: &[u8]) -> [u8; SAME] {
    let mut b = [0u8; SAME];
    let n = frame.len().min(SAME);
    b[..n].copy_from_slice(&frame[..n]);
    b
}

/// 0xff over the bytes of `b` that `parse` derives the key from, or None
/// when it may read beyond them (IPv4 options, a third tag).
fn key_bytes(b: &[u8; SAME]) -> Option<[u8; SAME]> {
    let mut m = [0u8; SAME];
    let mut l3 = HEADER_LEN;
    let mut ethertype = be16(b, 12);
    for _ in 0..2 {
        if ethertype != ETHERTYPE_VLAN {
            break;
        }
        ethertype = be16(b, l3 + 2);
        l3 += VLAN_TAG_LEN;
    }
    if ethertype == ETHERTYPE_VLAN {
        return None;
    }
    m[..l3].fill(0xff);
    match ethertype {
        ETH_TYPE_IP => {
            let hl = ((b[l3] & 0x0f) as usize) * 4;
            if hl != 20 || l3 + 40 > SAME {
                return None;
            }
            m[l3..l3 + 20].fill(0xff);
            // Identification and checksum.
            m[l3 + 4..l3 + 6].fill(0);
            m[l3 + 10..l3 + 12].fill(0);
            let l4 = l3 + 20;
            let later_fragment = be16(b, l3 + 6) & 0x1fff != 0;
            match b[l3 + 9] {
                _ if later_fragment => {}
                // Ports, and TCP's data offset and flags.
                PROTO_TCP => {
                    m[l4..l4 + 4].fill(0xff);
                    m[l4 + 12..l4 + 14].fill(0xff);
                }
                PROTO_UDP => m[l4..l4 + 4].fill(0xff),
                PROTO_ICMP => m[l4..l4 + 2].fill(0xff),
                _ => {}
            }
        }
        ETH_TYPE_ARP if l3 + 28 <= SAME => m[l3..l3 + 28].fill(0xff),
        ETH_TYPE_ARP => return None,
        _ => {}
    }
    Some(m)
}

#[inline]
pub fn mac48(b: &[u8]) -> u64 {
    ((b[0] as u64) << 40)
        | ((b[1] as u64) << 32)
        | ((b[2] as u64) << 24)
        | ((b[3] as u64) << 16)
        | ((b[4] as u64) << 8)
        | (b[5] as u64)
}

#[inline]
pub fn mac_bytes(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An Ethernet/IPv4/UDP or TCP frame with a valid IP checksum and a
    /// valid L4 checksum.
    pub fn ip_frame(
        vlan: Option<u16>,
        proto: u8,
        src: [u8; 4],
        dst: [u8; 4],
        sp: u16,
        dp: u16,
    ) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        if let Some(t) = vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&t.to_be_bytes());
        }
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let l4len = if proto == PROTO_TCP { 20 } else { 8 } + 4;
        let total = 20 + l4len;
        let mut ip = vec![
            0x45,
            0x10,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            proto,
            0,
            0,
        ];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let c = crate::wire::checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut l4 = vec![0u8; l4len];
        l4[0..2].copy_from_slice(&sp.to_be_bytes());
        l4[2..4].copy_from_slice(&dp.to_be_bytes());
        if proto == PROTO_TCP {
            l4[12] = 0x50;
            l4[13] = 0x02;
        } else {
            l4[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
        }
        l4[l4len - 4..].copy_from_slice(b"data");
        let ps = crate::wire::checksum::pseudo_header(src, dst, proto, l4len as u16);
        let c = crate::wire::checksum::finish(crate::wire::checksum::sum(&l4, ps));
        let at = if proto == PROTO_TCP { 16 } else { 6 };
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }

    #[test]
    fn tcp_over_vlan() {
        let f = ip_frame(
            Some(0x2000 | 10),
            PROTO_TCP,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            1234,
            80,
        );
        let (k, off) = extract(&f, 3, None).unwrap();
        assert_eq!(k.get(Field::InPort), 3);
        assert_eq!(k.get(Field::VlanTci), 0x3000 | 10);
        assert_eq!(k.get(Field::DlType), 0x800);
        assert_eq!(k.get(Field::NwSrc), 0x0a000001);
        assert_eq!(k.get(Field::NwProto), 6);
        assert_eq!(k.get(Field::NwTos), 0x10);
        assert_eq!(k.get(Field::NwTtl), 64);
        assert_eq!(k.get(Field::TpSrc), 1234);
        assert_eq!(k.get(Field::TpDst), 80);
        assert_eq!(k.get(Field::TcpFlags), 2);
        assert_eq!(k.get(Field::DlSrc), 0x0200_0000_0001);
        assert_eq!(off, Offsets { l3: 18, l4: 38 });
    }

    /// Frames SameHeader must judge: UDP, TCP under one and two tags,
    /// ICMP, a later fragment, ARP, and a 64-byte UDP frame.
    fn same_header_frames() -> Vec<Vec<u8>> {
        let udp = ip_frame(None, PROTO_UDP, [10, 0, 0, 1], [10, 0, 0, 2], 5000, 53);
        let tcp = ip_frame(Some(10), PROTO_TCP, [10, 0, 0, 1], [10, 0, 0, 2], 1234, 80);
        let mut qinq = ip_frame(Some(20), PROTO_TCP, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2);
        qinq.splice(12..12, [0x81, 0, 0, 30]);
        let mut icmp = udp.clone();
        icmp[23] = PROTO_ICMP;
        icmp[34..36].copy_from_slice(&[8, 0]);
        let mut frag = udp.clone();
        frag[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        arp.resize(60, 0);
        let mut udp64 = udp.clone();
        udp64.resize(64, 0xaa);
        vec![udp, tcp, qinq, icmp, frag, arp, udp64]
    }

    #[test]
    fn same_header_never_vouches_for_another_key() {
        for base in same_header_frames() {
            let (k0, _) = extract(&base, 1, None).unwrap();
            let mut same = SameHeader::default();
            same.remember(&base, None);
            assert!(same.matches(&base, None), "{base:02x?}");
            for at in 0..base.len() {
                for v in [0, 0xff, base[at] ^ 1, base[at] ^ 0x80, base[at] ^ 0x10] {
                    let mut f = base.clone();
                    f[at] = v;
                    if same.matches(&f, None) {
                        let k = extract(&f, 1, None).map(|r| r.0).ok();
                        assert_eq!(k, Some(k0), "byte {at} set to {v:#x} in {base:02x?}");
                    }
                }
            }
            let mut longer = base.clone();
            longer.push(0);
            assert!(!same.matches(&longer, None), "another length");
            let t = TunnelMeta {
                id: 1,
                src: 2,
                dst: 3,
            };
            assert!(!same.matches(&base, Some(&t)), "other tunnel fields");
        }
    }

    #[test]
    fn same_header_passes_over_what_changes_within_a_flow() {
        let frames = same_header_frames();
        // UDP: IP identification and checksum, UDP checksum, payload.
        let mut same = SameHeader::default();
        same.remember(&frames[0], None);
        let mut f = frames[0].clone();
        for at in [18, 19, 24, 25, 40, 41, 42, 45] {
            f[at] ^= 0x5a;
        }
        assert!(same.matches(&f, None));
        // TCP under a tag: sequence and acknowledgement numbers, window,
        // checksum, urgent pointer.
        same.remember(&frames[1], None);
        let mut f = frames[1].clone();
        for at in (42..50).chain(52..58) {
            f[at] ^= 0x5a;
        }
        assert!(same.matches(&f, None));
        // Flags are the key's.
        f[51] ^= 0x10;
        assert!(!same.matches(&f, None));
    }

    #[test]
    fn same_header_forgets_what_it_cannot_vouch_for() {
        let mut same = SameHeader::default();
        let mut opts = same_header_frames()[0].clone();
        opts[14] = 0x46;
        opts.splice(34..34, [1, 1, 1, 1]);
        same.remember(&opts, None);
        assert!(!same.matches(&opts, None), "IPv4 options: parsed each time");
        let mut three = same_header_frames()[2].clone();
        three.splice(12..12, [0x81, 0, 0, 40]);
        same.remember(&three, None);
        assert!(!same.matches(&three, None), "a third tag");
        same.remember(&same_header_frames()[0], None);
        same.clear();
        assert!(!same.matches(&same_header_frames()[0], None));
    }

    #[test]
    fn truncated_layers_stay_zero() {
        let f = ip_frame(None, PROTO_UDP, [1, 2, 3, 4], [5, 6, 7, 8], 5, 6);
        let (k, off) = extract(&f[..30], 1, None).unwrap();
        assert_eq!(k.get(Field::DlType), 0x800);
        assert_eq!(k.get(Field::NwSrc), 0);
        assert_eq!(off.l3, 0);
        assert!(extract(&f[..10], 1, None).is_err());
    }
}
