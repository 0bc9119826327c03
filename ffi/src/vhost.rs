//! vhost-user ports through rte_vhost, as OVS's netdev-dpdk does it: rvsd
//! registers a socket (server, or client that reconnects by itself), the
//! vhost library calls back when a guest's device comes and goes, and the
//! PMDs dequeue from / enqueue to the guest's virtqueues by device id.
use crate::mbuf::Mbuf;
use crate::mempool::Mempool;
use crate::raw;
use crate::vring::{RingErrors, SplitRing};
use arrayvec::ArrayVec;
use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Offloads rvs does not offer to guests: every egress path (other guests,
/// NICs, kernel taps, tunnels) would have to finish partial checksums and
/// segment TSO frames. Guests then send complete frames.
const DISABLED_FEATURES: u64 = (1 << 0) // VIRTIO_NET_F_CSUM
    | (1 << 1) // GUEST_CSUM
    | (1 << 7) // GUEST_TSO4
    | (1 << 8) // GUEST_TSO6
    | (1 << 9) // GUEST_ECN
    | (1 << 10) // GUEST_UFO
    | (1 << 11) // HOST_TSO4
    | (1 << 12) // HOST_TSO6
    | (1 << 13) // HOST_ECN
    | (1 << 14); // HOST_UFO

/// Whether PMDs read guests' transmit rings themselves (`vring`) instead
/// of through rte_vhost's dequeue (on by default since it measured ahead
/// in every scenario, docs/ARCHITECTURE.md decision 49). Each ring
/// decides when it is next opened; `set_own_rx` makes every ring decide
/// again.
static OWN_RX: AtomicBool = AtomicBool::new(OWN_RX_DEFAULT);

/// `other_config:vhost-own-rx` when it is not set.
pub const OWN_RX_DEFAULT: bool = true;

/// Whether PMDs write guests' receive rings themselves (`vring`) instead
/// of through rte_vhost's enqueue (docs/ARCHITECTURE.md decision 56).
static OWN_TX: AtomicBool = AtomicBool::new(OWN_TX_DEFAULT);

/// `other_config:vhost-own-tx` when it is not set.
pub const OWN_TX_DEFAULT: bool = true;

/// Queue pairs whose rings rvs may handle itself; beyond them the library
/// always does.
const OWN_RINGS: usize = 16;

/// Who handles a guest's ring: its transmit ring (rvs reads it) or its
/// receive ring (rvs writes it).
enum Reader {
    /// Nobody since the device (re)started or changed: decided at the next
    /// dequeue.
    Undecided,
    Library,
    Own(SplitRing),
    /// The library for one dequeue, then decided again: after a live
    /// migration it puts a RARP for the guest in front of that burst.
    LibraryOnce,
}

/// One transmit ring's reader, behind a try-lock: the PMD polling the
/// queue holds it for one dequeue; the vhost thread takes it (after
/// setting `paused`) to hand the ring back to the library before any
/// message changes the device, and while rxqs move between PMDs a second
/// poller finds it taken and moves on.
struct OwnRing {
    busy: AtomicBool,
    paused: AtomicBool,
    reader: UnsafeCell<Reader>,
}

// SAFETY: `reader` is only touched by whoever holds `busy`.
unsafe impl Sync for OwnRing {}

impl OwnRing {
    fn new() -> OwnRing {
        OwnRing {
            busy: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            reader: UnsafeCell::new(Reader::Undecided),
        }
    }

    /// `f` on the reader, waiting for a PMD that holds it (one dequeue).
    /// For the control and vhost threads; a PMD only tries (`dequeue`).
    fn with<R>(&self, f: impl FnOnce(&mut Reader) -> R) -> R {
        while self.busy.swap(true, Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        // SAFETY: busy is ours.
        let r = f(unsafe { &mut *self.reader.get() });
        self.busy.store(false, Ordering::Release);
        r
    }

    /// Stops PMDs from reading the ring and gives it back to the library
    /// where rvs left it (`sync`; not for a device that is going away).
    /// Returns with the ring paused, its reader undecided.
    fn pause(&self, sync: bool) {
        self.paused.store(true, Ordering::SeqCst);
        self.with(|r| {
            if let Reader::Own(ring) = std::mem::replace(r, Reader::Undecided) {
                if sync {
                    ring.close();
                }
            }
        });
    }
}

/// Live state of one vhost-user socket, shared by the control thread, the
/// vhost library's callbacks and the PMDs.
pub struct VhostState {
    pub path: String,
    /// The connected device id, or -1.
    vid: AtomicI32,
    /// Bit q set: the guest enabled queue pair q's virtqueue (guest tx side).
    enabled: AtomicU64,
    /// Times a guest connected, for status reporting.
    pub connects: AtomicU64,
    /// The guest's transmit rings, per queue pair.
    rings: Box<[OwnRing]>,
    /// The guest's receive rings, per queue pair.
    rx_rings: Box<[OwnRing]>,
    /// Bit q set: the guest enabled queue pair q's receive ring.
    rx_enabled: AtomicU64,
    /// What the guest's transmit rings held that was not a frame.
    pub ring_errors: Arc<RingErrors>,
    /// What rvs's writer of the guest's receive rings dropped: frames
    /// longer than the guest's buffers, chains it could not write.
    pub tx_ring_errors: Arc<RingErrors>,
}

impl VhostState {
    fn pause_rings(&self, sync: bool) {
        for r in self.rings.iter().chain(self.rx_rings.iter()) {
            r.pause(sync);
        }
    }

    fn resume_rings(&self) {
        for r in self.rings.iter().chain(self.rx_rings.iter()) {
            r.paused.store(false, Ordering::SeqCst);
        }
    }
}

/// Makes PMDs read guests' transmit rings themselves (`on`) or through
/// the library, from each ring's next dequeue.
pub fn set_own_rx(on: bool) {
    set_own(&OWN_RX, on);
}

/// Whether PMDs read guests' transmit rings themselves.
pub fn own_rx() -> bool {
    OWN_RX.load(Ordering::Relaxed)
}

/// Makes PMDs write guests' receive rings themselves (`on`) or through
/// the library, from each ring's next enqueue.
pub fn set_own_tx(on: bool) {
    set_own(&OWN_TX, on);
}

/// Whether PMDs write guests' receive rings themselves.
pub fn own_tx() -> bool {
    OWN_TX.load(Ordering::Relaxed)
}

/// Sets `flag` and, when it changed, hands every ring back to the
/// library so that each decides again at its next use.
fn set_own(flag: &AtomicBool, on: bool) {
    if flag.swap(on, Ordering::SeqCst) == on {
        return;
    }
    let states: Vec<Arc<VhostState>> = match registry().lock() {
        Ok(r) => r.values().cloned().collect(),
        Err(_) => return,
    };
    for s in states {
        s.pause_rings(true);
        s.resume_rings();
    }
}

type Hook = Box<dyn Fn() + Send + Sync>;
static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<VhostState>>>> = OnceLock::new();
static QUIESCE: OnceLock<Hook> = OnceLock::new();
static CHANGED: OnceLock<Hook> = OnceLock::new();

fn registry() -> &'static Mutex<HashMap<String, Arc<VhostState>>> {
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// `quiesce` must return only once no PMD can still be inside a call that
/// uses a device id read before it was called; `changed` is told that a
/// device came or went (to refresh link state in the database).
pub fn set_hooks(quiesce: Hook, changed: Hook) {
    let _ = QUIESCE.set(quiesce);
    let _ = CHANGED.set(changed);
}

fn state_of(vid: i32) -> Option<Arc<VhostState>> {
    let mut buf = [0 as libc::c_char; 4096];
    // SAFETY: buf is writable for its length; the library NUL-terminates.
    let rc = unsafe { raw::rte_vhost_get_ifname(vid, buf.as_mut_ptr(), buf.len()) };
    if rc < 0 {
        return None;
    }
    // SAFETY: NUL-terminated by rte_vhost_get_ifname.
    let path = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    registry().lock().ok()?.get(&path).cloned()
}

unsafe extern "C" fn new_device(vid: i32) -> i32 {
    match state_of(vid) {
        Some(s) => {
            // The guest enables its rings before the device is ready, so the
            // vring_state_changed calls may all have come already; if none
            // did, take every ring the guest set up as enabled (the library
            // itself skips disabled rings).
            if s.enabled.load(Ordering::Acquire) == 0 {
                // SAFETY: vid is the device being announced to us.
                let rings = unsafe { raw::rte_vhost_get_vring_num(vid) } as u32;
                let pairs = (rings / 2).min(64);
                let mask = if pairs >= 64 {
                    u64::MAX
                } else {
                    (1u64 << pairs) - 1
                };
                s.enabled.store(mask, Ordering::Release);
            }
            if s.rx_enabled.load(Ordering::Acquire) == 0 {
                // SAFETY: as above.
                let rings = unsafe { raw::rte_vhost_get_vring_num(vid) } as u32;
                let pairs = (rings.div_ceil(2)).min(64);
                let mask = if pairs >= 64 {
                    u64::MAX
                } else {
                    (1u64 << pairs) - 1
                };
                s.rx_enabled.store(mask, Ordering::Release);
            }
            // Every message the guest sends from now on first hands the
            // rings back to the library (`pre_msg`).
            // SAFETY: vid is the device being announced; EXTERN is 'static.
            unsafe {
                raw::rte_vhost_extern_callback_register(vid, &EXTERN.0, std::ptr::null_mut());
            }
            // PMDs poll: a guest that kicks after every burst it queues or
            // every receive buffer it refills pays a VM exit (QEMU) or an
            // eventfd write (virtio-user) for nothing. OVS-DPDK and the
            // vhost PMD turn the kicks off the same way.
            // SAFETY: vid is the device being announced to us.
            let rings = unsafe { raw::rte_vhost_get_vring_num(vid) };
            for q in 0..rings {
                // SAFETY: as above; q is below the device's ring count.
                if unsafe { raw::rte_vhost_enable_guest_notification(vid, q, 0) } != 0 {
                    log::warn!(
                        "vhost-user {}: could not turn off kicks on ring {q}",
                        s.path
                    );
                }
            }
            s.resume_rings();
            s.vid.store(vid, Ordering::Release);
            s.connects.fetch_add(1, Ordering::Relaxed);
            log::info!("vhost-user {}: guest connected (device {vid})", s.path);
            if let Some(h) = CHANGED.get() {
                h();
            }
            0
        }
        None => -1,
    }
}

unsafe extern "C" fn destroy_device(vid: i32) {
    if let Some(s) = state_of(vid) {
        s.vid.store(-1, Ordering::Release);
        s.enabled.store(0, Ordering::Release);
        s.rx_enabled.store(0, Ordering::Release);
        // The library unmaps the rings when we return.
        s.pause_rings(false);
        // The library frees the virtqueues when we return: wait until no PMD
        // can still be dequeuing or enqueuing with the old id.
        if let Some(q) = QUIESCE.get() {
            q();
        }
        log::info!("vhost-user {}: guest disconnected (device {vid})", s.path);
        if let Some(h) = CHANGED.get() {
            h();
        }
    }
}

unsafe extern "C" fn vring_state_changed(vid: i32, queue_id: u16, enable: i32) -> i32 {
    if let Some(s) = state_of(vid) {
        // Virtqueue 2q is the guest's rx ring, 2q+1 its tx ring: track pairs
        // by the guest's tx ring, which is what rvs polls.
        let pair = (queue_id / 2) as u64;
        if pair < 64 {
            let mask = if queue_id % 2 == 1 {
                &s.enabled
            } else {
                &s.rx_enabled
            };
            if enable != 0 {
                mask.fetch_or(1 << pair, Ordering::AcqRel);
            } else {
                mask.fetch_and(!(1 << pair), Ordering::AcqRel);
            }
        }
    }
    0
}

/// vhost-user request numbers the hooks look at.
const SEND_RARP: u32 = 19;

/// Before the library handles any message of a running device: the
/// rings rvs reads go back to it (the message may move or unmap them,
/// or ask where they are), and stay paused until `post_msg`.
unsafe extern "C" fn pre_msg(vid: i32, msg: *mut libc::c_void) -> raw::rte_vhost_msg_result {
    if let Some(s) = state_of(vid) {
        s.pause_rings(true);
        // SAFETY: msg points at the message, whose first field is the
        // request number (a u32).
        let request = unsafe { *(msg as *const u32) };
        if request == SEND_RARP {
            // The library announces a migrated guest with a RARP in its
            // next dequeue: let it do that one.
            if let Some(r) = s.rings.first() {
                r.with(|x| *x = Reader::LibraryOnce);
            }
        }
    }
    raw::RTE_VHOST_MSG_RESULT_NOT_HANDLED
}

unsafe extern "C" fn post_msg(vid: i32, _msg: *mut libc::c_void) -> raw::rte_vhost_msg_result {
    if let Some(s) = state_of(vid) {
        s.resume_rings();
    }
    raw::RTE_VHOST_MSG_RESULT_NOT_HANDLED
}

struct Extern(raw::rte_vhost_user_extern_ops);
// SAFETY: immutable function pointers.
unsafe impl Sync for Extern {}

static EXTERN: Extern = Extern(raw::rte_vhost_user_extern_ops {
    pre_msg_handle: Some(pre_msg),
    post_msg_handle: Some(post_msg),
});

struct Ops(raw::rte_vhost_device_ops);
// SAFETY: the table is immutable function pointers; its reserved pointer is null.
unsafe impl Sync for Ops {}

static OPS: Ops = Ops(raw::rte_vhost_device_ops {
    new_device: Some(new_device),
    destroy_device: Some(destroy_device),
    vring_state_changed: Some(vring_state_changed),
    features_changed: None,
    new_connection: None,
    destroy_connection: None,
    guest_notified: None,
    reserved: [std::ptr::null_mut(); 1],
});

/// One vhost-user socket. Dropping it unregisters the socket (and with it
/// any connected device, after the PMDs have let go of it).
pub struct VhostDev {
    pub state: Arc<VhostState>,
    cpath: CString,
}

impl VhostDev {
    /// Registers `path` as a vhost-user socket: `client` = rvsd connects (and
    /// reconnects) to a server such as QEMU; otherwise rvsd listens there.
    pub fn register(path: &str, client: bool) -> Result<VhostDev, String> {
        let cpath = CString::new(path).map_err(|_| "vhost socket path contains NUL".to_string())?;
        let state = Arc::new(VhostState {
            path: path.into(),
            vid: AtomicI32::new(-1),
            enabled: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            rings: (0..OWN_RINGS).map(|_| OwnRing::new()).collect(),
            rx_rings: (0..OWN_RINGS).map(|_| OwnRing::new()).collect(),
            rx_enabled: AtomicU64::new(0),
            ring_errors: Arc::default(),
            tx_ring_errors: Arc::default(),
        });
        {
            let mut reg = registry().lock().map_err(|_| "vhost registry poisoned")?;
            if reg.contains_key(path) {
                return Err(format!(
                    "vhost-user socket {path} is already used by another port"
                ));
            }
            reg.insert(path.into(), state.clone());
        }
        let fail = |what: &str| {
            if let Ok(mut reg) = registry().lock() {
                reg.remove(path);
            }
            Err(format!(
                "{what} for vhost-user socket {path} failed: {}",
                crate::eal::last_error()
            ))
        };
        let mut flags: u64 = 0;
        if client {
            // Client sockets reconnect by themselves unless NO_RECONNECT is given.
            flags |= raw::RTE_VHOST_USER_CLIENT as u64;
        }
        // SAFETY: cpath is a valid C string; the library copies it.
        if unsafe { raw::rte_vhost_driver_register(cpath.as_ptr(), flags) } != 0 {
            return fail("rte_vhost_driver_register");
        }
        // SAFETY: the socket was registered above; OPS is 'static.
        unsafe {
            raw::rte_vhost_driver_disable_features(cpath.as_ptr(), DISABLED_FEATURES);
            if raw::rte_vhost_driver_callback_register(cpath.as_ptr(), &OPS.0) != 0 {
                raw::rte_vhost_driver_unregister(cpath.as_ptr());
                return fail("rte_vhost_driver_callback_register");
            }
            if raw::rte_vhost_driver_start(cpath.as_ptr()) != 0 {
                raw::rte_vhost_driver_unregister(cpath.as_ptr());
                return fail("rte_vhost_driver_start");
            }
        }
        Ok(VhostDev { state, cpath })
    }

    #[inline]
    pub fn vid(&self) -> i32 {
        self.state.vid.load(Ordering::Acquire)
    }

    pub fn connected(&self) -> bool {
        self.vid() >= 0
    }

    /// Queue pairs the guest has enabled (its tx ring).
    #[inline]
    pub fn enabled_mask(&self) -> u64 {
        self.state.enabled.load(Ordering::Relaxed)
    }

    /// Whether the guest enabled queue pair `q` (its tx ring).
    #[inline]
    pub fn queue_enabled(&self, q: u16) -> bool {
        self.enabled_mask() & (1u64 << (q & 63)) != 0
    }

    /// Frames the guest sent on queue pair `q`, appended to `out`.
    #[inline]
    pub fn dequeue<const N: usize>(
        &self,
        q: u16,
        pool: &Mempool,
        out: &mut ArrayVec<Mbuf, N>,
    ) -> usize {
        let vid = self.vid();
        if vid < 0 || !self.queue_enabled(q) {
            return 0;
        }
        let Some(r) = self.state.rings.get(q as usize) else {
            return library_dequeue(vid, q, pool, out);
        };
        if r.busy.swap(true, Ordering::SeqCst) {
            return 0;
        }
        let n = if r.paused.load(Ordering::SeqCst) {
            0
        } else {
            // SAFETY: busy is ours, and the device was live after we took
            // it: destroy_device pauses the ring (waiting for busy) before
            // the library frees anything.
            let reader = unsafe { &mut *r.reader.get() };
            if matches!(reader, Reader::Undecided) {
                *reader = open_reader(vid, q * 2 + 1, &self.state.ring_errors);
            }
            match reader {
                Reader::Own(ring) => ring.dequeue(pool, out),
                Reader::LibraryOnce => {
                    *reader = Reader::Undecided;
                    library_dequeue(vid, q, pool, out)
                }
                _ => library_dequeue(vid, q, pool, out),
            }
        };
        r.busy.store(false, Ordering::Release);
        n
    }

    /// Whether rvs reads queue pair `q`'s transmit ring itself now (for
    /// status reporting; false while undecided).
    pub fn reads_own_ring(&self, q: u16) -> bool {
        self.state
            .rings
            .get(q as usize)
            .is_some_and(|r| r.with(|x| matches!(x, Reader::Own(_))))
    }

    /// Copies the frames into the guest's queue pair `q`, leaving every
    /// mbuf with the caller (the guest took copies of the first `sent`).
    /// While the guest's ring takes some but not all, tries again up to
    /// `retries` times (OVS's tx-retries-max: the guest may be draining
    /// the ring right now; a call that takes nothing ends it). Returns how
    /// many the guest took, the retries made, and how many frames rvs's
    /// own writer dropped (taken out of `pkts` and counted in
    /// `tx_ring_errors`: too long for the guest's buffers, or a chain it
    /// could not write).
    #[inline]
    pub fn enqueue<const N: usize>(
        &self,
        q: u16,
        pkts: &mut ArrayVec<Mbuf, N>,
        retries: u32,
    ) -> (usize, u32, usize) {
        let vid = self.vid();
        if vid < 0 {
            return (0, 0, 0);
        }
        let Some(r) = self.state.rx_rings.get(q as usize) else {
            return library_enqueue(vid, q, pkts, retries);
        };
        // Several PMDs may send to one queue (the library locks it too);
        // the holder keeps it for one enqueue.
        while r.busy.swap(true, Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        if r.paused.load(Ordering::SeqCst) {
            r.busy.store(false, Ordering::Release);
            return (0, 0, 0);
        }
        // SAFETY: busy is ours, and the device was live after we took it:
        // destroy_device pauses the ring (waiting for busy) before the
        // library frees anything.
        let writer = unsafe { &mut *r.reader.get() };
        if matches!(writer, Reader::Undecided) {
            *writer = open_writer(vid, q, &self.state);
        }
        if let Reader::Own(ring) = writer {
            let out = if self.state.rx_enabled.load(Ordering::Relaxed) & (1u64 << (q & 63)) != 0 {
                own_enqueue(ring, pkts, retries)
            } else {
                (0, 0, 0)
            };
            r.busy.store(false, Ordering::Release);
            return out;
        }
        // The library's enqueue waits for the queue's lock, which its
        // message handling may hold while `pre_msg` waits for `busy`.
        r.busy.store(false, Ordering::Release);
        library_enqueue(vid, q, pkts, retries)
    }

    /// Whether rvs writes queue pair `q`'s receive ring itself now (for
    /// status reporting; false while undecided).
    pub fn writes_own_ring(&self, q: u16) -> bool {
        self.state
            .rx_rings
            .get(q as usize)
            .is_some_and(|r| r.with(|x| matches!(x, Reader::Own(_))))
    }

    /// The guest's MTU when it told one (VIRTIO_NET_F_MTU).
    pub fn guest_mtu(&self) -> Option<u16> {
        let vid = self.vid();
        if vid < 0 {
            return None;
        }
        let mut mtu = 0u16;
        // SAFETY: vid read live; mtu is a valid out pointer.
        let rc = unsafe { raw::rte_vhost_get_mtu(vid, &mut mtu) };
        (rc == 0).then_some(mtu)
    }
}

/// rvs's own reader of virtqueue `qid` when rvs reads rings itself and
/// can read this one, else the library.
///
/// Only guests' transmit rings: writing their receive rings the same way
/// (prefetching the buffers before writing them) measured slower than the
/// library in rvs-bench (benches/RESULTS.md, 2026-11-23 15:35-16:35).
fn open_reader(vid: i32, qid: u16, errors: &Arc<RingErrors>) -> Reader {
    if !OWN_RX.load(Ordering::Relaxed) {
        return Reader::Library;
    }
    match SplitRing::open(vid, qid, errors.clone()) {
        Some(ring) => Reader::Own(ring),
        None => Reader::Library,
    }
}

/// rvs's own writer of queue pair `q`'s receive ring when rvs writes
/// rings itself and can write this one, else the library.
fn open_writer(vid: i32, q: u16, s: &VhostState) -> Reader {
    if !OWN_TX.load(Ordering::Relaxed) {
        return Reader::Library;
    }
    match SplitRing::open(vid, q * 2, s.tx_ring_errors.clone()) {
        Some(ring) => Reader::Own(ring),
        None => Reader::Library,
    }
}

/// Frames into the guest's receive ring, retried as `VhostDev::enqueue`
/// says; the frames the ring dropped are taken out of `pkts` (freed) and
/// counted in the third number.
#[inline]
fn own_enqueue<const N: usize>(
    ring: &mut SplitRing,
    pkts: &mut ArrayVec<Mbuf, N>,
    retries: u32,
) -> (usize, u32, usize) {
    let mut dropped: ArrayVec<usize, N> = ArrayVec::new();
    let (sent, tries) = with_retries(pkts.len(), retries, |sent| {
        let (took, mask) = ring.enqueue(&pkts[sent..]);
        let mut bits = mask;
        while bits != 0 {
            // Indices below N: bits name frames of pkts[sent..].
            let _ = dropped.try_push(sent + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
        took
    });
    // Rare (a frame too long for the guest, a broken chain): the frames
    // after each keep their order, so `sent` frames still lead.
    for &i in dropped.iter().rev() {
        pkts.remove(i);
    }
    (sent - dropped.len(), tries, dropped.len())
}

/// rte_vhost's enqueue of `pkts` into queue pair `q`'s receive ring, as
/// `VhostDev::enqueue` says.
#[inline]
fn library_enqueue<const N: usize>(
    vid: i32,
    q: u16,
    pkts: &mut ArrayVec<Mbuf, N>,
    retries: u32,
) -> (usize, u32, usize) {
    let n = pkts.len();
    let base = pkts.as_mut_ptr() as *mut *mut raw::rte_mbuf;
    let (sent, tries) = with_retries(n, retries, |sent| {
        // SAFETY: as in library_dequeue; pkts[sent..] are owned mbufs;
        // enqueue copies their data and leaves them with us.
        let took =
            unsafe { raw::rte_vhost_enqueue_burst(vid, q * 2, base.add(sent), (n - sent) as u16) };
        took as usize
    });
    (sent, tries, 0)
}

/// Calls `send(sent)` until all `n` frames went, a call took none, or
/// `retries` more calls were made; returns the frames sent and retries.
#[inline(always)]
fn with_retries(n: usize, retries: u32, mut send: impl FnMut(usize) -> usize) -> (usize, u32) {
    let (mut sent, mut tries) = (0usize, 0u32);
    while sent < n {
        let took = send(sent);
        sent += took;
        if took == 0 || sent == n || tries >= retries {
            break;
        }
        tries += 1;
    }
    (sent, tries)
}

/// rte_vhost's dequeue of queue pair `q` into `out`.
#[inline]
fn library_dequeue<const N: usize>(
    vid: i32,
    q: u16,
    pool: &Mempool,
    out: &mut ArrayVec<Mbuf, N>,
) -> usize {
    let len = out.len();
    let room = (N - len) as u16;
    // SAFETY: vid was live when read and stays valid until we return
    // (destroy_device waits for PMD quiescence); the spare capacity holds
    // room mbuf pointers that the library fills with n owned mbufs.
    unsafe {
        let ptr = (out.as_mut_ptr() as *mut *mut raw::rte_mbuf).add(len);
        let n = raw::rte_vhost_dequeue_burst(vid, q * 2 + 1, pool.as_ptr(), ptr, room) as usize;
        out.set_len(len + n);
        n
    }
}

impl Drop for VhostDev {
    fn drop(&mut self) {
        // Unregistering fails with EBUSY while the library is in the middle
        // of a (re)connection: retry briefly, as OVS does.
        for _ in 0..100 {
            // SAFETY: cpath was registered by us; destroy_device may run from
            // here and waits for PMD quiescence, which never needs this thread.
            if unsafe { raw::rte_vhost_driver_unregister(self.cpath.as_ptr()) } == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if let Ok(mut reg) = registry().lock() {
            reg.remove(&self.state.path);
        }
        let _ = std::fs::remove_file(&self.state.path);
    }
}
