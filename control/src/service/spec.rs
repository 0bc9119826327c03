//! The service rules as typed values, read from the Rvs database's rows
//! (or from rvsctl's arguments) and checked whole: a bad value is refused
//! with the column and what to write instead.
use crate::datum::{self, Row};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The zone a gateway's connections are tracked in unless it names one.
pub const DEFAULT_ZONE: u16 = 65000;
/// Most ports one port-forwarding rule may cover (one flow per port).
pub const MAX_PF_PORTS: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
    pub fn parse(s: &str) -> Result<Proto, String> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(format!("protocol {s:?}: give tcp or udp")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastConn,
    Source,
}

impl Algorithm {
    pub fn parse(s: &str) -> Result<Algorithm, String> {
        match s {
            "roundrobin" => Ok(Algorithm::RoundRobin),
            "leastconn" => Ok(Algorithm::LeastConn),
            "source" => Ok(Algorithm::Source),
            _ => Err(format!(
                "algorithm {s:?}: give roundrobin, leastconn or source"
            )),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "roundrobin",
            Algorithm::LeastConn => "leastconn",
            Algorithm::Source => "source",
        }
    }
}

/// What happens to a removed backend's established connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRemove {
    /// They go on to the backend until they end.
    Drain,
    /// Their tracking entries are removed at once: later segments are
    /// invalid and dropped.
    Reset,
}

impl OnRemove {
    pub fn parse(s: &str) -> Result<OnRemove, String> {
        match s {
            "drain" => Ok(OnRemove::Drain),
            "reset" => Ok(OnRemove::Reset),
            _ => Err(format!("on_remove {s:?}: give drain or reset")),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            OnRemove::Drain => "drain",
            OnRemove::Reset => "reset",
        }
    }
}

