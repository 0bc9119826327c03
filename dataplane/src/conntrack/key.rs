//! What identifies a connection (a zone and a 5-tuple, an ICMP echo's id
//! standing for ports), read from a frame, and the frame's transport
//! details the tracker needs.
use crate::wire::ipv4::{Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct ConnKey {
    pub zone: u16,
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    /// TCP/UDP source port, or the ICMP echo identifier.
    pub sport: u16,
    /// TCP/UDP destination port (0 for ICMP).
    pub dport: u16,
}

impl ConnKey {
    /// The key of the other direction.
    pub fn reverse(&self) -> ConnKey {
        let (sport, dport) = if self.proto == PROTO_ICMP {
            (self.sport, self.dport)
        } else {
            (self.dport, self.sport)
        };
        ConnKey {
            zone: self.zone,
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport,
            dport,
        }
    }
}

/// A frame as the tracker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Parsed {
    pub key: ConnKey,
    pub l3: usize,
    pub l4: usize,
    /// TCP flags, sequence number, acknowledgement, payload length (SYN
    /// and FIN count one).
    pub tcp: Option<TcpInfo>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
    /// For an ICMP error: the key of the connection it reports on (read
    /// from the quoted header, in the direction the quoted packet went)
    /// and where the quoted IP header starts.
    pub related: Option<(ConnKey, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    pub flags: u16,
    pub seq: u32,
    pub ack: u32,
    pub len: u32,
}

/// Why a frame cannot be tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untrackable {
    /// Not IPv4 (ARP, IPv6 ...): ct() leaves it untracked-invalid.
    NotIp,
    /// Truncated, a fragment, or an unknown ICMP message.
    Invalid,
}

pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_ECHO_REPLY: u8 = 0;

/// Reads a frame (Ethernet, optionally one 802.1Q tag) for zone `zone`
/// into `p`, every field written on success (the tracker's lookup keeps
/// one on its stack: moving a ~100-byte result out cost a tenth of it).
#[inline(always)]
pub fn parse(frame: &[u8], zone: u16, p: &mut Parsed) -> Result<(), Untrackable> {
    if frame.len() < 14 {
        return Err(Untrackable::NotIp);
    }
    let (ty, l3) = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x8100 if frame.len() >= 18 => (u16::from_be_bytes([frame[16], frame[17]]), 18),
        t => (t, 14),
    };
    if ty != 0x0800 {
        return Err(Untrackable::NotIp);
    }
    let ip = Ipv4Packet::new_checked(&frame[l3..]).map_err(|_| Untrackable::Invalid)?;
    if ip.is_fragment() {
        return Err(Untrackable::Invalid);
    }
    let l4 = l3 + ip.header_len();
    let end = l3 + ip.total_len() as usize;
    let t = &frame[l4..end];
    *p = Parsed {
        key: ConnKey {
            zone,
            proto: ip.protocol(),
            src: u32::from_be_bytes(ip.src()),
            dst: u32::from_be_bytes(ip.dst()),
            sport: 0,
            dport: 0,
        },
        l3,
        l4,
        tcp: None,
        icmp: None,
        related: None,
    };
    match ip.protocol() {
        PROTO_TCP => {
            if t.len() < 20 {
                return Err(Untrackable::Invalid);
            }
            let hl = ((t[12] >> 4) as usize) * 4;
            if hl < 20 || t.len() < hl {
                return Err(Untrackable::Invalid);
            }
            p.key.sport = u16::from_be_bytes([t[0], t[1]]);
            p.key.dport = u16::from_be_bytes([t[2], t[3]]);
            let flags = u16::from_be_bytes([t[12], t[13]]) & 0x1ff;
            // SYN and FIN take a sequence number each.
            let seq_len =
                (t.len() - hl) as u32 + (flags & 0x02 != 0) as u32 + (flags & 0x01 != 0) as u32;
            p.tcp = Some(TcpInfo {
                flags,
                seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
                ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
                len: seq_len,
            });
        }
        PROTO_UDP => {
            if t.len() < 8 {
                return Err(Untrackable::Invalid);
            }
            p.key.sport = u16::from_be_bytes([t[0], t[1]]);
            p.key.dport = u16::from_be_bytes([t[2], t[3]]);
        }
        PROTO_ICMP => {
            if t.len() < 8 {
                return Err(Untrackable::Invalid);
            }
            p.icmp = Some((t[0], t[1]));
            match t[0] {
                ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => {
                    p.key.sport = u16::from_be_bytes([t[4], t[5]]);
                }
                // Destination unreachable, time exceeded, parameter
                // problem: the quoted header names the connection.
                3 | 11 | 12 => {
                    let q = l4 + 8;
                    let inner = parse_quoted(&frame[q..end], zone).ok_or(Untrackable::Invalid)?;
                    p.related = Some((inner, q));
                }
                _ => return Err(Untrackable::Invalid),
            }
        }
        _ => {}
    }
    Ok(())
}

/// The key of a quoted IPv4 header and the first 8 bytes after it.
fn parse_quoted(q: &[u8], zone: u16) -> Option<ConnKey> {
    if q.len() < 20 || q[0] >> 4 != 4 {
        return None;
    }
    let hl = (q[0] & 0x0f) as usize * 4;
    if hl < 20 || q.len() < hl + 8 {
        return None;
    }
    let b = |i: usize| u32::from_be_bytes([q[i], q[i + 1], q[i + 2], q[i + 3]]);
    let t = &q[hl..];
    let (sport, dport) = match q[9] {
        PROTO_TCP | PROTO_UDP => (
            u16::from_be_bytes([t[0], t[1]]),
            u16::from_be_bytes([t[2], t[3]]),
        ),
        PROTO_ICMP if t[0] == ICMP_ECHO_REQUEST || t[0] == ICMP_ECHO_REPLY => {
            (u16::from_be_bytes([t[4], t[5]]), 0)
        }
        _ => return None,
    };
    Some(ConnKey {
        zone,
        proto: q[9],
        src: b(12),
        dst: b(16),
        sport,
        dport,
    })
}
