//! DPDK ethdev ports: NICs (PCI) and virtual devices (net_tap for internal
//! ports, net_af_packet for system ports, net_null/net_ring/net_pcap ...).
use crate::mbuf::{forget_front, Mbuf};
use crate::mempool::Mempool;
use crate::{eal, raw};
use arrayvec::ArrayVec;
use std::ffi::CString;
use std::mem::MaybeUninit;

#[derive(Debug, Default, Clone, Copy)]
pub struct EthStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
}

pub struct EthDev {
    pub port_id: u16,
    /// The device name DPDK knows (first field of the devargs).
    pub dev_name: String,
    pub n_rxq: u16,
    pub n_txq: u16,
    probed_by_us: bool,
}

/// Hot-plugs the device named by `devargs` (a PCI address or a vdev string)
/// and returns its ethdev port id. A device that is already probed (a NIC
/// bound at EAL start) is found by name instead.
pub fn probe(devargs: &str) -> Result<(u16, String, bool), String> {
    let name = devargs.split(',').next().unwrap_or("").trim().to_string();
    if name.is_empty() {
        return Err("empty dpdk-devargs".into());
    }
    if let Some(id) = port_by_name(&name) {
        return Ok((id, name, false));
    }
    let c = CString::new(devargs).map_err(|_| "dpdk-devargs contains NUL".to_string())?;
    // SAFETY: c is a valid C string; rte_dev_probe copies what it keeps.
    let rc = unsafe { raw::rte_dev_probe(c.as_ptr()) };
    if rc < 0 {
        return Err(format!(
            "Error attaching device '{devargs}' to DPDK: {}",
            eal::strerror(rc)
        ));
    }
    port_by_name(&name)
        .map(|id| (id, name.clone(), true))
        .ok_or_else(|| {
            format!("device '{name}' probed but no ethdev port appeared (not a network device?)")
        })
}