/// The router a bridge's services sit behind: frames sent to its MAC are
/// tracked, translated and forwarded to the next hop's MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub bridge: String,
    pub mac: [u8; 6],
    /// Its own addresses (answered by ARP, the source of its ARP
    /// requests) with their prefix lengths.
    pub addresses: Vec<(u32, u8)>,
    /// The next hop for destinations no one on the bridge has claimed.
    pub upstream: Option<u32>,
    pub zone: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNat {
    pub id: u32,
    pub bridge: String,
    pub public: u32,
    pub private: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForward {
    pub id: u32,
    pub bridge: String,
    pub public: u32,
    pub proto: Proto,
    pub public_ports: (u16, u16),
    pub private: u32,
    pub private_ports: (u16, u16),
}

impl PortForward {
    /// The private port public port `p` goes to: offset to offset, or all
    /// to one.
    pub fn private_port(&self, p: u16) -> u16 {
        if self.private_ports.0 == self.private_ports.1 {
            self.private_ports.0
        } else {
            self.private_ports.0 + (p - self.public_ports.0)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// 1..=255, stable for the backend's life (its ct_mark and sticky
    /// entries name it).
    pub index: u8,
    pub ip: u32,
    pub port: u16,
    pub weight: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub id: u32,
    pub name: String,
    pub bridge: String,
    pub vip: u32,
    pub proto: Proto,
    pub port: u16,
    pub algorithm: Algorithm,
    /// Seconds a client stays on its backend after its last new
    /// connection (0: no stickiness).
    pub stickiness: u16,
    pub on_remove: OnRemove,
    /// By index.
    pub backends: Vec<Backend>,
}

pub fn ip(s: &str, what: &str) -> Result<u32, String> {
    s.parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| format!("{what} {s:?}: give an IPv4 address such as 203.0.113.10"))
}

pub fn fmt_ip(a: u32) -> String {
    Ipv4Addr::from(a).to_string()
}

pub fn mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut m = [0u8; 6];
    let ok = parts.len() == 6
        && parts
            .iter()
            .zip(m.iter_mut())
            .all(|(p, b)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *b = v).is_ok());
    if !ok || m[0] & 1 == 1 || m == [0; 6] {
        return Err(format!(
            "mac {s:?}: give a unicast Ethernet address such as 02:00:00:00:00:fe"
        ));
    }
    Ok(m)
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `P` or `P-Q` (inclusive, P <= Q, 1..=65535).
pub fn ports(s: &str, what: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{what} {s:?}: give a port (1-65535) or a range such as 1000-1010");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
}

pub fn fmt_ports((a, b): (u16, u16)) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// `IP:PORT` of a backend.
pub fn endpoint(s: &str) -> Result<(u32, u16), String> {
    let bad = || format!("backend {s:?}: give IP:PORT such as 10.1.0.5:8080");
    let (a, p) = s.rsplit_once(':').ok_or_else(bad)?;
    let a = a.parse::<Ipv4Addr>().map_err(|_| bad())?;
    let p: u16 = p.parse().map_err(|_| bad())?;
    if p == 0 {
        return Err(bad());
    }
    Ok((u32::from(a), p))
}

/// A rule's number, from its row's UUID: stable for the row's life and
/// across restarts (the UUID is stored). 24 bits: it is the upper part of
/// the rule's ct_mark and of its flows' cookies.
pub fn rule_id(uuid: &str) -> u32 {
    let hex: String = uuid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(6)
        .collect();
    u32::from_str_radix(&hex, 16).unwrap_or(1).max(1) & 0xff_ffff
}

fn req(row: &Row, col: &str, table: &str) -> Result<String, String> {
    datum::string(row, col)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{table} column {col} is missing"))
}

impl Gateway {
    pub fn from_row(row: &Row) -> Result<Gateway, String> {
        let bridge = req(row, "bridge", "Gateway")?;
        let mac = mac(&req(row, "mac", "Gateway")?)?;
        let mut addresses = Vec::new();
        for a in datum::strings(row, "addresses") {
            addresses.push(cidr(&a)?);
        }
        let upstream = match datum::string(row, "upstream") {
            Some(u) => Some(ip(&u, "upstream")?),
            None => None,
        };
        let zone = match datum::int(row, "zone") {
            Some(z) => u16::try_from(z).map_err(|_| format!("zone {z}: give 0-65535"))?,
            None => DEFAULT_ZONE,
        };
        let g = Gateway {
            bridge,
            mac,
            addresses,
            upstream,
            zone,
        };
        g.check()?;
        Ok(g)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.addresses.is_empty() {
            return Err(format!(
                "gateway of {}: addresses is empty; give at least one IP/PLEN it owns on the bridge (the VMs' default gateway)",
                self.bridge
            ));
        }
        if let Some(u) = self.upstream {
            if self.subnet_of(u).is_none() {
                return Err(format!(
                    "upstream {}: not inside any of the gateway's addresses' subnets",
                    fmt_ip(u)
                ));
            }
        }
        Ok(())
    }

    /// The gateway address on the subnet of `a`.
    pub fn subnet_of(&self, a: u32) -> Option<u32> {
        self.addresses
            .iter()
            .find(|&&(g, plen)| plen == 0 || (g ^ a) >> (32 - plen as u32) == 0)
            .map(|&(g, _)| g)
    }
}

pub fn cidr(s: &str) -> Result<(u32, u8), String> {
    let bad = || format!("address {s:?}: give IP/PLEN such as 10.1.0.1/24");
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let a = a.parse::<Ipv4Addr>().map_err(|_| bad())?;
    let p: u8 = p.parse().map_err(|_| bad())?;
    if p > 32 {
        return Err(bad());
    }
    Ok((u32::from(a), p))
}

impl StaticNat {
    pub fn from_row(uuid: &str, row: &Row) -> Result<StaticNat, String> {
        Ok(StaticNat {
            id: rule_id(uuid),
            bridge: req(row, "bridge", "Static_NAT")?,
            public: ip(&req(row, "public_ip", "Static_NAT")?, "public_ip")?,
            private: ip(&req(row, "private_ip", "Static_NAT")?, "private_ip")?,
        })
    }
}

impl PortForward {
    pub fn from_row(uuid: &str, row: &Row) -> Result<PortForward, String> {
        let t = "Port_Forward";
        let pf = PortForward {
            id: rule_id(uuid),
            bridge: req(row, "bridge", t)?,
            public: ip(&req(row, "public_ip", t)?, "public_ip")?,
            proto: Proto::parse(&req(row, "protocol", t)?)?,
            public_ports: ports(&req(row, "public_ports", t)?, "public_ports")?,
            private: ip(&req(row, "private_ip", t)?, "private_ip")?,
            private_ports: ports(&req(row, "private_ports", t)?, "private_ports")?,
        };
        pf.check()?;
        Ok(pf)
    }

    pub fn check(&self) -> Result<(), String> {
        let n = |(a, b): (u16, u16)| b as u32 - a as u32 + 1;
        let (np, nq) = (n(self.public_ports), n(self.private_ports));
        if nq != 1 && nq != np {
            return Err(format!(
                "private_ports {}: a range must be as long as public_ports {} (offset to offset) or a single port",
                fmt_ports(self.private_ports),
                fmt_ports(self.public_ports)
            ));
        }
        if np > MAX_PF_PORTS {
            return Err(format!(
                "public_ports {}: at most {MAX_PF_PORTS} ports per rule",
                fmt_ports(self.public_ports)
            ));
        }
        Ok(())
    }
}

impl LoadBalancer {
    pub fn from_row(uuid: &str, row: &Row) -> Result<LoadBalancer, String> {
        let t = "Load_Balancer";
        let port = datum::int(row, "port").ok_or("Load_Balancer column port is missing")?;
        let port = u16::try_from(port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {port}: give 1-65535"))?;
        let ids = datum::map(row, "backend_ids");
        let mut backends = Vec::new();
        for (ep, w) in datum::map(row, "backends") {
            let (ip, bport) = endpoint(&ep)?;
            let weight = w
                .parse::<u16>()
                .ok()
                .filter(|&w| w > 0)
                .ok_or_else(|| format!("backend {ep}: weight {w:?}: give 1-65535"))?;
            let index = ids
                .get(&ep)
                .and_then(|i| i.parse::<u8>().ok())
                .filter(|&i| i > 0)
                .ok_or_else(|| {
                    format!("backend {ep}: backend_ids has no number 1-255 for it (rvsctl assigns them)")
                })?;
            backends.push(Backend {
                index,
                ip,
                port: bport,
                weight,
            });
        }
        backends.sort_by_key(|b| b.index);
        if backends.windows(2).any(|w| w[0].index == w[1].index) {
            return Err("backend_ids: two backends share a number".into());
        }
        Ok(LoadBalancer {
            id: rule_id(uuid),
            name: req(row, "name", t)?,
            bridge: req(row, "bridge", t)?,
            vip: ip(&req(row, "vip", t)?, "vip")?,
            proto: Proto::parse(&req(row, "protocol", t)?)?,
            port,
            algorithm: Algorithm::parse(
                &datum::string(row, "algorithm").unwrap_or_else(|| "roundrobin".into()),
            )?,
            stickiness: datum::int(row, "stickiness")
                .map(|s| {
                    u16::try_from(s).map_err(|_| format!("stickiness {s}: give 0-65535 seconds"))
                })
                .transpose()?
                .unwrap_or(0),
            on_remove: OnRemove::parse(
                &datum::string(row, "on_remove").unwrap_or_else(|| "drain".into()),
            )?,
            backends,
        })
    }
}

/// Every rule of one bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeServices {
    pub gateway: Option<Gateway>,
    pub nats: Vec<StaticNat>,
    pub forwards: Vec<PortForward>,
    pub balancers: Vec<LoadBalancer>,
}

/// The whole service configuration: rules by bridge, and the rows that
/// could not be used (with why), which `rvs/service/show` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services {
    pub bridges: BTreeMap<String, BridgeServices>,
    pub errors: Vec<String>,
}

