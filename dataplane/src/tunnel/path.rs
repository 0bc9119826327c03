//! The PMD's tunnel steps, run where a burst for a port is flushed: a
//! burst for a tunnel port is encapsulated, a burst for an endpoint's
//! internal port is searched for tunnel traffic to decapsulate. Both hand
//! their results back as recirculation groups the PMD then runs through
//! the underlay or tenant bridge.
use super::conf::Param;
use super::decap::{classify, SameOuter, Verdict};
use super::encap::{frag_needed, inner_hash, Shape};
use super::state::{EncapPlan, Endpoint, TnlState, TunnelPort};
use super::{TnlEvent, TunnelMeta};
use crate::normal::same_l2;
use crate::packet::PacketBuf;
use crate::stats::{DropReason, PmdStats};
use crate::wire::arp::{ArpPacket, OP_REPLY};
use crate::{Burst, BURST};
use arrayvec::ArrayVec;
use std::sync::mpsc::SyncSender;

/// Packets to run through the bridge of port `slot` as if received there.
pub struct Recirc<P> {
    pub slot: u16,
    /// Count them as received on the port (decapsulated frames), or not
    /// (outer frames the underlay sends on the host's behalf).
    pub count: bool,
    pub pkts: Burst<P>,
    /// Tunnel metadata per packet; empty when not from a tunnel.
    pub meta: ArrayVec<TunnelMeta, BURST>,
    /// Every frame has the first one's Ethernet header (outer frames
    /// encapsulated for one remote): a NORMAL bridge judges the first for
    /// all without comparing each.
    pub uniform: bool,
}

/// A PMD's tunnel state between flushes.
pub struct TnlLocal<P> {
    pub recirc: Vec<Recirc<P>>,
    /// The last next hop asked for and when (seconds), so a burst of
    /// misses asks once.
    last_resolve: (u32, u32),
}

impl<P> Default for TnlLocal<P> {
    fn default() -> Self {
        TnlLocal {
            recirc: Vec::new(),
            last_resolve: (0, u32::MAX),
        }
    }
}

impl<P: PacketBuf> TnlLocal<P> {
    #[inline]
    fn push(&mut self, slot: u16, count: bool, pkt: P, meta: Option<TunnelMeta>) {
        if let Some(g) = self.recirc.last_mut() {
            if g.slot == slot
                && g.count == count
                && !g.pkts.is_full()
                && g.meta.is_empty() == meta.is_none()
            {
                g.uniform = false;
                g.pkts.push(pkt);
                if let Some(m) = meta {
                    g.meta.push(m);
                }
                return;
            }
        }
        let mut g = Recirc {
            slot,
            count,
            pkts: Burst::new(),
            meta: ArrayVec::new(),
            uniform: false,
        };
        g.pkts.push(pkt);
        if let Some(m) = meta {
            g.meta.push(m);
        }
        self.recirc.push(g);
    }
}

impl<P: PacketBuf> TnlLocal<P> {
    /// Queues `pkts` (which it empties) as received on `slot` (counted
    /// there), each with its tunnel fields in `metas` (which it empties).
    fn push_group(
        &mut self,
        slot: u16,
        pkts: &mut Burst<P>,
        metas: &mut ArrayVec<TunnelMeta, BURST>,
    ) {
        if pkts.is_empty() {
            return;
        }
        if let Some(g) = self.recirc.last_mut() {
            if g.slot == slot
                && g.count
                && g.meta.len() == g.pkts.len()
                && !g.meta.is_empty()
                && g.pkts.remaining_capacity() >= pkts.len()
            {
                g.pkts.extend(pkts.drain(..));
                let _ = g.meta.try_extend_from_slice(metas);
                metas.clear();
                return;
            }
        }
        self.recirc.push(Recirc {
            slot,
            count: true,
            pkts: std::mem::take(pkts),
            meta: std::mem::take(metas),
            uniform: false,
        });
    }

    /// Queues `pkts` (which it empties) as received on `slot` without
    /// tunnel metadata; `uniform`: all have the first one's Ethernet
    /// header.
    pub fn push_all(&mut self, slot: u16, count: bool, pkts: &mut Burst<P>, uniform: bool) {
        let Some(first) = pkts.first() else {
            return;
        };
        if let Some(g) = self.recirc.last_mut() {
            if g.slot == slot
                && g.count == count
                && g.meta.is_empty()
                && g.pkts.remaining_capacity() >= pkts.len()
            {
                g.uniform = g.uniform
                    && uniform
                    && g.pkts
                        .first()
                        .is_some_and(|h| same_l2(h.data(), first.data()));
                g.pkts.extend(pkts.drain(..));
                return;
            }
        }
        self.recirc.push(Recirc {
            slot,
            count,
            pkts: std::mem::take(pkts),
            meta: ArrayVec::new(),
            uniform,
        });
    }
}

