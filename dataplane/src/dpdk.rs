//! DPDK implementations of `PacketBuf` (the mbuf) and `NetDev` (ethdev and
//! vhost-user ports).
use crate::netdev::{DevStatus, NetDev};
use crate::packet::PacketBuf;
use crate::Burst;
use rvs_ffi::{
    mbuf::{free_burst, free_front},
    EthDev, Mbuf, Mempool, VhostDev,
};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

impl PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }
    #[inline]
    fn prepend(&mut self, n: u16) -> bool {
        Mbuf::prepend(self, n)
    }
    #[inline]
    fn adj(&mut self, n: u16) -> bool {
        Mbuf::adj(self, n)
    }
    #[inline]
    fn trim(&mut self, n: u16) -> bool {
        Mbuf::trim(self, n)
    }
    #[inline]
    fn deep_copy(&self) -> Option<Self> {
        Mbuf::deep_copy(self)
    }
    #[inline]
    fn wire_len(&self) -> usize {
        self.pkt_len() as usize
    }
}

/// A tiny spinlock for tx queues shared by more PMDs than the device has
/// queues (OVS does the same); uncontended when each PMD has its own queue.
struct TxLock(AtomicBool);

impl TxLock {
    #[inline]
    fn lock(&self) {
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
    }
    #[inline]
    fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// An ethdev port: NIC, net_tap (internal), net_af_packet (system), ...
pub struct EthPort {
    pub dev: EthDev,
    shared_txq: bool,
    locks: Box<[TxLock]>,
    /// Frames this long or longer were cut short before the driver saw
    /// them (a kernel packet ring's frame size): dropped and counted,
    /// never forwarded as if whole. 0: no such limit.
    rx_cut_at: usize,
    rx_cut: AtomicU64,
}

/// What fits a frame of net_af_packet's ring (2048 bytes, its default and
/// the most an mbuf takes) after the kernel's tpacket2 header and the
/// alignment before the MAC header (66 bytes): the kernel cuts anything
/// longer down to exactly this.
pub const AF_PACKET_RX_CUT: usize = 2048 - 66;

impl EthPort {
    /// A port whose driver hands on frames cut to `cut_at` bytes.
    pub fn with_rx_cut(dev: EthDev, n_pmds: usize, cut_at: usize) -> EthPort {
        EthPort {
            rx_cut_at: cut_at,
            ..EthPort::new(dev, n_pmds)
        }
    }

    pub fn new(dev: EthDev, n_pmds: usize) -> EthPort {
        let shared_txq = (dev.n_txq as usize) < n_pmds;
        let locks = (0..dev.n_txq)
            .map(|_| TxLock(AtomicBool::new(false)))
            .collect();
        EthPort {
            dev,
            shared_txq,
            locks,
            rx_cut_at: 0,
            rx_cut: AtomicU64::new(0),
        }
    }
}

impl NetDev<Mbuf> for EthPort {
    fn set_mtu(&self, mtu: u16) -> Result<(), String> {
        self.dev.set_mtu(mtu)
    }
    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        let s = self.dev.stats();
        vec![
            ("rx_missed_errors", s.rx_missed),
            ("rx_errors", s.rx_errors),
            ("tx_errors", s.tx_errors),
            ("rx_mbuf_allocation_errors", s.rx_nombuf),
            ("rx_oversize_errors", self.rx_cut.load(Ordering::Relaxed)),
        ]
    }

    fn n_rxq(&self) -> u16 {
        self.dev.n_rxq
    }

    #[inline]
    fn rx(&self, q: u16, out: &mut Burst<Mbuf>) -> usize {
        let n = self.dev.rx_burst(q, out);
        if self.rx_cut_at == 0 || n == 0 {
            return n;
        }
        let before = out.len();
        out.retain(|m| m.wire_len() < self.rx_cut_at);
        let cut = before - out.len();
        if cut > 0 {
            self.rx_cut.fetch_add(cut as u64, Ordering::Relaxed);
        }
        n - cut
    }

    #[inline]
    fn tx(&self, q: u16, pkts: &mut Burst<Mbuf>) -> usize {
        let q = q % self.dev.n_txq;
        let n = if self.shared_txq {
            self.locks[q as usize].lock();
            let n = self.dev.tx_burst(q, pkts);
            self.locks[q as usize].unlock();
            n
        } else {
            self.dev.tx_burst(q, pkts)
        };
        free_burst(pkts);
        n
    }

    fn status(&self) -> DevStatus {
        let (up, speed) = self.dev.link();
        DevStatus {
            link_up: up,
            mtu: self.dev.mtu(),
            mac: Some(self.dev.mac()),
            numa: self.dev.socket_id(),
            extra: vec![
                ("port_no".into(), self.dev.port_id.to_string()),
                ("dpdk_device".into(), self.dev.dev_name.clone()),
                ("n_rxq".into(), self.dev.n_rxq.to_string()),
                ("n_txq".into(), self.dev.n_txq.to_string()),
                ("link_speed".into(), format!("{speed}Mbps")),
            ],
        }
    }
}

/// A vhost-user port (server or client socket).
pub struct VhostPort {
    pub dev: VhostDev,
    pool: &'static Mempool,
    queues: u16,
    client: bool,
    /// options:tx-retries-max, changed in place.
    tx_retries_max: AtomicU32,
    /// Retries made (OVS's ovs_tx_retries): a guest slow to drain shows here
    /// before it shows as drops.
    tx_retries: AtomicU64,
    /// Frames rvs's own writer of the guest's receive ring dropped.
    tx_ring_drops: AtomicU64,
}

