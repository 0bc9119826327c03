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
        let at = self.bufs[slot as usize].len() - 1;
        self.set_metas(slot, at, 1, meta);
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
        self.set_metas(slot, before, added, meta);
        refused
    }

    /// Records `meta` for packets `at..at + n` of tunnel port `slot`'s
    /// burst. The list stops after the last packet whose fields are not
    /// the defaults (a tunnel with fixed key and remote, the usual one,
    /// keeps none): what is past its end has the defaults.
    #[inline]
    fn set_metas(&mut self, slot: u16, at: usize, n: usize, meta: TunnelMeta) {
        if meta == TunnelMeta::default() || n == 0 {
            return;
        }
        let metas = match self.tun.iter().position(|(s, _)| *s == slot) {
            Some(i) => &mut self.tun[i].1,
            None => {
                self.tun.push((slot, ArrayVec::new()));
                &mut self.tun.last_mut().expect("pushed").1
            }
        };
        let pad = at.saturating_sub(metas.len());
        // Copied as blocks: extending element by element checked the
        // capacity per packet.
        let _ = metas.try_extend_from_slice(&[TunnelMeta::default(); BURST][..pad]);
        let _ = metas.try_extend_from_slice(&[meta; BURST][..n]);
    }

    /// Hands every non-empty burst to `f` with its tunnel fields (empty
    /// unless the port is a tunnel; packets past the list's end have the
    /// default fields); what `f` leaves in it is freed.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HeapBuf;

    fn pkt(tag: u8) -> HeapBuf {
        HeapBuf::new(&[tag; 60])
    }

    fn meta(id: u64) -> TunnelMeta {
        TunnelMeta { id, src: 1, dst: 2 }
    }

    /// What `flush` hands over for `slot`: each packet's tag and fields.
    fn flushed(tx: &mut TxBuffers<HeapBuf>) -> Vec<(u16, Vec<(u8, TunnelMeta)>)> {
        let mut out = Vec::new();
        tx.flush(|slot, b, metas| {
            let per = b
                .iter()
                .enumerate()
                .map(|(i, p)| (p.data()[0], metas.get(i).copied().unwrap_or_default()))
                .collect();
            out.push((slot, per));
        });
        out
    }

    #[test]
    fn default_fields_are_not_stored_and_others_keep_their_places() {
        let mut tx = TxBuffers::<HeapBuf>::default();
        let none = TunnelMeta::default();
        let mut b: Burst<HeapBuf> = [pkt(1), pkt(2)].into_iter().collect();
        assert_eq!(tx.push_tunnel_all(3, &mut b, none), 0);
        assert!(tx.tun.is_empty(), "a fixed tunnel keeps no fields");
        assert!(tx.push_tunnel(3, pkt(3), meta(9)).is_ok());
        let mut b: Burst<HeapBuf> = [pkt(4)].into_iter().collect();
        tx.push_tunnel_all(3, &mut b, none);
        let mut b: Burst<HeapBuf> = [pkt(5), pkt(6)].into_iter().collect();
        tx.push_tunnel_all(3, &mut b, meta(7));
        assert!(tx.push_tunnel(4, pkt(8), none).is_ok());
        assert_eq!(
            flushed(&mut tx),
            vec![
                (
                    3,
                    vec![
                        (1, none),
                        (2, none),
                        (3, meta(9)),
                        (4, none),
                        (5, meta(7)),
                        (6, meta(7)),
                    ]
                ),
                (4, vec![(8, none)]),
            ]
        );
        assert!(tx.is_empty() && tx.tun.is_empty());
    }
}
