//! The immutable configuration PMDs forward by, and how a new one reaches
//! them: the control thread swaps in a new snapshot and then waits (never the
//! PMDs) until every PMD has passed the top of its loop, after which nothing
//! of the old snapshot is in use and removed ports can be closed.
use crate::flow::rule::Pipeline;
use crate::flow::table::FlowTables;
use crate::flow::xlate::{LearnOp, PortView};
use crate::mac_table::MacTable;
use crate::netdev::NetDev;
use crate::packet::PacketBuf;
use crate::stats::{PmdStats, PortTotals};
use crate::tunnel::state::TnlState;
use crate::tunnel::TnlEvent;
use crate::vlan::VlanConf;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct PortEntry<P: PacketBuf> {
    pub name: Arc<str>,
    pub ofport: u32,
    pub bridge: u16,
    pub vlan: VlanConf,
    pub dev: Arc<dyn NetDev<P>>,
    /// The slot's counters when this port got it (they are cumulative per
    /// slot).
    pub baseline: PortTotals,
    /// A gre/vxlan port: sending means encapsulating (see `tunnel`).
    pub tunnel: bool,
    /// Ingress policer and egress shaper, if configured.
    pub qos: crate::qos::PortQos,
}

pub struct BridgeEntry {
    pub name: Arc<str>,
    /// Port slots of the bridge, in flooding order.
    pub ports: Vec<u16>,
    pub macs: Arc<MacTable>,
    /// The bridge's OpenFlow tables; they outlive port snapshots.
    pub flows: Arc<BridgeFlows>,
    /// OpenFlow port number -> slot.
    pub ofport_slot: hashbrown::HashMap<u32, u16>,
}

impl BridgeEntry {
    pub fn new(name: &str, macs: Arc<MacTable>, flows: Arc<BridgeFlows>) -> BridgeEntry {
        BridgeEntry {
            name: name.into(),
            ports: Vec::new(),
            macs,
            flows,
            ofport_slot: hashbrown::HashMap::new(),
        }
    }

    /// Adds a port (in flooding order).
    pub fn add_port(&mut self, slot: u16, ofport: u32) {
        self.ports.push(slot);
        self.ofport_slot.insert(ofport, slot);
    }
}

impl PortView for BridgeEntry {
    #[inline]
    fn slot(&self, ofport: u32) -> Option<u16> {
        self.ofport_slot.get(&ofport).copied()
    }
    #[inline]
    fn slots(&self) -> &[u16] {
        &self.ports
    }
}

/// The OpenFlow state of one bridge: the tables control threads change
/// (behind a lock PMDs never take) and the pipeline PMDs read.
pub struct BridgeFlows {
    pub tables: Mutex<FlowTables>,
    pub published: ArcSwap<Pipeline>,
    /// Flows learn actions ask for, from PMDs to the control thread.
    pub learned: SyncSender<Arc<LearnOp>>,
    pub learned_rx: Mutex<Receiver<Arc<LearnOp>>>,
    /// Controller sessions up: table misses and output:CONTROLLER go to
    /// them as packet-ins while this is non-zero.
    pub controllers_up: AtomicUsize,
    pub packet_in: SyncSender<PacketIn>,
    pub packet_in_rx: Mutex<Receiver<PacketIn>>,
    /// Packet-outs from controllers, for PMD 0 to send.
    pub inject: SyncSender<Inject>,
    pub inject_rx: Mutex<Receiver<Inject>>,
    pub inject_pending: AtomicUsize,
}

/// A packet for the controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketIn {
    pub in_port: u32,
    /// 0: no matching flow, 1: output:CONTROLLER.
    pub reason: u8,
    pub data: Vec<u8>,
}

/// A packet a controller asks the switch to send (packet-out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inject {
    /// OpenFlow in_port (a port number, or CONTROLLER/LOCAL reserved).
    pub in_port: u32,
    pub actions: Vec<crate::flow::action::Action>,
    pub data: Vec<u8>,
}

impl BridgeFlows {
    /// A new bridge's tables: `priority=0 actions=NORMAL`.
    pub fn new(now_ns: u64) -> Arc<BridgeFlows> {
        Self::with_tables(FlowTables::with_normal(now_ns))
    }