/// OVS's default vhost-user tx-retries-max.
pub const VHOST_TX_RETRIES_DEFAULT: u32 = 8;
/// The most options:tx-retries-max may say (OVS's bound).
pub const VHOST_TX_RETRIES_MAX: u32 = 32;
/// Frames a PMD holds per vhost-user port while the guest's receive ring
/// is full: as many again as QEMU's default 256-entry ring, so a guest
/// that falls a ring behind for a moment loses nothing (`txhold`).
pub const VHOST_TX_HOLD: usize = 256;

impl VhostPort {
    pub fn new(
        dev: VhostDev,
        pool: &'static Mempool,
        queues: u16,
        client: bool,
        tx_retries_max: u32,
    ) -> VhostPort {
        VhostPort {
            dev,
            pool,
            queues: queues.max(1),
            client,
            tx_retries_max: AtomicU32::new(tx_retries_max.min(VHOST_TX_RETRIES_MAX)),
            tx_retries: AtomicU64::new(0),
            tx_ring_drops: AtomicU64::new(0),
        }
    }

    /// Copies `pkts` into the guest's ring, retrying as options say;
    /// every mbuf stays with the caller.
    #[inline]
    fn enqueue(&self, q: u16, pkts: &mut Burst<Mbuf>) -> usize {
        // Spread PMDs over the queue pairs the guest enabled; pair 0 when the
        // PMD's own is not.
        let q = if self.dev.queue_enabled(q) { q } else { 0 };
        let retries = self.tx_retries_max.load(Ordering::Relaxed);
        let (sent, tries, dropped) = self.dev.enqueue(q, pkts, retries);
        if tries > 0 {
            self.tx_retries.fetch_add(tries as u64, Ordering::Relaxed);
        }
        if dropped > 0 {
            self.tx_ring_drops
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        sent
    }
}

impl NetDev<Mbuf> for VhostPort {
    fn n_rxq(&self) -> u16 {
        self.queues
    }

    #[inline]
    fn rx(&self, q: u16, out: &mut Burst<Mbuf>) -> usize {
        self.dev.dequeue(q, self.pool, out)
    }

    #[inline]
    fn tx(&self, q: u16, pkts: &mut Burst<Mbuf>) -> usize {
        let sent = self.enqueue(q, pkts);
        free_burst(pkts);
        sent
    }

    fn tx_hold(&self) -> usize {
        VHOST_TX_HOLD
    }

    #[inline]
    fn tx_keep(&self, q: u16, pkts: &mut Burst<Mbuf>) -> usize {
        let sent = self.enqueue(q, pkts);
        free_front(pkts, sent);
        sent
    }

    fn set_tx_retries(&self, max: u32) -> bool {
        self.tx_retries_max
            .store(max.min(VHOST_TX_RETRIES_MAX), Ordering::Relaxed);
        true
    }

    fn device_stats(&self) -> Vec<(&'static str, u64)> {
        let e = &self.dev.state.ring_errors;
        let t = &self.dev.state.tx_ring_errors;
        vec![
            ("ovs_tx_retries", self.tx_retries.load(Ordering::Relaxed)),
            // Chains rvs's own ring reader returned unread (vring.rs).
            ("rx_bad_descriptors", e.bad_desc.load(Ordering::Relaxed)),
            ("rx_oversize_errors", e.too_long.load(Ordering::Relaxed)),
            // Frames rvs's own ring writer dropped: longer than the
            // guest's buffers (OVS's name), or for a chain it could not
            // write (returned to the guest empty).
            (
                "ovs_tx_mtu_exceeded_drops",
                t.too_long.load(Ordering::Relaxed),
            ),
            ("tx_bad_descriptors", t.bad_desc.load(Ordering::Relaxed)),
        ]
    }

    fn device_tx_dropped(&self) -> u64 {
        self.tx_ring_drops.load(Ordering::Relaxed)
    }

    fn rxq_live(&self, q: u16) -> bool {
        self.dev.connected() && q < 64 && self.dev.queue_enabled(q)
    }

    #[inline]
    fn tx_down(&self) -> bool {
        !self.dev.connected()
    }

    fn status(&self) -> DevStatus {
        let connected = self.dev.connected();
        DevStatus {
            link_up: connected,
            mtu: self.dev.guest_mtu().or(Some(1500)),
            mac: None,
            numa: self.pool.socket,
            extra: vec![
                (
                    "mode".into(),
                    if self.client { "client" } else { "server" }.into(),
                ),
                ("socket".into(), self.dev.state.path.clone()),
                ("n_rxq".into(), self.queues.to_string()),
                (
                    "enabled_queue_pairs".into(),
                    self.dev.enabled_mask().count_ones().to_string(),
                ),
                // Who takes frames off queue pair 0's transmit ring (once
                // it has been polled) and who puts frames on its receive
                // ring (once it has been sent to): rvs itself or rte_vhost.
                (
                    "rx_ring_reader".into(),
                    ring_handler(self.dev.reads_own_ring(0)),
                ),
                (
                    "tx_ring_writer".into(),
                    ring_handler(self.dev.writes_own_ring(0)),
                ),
            ],
        }
    }
}

/// Interface status name of who handles a vhost-user ring.
fn ring_handler(own: bool) -> String {
    if own { "rvs" } else { "rte_vhost" }.into()
}
