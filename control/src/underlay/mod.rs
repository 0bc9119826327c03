//! The tunnel underlay as rvsd keeps it: the kernel's routes and addresses
//! (re-read every second), routes added with `ovs/route/add`, and the
//! neighbour cache filled by ARP. From them and the tunnel ports it builds
//! the `TnlState` PMDs send by, and it sends the ARP requests unresolved
//! next hops need, out of the bridge the route leaves through.
pub mod commands;
pub mod host_stack;
pub mod neigh;
pub mod netlink;

use neigh::NeighCache;
use netlink::{KernelRoute, Link};
use rvs_dataplane::flow::action::{ofpp, Action};
use rvs_dataplane::packet::PacketBuf;
use rvs_dataplane::snapshot::{Inject, Switch};
use rvs_dataplane::stats::DropReason;
use rvs_dataplane::tunnel::state::{EncapPlan, Endpoint, Route, TnlState};
use rvs_dataplane::tunnel::{Param, TnlEvent, TunnelConf};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A route added with ovs/route/add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRoute {
    pub prefix: u32,
    pub plen: u8,
    pub dev: String,
    pub gw: u32,
}

/// An internal port that may hold endpoint addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalPort {
    pub slot: u16,
    pub name: String,
    pub bridge: String,
}

#[derive(Default)]
struct Inner {
    kernel: Vec<KernelRoute>,
    user: Vec<UserRoute>,
    links: BTreeMap<String, Link>,
    neigh: NeighCache,
    /// When each next hop was last asked for.
    asked: BTreeMap<u32, Instant>,
    /// Next hops `remote_ip=flow` tunnels asked for: (slot, source, when).
    wanted: BTreeMap<u32, (u16, u32, Instant)>,
    last_refresh: Option<Instant>,
}

#[derive(Default)]
pub struct Underlay {
    inner: Mutex<Inner>,
}

/// How often an unresolved next hop is asked for again.
const ARP_RETRY: Duration = Duration::from_secs(1);
/// How long a `remote_ip=flow` next hop is worth asking for.
const WANTED_FOR: Duration = Duration::from_secs(10);

fn mask(plen: u8) -> u32 {
    if plen == 0 {
        0
    } else {
        u32::MAX << (32 - plen as u32)
    }
}

fn ip(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v)
}

/// Parses "A.B.C.D/N" (or a bare address as /32).
pub fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().ok().filter(|p| *p <= 32)?),
        None => (s, 32),
    };
    let a = u32::from(a.parse::<Ipv4Addr>().ok()?);
    Some((a & mask(p), p))
}

impl Underlay {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the kernel's routes and links; true when they changed.
    pub fn refresh_kernel(&self) -> bool {
        let kernel = match netlink::routes() {
            Ok(r) => r,
            Err(e) => {
                log::warn!("reading the kernel's routes: {e}");
                return false;
            }
        };
        let links = netlink::links();
        let mut g = self.lock();
        g.last_refresh = Some(Instant::now());
        if g.kernel == kernel && g.links == links {
            return false;
        }
        g.kernel = kernel;
        g.links = links;
        true
    }

    /// The state PMDs send by, for these tunnel ports and internal ports.
    pub fn state(&self, tunnels: &[(u16, TunnelConf)], internal: &[InternalPort]) -> TnlState {
        let g = self.lock();
        let mut endpoints = hashbrown::HashMap::new();
        let mut by_name = BTreeMap::new();
        for p in internal {
            let link = g.links.get(&p.name).cloned().unwrap_or_default();
            if link.ips.is_empty() {
                continue;
            }
            by_name.insert(p.name.clone(), (p.slot, link.ips[0]));
            endpoints.insert(
                p.slot,
                Endpoint {
                    name: p.name.clone(),
                    bridge: p.bridge.clone(),
                    ips: link.ips,
                    mac: link.mac,
                    mtu: link.mtu,
                },
            );
        }
        let mut routes = Vec::new();
        let mut user = g.user.clone();
        user.sort_by_key(|u| std::cmp::Reverse(u.plen));
        for u in &user {
            if let Some(&(slot, src)) = by_name.get(&u.dev) {
                routes.push(Route {
                    prefix: u.prefix,
                    plen: u.plen,
                    out_slot: slot,
                    gw: u.gw,
                    src,
                });
            }
        }
        let mut kernel: Vec<&KernelRoute> = g.kernel.iter().filter(|r| !r.local).collect();
        kernel.sort_by_key(|k| std::cmp::Reverse(k.plen));
        for k in kernel {
            if let Some(&(slot, src)) = by_name.get(&k.dev) {
                routes.push(Route {
                    prefix: k.prefix,
                    plen: k.plen,
                    out_slot: slot,
                    gw: k.gw,
                    src: if k.src != 0 { k.src } else { src },
                });
            }
        }
        TnlState::build(tunnels, endpoints, routes, g.neigh.macs())
    }

