//! Encapsulation: a tunnel's outer header is built once per resolved
//! (route, neighbour) and copied in front of each frame, with only the
//! lengths, checksum, key and UDP source port filled per packet.
use super::conf::{TunnelConf, TunnelKind};
use crate::packet::PacketBuf;
use crate::wire::checksum;
use crate::wire::ipv4::{PROTO_GRE, PROTO_UDP};
use crate::wire::{gre, vxlan};

const ETH: usize = 14;
const IP: usize = 20;
const MAX_HEADER: usize = 64;
/// The two headers nearly every tunnel uses, copied as fixed-size blocks:
/// GRE with a key and no checksum, and VXLAN.
const GRE_KEY_LEN: usize = ETH + IP + 8;
const VXLAN_LEN: usize = ETH + IP + 8 + vxlan::HEADER_LEN;
/// OVS's default UDP source port range for tunnels.
const SRC_PORT_MIN: u32 = 32768;
const SRC_PORT_MAX: u32 = 61000;

/// Who the outer header is from and to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: u32,
    pub dst_ip: u32,
}

/// An outer header ready to copy: Ethernet, IPv4, and GRE or UDP+VXLAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    bytes: [u8; MAX_HEADER],
    len: u8,
    kind: TunnelKind,
    gre_csum: bool,
    /// Where the key goes (None: GRE without a key).
    key_at: Option<u8>,
    /// One's-complement sum of the IPv4 header without its total length
    /// and checksum: adding the length gives the checksum.
    ip_sum: u32,
    shape: Shape,
}

/// The headers nearly every tunnel uses, pushed as fixed-size blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// GRE with a key and no checksum (42 bytes).
    GreKey,
    /// VXLAN (50 bytes).
    Vxlan,
    /// Any other: GRE without a key or with a checksum.
    Other,
}

impl Header {
    pub fn new(conf: &TunnelConf, ep: &Endpoints) -> Header {
        let mut b = [0u8; MAX_HEADER];
        b[0..6].copy_from_slice(&ep.dst_mac);
        b[6..12].copy_from_slice(&ep.src_mac);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut b[ETH..ETH + IP];
        ip[0] = 0x45;
        ip[1] = conf.tos;
        if conf.df {
            ip[6] = 0x40;
        }
        ip[8] = conf.ttl;
        ip[9] = match conf.kind {
            TunnelKind::Gre => PROTO_GRE,
            TunnelKind::Vxlan => PROTO_UDP,
        };
        ip[12..16].copy_from_slice(&ep.src_ip.to_be_bytes());
        ip[16..20].copy_from_slice(&ep.dst_ip.to_be_bytes());
        let ip_sum = checksum::sum(ip, 0);
        let l4 = ETH + IP;
        let (len, key_at) = match conf.kind {
            TunnelKind::Gre => {
                let key = conf.out_key.map(|_| 0u32);
                let flags = (if conf.csum { gre::FLAG_CSUM } else { 0 })
                    | (if key.is_some() { gre::FLAG_KEY } else { 0 });
                let gl = gre::header_len(flags);
                gre::emit(&mut b[l4..l4 + gl], key, conf.csum);
                let key_at = key.map(|_| (l4 + if conf.csum { 8 } else { 4 }) as u8);
                (l4 + gl, key_at)
            }
            TunnelKind::Vxlan => {
                b[l4 + 2..l4 + 4].copy_from_slice(&conf.dst_port.to_be_bytes());
                vxlan::emit(&mut b[l4 + 8..l4 + 16], 0);
                (l4 + 8 + vxlan::HEADER_LEN, Some((l4 + 8 + 4) as u8))
            }
        };
        let gre_csum = conf.kind == TunnelKind::Gre && conf.csum;
        let shape = match (conf.kind, len, key_at, gre_csum) {
            (TunnelKind::Gre, GRE_KEY_LEN, Some(38), false) => Shape::GreKey,
            (TunnelKind::Vxlan, VXLAN_LEN, Some(46), _) => Shape::Vxlan,
            _ => Shape::Other,
        };
        Header {
            bytes: b,
            len: len as u8,
            kind: conf.kind,
            gre_csum,
            key_at,
            ip_sum,
            shape,
        }
    }

    /// Bytes the header adds in front of the inner frame.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The outer IPv4 packet's length for an inner frame of `inner` bytes.
    pub fn outer_ip_len(&self, inner: usize) -> usize {
        self.len as usize - ETH + inner
    }

