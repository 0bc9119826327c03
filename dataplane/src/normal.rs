//! Action NORMAL: the L2 learning switch of one bridge, with OVS's VLAN
//! rules. A batch from one rx queue goes through parse -> VLAN ingress ->
//! learn -> lookup -> per-egress tagging -> tx buffers.
use crate::packet::PacketBuf;
use crate::snapshot::{BridgeEntry, Snapshot};
use crate::stats::{DropReason, PmdStats};
use crate::txbuf::TxBuffers;
use crate::vlan::set_egress_tag;
use crate::wire::{EthernetFrame, MacAddr};
use crate::Burst;

/// Forwards every packet of `pkts` (which it empties) that arrived on port
/// `in_slot`, queueing the results in `tx`.
pub fn process_batch<P: PacketBuf>(
    snap: &Snapshot<P>,
    in_slot: u16,
    pkts: &mut Burst<P>,
    now: u32,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
) {
    let n = pkts.len() as u64;
    let port = match snap.port(in_slot) {
        Some(p) => p,
        None => {
            stats.drop(DropReason::NoPort, None, n);
            pkts.clear();
            return;
        }
    };
    let pc = &stats.ports[in_slot as usize];
    pc.rx_packets.add(n);
    stats.rx_packets.add(n);
    let bridge = &snap.bridges[port.bridge as usize];
    // Per-batch tallies: one counter update per batch, not per packet.
    let (mut bytes, mut hits, mut misses) = (0u64, 0u64, 0u64);
    // A burst is mostly runs of one conversation: remember the last address
    // learned and the last destination looked up (with its verdict) so a
    // run costs one table access each, not one per frame.
    let mut last_learned: Option<(u16, MacAddr)> = None;
    let mut last_lookup: Option<(u16, MacAddr, Option<u16>)> = None;
    for pkt in pkts.drain(..) {
        bytes += pkt.wire_len() as u64;
        let (dst, src, vid) = match EthernetFrame::new_checked(pkt.data()) {
            Ok(f) => (f.dst(), f.src(), f.vlan_tci().map(|t| t & 0xfff)),
            Err(_) => {
                stats.drop(DropReason::Malformed, Some(in_slot), 1);
                continue;
            }
        };
        let tagged = vid.is_some();
        let vlan = match port.vlan.ingress(vid) {
            Some(v) => v,
            None => {
                stats.drop(DropReason::VlanDenied, Some(in_slot), 1);
                continue;
            }
        };
        if !src.is_multicast() && last_learned != Some((vlan, src)) {
            bridge.macs.learn(vlan, src, in_slot, now);
            last_learned = Some((vlan, src));
            // What was just learned may be the cached destination.
            if matches!(last_lookup, Some((v, d, _)) if v == vlan && d == src) {
                last_lookup = None;
            }
        }
        let known = match last_lookup {
            _ if dst.is_multicast() => None,
            Some((v, d, verdict)) if v == vlan && d == dst => verdict,
            _ => {
                let out = bridge
                    .macs
                    .lookup(vlan, dst, now)
                    .filter(|&o| o == in_slot || egress_ok(snap, port.bridge, o, vlan));
                last_lookup = Some((vlan, dst, out));
                out
            }
        };
        match known {
            Some(out) if out == in_slot => {
                hits += 1;
                stats.drop(DropReason::SamePort, Some(in_slot), 1);
            }
            Some(out) => {
                hits += 1;
                output(snap, stats, tx, out, vlan, tagged, pkt);
            }
            _ => {
                misses += 1;
                flood(snap, bridge, stats, tx, in_slot, vlan, tagged, pkt);
            }
        }
    }
    pc.rx_bytes.add(bytes);
    stats.mac_hits.add(hits);
    stats.mac_misses.add(misses);
}

#[inline]
fn egress_ok<P: PacketBuf>(snap: &Snapshot<P>, bridge_idx: u16, out: u16, vlan: u16) -> bool {
    // A learned slot may belong to a port that has since left the bridge or
    // the VLAN: never forward across either.
    matches!(snap.port(out), Some(p) if p.bridge == bridge_idx && p.vlan.member(vlan))
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn flood<P: PacketBuf>(
    snap: &Snapshot<P>,
    bridge: &BridgeEntry,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
    in_slot: u16,
    vlan: u16,
    tagged: bool,
    pkt: P,
) {
    stats.flood_packets.add(1);
    let mut pending: Option<u16> = None;
    for &s in &bridge.ports {
        if s == in_slot {
            continue;
        }
        match snap.port(s) {
            Some(p) if p.vlan.member(vlan) => {}
            _ => continue,
        }
        // Send a copy to the previous member and keep the original for the
        // last one: n members cost n-1 copies.
        if let Some(prev) = pending.replace(s) {
            match pkt.deep_copy() {
                Some(c) => output(snap, stats, tx, prev, vlan, tagged, c),
                None => stats.drop(DropReason::PoolEmpty, None, 1),
            }
        }
    }
    match pending {
        Some(last) => output(snap, stats, tx, last, vlan, tagged, pkt),
        None => stats.drop(DropReason::NoOutput, Some(in_slot), 1),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn output<P: PacketBuf>(
    snap: &Snapshot<P>,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
    out: u16,
    vlan: u16,
    tagged: bool,
    mut pkt: P,
) {
    let Some(port) = snap.port(out) else {
        stats.drop(DropReason::NoPort, None, 1);
        return;
    };
    if !set_egress_tag(&mut pkt, tagged, port.vlan.egress_vid(vlan)) {
        stats.drop(DropReason::PoolEmpty, None, 1);
        stats.ports[out as usize].tx_dropped.add(1);
        return;
    }
    if tx.push(out, pkt).is_err() {
        stats.drop(DropReason::TxFull, None, 1);
        stats.ports[out as usize].tx_dropped.add(1);
    }
}
