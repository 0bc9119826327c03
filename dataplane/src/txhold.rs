//! Frames a PMD holds for ports whose far end had no room, sent first and
//! in order on the PMD's next turns.
//!
//! A NIC's transmit ring is thousands of entries that the wire drains at a
//! steady rate; a guest's receive ring is as short as 256 entries and is
//! drained by a vCPU that the host may take away for a moment. Dropping
//! what does not fit right then (what OVS-DPDK does after its retries)
//! loses frames at loads the guest keeps up with on average. Holding them
//! for the next turn costs the PMD nothing while the ring has room, and a
//! guest that stops draining altogether costs at most `limit` mbufs for
//! `STALL_NS`.
use crate::netdev::NetDev;
use crate::packet::PacketBuf;
use crate::snapshot::{PortEntry, Snapshot};
use crate::stats::{DropReason, PmdStats};
use crate::Burst;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};

/// How long held frames wait for a port that takes none of them before
/// they are dropped (counted as `tx-queue-full`): longer than a host
/// scheduler takes a vCPU away (a few ms), short enough that a guest that
/// stopped draining pins its hold's mbufs only briefly.
pub const STALL_NS: u64 = 10_000_000;

struct Held<P: PacketBuf> {
    slot: u16,
    /// The device the frames are for: a slot reused by another port (even
    /// at the same address, which a live Weak rules out) does not get them.
    dev: Weak<dyn NetDev<P>>,
    /// The frames next in line, offered as they are; what the port does
    /// not take stays here, in order. (Draining a burst from `frames` for
    /// each offer and putting the refused back one by one was most of the
    /// hold's cost with a receiver a little slower than the PMD: it takes
    /// a few frames per offer.)
    next: Burst<P>,
    /// Their bytes on the wire.
    next_bytes: u64,
    /// The frames behind `next`.
    frames: VecDeque<P>,
    /// When the port last took a held frame, or when holding began.
    progress_ns: u64,
    /// The port's last offer this turn left frames here: what else comes
    /// for it this turn joins them without another offer. (Finding a full
    /// guest ring costs a read of a line its core keeps writing; offering
    /// each batch of the turn again only repeated that read.)
    refused: bool,
}

impl<P: PacketBuf> Held<P> {
    fn len(&self) -> usize {
        self.next.len() + self.frames.len()
    }
}

/// One PMD's held frames, per output port.
pub struct TxHold<P: PacketBuf> {
    queues: Vec<Held<P>>,
    /// Frames held over all ports (the turn's one check).
    total: usize,
}

impl<P: PacketBuf> Default for TxHold<P> {
    fn default() -> Self {
        TxHold {
            queues: Vec::new(),
            total: 0,
        }
    }
}

fn wire_bytes<P: PacketBuf>(b: &Burst<P>) -> u64 {
    b.iter().map(|p| p.wire_len() as u64).sum()
}

/// `tx_keep` of `b` (`bytes` on the wire) with what the port took
/// counted; returns how many it took and the bytes of what is left.
#[inline]
fn keep_counted<P: PacketBuf>(
    port: &PortEntry<P>,
    slot: u16,
    txq: u16,
    stats: &PmdStats,
    b: &mut Burst<P>,
    bytes: u64,
) -> (usize, u64) {
    let sent = port.dev.tx_keep(txq, b);
    let left = wire_bytes(b);
    stats.tx_sent(slot, sent as u64, bytes - left);
    (sent, left)
}

fn same_dev<P: PacketBuf>(w: &Weak<dyn NetDev<P>>, d: &Arc<dyn NetDev<P>>) -> bool {
    Weak::as_ptr(w) as *const () == Arc::as_ptr(d) as *const ()
}

impl<P: PacketBuf> TxHold<P> {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Frames held for `slot` now.
    pub fn len(&self, slot: u16) -> usize {
        self.queues
            .iter()
            .find(|h| h.slot == slot)
            .map_or(0, |h| h.len())
    }

    /// Sends `b` to `port` (slot `slot`, tx queue `txq`), behind whatever
    /// is held for it; what the port cannot take now is held up to its
    /// `tx_hold()` frames, the rest dropped and counted. `b` ends empty.
    #[inline]
    pub fn send(
        &mut self,
        port: &PortEntry<P>,
        slot: u16,
        txq: u16,
        stats: &PmdStats,
        b: &mut Burst<P>,
        now_ns: u64,
    ) {
        let n = b.len() as u64;
        if port.dev.tx_down() {
            stats.tx_drop(DropReason::TxPortDown, slot, n);
            b.clear();
            return;
        }
        if self.total > 0 {
            if let Some(h) = self.queues.iter().find(|h| h.slot == slot && h.len() > 0) {
                let refused = h.refused;
                self.append(slot, b, port.dev.tx_hold(), stats);
                if !refused {
                    self.release_slot(port, slot, txq, stats, now_ns);
                }
                return;
            }
        }
        let bytes = wire_bytes(b);
        let limit = port.dev.tx_hold();
        if limit == 0 {
            let sent = port.dev.tx(txq, b) as u64;
            // What the driver took is not known per frame after the call:
            // scale (exact when all or none went).
            stats.tx_sent(slot, sent, bytes * sent / n.max(1));
            if sent < n {
                stats.tx_drop(DropReason::TxFull, slot, n - sent);
            }
            return;
        }
        keep_counted(port, slot, txq, stats, b, bytes);
        if !b.is_empty() {
            self.start(slot, &port.dev, limit, now_ns);
            self.append(slot, b, limit, stats);
        }
    }

