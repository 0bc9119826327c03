//! Action NORMAL: the L2 learning switch of one bridge, with OVS's VLAN
//! rules. A batch from one rx queue goes through parse -> VLAN ingress ->
//! learn -> lookup -> per-egress tagging -> tx buffers.
use crate::packet::PacketBuf;
use crate::snapshot::{BridgeEntry, PortEntry, Snapshot};
use crate::stats::{DropReason, PmdStats};
use crate::txbuf::TxBuffers;
use crate::vlan::set_egress_tag;
use crate::wire::{EthernetFrame, MacAddr};
use crate::Burst;

/// NORMAL's state over one batch from one port: the port, its bridge, and
/// what the batch has learned and looked up so far. A burst is mostly runs
/// of one conversation: remembering the last address learned and the last
/// destination looked up (with its verdict) makes a run cost one table
/// access each, not one per frame.
pub struct Normal<'a, P: PacketBuf> {
    snap: &'a Snapshot<P>,
    port: &'a PortEntry<P>,
    bridge: &'a BridgeEntry,
    in_slot: u16,
    now: u32,
    last_learned: Option<(u16, MacAddr)>,
    last_lookup: Option<(u16, MacAddr, Option<u16>)>,
    hits: u64,
    misses: u64,
}

/// What NORMAL does with a run of frames that share an Ethernet header.
enum Judged {
    Drop(DropReason),
    /// To one learned port, as VLAN `vlan` (`tagged`: they carry a tag now).
    Out {
        out: u16,
        vlan: u16,
        tagged: bool,
    },
    Flood {
        vlan: u16,
        tagged: bool,
    },
}

impl<'a, P: PacketBuf> Normal<'a, P> {
    /// None when the slot holds no port (it is being removed).
    pub fn new(snap: &'a Snapshot<P>, in_slot: u16, now: u32) -> Option<Self> {
        let port = snap.port(in_slot)?;
        Some(Normal {
            snap,
            port,
            bridge: &snap.bridges[port.bridge as usize],
            in_slot,
            now,
            last_learned: None,
            last_lookup: None,
            hits: 0,
            misses: 0,
        })
    }

    /// Switches one packet.
    #[inline]
    pub fn forward(&mut self, pkt: P, stats: &PmdStats, tx: &mut TxBuffers<P>) {
        let mut one = Burst::new();
        one.push(pkt);
        self.forward_run(&mut one, stats, tx);
    }

    /// Switches a batch (which it empties). Consecutive frames with the
    /// same addresses and tag (a conversation's run, or a tunnel's outer
    /// frames) get the same verdict: learned, looked up and sent as one.
    pub fn forward_all(&mut self, pkts: &mut Burst<P>, stats: &PmdStats, tx: &mut TxBuffers<P>) {
        let Some(first) = pkts.first() else {
            return;
        };
        if pkts[1..].iter().all(|p| same_l2(first.data(), p.data())) {
            return self.forward_run(pkts, stats, tx);
        }
        let mut run = Burst::<P>::new();
        for pkt in pkts.drain(..) {
            if run.first().is_some_and(|h| !same_l2(h.data(), pkt.data())) {
                self.forward_run(&mut run, stats, tx);
            }
            run.push(pkt);
        }
        self.forward_run(&mut run, stats, tx);
    }

    /// Switches `run` (which it empties), frames whose Ethernet header and
    /// tag are the first one's (`same_l2`).
    fn forward_run(&mut self, run: &mut Burst<P>, stats: &PmdStats, tx: &mut TxBuffers<P>) {
        let in_slot = self.in_slot;
        let n = run.len() as u64;
        let Some(head) = run.first() else {
            return;
        };
        match self.judge(head.data(), n) {
            Judged::Drop(r) => {
                stats.drop(r, Some(in_slot), n);
                run.clear();
            }
            Judged::Out { out, vlan, tagged } => {
                output_all(self.snap, stats, tx, out, vlan, tagged, run)
            }
            Judged::Flood { vlan, tagged } => flood(
                self.snap,
                self.bridge,
                stats,
                tx,
                in_slot,
                vlan,
                tagged,
                run,
            ),
        }
    }

