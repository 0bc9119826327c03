//! The OpenFlow endpoint ovs-ofctl (and controllers) talk to: framing
//! (`wire`), errors, NXM/OXM matches (`oxm`), OpenFlow 1.0's fixed match
//! (`ofp10`), actions and instructions, per-connection message handling
//! (`conn`) and the per-bridge listeners on `<rundir>/<bridge>.mgmt`
//! (`server`).
pub mod actions;
pub mod conn;
pub mod error;
pub mod flow_text;
pub mod ofp10;
pub mod oxm;
pub mod saved;
pub mod server;
pub mod wire;

use rvs_dataplane::flow::table::FlowTables;
use rvs_dataplane::snapshot::{BridgeFlows, PacketIn};
use rvs_dataplane::stats::PortTotals;
use std::sync::{Arc, Mutex, MutexGuard};

/// A port as OpenFlow port descriptions and statistics show it.
#[derive(Debug, Clone, Default)]
pub struct PortInfo {
    pub ofport: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub link_up: bool,
    pub admin_up: bool,
    pub stats: PortTotals,
}

/// Lists the ports of a bridge, by bridge name.
pub type PortsFn = Box<dyn Fn(&str) -> Vec<PortInfo> + Send + Sync>;

/// What the OpenFlow side needs from the rest of rvsd.
pub struct Env {
    pub ports: PortsFn,
    /// Returns once no PMD can still hold a pipeline swapped out before.
    pub quiesce: Box<dyn Fn() + Send + Sync>,
    /// The switch clock flows are timed by.
    pub now_ns: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// One bridge as its OpenFlow sessions see it.
pub struct Bridge {
    pub name: String,
    pub datapath_id: u64,
    pub flows: Arc<BridgeFlows>,
    pub env: Arc<Env>,
    pub protocols: Mutex<Vec<String>>,
    /// Controller sessions' packet-in queues.
    pub subscribers: Mutex<Vec<crossbeam_channel::Sender<Arc<PacketIn>>>>,
}

impl Bridge {
    pub fn ports(&self) -> Vec<PortInfo> {
        let mut v = (self.env.ports)(&self.name);
        v.sort_by_key(|p| p.ofport);
        v
    }
    pub fn now_ns(&self) -> u64 {
        (self.env.now_ns)()
    }
    pub fn protocols(&self) -> Vec<String> {
        self.protocols.lock().map(|p| p.clone()).unwrap_or_default()
    }
    /// The bridge's flow tables (a panic elsewhere while holding them
    /// leaves them consistent: every change is applied whole).
    pub fn tables(&self) -> MutexGuard<'_, FlowTables> {
        self.flows.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self, tx: crossbeam_channel::Sender<Arc<PacketIn>>) {
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
    }

    /// Queues a packet-in for every controller session; sessions that went
    /// away are forgotten, full ones lose this packet-in.
    pub fn deliver(&self, p: Arc<PacketIn>) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|tx| {
            !matches!(
                tx.try_send(p.clone()),
                Err(crossbeam_channel::TrySendError::Disconnected(_))
            )
        });
    }

    /// Makes the tables' current state the one PMDs forward by.
    pub fn publish(&self) {
        let mut t = self.tables();
        self.flows.publish(&mut t, || (self.env.quiesce)());
    }
}
