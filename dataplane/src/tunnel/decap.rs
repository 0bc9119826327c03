//! Decapsulation: which frames reaching a tunnel endpoint's internal port
//! are tunnel traffic for this switch, what their outer headers say, and
//! which tunnel port (and so which tenant bridge) receives them.
use super::conf::{Param, TunnelKind};
use crate::stats::DropReason;
use crate::wire::gre::{GreHeader, PROTO_TEB};
use crate::wire::ipv4::{Ipv4Packet, PROTO_GRE, PROTO_UDP};
use crate::wire::l4::UdpDatagram;
use crate::wire::vxlan::VxlanHeader;
use crate::wire::{checksum, WireError};

/// A tunnel packet's outer headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    pub kind: TunnelKind,
    /// UDP destination port (VXLAN), 0 for GRE.
    pub port: u16,
    pub src: u32,
    pub dst: u32,
    /// GRE key (absent: 0) or VNI.
    pub key: u64,
    /// Bytes before the inner frame.
    pub strip: usize,
    /// Bytes after it (Ethernet padding of a short outer frame).
    pub trim: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not tunnel traffic for us: deliver it as usual.
    Other,
    Tunnel(Outer),
    Drop(DropReason),
}

/// Which tunnel types and ports an endpoint terminates.
pub trait Terminates {
    fn is_local(&self, ip: u32) -> bool;
    fn gre(&self) -> bool;
    fn udp_port(&self, port: u16) -> bool;
}

/// Classifies a frame leaving through an endpoint's internal port.
pub fn classify(frame: &[u8], t: &impl Terminates) -> Verdict {
    if frame.len() < 14 {
        return Verdict::Other;
    }
    let (ty, l3) = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x8100 if frame.len() >= 18 => (u16::from_be_bytes([frame[16], frame[17]]), 18),
        t => (t, 14),
    };
    if ty != 0x0800 {
        return Verdict::Other;
    }
    let Ok(ip) = Ipv4Packet::new_checked(&frame[l3..]) else {
        return Verdict::Other;
    };
    let dst = u32::from_be_bytes(ip.dst());
    let proto = ip.protocol();
    if !t.is_local(dst) || !(proto == PROTO_GRE || proto == PROTO_UDP) {
        return Verdict::Other;
    }
    let ihl = ip.header_len();
    let total = ip.total_len() as usize;
    let payload = &frame[l3 + ihl..l3 + total];
    let src = u32::from_be_bytes(ip.src());
    let trim = frame.len() - (l3 + total);
    let outer = |kind, port, key, hdr: usize| Outer {
        kind,
        port,
        src,
        dst,
        key,
        strip: l3 + ihl + hdr,
        trim,
    };
    let vetted = || {
        if ip.is_fragment() {
            return Err(DropReason::TunnelMalformed);
        }
        if !ip.verify_checksum() {
            return Err(DropReason::TunnelBadChecksum);
        }
        Ok(())
    };
    let v = match proto {
        PROTO_GRE if t.gre() => {
            if let Err(r) = vetted() {
                return Verdict::Drop(r);
            }
            let g = match GreHeader::new_checked(payload) {
                Ok(g) => g,
                Err(WireError::Malformed) => return Verdict::Drop(DropReason::TunnelBadFlags),
                Err(WireError::Truncated) => return Verdict::Drop(DropReason::TunnelMalformed),
            };
            if g.protocol() != PROTO_TEB {
                return Verdict::Drop(DropReason::TunnelMalformed);
            }
            if g.has_csum() && checksum::checksum(payload) != 0 {
                return Verdict::Drop(DropReason::TunnelBadChecksum);
            }
            outer(
                TunnelKind::Gre,
                0,
                g.key().unwrap_or(0) as u64,
                g.header_len(),
            )
        }
        PROTO_UDP => {
            let Some(dport) = payload.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
                return Verdict::Other;
            };
            if !t.udp_port(dport) {
                return Verdict::Other;
            }
            if let Err(r) = vetted() {
                return Verdict::Drop(r);
            }
            let Ok(udp) = UdpDatagram::new_checked(payload) else {
                return Verdict::Drop(DropReason::TunnelMalformed);
            };
            let ulen = udp.len() as usize;
            if udp.checksum() != 0 {
                let ph = checksum::pseudo_header(ip.src(), ip.dst(), PROTO_UDP, ulen as u16);
                if checksum::finish(checksum::sum(&payload[..ulen], ph)) != 0 {
                    return Verdict::Drop(DropReason::TunnelBadChecksum);
                }
            }
            let vx = match VxlanHeader::new_checked(&payload[8..ulen]) {
                Ok(v) => v,
                Err(WireError::Malformed) => return Verdict::Drop(DropReason::TunnelBadFlags),
                Err(WireError::Truncated) => return Verdict::Drop(DropReason::TunnelMalformed),
            };
            let mut o = outer(TunnelKind::Vxlan, dport, vx.vni() as u64, 16);
            // A UDP length short of the IP payload leaves bytes to trim.
            o.trim += payload.len() - ulen;
            o
        }
        _ => return Verdict::Other,
    };
    if frame.len() < v.strip + v.trim + 14 {
        return Verdict::Drop(DropReason::TunnelMalformed);
    }
    Verdict::Tunnel(v)
}

