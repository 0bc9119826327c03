//! The only crate that touches DPDK directly: `raw` holds the bindgen output
//! and the C shim's declarations; the other modules are the one thin safe
//! layer over them (EAL, mempools, owned mbufs, ethdev ports, rte_vhost).
//! Everything above this crate is safe Rust.

pub mod raw {
    #![allow(
        non_upper_case_globals,
        non_camel_case_types,
        non_snake_case,
        dead_code,
        clippy::all
    )]
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub mod eal;
pub mod ethdev;
pub mod mbuf;
pub mod mempool;
pub mod prefetch;
pub mod vhost;
pub mod vring;

pub use ethdev::{EthDev, EthStats};
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use vhost::VhostDev;

/// The most packets one burst call moves.
pub const BURST: usize = 32;

/// A burst of owned mbufs, the unit every rx/tx call works on.
pub type MbufBurst = arrayvec::ArrayVec<Mbuf, BURST>;