    /// The largest inner IP packet an underlay of `mtu` carries: the
    /// overhead relative to the inner IP packet is the header plus the
    /// inner Ethernet header (42 for GRE with a key, 50 for VXLAN).
    pub fn inner_ip_mtu(&self, mtu: u16) -> u16 {
        mtu.saturating_sub((self.len as usize - ETH + ETH) as u16)
    }

    /// Puts the header in front of `pkt`. False (packet unchanged) without
    /// headroom, or when a GRE checksum is asked for a packet spread over
    /// several buffers.
    pub fn push<P: PacketBuf>(&self, pkt: &mut P, key: u64, flow_hash: u32) -> bool {
        match self.shape {
            Shape::GreKey => self.push_gre_key(pkt, key),
            Shape::Vxlan => self.push_vxlan(pkt, key, flow_hash),
            Shape::Other => {
                let inner = pkt.wire_len();
                self.push_general(pkt, inner, key, flow_hash)
            }
        }
    }

    /// Which of the fixed-size pushes this header takes, so a burst picks
    /// it once.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// `push` for `Shape::GreKey`: the header copied as one fixed-size
    /// block and every field at a constant place (no bounds checks).
    #[inline]
    pub fn push_gre_key<P: PacketBuf>(&self, pkt: &mut P, key: u64) -> bool {
        let Some(d) = self.prepend_block::<P, GRE_KEY_LEN>(pkt) else {
            return false;
        };
        d[38..42].copy_from_slice(&(key as u32).to_be_bytes());
        true
    }

    /// `push` for `Shape::Vxlan`.
    #[inline]
    pub fn push_vxlan<P: PacketBuf>(&self, pkt: &mut P, key: u64, flow_hash: u32) -> bool {
        let inner = pkt.wire_len();
        let Some(d) = self.prepend_block::<P, VXLAN_LEN>(pkt) else {
            return false;
        };
        let l4 = ETH + IP;
        let port = src_port(flow_hash);
        d[l4..l4 + 2].copy_from_slice(&(port as u16).to_be_bytes());
        let udp_len = (VXLAN_LEN - ETH - IP + inner) as u16;
        d[l4 + 4..l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
        d[46..50].copy_from_slice(&(((key as u32) & 0xff_ffff) << 8).to_be_bytes());
        true
    }

    /// Puts the first `N` bytes of the header (all of it) in front of
    /// `pkt` with the IPv4 length and checksum filled; None (packet
    /// unchanged) without headroom or when the outer packet would be too
    /// long.
    #[inline]
    fn prepend_block<'p, P: PacketBuf, const N: usize>(
        &self,
        pkt: &'p mut P,
    ) -> Option<&'p mut [u8; N]> {
        let inner = pkt.wire_len();
        let total = N - ETH + inner;
        if total > u16::MAX as usize || !pkt.prepend(N as u16) {
            return None;
        }
        let d = pkt.data_mut().first_chunk_mut::<N>()?;
        d.copy_from_slice(self.bytes.first_chunk::<N>()?);
        d[ETH + 2..ETH + 4].copy_from_slice(&(total as u16).to_be_bytes());
        let sum = checksum::finish(self.ip_sum + total as u32);
        d[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
        Some(d)
    }

