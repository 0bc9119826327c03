//! The service layer: static NAT, port forwarding and load balancers an
//! operator declares (with rvsctl, in the Rvs database beside
//! Open_vSwitch), compiled to flows and groups on their bridge, kept
//! there as the configuration changes, with ARP for the private
//! addresses and per-rule counters.
pub mod compile;
pub mod install;
pub mod show;
pub mod spec;
pub mod store;

use compile::Compiled;
use rvs_dataplane::conntrack::Conntrack;
use rvs_dataplane::flow::action::{ofpp, Action};
use rvs_dataplane::flow::key::Field;
use rvs_dataplane::snapshot::{BridgeFlows, Inject};
use spec::{BridgeServices, OnRemove, Services};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often an unresolved private address is asked for, and a resolved
/// one refreshed (well inside the learned entry's idle timeout).
const ASK_UNRESOLVED: Duration = Duration::from_secs(1);
const ASK_RESOLVED: Duration = Duration::from_secs(60);

/// A bridge the service layer can write to.
pub type BridgeHandle = (String, Arc<BridgeFlows>);

#[derive(Default)]
struct State {
    config: Services,
    /// What is installed, per bridge.
    applied: BTreeMap<String, BridgeServices>,
    neighbours: BTreeMap<String, Vec<(u32, u32)>>,
    asked: BTreeMap<(String, u32), Instant>,
    /// Why a bridge's rules could not be installed.
    failures: BTreeMap<String, String>,
}

pub struct ServiceLayer {
    state: Mutex<State>,
    ct: Arc<Conntrack>,
    quiesce: Box<dyn Fn() + Send + Sync>,
    now_ns: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl ServiceLayer {
    pub fn new(
        ct: Arc<Conntrack>,
        quiesce: Box<dyn Fn() + Send + Sync>,
        now_ns: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> ServiceLayer {
        ServiceLayer {
            state: Mutex::new(State::default()),
            ct,
            quiesce,
            now_ns,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_config(&self, s: Services) {
        for e in &s.errors {
            log::warn!("service rules: {e}");
        }
        self.lock().config = s;
    }

    /// Brings every bridge's service flows and groups to the
    /// configuration (bridges that do not exist yet are done when they
    /// appear: this runs after every reconciliation).
    pub fn apply(&self, bridges: &[BridgeHandle]) {
        let mut st = self.lock();
        let now = (self.now_ns)();
        let mut applied = BTreeMap::new();
        let mut neighbours = BTreeMap::new();
        let mut failures = BTreeMap::new();
        for (name, flows) in bridges {
            let want = st.config.bridges.get(name).cloned().unwrap_or_default();
            let want = if want.gateway.is_some() {
                want
            } else {
                BridgeServices::default()
            };
            let before = st.applied.get(name);
            if before == Some(&want) {
                if let Some(b) = before {
                    applied.insert(name.clone(), b.clone());
                }
                if let Some(n) = st.neighbours.get(name) {
                    neighbours.insert(name.clone(), n.clone());
                }
                if let Some(f) = st.failures.get(name) {
                    failures.insert(name.clone(), f.clone());
                }
                continue;
            }
            let c: Compiled = compile::compile(&want);
            let mut t = flows.tables.lock().unwrap_or_else(|e| e.into_inner());
            match install::install(&mut t, &c, now) {
                Ok(n) => {
                    if n.changed() {
                        log::info!(
                            "{name}: service flows: {} added, {} removed, {} kept; {} groups",
                            n.added,
                            n.removed,
                            n.kept,
                            c.groups.len()
                        );
                    }
                }
                Err(e) => {
                    log::warn!("{name}: service rules not installed: {e}");
                    failures.insert(name.clone(), e);
                }
            }
            flows.publish(&mut t, || (self.quiesce)());
            drop(t);
            if let Some(b) = before {
                self.reset_removed(b, &want);
            }
            neighbours.insert(name.clone(), c.neighbours);
            applied.insert(name.clone(), want);
        }
        st.applied = applied;
        st.neighbours = neighbours;
        st.failures = failures;
    }

    /// Backends removed with on_remove=reset lose their connections now.
    fn reset_removed(&self, before: &BridgeServices, after: &BridgeServices) {
        let Some(g) = &before.gateway else { return };
        for lb in &before.balancers {
            let now = after.balancers.iter().find(|l| l.id == lb.id);
            let mode = now.map(|l| l.on_remove).unwrap_or(lb.on_remove);
            if mode != OnRemove::Reset {
                continue;
            }
            let gone: Vec<u32> = lb
                .backends
                .iter()
                .filter(|b| !now.is_some_and(|l| l.backends.iter().any(|x| x == *b)))
                .map(|b| compile::mark(lb.id, b.index))
                .collect();
            if gone.is_empty() {
                continue;
            }
            let n = self
                .ct
                .flush_where(|c| c.orig.zone == g.zone && gone.contains(&c.marks().0));
            log::info!(
                "load balancer {}: {n} connections of removed backends reset",
                lb.name
            );
        }
    }

    /// Asks for private addresses and the upstream by ARP from the
    /// gateway (every second until answered, then every minute).
    pub fn tick(&self, bridges: &[BridgeHandle]) {
        let mut st = self.lock();
        let now = Instant::now();
        let mut asks = Vec::new();
        for (name, flows) in bridges {
            let (Some(svc), Some(ns)) = (st.applied.get(name), st.neighbours.get(name)) else {
                continue;
            };
            let Some(g) = &svc.gateway else { continue };
            let resolved =
                install::neighbours(&flows.tables.lock().unwrap_or_else(|e| e.into_inner()));
            for &(target, src) in ns {
                let every = if resolved.contains_key(&target) {
                    ASK_RESOLVED
                } else {
                    ASK_UNRESOLVED
                };
                let key = (name.clone(), target);
                if st
                    .asked
                    .get(&key)
                    .is_some_and(|t| now.duration_since(*t) < every)
                {
                    continue;
                }
                asks.push((key, flows.clone(), g.mac, src, target));
            }
        }
        for (key, flows, mac, src, target) in asks {
            st.asked.insert(key, now);
            // NORMAL floods it as the bridge's own port would send it.
            let inj = Inject {
                in_port: ofpp::LOCAL_OFPORT,
                actions: vec![Action::Output {
                    port: ofpp::NORMAL,
                    max_len: 0,
                }],
                data: crate::underlay::neigh::arp_request(mac, src, target),
            };
            if flows.inject.try_send(inj).is_ok() {
                flows.inject_pending.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `rvs/service/show`.
    pub fn show(&self, bridges: &[BridgeHandle]) -> String {
        let st = self.lock();
        show::render(&st.config, &st.applied, &st.failures, bridges)
    }
}

/// The value a learned flow loads into `f`, if it does.
pub fn loaded(actions: &[Action], f: Field) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::RegLoad { field, value, .. } if *field == f => Some(*value),
        Action::SetField { field, value, .. } if *field == f => Some(*value),
        _ => None,
    })
}