/// Encapsulates `pkts`, sent to tunnel port `slot` (`metas`: the flow's
/// tunnel fields per packet, for `flow` options). In the common case, a
/// fixed remote whose next hop is resolved, the burst is encapsulated in
/// place, every frame with one outer header, and left in `pkts`: returns
/// the underlay port they leave through (as if received there), for the
/// caller to hand on. Otherwise returns None, the results queued in
/// `local` (or dropped and counted).
#[must_use]
#[allow(clippy::too_many_arguments)]
pub fn encap<P: PacketBuf>(
    st: &TnlState,
    tp: &TunnelPort,
    slot: u16,
    pkts: &mut Burst<P>,
    metas: &[TunnelMeta],
    now: u32,
    stats: &PmdStats,
    local: &mut TnlLocal<P>,
    events: &SyncSender<TnlEvent>,
) -> Option<u16> {
    if let Some(under) = encap_ready(tp, slot, pkts, stats) {
        return Some(under);
    }
    let c = &tp.conf;
    let pc = &stats.ports[slot as usize];
    let mut dynamic;
    // A burst is mostly one key: its counter row is looked up once.
    let mut last_row: Option<(u64, &crate::tunnel::stats::KeyRow)> = None;
    let vxlan = c.kind == super::TunnelKind::Vxlan;
    let (mut out, mut out_at) = (Burst::<P>::new(), 0u16);
    let (mut sent, mut sent_bytes) = (0u64, 0u64);
    for (i, mut pkt) in pkts.drain(..).enumerate() {
        let meta = metas.get(i).copied().unwrap_or_default();
        let key = match c.out_key {
            Some(Param::Fixed(k)) => k,
            Some(Param::Flow) => meta.id,
            None => 0,
        };
        let row = match last_row {
            Some((k, r)) if k == key => r,
            _ => {
                let r = stats.tunnels.row(c.kind, key);
                last_row = Some((key, r));
                r
            }
        };
        let drop = |r: DropReason| {
            stats.drop(r, None, 1);
            pc.tx_dropped.add(1);
            row.dropped.add(1);
        };
        let (header, out_slot, mtu) = match &tp.plan {
            EncapPlan::Ready {
                header,
                out_slot,
                mtu,
            } => (header, *out_slot, *mtu),
            EncapPlan::Unresolved(r) => {
                drop(*r);
                continue;
            }
            EncapPlan::Dynamic => {
                let src = match c.local {
                    Some(Param::Fixed(ip)) => ip,
                    _ => meta.src,
                };
                match st.resolve(c, meta.dst, src) {
                    Ok(r) => {
                        dynamic = Some(r);
                        let (h, s, m) = dynamic.as_ref().expect("set");
                        (h, *s, *m)
                    }
                    Err(u) => {
                        if let Some((s, ip, src)) = u.arp {
                            if local.last_resolve != (ip, now) {
                                local.last_resolve = (ip, now);
                                let _ = events.try_send(TnlEvent::Resolve { slot: s, ip, src });
                            }
                        }
                        drop(u.reason);
                        continue;
                    }
                }
            }
        };
        let len = pkt.wire_len();
        if header.outer_ip_len(len) > mtu as usize {
            drop(DropReason::MtuExceeded);
            // The sender learns the path MTU from the far side of the
            // tunnel, as if the tunnel port had received the answer.
            if frag_needed(&mut pkt, header.inner_ip_mtu(mtu)) {
                let back = TunnelMeta {
                    id: key,
                    src: meta.dst,
                    dst: meta.src,
                };
                local.push(slot, false, pkt, Some(back));
            }
            continue;
        }
        // Only VXLAN's UDP source port carries the flow's hash.
        let h = if vxlan { inner_hash(pkt.data()) } else { 0 };
        if !header.push(&mut pkt, key, h) {
            drop(DropReason::PoolEmpty);
            continue;
        }
        sent += 1;
        sent_bytes += len as u64;
        row.encap.add(1);
        // A fixed remote's frames all leave through one internal port:
        // they are handed on as one group.
        if !out.is_empty() && out_at != out_slot {
            local.push_all(out_at, false, &mut out, false);
        }
        out_at = out_slot;
        out.push(pkt);
    }
    local.push_all(out_at, false, &mut out, false);
    pc.tx_packets.add(sent);
    pc.tx_bytes.add(sent_bytes);
    None
}

