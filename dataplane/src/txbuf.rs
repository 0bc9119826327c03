//! Per-output-port bursts collected while a batch is processed and flushed
//! at its end, so each port sees one tx call per batch.
use crate::packet::PacketBuf;
use crate::tunnel::TunnelMeta;
use crate::{Burst, BURST, MAX_PORTS};
use arrayvec::ArrayVec;

pub struct TxBuffers<P> {
    bufs: Vec<Burst<P>>,
    dirty: Vec<u16>,
    /// Tunnel fields of what was queued for tunnel ports (few per batch:
    /// searched, not indexed).
    tun: Vec<(u16, ArrayVec<TunnelMeta, BURST>)>,
}

impl<P: PacketBuf> Default for TxBuffers<P> {
    fn default() -> Self {
        TxBuffers {
            bufs: (0..MAX_PORTS).map(|_| Burst::new()).collect(),
            dirty: Vec::with_capacity(MAX_PORTS),
            tun: Vec::new(),
        }
    }
}

impl<P: PacketBuf> TxBuffers<P> {
    /// Queues `pkt` for `slot`; gives it back when that burst is full.
    #[inline]
    pub fn push(&mut self, slot: u16, pkt: P) -> Result<(), P> {
        let b = &mut self.bufs[slot as usize];
        if b.is_empty() {
            self.dirty.push(slot);
        }
        b.try_push(pkt).map_err(|e| e.element())
    }

    /// Moves all of `pkts` into `slot`'s burst, in order; what does not fit
    /// is freed. Returns how many did not fit.
    #[inline]
    pub fn push_all(&mut self, slot: u16, pkts: &mut Burst<P>) -> u64 {
        let b = &mut self.bufs[slot as usize];
        if b.is_empty() {
            if pkts.is_empty() {
                return 0;
            }
            self.dirty.push(slot);
            // The usual case (one batch, one output): the whole burst
            // moves as one block instead of packet by packet.
            *b = std::mem::take(pkts);
            return 0;
        }
        let room = b.remaining_capacity();
        let refused = pkts.len().saturating_sub(room);
        pkts.truncate(pkts.len() - refused);
        b.extend(pkts.drain(..));
        refused as u64
    }

    /// Queues `pkt` for tunnel port `slot` with the flow's tunnel fields.
    /// Every packet for a tunnel port must come this way.
    #[inline]
    pub fn push_tunnel(&mut self, slot: u16, pkt: P, meta: TunnelMeta) -> Result<(), P> {
        self.push(slot, pkt)?;
        match self.tun.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, m)) => m.push(meta),
            None => {
                let mut m = ArrayVec::new();
                m.push(meta);
                self.tun.push((slot, m));
            }
        }
        Ok(())
    }

    /// Moves all of `pkts` into tunnel port `slot`'s burst, each with the
    /// tunnel fields `meta`; what does not fit is freed. Returns how many
    /// did not fit.
    #[inline]
    pub fn push_tunnel_all(&mut self, slot: u16, pkts: &mut Burst<P>, meta: TunnelMeta) -> u64 {
        let before = self.bufs[slot as usize].len();
        let refused = self.push_all(slot, pkts);
        let added = self.bufs[slot as usize].len() - before;
        let metas = match self.tun.iter().position(|(s, _)| *s == slot) {
            Some(i) => &mut self.tun[i].1,
            None => {
                self.tun.push((slot, ArrayVec::new()));
                &mut self.tun.last_mut().expect("pushed").1
            }
        };
        // Copied as a block: extending element by element checked the
        // capacity per packet.
        let _ = metas.try_extend_from_slice(&[meta; BURST][..added]);
        refused
    }

    /// Hands every non-empty burst to `f` with its tunnel fields (empty
    /// unless the port is a tunnel); what `f` leaves in it is freed.
    #[inline]
    pub fn flush(&mut self, mut f: impl FnMut(u16, &mut Burst<P>, &[TunnelMeta])) {
        for slot in self.dirty.drain(..) {
            let b = &mut self.bufs[slot as usize];
            let meta = match self.tun.iter().position(|(s, _)| *s == slot) {
                Some(i) => self.tun.swap_remove(i).1,
                None => ArrayVec::new(),
            };
            f(slot, b, &meta);
            b.clear();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty()
    }
}