    /// NORMAL's verdict for `n` frames with Ethernet header and tag
    /// `head`'s: learns their source and looks up their destination,
    /// counting the lookup as a hit or a miss.
    #[inline(always)]
    fn judge(&mut self, head: &[u8], n: u64) -> Judged {
        let in_slot = self.in_slot;
        let (dst, src, vid) = match EthernetFrame::new_checked(head) {
            Ok(f) => (f.dst(), f.src(), f.vlan_tci().map(|t| t & 0xfff)),
            Err(_) => return Judged::Drop(DropReason::Malformed),
        };
        let tagged = vid.is_some();
        let Some(vlan) = self.port.vlan.ingress(vid) else {
            return Judged::Drop(DropReason::VlanDenied);
        };
        if !src.is_multicast() && self.last_learned != Some((vlan, src)) {
            self.bridge.macs.learn(vlan, src, in_slot, self.now);
            self.last_learned = Some((vlan, src));
            // What was just learned may be the cached destination.
            if matches!(self.last_lookup, Some((v, d, _)) if v == vlan && d == src) {
                self.last_lookup = None;
            }
        }
        let known = match self.last_lookup {
            _ if dst.is_multicast() => None,
            Some((v, d, verdict)) if v == vlan && d == dst => verdict,
            _ => {
                let out =
                    self.bridge.macs.lookup(vlan, dst, self.now).filter(|&o| {
                        o == in_slot || egress_ok(self.snap, self.port.bridge, o, vlan)
                    });
                self.last_lookup = Some((vlan, dst, out));
                out
            }
        };
        let Some(out) = known else {
            self.misses += n;
            return Judged::Flood { vlan, tagged };
        };
        self.hits += n;
        if out == in_slot {
            Judged::Drop(DropReason::SamePort)
        } else if self.port.tunnel && self.snap.port(out).is_some_and(|p| p.tunnel) {
            Judged::Drop(DropReason::SplitHorizon)
        } else {
            Judged::Out { out, vlan, tagged }
        }
    }

    /// Adds the batch's tallies to the PMD's counters.
    pub fn finish(self, stats: &PmdStats) {
        stats.mac_hits.add(self.hits);
        stats.mac_misses.add(self.misses);
    }
}

/// Forwards every packet of `pkts` (which it empties) that arrived on port
/// `in_slot` by NORMAL alone, queueing the results in `tx`. Returns the
/// bytes received.
pub fn process_batch<P: PacketBuf>(
    snap: &Snapshot<P>,
    in_slot: u16,
    pkts: &mut Burst<P>,
    now: u32,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
) -> u64 {
    if snap.port(in_slot).is_none() {
        stats.drop(DropReason::NoPort, None, pkts.len() as u64);
        pkts.clear();
        return 0;
    }
    let bytes = count_rx(stats, in_slot, pkts);
    forward_batch(snap, in_slot, pkts, now, stats, tx);
    bytes
}

/// As `process_batch` for packets already counted where they came from.
pub fn forward_batch<P: PacketBuf>(
    snap: &Snapshot<P>,
    in_slot: u16,
    pkts: &mut Burst<P>,
    now: u32,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
) {
    let Some(mut normal) = Normal::new(snap, in_slot, now) else {
        stats.drop(DropReason::NoPort, None, pkts.len() as u64);
        pkts.clear();
        return;
    };
    normal.forward_all(pkts, stats, tx);
    normal.finish(stats);
}

/// As `forward_batch` for a batch whose frames all have the first one's
/// Ethernet header and tag: one verdict for all, no frame compared.
pub fn forward_uniform<P: PacketBuf>(
    snap: &Snapshot<P>,
    in_slot: u16,
    pkts: &mut Burst<P>,
    now: u32,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
) {
    let Some(mut normal) = Normal::new(snap, in_slot, now) else {
        stats.drop(DropReason::NoPort, None, pkts.len() as u64);
        pkts.clear();
        return;
    };
    debug_assert!(pkts.iter().all(|p| same_l2(pkts[0].data(), p.data())));
    normal.forward_run(pkts, stats, tx);
    normal.finish(stats);
}

/// NORMAL for a batch received on `in_slot` whose frames all have the
/// first one's Ethernet header and tag, when it sends them all to one
/// port that is not a tunnel (learned there, or the only one a flood
/// reaches): learns, counts the lookup (and the flood), tags them as that
/// port wants and returns it, leaving them for the caller to send
/// straight there. None (nothing counted, `pkts` untouched) for any other
/// verdict: the caller runs the bridge as usual.
pub fn one_port_uniform<P: PacketBuf>(
    snap: &Snapshot<P>,
    in_slot: u16,
    pkts: &mut Burst<P>,
    now: u32,
    stats: &PmdStats,
) -> Option<u16> {
    let mut normal = Normal::new(snap, in_slot, now)?;
    let head = pkts.first()?;
    let n = pkts.len() as u64;
    let (out, vlan, tagged) = match normal.judge(head.data(), n) {
        Judged::Out { out, vlan, tagged } => (out, vlan, tagged),
        Judged::Flood { vlan, tagged } => {
            let mut to = flood_members(snap, normal.bridge, in_slot, vlan);
            let (Some(out), None) = (to.next(), to.next()) else {
                return None;
            };
            stats.flood_packets.add(n);
            (out, vlan, tagged)
        }
        Judged::Drop(_) => return None,
    };
    let port = snap.port(out).filter(|p| !p.tunnel)?;
    tag_all(port, stats, out, vlan, tagged, pkts);
    normal.finish(stats);
    Some(out)
}

