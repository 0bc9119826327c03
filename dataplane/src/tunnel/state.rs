//! What PMDs need to carry tunnel traffic, as the control thread publishes
//! it: each tunnel port's resolved outer header, the endpoints (internal
//! ports holding local addresses) and the receive map, plus the routes and
//! neighbours that `remote_ip=flow` tunnels resolve per packet.
use super::conf::{Param, TunnelConf, TunnelKind};
use super::decap::{RxMap, RxPort, Terminates};
use super::encap::{Endpoints, Header};
use crate::stats::DropReason;

/// How a tunnel port sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncapPlan {
    /// Fixed remote, resolved: copy this header and hand the frame to the
    /// underlay bridge as if its internal port `out_slot` sent it.
    Ready {
        header: Header,
        out_slot: u16,
        mtu: u16,
    },
    /// `remote_ip=flow`: resolved per packet.
    Dynamic,
    /// Not sendable now, and why (no route, neighbour not resolved).
    Unresolved(DropReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPort {
    pub conf: TunnelConf,
    pub plan: EncapPlan,
}

/// An internal port holding local addresses: where tunnels start and end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub bridge: String,
    pub ips: Vec<u32>,
    pub mac: [u8; 6],
    pub mtu: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub prefix: u32,
    pub plen: u8,
    /// Slot of the internal port the route leaves through.
    pub out_slot: u16,
    /// Gateway, 0 when on-link.
    pub gw: u32,
    /// Preferred source address.
    pub src: u32,
}

impl Route {
    pub fn covers(&self, ip: u32) -> bool {
        let mask = if self.plen == 0 {
            0
        } else {
            u32::MAX << (32 - self.plen as u32)
        };
        ip & mask == self.prefix & mask
    }
}

/// Why a tunnel cannot send, and the neighbour to ask for when that is
/// the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unresolved {
    pub reason: DropReason,
    /// (internal port slot, next hop, source address) to ARP for.
    pub arp: Option<(u16, u32, u32)>,
}

#[derive(Debug, Default, Clone)]
pub struct TnlState {
    /// By tunnel port slot.
    pub ports: hashbrown::HashMap<u16, TunnelPort>,
    /// By internal port slot.
    pub endpoints: hashbrown::HashMap<u16, Endpoint>,
    pub rx: RxMap,
    /// Some GRE port exists (protocol 47 is ours to terminate).
    pub gre: bool,
    /// VXLAN UDP ports in use.
    pub udp_ports: Vec<u16>,
    /// In lookup order (the caller's: user routes before the kernel's,
    /// longest prefix first within each).
    pub routes: Vec<Route>,
    pub neigh: hashbrown::HashMap<u32, [u8; 6]>,
    /// Underlay peers tunnel traffic is taken from, as (network, mask);
    /// None: from anyone (`other_config:tunnel-peer-allowlist` unset).
    pub allow: Option<std::sync::Arc<[(u32, u32)]>>,
}

impl TnlState {
    /// Whether tunnel traffic from `src` may come in.
    #[inline]
    pub fn peer_allowed(&self, src: u32) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|a| a.iter().any(|&(net, mask)| src & mask == net))
    }
}

impl TnlState {
    /// Builds the state for these tunnel ports (slot, configuration).
    pub fn build(
        tunnels: &[(u16, TunnelConf)],
        endpoints: hashbrown::HashMap<u16, Endpoint>,
        routes: Vec<Route>,
        neigh: hashbrown::HashMap<u32, [u8; 6]>,
    ) -> TnlState {
        let mut st = TnlState {
            endpoints,
            routes,
            neigh,
            ..Default::default()
        };
        for (slot, c) in tunnels {
            st.rx.insert(RxPort {
                slot: *slot,
                kind: c.kind,
                port: c.dst_port,
                in_key: c.in_key,
                remote: c.remote,
                local: c.local,
            });
            match c.kind {
                TunnelKind::Gre => st.gre = true,
                TunnelKind::Vxlan => {
                    if !st.udp_ports.contains(&c.dst_port) {
                        st.udp_ports.push(c.dst_port)
                    }
                }
            }
        }
        for (slot, c) in tunnels {
            let plan = match c.remote {
                Param::Flow => EncapPlan::Dynamic,
                Param::Fixed(ip) => match st.resolve(c, ip, 0) {
                    Ok((header, out_slot, mtu)) => EncapPlan::Ready {
                        header,
                        out_slot,
                        mtu,
                    },
                    Err(u) => EncapPlan::Unresolved(u.reason),
                },
            };
            st.ports.insert(
                *slot,
                TunnelPort {
                    conf: c.clone(),
                    plan,
                },
            );
        }
        st
    }

