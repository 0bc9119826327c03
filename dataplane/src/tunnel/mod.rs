//! Userspace tunnelling as OVS-DPDK does it: a frame output to a `gre` or
//! `vxlan` port gets an outer header and is sent by the underlay bridge as
//! if its internal port (which holds the local endpoint address) had sent
//! it; tunnel traffic that the underlay bridge delivers to such an
//! internal port is decapsulated instead and received by the tunnel port
//! its key/VNI and remote select.
pub mod conf;
pub mod decap;
pub mod encap;
pub mod path;
pub mod state;
pub mod stats;

pub use crate::flow::extract::TunnelMeta;
pub use conf::{Param, TunnelConf, TunnelKind};

/// What PMDs tell the control thread about the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TnlEvent {
    /// An ARP reply to one of our endpoint addresses went by.
    Neighbor { slot: u16, ip: u32, mac: [u8; 6] },
    /// A `remote_ip=flow` tunnel needs this next hop resolved.
    Resolve { slot: u16, ip: u32, src: u32 },
}

/// The device behind a tunnel port: it has no queues of its own (PMDs
/// encapsulate what is sent to it and feed it what they decapsulate).
pub struct TunnelDev;

impl<P: crate::packet::PacketBuf> crate::netdev::NetDev<P> for TunnelDev {
    fn n_rxq(&self) -> u16 {
        0
    }
    fn rx(&self, _q: u16, _out: &mut crate::Burst<P>) -> usize {
        0
    }
    fn tx(&self, _q: u16, pkts: &mut crate::Burst<P>) -> usize {
        pkts.clear();
        0
    }
    fn status(&self) -> crate::netdev::DevStatus {
        crate::netdev::DevStatus {
            link_up: true,
            ..Default::default()
        }
    }
}
