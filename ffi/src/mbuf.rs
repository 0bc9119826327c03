//! An owned mbuf: dropping it returns it to its pool. Only the first segment
//! is exposed as packet data; rvs configures pools so frames up to the port
//! MTU fit in one segment.
use crate::raw;
use std::ptr::NonNull;

#[repr(transparent)]
pub struct Mbuf(NonNull<raw::rte_mbuf>);

// SAFETY: an Mbuf is uniquely owned; moving it between threads moves the
// ownership of the buffer, which DPDK allows (mempools are thread-safe).
unsafe impl Send for Mbuf {}

impl Mbuf {
    pub(crate) fn from_nonnull(p: NonNull<raw::rte_mbuf>) -> Mbuf {
        Mbuf(p)
    }

    #[inline]
    fn m(&self) -> &raw::rte_mbuf {
        // SAFETY: we own a valid mbuf for as long as self lives.
        unsafe { self.0.as_ref() }
    }

    #[inline]
    fn m_mut(&mut self) -> &mut raw::rte_mbuf {
        // SAFETY: unique ownership of a valid mbuf.
        unsafe { self.0.as_mut() }
    }

    /// Bytes of the first segment.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's
        // buffer by DPDK's invariants, and we own the mbuf.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as in data(), with unique access.
        unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.m().pkt_len
    }

    /// Prefetches the line holding the data's last `n` bytes (a receiver
    /// about to read a trailer written by another core: issuing every
    /// frame's miss before reading any overlaps them).
    #[inline]
    pub fn prefetch_tail(&self, n: u16) {
        let m = self.m();
        let off = m.data_off as usize + (m.data_len.saturating_sub(n)) as usize;
        crate::prefetch::read((m.buf_addr as *const u8).wrapping_add(off));
    }

    #[inline]
    pub fn headroom(&self) -> u16 {
        self.m().data_off
    }

    /// Grows the packet at the front by `n` bytes; false when the headroom
    /// is too small (nothing changes then).
    #[inline]
    pub fn prepend(&mut self, n: u16) -> bool {
        let m = self.m_mut();
        if m.data_off < n {
            return false;
        }
        m.data_off -= n;
        m.data_len += n;
        m.pkt_len += n as u32;
        true
    }

    /// Removes `n` bytes from the front; false when the segment is shorter.
    #[inline]
    pub fn adj(&mut self, n: u16) -> bool {
        let m = self.m_mut();
        if m.data_len < n {
            return false;
        }
        m.data_off += n;
        m.data_len -= n;
        m.pkt_len -= n as u32;
        true
    }

    /// Grows the packet at the end by `n` bytes of the single segment.
    pub fn append(&mut self, n: u16) -> bool {
        let m = self.m_mut();
        let room = m.buf_len as u32 - m.data_off as u32 - m.data_len as u32;
        if m.nb_segs != 1 || (n as u32) > room {
            return false;
        }
        m.data_len += n;
        m.pkt_len += n as u32;
        true
    }

    /// Removes `n` bytes from the end of a single-segment packet.
    pub fn trim(&mut self, n: u16) -> bool {
        let m = self.m_mut();
        if m.nb_segs != 1 || m.data_len < n {
            return false;
        }
        m.data_len -= n;
        m.pkt_len -= n as u32;
        true
    }

    /// A deep copy from the same pool (for flooding, where each egress port
    /// may tag the frame differently). None when the pool is empty.
    pub fn deep_copy(&self) -> Option<Mbuf> {
        let m = self.m();
        // SAFETY: m is a valid mbuf with a valid pool; the copy is a new mbuf
        // we own, or NULL.
        let c = unsafe { raw::rte_pktmbuf_copy(self.0.as_ptr(), m.pool, 0, u32::MAX) };
        NonNull::new(c).map(Mbuf)
    }

    pub fn as_ptr(&self) -> *mut raw::rte_mbuf {
        self.0.as_ptr()
    }

    /// Gives up ownership (the buffer now belongs to whoever got the pointer).
    pub fn into_raw(self) -> *mut raw::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is returned to its pool exactly once.
        unsafe { raw::rvs_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Frees the first `n` of a burst with one bulk call; the rest move to
/// the front, in order (what a port took, and what it left for later).
pub fn free_front<const N: usize>(pkts: &mut arrayvec::ArrayVec<Mbuf, N>, n: usize) {
    let (len, n) = (pkts.len(), n.min(pkts.len()));
    if n == 0 {
        return;
    }
    // SAFETY: the first n entries are owned mbuf pointers, freed once here;
    // the len - n after them are moved bitwise to the front and the length
    // set to len - n, so each remaining mbuf is owned exactly once.
    unsafe {
        let p = pkts.as_mut_ptr();
        raw::rvs_pktmbuf_free_bulk(p as *mut *mut raw::rte_mbuf, n as u32);
        std::ptr::copy(p.add(n), p, len - n);
        pkts.set_len(len - n);
    }
}

/// Frees a whole burst with one bulk call.
pub fn free_burst<const N: usize>(pkts: &mut arrayvec::ArrayVec<Mbuf, N>) {
    if pkts.is_empty() {
        return;
    }
    // SAFETY: Mbuf is repr(transparent) over a non-null rte_mbuf pointer, so
    // the ArrayVec's storage is an array of len owned mbuf pointers; after the
    // bulk free we set the length to 0 so none is dropped again.
    unsafe {
        raw::rvs_pktmbuf_free_bulk(
            pkts.as_mut_ptr() as *mut *mut raw::rte_mbuf,
            pkts.len() as u32,
        );
        pkts.set_len(0);
    }
}

/// Removes the first `n` mbufs of `pkts` without freeing them: they were
/// handed to a driver that now owns them.
pub(crate) fn forget_front<const N: usize>(pkts: &mut arrayvec::ArrayVec<Mbuf, N>, n: usize) {
    for m in pkts.drain(..n) {
        std::mem::forget(m);
    }
}