impl Services {
    /// Reads the Rvs database's tables (uuid -> row per table).
    pub fn from_tables(tables: &BTreeMap<String, BTreeMap<String, Row>>) -> Services {
        let mut s = Services::default();
        let rows = |t: &str| tables.get(t).into_iter().flat_map(|m| m.iter());
        for (_, r) in rows("Gateway") {
            match Gateway::from_row(r) {
                Ok(g) => {
                    let name = g.bridge.clone();
                    s.bridges.entry(name).or_default().gateway = Some(g);
                }
                Err(e) => s.errors.push(format!("Gateway: {e}")),
            }
        }
        for (u, r) in rows("Static_NAT") {
            match StaticNat::from_row(u, r) {
                Ok(n) => {
                    let name = n.bridge.clone();
                    s.bridges.entry(name).or_default().nats.push(n)
                }
                Err(e) => s.errors.push(format!("Static_NAT {u}: {e}")),
            }
        }
        for (u, r) in rows("Port_Forward") {
            match PortForward::from_row(u, r) {
                Ok(p) => {
                    let name = p.bridge.clone();
                    s.bridges.entry(name).or_default().forwards.push(p)
                }
                Err(e) => s.errors.push(format!("Port_Forward {u}: {e}")),
            }
        }
        for (u, r) in rows("Load_Balancer") {
            match LoadBalancer::from_row(u, r) {
                Ok(l) => {
                    let name = l.bridge.clone();
                    s.bridges.entry(name).or_default().balancers.push(l)
                }
                Err(e) => s.errors.push(format!("Load_Balancer {u}: {e}")),
            }
        }
        for (name, b) in s.bridges.iter_mut() {
            if b.gateway.is_none()
                && (!b.nats.is_empty() || !b.forwards.is_empty() || !b.balancers.is_empty())
            {
                s.errors.push(format!(
                    "bridge {name}: rules without a gateway are not applied (rvsctl gateway-set {name} ...)"
                ));
            }
            b.nats.sort_by_key(|n| n.public);
            b.forwards
                .sort_by_key(|p| (p.public, p.proto, p.public_ports));
            b.balancers.sort_by(|a, b| a.name.cmp(&b.name));
            unique_ids(b);
        }
        s
    }
}

