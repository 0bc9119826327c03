//! NAT for tracked connections: choosing the translated address and port
//! when a connection is committed, the rewrite each later packet of it
//! needs in either direction, ICMP errors about it (their quoted header
//! too), and applying a rewrite with checksums updated incrementally
//! (RFC 1624; a UDP checksum of zero stays zero).
use super::key::{ConnKey, Parsed};
use super::{Conn, NatDone};
use crate::packet::PacketBuf;
use crate::wire::checksum::{checksum, update16, update32};
use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    Src,
    Dst,
    /// Plain `nat`: apply what the connection was committed with.
    Reverse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatSpec {
    pub kind: NatKind,
    pub ip_min: u32,
    pub ip_max: u32,
    /// 0: keep the port.
    pub port_min: u16,
    pub port_max: u16,
    pub persistent: bool,
    pub hash: bool,
    pub random: bool,
}

/// An address and port.
pub type Endpoint = (u32, u16);

/// What to change in one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rewrite {
    pub l3: usize,
    pub l4: usize,
    pub proto: u8,
    pub src: Option<(u32, u16)>,
    pub dst: Option<(u32, u16)>,
    /// ICMP error: where the quoted IP header starts and its new source
    /// and destination.
    pub quoted: Option<(usize, Endpoint, Endpoint)>,
}

impl Rewrite {
    /// The frame length the rewrite needs, and where the transport
    /// checksum covering the addresses is (with whether it is UDP's, where
    /// zero means none).
    fn layout(&self) -> (usize, Option<(usize, bool)>) {
        match self.proto {
            PROTO_TCP => (self.l4 + 20, Some((self.l4 + 16, false))),
            PROTO_UDP => (self.l4 + 8, Some((self.l4 + 6, true))),
            PROTO_ICMP => (self.l4 + 8, None),
            _ => (self.l4, None),
        }
    }
}

