//! What the PMD-level tests share: bridge br0 over in-memory ports.
use rvs_dataplane::mac_table::MacTable;
use rvs_dataplane::netdev::NetDev;
use rvs_dataplane::packet::HeapBuf;
use rvs_dataplane::snapshot::{BridgeEntry, BridgeFlows, PortEntry, Snapshot};
use std::sync::Arc;

/// A snapshot with bridge br0 holding `devs` as p0, p1, ... (slot i,
/// OpenFlow port i + 1); the caller assigns rx queues and publishes it.
pub fn br0(devs: Vec<Arc<dyn NetDev<HeapBuf>>>) -> Snapshot<HeapBuf> {
    let mut snap = Snapshot::empty(1);
    snap.bridges.push(BridgeEntry::new(
        "br0",
        Arc::new(MacTable::new(1024, 300)),
        BridgeFlows::new(0),
    ));
    for (i, dev) in devs.into_iter().enumerate() {
        snap.ports.push(Some(PortEntry {
            name: format!("p{i}").into(),
            ofport: i as u32 + 1,
            bridge: 0,
            vlan: Default::default(),
            dev,
            baseline: Default::default(),
            tunnel: false,
            qos: Default::default(),
        }));
        snap.bridges[0].add_port(i as u16, i as u32 + 1);
    }
    snap
}