/// Counts a received batch on its port and PMD. Returns its bytes.
#[inline]
pub fn count_rx<P: PacketBuf>(stats: &PmdStats, in_slot: u16, pkts: &Burst<P>) -> u64 {
    stats.rx_packets.add(pkts.len() as u64);
    count_port_rx(stats, in_slot, pkts)
}

/// Counts a batch on the port alone: what a tunnel port receives was
/// counted by the PMD already, when its outer frame arrived.
#[inline]
pub fn count_port_rx<P: PacketBuf>(stats: &PmdStats, in_slot: u16, pkts: &Burst<P>) -> u64 {
    let n = pkts.len() as u64;
    let bytes: u64 = pkts.iter().map(|p| p.wire_len() as u64).sum();
    let pc = &stats.ports[in_slot as usize];
    pc.rx_packets.add(n);
    pc.rx_bytes.add(bytes);
    bytes
}

#[inline]
fn egress_ok<P: PacketBuf>(snap: &Snapshot<P>, bridge_idx: u16, out: u16, vlan: u16) -> bool {
    // A learned slot may belong to a port that has since left the bridge or
    // the VLAN: never forward across either.
    matches!(snap.port(out), Some(p) if p.bridge == bridge_idx && p.vlan.member(vlan))
}

/// Whether frame `b` gets frame `a`'s NORMAL verdict: the same
/// addresses and EtherType, and for a tagged frame the same tag (both long
/// enough to hold it).
#[inline]
pub(crate) fn same_l2(a: &[u8], b: &[u8]) -> bool {
    const ETH: usize = 14;
    if a.len() < ETH || b.len() < ETH || a[..ETH] != b[..ETH] {
        return false;
    }
    a[12..14] != [0x81, 0] || (a.len() >= ETH + 4 && b.len() >= ETH + 4 && a[14..16] == b[14..16])
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
    run: &mut Burst<P>,
) {
    let n = run.len() as u64;
    stats.flood_packets.add(n);
    let mut pending: Option<u16> = None;
    for s in flood_members(snap, bridge, in_slot, vlan) {
        // Send copies to the previous member and keep the originals for
        // the last one: n members cost n-1 copies.
        if let Some(prev) = pending.replace(s) {
            let mut copies = Burst::new();
            for pkt in run.iter() {
                match pkt.deep_copy() {
                    Some(c) => copies.push(c),
                    None => stats.drop(DropReason::PoolEmpty, None, 1),
                }
            }
            output_all(snap, stats, tx, prev, vlan, tagged, &mut copies);
        }
    }
    match pending {
        Some(last) => output_all(snap, stats, tx, last, vlan, tagged, run),
        None => {
            stats.drop(DropReason::NoOutput, Some(in_slot), n);
            run.clear();
        }
    }
}

/// The ports a frame of VLAN `vlan` received on `in_slot` floods to.
#[inline]
fn flood_members<'a, P: PacketBuf>(
    snap: &'a Snapshot<P>,
    bridge: &'a BridgeEntry,
    in_slot: u16,
    vlan: u16,
) -> impl Iterator<Item = u16> + 'a {
    // Split horizon: what came out of a tunnel never floods into another.
    let from_tunnel = snap.port(in_slot).is_some_and(|p| p.tunnel);
    bridge.ports.iter().copied().filter(move |&s| {
        s != in_slot
            && matches!(snap.port(s), Some(p) if p.vlan.member(vlan) && !(from_tunnel && p.tunnel))
    })
}

/// Queues `pkts` (which it empties) for port `out`, each tagged as `out`
/// wants `vlan` sent.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn output_all<P: PacketBuf>(
    snap: &Snapshot<P>,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
    out: u16,
    vlan: u16,
    tagged: bool,
    pkts: &mut Burst<P>,
) {
    let Some(port) = snap.port(out) else {
        stats.drop(DropReason::NoPort, None, pkts.len() as u64);
        pkts.clear();
        return;
    };
    tag_all(port, stats, out, vlan, tagged, pkts);
    let refused = if port.tunnel {
        tx.push_tunnel_all(out, pkts, Default::default())
    } else {
        tx.push_all(out, pkts)
    };
    if refused > 0 {
        stats.tx_drop(DropReason::TxFull, out, refused);
    }
}

/// Tags `pkts`, leaving for port `out` as VLAN `vlan`, as the port wants
/// them sent (`tagged`: they carry a tag now); drops what cannot be.
#[inline]
fn tag_all<P: PacketBuf>(
    port: &PortEntry<P>,
    stats: &PmdStats,
    out: u16,
    vlan: u16,
    tagged: bool,
    pkts: &mut Burst<P>,
) {
    let want = port.vlan.egress_vid(vlan);
    if tagged || want.is_some() {
        pkts.retain(|pkt| {
            let ok = set_egress_tag(pkt, tagged, want);
            if !ok {
                stats.tx_drop(DropReason::PoolEmpty, out, 1);
            }
            ok
        });
    }
}
