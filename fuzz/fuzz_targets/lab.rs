//! A switch with three in-memory ports on one bridge and one PMD, polled
//! in the fuzzing thread: the real PMD loop, classifier, caches, actions,
//! conntrack and NORMAL, without DPDK.
use rvs_dataplane::flow::table::FlowMod;
use rvs_dataplane::mac_table::MacTable;
use rvs_dataplane::netdev::MemDev;
use rvs_dataplane::packet::{HeapBuf, PacketBuf};
use rvs_dataplane::pmd::{assign_rxqs, poll_once, Clock, PmdLocal};
use rvs_dataplane::snapshot::{BridgeEntry, BridgeFlows, PortEntry, Snapshot, Switch};
use rvs_dataplane::stats::PortTotals;
use rvs_dataplane::vlan::VlanConf;
use std::sync::Arc;

pub const PORTS: usize = 3;

pub struct Lab {
    pub sw: Arc<Switch<HeapBuf>>,
    pub devs: Vec<Arc<MemDev<HeapBuf>>>,
    pub flows: Arc<BridgeFlows>,
    local: PmdLocal<HeapBuf>,
}

impl Lab {
    pub fn new(flows: Arc<BridgeFlows>) -> Lab {
        let sw = Switch::<HeapBuf>::new(&[(0, 0)]);
        let devs: Vec<_> = (0..PORTS).map(|_| Arc::new(MemDev::default())).collect();
        let mut snap = Snapshot::empty(1);
        let mut br = BridgeEntry::new("br0", Arc::new(MacTable::new(256, 300)), flows.clone());
        for (i, d) in devs.iter().enumerate() {
            snap.ports.push(Some(PortEntry {
                name: format!("p{i}").into(),
                ofport: i as u32 + 1,
                bridge: 0,
                // Port 3 is an access port: VLAN push/pop paths too.
                vlan: if i == 2 {
                    VlanConf::access(30)
                } else {
                    VlanConf::default()
                },
                dev: d.clone(),
                baseline: PortTotals::default(),
                tunnel: false,
                qos: Default::default(),
            }));
            br.add_port(i as u16, i as u32 + 1);
        }
        snap.bridges.push(br);
        let q: Vec<(u16, u16, i32)> = (0..PORTS).map(|i| (i as u16, 0, 0)).collect();
        snap.rxqs = assign_rxqs(&[(0, 0)], &q);
        sw.publish(snap);
        Lab {
            sw,
            devs,
            flows,
            local: PmdLocal::new(64),
        }
    }

    /// Frames in on `port`, through the PMD until it is idle; returns how
    /// many frames went out in all (and drops what went out).
    pub fn run(&mut self, port: usize, frames: &[&[u8]]) -> usize {
        self.devs[port % PORTS]
            .rxq
            .lock()
            .unwrap()
            .extend(frames.iter().map(|f| HeapBuf::new(f)));
        let me = self.sw.pmds[0].clone();
        let now = self.sw.now_secs();
        let mut rounds = 0;
        while poll_once(&self.sw, &me, &mut self.local, &Clock::monotonic(), now) > 0 {
            rounds += 1;
            assert!(rounds < 1000, "the PMD never went idle");
        }
        let mut out = 0;
        for d in &self.devs {
            let sent = std::mem::take(&mut *d.sent.lock().unwrap());
            for p in &sent {
                // Whatever leaves is at least an Ethernet header.
                assert!(p.data().len() >= 14, "runt frame sent");
            }
            out += sent.len();
        }
        // Learned flows land in the tables as the control thread would.
        let learned: Vec<_> = self.flows.learned_rx.lock().unwrap().try_iter().collect();
        if !learned.is_empty() {
            let mut t = self.flows.tables.lock().unwrap();
            for op in learned {
                let f = &op.flow;
                let mut fm = FlowMod::add(f.table, f.priority, f.m, f.actions.clone());
                fm.idle_timeout = f.idle_timeout;
                fm.cookie = f.cookie;
                let _ = t.flow_mod(&fm, self.sw.now_ns());
            }
            self.flows.publish(&mut t, || self.sw.quiesce());
        }
        out
    }
}

/// Splits fuzz input into frames: each is a length byte and that many
/// bytes (what is left at the end is the last frame).
#[allow(dead_code)] // the openflow target runs fixed frames
pub fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut v = Vec::new();
    while let Some((&n, rest)) = data.split_first() {
        let n = (n as usize).min(rest.len());
        v.push(&rest[..n]);
        data = &rest[n..];
        if v.len() == 32 {
            break;
        }
    }
    v
}