fn port_by_name(name: &str) -> Option<u16> {
    let c = CString::new(name).ok()?;
    let mut id: u16 = 0;
    // SAFETY: c is valid, id is a valid out pointer.
    let rc = unsafe { raw::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
    (rc == 0).then_some(id)
}

impl EthDev {
    /// Probes, configures (`n_rxq` rx and `n_txq` tx queues of `ring` descriptors,
    /// rx buffers from `pool`), enables promiscuous mode and starts the port.
    pub fn open(
        devargs: &str,
        n_rxq: u16,
        n_txq: u16,
        ring: u16,
        mtu: Option<u16>,
        pool: &Mempool,
    ) -> Result<EthDev, String> {
        let (port_id, dev_name, probed_by_us) = probe(devargs)?;
        let mut dev = EthDev {
            port_id,
            dev_name,
            n_rxq,
            n_txq,
            probed_by_us,
        };
        let info = dev.info()?;
        dev.n_rxq = n_rxq.min(info.max_rx_queues).max(1);
        dev.n_txq = n_txq.min(info.max_tx_queues).max(1);
        let conf: raw::rte_eth_conf = Default::default();
        // SAFETY: conf is a valid zeroed configuration (no offloads).
        let mut rc = unsafe { raw::rte_eth_dev_configure(port_id, dev.n_rxq, dev.n_txq, &conf) };
        if rc < 0 && dev.n_rxq != dev.n_txq {
            // Some drivers (net_tap) want as many tx as rx queues: extra tx
            // queues cost nothing, PMDs use the first ones.
            let n = dev
                .n_rxq
                .max(dev.n_txq)
                .min(info.max_rx_queues)
                .min(info.max_tx_queues);
            dev.n_rxq = n;
            dev.n_txq = n;
            // SAFETY: as above.
            rc = unsafe { raw::rte_eth_dev_configure(port_id, dev.n_rxq, dev.n_txq, &conf) };
        }
        if rc < 0 {
            return Err(format!("cannot configure {devargs}: {}", eal::strerror(rc)));
        }
        if let Some(mtu) = mtu {
            // SAFETY: valid port id.
            let rc = unsafe { raw::rte_eth_dev_set_mtu(port_id, mtu) };
            if rc < 0 {
                log::warn!("{devargs}: cannot set MTU {mtu}: {}", eal::strerror(rc));
            }
        }
        // SAFETY: valid port id.
        let socket = unsafe { raw::rte_eth_dev_socket_id(port_id) };
        let socket = if socket < 0 { pool.socket } else { socket } as u32;
        let rx_ring = ring.clamp(
            info.rx_desc_lim.nb_min.max(1),
            info.rx_desc_lim.nb_max.max(ring),
        );
        let tx_ring = ring.clamp(
            info.tx_desc_lim.nb_min.max(1),
            info.tx_desc_lim.nb_max.max(ring),
        );
        for q in 0..dev.n_rxq {
            // SAFETY: valid port, queue index below the configured count, valid pool.
            let rc = unsafe {
                raw::rte_eth_rx_queue_setup(
                    port_id,
                    q,
                    rx_ring,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if rc < 0 {
                return Err(format!(
                    "cannot set up rx queue {q} of {devargs}: {}",
                    eal::strerror(rc)
                ));
            }
        }
        for q in 0..dev.n_txq {
            // SAFETY: as above.
            let rc = unsafe {
                raw::rte_eth_tx_queue_setup(port_id, q, tx_ring, socket, std::ptr::null())
            };
            if rc < 0 {
                return Err(format!(
                    "cannot set up tx queue {q} of {devargs}: {}",
                    eal::strerror(rc)
                ));
            }
        }
        // SAFETY: valid, configured port.
        let rc = unsafe { raw::rte_eth_dev_start(port_id) };
        if rc < 0 {
            return Err(format!("cannot start {devargs}: {}", eal::strerror(rc)));
        }
        // SAFETY: valid, started port. Failure is harmless (some vdevs are
        // always promiscuous).
        unsafe { raw::rte_eth_promiscuous_enable(port_id) };
        Ok(dev)
    }

    fn info(&self) -> Result<raw::rte_eth_dev_info, String> {
        let mut info = MaybeUninit::<raw::rte_eth_dev_info>::zeroed();
        // SAFETY: info is a valid out pointer for one rte_eth_dev_info.
        let rc = unsafe { raw::rte_eth_dev_info_get(self.port_id, info.as_mut_ptr()) };
        if rc < 0 {
            return Err(format!(
                "rte_eth_dev_info_get({}): {}",
                self.dev_name,
                eal::strerror(rc)
            ));
        }
        // SAFETY: initialised by the successful call (and zeroed before).
        Ok(unsafe { info.assume_init() })
    }

    pub fn socket_id(&self) -> i32 {
        // SAFETY: valid port id.
        unsafe { raw::rte_eth_dev_socket_id(self.port_id) }
    }

    /// Receives up to the burst's free capacity.
    #[inline]
    pub fn rx_burst<const N: usize>(&self, q: u16, out: &mut ArrayVec<Mbuf, N>) -> usize {
        let len = out.len();
        let room = (N - len) as u16;
        // SAFETY: the ArrayVec's spare capacity holds room mbuf pointers
        // (Mbuf is repr(transparent)); the driver writes n <= room owned
        // mbufs there and we extend the length by exactly n.
        unsafe {
            let ptr = (out.as_mut_ptr() as *mut *mut raw::rte_mbuf).add(len);
            let n = raw::rvs_eth_rx_burst(self.port_id, q, ptr, room) as usize;
            out.set_len(len + n);
            n
        }
    }

    /// Sends the burst; the mbufs the driver took are removed from `pkts`,
    /// what it refused stays for the caller to count and drop.
    #[inline]
    pub fn tx_burst<const N: usize>(&self, q: u16, pkts: &mut ArrayVec<Mbuf, N>) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        // SAFETY: pkts holds len owned mbuf pointers; the driver takes
        // ownership of the first n returned, which we then forget.
        let n = unsafe {
            raw::rvs_eth_tx_burst(
                self.port_id,
                q,
                pkts.as_mut_ptr() as *mut *mut raw::rte_mbuf,
                pkts.len() as u16,
            )
        } as usize;
        forget_front(pkts, n);
        n
    }

    pub fn stats(&self) -> EthStats {
        let mut s: raw::rte_eth_stats = Default::default();
        // SAFETY: valid port and out pointer.
        unsafe { raw::rte_eth_stats_get(self.port_id, &mut s) };
        EthStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// (link up, speed in Mbps)
    pub fn link(&self) -> (bool, u32) {
        let mut l: raw::rte_eth_link = Default::default();
        // SAFETY: valid port and out pointer.
        unsafe { raw::rte_eth_link_get_nowait(self.port_id, &mut l) };
        (l.link_status() != 0, l.link_speed)
    }

    pub fn mac(&self) -> [u8; 6] {
        let mut a: raw::rte_ether_addr = Default::default();
        // SAFETY: valid port and out pointer.
        unsafe { raw::rte_eth_macaddr_get(self.port_id, &mut a) };
        a.addr_bytes
    }

    /// Changes the MTU of the running port (a TAP's kernel device too).
    pub fn set_mtu(&self, mtu: u16) -> Result<(), String> {
        // SAFETY: valid port id; the call only configures the device.
        let rc = unsafe { raw::rte_eth_dev_set_mtu(self.port_id, mtu) };
        if rc != 0 {
            return Err(format!(
                "cannot set MTU {mtu}: {}",
                crate::eal::strerror(rc)
            ));
        }
        Ok(())
    }

    pub fn mtu(&self) -> Option<u16> {
        let mut mtu = 0u16;
        // SAFETY: valid port and out pointer.
        let rc = unsafe { raw::rte_eth_dev_get_mtu(self.port_id, &mut mtu) };
        (rc == 0).then_some(mtu)
    }
}

impl Drop for EthDev {
    fn drop(&mut self) {
        // SAFETY: the caller guarantees no PMD uses the port any more (rvsd
        // drops a device only after every PMD has passed a quiescent point).
        unsafe {
            raw::rte_eth_dev_stop(self.port_id);
            raw::rte_eth_dev_close(self.port_id);
        }
        if self.probed_by_us {
            if let Ok(c) = CString::new(self.dev_name.as_str()) {
                let bus = CString::new("vdev").expect("no NUL");
                let is_vdev = self.dev_name.starts_with("net_");
                // SAFETY: valid C strings; removing a device we hot-plugged.
                unsafe {
                    if is_vdev {
                        raw::rte_eal_hotplug_remove(bus.as_ptr(), c.as_ptr());
                    } else {
                        let pci = CString::new("pci").expect("no NUL");
                        raw::rte_eal_hotplug_remove(pci.as_ptr(), c.as_ptr());
                    }
                }
            }
        }
    }
}