fn mix(k: &ConnKey, with_sport: bool) -> u64 {
    let mut h = (k.src as u64) << 32 | k.dst as u64;
    h ^= (k.dport as u64) << 16
        | (if with_sport { k.sport as u64 } else { 0 })
        | (k.proto as u64) << 40;
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

/// Picks the translation for a new connection `k`; `taken` says whether a
/// reply key is in use already. Returns it with the reply key, or None
/// when the range has no free address and port.
pub fn choose(
    spec: &NatSpec,
    k: &ConnKey,
    taken: impl Fn(&ConnKey) -> bool,
) -> Option<(NatDone, ConnKey)> {
    let h = mix(k, !spec.persistent);
    let n_ip = (spec.ip_max.max(spec.ip_min) - spec.ip_min) as u64 + 1;
    let icmp = k.proto == PROTO_ICMP;
    let (pmin, pmax, keep) = if spec.port_min == 0 || icmp {
        let orig = if spec.kind == NatKind::Src {
            k.sport
        } else {
            k.dport
        };
        (orig, orig, true)
    } else {
        (spec.port_min, spec.port_max.max(spec.port_min), false)
    };
    let n_port = (pmax - pmin) as u64 + 1;
    // Source NAT may move to another port when the chosen one is taken
    // (as Linux and OVS do); destination NAT keeps what was asked.
    let tries = if spec.kind == NatKind::Src && !icmp {
        n_ip * if keep { 64512 } else { n_port }
    } else {
        n_ip
    };
    for i in 0..tries.min(1 << 17) {
        let ip = spec.ip_min + ((h.wrapping_add(i)) % n_ip) as u32;
        let port = if keep && i < n_ip {
            pmin
        } else if keep {
            // Fell off the original port: search the ephemeral range.
            1024 + ((h >> 16).wrapping_add(i) % 64512) as u16
        } else {
            pmin + ((h >> 16).wrapping_add(i / n_ip) % n_port) as u16
        };
        let (done, reply) = match spec.kind {
            NatKind::Dst => (
                NatDone {
                    src: None,
                    dst: Some((ip, port)),
                },
                ConnKey {
                    zone: k.zone,
                    proto: k.proto,
                    src: ip,
                    dst: k.src,
                    sport: if icmp { k.sport } else { port },
                    dport: if icmp { 0 } else { k.sport },
                },
            ),
            _ => (
                NatDone {
                    src: Some((ip, port)),
                    dst: None,
                },
                ConnKey {
                    zone: k.zone,
                    proto: k.proto,
                    src: k.dst,
                    dst: ip,
                    sport: if icmp { k.sport } else { k.dport },
                    dport: if icmp { 0 } else { port },
                },
            ),
        };
        if !taken(&reply) {
            return Some((done, reply));
        }
    }
    // Destination NAT whose reply key is taken (another connection of
    // this client, through another address, to the same backend and
    // source port): keep the destination and move the source port, as
    // Linux and OVS's userspace conntrack resolve such clashes.
    if spec.kind == NatKind::Dst && !icmp {
        let ip = spec.ip_min + (h % n_ip) as u32;
        let port = if keep {
            pmin
        } else {
            pmin + ((h >> 16) % n_port) as u16
        };
        for j in 0..4096u64 {
            let sport = 1024 + ((h >> 24).wrapping_add(j) % 64512) as u16;
            let reply = ConnKey {
                zone: k.zone,
                proto: k.proto,
                src: ip,
                dst: k.src,
                sport: port,
                dport: sport,
            };
            if !taken(&reply) {
                let done = NatDone {
                    src: Some((k.src, sport)),
                    dst: Some((ip, port)),
                };
                return Some((done, reply));
            }
        }
    }
    None
}

/// The connection's translation applied to a tuple going direction `dir`.
fn translate(c: &Conn, dir: u8, t: &mut ConnKey) {
    let icmp = t.proto == PROTO_ICMP;
    if dir == 0 {
        if let Some((ip, port)) = c.nat.src {
            t.src = ip;
            if !icmp {
                t.sport = port;
            }
        }
        if let Some((ip, port)) = c.nat.dst {
            t.dst = ip;
            if !icmp {
                t.dport = port;
            }
        }
    } else {
        if c.nat.src.is_some() {
            t.dst = c.orig.src;
            if !icmp {
                t.dport = c.orig.sport;
            }
        }
        if c.nat.dst.is_some() {
            t.src = c.orig.dst;
            if !icmp {
                t.sport = c.orig.dport;
            }
        }
    }
}

/// The rewrite of a packet of `c` going direction `dir`.
pub fn forward(c: &Conn, dir: u8, p: &Parsed) -> Rewrite {
    let mut t = p.key;
    translate(c, dir, &mut t);
    Rewrite {
        l3: p.l3,
        l4: p.l4,
        proto: p.key.proto,
        src: ((t.src, t.sport) != (p.key.src, p.key.sport)).then_some((t.src, t.sport)),
        dst: ((t.dst, t.dport) != (p.key.dst, p.key.dport)).then_some((t.dst, t.dport)),
        quoted: None,
    }
}

/// The rewrite of an ICMP error about `c`, travelling direction `dir`,
/// whose quoted header starts at `q`.
pub fn related(c: &Conn, dir: u8, p: &Parsed, q: usize) -> Rewrite {
    let quoted = p.related.map(|r| r.0).unwrap_or_default();
    // The quoted packet went the other way; seen from this direction it
    // is its reverse.
    let mut r = quoted.reverse();
    translate(c, dir, &mut r);
    let nq = r.reverse();
    let dst = (nq.src != p.key.dst).then_some((nq.src, 0));
    let src = (p.key.src == quoted.dst && nq.dst != quoted.dst).then_some((nq.dst, 0));
    Rewrite {
        l3: p.l3,
        l4: p.l4,
        proto: PROTO_ICMP,
        src,
        dst,
        quoted: Some((q, (nq.src, nq.sport), (nq.dst, nq.dport))),
    }
}

fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Changes an address at `at` (IPv4 header at `l3`) and fixes the IPv4
/// checksum and, when given, an L4 checksum covering it (pseudo-header).
fn set_addr(d: &mut [u8], l3: usize, at: usize, new: u32, l4_csum: Option<(usize, bool)>) {
    let old = rd32(d, at);
    if old == new {
        return;
    }
    d[at..at + 4].copy_from_slice(&new.to_be_bytes());
    let c = update32(rd16(d, l3 + 10), old, new);
    wr16(d, l3 + 10, c);
    fix_l4(d, l4_csum, |c| update32(c, old, new));
}

fn set_port(d: &mut [u8], at: usize, new: u16, l4_csum: Option<(usize, bool)>) {
    let old = rd16(d, at);
    if old == new {
        return;
    }
    wr16(d, at, new);
    fix_l4(d, l4_csum, |c| update16(c, old, new));
}

/// (checksum offset, is UDP): a UDP checksum of zero means none.
fn fix_l4(d: &mut [u8], l4_csum: Option<(usize, bool)>, f: impl Fn(u16) -> u16) {
    if let Some((at, udp)) = l4_csum {
        let c = rd16(d, at);
        if udp && c == 0 {
            return;
        }
        let n = f(c);
        wr16(d, at, if udp && n == 0 { 0xffff } else { n });
    }
}

/// A rewrite prepared for a run of TCP or UDP packets of one connection
/// in one direction with option-less IPv4 headers (the packets of a
/// uniform run: the same addresses, ports and header lengths as
/// `sample`): the new addresses and ports and each checksum's RFC 1624
/// delta (~m + m' summed over the changed words) are worked out once.
/// A packet then costs one bounds check, two stores of the whole
/// address-and-port block and two checksum updates, on a fixed-size view
/// of its headers (a field at a time behind a bounds check per byte was
/// ~95 instructions per packet; rvs-ipp's one-connection nat loop).
#[derive(Debug, Clone, Copy)]
pub struct Prepared {
    l3: usize,
    /// IPv4 protocol: which view and transport checksum.
    proto: u8,
    /// Source and destination addresses and ports (IPv4 bytes 12..20,
    /// transport bytes 0..4) as the sample has them, and as they become.
    old: [u8; 12],
    new: [u8; 12],
    /// Checksum deltas, folded to 16 bits: adding one to an inverted
    /// checksum needs a single fold.
    ip_delta: u32,
    l4_delta: u32,
}

#[inline]
fn delta16(old: u16, new: u16) -> u32 {
    (!old) as u32 + new as u32
}

#[inline]
fn fold(mut acc: u32) -> u32 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// `!c` plus a folded delta, folded once (at most 0x1fffe before) and
/// inverted: the updated checksum.
#[inline]
fn update(c: u16, delta: u32) -> u16 {
    let acc = (!c) as u32 + delta;
    !(((acc & 0xffff) + (acc >> 16)) as u16)
}

/// The IPv4 header (no options) and the transport header up to and
/// including its checksum: 28 bytes for UDP, 38 for TCP; the checksum is
/// the view's last two bytes either way.
const UDP_VIEW: usize = 28;
const TCP_VIEW: usize = 38;

fn view<const N: usize>(d: &mut [u8], l3: usize) -> Option<&mut [u8; N]> {
    d.get_mut(l3..)?.get_mut(..N)?.try_into().ok()
}

impl Prepared {
    /// None for anything but TCP and UDP over option-less IPv4 (ICMP
    /// errors' quoted headers among them) and frames too short.
    pub fn new(rw: &Rewrite, sample: &[u8]) -> Option<Prepared> {
        let n = match rw.proto {
            PROTO_UDP => UDP_VIEW,
            PROTO_TCP => TCP_VIEW,
            _ => return None,
        };
        let h = sample.get(rw.l3..)?.get(..n)?;
        if rw.quoted.is_some() || h[0] != 0x45 || h[9] != rw.proto || rw.l4 != rw.l3 + 20 {
            return None;
        }
        let mut old = [0u8; 12];
        old.copy_from_slice(&h[12..24]);
        let mut new = old;
        for (end, ip_at, port_at) in [(rw.src, 0, 8), (rw.dst, 4, 10)] {
            if let Some((ip, port)) = end {
                new[ip_at..ip_at + 4].copy_from_slice(&ip.to_be_bytes());
                new[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
            }
        }
        let word = |b: &[u8; 12], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let ip_delta: u32 = (0..8)
            .step_by(2)
            .map(|i| delta16(word(&old, i), word(&new, i)))
            .sum();
        let port_delta: u32 = (8..12)
            .step_by(2)
            .map(|i| delta16(word(&old, i), word(&new, i)))
            .sum();
        Some(Prepared {
            l3: rw.l3,
            proto: rw.proto,
            old,
            new,
            ip_delta: fold(ip_delta),
            l4_delta: fold(ip_delta + port_delta),
        })
    }

    /// Whether `frame` has the sample's header lengths, protocol,
    /// addresses and ports, so that `apply` rewrites it as `nat::apply`
    /// would.
    pub fn fits(&self, frame: &[u8]) -> bool {
        let n = if self.proto == PROTO_UDP {
            UDP_VIEW
        } else {
            TCP_VIEW
        };
        frame
            .get(self.l3..)
            .and_then(|h| h.get(..n))
            .is_some_and(|h| h[0] == 0x45 && h[9] == self.proto && h[12..24] == self.old)
    }

    /// Rewrites a packet that `fits` (anything else is left alone).
    #[inline]
    pub fn apply(&self, d: &mut [u8]) {
        if self.proto == PROTO_UDP {
            if let Some(h) = view::<UDP_VIEW>(d, self.l3) {
                self.rewrite(h, true);
            }
        } else if let Some(h) = view::<TCP_VIEW>(d, self.l3) {
            self.rewrite(h, false);
        }
    }

    #[inline]
    fn rewrite<const N: usize>(&self, h: &mut [u8; N], udp: bool) {
        h[12..24].copy_from_slice(&self.new);
        update_checksums(h, self.ip_delta, self.l4_delta, udp);
    }
}

/// Adds the folded deltas to the IPv4 checksum and to the transport
/// checksum in the last two bytes of `h` (IPv4 and transport headers). A
/// UDP checksum of zero means none, and a computed zero is sent as all
/// ones.
#[inline]
fn update_checksums<const N: usize>(h: &mut [u8; N], ip_delta: u32, l4_delta: u32, udp: bool) {
    let c = u16::from_be_bytes([h[10], h[11]]);
    h[10..12].copy_from_slice(&update(c, ip_delta).to_be_bytes());
    let c = u16::from_be_bytes([h[N - 2], h[N - 1]]);
    if !(udp && c == 0) {
        let n = update(c, l4_delta);
        let n = if udp && n == 0 { 0xffff } else { n };
        h[N - 2..].copy_from_slice(&n.to_be_bytes());
    }
}

/// `rw` on the IPv4 and transport headers `h` of a TCP or UDP packet
/// (checksum in its last two bytes); false when the IPv4 header has
/// options after all.
#[inline]
fn rewrite_ports<const N: usize>(h: &mut [u8; N], rw: &Rewrite, udp: bool) -> bool {
    if h[0] != 0x45 {
        return false;
    }
    let (mut ip_delta, mut port_delta) = (0u32, 0u32);
    let mut set = |h: &mut [u8; N], at: usize, port_at: usize, (ip, port): Endpoint| {
        let old = u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        ip_delta += delta16((old >> 16) as u16, (ip >> 16) as u16) + delta16(old as u16, ip as u16);
        h[at..at + 4].copy_from_slice(&ip.to_be_bytes());
        port_delta += delta16(u16::from_be_bytes([h[port_at], h[port_at + 1]]), port);
        h[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    };
    if let Some(e) = rw.src {
        set(h, 12, 20, e);
    }
    if let Some(e) = rw.dst {
        set(h, 16, 22, e);
    }
    update_checksums(h, fold(ip_delta), fold(ip_delta + port_delta), udp);
    true
}

/// Applies `rw` to `pkt`. False when the packet is shorter than the
/// rewrite expects (nothing is changed then).
pub fn apply<P: PacketBuf>(pkt: &mut P, rw: &Rewrite) -> bool {
    let d = pkt.data_mut();
    // TCP and UDP over option-less IPv4, nearly every packet: on a
    // fixed-size view, both checksums updated once.
    if rw.quoted.is_none() && rw.l4 == rw.l3 + 20 {
        let done = match rw.proto {
            PROTO_UDP => view::<UDP_VIEW>(d, rw.l3).map(|h| rewrite_ports(h, rw, true)),
            PROTO_TCP => view::<TCP_VIEW>(d, rw.l3).map(|h| rewrite_ports(h, rw, false)),
            _ => None,
        };
        if let Some(done) = done {
            return done;
        }
    }
    let (need, l4c) = rw.layout();
    if d.len() < need {
        return false;
    }
    let ports = matches!(rw.proto, PROTO_TCP | PROTO_UDP);
    if let Some((ip, port)) = rw.src {
        set_addr(d, rw.l3, rw.l3 + 12, ip, l4c);
        if ports {
            set_port(d, rw.l4, port, l4c);
        }
    }
    if let Some((ip, port)) = rw.dst {
        set_addr(d, rw.l3, rw.l3 + 16, ip, l4c);
        if ports {
            set_port(d, rw.l4 + 2, port, l4c);
        }
    }
    if let Some((q, (qs, qsp), (qd, qdp))) = rw.quoted {
        if d.len() < q + 28 {
            return false;
        }
        let qhl = (d[q] & 0x0f) as usize * 4;
        if d.len() < q + qhl + 8 {
            return false;
        }
        let qproto = d[q + 9];
        // The quoted transport header is cut at 8 bytes: only UDP's
        // checksum is inside it.
        let ql4 = q + qhl;
        let qc = (qproto == PROTO_UDP).then_some((ql4 + 6, true));
        set_addr(d, q, q + 12, qs, qc);
        set_addr(d, q, q + 16, qd, qc);
        if matches!(qproto, PROTO_TCP | PROTO_UDP) {
            set_port(d, ql4, qsp, qc);
            set_port(d, ql4 + 2, qdp, qc);
        }
        // The ICMP checksum covers the whole message: recompute it.
        let end = rw.l3 + rd16(d, rw.l3 + 2) as usize;
        let end = end.min(d.len());
        wr16(d, rw.l4 + 2, 0);
        let c = checksum(&d[rw.l4..end]);
        wr16(d, rw.l4 + 2, c);
    }
    true
}