    /// One pass of upkeep: takes the PMDs' reports, ages the cache, re-reads
    /// the kernel each second and asks for unresolved next hops. True when
    /// the tunnel state must be rebuilt.
    pub fn tick<P: PacketBuf>(&self, sw: &Switch<P>) -> bool {
        let now = Instant::now();
        let mut dirty = false;
        let snap = sw.snap.load();
        let st = snap.tnl.load();
        let events: Vec<TnlEvent> = match sw.tnl_events_rx.try_lock() {
            Ok(rx) => rx.try_iter().take(4096).collect(),
            Err(_) => Vec::new(),
        };
        {
            let mut g = self.lock();
            for ev in events {
                match ev {
                    TnlEvent::Neighbor { slot, ip, mac } => {
                        let bridge = st
                            .endpoints
                            .get(&slot)
                            .map(|e| e.bridge.clone())
                            .unwrap_or_default();
                        dirty |= g.neigh.learn(ip, mac, &bridge, now);
                        g.wanted.remove(&ip);
                    }
                    TnlEvent::Resolve { slot, ip, src } => {
                        g.wanted.insert(ip, (slot, src, now));
                    }
                }
            }
            dirty |= g.neigh.expire(now);
            g.wanted.retain(|_, w| now.duration_since(w.2) < WANTED_FOR);
        }
        let stale = self
            .lock()
            .last_refresh
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if stale {
            dirty |= self.refresh_kernel();
        }
        // Next hops to ask for: unresolved fixed tunnels, those flow-based
        // tunnels asked for, and resolved ones about to age out.
        let mut ask: Vec<(u16, u32, u32)> = Vec::new();
        for tp in st.ports.values() {
            let Param::Fixed(remote) = tp.conf.remote else {
                continue;
            };
            match &tp.plan {
                EncapPlan::Unresolved(DropReason::TunnelNoNeighbor) | EncapPlan::Ready { .. } => {
                    let src = match tp.conf.local {
                        Some(Param::Fixed(ip)) => ip,
                        _ => 0,
                    };
                    match st.resolve(&tp.conf, remote, src) {
                        Err(u) => ask.extend(u.arp),
                        Ok((_, slot, _)) => {
                            if let Some(r) = st.route(remote) {
                                let hop = if r.gw != 0 { r.gw } else { remote };
                                if self.lock().neigh.due_refresh(hop, now) {
                                    ask.push((slot, hop, r.src));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        ask.extend(self.lock().wanted.iter().map(|(ip, w)| (w.0, *ip, w.1)));
        ask.sort();
        ask.dedup();
        for (slot, hop, src) in ask {
            {
                let mut g = self.lock();
                if g.asked
                    .get(&hop)
                    .is_some_and(|t| now.duration_since(*t) < ARP_RETRY)
                {
                    continue;
                }
                g.asked.insert(hop, now);
            }
            self.send_arp(sw, &st, slot, hop, src);
        }
        dirty
    }

    /// Sends an ARP request for `hop` out of the bridge of internal port
    /// `slot`, as the host would: NORMAL from that port.
    fn send_arp<P: PacketBuf>(&self, sw: &Switch<P>, st: &TnlState, slot: u16, hop: u32, src: u32) {
        let snap = sw.snap.load();
        let (Some(port), Some(ep)) = (snap.port(slot), st.endpoints.get(&slot)) else {
            return;
        };
        let src = if src != 0 { src } else { ep.ips[0] };
        let Some(b) = snap.bridges.get(port.bridge as usize) else {
            return;
        };
        let inj = Inject {
            in_port: port.ofport,
            actions: vec![Action::Output {
                port: ofpp::NORMAL,
                max_len: 0,
            }],
            data: neigh::arp_request(ep.mac, src, hop),
        };
        if b.flows.inject.try_send(inj).is_ok() {
            b.flows.inject_pending.fetch_add(1, Ordering::Relaxed);
            log::debug!("ARP for {} from {} on {}", ip(hop), ip(src), ep.name);
        }
    }

    /// `ovs/route/add IP/PLEN DEV [GW]`.
    pub fn route_add(&self, cidr: &str, dev: &str, gw: Option<&str>) -> Result<(), String> {
        let (prefix, plen) = parse_cidr(cidr).ok_or("Invalid parameters")?;
        let gw = match gw {
            None => 0,
            Some(g) => u32::from(
                g.parse::<Ipv4Addr>()
                    .map_err(|_| "Invalid pkt_mark or gateway".to_string())?,
            ),
        };
        let mut g = self.lock();
        if g.links.get(dev).is_none_or(|l| l.ips.is_empty()) {
            return Err("Error while inserting route.".into());
        }
        g.user.retain(|u| !(u.prefix == prefix && u.plen == plen));
        g.user.push(UserRoute {
            prefix,
            plen,
            dev: dev.to_string(),
            gw,
        });
        Ok(())
    }

    /// `ovs/route/del IP/PLEN`.
    pub fn route_del(&self, cidr: &str) -> Result<(), String> {
        let (prefix, plen) = parse_cidr(cidr).ok_or("Invalid parameters")?;
        let mut g = self.lock();
        let before = g.user.len();
        g.user.retain(|u| !(u.prefix == prefix && u.plen == plen));
        if g.user.len() == before {
            return Err("Not found".into());
        }
        Ok(())
    }

    /// `ovs/route/show`, in OVS's layout: user routes, then the kernel's,
    /// longest prefix first.
    pub fn route_show(&self) -> String {
        let g = self.lock();
        let src_of = |dev: &str| {
            g.links
                .get(dev)
                .and_then(|l| l.ips.first().copied())
                .unwrap_or(0)
        };
        let mut rows: Vec<(u32, String)> = Vec::new();
        for u in &g.user {
            let mut s = format!("User: {}/{} dev {}", ip(u.prefix), u.plen, u.dev);
            if u.gw != 0 {
                s += &format!(" GW {}", ip(u.gw));
            }
            s += &format!(" SRC {}", ip(src_of(&u.dev)));
            rows.push((u.plen as u32 + 32, s));
        }
        for k in &g.kernel {
            let mut s = format!("Cached: {}/{} dev {}", ip(k.prefix), k.plen, k.dev);
            if k.gw != 0 {
                s += &format!(" GW {}", ip(k.gw));
            }
            let src = if k.src != 0 { k.src } else { src_of(&k.dev) };
            s += &format!(" SRC {}", ip(src));
            if k.local {
                s += " local";
            }
            rows.push((k.plen as u32, s));
        }
        rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut out = String::from("Route Table:\n");
        for (_, r) in rows {
            out += &r;
            out += "\n";
        }
        out
    }

    /// `ovs/route/lookup IP`: (src, gateway, dev).
    pub fn route_lookup(&self, addr: &str) -> Result<String, String> {
        let a = u32::from(addr.parse::<Ipv4Addr>().map_err(|_| "Invalid parameters")?);
        let g = self.lock();
        let mut user = g.user.clone();
        user.sort_by_key(|u| std::cmp::Reverse(u.plen));
        let src_of = |dev: &str| g.links.get(dev).and_then(|l| l.ips.first().copied());
        let hit = user
            .iter()
            .find(|u| a & mask(u.plen) == u.prefix)
            .map(|u| (src_of(&u.dev).unwrap_or(0), u.gw, u.dev.clone()))
            .or_else(|| {
                let mut k: Vec<&KernelRoute> = g.kernel.iter().collect();
                k.sort_by(|a, b| b.plen.cmp(&a.plen).then(b.local.cmp(&a.local)));
                k.into_iter()
                    .find(|r| a & mask(r.plen) == r.prefix & mask(r.plen))
                    .map(|r| {
                        let src = if r.src != 0 {
                            r.src
                        } else {
                            src_of(&r.dev).unwrap_or(0)
                        };
                        (src, r.gw, r.dev.clone())
                    })
            });
        match hit {
            Some((src, gw, dev)) => {
                let gw = if gw == 0 {
                    "::".to_string()
                } else {
                    ip(gw).to_string()
                };
                Ok(format!("src {}\ngateway {gw}\ndev {dev}\n", ip(src)))
            }
            None => Err("Not found".into()),
        }
    }

    pub fn neigh_show(&self) -> String {
        self.lock().neigh.show(Instant::now())
    }

    pub fn neigh_flush(&self) {
        let mut g = self.lock();
        g.neigh.entries.clear();
        g.asked.clear();
    }

    pub fn neigh_set(&self, bridge: &str, addr: &str, mac: &str) -> Result<(), String> {
        let a = u32::from(addr.parse::<Ipv4Addr>().map_err(|_| "bad IP address")?);
        let m = mac
            .parse::<rvs_dataplane::wire::MacAddr>()
            .map_err(|_| "bad MAC address")?;
        let mut g = self.lock();
        g.neigh.entries.insert(
            a,
            neigh::Entry {
                mac: m.0,
                bridge: bridge.to_string(),
                updated: Instant::now(),
                fixed: true,
            },
        );
        Ok(())
    }

    /// `tnl/neigh/aging [SECS]`.
    pub fn neigh_aging(&self, secs: Option<&str>) -> Result<String, String> {
        let mut g = self.lock();
        match secs {
            None => Ok(format!("{}\n", g.neigh.aging.as_secs())),
            Some(v) => {
                let s = v
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=neigh::MAX_AGING_SECS).contains(s))
                    .ok_or("bad aging value")?;
                g.neigh.aging = Duration::from_secs(s);
                Ok("OK\n".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(parse_cidr("10.1.2.3/24"), Some((0x0a01_0200, 24)));
        assert_eq!(parse_cidr("10.1.2.3"), Some((0x0a01_0203, 32)));
        assert_eq!(parse_cidr("10.1.2.3/33"), None);
        assert_eq!(parse_cidr("10.1.2/8"), None);
    }
}
