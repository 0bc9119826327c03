//! Converges the dataplane to the database: opens and closes devices, gives
//! ports slots and ofports, publishes snapshots, and returns the columns to
//! write back (ofport, error, cur_cfg ...). Idempotent: applying the same
//! desired state twice changes nothing.
use crate::budget::Budget;
use crate::config::{BridgeSpec, Desired, IfaceSpec};
use crate::datum::make_map;
use crate::db::update_op;
use crate::underlay::{InternalPort, Underlay};
use rvs_dataplane::mac_table::MacTable;
use rvs_dataplane::netdev::NetDev;
use rvs_dataplane::packet::PacketBuf;
use rvs_dataplane::pmd::assign_rxqs;
use rvs_dataplane::qos::PortQos;
use rvs_dataplane::snapshot::{BridgeEntry, BridgeFlows, PortEntry, Snapshot, Switch};
use rvs_dataplane::stats::{port_totals, PortTotals};
use rvs_dataplane::tunnel::{TunnelConf, TunnelDev};
use rvs_dataplane::vlan::VlanConf;
use rvs_dataplane::MAX_PORTS;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

/// The OpenFlow port number of a bridge's own internal port.
pub const OFPP_LOCAL: i64 = 65534;
const OFPP_MAX: i64 = 0xff00;

/// An opened device and the NUMA node it lives on.
pub struct Opened<P: PacketBuf> {
    pub dev: Arc<dyn NetDev<P>>,
    pub numa: i32,
}

/// Opens devices for interface rows (DPDK in rvsd, in-memory in tests).
pub trait DeviceFactory<P: PacketBuf> {
    /// Mbufs the device will hold (rings, bursts), checked before opening.
    fn mbufs_needed(&self, spec: &IfaceSpec) -> Result<(i32, u64), String>;
    fn open(&mut self, spec: &IfaceSpec) -> Result<Opened<P>, String>;
    /// Interface types this factory can open.
    fn types(&self) -> &'static [&'static str];
    /// A device was closed; `reopening`: the same interface opens again
    /// at once (a changed MTU), so what the kernel holds of it stays.
    fn closed(&mut self, _spec: &IfaceSpec, _reopening: bool) {}
}

pub struct LivePort<P: PacketBuf> {
    pub spec: IfaceSpec,
    pub slot: u16,
    pub ofport: i64,
    pub vlan: VlanConf,
    pub dev: Arc<dyn NetDev<P>>,
    pub numa: i32,
    pub mbufs: u64,
    /// Counters of the slot when this port got it.
    pub baseline: PortTotals,
    /// A gre/vxlan port's configuration.
    pub tunnel: Option<TunnelConf>,
    /// Its policer and shaper (kept across snapshots: they hold state).
    pub qos: PortQos,
}

pub struct FailedPort {
    pub spec: IfaceSpec,
    pub error: String,
    pub next_cfg: i64,
}

pub struct LiveBridge {
    pub spec: BridgeSpec,
    pub macs: Arc<MacTable>,
    /// OpenFlow tables: a new bridge starts with `priority=0
    /// actions=NORMAL`, as in OVS.
    pub flows: Arc<BridgeFlows>,
}

pub struct Reconciler<P: PacketBuf> {
    pub switch: Arc<Switch<P>>,
    factory: Box<dyn DeviceFactory<P> + Send>,
    pub ports: BTreeMap<String, LivePort<P>>,
    pub failed: BTreeMap<String, FailedPort>,
    pub bridges: BTreeMap<String, LiveBridge>,
    pub budget: Budget,
    version: u64,
    /// Written back already: (interface uuid -> (ofport, error)).
    written: BTreeMap<String, (i64, Option<String>)>,
    cur_cfg: i64,
    /// Routes and neighbours tunnels resolve their remote endpoints by.
    pub underlay: Arc<Underlay>,
    /// Where bridges' flow tables are kept across restarts (None: not
    /// kept; a new bridge starts with NORMAL).
    pub flow_store: Option<PathBuf>,
    /// `flow-restore-wait=true`: forwarding held.
    hold: bool,
    /// `tunnel-peer-allowlist` (None: tunnel traffic from anyone).
    tunnel_peers: Option<Arc<[(u32, u32)]>>,
}