    pub fn route(&self, dst: u32) -> Option<&Route> {
        self.routes.iter().find(|r| r.covers(dst))
    }

    /// The outer header, underlay slot and MTU for sending to `dst`
    /// (`flow_src`: the flow's tun_src, for `local_ip=flow`).
    pub fn resolve(
        &self,
        c: &TunnelConf,
        dst: u32,
        flow_src: u32,
    ) -> Result<(Header, u16, u16), Unresolved> {
        let no_route = Unresolved {
            reason: DropReason::TunnelNoRoute,
            arp: None,
        };
        let r = self.route(dst).ok_or(no_route)?;
        let ep = self.endpoints.get(&r.out_slot).ok_or(no_route)?;
        let src = match c.local {
            Some(Param::Fixed(ip)) => ip,
            Some(Param::Flow) if flow_src != 0 => flow_src,
            _ if r.src != 0 => r.src,
            _ => *ep.ips.first().ok_or(no_route)?,
        };
        let hop = if r.gw != 0 { r.gw } else { dst };
        let Some(mac) = self.neigh.get(&hop) else {
            return Err(Unresolved {
                reason: DropReason::TunnelNoNeighbor,
                arp: Some((r.out_slot, hop, src)),
            });
        };
        let h = Header::new(
            c,
            &Endpoints {
                src_mac: ep.mac,
                dst_mac: *mac,
                src_ip: src,
                dst_ip: dst,
            },
        );
        Ok((h, r.out_slot, ep.mtu))
    }

    /// The receive side of one endpoint, for `decap::classify`.
    pub fn terminator<'a>(&'a self, ep: &'a Endpoint) -> EndpointView<'a> {
        EndpointView { st: self, ep }
    }
}

pub struct EndpointView<'a> {
    st: &'a TnlState,
    ep: &'a Endpoint,
}

impl Terminates for EndpointView<'_> {
    #[inline]
    fn is_local(&self, ip: u32) -> bool {
        self.ep.ips.contains(&ip)
    }
    #[inline]
    fn gre(&self) -> bool {
        self.st.gre
    }
    #[inline]
    fn udp_port(&self, port: u16) -> bool {
        self.st.udp_ports.contains(&port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gre(remote: &str) -> TunnelConf {
        TunnelConf::from_options(
            "gre",
            &[
                ("remote_ip".to_string(), remote.to_string()),
                ("key".to_string(), "7".to_string()),
            ]
            .into(),
        )
        .unwrap()
    }

    #[test]
    fn plans_follow_routes_and_neighbours() {
        let ep = Endpoint {
            name: "br-phy".into(),
            bridge: "br-phy".into(),
            ips: vec![0x0a00_0001],
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
        };
        let routes = vec![
            Route {
                prefix: 0x0a00_0000,
                plen: 24,
                out_slot: 3,
                gw: 0,
                src: 0x0a00_0001,
            },
            Route {
                prefix: 0,
                plen: 0,
                out_slot: 3,
                gw: 0x0a00_00fe,
                src: 0x0a00_0001,
            },
        ];
        let neigh: hashbrown::HashMap<u32, [u8; 6]> = [(0x0a00_0002, [2, 0, 0, 0, 0, 2])].into();
        let tunnels = vec![
            (5, gre("10.0.0.2")),
            (6, gre("10.0.0.3")),
            (7, gre("192.168.9.9")),
        ];
        let st = TnlState::build(&tunnels, [(3, ep)].into(), routes.clone(), neigh);
        assert!(matches!(
            st.ports[&5].plan,
            EncapPlan::Ready {
                out_slot: 3,
                mtu: 1500,
                ..
            }
        ));
        assert_eq!(
            st.ports[&6].plan,
            EncapPlan::Unresolved(DropReason::TunnelNoNeighbor)
        );
        // Via the gateway, which is not resolved either: ARP for the gateway.
        let u = st.resolve(&gre("192.168.9.9"), 0xc0a8_0909, 0).unwrap_err();
        assert_eq!(u.arp, Some((3, 0x0a00_00fe, 0x0a00_0001)));
        let st2 = TnlState::build(&tunnels, Default::default(), vec![], Default::default());
        assert_eq!(
            st2.ports[&5].plan,
            EncapPlan::Unresolved(DropReason::TunnelNoRoute)
        );
        assert!(st.gre && st.udp_ports.is_empty());
    }
}
