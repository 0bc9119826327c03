//! The switch's fast path. Everything here is safe Rust and, except for the
//! `dpdk` module (behind the `dpdk` feature), compiles and is tested without
//! DPDK: the pipeline works on the `PacketBuf` trait that both DPDK's mbuf
//! and a plain heap buffer implement.
//!
//! A packet's way: `pmd` polls a `netdev` rx queue into a burst, `normal`
//! parses (`wire`), applies VLAN rules (`vlan`) and learns/looks up MACs
//! (`mac_table`), queues copies per output port (`txbuf`), and the PMD
//! flushes them to each port's `netdev`. Config reaches PMDs as immutable
//! `snapshot`s; `stats` are per PMD and summed when read.
#![deny(unsafe_code)]

pub mod conntrack;
pub mod flow;
pub mod flow_batch;
pub mod mac_table;
pub mod netdev;
pub mod normal;
pub mod packet;
pub mod pmd;
pub mod qos;
pub mod snapshot;
pub mod stats;
pub mod tunnel;
pub mod txbuf;
pub mod txhold;
pub mod vlan;
pub mod wire;

#[cfg(feature = "dpdk")]
pub mod dpdk;

/// Packets per rx/tx burst: DPDK's customary 32 (OVS's NETDEV_MAX_BURST).
pub const BURST: usize = 32;

/// Port slots a snapshot can hold; a slot indexes per-port state everywhere.
pub const MAX_PORTS: usize = 1024;

pub type Burst<P> = arrayvec::ArrayVec<P, BURST>;