/// Two rules whose UUIDs begin alike would share a mark; the later one (in
/// a stable order) moves to the next free number.
fn unique_ids(b: &mut BridgeServices) {
    let mut seen = std::collections::BTreeSet::new();
    let mut fix = |id: &mut u32| {
        while !seen.insert(*id) {
            *id = (*id % 0xff_ffff) + 1;
        }
    };
    b.nats.iter_mut().for_each(|n| fix(&mut n.id));
    b.forwards.iter_mut().for_each(|p| fix(&mut p.id));
    b.balancers.iter_mut().for_each(|l| fix(&mut l.id));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: serde_json::Value) -> Row {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn refuses_bad_values_naming_the_column() {
        let e = PortForward::from_row(
            "abcdef00-0000",
            &row(json!({"bridge": "br0", "public_ip": "203.0.113.5", "protocol": "tcp",
                "public_ports": "1000-1010", "private_ip": "10.1.0.5", "private_ports": "2000-2005"})),
        )
        .unwrap_err();
        assert!(
            e.starts_with(
                "private_ports 2000-2005: a range must be as long as public_ports 1000-1010"
            ),
            "{e}"
        );
        let e = StaticNat::from_row(
            "1",
            &row(json!({"bridge": "br0", "public_ip": "203.0.113.300", "private_ip": "10.1.0.5"})),
        )
        .unwrap_err();
        assert!(e.starts_with("public_ip \"203.0.113.300\""), "{e}");
        assert!(mac("01:00:00:00:00:01").is_err());
        assert_eq!(ports("80", "p"), Ok((80, 80)));
        assert!(ports("90-80", "p").is_err());
        let e = LoadBalancer::from_row(
            "1",
            &row(json!({"name": "web", "bridge": "br0", "vip": "203.0.113.20", "protocol": "tcp", "port": 80,
                "backends": ["map", [["10.1.0.5:8000", 1]]]})),
        )
        .unwrap_err();
        assert!(e.contains("backend_ids has no number"), "{e}");
    }

    #[test]
    fn forwards_offset_to_offset_or_all_to_one() {
        let mut pf = PortForward {
            id: 1,
            bridge: "br0".into(),
            public: 1,
            proto: Proto::Udp,
            public_ports: (1000, 1010),
            private: 2,
            private_ports: (2000, 2010),
        };
        assert_eq!(pf.private_port(1004), 2004);
        pf.private_ports = (22, 22);
        assert_eq!(pf.private_port(1004), 22);
    }

    #[test]
    fn rule_ids_come_from_uuids_and_stay_unique() {
        assert_eq!(rule_id("0a1b2c3d-0000-0000-0000-000000000000"), 0x0a1b2c);
        let mut b = BridgeServices::default();
        for u in ["0a1b2c00", "0a1b2cff"] {
            b.nats.push(StaticNat {
                id: rule_id(u),
                bridge: "br0".into(),
                public: 1,
                private: 2,
            });
        }
        unique_ids(&mut b);
        assert_eq!((b.nats[0].id, b.nats[1].id), (0x0a1b2c, 0x0a1b2d));
    }
}
