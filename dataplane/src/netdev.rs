//! The port trait (OVS's netdev providers): one burst in, one burst out.
//! DPDK ethdev and vhost-user implement it in `dpdk`; `MemDev` is an
//! in-memory port for tests.
use crate::packet::PacketBuf;
use crate::Burst;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// What the control plane reports about a port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevStatus {
    pub link_up: bool,
    pub mtu: Option<u16>,
    pub mac: Option<[u8; 6]>,
    pub numa: i32,
    /// Extra key/values for the Interface `status` column.
    pub extra: Vec<(String, String)>,
}

pub trait NetDev<P: PacketBuf>: Send + Sync {
    /// Rx queues the PMDs must poll.
    fn n_rxq(&self) -> u16;
    /// Appends what queue `q` has, up to the burst's capacity.
    fn rx(&self, q: u16, out: &mut Burst<P>) -> usize;
    /// Sends through tx queue `q` (a PMD's index); consumes every packet and
    /// returns how many the port accepted, the rest are freed by the port.
    fn tx(&self, q: u16, pkts: &mut Burst<P>) -> usize;
    /// Frames a PMD may hold for this port while the far end's ring is
    /// full (`txhold`); 0: what `tx` refuses is dropped at once.
    fn tx_hold(&self) -> usize {
        0
    }
    /// Like `tx`, but what the port cannot take now stays in `pkts`, in
    /// order, for the PMD to hold; returns how many it took.
    fn tx_keep(&self, q: u16, pkts: &mut Burst<P>) -> usize {
        self.tx(q, pkts)
    }
    fn status(&self) -> DevStatus;
    /// Changes the MTU in place; an error means the port must be reopened
    /// for it.
    fn set_mtu(&self, _mtu: u16) -> Result<(), String> {
        Err("the MTU of this port type changes only when it is reopened".into())
    }
    /// False while rx queue `q` cannot bring anything (a vhost-user
    /// queue pair the guest has not enabled, no guest at all): the PMD
    /// then skips it. Read now and then, not on every poll.
    fn rxq_live(&self, _q: u16) -> bool {
        true
    }
    /// Applies options:tx-retries-max in place; false: this port type
    /// does not retry.
    fn set_tx_retries(&self, _max: u32) -> bool {
        false
    }
    /// True while a tx would be refused anyway (vhost guest absent).
    fn tx_down(&self) -> bool {
        false
    }
    /// Counters only the device knows (a NIC's missed frames, an empty
    /// pool at rx), with OVS's Interface statistics names.
    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Frames the device took and then dropped itself (counted in
    /// `device_stats` by reason), added to the Interface's tx_dropped.
    fn device_tx_dropped(&self) -> u64 {
        0
    }
}

/// An in-memory port: tests push frames in and collect what was sent.
pub struct MemDev<P> {
    pub rxq: Mutex<VecDeque<P>>,
    pub sent: Mutex<Vec<P>>,
    /// Frames `sent` may hold before tx refuses (a receiver's ring).
    pub tx_capacity: usize,
    /// What `tx_hold` says.
    pub hold: usize,
    /// Times frames were offered (`tx_keep` calls, `tx` included).
    pub offers: AtomicUsize,
}

impl<P> Default for MemDev<P> {
    fn default() -> Self {
        MemDev {
            rxq: Mutex::new(VecDeque::new()),
            sent: Mutex::new(Vec::new()),
            tx_capacity: usize::MAX,
            hold: 0,
            offers: AtomicUsize::new(0),
        }
    }
}

impl<P: PacketBuf> NetDev<P> for MemDev<P> {
    fn n_rxq(&self) -> u16 {
        1
    }
    fn rx(&self, _q: u16, out: &mut Burst<P>) -> usize {
        let mut q = self.rxq.lock().expect("test lock");
        let mut n = 0;
        while !out.is_full() {
            match q.pop_front() {
                Some(p) => {
                    out.push(p);
                    n += 1
                }
                None => break,
            }
        }
        n
    }
    fn tx(&self, q: u16, pkts: &mut Burst<P>) -> usize {
        let n = self.tx_keep(q, pkts);
        pkts.clear();
        n
    }
    fn tx_hold(&self) -> usize {
        self.hold
    }
    fn tx_keep(&self, _q: u16, pkts: &mut Burst<P>) -> usize {
        self.offers.fetch_add(1, Ordering::Relaxed);
        let mut s = self.sent.lock().expect("test lock");
        let room = self.tx_capacity.saturating_sub(s.len());
        let n = pkts.len().min(room);
        s.extend(pkts.drain(..n));
        n
    }
    fn status(&self) -> DevStatus {
        DevStatus {
            link_up: true,
            ..Default::default()
        }
    }
}