/// Bytes of an outer header `SameOuter` compares.
const SAME: usize = 64;

/// The last tunnel frame's outer header, so that the next frames of the
/// same tunnel in a burst are recognised by comparing bytes instead of
/// classified again. Compared: everything `classify` decided on (addresses,
/// tag, protocol, fragment bits, header lengths, GRE flags and key, UDP
/// destination port, VXLAN flags and VNI). Not compared, and checked per
/// frame instead: the IPv4 identification, total length and checksum
/// (verified), the UDP source port, length and checksum (which must be
/// zero). Frames with a GRE checksum or a nonzero UDP checksum are always
/// classified.
#[derive(Default)]
pub struct SameOuter {
    words: [u64; SAME / 8],
    mask: [u64; SAME / 8],
    outer: Option<Outer>,
    /// Where the IPv4 header starts and its length.
    l3: usize,
    ihl: usize,
    /// What `mask` was built for (kind, l3, ihl, strip): a frame of the
    /// same shape is remembered by copying its bytes alone.
    shape: Option<(TunnelKind, usize, usize, usize)>,
}

impl SameOuter {
    /// The remembered frame's verdict for `frame`, when it has the same
    /// outer header and its own fields check out.
    #[inline]
    pub fn matches(&self, frame: &[u8]) -> Option<Outer> {
        let o = self.outer?;
        let b = frame.first_chunk::<SAME>()?;
        let mut diff = 0;
        for (i, c) in b.chunks_exact(8).enumerate() {
            let w = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            diff |= (w ^ self.words[i]) & self.mask[i];
        }
        if diff != 0 {
            return None;
        }
        let (l3, ihl) = (self.l3, self.ihl);
        let total = u16::from_be_bytes([b[l3 + 2], b[l3 + 3]]) as usize;
        if total < ihl || l3 + total > frame.len() {
            return None;
        }
        if checksum::checksum(&frame[l3..l3 + ihl]) != 0 {
            return None;
        }
        // The IP payload must hold the tunnel header; VXLAN's UDP length
        // bounds what is stripped, and its checksum must be absent.
        let mut end = l3 + total;
        if o.kind == TunnelKind::Vxlan {
            let l4 = l3 + ihl;
            let ulen = u16::from_be_bytes([b[l4 + 4], b[l4 + 5]]) as usize;
            if b[l4 + 6..l4 + 8] != [0, 0] || ulen < 16 || ulen > total - ihl {
                return None;
            }
            end = l4 + ulen;
        }
        if end < o.strip || frame.len() < o.strip + (frame.len() - end) + 14 {
            return None;
        }
        Some(Outer {
            trim: frame.len() - end,
            ..o
        })
    }

    /// Remembers `frame`, which `classify` found to be `o`.
    pub fn remember(&mut self, frame: &[u8], o: &Outer) {
        self.outer = None;
        let Some(b) = frame.first_chunk::<SAME>() else {
            return;
        };
        if o.strip > SAME {
            return;
        }
        let l3 = if b[12..14] == [0x81, 0] { 18 } else { 14 };
        let ihl = ((b[l3] & 0x0f) as usize) * 4;
        let l4 = l3 + ihl;
        match o.kind {
            TunnelKind::Gre if GreHeader::new_checked(&b[l4..]).is_ok_and(|g| g.has_csum()) => {
                return
            }
            TunnelKind::Vxlan if b[l4 + 6..l4 + 8] != [0, 0] => return,
            _ => {}
        }
        let shape = (o.kind, l3, ihl, o.strip);
        if self.shape != Some(shape) {
            let mut m = [0u8; SAME];
            m[..o.strip].fill(0xff);
            for r in [l3 + 2..l3 + 6, l3 + 10..l3 + 12] {
                m[r].fill(0);
            }
            if o.kind == TunnelKind::Vxlan {
                m[l4..l4 + 2].fill(0);
                m[l4 + 4..l4 + 8].fill(0);
            }
            for (i, k) in m.chunks_exact(8).enumerate() {
                self.mask[i] = u64::from_ne_bytes(k.try_into().expect("8 bytes"));
            }
            self.shape = Some(shape);
        }
        for (i, c) in b.chunks_exact(8).enumerate() {
            self.words[i] = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
        }
        (self.l3, self.ihl, self.outer) = (l3, ihl, Some(*o));
    }
}