impl<P: PacketBuf + 'static> Reconciler<P> {
    pub fn new(
        switch: Arc<Switch<P>>,
        factory: Box<dyn DeviceFactory<P> + Send>,
        budget: Budget,
    ) -> Self {
        Reconciler {
            switch,
            factory,
            ports: BTreeMap::new(),
            failed: BTreeMap::new(),
            bridges: BTreeMap::new(),
            budget,
            version: 0,
            written: BTreeMap::new(),
            cur_cfg: -1,
            underlay: Arc::new(Underlay::default()),
            flow_store: None,
            hold: false,
            tunnel_peers: None,
        }
    }

    pub fn types(&self) -> &'static [&'static str] {
        self.factory.types()
    }

    /// Applies `d` and returns the write-back operations.
    pub fn apply(&mut self, d: &Desired) -> Vec<Value> {
        let want: BTreeMap<&str, &IfaceSpec> =
            d.ifaces.iter().map(|i| (i.name.as_str(), i)).collect();
        let want_bridges: BTreeSet<&str> = d.bridges.iter().map(|b| b.name.as_str()).collect();

        // 1. Take out what went away or must be reopened, and close it once
        //    no PMD can be using it.
        let gone: Vec<String> = self
            .ports
            .iter()
            .filter(|(n, lp)| match want.get(n.as_str()) {
                None => true,
                Some(s) => {
                    s.devkey() != lp.spec.devkey() || s.bridge != lp.spec.bridge || s.vlan.is_err()
                }
            })
            .map(|(n, _)| n.clone())
            .collect();
        // An MTU change is applied in place (an internal port keeps its
        // kernel device and addresses), and so is tx-retries-max; a port
        // that cannot take its MTU is reopened, and so is one given a
        // tx-retries-max out of range, whose open then fails with the
        // message in its Interface error.
        let mut gone = gone;
        for (n, lp) in &self.ports {
            let Some(s) = want.get(n.as_str()) else {
                continue;
            };
            if gone.contains(n) {
                continue;
            }
            if s.mtu_request != lp.spec.mtu_request {
                let mtu = s.mtu_request.unwrap_or(1500).clamp(68, 9702) as u16;
                match lp.dev.set_mtu(mtu) {
                    Ok(()) => log::info!("{n}: MTU {mtu}"),
                    Err(e) => {
                        log::info!("{n}: {e}; reopening");
                        gone.push(n.clone());
                        continue;
                    }
                }
            }
            let key = "tx-retries-max";
            if s.options.get(key) != lp.spec.options.get(key) {
                match s.tx_retries_max() {
                    Ok(max) if lp.dev.set_tx_retries(max) => {
                        log::info!("{n}: tx-retries-max {max}")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        log::warn!("{n}: {e}");
                        gone.push(n.clone());
                    }
                }
            }
        }
        let mut removed: Vec<LivePort<P>> =
            gone.iter().filter_map(|n| self.ports.remove(n)).collect();
        self.failed.retain(|n, _| want.contains_key(n.as_str()));
        let mut qos_changed = false;
        let changed_vlan: Vec<(u16, String)> = self
            .ports
            .values_mut()
            .filter_map(|lp| {
                let s = want[lp.spec.name.as_str()];
                if s.qos != lp.spec.qos && lp.tunnel.is_none() {
                    lp.qos = port_qos(&s.name, &s.qos);
                    qos_changed = true;
                }
                let old_vlan = lp.vlan.clone();
                lp.spec = s.clone();
                if let Ok(v) = &s.vlan {
                    lp.vlan = v.clone();
                }
                lp.ofport = match s.ofport_request {
                    Some(r)
                        if r != lp.ofport && (1..OFPP_MAX).contains(&r) && !s.is_bridge_local() =>
                    {
                        r
                    }
                    _ => lp.ofport,
                };
                (old_vlan != lp.vlan).then(|| (lp.slot, lp.spec.bridge.clone()))
            })
            .collect();
        let gone_bridges: Vec<String> = self
            .bridges
            .keys()
            .filter(|b| !want_bridges.contains(b.as_str()))
            .cloned()
            .collect();
        let closed: Vec<(IfaceSpec, bool)> = removed
            .iter()
            .map(|lp| (lp.spec.clone(), want.contains_key(lp.spec.name.as_str())))
            .collect();
        if !removed.is_empty() || !changed_vlan.is_empty() || qos_changed {
            self.publish();
            for lp in &removed {
                if let Some(b) = self.bridges.get(&lp.spec.bridge) {
                    b.macs.flush_port(lp.slot);
                }
                self.budget.release(lp.numa, lp.mbufs);
            }
            for (slot, br) in &changed_vlan {
                if let Some(b) = self.bridges.get(br) {
                    b.macs.flush_port(*slot);
                }
            }
            // Dropping the last reference closes the device (the old
            // snapshot went in publish()).
            removed.clear();
            for (spec, reopening) in &closed {
                self.factory.closed(spec, *reopening);
            }
        }
        for b in gone_bridges {
            self.bridges.remove(&b);
            // A deleted bridge's flows go with it, as in OVS.
            if let Some(p) = self.saved_path(&b) {
                let _ = std::fs::remove_file(p);
            }
        }
        // A bad list is refused whole: the last good one stays.
        match d.global.tunnel_peers() {
            Ok(p) => {
                let p: Option<Arc<[(u32, u32)]>> = p.map(Into::into);
                if p != self.tunnel_peers {
                    log::info!(
                        "tunnel peers: {}",
                        d.global.get("tunnel-peer-allowlist").unwrap_or("anyone")
                    );
                    self.tunnel_peers = p;
                }
            }
            Err(e) => log::warn!("{e} (the previous list stays)"),
        }
        // Who reads guests' transmit rings (rvs itself by default) and
        // writes their receive rings (rte_vhost by default). A bad value
        // changes nothing.
        let rings = [
            (
                "vhost-own-rx",
                rvs_ffi::vhost::OWN_RX_DEFAULT,
                rvs_ffi::vhost::own_rx as fn() -> bool,
                rvs_ffi::vhost::set_own_rx as fn(bool),
                "guests' transmit rings read by",
            ),
            (
                "vhost-own-tx",
                rvs_ffi::vhost::OWN_TX_DEFAULT,
                rvs_ffi::vhost::own_tx,
                rvs_ffi::vhost::set_own_tx,
                "guests' receive rings written by",
            ),
        ];
        for (key, default, get, set, what) in rings {
            let own = match d.global.get(key) {
                None => default,
                Some("true") => true,
                Some("false") => false,
                Some(v) => {
                    log::warn!(
                        "other_config:{key}={v}: expected true or false (stays {})",
                        get()
                    );
                    get()
                }
            };
            if own != get() {
                log::info!(
                    "{key}={own}: {what} {}",
                    if own { "rvs" } else { "rte_vhost" }
                );
                set(own);
            }
        }
        let hold = d.global.get("flow-restore-wait") == Some("true");
        if hold != self.hold {
            log::info!(
                "flow-restore-wait={hold}: forwarding {}",
                if hold { "held" } else { "resumes" }
            );
            self.hold = hold;
        }

        // 2. Bridges.
        for bs in &d.bridges {
            let aging = bs
                .other_config
                .get("mac-aging-time")
                .and_then(|v| v.parse().ok())
                .unwrap_or(300u32);
            let size = bs
                .other_config
                .get("mac-table-size")
                .and_then(|v| v.parse().ok())
                .unwrap_or(8192usize);
            match self.bridges.get_mut(&bs.name) {
                Some(lb) => {
                    lb.macs.set_aging(aging);
                    if lb.macs.capacity() < size {
                        lb.macs = Arc::new(MacTable::new(size, aging));
                    }
                    lb.spec = bs.clone();
                }
                None => {
                    let flows = match self.restore_flows(&bs.name) {
                        Some(t) => BridgeFlows::with_tables(t),
                        None => BridgeFlows::new(self.switch.now_ns()),
                    };
                    self.bridges.insert(
                        bs.name.clone(),
                        LiveBridge {
                            spec: bs.clone(),
                            macs: Arc::new(MacTable::new(size, aging)),
                            flows,
                        },
                    );
                }
            }
        }

        // 3. Open what is new. Failed rows are retried when the database
        //    changes (next_cfg), as ovs-vswitchd retries on reconfigure.
        for s in &d.ifaces {
            if self.ports.contains_key(&s.name) {
                continue;
            }
            if let Some(f) = self.failed.get(&s.name) {
                if f.spec.devkey() == s.devkey()
                    && f.spec.bridge == s.bridge
                    && f.spec.vlan == s.vlan
                    && f.next_cfg == d.global.next_cfg
                {
                    continue;
                }
            }
            match self.open(s) {
                Ok(lp) => {
                    self.failed.remove(&s.name);
                    self.ports.insert(s.name.clone(), lp);
                }
                Err(error) => {
                    log::warn!("interface {}: {error}", s.name);
                    self.failed.insert(
                        s.name.clone(),
                        FailedPort {
                            spec: s.clone(),
                            error,
                            next_cfg: d.global.next_cfg,
                        },
                    );
                }
            }
        }
        self.publish();

        // 4. Write back ofport / error for rows whose value changed, and
        //    cur_cfg once all of it is live.
        let mut ops = Vec::new();
        for s in &d.ifaces {
            let (ofport, error) = match (self.ports.get(&s.name), self.failed.get(&s.name)) {
                (Some(lp), _) => (lp.ofport, None),
                (None, Some(f)) => (-1, Some(f.error.clone())),
                _ => continue,
            };
            let cur = (ofport, error.clone());
            if self.written.get(&s.uuid) == Some(&cur) && s.ofport == Some(ofport) {
                continue;
            }
            let err = match &error {
                Some(e) => json!(e),
                None => json!(["set", []]),
            };
            let mut row = json!({"ofport": ofport, "error": err});
            if error.is_some() {
                row["link_state"] = json!(["set", []]);
                row["admin_state"] = json!(["set", []]);
            }
            ops.push(update_op("Interface", &s.uuid, row));
            self.written.insert(s.uuid.clone(), cur);
        }
        self.written
            .retain(|u, _| d.ifaces.iter().any(|i| &i.uuid == u));
        for b in d
            .bridges
            .iter()
            .filter(|b| b.datapath_id.as_deref() != Some(datapath_id(&b.name).as_str()))
        {
            ops.push(update_op(
                "Bridge",
                &b.uuid,
                json!({"datapath_id": datapath_id(&b.name)}),
            ));
        }
        if self.cur_cfg != d.global.next_cfg || !ops.is_empty() {
            ops.push(json!({"op": "update", "table": "Open_vSwitch", "where": [], "row": {"cur_cfg": d.global.next_cfg}}));
            self.cur_cfg = d.global.next_cfg;
        }
        ops
    }

    fn open(&mut self, s: &IfaceSpec) -> Result<LivePort<P>, String> {
        let vlan = s.vlan.clone()?;
        if !self.bridges.contains_key(&s.bridge) {
            return Err(format!("bridge {} does not exist", s.bridge));
        }
        let slot = (0..MAX_PORTS as u16)
            .find(|sl| !self.ports.values().any(|p| p.slot == *sl))
            .ok_or("no free port slot (1024 ports in use)")?;
        let ofport = self.assign_ofport(s)?;
        if matches!(s.kind.as_str(), "gre" | "vxlan") {
            let conf = TunnelConf::from_options(&s.kind, &s.options)?;
            for k in s.options.keys() {
                if !rvs_dataplane::tunnel::conf::KNOWN_OPTIONS.contains(&k.as_str()) {
                    log::warn!(
                        "{}: options:{k} is not used by {} tunnels in rvs",
                        s.name,
                        s.kind
                    );
                }
            }
            log::info!(
                "{}: added to bridge {} as ofport {ofport} (slot {slot}, {})",
                s.name,
                s.bridge,
                conf.describe()
            );
            return Ok(LivePort {
                spec: s.clone(),
                slot,
                ofport,
                vlan,
                dev: Arc::new(TunnelDev),
                numa: -1,
                mbufs: 0,
                baseline: port_totals(self.switch.pmds.iter().map(|p| &p.stats), slot),
                tunnel: Some(conf),
                qos: PortQos::default(),
            });
        }
        let (numa, need) = self.factory.mbufs_needed(s)?;
        self.budget.reserve(numa, need)?;
        let opened = match self.factory.open(s) {
            Ok(o) => o,
            Err(e) => {
                self.budget.release(numa, need);
                return Err(e);
            }
        };
        let baseline = port_totals(self.switch.pmds.iter().map(|p| &p.stats), slot);
        log::info!(
            "{}: added to bridge {} as ofport {ofport} (slot {slot}, type {:?})",
            s.name,
            s.bridge,
            s.kind
        );
        Ok(LivePort {
            spec: s.clone(),
            slot,
            ofport,
            vlan,
            dev: opened.dev,
            numa: opened.numa,
            mbufs: need,
            baseline,
            tunnel: None,
            qos: port_qos(&s.name, &s.qos),
        })
    }

    fn assign_ofport(&self, s: &IfaceSpec) -> Result<i64, String> {
        if s.is_bridge_local() {
            return Ok(OFPP_LOCAL);
        }
        let used: BTreeSet<i64> = self
            .ports
            .values()
            .filter(|p| p.spec.bridge == s.bridge)
            .map(|p| p.ofport)
            .collect();
        if let Some(r) = s.ofport_request {
            if !(1..OFPP_MAX).contains(&r) {
                return Err(format!(
                    "ofport_request {r} is out of range (1-{})",
                    OFPP_MAX - 1
                ));
            }
            if !used.contains(&r) {
                return Ok(r);
            }
            log::warn!(
                "{}: ofport_request {r} is taken on bridge {}, assigning another",
                s.name,
                s.bridge
            );
        }
        if let Some(prev) = s
            .ofport
            .filter(|p| (1..OFPP_MAX).contains(p) && !used.contains(p))
        {
            return Ok(prev);
        }
        (1..OFPP_MAX)
            .find(|p| !used.contains(p))
            .ok_or_else(|| format!("bridge {} has no free ofport", s.bridge))
    }

    fn saved_path(&self, bridge: &str) -> Option<PathBuf> {
        crate::openflow::saved::path_for(self.flow_store.as_deref()?, bridge)
    }

    /// Puts a new bridge's saved flows and groups back before any of its
    /// ports forwards. A missing file is a new bridge; a damaged one is
    /// reported and the bridge starts as a new one would.
    fn restore_flows(&self, bridge: &str) -> Option<rvs_dataplane::flow::table::FlowTables> {
        let path = self.saved_path(bridge)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("{bridge}: cannot read saved flows {}: {e}", path.display());
                return None;
            }
        };
        let now = self.switch.now_ns();
        let mut t = rvs_dataplane::flow::table::FlowTables::empty();
        match crate::openflow::saved::decode_into(&bytes, &mut t, now) {
            Ok(r) => {
                log::info!(
                    "{bridge}: restored {} flows and {} groups from {}",
                    r.flows,
                    r.groups,
                    path.display()
                );
                Some(t)
            }
            Err(e) => {
                log::warn!(
                    "{bridge}: saved flows {} not restored ({e}); starting with NORMAL",
                    path.display()
                );
                None
            }
        }
    }

    /// Builds and publishes the snapshot for the current live state.
    fn publish(&mut self) {
        self.version += 1;
        let n_pmds = self.switch.pmds.len();
        let mut snap = Snapshot::empty(n_pmds);
        snap.version = self.version;
        snap.hold = self.hold;
        let bridge_idx: BTreeMap<&str, u16> = self
            .bridges
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u16))
            .collect();
        for (name, lb) in &self.bridges {
            snap.bridges
                .push(BridgeEntry::new(name, lb.macs.clone(), lb.flows.clone()));
        }
        let max_slot = self
            .ports
            .values()
            .map(|p| p.slot as usize + 1)
            .max()
            .unwrap_or(0);
        snap.ports.resize_with(max_slot, || None);
        let mut queues = Vec::new();
        // Flood in ofport order, as OVS does.
        let mut ordered: Vec<&LivePort<P>> = self.ports.values().collect();
        ordered.sort_by_key(|p| (p.ofport, p.slot));
        for lp in ordered {
            let Some(&bi) = bridge_idx.get(lp.spec.bridge.as_str()) else {
                continue;
            };
            snap.ports[lp.slot as usize] = Some(PortEntry {
                name: lp.spec.name.as_str().into(),
                ofport: lp.ofport as u32,
                bridge: bi,
                vlan: lp.vlan.clone(),
                dev: lp.dev.clone(),
                baseline: lp.baseline,
                tunnel: lp.tunnel.is_some(),
                qos: lp.qos.clone(),
            });
            snap.bridges[bi as usize].add_port(lp.slot, lp.ofport as u32);
            for q in 0..lp.dev.n_rxq() {
                queues.push((lp.slot, q, lp.numa));
            }
        }
        let pmds: Vec<(usize, i32)> = self.switch.pmds.iter().map(|p| (p.core, p.numa)).collect();
        snap.rxqs = assign_rxqs(&pmds, &queues);
        let lazy: BTreeSet<u16> = self
            .ports
            .values()
            // AF_PACKET (system and tap ports) receives from a shared ring
            // without a system call: only net_tap (internal ports), whose
            // every poll is a read(), is polled lazily.
            .filter(|p| p.spec.kind == "internal")
            .map(|p| p.slot)
            .collect();
        for rq in snap.rxqs.iter_mut().flatten() {
            rq.lazy = lazy.contains(&rq.slot);
        }
        snap.tnl.store(Arc::new(self.tunnel_state()));
        let _old = self.switch.publish(snap);
    }

    fn tunnel_state(&self) -> rvs_dataplane::tunnel::state::TnlState {
        let tunnels: Vec<(u16, TunnelConf)> = self
            .ports
            .values()
            .filter_map(|p| Some((p.slot, p.tunnel.clone()?)))
            .collect();
        let internal: Vec<InternalPort> = self
            .ports
            .values()
            .filter(|p| p.spec.kind == "internal")
            .map(|p| InternalPort {
                slot: p.slot,
                name: p.spec.name.clone(),
                bridge: p.spec.bridge.clone(),
            })
            .collect();
        let mut st = self.underlay.state(&tunnels, &internal);
        st.allow = self.tunnel_peers.clone();
        st
    }

    /// Rebuilds the tunnel state after routes or neighbours changed (no
    /// new port snapshot: PMDs pick it up at their next batch). Its
    /// predecessor is freed once no PMD can hold it.
    pub fn publish_tunnels(&mut self) {
        let st = Arc::new(self.tunnel_state());
        let old = self.switch.snap.load().tnl.swap(st);
        self.switch.quiesce();
        drop(old);
    }

    /// Counters of a live port since it got its slot.
    pub fn port_stats(&self, lp: &LivePort<P>) -> PortTotals {
        let mut t =
            port_totals(self.switch.pmds.iter().map(|p| &p.stats), lp.slot).minus(&lp.baseline);
        t.tx_dropped += lp.dev.device_tx_dropped();
        t
    }

    /// Status columns (link, mtu, statistics ...) of every live port.
    pub fn status_ops(&self) -> Vec<Value> {
        let mut ops = Vec::new();
        for lp in self.ports.values() {
            let st = lp.dev.status();
            let t = self.port_stats(lp);
            let mut status: Vec<(String, String)> =
                vec![("driver_name".into(), driver_name(&lp.spec.kind).into())];
            status.extend(st.extra.iter().cloned());
            status.push(("numa_id".into(), st.numa.to_string()));
            if lp.tunnel.is_some() {
                // As OVS reports it: the underlay port the tunnel leaves by.
                let snap = self.switch.snap.load();
                let tnl = snap.tnl.load();
                if let Some(rvs_dataplane::tunnel::state::EncapPlan::Ready { out_slot, .. }) =
                    tnl.ports.get(&lp.slot).map(|p| &p.plan)
                {
                    if let Some(p) = snap.port(*out_slot) {
                        status.push(("tunnel_egress_iface".into(), p.name.to_string()));
                        status.push(("tunnel_egress_iface_carrier".into(), "up".into()));
                    }
                }
            }
            let mut row = json!({
                "link_state": if st.link_up { "up" } else { "down" },
                "admin_state": "up",
                "status": make_map(status),
                "statistics": make_map(
                    [
                        ("rx_packets", t.rx_packets),
                        ("rx_bytes", t.rx_bytes),
                        ("tx_packets", t.tx_packets),
                        ("tx_bytes", t.tx_bytes),
                        ("rx_dropped", t.rx_dropped),
                        ("tx_dropped", t.tx_dropped),
                        // Frames that waited for room in the far end's
                        // ring instead of being dropped (txhold).
                        ("tx_held", t.tx_held),
                    ]
                    .into_iter()
                    .chain(lp.dev.device_stats()),
                ),
            });
            if let Some(m) = st.mtu {
                row["mtu"] = json!(m);
            }
            if let Some(mac) = st.mac {
                row["mac_in_use"] = json!(rvs_dataplane::wire::MacAddr(mac).to_string());
            }
            ops.push(update_op("Interface", &lp.spec.uuid, row));
        }
        ops
    }

    /// Ports of a bridge, by ofport: (ofport, name).
    pub fn bridge_ports(&self, bridge: &str) -> Vec<(i64, String, u16)> {
        let mut v: Vec<_> = self
            .ports
            .values()
            .filter(|p| p.spec.bridge == bridge)
            .map(|p| (p.ofport, p.spec.name.clone(), p.slot))
            .collect();
        v.sort();
        v
    }

    /// After reconnecting to a database that may be another one, write
    /// everything back again.
    pub fn forget_written(&mut self) {
        self.written.clear();
        self.cur_cfg = -1;
    }

    /// Closes every port (at exit).
    /// Closes every port. `cleanup` (`ovs-appctl exit --cleanup`, as in
    /// OVS): the bridges' kernel devices go too; otherwise they outlive
    /// rvsd with their addresses, for the next rvsd to take up.
    pub fn shutdown(&mut self, cleanup: bool) {
        // --cleanup: bridges' devices go, system ports go back to the host.
        let leaving: Vec<IfaceSpec> = self
            .ports
            .values()
            .filter(|_| cleanup)
            .map(|lp| lp.spec.clone())
            .collect();
        self.ports.clear();
        self.publish();
        for spec in &leaving {
            self.factory.closed(spec, false);
        }
    }
}

