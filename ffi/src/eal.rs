//! EAL start-up and the few process-wide DPDK facts rvsd reports.
use crate::raw;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Initialises the EAL once per process. `args` excludes the program name.
pub fn init(args: &[String]) -> Result<(), String> {
    if INITIALISED.swap(true, Ordering::SeqCst) {
        return Err("the DPDK EAL is already initialised".into());
    }
    let mut owned: Vec<CString> = Vec::with_capacity(args.len() + 1);
    owned.push(CString::new("rvsd").expect("no NUL"));
    for a in args {
        owned.push(
            CString::new(a.as_str()).map_err(|_| format!("EAL argument {a:?} contains NUL"))?,
        );
    }
    // The EAL keeps pointers into argv for the life of the process: leak it.
    let mut argv: Vec<*mut libc::c_char> = owned.into_iter().map(|c| c.into_raw()).collect();
    let argc = argv.len() as i32;
    let argv_ptr = argv.as_mut_ptr();
    std::mem::forget(argv);
    // SAFETY: argv holds argc valid NUL-terminated strings that are never freed.
    let rc = unsafe { raw::rte_eal_init(argc, argv_ptr) };
    if rc < 0 {
        INITIALISED.store(false, Ordering::SeqCst);
        return Err(format!("rte_eal_init failed: {}", last_error()));
    }
    Ok(())
}

pub fn is_initialised() -> bool {
    INITIALISED.load(Ordering::SeqCst)
}

/// Text of the last DPDK error (rte_errno).
pub fn last_error() -> String {
    // SAFETY: rte_errno is a per-thread int; rte_strerror returns a static or
    // per-thread buffer that stays valid until the next call on this thread.
    unsafe {
        let e = raw::rvs_errno();
        CStr::from_ptr(raw::rte_strerror(e))
            .to_string_lossy()
            .into_owned()
    }
}

/// Text for a negative DPDK return code.
pub fn strerror(rc: i32) -> String {
    // SAFETY: as in last_error.
    unsafe {
        CStr::from_ptr(raw::rte_strerror(rc.abs()))
            .to_string_lossy()
            .into_owned()
    }
}

pub fn version() -> String {
    // SAFETY: rte_version returns a pointer to a static string.
    unsafe {
        CStr::from_ptr(raw::rte_version())
            .to_string_lossy()
            .into_owned()
    }
}

pub fn has_hugepages() -> bool {
    // SAFETY: a plain query of EAL state, valid after init.
    unsafe { raw::rte_eal_has_hugepages() != 0 }
}

pub fn socket_count() -> u32 {
    // SAFETY: a plain query of EAL state.
    unsafe { raw::rte_socket_count() }
}

pub fn tsc_hz() -> u64 {
    // SAFETY: a plain query of EAL state.
    unsafe { raw::rte_get_tsc_hz() }
}

#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: reads the time-stamp counter; no memory is touched.
    unsafe { raw::rvs_rdtsc() }
}

/// Makes the calling (non-EAL) thread an EAL thread so that it gets an lcore
/// id and with it per-lcore mempool caches: without one every mbuf alloc and
/// free would go to the shared ring.
pub fn register_thread() -> Result<u32, String> {
    // SAFETY: registers the current thread with the EAL; valid after init.
    let rc = unsafe { raw::rte_thread_register() };
    if rc < 0 {
        return Err(format!("rte_thread_register: {}", last_error()));
    }
    // SAFETY: reads this thread's lcore id.
    Ok(unsafe { raw::rvs_lcore_id() })
}

pub fn unregister_thread() {
    // SAFETY: the thread was registered by register_thread (or is a no-op).
    unsafe { raw::rte_thread_unregister() }
}

/// Releases EAL resources (hugepage files, vhost sockets) at exit.
pub fn cleanup() {
    if INITIALISED.swap(false, Ordering::SeqCst) {
        // SAFETY: no DPDK object is used after this point by the caller.
        unsafe {
            raw::rte_eal_cleanup();
        }
    }
}
