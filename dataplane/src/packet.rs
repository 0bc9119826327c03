//! The packet-buffer trait the pipeline works on, with a heap implementation
//! for tests and tools (DPDK's mbuf implements it in `dpdk`).

pub trait PacketBuf: Send + Sized {
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the front by `n` bytes; false (and no change) without headroom.
    fn prepend(&mut self, n: u16) -> bool;
    /// Removes `n` bytes from the front.
    fn adj(&mut self, n: u16) -> bool;
    /// Removes `n` bytes from the end; false (and no change) when the
    /// packet is shorter or spans several buffers.
    fn trim(&mut self, n: u16) -> bool;
    /// An independent copy, None when no buffer is left.
    fn deep_copy(&self) -> Option<Self>;
    /// Bytes on the wire (all segments).
    fn wire_len(&self) -> usize {
        self.data().len()
    }
}

/// A packet in a Vec with headroom, as an mbuf has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapBuf {
    buf: Vec<u8>,
    off: usize,
}

impl HeapBuf {
    pub const HEADROOM: usize = 128;

    pub fn new(frame: &[u8]) -> HeapBuf {
        let mut buf = vec![0u8; Self::HEADROOM];
        buf.extend_from_slice(frame);
        HeapBuf {
            buf,
            off: Self::HEADROOM,
        }
    }

    /// Makes this buffer hold `frame` again, reusing its allocation (for
    /// measurements that must not count an allocator).
    pub fn reset(&mut self, frame: &[u8]) {
        self.buf.truncate(Self::HEADROOM);
        self.buf.extend_from_slice(frame);
        self.off = Self::HEADROOM;
    }
}

impl PacketBuf for HeapBuf {
    fn data(&self) -> &[u8] {
        &self.buf[self.off..]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..]
    }
    fn prepend(&mut self, n: u16) -> bool {
        if self.off < n as usize {
            return false;
        }
        self.off -= n as usize;
        true
    }
    fn adj(&mut self, n: u16) -> bool {
        if self.buf.len() - self.off < n as usize {
            return false;
        }
        self.off += n as usize;
        true
    }
    fn trim(&mut self, n: u16) -> bool {
        if self.buf.len() - self.off < n as usize {
            return false;
        }
        self.buf.truncate(self.buf.len() - n as usize);
        true
    }
    fn deep_copy(&self) -> Option<Self> {
        Some(self.clone())
    }
}