/// What a tunnel port receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxPort {
    pub slot: u16,
    pub kind: TunnelKind,
    pub port: u16,
    pub in_key: Param<u64>,
    pub remote: Param<u32>,
    pub local: Option<Param<u32>>,
}

/// Tunnel ports by what identifies them on receipt, most specific first
/// as OVS's tnl_port_receive does: key and remote, key alone (remote_ip
/// flow), remote alone (key flow), neither.
#[derive(Debug, Default, Clone)]
pub struct RxMap {
    map: hashbrown::HashMap<(u16, Option<u64>, Option<u32>), Vec<RxPort>>,
}

impl RxMap {
    pub fn insert(&mut self, p: RxPort) {
        let key = match p.in_key {
            Param::Fixed(k) => Some(k),
            Param::Flow => None,
        };
        let remote = match p.remote {
            Param::Fixed(r) => Some(r),
            Param::Flow => None,
        };
        self.map
            .entry((tag(p.kind, p.port), key, remote))
            .or_default()
            .push(p);
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The tunnel port receiving `o`.
    pub fn lookup(&self, o: &Outer) -> Option<u16> {
        let t = tag(o.kind, o.port);
        for k in [
            (t, Some(o.key), Some(o.src)),
            (t, Some(o.key), None),
            (t, None, Some(o.src)),
            (t, None, None),
        ] {
            if let Some(ps) = self.map.get(&k) {
                // A port bound to a local address wins over one that is not.
                let hit = ps
                    .iter()
                    .find(|p| p.local == Some(Param::Fixed(o.dst)))
                    .or_else(|| {
                        ps.iter()
                            .find(|p| !matches!(p.local, Some(Param::Fixed(_))))
                    });
                if let Some(p) = hit {
                    return Some(p.slot);
                }
            }
        }
        None
    }
}

fn tag(kind: TunnelKind, port: u16) -> u16 {
    match kind {
        TunnelKind::Gre => 0,
        TunnelKind::Vxlan => port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{HeapBuf, PacketBuf};
    use crate::tunnel::conf::TunnelConf;
    use crate::tunnel::encap::{Endpoints, Header};

    struct Ep;
    impl Terminates for Ep {
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

    fn encap(kind: &str, key: &str, csum: bool, inner_len: usize) -> Vec<u8> {
        let mut o: std::collections::BTreeMap<String, String> = [
            ("remote_ip".into(), "10.0.0.2".into()),
            ("key".into(), key.into()),
        ]
        .into();
        if csum {
            o.insert("csum".into(), "true".into());
        }
        let c = TunnelConf::from_options(kind, &o).unwrap();
        let h = Header::new(
            &c,
            &Endpoints {
                src_mac: [2; 6],
                dst_mac: [4; 6],
                src_ip: 0x0a00_0001,
                dst_ip: 0x0a00_0002,
            },
        );
        let mut f = vec![0x11u8; inner_len];
        f[12] = 0x88;
        let mut p = HeapBuf::new(&f);
        assert!(h.push(&mut p, key.parse().unwrap(), 3));
        p.data().to_vec()
    }

    /// Sets the IPv4 header checksum of a frame (untagged or one tag).
    fn fix_ip(f: &mut [u8]) {
        let l3 = if f[12..14] == [0x81, 0] { 18 } else { 14 };
        f[l3 + 10..l3 + 12].fill(0);
        let c = checksum::checksum(&f[l3..l3 + 20]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }

    /// Outer frames SameOuter must judge: GRE with a key, VXLAN, VXLAN
    /// under a tag, and GRE padded past its IP length.
    fn outer_frames() -> Vec<Vec<u8>> {
        let mut tagged = encap("vxlan", "77", false, 60);
        tagged.splice(12..12, [0x81, 0, 0, 5]);
        let mut padded = encap("gre", "77", false, 60);
        padded.extend_from_slice(&[0; 6]);
        vec![
            encap("gre", "77", false, 60),
            encap("vxlan", "9", false, 80),
            tagged,
            padded,
        ]
    }

    #[test]
    fn same_outer_never_vouches_for_another_verdict() {
        for base in outer_frames() {
            let Verdict::Tunnel(o) = classify(&base, &Ep) else {
                panic!("{base:02x?} is tunnel traffic");
            };
            let mut same = SameOuter::default();
            same.remember(&base, &o);
            assert_eq!(same.matches(&base), Some(o));
            for at in 0..base.len() {
                for v in [0, 0xff, base[at] ^ 1, base[at] ^ 0x80, base[at] ^ 0x08] {
                    for fix in [false, true] {
                        let mut f = base.clone();
                        f[at] = v;
                        if fix {
                            fix_ip(&mut f);
                        }
                        if let Some(got) = same.matches(&f) {
                            assert_eq!(
                                classify(&f, &Ep),
                                Verdict::Tunnel(got),
                                "byte {at} = {v:#x} (checksum fixed: {fix}) in {base:02x?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn same_outer_passes_over_what_changes_per_frame() {
        let frames = outer_frames();
        let Verdict::Tunnel(o) = classify(&frames[1], &Ep) else {
            panic!("vxlan");
        };
        let mut same = SameOuter::default();
        same.remember(&frames[1], &o);
        // Another flow's source port, another IP ID, a longer inner frame.
        let mut f = encap("vxlan", "9", false, 120);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
        fix_ip(&mut f);
        let got = same.matches(&f).expect("same tunnel");
        assert_eq!(classify(&f, &Ep), Verdict::Tunnel(got));
        // A bad IPv4 checksum or a UDP checksum is classified, not vouched for.
        let mut bad = f.clone();
        bad[24] ^= 1;
        assert_eq!(same.matches(&bad), None);
        let mut csum = f.clone();
        csum[40] = 1;
        assert_eq!(same.matches(&csum), None);
        // A GRE checksum is never remembered.
        let g = encap("gre", "77", true, 60);
        let Verdict::Tunnel(go) = classify(&g, &Ep) else {
            panic!("gre");
        };
        same.remember(&g, &go);
        assert_eq!(same.matches(&g), None);
    }

    #[test]
    fn what_encap_builds_decap_reads() {
        for (kind, csum, strip) in [("gre", false, 42), ("gre", true, 46), ("vxlan", false, 50)] {
            let f = encap(kind, "77", csum, 60);
            match classify(&f, &Ep) {
                Verdict::Tunnel(o) => {
                    assert_eq!(
                        (o.key, o.src, o.dst, o.strip, o.trim),
                        (77, 0x0a00_0001, 0x0a00_0002, strip, 0)
                    );
                }
                v => panic!("{kind}: {v:?}"),
            }
        }
    }

    #[test]
    fn bad_headers_are_dropped_by_reason() {
        let mut f = encap("gre", "5", false, 60);
        f[34] |= 0x40; // routing present
        fix_ip_csum(&mut f);
        assert_eq!(classify(&f, &Ep), Verdict::Drop(DropReason::TunnelBadFlags));
        let mut f = encap("vxlan", "5", false, 60);
        f[42] = 0x0c;
        assert_eq!(classify(&f, &Ep), Verdict::Drop(DropReason::TunnelBadFlags));
        let mut f = encap("gre", "5", true, 60);
        *f.last_mut().unwrap() ^= 1;
        assert_eq!(
            classify(&f, &Ep),
            Verdict::Drop(DropReason::TunnelBadChecksum)
        );
        let mut f = encap("gre", "5", false, 60);
        f[24] ^= 1; // outer IP checksum
        assert_eq!(
            classify(&f, &Ep),
            Verdict::Drop(DropReason::TunnelBadChecksum)
        );
        let mut f = encap("vxlan", "5", false, 60);
        f[20] = 0x20; // more fragments
        fix_ip_csum(&mut f);
        assert_eq!(
            classify(&f, &Ep),
            Verdict::Drop(DropReason::TunnelMalformed)
        );
        // Not for a local address, or another UDP port: delivered as usual.
        let mut f = encap("vxlan", "5", false, 60);
        f[36] = 0x13;
        assert_eq!(classify(&f, &Ep), Verdict::Other);
        let mut f = encap("gre", "5", false, 60);
        f[33] = 9;
        fix_ip_csum(&mut f);
        assert_eq!(classify(&f, &Ep), Verdict::Other);
    }

    fn fix_ip_csum(f: &mut [u8]) {
        f[24] = 0;
        f[25] = 0;
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn rx_lookup_prefers_the_most_specific_port() {
        let mut m = RxMap::default();
        let p = |slot, in_key, remote| RxPort {
            slot,
            kind: TunnelKind::Gre,
            port: 0,
            in_key,
            remote,
            local: None,
        };
        m.insert(p(1, Param::Fixed(5), Param::Fixed(9)));
        m.insert(p(2, Param::Fixed(5), Param::Flow));
        m.insert(p(3, Param::Flow, Param::Fixed(9)));
        let o = |key, src| Outer {
            kind: TunnelKind::Gre,
            port: 0,
            src,
            dst: 1,
            key,
            strip: 42,
            trim: 0,
        };
        assert_eq!(m.lookup(&o(5, 9)), Some(1));
        assert_eq!(m.lookup(&o(5, 8)), Some(2));
        assert_eq!(m.lookup(&o(6, 9)), Some(3));
        assert_eq!(m.lookup(&o(6, 8)), None);
        let mut vx = o(5, 9);
        vx.kind = TunnelKind::Vxlan;
        vx.port = 4789;
        assert_eq!(m.lookup(&vx), None, "GRE ports never receive VXLAN");
    }
}
