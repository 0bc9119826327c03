//! Packet-buffer pools, one per NUMA node. Pools live as long as the process:
//! an mbuf may outlive every port that used it, never its pool.
use crate::mbuf::Mbuf;
use crate::raw;
use std::ffi::CString;
use std::ptr::NonNull;

pub struct Mempool {
    ptr: NonNull<raw::rte_mempool>,
    pub name: String,
    pub size: u32,
    pub socket: i32,
    pub data_room: u16,
}

// SAFETY: rte_mempool is designed for concurrent use from many lcores.
unsafe impl Send for Mempool {}
// SAFETY: as above; all operations on it are thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs with `data_room` bytes of buffer each on
    /// NUMA node `socket`. The pool is never freed (see module docs).
    pub fn create(
        name: &str,
        n: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<&'static Mempool, String> {
        let cname = CString::new(name).map_err(|_| "pool name contains NUL".to_string())?;
        // SAFETY: cname is a valid C string; DPDK copies it.
        let p =
            unsafe { raw::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket) };
        let ptr = NonNull::new(p).ok_or_else(|| {
            format!(
                "cannot create mbuf pool {name} ({n} mbufs of {data_room} bytes on NUMA node {socket}): {}",
                crate::eal::last_error()
            )
        })?;
        Ok(Box::leak(Box::new(Mempool {
            ptr,
            name: name.into(),
            size: n,
            socket,
            data_room,
        })))
    }

    pub fn as_ptr(&self) -> *mut raw::rte_mempool {
        self.ptr.as_ptr()
    }

    /// Mbufs free in the pool (ring plus per-lcore caches).
    pub fn avail(&self) -> u32 {
        // SAFETY: the pool is valid for the life of the process.
        unsafe { raw::rvs_mempool_avail_count(self.ptr.as_ptr()) }
    }

    pub fn in_use(&self) -> u32 {
        // SAFETY: as above.
        unsafe { raw::rvs_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid; a non-null result is a fresh mbuf we own.
        let m = unsafe { raw::rvs_pktmbuf_alloc(self.ptr.as_ptr()) };
        NonNull::new(m).map(Mbuf::from_nonnull)
    }
}