/// The dataplane's buckets for a port's limits (new ones: a changed limit
/// starts full). A refused QoS is logged with its reason; the port then
/// forwards unshaped.
fn port_qos(name: &str, q: &crate::config::QosConf) -> PortQos {
    use rvs_dataplane::qos::TokenBucket;
    let policer = q.policing.map(|(kbps, kb)| {
        let kb = if kb == 0 { 8000 } else { kb };
        log::info!("{name}: ingress policing at {kbps} kbit/s, burst {kb} kbit");
        Arc::new(TokenBucket::new(kbps * 1000 / 8, kb * 1000 / 8))
    });
    let (shaper, shaper_queue) = match &q.shaping {
        Ok(Some(s)) => {
            log::info!(
                "{name}: QoS {} at {} bit/s, burst {} bytes",
                s.kind,
                s.max_rate,
                s.burst
            );
            (
                Some(Arc::new(TokenBucket::new(s.max_rate / 8, s.burst))),
                s.queue,
            )
        }
        Ok(None) => (None, false),
        Err(e) => {
            log::warn!("{name}: {e}; sending unshaped");
            (None, false)
        }
    };
    PortQos {
        policer,
        shaper,
        shaper_queue: if shaper_queue {
            rvs_dataplane::qos::SHAPER_QUEUE
        } else {
            0
        },
    }
}

fn driver_name(kind: &str) -> &'static str {
    match kind {
        "dpdkvhostuser" | "dpdkvhostuserclient" => "net_vhost",
        "internal" => "net_tap",
        "" | "system" | "tap" => "net_af_packet",
        _ => "dpdk",
    }
}

/// A stable 64-bit datapath id per bridge name, as 16 hex digits.
pub fn datapath_id(bridge: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bridge.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{:016x}", h & 0x0000_ffff_ffff_ffff | 0x0000_0200_0000_0000)
}