    fn push_general<P: PacketBuf>(
        &self,
        pkt: &mut P,
        inner: usize,
        key: u64,
        flow_hash: u32,
    ) -> bool {
        let hl = self.len as usize;
        let total = hl - ETH + inner;
        if total > u16::MAX as usize
            || (self.gre_csum && inner != pkt.data().len())
            || !pkt.prepend(hl as u16)
        {
            return false;
        }
        let d = pkt.data_mut();
        d[..hl].copy_from_slice(&self.bytes[..hl]);
        d[ETH + 2..ETH + 4].copy_from_slice(&(total as u16).to_be_bytes());
        let sum = checksum::finish(self.ip_sum + total as u32);
        d[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
        let l4 = ETH + IP;
        match self.kind {
            TunnelKind::Vxlan => {
                let port = src_port(flow_hash);
                d[l4..l4 + 2].copy_from_slice(&(port as u16).to_be_bytes());
                d[l4 + 4..l4 + 6].copy_from_slice(&((total - IP) as u16).to_be_bytes());
                if let Some(at) = self.key_at {
                    let at = at as usize;
                    d[at..at + 4].copy_from_slice(&(((key as u32) & 0xff_ffff) << 8).to_be_bytes());
                }
            }
            TunnelKind::Gre => {
                if let Some(at) = self.key_at {
                    let at = at as usize;
                    d[at..at + 4].copy_from_slice(&(key as u32).to_be_bytes());
                }
                if self.gre_csum {
                    let c = checksum::checksum(&d[l4..]);
                    d[l4 + 4..l4 + 6].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
        true
    }
}

/// The UDP source port for a flow's hash: scaled into the range by a
/// multiply, as Linux's udp_flow_src_port and OVS do, not a division (a
/// division per packet costs tens of cycles).
#[inline]
fn src_port(flow_hash: u32) -> u32 {
    SRC_PORT_MIN + ((flow_hash as u64 * (SRC_PORT_MAX - SRC_PORT_MIN) as u64) >> 32) as u32
}

/// A hash of the inner frame's flow (addresses and ports), so one flow
/// keeps one UDP source port and the underlay's ECMP keeps it in order.
/// Word-sized reads and one multiply per word: it runs per packet.
#[inline]
pub fn inner_hash(frame: &[u8]) -> u32 {
    // Most frames hold an option-less IPv4 header and its ports within
    // their first 46 bytes: read at fixed places, without the short-frame
    // checks (half the cost).
    match frame.first_chunk::<46>().and_then(hash_plain) {
        Some(h) => h,
        None => hash_general(frame),
    }
}

/// `inner_hash` of any frame, short ones (read as if zero-padded) and
/// IPv4 headers with options included.
fn hash_general(frame: &[u8]) -> u32 {
    #[inline]
    fn word(b: &[u8], at: usize) -> u64 {
        match b.get(at..at + 8) {
            Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
            None => {
                let mut w = [0u8; 8];
                let end = b.len().max(at);
                w[..end - at].copy_from_slice(&b[at..end]);
                u64::from_le_bytes(w)
            }
        }
    }
    if frame.len() < ETH {
        return 0;
    }
    // Both MACs (12 bytes) and the EtherType.
    let mut h = mix(mix(0, word(frame, 0)), word(frame, 8) & 0xffff_ffff_ffff);
    let l3 = if frame[12] == 0x81 && frame[13] == 0 {
        18
    } else {
        ETH
    };
    if frame.len() >= l3 + IP && frame[l3 - 2] == 0x08 && frame[l3 - 1] == 0 {
        let ip = &frame[l3..];
        // Protocol and both addresses, then the ports.
        h = mix(h, word(ip, 12) ^ ((ip[9] as u64) << 56));
        let ihl = (ip[0] & 0x0f) as usize * 4;
        if (ip[9] == 6 || ip[9] == 17) && ip.len() >= ihl + 4 {
            h = mix(h, word(ip, ihl) & 0xffff_ffff);
        }
    }
    fold(h)
}

#[inline]
fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

#[inline]
fn fold(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// `inner_hash` of a frame whose first 46 bytes are `b`, when every byte
/// it reads is among them (an IPv4 header without options, or no IPv4):
/// the same value the general reading gives.
#[inline]
fn hash_plain(b: &[u8; 46]) -> Option<u32> {
    let word = |at: usize| -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let mut h = mix(mix(0, word(0)), word(8) & 0xffff_ffff_ffff);
    let l3 = if b[12] == 0x81 && b[13] == 0 { 18 } else { ETH };
    if b[l3 - 2] == 0x08 && b[l3 - 1] == 0 {
        if b[l3] & 0x0f != 5 {
            return None;
        }
        let proto = b[l3 + 9];
        h = mix(h, word(l3 + 12) ^ ((proto as u64) << 56));
        if proto == 6 || proto == 17 {
            h = mix(h, word(l3 + IP) & 0xffff_ffff);
        }
    }
    Some(fold(h))
}

/// Turns `pkt`, an IPv4 frame with DF set that does not fit the tunnel,
/// into the ICMP fragmentation-needed message that tells its sender the
/// path MTU (`mtu`, the largest inner IP packet). As Linux does for
/// bridged tunnels, the message comes from the frame's destination (MACs
/// and addresses swapped), so it works without the switch owning an
/// address in the tenant network. False when the frame does not qualify:
/// not IPv4, no DF, a fragment other than the first, or itself an ICMP
/// error.
pub fn frag_needed<P: PacketBuf>(pkt: &mut P, mtu: u16) -> bool {
    let d = pkt.data();
    if d.len() < ETH + IP {
        return false;
    }
    let l3 = match u16::from_be_bytes([d[12], d[13]]) {
        0x0800 => ETH,
        0x8100 if d.len() >= 18 + IP && u16::from_be_bytes([d[16], d[17]]) == 0x0800 => 18,
        _ => return false,
    };
    let ip = &d[l3..];
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if ip[0] >> 4 != 4 || ihl < IP || ip.len() < ihl || frag & 0x4000 == 0 || frag & 0x1fff != 0 {
        return false;
    }
    if ip[9] == 1 && ip.len() > ihl && matches!(ip[ihl], 3 | 4 | 5 | 11 | 12) {
        return false;
    }
    // The quoted part: the original IP header and 8 bytes of payload.
    let quote_len = (ihl + 8).min(ip.len());
    let mut msg = [0u8; 18 + IP + 8 + 60 + 8];
    msg[..l3].copy_from_slice(&d[..l3]);
    msg[0..6].copy_from_slice(&d[6..12]);
    msg[6..12].copy_from_slice(&d[0..6]);
    let (src, dst) = (&ip[16..20], &ip[12..16]);
    let total = IP + 8 + quote_len;
    {
        let o = &mut msg[l3..l3 + IP];
        o[0] = 0x45;
        o[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        o[8] = 64;
        o[9] = 1;
        o[12..16].copy_from_slice(src);
        o[16..20].copy_from_slice(dst);
        let c = checksum::checksum(o);
        o[10..12].copy_from_slice(&c.to_be_bytes());
    }
    {
        let icmp = &mut msg[l3 + IP..l3 + total];
        icmp[0] = 3;
        icmp[1] = 4;
        icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
        icmp[8..8 + quote_len].copy_from_slice(&ip[..quote_len]);
        let c = checksum::checksum(icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
    }
    let new_len = l3 + total;
    let have = pkt.wire_len();
    if have < new_len || !pkt.trim((have - new_len) as u16) {
        return false;
    }
    pkt.data_mut().copy_from_slice(&msg[..new_len]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HeapBuf;
    use crate::tunnel::conf::Param;
    use crate::wire::ipv4::Ipv4Packet;

    #[test]
    fn source_ports_cover_the_range_as_linux_scales_them() {
        assert_eq!(src_port(0), 32768);
        assert_eq!(src_port(u32::MAX), 60999);
        // Linux: (((u64) hash * (max - min)) >> 32) + min.
        assert_eq!(src_port(0x8000_0000), 32768 + (61000 - 32768) / 2);
        assert_eq!(src_port(0x1234_5678), 32768 + 2007);
    }

    fn conf(kind: TunnelKind, key: Option<u64>, csum: bool) -> TunnelConf {
        TunnelConf {
            kind,
            remote: Param::Fixed(0x0a00_0002),
            local: None,
            in_key: Param::Fixed(key.unwrap_or(0)),
            out_key: key.map(Param::Fixed),
            dst_port: if kind == TunnelKind::Vxlan { 4789 } else { 0 },
            csum,
            ttl: 64,
            tos: 0,
            df: true,
        }
    }

    const EP: Endpoints = Endpoints {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_ip: 0x0a00_0001,
        dst_ip: 0x0a00_0002,
    };

    fn inner(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[0..6].copy_from_slice(&[0xaa; 6]);
        f[6..12].copy_from_slice(&[0xbb; 6]);
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        f[20] = 0x40;
        f[22] = 17;
        f
    }

    #[test]
    fn gre_with_key_is_42_bytes_of_overhead_and_checksums_right() {
        let h = Header::new(&conf(TunnelKind::Gre, Some(1001), false), &EP);
        assert_eq!(h.len(), 14 + 20 + 8);
        assert_eq!(h.inner_ip_mtu(1500), 1500 - 42);
        let f = inner(100);
        let mut p = HeapBuf::new(&f);
        assert!(h.push(&mut p, 1001, 7));
        let d = p.data();
        let ip = Ipv4Packet::new_checked(&d[14..]).unwrap();
        assert_eq!(ip.total_len() as usize, 20 + 8 + 100);
        assert!(ip.verify_checksum());
        assert!(ip.dont_frag());
        assert_eq!((ip.ttl(), ip.protocol()), (64, 47));
        let g = gre::GreHeader::new_checked(&d[34..]).unwrap();
        assert_eq!(g.key(), Some(1001));
        assert_eq!(&d[42..], &f[..]);
    }

    #[test]
    fn gre_checksum_and_keyless() {
        let h = Header::new(&conf(TunnelKind::Gre, Some(5), true), &EP);
        let mut p = HeapBuf::new(&inner(61));
        assert!(h.push(&mut p, 5, 0));
        assert_eq!(checksum::checksum(&p.data()[34..]), 0);
        let h = Header::new(&conf(TunnelKind::Gre, None, false), &EP);
        assert_eq!(h.len(), 38);
        let mut p = HeapBuf::new(&inner(60));
        assert!(h.push(&mut p, 99, 0));
        assert_eq!(
            gre::GreHeader::new_checked(&p.data()[34..]).unwrap().key(),
            None
        );
    }

    #[test]
    fn vxlan_is_50_bytes_with_vni_and_flow_port() {
        let h = Header::new(&conf(TunnelKind::Vxlan, Some(0x12_3456), false), &EP);
        assert_eq!(h.inner_ip_mtu(1500), 1450);
        let f = inner(200);
        let (mut a, mut b) = (HeapBuf::new(&f), HeapBuf::new(&f));
        assert!(h.push(&mut a, 0x12_3456, inner_hash(&f)));
        assert!(h.push(&mut b, 0x12_3456, inner_hash(&f)));
        let d = a.data();
        let udp = &d[34..42];
        let sport = u16::from_be_bytes([udp[0], udp[1]]);
        assert!((32768..61000).contains(&sport));
        assert_eq!(&b.data()[34..36], &udp[0..2], "one flow, one source port");
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4789);
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, 8 + 8 + 200);
        assert_eq!(
            &udp[6..8],
            &[0, 0],
            "no UDP checksum, as OVS and Linux send"
        );
        assert_eq!(
            vxlan::VxlanHeader::new_checked(&d[42..]).unwrap().vni(),
            0x12_3456
        );
        assert!(Ipv4Packet::new_checked(&d[14..]).unwrap().verify_checksum());
    }

    #[test]
    fn the_fixed_size_headers_are_the_general_ones() {
        for kind in [TunnelKind::Gre, TunnelKind::Vxlan] {
            let h = Header::new(&conf(kind, Some(0xab_cdef), false), &EP);
            for len in [14, 60, 64, 1514, 9000] {
                let f = inner(len.max(24));
                let (mut a, mut b) = (HeapBuf::new(&f), HeapBuf::new(&f));
                assert!(h.push(&mut a, 0xab_cdef, 12345));
                let n = b.wire_len();
                assert!(h.push_general(&mut b, n, 0xab_cdef, 12345));
                assert_eq!(a.data(), b.data(), "{kind:?} {len}");
            }
        }
    }

    #[test]
    fn the_fixed_place_hash_is_the_general_one() {
        // Untagged and tagged; UDP, TCP, ICMP, IPv6 and ARP; option-less
        // headers (fixed places) and 24-byte ones (general reading).
        let mut seen = 0;
        for seed in 0u64..400 {
            let mut f: Vec<u8> = (0..80u64)
                .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(0x9e37_79b9)) as u8)
                .collect();
            let l3 = if seed % 2 == 0 {
                14
            } else {
                f[12..14].copy_from_slice(&[0x81, 0]);
                18
            };
            let ethertype: [u8; 2] = match seed % 5 {
                0 => [0x86, 0xdd],
                1 => [0x08, 0x06],
                _ => [0x08, 0],
            };
            f[l3 - 2..l3].copy_from_slice(&ethertype);
            f[l3] = if seed % 7 == 0 { 0x46 } else { 0x45 };
            f[l3 + 9] = [17, 6, 1][(seed % 3) as usize];
            let plain = hash_plain(f[..46].try_into().unwrap());
            assert_eq!(
                plain.unwrap_or_else(|| hash_general(&f)),
                hash_general(&f),
                "seed {seed}"
            );
            seen += plain.is_some() as u32;
        }
        assert!(seen > 250, "the fixed places serve most frames ({seen})");
        // Different ports, different hash; same flow, other payload, same.
        let mut f = inner(64);
        f[23] = 17;
        let mut g = f.clone();
        g[35] ^= 1;
        assert_ne!(inner_hash(&f), inner_hash(&g));
        let mut g = f.clone();
        g[50] ^= 1;
        assert_eq!(inner_hash(&f), inner_hash(&g));
    }

    #[test]
    fn frag_needed_quotes_the_header_and_swaps_ends() {
        let mut f = inner(1500);
        f[26..30].copy_from_slice(&[192, 168, 1, 1]);
        f[30..34].copy_from_slice(&[192, 168, 1, 2]);
        let mut p = HeapBuf::new(&f);
        assert!(frag_needed(&mut p, 1458));
        let d = p.data();
        assert_eq!(d.len(), 14 + 20 + 8 + 28);
        assert_eq!(&d[0..6], &[0xbb; 6]);
        let ip = Ipv4Packet::new_checked(&d[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src(), ip.dst()), ([192, 168, 1, 2], [192, 168, 1, 1]));
        let icmp = &d[34..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1458);
        assert_eq!(checksum::checksum(icmp), 0);
        assert_eq!(&icmp[8..36], &f[14..42]);
        // Without DF: not answered.
        let mut g = inner(1500);
        g[20] = 0;
        assert!(!frag_needed(&mut HeapBuf::new(&g), 1458));
    }
}