/// `encap` for the common case, a tunnel to a fixed remote whose next hop
/// is resolved and whose key is fixed, when every frame fits the MTU:
/// the burst is encapsulated in place, its counters added once; returns
/// the underlay port it leaves through. None (nothing done) in any other
/// case.
#[inline]
fn encap_ready<P: PacketBuf>(
    tp: &TunnelPort,
    slot: u16,
    pkts: &mut Burst<P>,
    stats: &PmdStats,
) -> Option<u16> {
    let c = &tp.conf;
    let EncapPlan::Ready {
        header,
        out_slot,
        mtu,
    } = &tp.plan
    else {
        return None;
    };
    let key = match c.out_key {
        Some(Param::Fixed(k)) => k,
        None => 0,
        Some(Param::Flow) => return None,
    };
    if pkts
        .iter()
        .any(|p| header.outer_ip_len(p.wire_len()) > *mtu as usize)
    {
        return None;
    }
    let vxlan = c.kind == super::TunnelKind::Vxlan;
    let offered = pkts.len() as u64;
    // One loop per header shape: the choice is made once per burst.
    let bytes = match header.shape() {
        Shape::GreKey => push_each(pkts, |p| header.push_gre_key(p, key)),
        // Only VXLAN's UDP source port carries the flow's hash.
        Shape::Vxlan => push_each(pkts, |p| {
            let h = inner_hash(p.data());
            header.push_vxlan(p, key, h)
        }),
        Shape::Other => push_each(pkts, |p| {
            let h = if vxlan { inner_hash(p.data()) } else { 0 };
            header.push(p, key, h)
        }),
    };
    let sent = pkts.len() as u64;
    let row = stats.tunnels.row(c.kind, key);
    let pc = &stats.ports[slot as usize];
    if sent < offered {
        let failed = offered - sent;
        stats.drop(DropReason::PoolEmpty, None, failed);
        pc.tx_dropped.add(failed);
        row.dropped.add(failed);
    }
    row.encap.add(sent);
    pc.tx_packets.add(sent);
    pc.tx_bytes.add(bytes);
    Some(*out_slot)
}

/// Runs `push` on each of `pkts`, keeping those it succeeds on; returns
/// their bytes before the push.
#[inline(always)]
fn push_each<P: PacketBuf>(pkts: &mut Burst<P>, push: impl Fn(&mut P) -> bool) -> u64 {
    let mut bytes = 0u64;
    pkts.retain(|p| {
        let len = p.wire_len() as u64;
        let ok = push(p);
        bytes += if ok { len } else { 0 };
        ok
    });
    bytes
}

