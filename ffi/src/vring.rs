//! A guest's transmit virtqueue (split layout) read by rvs itself instead
//! of by rte_vhost's dequeue: the library keeps the vhost-user protocol
//! (sockets, memory table, ring addresses, features), rvs takes the frames
//! off the ring. The library takes a burst one frame at a time, and each
//! frame's descriptor and data are cache misses (the guest wrote them on
//! another core) that then follow one another; here every descriptor and
//! frame of the burst is asked for before any is copied, so the misses
//! overlap. Only what a split ring needs without packed layout, IOMMU or
//! dirty logging is done (the library keeps rings that need those), and
//! the ring goes back to the library (`SplitRing::close`) before anything
//! about the device changes.
use crate::mbuf::Mbuf;
use crate::mempool::Mempool;
use crate::prefetch;
use crate::raw;
use arrayvec::ArrayVec;
use std::sync::atomic::{fence, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

const F_NEXT: u16 = 1;
const F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
const MRG_RXBUF: u64 = 1 << 15;
const LOG_ALL: u64 = 1 << 26;
const EVENT_IDX: u64 = 1 << 29;
const VERSION_1: u64 = 1 << 32;
const ACCESS_PLATFORM: u64 = 1 << 33;
const RING_PACKED: u64 = 1 << 34;

#[repr(C)]
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[derive(Clone, Copy)]
struct Region {
    guest: u64,
    size: u64,
    host: u64,
}

/// Counts of what a device's rings held that could not become a frame
/// (each such descriptor chain is returned to the guest unread).
#[derive(Debug, Default)]
pub struct RingErrors {
    /// A descriptor index, chain or address outside the ring or the
    /// guest's memory, or an empty frame.
    pub bad_desc: AtomicU64,
    /// A frame longer than an mbuf holds.
    pub too_long: AtomicU64,
}

/// The ring of one queue, owned by the one PMD polling it (vhost.rs's
/// per-queue lock guards it).
pub struct SplitRing {
    vid: i32,
    qid: u16,
    desc: *const Desc,
    /// flags, idx, ring[size], used_event
    avail: *const u16,
    /// flags, idx, ring[size] of (id u32, len u32), avail_event
    used: *mut u16,
    size: u16,
    last_avail: u16,
    /// The guest's avail idx as last read: entries up to it are published
    /// (idx only grows), so while they cover a burst the line, which the
    /// guest's core keeps writing, is not read again.
    avail_seen: u16,
    last_used: u16,
    callfd: i32,
    event_idx: bool,
    /// VIRTIO_NET_F_MRG_RXBUF: a received frame may take several buffers.
    mergeable: bool,
    hdr_len: u32,
    regions: Vec<Region>,
    last_region: usize,
    errors: Arc<RingErrors>,
}

// SAFETY: the pointers are into guest memory mapped for the device's
// lifetime; the ring moves between threads only under vhost.rs's
// per-queue lock, which `close` takes before the library unmaps anything.
unsafe impl Send for SplitRing {}

impl SplitRing {
    /// Takes over virtqueue `qid` of device `vid` where the library left
    /// it. The caller holds the queue's lock and the device is live. None
    /// leaves the ring to the library: a packed ring, IOMMU translation or
    /// dirty-page logging (migration), or a ring or memory table the
    /// library does not describe.
    pub fn open(vid: i32, qid: u16, errors: Arc<RingErrors>) -> Option<SplitRing> {
        let mut features = 0u64;
        // SAFETY: vid is live (the caller's contract); out pointer valid.
        if unsafe { raw::rte_vhost_get_negotiated_features(vid, &mut features) } != 0 {
            return None;
        }
        if features & (LOG_ALL | ACCESS_PLATFORM | RING_PACKED) != 0 {
            return None;
        }
        let mut vr = raw::rte_vhost_vring::default();
        // SAFETY: as above; vr is a valid out struct.
        if unsafe { raw::rte_vhost_get_vhost_vring(vid, qid, &mut vr) } != 0 {
            return None;
        }
        // SAFETY: reading the union's split-ring members, which the
        // negotiated features (no RING_PACKED) say are the live ones.
        let (desc, avail, used) = unsafe {
            (
                vr.__bindgen_anon_1.desc,
                vr.__bindgen_anon_2.avail,
                vr.__bindgen_anon_3.used,
            )
        };
        let size = vr.size;
        if desc.is_null()
            || avail.is_null()
            || used.is_null()
            || size == 0
            || !size.is_power_of_two()
        {
            return None;
        }
        let mut mem: *mut raw::rte_vhost_memory = std::ptr::null_mut();
        // SAFETY: the library allocates a copy of the table for us.
        if unsafe { raw::rte_vhost_get_mem_table(vid, &mut mem) } != 0 || mem.is_null() {
            return None;
        }
        // SAFETY: mem points to nregions entries, ours to free.
        let regions = unsafe {
            let n = (*mem).nregions as usize;
            let r = std::slice::from_raw_parts((*mem).regions.as_ptr(), n)
                .iter()
                .map(|r| Region {
                    guest: r.guest_phys_addr,
                    size: r.size,
                    host: r.host_user_addr,
                })
                .collect();
            libc::free(mem as *mut libc::c_void);
            r
        };
        let (mut last_avail, mut last_used) = (0u16, 0u16);
        // SAFETY: as above, out pointers valid.
        if unsafe { raw::rte_vhost_get_vring_base(vid, qid, &mut last_avail, &mut last_used) } != 0
        {
            return None;
        }
        Some(SplitRing {
            vid,
            qid,
            desc: desc as *const Desc,
            avail: avail as *const u16,
            used: used as *mut u16,
            size,
            last_avail,
            avail_seen: last_avail,
            last_used,
            callfd: vr.callfd,
            event_idx: features & EVENT_IDX != 0,
            mergeable: features & MRG_RXBUF != 0,
            hdr_len: if features & (VERSION_1 | MRG_RXBUF) != 0 {
                12
            } else {
                10
            },
            regions,
            last_region: 0,
            errors,
        })
    }

    /// Hands the ring back to the library at the place rvs reached.
    pub fn close(self) {
        // SAFETY: the device is still registered (close runs before the
        // library frees it); plain index store.
        unsafe {
            raw::rte_vhost_set_vring_base(self.vid, self.qid, self.last_avail, self.last_used)
        };
    }

    #[inline]
    fn avail_idx(&self) -> u16 {
        // SAFETY: avail points at the mapped avail ring; idx is its second
        // u16, written by the guest: read atomically, and Acquire orders
        // the ring entries it publishes.
        unsafe { (*(self.avail.add(1) as *const AtomicU16)).load(Ordering::Acquire) }
    }

    /// How many entries the guest has made available past `last_avail`,
    /// read from the ring only when those known of are fewer than `want`.
    #[inline(always)]
    fn available(&mut self, want: usize) -> usize {
        let known = self.avail_seen.wrapping_sub(self.last_avail) as usize;
        if known >= want {
            return known;
        }
        self.avail_seen = self.avail_idx();
        self.avail_seen.wrapping_sub(self.last_avail) as usize
    }

    #[inline]
    fn guest(&mut self, addr: u64, len: u32) -> Option<*const u8> {
        let end = addr.checked_add(len as u64)?;
        let hit = |r: &Region| addr >= r.guest && end <= r.guest + r.size;
        if let Some(r) = self.regions.get(self.last_region).filter(|r| hit(r)) {
            return Some((r.host + (addr - r.guest)) as *const u8);
        }
        let i = self.regions.iter().position(hit)?;
        self.last_region = i;
        let r = self.regions[i];
        Some((r.host + (addr - r.guest)) as *const u8)
    }

    /// Copies the frame of the chain at `head` (after its virtio-net
    /// header) into `m`'s data room. False for a malformed chain or a
    /// frame that does not fit (counted).
    #[inline(always)]
    fn copy_chain(&mut self, head: u16, m: &mut raw::rte_mbuf) -> bool {
        let mask = self.size - 1;
        if head > mask {
            self.errors.bad_desc.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // SAFETY: head is within the table of `size` descriptors.
        let d = unsafe { *self.desc.add(head as usize) };
        // What virtio-user and Linux guests send without offloads: one
        // descriptor holding the header and the frame. Copied inline; any
        // other chain takes the general walk.
        let room = (m.buf_len - m.data_off) as u32;
        if d.flags & (F_NEXT | F_INDIRECT) == 0
            && d.len > self.hdr_len
            && d.len - self.hdr_len <= room
        {
            let take = d.len - self.hdr_len;
            if let Some(src) = self.guest(d.addr + self.hdr_len as u64, take) {
                // SAFETY: buf_addr + data_off is the mbuf's data area, room
                // bytes (take <= room); src maps take bytes of guest memory
                // (checked against its region).
                unsafe {
                    let dst = (m.buf_addr as *mut u8).add(m.data_off as usize);
                    copy_frame(src, dst, take as usize);
                }
                m.data_len = take as u16;
                m.pkt_len = take;
                return true;
            }
        }
        self.copy_walk(d, m)
    }

    /// `copy_chain` for any chain: several descriptors, an indirect table,
    /// a header in a descriptor of its own, and every malformed one.
    #[inline(never)]
    fn copy_walk(&mut self, mut d: Desc, m: &mut raw::rte_mbuf) -> bool {
        // An indirect chain lives in its own table in guest memory.
        let mut table = self.desc;
        let mut tlen = self.size as u32;
        if d.flags & F_INDIRECT != 0 {
            let n = d.len / 16;
            match self.guest(d.addr, d.len) {
                Some(p) if n > 0 && n <= u16::MAX as u32 => {
                    table = p as *const Desc;
                    tlen = n;
                    // SAFETY: p maps n descriptors (checked against the
                    // region above); unaligned-safe read.
                    d = unsafe { table.read_unaligned() };
                }
                _ => {
                    self.errors.bad_desc.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
        }
        let room = (m.buf_len - m.data_off) as u32;
        // SAFETY: buf_addr + data_off is the mbuf's data area, room bytes.
        let dst = unsafe { (m.buf_addr as *mut u8).add(m.data_off as usize) };
        let (mut skip, mut len) = (self.hdr_len, 0u32);
        // Past the mbuf's room the chain is still followed and checked (not
        // copied): a frame too long for it, a chain that loops and one that
        // leaves the guest's memory are told apart.
        let mut over = false;
        for _ in 0..tlen {
            let take = d.len.saturating_sub(skip);
            let off = d.len - take;
            skip -= d.len - take;
            if take > 0 {
                let Some(src) = self.guest(d.addr + off as u64, take) else {
                    self.errors.bad_desc.fetch_add(1, Ordering::Relaxed);
                    return false;
                };
                over |= len + take > room;
                if !over {
                    // SAFETY: src maps `take` bytes of guest memory (checked
                    // against its region); dst has room for them (checked).
                    unsafe {
                        std::ptr::copy_nonoverlapping(src, dst.add(len as usize), take as usize)
                    };
                    len += take;
                }
            }
            if d.flags & F_NEXT == 0 {
                if over {
                    self.errors.too_long.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                if len == 0 {
                    break;
                }
                m.data_len = len as u16;
                m.pkt_len = len;
                return true;
            }
            if d.next as u32 >= tlen {
                break;
            }
            // SAFETY: next < tlen, the length of `table`.
            d = unsafe { table.add(d.next as usize).read_unaligned() };
        }
        // Longer than the table (a loop), an index past it, or empty.
        self.errors.bad_desc.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Takes up to `N - out.len()` frames the guest made available into
    /// mbufs from `pool`, returns the descriptors to it and tells it when
    /// it asked to be told.
    pub fn dequeue<const N: usize>(
        &mut self,
        pool: &Mempool,
        out: &mut ArrayVec<Mbuf, N>,
    ) -> usize {
        let room = (N - out.len()).min(crate::BURST);
        let n = self.available(room).min(room);
        if n == 0 {
            return 0;
        }
        let mut bufs: [*mut raw::rte_mbuf; crate::BURST] = [std::ptr::null_mut(); crate::BURST];
        // SAFETY: bufs holds n pointers for the library to fill.
        if unsafe { raw::rvs_pktmbuf_alloc_bulk(pool.as_ptr(), bufs.as_mut_ptr(), n as u32) } != 0 {
            return 0;
        }
        let mask = self.size - 1;
        self.prefetch_used(n);
        // The guest wrote the descriptors and frames on another core: each
        // first touch is a cache miss. Ask for all of them before copying
        // any, so the misses overlap instead of following one another
        // (the library's dequeue takes them one frame at a time).
        let mut heads = Heads {
            h: [0; crate::BURST],
            read: 0,
            cap: n,
        };
        self.read_heads(&mut heads, n);
        let heads = &heads.h[..n];
        for &h in heads {
            // SAFETY: masked below size.
            let d = unsafe { *self.desc.add((h & mask) as usize) };
            if d.flags & F_INDIRECT == 0 {
                if let Some(p) = self.guest(d.addr, d.len.min(128)) {
                    prefetch::read(p);
                    if d.len > 64 {
                        // SAFETY: p maps at least 65 bytes.
                        prefetch::read(unsafe { p.add(64) });
                    }
                }
            }
        }
        let mut got = 0;
        for (i, (&b, &head)) in bufs.iter().zip(heads).enumerate() {
            // SAFETY: b is a freshly allocated mbuf we own.
            let ok = self.copy_chain(head, unsafe { &mut *b });
            let u = self.last_used.wrapping_add(i as u16) & mask;
            self.set_used(u, head as u32, 0);
            if ok {
                // SAFETY: b is ours; ownership moves into the Mbuf.
                out.push(Mbuf::from_nonnull(unsafe {
                    std::ptr::NonNull::new_unchecked(b)
                }));
                got += 1;
            } else {
                // SAFETY: b is ours and unused.
                unsafe { raw::rvs_pktmbuf_free(b) };
            }
        }
        self.publish(n as u16);
        got
    }

    /// Returns the next `n` buffers to the guest: both indices move on,
    /// the used idx store (Release) publishes the elements written before
    /// it, and the guest is told if it asked.
    #[inline(always)]
    fn publish(&mut self, n: u16) {
        let old = self.last_used;
        self.last_avail = self.last_avail.wrapping_add(n);
        self.last_used = self.last_used.wrapping_add(n);
        // SAFETY: used idx is the used ring's second u16.
        unsafe {
            (*(self.used.add(1) as *const AtomicU16)).store(self.last_used, Ordering::Release)
        };
        self.notify(old);
    }

    /// Copies frames from the front of `pkts` (up to BURST) into the
    /// buffers the guest made available on its receive ring, returns the
    /// buffers in the used ring and tells the guest when it asked. Returns
    /// how many frames were dealt with, and which of them (bit i: frame i)
    /// were dropped, counted in the ring's errors: a frame longer than the
    /// guest's buffers without mergeable buffers, or a malformed chain.
    /// The mbufs stay with the caller. Fewer than offered means the ring
    /// is out of buffers.
    pub fn enqueue(&mut self, pkts: &[Mbuf]) -> (usize, u32) {
        let free = self.available(pkts.len().min(crate::BURST));
        let mut heads = Heads {
            h: [0; crate::BURST],
            read: 0,
            cap: free.min(crate::BURST),
        };
        if heads.cap == 0 || pkts.is_empty() {
            return (0, 0);
        }
        // As in `dequeue`: the avail entries and descriptors of the buffers
        // the burst needs (one per frame, unless frames span several) are
        // asked for before the first is used.
        self.read_heads(&mut heads, pkts.len());
        self.prefetch_used(heads.read);
        // Each buffer's header is read (and usually left as it is: see
        // `write_hdr`) and its frame written, in lines the guest's core
        // last held: ask for all of them before the first is touched, the
        // header's for reading, the frame's for writing, so the transfers
        // overlap.
        let mask = self.size - 1;
        for (&h, p) in heads.h.iter().zip(pkts).take(heads.read) {
            // SAFETY: masked below size: a descriptor of the table.
            let d = unsafe { *self.desc.add((h & mask) as usize) };
            let want = self.hdr_len + p.pkt_len();
            if d.flags & F_INDIRECT == 0 && d.len >= want {
                if let Some(b) = self.guest(d.addr, want) {
                    prefetch::read(b);
                    // SAFETY: b maps `want` > hdr_len bytes.
                    unsafe {
                        prefetch::write(b.add(self.hdr_len as usize));
                        prefetch::write(b.add(want as usize - 1));
                    }
                }
            }
        }
        let mut used = Used::default();
        let (mut sent, mut dropped) = (0, 0u32);
        let mut short = false;
        for (i, p) in pkts.iter().take(crate::BURST).enumerate() {
            if used.n >= heads.cap {
                break;
            }
            self.read_heads(&mut heads, used.n + 1);
            // SAFETY: the caller owns the mbuf for the call.
            let m = unsafe { &*p.as_ptr() };
            if self.put_one(m, heads.h[used.n], &mut used) {
                sent += 1;
                continue;
            }
            match self.put_walk(m, &mut heads, &mut used) {
                Put::Done => sent += 1,
                Put::Dropped => {
                    sent += 1;
                    dropped |= 1 << i;
                }
                Put::NoRoom => {
                    short = true;
                    break;
                }
            }
        }
        if used.n > 0 {
            for (i, &(id, len)) in used.e.iter().take(used.n).enumerate() {
                let u = self.last_used.wrapping_add(i as u16) & mask;
                self.set_used(u, id, len);
            }
            self.publish(used.n as u16);
        }
        if short {
            // The buffers known of cannot hold the next frame: read the
            // guest's idx again next time, however many are known.
            self.avail_seen = self.last_avail;
        }
        (sent, dropped)
    }

    /// What Linux guests and virtio-user post: one descriptor per buffer,
    /// large enough for the header and the frame, and a frame in one mbuf.
    /// False leaves the frame to `put_walk`.
    #[inline(always)]
    fn put_one(&mut self, m: &raw::rte_mbuf, head: u16, used: &mut Used) -> bool {
        if head > self.size - 1 || !m.next.is_null() {
            return false;
        }
        // SAFETY: head is within the table of `size` descriptors.
        let d = unsafe { *self.desc.add(head as usize) };
        let total = self.hdr_len + m.pkt_len;
        if d.flags & (F_NEXT | F_INDIRECT) != 0 || d.len < total {
            return false;
        }
        let Some(dst) = self.guest(d.addr, total) else {
            return false;
        };
        let dst = dst as *mut u8;
        // SAFETY: dst maps `total` bytes of guest memory (checked against
        // its region), the header's and the frame's; the frame is the
        // mbuf's data_len (= pkt_len, one segment) bytes.
        unsafe {
            self.write_hdr(dst, 1);
            let src = (m.buf_addr as *const u8).add(m.data_off as usize);
            copy_frame(src, dst.add(self.hdr_len as usize), m.pkt_len as usize);
        }
        used.push(head as u32, total);
        true
    }

    /// The virtio-net header of a received frame: no offload (rvs offers
    /// none), and `num_buffers` where the header has it. Written only
    /// where it differs from what the buffer holds: a guest reuses its
    /// buffers, so the header is usually right already, and a line that
    /// is only read stays valid in the guest's cache (rte_vhost's
    /// ASSIGN_UNLESS_EQUAL does the same). Writing it anyway cost a
    /// second line transfer per frame.
    ///
    /// # Safety
    /// `dst` is readable and writable for `hdr_len` bytes.
    #[inline(always)]
    unsafe fn write_hdr(&self, dst: *mut u8, num_buffers: u16) {
        // SAFETY: the caller's contract; 10 or 12 bytes.
        unsafe {
            let head = dst.cast::<u64>();
            if self.hdr_len == 12 {
                let tail = dst.add(8).cast::<u32>();
                let want = ((num_buffers as u32) << 16).to_le();
                if head.read_unaligned() != 0 || tail.read_unaligned() != want {
                    head.write_unaligned(0);
                    tail.write_unaligned(want);
                }
            } else {
                let tail = dst.add(8).cast::<u16>();
                if head.read_unaligned() != 0 || tail.read_unaligned() != 0 {
                    head.write_unaligned(0);
                    tail.write_unaligned(0);
                }
            }
        }
    }

    /// `put_one` for every other case: an mbuf chain, descriptor chains
    /// and indirect tables, a frame spread over several buffers (mergeable
    /// receive buffers), and malformed chains. Takes heads from
    /// `heads[used.n..]`; on `NoRoom` nothing of the frame is taken.
    #[inline(never)]
    fn put_walk(&mut self, m: &raw::rte_mbuf, heads: &mut Heads, used: &mut Used) -> Put {
        let start = used.n;
        let mergeable = self.mergeable;
        let mut src = Source::new(m);
        let mut first_hdr: *mut u8 = std::ptr::null_mut();
        loop {
            if used.n >= heads.cap {
                used.n = start;
                return Put::NoRoom;
            }
            self.read_heads(heads, used.n + 1);
            let head = heads.h[used.n];
            match self.fill_chain(head, &mut src, &mut first_hdr) {
                Some(len) => used.push(head as u32, len),
                None => {
                    // A chain the guest got wrong: it gets back every buffer
                    // this frame took, empty, and the frame is dropped.
                    self.errors.bad_desc.fetch_add(1, Ordering::Relaxed);
                    used.push(head as u32, 0);
                    for e in used.e[start..used.n].iter_mut() {
                        e.1 = 0;
                    }
                    return Put::Dropped;
                }
            }
            if src.left == 0 {
                let nbuf = (used.n - start) as u16;
                if nbuf > 1 && self.hdr_len == 12 {
                    // SAFETY: first_hdr maps the header (fill_chain checked
                    // the first descriptor holds it).
                    unsafe { self.write_hdr(first_hdr, nbuf) };
                }
                return Put::Done;
            }
            if !mergeable {
                // The guest's buffers are all this size: the frame can
                // never fit, so it is dropped rather than left to block
                // the queue, and the chain stays with the guest.
                self.errors.too_long.fetch_add(1, Ordering::Relaxed);
                used.n = start;
                return Put::Dropped;
            }
        }
    }

    /// Writes what fits of `src` (after the header, when `first_hdr` is
    /// still null) into the chain at `head`; the bytes written, or None for
    /// a malformed chain.
    fn fill_chain(&mut self, head: u16, src: &mut Source, first_hdr: &mut *mut u8) -> Option<u32> {
        if head > self.size - 1 {
            return None;
        }
        let mut table = self.desc;
        let mut tlen = self.size as u32;
        // SAFETY: head < size.
        let mut d = unsafe { *self.desc.add(head as usize) };
        if d.flags & F_INDIRECT != 0 {
            let n = d.len / 16;
            let p = self
                .guest(d.addr, d.len)
                .filter(|_| n > 0 && n <= u16::MAX as u32)?;
            table = p as *const Desc;
            tlen = n;
            // SAFETY: p maps n >= 1 descriptors (checked against the region).
            d = unsafe { table.read_unaligned() };
        }
        let mut written = 0u32;
        for _ in 0..tlen {
            let mut at = 0u32;
            if first_hdr.is_null() {
                // The header is written whole into the frame's first
                // descriptor (guests never split it).
                if d.len < self.hdr_len {
                    return None;
                }
                let dst = self.guest(d.addr, self.hdr_len)? as *mut u8;
                // SAFETY: dst maps hdr_len bytes (checked).
                unsafe { self.write_hdr(dst, 1) };
                *first_hdr = dst;
                at = self.hdr_len;
                written += at;
            }
            while at < d.len && src.left > 0 {
                let (p, avail) = src.chunk();
                if avail == 0 {
                    // Segments shorter than pkt_len says: what they hold
                    // is the frame.
                    src.left = 0;
                    break;
                }
                let take = avail.min(d.len - at);
                let dst = self.guest(d.addr + at as u64, take)? as *mut u8;
                // SAFETY: dst maps `take` bytes of guest memory (checked);
                // p is readable for `avail` >= take bytes of the mbuf.
                unsafe { std::ptr::copy_nonoverlapping(p, dst, take as usize) };
                src.advance(take);
                at += take;
                written += take;
            }
            if d.flags & F_NEXT == 0 || src.left == 0 {
                return Some(written);
            }
            if d.next as u32 >= tlen {
                return None;
            }
            // SAFETY: next < tlen, the length of `table`.
            d = unsafe { table.add(d.next as usize).read_unaligned() };
        }
        // Longer than its table: a loop.
        None
    }

    /// Used-ring element `u` (below size) says buffer `id` holds `len`
    /// bytes. Written only where it differs: the guest reads the element
    /// only after the idx store that follows, and a guest that reuses its
    /// buffers in order (virtio-user) finds the same id and length there
    /// a lap later, in a line that then stays valid in its cache.
    #[inline(always)]
    fn set_used(&self, u: u16, id: u32, len: u32) {
        // SAFETY: u < size: an element (8 bytes: id, len) of the used ring
        // (u32 offset 1 of the ring, which starts with flags and idx).
        unsafe {
            let e = (self.used.add(2) as *mut u32).add(2 * u as usize);
            if e.read_volatile() != id || e.add(1).read_volatile() != len {
                e.write_volatile(id);
                e.add(1).write_volatile(len);
            }
        }
    }

    /// Reads the avail ring's entries up to `upto` of the burst (at most
    /// its `cap`), each descriptor asked for as its head is read.
    #[inline(always)]
    fn read_heads(&self, heads: &mut Heads, upto: usize) {
        let mask = self.size - 1;
        let upto = upto.min(heads.cap);
        while heads.read < upto {
            let slot = self.last_avail.wrapping_add(heads.read as u16) & mask;
            // SAFETY: slot < size: an entry of the avail ring.
            let h = unsafe { self.avail.add(2 + slot as usize).read_volatile() };
            // SAFETY: masked below size: a descriptor of the table.
            prefetch::read(unsafe { self.desc.add((h & mask) as usize) } as *const u8);
            heads.h[heads.read] = h;
            heads.read += 1;
        }
    }

    /// Asks for the used-ring lines the next `n` entries go in, for writing:
    /// the guest last read them, and the first write to each line stalled.
    #[inline(always)]
    fn prefetch_used(&self, n: usize) {
        let mask = self.size - 1;
        for i in (0..n).step_by(8) {
            let u = self.last_used.wrapping_add(i as u16) & mask;
            // SAFETY: u < size: an element of the used ring (a prefetch
            // does not fault anyway).
            prefetch::write(
                unsafe { (self.used.add(2) as *const u32).add(2 * u as usize) } as *const u8,
            );
        }
    }

    /// Signals the guest's call eventfd when it wants to hear of used
    /// buffers (VIRTIO 1.x 2.7.10: used_event with EVENT_IDX, else the
    /// NO_INTERRUPT flag). A poll-mode guest asks for nothing.
    fn notify(&self, old: u16) {
        if self.callfd < 0 {
            return;
        }
        // The guest's flag or used_event must be read after our idx store.
        fence(Ordering::SeqCst);
        let new = self.last_used;
        let want = if self.event_idx {
            // SAFETY: used_event follows the avail ring's size entries.
            let ev = unsafe { self.avail.add(2 + self.size as usize).read_volatile() };
            new.wrapping_sub(ev).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            // SAFETY: avail flags is the ring's first u16.
            let flags = unsafe { self.avail.read_volatile() };
            flags & AVAIL_F_NO_INTERRUPT == 0
        };
        if want {
            let one: u64 = 1;
            // SAFETY: callfd is the guest's eventfd; an 8-byte write of 1.
            unsafe { libc::write(self.callfd, &one as *const u64 as *const libc::c_void, 8) };
        }
    }
}

/// The heads of the guest's receive buffers an enqueue takes, read from
/// the avail ring as far as needed: `read` of them so far, at most `cap`
/// (what the guest made available, up to a burst).
struct Heads {
    h: [u16; crate::BURST],
    read: usize,
    cap: usize,
}

/// The used entries an enqueue fills, published together at its end.
struct Used {
    e: [(u32, u32); crate::BURST],
    n: usize,
}

impl Default for Used {
    fn default() -> Used {
        Used {
            e: [(0, 0); crate::BURST],
            n: 0,
        }
    }
}

impl Used {
    #[inline(always)]
    fn push(&mut self, id: u32, len: u32) {
        // n < BURST: one entry per head, and there are at most BURST heads.
        if let Some(e) = self.e.get_mut(self.n) {
            *e = (id, len);
            self.n += 1;
        }
    }
}

enum Put {
    Done,
    /// Dealt with by dropping it (counted).
    Dropped,
    /// Not enough buffers for the whole frame: nothing was taken.
    NoRoom,
}

/// Where the next byte of a (possibly chained) mbuf's frame is.
struct Source {
    seg: *const raw::rte_mbuf,
    off: u32,
    left: u32,
}

impl Source {
    fn new(m: &raw::rte_mbuf) -> Source {
        Source {
            seg: m,
            off: 0,
            left: m.pkt_len,
        }
    }

    /// The rest of the current segment (moving to the next non-empty one).
    fn chunk(&mut self) -> (*const u8, u32) {
        // SAFETY: seg is a segment of the caller's mbuf chain; pkt_len
        // bytes remain over the chain while left > 0 (DPDK's invariant),
        // so a next segment exists while this one is spent.
        unsafe {
            while self.off >= (*self.seg).data_len as u32 && !(*self.seg).next.is_null() {
                self.seg = (*self.seg).next;
                self.off = 0;
            }
            let s = &*self.seg;
            let avail = (s.data_len as u32).saturating_sub(self.off).min(self.left);
            let p = (s.buf_addr as *const u8).add(s.data_off as usize + self.off as usize);
            (p, avail)
        }
    }

    fn advance(&mut self, n: u32) {
        self.off += n;
        self.left -= n;
    }
}

/// Copies `len` bytes of a frame from guest memory into an mbuf. Frames
/// up to 128 bytes (most of a switch's) are copied in 16-byte pieces, the
/// last one overlapping, without the library call and its size dispatch
/// (6 % of the PMD's samples in an l2 profile); longer ones by `memcpy`.
///
/// # Safety
/// `src` is readable and `dst` writable for `len` bytes, not overlapping.
#[inline(always)]
unsafe fn copy_frame(src: *const u8, dst: *mut u8, len: usize) {
    type Piece = [u8; 16];
    if (16..=128).contains(&len) {
        let mut at = 0;
        while at + 16 < len {
            // SAFETY: at + 16 < len: inside both buffers.
            unsafe {
                dst.add(at)
                    .cast::<Piece>()
                    .write_unaligned(src.add(at).cast::<Piece>().read_unaligned())
            };
            at += 16;
        }
        // SAFETY: len >= 16: the last 16 bytes are inside both buffers.
        unsafe {
            dst.add(len - 16)
                .cast::<Piece>()
                .write_unaligned(src.add(len - 16).cast::<Piece>().read_unaligned())
        };
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
    }
}

#[cfg(test)]
mod tests {
    use super::copy_frame;

    #[test]
    fn copy_frame_copies_exactly_len_bytes_at_every_length() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..=260 {
            let mut dst = vec![0xeeu8; 300];
            // SAFETY: both buffers hold 300 bytes >= len.
            unsafe { copy_frame(src.as_ptr(), dst.as_mut_ptr(), len) };
            assert_eq!(&dst[..len], &src[..len], "len {len}");
            assert!(
                dst[len..].iter().all(|&b| b == 0xee),
                "len {len}: wrote past the end"
            );
        }
    }
}