    /// A bridge whose tables start as `t` (restored from disk).
    pub fn with_tables(t: FlowTables) -> Arc<BridgeFlows> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1024);
        let (pin, pin_rx) = std::sync::mpsc::sync_channel(1024);
        let (inj, inj_rx) = std::sync::mpsc::sync_channel(1024);
        Arc::new(BridgeFlows {
            published: ArcSwap::from_pointee(t.pipeline()),
            tables: Mutex::new(t),
            learned: tx,
            learned_rx: Mutex::new(rx),
            controllers_up: AtomicUsize::new(0),
            packet_in: pin,
            packet_in_rx: Mutex::new(pin_rx),
            inject: inj,
            inject_rx: Mutex::new(inj_rx),
            inject_pending: AtomicUsize::new(0),
        })
    }

    /// Publishes the tables' current state if it changed. `quiesce` must
    /// return only once no PMD can hold the previous pipeline, which is then
    /// freed here rather than on a PMD.
    pub fn publish(&self, tables: &mut FlowTables, quiesce: impl FnOnce()) {
        tables.publish(&self.published, quiesce);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxqRef {
    pub slot: u16,
    pub queue: u16,
    /// Polling it costs a system call (a kernel TAP or AF_PACKET port):
    /// the PMD polls it every few microseconds rather than every turn,
    /// as OVS leaves such ports to its main thread.
    pub lazy: bool,
}

pub struct Snapshot<P: PacketBuf> {
    pub version: u64,
    /// Indexed by port slot.
    pub ports: Vec<Option<PortEntry<P>>>,
    pub bridges: Vec<BridgeEntry>,
    /// Rx queues each PMD polls, by PMD index.
    pub rxqs: Vec<Vec<RxqRef>>,
    /// Tunnel plans for this snapshot's ports; the control thread swaps in
    /// a new one when routes or neighbours change, without a new snapshot.
    pub tnl: ArcSwap<TnlState>,
    /// The connection tracker (the switch's, shared by every snapshot).
    pub ct: Arc<crate::conntrack::Conntrack>,
    /// Forwarding held (`flow-restore-wait`): every frame received is
    /// dropped and counted until a controller has put the flows back.
    pub hold: bool,
}

impl<P: PacketBuf> Snapshot<P> {
    pub fn empty(n_pmds: usize) -> Self {
        Snapshot {
            version: 0,
            ports: Vec::new(),
            bridges: Vec::new(),
            rxqs: vec![Vec::new(); n_pmds],
            tnl: ArcSwap::from_pointee(TnlState::default()),
            ct: Arc::new(crate::conntrack::Conntrack::default()),
            hold: false,
        }
    }

    #[inline]
    pub fn port(&self, slot: u16) -> Option<&PortEntry<P>> {
        self.ports.get(slot as usize).and_then(|p| p.as_ref())
    }
}

/// What the control thread and one PMD share.
pub struct PmdShared {
    pub index: usize,
    pub core: usize,
    pub numa: i32,
    pub stats: PmdStats,
    /// The last epoch this PMD saw at the top of its loop.
    pub seen_epoch: AtomicU64,
    pub running: AtomicBool,
    pub stop: AtomicBool,
}

pub struct Switch<P: PacketBuf> {
    pub snap: ArcSwap<Snapshot<P>>,
    pub epoch: AtomicU64,
    pub pmds: Vec<Arc<PmdShared>>,
    /// Seconds since start, as the PMDs' MAC ageing clock.
    pub started: Instant,
    /// Entries of each PMD's exact-match cache.
    pub emc_entries: usize,
    /// Makes a packet from bytes (packet-outs); set once by the owner of
    /// the buffer pools.
    pub packet_alloc: std::sync::OnceLock<PacketAlloc<P>>,
    /// Neighbours seen and next hops wanted, from PMDs to the control
    /// thread that keeps the tunnel underlay.
    pub tnl_events: SyncSender<TnlEvent>,
    pub tnl_events_rx: Mutex<Receiver<TnlEvent>>,
    /// The connection tracker; every snapshot published carries it.
    pub ct: Arc<crate::conntrack::Conntrack>,
}

/// Builds a packet buffer holding the given frame.
pub type PacketAlloc<P> = Box<dyn Fn(&[u8]) -> Option<P> + Send + Sync>;

impl<P: PacketBuf> Switch<P> {
    pub fn new(pmd_cores: &[(usize, i32)]) -> Arc<Self> {
        Self::with_cache(pmd_cores, crate::flow::cache::DEFAULT_ENTRIES)
    }

    /// A switch whose PMDs each have an exact-match cache of `emc_entries`.
    pub fn with_cache(pmd_cores: &[(usize, i32)], emc_entries: usize) -> Arc<Self> {
        let pmds = pmd_cores
            .iter()
            .enumerate()
            .map(|(i, &(core, numa))| {
                Arc::new(PmdShared {
                    index: i,
                    core,
                    numa,
                    stats: PmdStats::default(),
                    seen_epoch: AtomicU64::new(0),
                    running: AtomicBool::new(false),
                    stop: AtomicBool::new(false),
                })
            })
            .collect::<Vec<_>>();
        let (tev, tev_rx) = std::sync::mpsc::sync_channel(4096);
        Arc::new(Switch {
            snap: ArcSwap::from_pointee(Snapshot::empty(pmds.len())),
            epoch: AtomicU64::new(0),
            pmds,
            started: Instant::now(),
            emc_entries,
            packet_alloc: std::sync::OnceLock::new(),
            tnl_events: tev,
            tnl_events_rx: Mutex::new(tev_rx),
            ct: Arc::new(crate::conntrack::Conntrack::default()),
        })
    }

    pub fn now_secs(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    /// Nanoseconds since start, the clock flow durations use.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Makes `next` the snapshot PMDs forward by and returns once none of
    /// them can still use the previous one, which is returned.
    pub fn publish(&self, mut next: Snapshot<P>) -> Arc<Snapshot<P>> {
        next.ct = self.ct.clone();
        let old = self.snap.swap(Arc::new(next));
        self.quiesce();
        old
    }

    /// Waits until every running PMD has started a new loop iteration.
    pub fn quiesce(&self) {
        let e = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in &self.pmds {
            while p.running.load(Ordering::SeqCst) && p.seen_epoch.load(Ordering::SeqCst) < e {
                if Instant::now() > deadline {
                    log::error!(
                        "PMD {} on core {} did not quiesce within 5 s",
                        p.index,
                        p.core
                    );
                    break;
                }
                std::thread::yield_now();
            }
        }
    }
}
