//! Opens DPDK devices for Interface rows, with OVS's type names and options:
//! `dpdk` (dpdk-devargs), `dpdkvhostuser`, `dpdkvhostuserclient`
//! (vhost-server-path), `internal` (a kernel TAP named like the interface,
//! through net_tap) and `system` (an existing kernel netdev through
//! net_af_packet).
use crate::config::IfaceSpec;
use crate::reconcile::{DeviceFactory, Opened};
use rvs_dataplane::dpdk::{EthPort, VhostPort};
use rvs_ffi::{EthDev, Mbuf, Mempool, VhostDev};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const TYPES: &[&str] = &[
    "dpdk",
    "dpdkvhostuser",
    "dpdkvhostuserclient",
    "internal",
    "system",
    "tap",
    "gre",
    "vxlan",
];
/// Types OVS knows that this rvs does not carry yet.
const NOT_YET: &[&str] = &[
    "geneve", "patch", "stt", "lisp", "erspan", "ip6gre", "bareudp", "gtpu", "srv6",
];

/// Queue pairs polled per vhost-user port unless options:n_rxq says more:
/// queues the guest did not enable cost one mask test per poll.
const VHOST_QUEUE_PAIRS: u16 = 8;
const RING: u16 = 1024;

pub struct DpdkFactory {
    pub pools: BTreeMap<i32, &'static Mempool>,
    pub n_pmds: usize,
    pub vhost_dir: PathBuf,
}

impl DpdkFactory {
    fn pool(&self, numa: i32) -> &'static Mempool {
        self.pools
            .get(&numa)
            .or_else(|| self.pools.values().next())
            .copied()
            .expect("at least one pool exists")
    }

    fn n_rxq(spec: &IfaceSpec, default: u16) -> Result<u16, String> {
        match spec.options.get("n_rxq") {
            None => Ok(default),
            Some(v) => v
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| format!("options:n_rxq={v:?} is not a number from 1 to 64")),
        }
    }

    fn mtu(spec: &IfaceSpec) -> Result<Option<u16>, String> {
        match spec.mtu_request {
            None => Ok(None),
            Some(m) if (68..=9702).contains(&m) => Ok(Some(m as u16)),
            Some(m) => Err(format!("mtu_request {m} is out of range (68-9702)")),
        }
    }

    fn vhost_path(&self, spec: &IfaceSpec) -> Result<(String, bool), String> {
        if spec.kind == "dpdkvhostuser" {
            return Ok((
                self.vhost_dir
                    .join(&spec.name)
                    .to_string_lossy()
                    .into_owned(),
                false,
            ));
        }
        let p = spec
            .options
            .get("vhost-server-path")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("'{}' is missing 'options:vhost-server-path'", spec.name))?;
        let parent = Path::new(p)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(format!(
                "options:vhost-server-path {p}: directory {} does not exist",
                parent.display()
            ));
        }
        Ok((p.clone(), true))
    }

    fn kernel_netdev_exists(name: &str) -> bool {
        Path::new("/sys/class/net").join(name).exists()
    }

    /// A bridge's kernel device that another switch left (ovs-vswitchd's
    /// taps persist, but without the multi-queue flag net_tap needs): it is
    /// deleted and its IPv4 addresses returned, to go on the new device
    /// (which gets the same MAC).
    fn take_over_tap(name: &str, why: &str) -> Result<Vec<(std::net::Ipv4Addr, u8)>, String> {
        let addrs = crate::underlay::netlink::ipv4_addresses(name);
        crate::underlay::netlink::delete_link(name)
            .map_err(|e| format!("{why}; the existing device could not be taken over: {e}"))?;
        log::info!(
            "{name}: took over the kernel device another switch left ({why}); addresses carried over: {addrs:?}"
        );
        Ok(addrs)
    }

    /// The MAC of an existing kernel netdev, as net_tap's `mac=` takes it.
    fn kernel_mac(name: &str) -> Option<String> {
        let a =
            std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("address")).ok()?;
        let a = a.trim();
        (a.len() == 17).then(|| a.to_string())
    }
}