/// Takes the tunnel traffic for this endpoint out of `pkts` (a burst for
/// its internal port) and queues it, decapsulated, for its tunnel ports;
/// what is not tunnel traffic stays for the kernel. ARP replies to the
/// endpoint's addresses are reported for the neighbour cache.
pub fn decap<P: PacketBuf>(
    st: &TnlState,
    ep: &Endpoint,
    slot: u16,
    pkts: &mut Burst<P>,
    stats: &PmdStats,
    local: &mut TnlLocal<P>,
    events: &SyncSender<TnlEvent>,
) {
    let term = st.terminator(ep);
    let mut keep = Burst::<P>::new();
    if pkts.is_empty() {
        return;
    }
    // A burst is mostly one tunnel: its port and counter row are looked
    // up once.
    type Seen<'a> = (
        super::TunnelKind,
        u16,
        u64,
        u32,
        u32,
        Option<u16>,
        &'a super::stats::KeyRow,
    );
    let mut last: Option<Seen> = None;
    // A burst is mostly one tunnel's frames: after the first, the next
    // are recognised by their header bytes.
    let mut same = SameOuter::default();
    // Decapsulated frames wait here while they go to one tunnel port, and
    // are handed on as one group (not one queueing per frame).
    let (mut out, mut out_meta, mut out_slot) = (Burst::<P>::new(), ArrayVec::new(), 0u16);
    for mut pkt in pkts.drain(..) {
        let verdict = match same.matches(pkt.data()) {
            Some(o) => Verdict::Tunnel(o),
            None => {
                let v = classify(pkt.data(), &term);
                if let Verdict::Tunnel(o) = &v {
                    same.remember(pkt.data(), o);
                }
                v
            }
        };
        match verdict {
            Verdict::Other => {
                snoop_arp(pkt.data(), ep, slot, events);
                keep.push(pkt);
            }
            Verdict::Drop(r) => stats.drop(r, None, 1),
            Verdict::Tunnel(o) if !st.peer_allowed(o.src) => {
                stats.drop(DropReason::TunnelPeerDenied, None, 1);
                stats.tunnels.row(o.kind, o.key).dropped.add(1);
            }
            Verdict::Tunnel(o) => {
                let (found, row) = match last {
                    Some((k, p, key, src, dst, s, r))
                        if (k, p, key, src, dst) == (o.kind, o.port, o.key, o.src, o.dst) =>
                    {
                        (s, r)
                    }
                    _ => {
                        let r = stats.tunnels.row(o.kind, o.key);
                        let s = st.rx.lookup(&o);
                        last = Some((o.kind, o.port, o.key, o.src, o.dst, s, r));
                        (s, r)
                    }
                };
                let Some(tslot) = found else {
                    stats.drop(DropReason::TunnelUnknownKey, None, 1);
                    row.dropped.add(1);
                    continue;
                };
                if !pkt.adj(o.strip as u16) || (o.trim > 0 && !pkt.trim(o.trim as u16)) {
                    stats.drop(DropReason::TunnelMalformed, None, 1);
                    row.dropped.add(1);
                    continue;
                }
                row.decap.add(1);
                let meta = TunnelMeta {
                    id: o.key,
                    src: o.src,
                    dst: o.dst,
                };
                if out_slot != tslot {
                    local.push_group(out_slot, &mut out, &mut out_meta);
                    out_slot = tslot;
                }
                out.push(pkt);
                out_meta.push(meta);
            }
        }
    }
    local.push_group(out_slot, &mut out, &mut out_meta);
    *pkts = keep;
}

fn snoop_arp(frame: &[u8], ep: &Endpoint, slot: u16, events: &SyncSender<TnlEvent>) {
    if frame.len() < 14 + crate::wire::arp::LEN || frame[12..14] != [0x08, 0x06] {
        return;
    }
    let Ok(a) = ArpPacket::new_checked(&frame[14..]) else {
        return;
    };
    let tpa = u32::from_be_bytes(a.tpa());
    if a.op() == OP_REPLY && ep.ips.contains(&tpa) {
        let _ = events.try_send(TnlEvent::Neighbor {
            slot,
            ip: u32::from_be_bytes(a.spa()),
            mac: a.sha().0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HeapBuf;

    fn burst(dst: u8, n: usize) -> Burst<HeapBuf> {
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, dst]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12] = 0x08;
        (0..n).map(|_| HeapBuf::new(&f)).collect()
    }

    #[test]
    fn a_group_stays_uniform_only_while_every_part_shares_one_header() {
        let mut local = TnlLocal::<HeapBuf>::default();
        local.push_all(3, false, &mut burst(9, 4), true);
        local.push_all(3, false, &mut burst(9, 4), true);
        assert_eq!(local.recirc.len(), 1);
        assert_eq!(local.recirc[0].pkts.len(), 8);
        assert!(local.recirc[0].uniform, "one header in both parts");
        // Another next hop's header joins the group but ends its uniformity.
        local.push_all(3, false, &mut burst(8, 4), true);
        assert_eq!((local.recirc.len(), local.recirc[0].pkts.len()), (1, 12));
        assert!(!local.recirc[0].uniform);
        // A part not known to be uniform starts, or spoils, one.
        local.recirc.clear();
        local.push_all(4, false, &mut burst(9, 2), false);
        local.push_all(4, false, &mut burst(9, 2), true);
        assert_eq!((local.recirc.len(), local.recirc[0].pkts.len()), (1, 4));
        assert!(!local.recirc[0].uniform);
        // Another port starts its own group.
        local.push_all(5, false, &mut burst(9, 2), true);
        assert_eq!(local.recirc.len(), 2);
        assert!(local.recirc[1].uniform);
        // A single frame queued after a uniform group spoils it.
        let mut one = burst(9, 1);
        local.push(5, false, one.pop().expect("one"), None);
        assert_eq!(local.recirc[1].pkts.len(), 3);
        assert!(!local.recirc[1].uniform);
    }
}
