//! Per-output-port bursts collected while a batch is processed and flushed
//! at its end, so each port sees one tx call per batch.
use crate::packet::PacketBuf;
use crate::{Burst, MAX_PORTS};

pub struct TxBuffers<P> {
    bufs: Vec<Burst<P>>,
    dirty: Vec<u16>,
}

impl<P: PacketBuf> Default for TxBuffers<P> {
    fn default() -> Self {
        TxBuffers {
            bufs: (0..MAX_PORTS).map(|_| Burst::new()).collect(),
            dirty: Vec::with_capacity(MAX_PORTS),
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

    /// Hands every non-empty burst to `f`; what `f` leaves in it is freed.
    #[inline]
    pub fn flush(&mut self, mut f: impl FnMut(u16, &mut Burst<P>)) {
        for slot in self.dirty.drain(..) {
            let b = &mut self.bufs[slot as usize];
            f(slot, b);
            b.clear();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty()
    }
}
