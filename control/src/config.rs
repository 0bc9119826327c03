//! What the database asks for, extracted from the replica: global DPDK
//! settings, bridges and interfaces with their port's VLAN settings.
use crate::datum::{boolean, int, ints, map, string, strings, uuids};
use crate::db::Db;
use rvs_dataplane::vlan::VlanConf;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GlobalConf {
    pub next_cfg: i64,
    pub other_config: BTreeMap<String, String>,
}

impl GlobalConf {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.other_config.get(k).map(String::as_str)
    }

    /// How often statistics are written back: OVS's stats-update-interval
    /// (ms, default 5000), no shorter than a second.
    /// `tunnel-peer-allowlist`: underlay addresses or networks (a.b.c.d
    /// or a.b.c.d/len, separated by commas or spaces) tunnel traffic is
    /// taken from. Ok(None): unset, from anyone.
    pub fn tunnel_peers(&self) -> Result<Option<Vec<(u32, u32)>>, String> {
        let Some(v) = self.get("tunnel-peer-allowlist") else {
            return Ok(None);
        };
        let bad = |w: &str, why: &str| {
            format!("other_config:tunnel-peer-allowlist: {w:?} {why}; give IPv4 addresses or networks such as 10.0.0.2,10.1.0.0/16")
        };
        let mut out = Vec::new();
        for w in v.split([',', ' ']).filter(|w| !w.is_empty()) {
            let (a, len) = match w.split_once('/') {
                Some((a, l)) => (
                    a,
                    l.parse::<u32>()
                        .ok()
                        .filter(|l| *l <= 32)
                        .ok_or_else(|| bad(w, "has a prefix length outside 0-32"))?,
                ),
                None => (w, 32),
            };
            let ip: std::net::Ipv4Addr = a.parse().map_err(|_| bad(w, "is not an IPv4 address"))?;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let net = u32::from(ip);
            if net & !mask != 0 {
                return Err(bad(w, "has host bits set"));
            }
            out.push((net, mask));
        }
        Ok(Some(out))
    }

    pub fn stats_interval(&self) -> std::time::Duration {
        let ms = self
            .get("stats-update-interval")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000u64);
        std::time::Duration::from_millis(ms.max(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_peers_are_addresses_and_networks_or_refused_whole() {
        let g = |v: &str| GlobalConf {
            next_cfg: 0,
            other_config: [("tunnel-peer-allowlist".to_string(), v.to_string())].into(),
        };
        assert_eq!(
            g("10.0.0.2, 10.1.0.0/16").tunnel_peers(),
            Ok(Some(vec![
                (0x0a00_0002, u32::MAX),
                (0x0a01_0000, 0xffff_0000)
            ]))
        );
        assert_eq!(g("").tunnel_peers(), Ok(Some(vec![])));
        for bad in ["10.0.0.300", "10.1.0.0/33", "10.1.0.1/16", "10.0.0.2,x"] {
            let e = g(bad).tunnel_peers().unwrap_err();
            assert!(e.starts_with("other_config:tunnel-peer-allowlist: "), "{e}");
        }
        assert_eq!(GlobalConf::default().tunnel_peers(), Ok(None));
    }

    #[test]
    fn stats_interval_defaults_and_floor() {
        let g = |v: Option<&str>| GlobalConf {
            next_cfg: 0,
            other_config: v
                .map(|v| [("stats-update-interval".to_string(), v.to_string())].into())
                .unwrap_or_default(),
        };
        assert_eq!(g(None).stats_interval().as_millis(), 5000);
        assert_eq!(g(Some("2000")).stats_interval().as_millis(), 2000);
        assert_eq!(g(Some("10")).stats_interval().as_millis(), 1000);
        assert_eq!(g(Some("soon")).stats_interval().as_millis(), 5000);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BridgeSpec {
    pub uuid: String,
    pub name: String,
    pub other_config: BTreeMap<String, String>,
    pub stp_enable: bool,
    pub datapath_id: Option<String>,
    /// Bridge `protocols`: OpenFlow versions allowed (empty: OVS's default
    /// set).
    pub protocols: Vec<String>,
    /// Bridge `controller`: (Controller row uuid, target) to connect to.
    pub controllers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IfaceSpec {
    pub uuid: String,
    pub name: String,
    pub kind: String,
    pub options: BTreeMap<String, String>,
    pub mtu_request: Option<i64>,
    pub ofport_request: Option<i64>,
    /// The ofport the database holds now (kept across rvsd restarts).
    pub ofport: Option<i64>,
    pub bridge: String,
    pub port: String,
    pub vlan: Result<VlanConf, String>,
    /// Rate limits (Interface ingress policing, the Port's QoS).
    pub qos: QosConf,
}

/// A port's rate limits as the database gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosConf {
    /// `ingress_policing_rate` (kbit/s) and `ingress_policing_burst` (kbit,
    /// 0: OVS's default of 8000); None: not policed.
    pub policing: Option<(u64, u64)>,
    /// The Port's QoS: Ok(None) none (or no rate in it), Err: refused with
    /// the reason (logged; the port forwards unshaped).
    pub shaping: Result<Option<Shaping>, String>,
}

/// An egress limit: `linux-htb` / `linux-hfsc` (shaped: frames beyond the
/// rate wait) or OVS-DPDK's `egress-policer` (dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaping {
    pub kind: String,
    /// Bits per second.
    pub max_rate: u64,
    /// Bytes.
    pub burst: u64,
    /// Frames beyond the rate wait (a shaper) rather than drop.
    pub queue: bool,
}

impl Default for QosConf {
    fn default() -> Self {
        QosConf {
            policing: None,
            shaping: Ok(None),
        }
    }
}

impl QosConf {
    fn read(db: &Db, port: &crate::datum::Row, ifr: &crate::datum::Row) -> QosConf {
        let rate = int(ifr, "ingress_policing_rate").unwrap_or(0).max(0) as u64;
        let burst = int(ifr, "ingress_policing_burst").unwrap_or(0).max(0) as u64;
        QosConf {
            policing: (rate > 0).then_some((rate, burst)),
            shaping: Self::shaping(db, port),
        }
    }

    fn shaping(db: &Db, port: &crate::datum::Row) -> Result<Option<Shaping>, String> {
        let Some(qu) = uuids(port, "qos").into_iter().next() else {
            return Ok(None);
        };
        let Some(q) = db.row("QoS", &qu) else {
            return Ok(None);
        };
        let kind = string(q, "type").unwrap_or_default();
        let oc = map(q, "other_config");
        let num =
            |m: &BTreeMap<String, String>, k: &str, what: &str| -> Result<Option<u64>, String> {
                m.get(k)
                    .map(|v| {
                        v.parse::<u64>().map_err(|_| {
                            format!("QoS {what} other_config:{k}={v:?} is not a whole number")
                        })
                    })
                    .transpose()
            };
        match kind.as_str() {
            "linux-htb" | "linux-hfsc" => {
                // Queue 0 (the default queue) limits the port; its max-rate
                // falls back to the QoS's, as in OVS. Without either there
                // is no limit (OVS: the link's speed).
                let q0 = queue0(q).and_then(|u| db.row("Queue", &u)).map(|r| map(r, "other_config")).unwrap_or_default();
                let max = match num(&q0, "max-rate", "queue 0")? {
                    Some(r) => Some(r),
                    None => num(&oc, "max-rate", &kind)?,
                };
                let Some(max) = max.filter(|&r| r > 0) else {
                    return Ok(None);
                };
                let burst_bits = num(&q0, "burst", "queue 0")?.or(num(&oc, "burst", &kind)?);
                Ok(Some(Shaping {
                    max_rate: max,
                    burst: burst_bits.map(|b| b / 8).unwrap_or(0).max(default_burst(max)),
                    queue: true,
                    kind,
                }))
            }
            "egress-policer" => {
                // OVS-DPDK's: cir in bytes/s, cbs in bytes.
                let Some(cir) = num(&oc, "cir", &kind)?.filter(|&c| c > 0) else {
                    return Ok(None);
                };
                let cbs = num(&oc, "cbs", &kind)?.unwrap_or(0).max(1518);
                Ok(Some(Shaping {
                    kind,
                    max_rate: cir * 8,
                    burst: cbs,
                    queue: false,
                }))
            }
            "" => Ok(None),
            k => Err(format!(
                "QoS type {k:?} is not supported (rvs supports linux-htb, linux-hfsc, egress-policer)"
            )),
        }
    }
}

/// A shaper's bucket when none is given: 20 ms at the rate, at least 16 KB
/// (a TCP flow reaches the rate without tripping on its own bursts).
fn default_burst(bits_per_sec: u64) -> u64 {
    (bits_per_sec / 8 / 50).max(16 * 1024)
}

/// The Queue row of queue 0 in a QoS's `queues` (an integer-keyed map).
fn queue0(q: &crate::datum::Row) -> Option<String> {
    let v = q.get("queues")?;
    let pairs = v.as_array().filter(|a| a.len() == 2 && a[0] == "map")?[1].as_array()?;
    pairs.iter().find_map(|kv| {
        (kv.get(0)?.as_i64()? == 0)
            .then(|| kv.get(1)?.as_array()?.get(1)?.as_str().map(String::from))?
    })
}

impl IfaceSpec {
    /// What identifies the device: a change here means close and reopen.
    /// (mtu_request and options:tx-retries-max are applied in place where
    /// the port allows it.)
    pub fn devkey(&self) -> String {
        let opts: Vec<_> = self
            .options
            .iter()
            .filter(|(k, _)| k.as_str() != "tx-retries-max")
            .collect();
        format!("{}|{opts:?}", self.kind)
    }

    /// options:tx-retries-max of a vhost-user port: how often a burst the
    /// guest's ring took only part of is offered again (OVS: 0 to 32,
    /// default 8).
    pub fn tx_retries_max(&self) -> Result<u32, String> {
        match self.options.get("tx-retries-max") {
            None => Ok(rvs_dataplane::dpdk::VHOST_TX_RETRIES_DEFAULT),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= rvs_dataplane::dpdk::VHOST_TX_RETRIES_MAX)
                .ok_or_else(|| {
                    format!(
                        "options:tx-retries-max={v:?} is not a number from 0 to {}",
                        rvs_dataplane::dpdk::VHOST_TX_RETRIES_MAX
                    )
                }),
        }
    }

    pub fn is_bridge_local(&self) -> bool {
        self.kind == "internal" && self.name == self.bridge
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub global: GlobalConf,
    pub bridges: Vec<BridgeSpec>,
    pub ifaces: Vec<IfaceSpec>,
}

/// Reads the desired configuration. Rows that are dangling (a reference to
/// a row the replica does not have yet) are skipped, never fatal.
pub fn desired(db: &Db) -> Desired {
    let mut d = Desired::default();
    let Some((_, root)) = db.root() else { return d };
    d.global = GlobalConf {
        next_cfg: int(root, "next_cfg").unwrap_or(0),
        other_config: map(root, "other_config"),
    };
    let mut seen_iface = std::collections::HashSet::new();
    for bu in uuids(root, "bridges") {
        let Some(br) = db.row("Bridge", &bu) else {
            continue;
        };
        let Some(bname) = string(br, "name") else {
            continue;
        };
        d.bridges.push(BridgeSpec {
            uuid: bu.clone(),
            name: bname.clone(),
            other_config: map(br, "other_config"),
            stp_enable: boolean(br, "stp_enable").unwrap_or(false),
            datapath_id: string(br, "datapath_id"),
            protocols: strings(br, "protocols"),
            controllers: uuids(br, "controller")
                .into_iter()
                .filter_map(|cu| {
                    let t = string(db.row("Controller", &cu)?, "target")?;
                    Some((cu, t))
                })
                .collect(),
        });
        for pu in uuids(br, "ports") {
            let Some(port) = db.row("Port", &pu) else {
                continue;
            };
            let pname = string(port, "name").unwrap_or_default();
            let vlan = VlanConf::from_ovsdb(
                string(port, "vlan_mode").as_deref(),
                int(port, "tag"),
                &ints(port, "trunks"),
            )
            .map_err(|e| format!("port {pname}: {e}"));
            for iu in uuids(port, "interfaces") {
                let Some(ifr) = db.row("Interface", &iu) else {
                    continue;
                };
                let Some(name) = string(ifr, "name") else {
                    continue;
                };
                if !seen_iface.insert(name.clone()) {
                    continue;
                }
                d.ifaces.push(IfaceSpec {
                    uuid: iu.clone(),
                    name,
                    kind: string(ifr, "type").unwrap_or_default(),
                    options: map(ifr, "options"),
                    mtu_request: int(ifr, "mtu_request"),
                    ofport_request: int(ifr, "ofport_request"),
                    ofport: int(ifr, "ofport"),
                    bridge: bname.clone(),
                    port: pname.clone(),
                    vlan: vlan.clone(),
                    qos: QosConf::read(db, port, ifr),
                });
            }
        }
    }
    d.bridges.sort_by(|a, b| a.name.cmp(&b.name));
    d
}