impl DeviceFactory<Mbuf> for DpdkFactory {
    fn types(&self) -> &'static [&'static str] {
        TYPES
    }

    fn closed(&mut self, spec: &IfaceSpec, reopening: bool) {
        // The internal port's device persists (see open): gone from the
        // database, it goes from the kernel too.
        if spec.kind == "internal" && !reopening && Self::kernel_netdev_exists(&spec.name) {
            match crate::underlay::netlink::delete_link(&spec.name) {
                Ok(()) => log::info!("{}: kernel device removed", spec.name),
                Err(e) => log::warn!("{}: {e}", spec.name),
            }
        }
        if matches!(spec.kind.as_str(), "" | "system" | "tap")
            && !reopening
            && Self::kernel_netdev_exists(&spec.name)
        {
            if let Err(e) = crate::underlay::host_stack::reattach(&spec.name) {
                log::warn!("{e}");
            }
        }
    }

    fn mbufs_needed(&self, spec: &IfaceSpec) -> Result<(i32, u64), String> {
        let pmds = self.n_pmds.max(1) as u64;
        let burst = rvs_dataplane::BURST as u64;
        match spec.kind.as_str() {
            // Dequeued bursts are freed at tx: only bursts in flight count,
            // and what each PMD may hold for a guest whose ring is full.
            "dpdkvhostuser" | "dpdkvhostuserclient" => Ok((
                0,
                Self::n_rxq(spec, VHOST_QUEUE_PAIRS)? as u64 * burst * 2
                    + pmds * rvs_dataplane::dpdk::VHOST_TX_HOLD as u64,
            )),
            // Rx rings are filled with mbufs; tx rings hold them until sent.
            _ => Ok((
                0,
                Self::n_rxq(spec, 1)? as u64 * RING as u64 + pmds * RING as u64 + pmds * burst,
            )),
        }
    }

    fn open(&mut self, spec: &IfaceSpec) -> Result<Opened<Mbuf>, String> {
        let kind = spec.kind.as_str();
        let mtu = Self::mtu(spec)?;
        let n_txq = self.n_pmds.max(1) as u16;
        let (devargs, n_rxq) = match kind {
            "dpdkvhostuser" | "dpdkvhostuserclient" => {
                let (path, client) = self.vhost_path(spec)?;
                let queues = Self::n_rxq(spec, VHOST_QUEUE_PAIRS)?;
                let retries = spec.tx_retries_max()?;
                if !client {
                    remove_stale_socket(&path);
                }
                let dev = VhostDev::register(&path, client)?;
                let pool = self.pool(0);
                return Ok(Opened {
                    dev: Arc::new(VhostPort::new(dev, pool, queues, client, retries)),
                    numa: pool.socket,
                });
            }
            "dpdk" => {
                let da = spec.options.get("dpdk-devargs").filter(|d| !d.is_empty()).ok_or_else(|| format!("'{}' is missing 'options:dpdk-devargs'. The old 'dpdk<port_id>' names are not supported", spec.name))?;
                (da.clone(), Self::n_rxq(spec, 1)?)
            }
            // Persistent: the kernel device, with the addresses and routes
            // the host gave it (cloud0's 169.254.0.1), outlives a crash or
            // restart of rvsd, which takes it up again with its MAC.
            "internal" => {
                let mut da = format!("net_tap_{0},iface={0},persist", spec.name);
                if let Some(mac) = Self::kernel_mac(&spec.name) {
                    da.push_str(&format!(",mac={mac}"));
                }
                (da, 1)
            }
            "" | "system" | "tap" => {
                if !Self::kernel_netdev_exists(&spec.name) {
                    return Err(format!(
                        "could not open network device {} (No such device)",
                        spec.name
                    ));
                }
                let q = Self::n_rxq(spec, 1)?;
                (
                    format!(
                        "net_af_packet_{},iface={},qpairs={}",
                        spec.name,
                        spec.name,
                        q.max(n_txq)
                    ),
                    q,
                )
            }
            k if NOT_YET.contains(&k) => {
                return Err(format!(
                    "interface type '{k}' is not supported by this rvs version yet"
                ))
            }
            k => {
                return Err(format!(
                    "unknown interface type '{k}' (rvs supports: {})",
                    TYPES.join(", ")
                ))
            }
        };
        // DPDK 22.11's net_tap passes an fd per rx and per tx queue to
        // secondary processes in an 8-slot array and smashes its stack
        // beyond that: at most 4 queue pairs.
        let (n_rxq, n_txq) = if devargs.starts_with("net_tap") {
            (n_rxq.min(4), n_txq.min(4))
        } else {
            (n_rxq, n_txq)
        };
        let pool = self.pool(0);
        let mut carried = Vec::new();
        let dev = match EthDev::open(&devargs, n_rxq, n_txq, RING, mtu, pool) {
            Err(e) if kind == "internal" && Self::kernel_netdev_exists(&spec.name) => {
                carried = Self::take_over_tap(&spec.name, &e)?;
                EthDev::open(&devargs, n_rxq, n_txq, RING, mtu, pool)?
            }
            r => r?,
        };
        for (ip, plen) in carried {
            if let Err(e) = crate::underlay::netlink::add_ipv4_address(&spec.name, ip, plen) {
                log::warn!("{}: {e}", spec.name);
            }
        }
        if devargs.starts_with("net_af_packet") {
            if let Err(e) = crate::underlay::host_stack::detach(&spec.name) {
                log::warn!("{e}; the host's stack also receives its frames");
            }
        }
        let numa = dev.socket_id().max(0);
        let port = if devargs.starts_with("net_af_packet") {
            EthPort::with_rx_cut(dev, self.n_pmds, rvs_dataplane::dpdk::AF_PACKET_RX_CUT)
        } else {
            EthPort::new(dev, self.n_pmds)
        };
        Ok(Opened {
            dev: Arc::new(port),
            numa,
        })
    }
}

/// A server socket left by a previous rvsd (or ovs-vswitchd) that nobody
/// listens on any more blocks bind(): remove it.
fn remove_stale_socket(path: &str) {
    if Path::new(path).exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}