    /// Offers every port its held frames again (once per PMD turn while
    /// any are held); frames for ports that are gone or down are dropped.
    pub fn release(&mut self, snap: &Snapshot<P>, txq: u16, stats: &PmdStats, now_ns: u64) {
        let mut i = 0;
        while i < self.queues.len() {
            let slot = self.queues[i].slot;
            if self.queues[i].len() == 0 {
                i += 1;
                continue;
            }
            match snap
                .port(slot)
                .filter(|p| same_dev(&self.queues[i].dev, &p.dev))
            {
                Some(port) if !port.dev.tx_down() => {
                    self.release_slot(port, slot, txq, stats, now_ns)
                }
                Some(_) => self.discard(i, DropReason::TxPortDown, stats),
                None => self.discard(i, DropReason::NoPort, stats),
            }
            i += 1;
        }
        if self.total == 0 {
            // Entries (and their buffers) stay for ports that are still
            // there, so holding again allocates nothing on the fast path;
            // ports that are gone lose theirs.
            self.queues.retain(|h| h.dev.strong_count() > 0);
        }
    }

    fn start(&mut self, slot: u16, dev: &Arc<dyn NetDev<P>>, limit: usize, now_ns: u64) {
        match self.queues.iter_mut().find(|h| h.slot == slot) {
            Some(h) => {
                if !same_dev(&h.dev, dev) {
                    h.dev = Arc::downgrade(dev);
                }
                h.progress_ns = now_ns;
                h.refused = true;
            }
            None => self.queues.push(Held {
                slot,
                dev: Arc::downgrade(dev),
                next: Burst::new(),
                next_bytes: 0,
                frames: VecDeque::with_capacity(limit),
                progress_ns: now_ns,
                refused: true,
            }),
        }
    }

    /// Moves `b` behind what `slot` holds, up to `limit` held.
    fn append(&mut self, slot: u16, b: &mut Burst<P>, limit: usize, stats: &PmdStats) {
        let Some(h) = self.queues.iter_mut().find(|h| h.slot == slot) else {
            stats.tx_drop(DropReason::TxFull, slot, b.len() as u64);
            b.clear();
            return;
        };
        let room = limit.saturating_sub(h.len());
        let take = b.len().min(room);
        let refused = (b.len() - take) as u64;
        b.truncate(take);
        let took = b.len();
        h.frames.extend(b.drain(..));
        self.total += took;
        stats.tx_held.add(took as u64);
        stats.ports[slot as usize].tx_held.add(took as u64);
        if refused > 0 {
            stats.tx_drop(DropReason::TxFull, slot, refused);
        }
    }

    /// Sends what `slot` holds, a burst at a time, until the port stops
    /// taking; drops it all when the port has taken nothing for STALL_NS.
    fn release_slot(
        &mut self,
        port: &PortEntry<P>,
        slot: u16,
        txq: u16,
        stats: &PmdStats,
        now_ns: u64,
    ) {
        let Some(i) = self.queues.iter().position(|h| h.slot == slot) else {
            return;
        };
        let h = &mut self.queues[i];
        loop {
            let n = (h.next.capacity() - h.next.len()).min(h.frames.len());
            for p in h.frames.drain(..n) {
                h.next_bytes += p.wire_len() as u64;
                h.next.push(p);
            }
            let offered = h.next.len();
            if offered == 0 {
                break;
            }
            let (sent, left) = keep_counted(port, slot, txq, stats, &mut h.next, h.next_bytes);
            h.next_bytes = left;
            if sent == 0 {
                break;
            }
            self.total -= sent;
            h.progress_ns = now_ns;
            if sent < offered {
                break;
            }
        }
        h.refused = h.len() > 0;
        if h.len() > 0 && now_ns.saturating_sub(h.progress_ns) > STALL_NS {
            self.discard(i, DropReason::TxFull, stats);
        }
    }

    fn discard(&mut self, i: usize, r: DropReason, stats: &PmdStats) {
        let h = &mut self.queues[i];
        let n = h.len();
        h.next.clear();
        h.next_bytes = 0;
        h.frames.clear();
        self.total -= n;
        match r {
            // The slot may be another port's by now: not its drop.
            DropReason::NoPort => stats.drop(r, None, n as u64),
            _ => stats.tx_drop(r, h.slot, n as u64),
        }
    }
}
