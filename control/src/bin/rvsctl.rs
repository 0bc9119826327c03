//! rvsctl: manages rvs's service rules (gateway, static NAT, port
//! forwarding, load balancers) in the Rvs database beside Open_vSwitch,
//! and waits until rvsd has applied them, as ovs-vsctl does. Every value
//! is checked before anything is written; a refused command changes
//! nothing.
use clap::{Parser, Subcommand};
use rvs_control::datum::{self, make_map, make_set, Row};
use rvs_control::service::spec::{self, Algorithm, OnRemove, PortForward, Proto};
use rvs_control::service::store::{self, Client};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "rvsctl",
    version,
    about = "rvs service rules: gateway, static NAT, port forwarding, load balancers"
)]
struct Args {
    /// The database, as unix:PATH (the one rvsd follows).
    #[arg(long, default_value = "unix:/var/run/openvswitch/db.sock")]
    db: String,
    /// Where rvsd's pid file and unixctl socket are, for `show` (default
    /// $OVS_RUNDIR, else /var/run/openvswitch).
    #[arg(long)]
    rundir: Option<PathBuf>,
    /// Seconds to wait for the database and for rvsd.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Do not wait for rvsd to apply the change.
    #[arg(long)]
    no_wait: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Creates or changes BRIDGE's gateway: its MAC and the addresses it owns (IP/PLEN).
    GatewaySet {
        bridge: String,
        mac: String,
        #[arg(required = true)]
        addresses: Vec<String>,
        /// Next hop for destinations nobody on the bridge claims.
        #[arg(long)]
        upstream: Option<String>,
        /// Conntrack zone of the gateway's connections.
        #[arg(long)]
        zone: Option<u16>,
    },
    /// Removes BRIDGE's gateway (its rules stay in the database, unapplied).
    GatewayDel {
        bridge: String,
    },
    /// Static NAT: PUBLIC_IP <-> PRIVATE_IP on BRIDGE.
    NatAdd {
        bridge: String,
        public_ip: String,
        private_ip: String,
    },
    NatDel {
        public_ip: String,
    },
    /// Port forwarding: PUBLIC_IP PROTO PORT[-PORT] -> PRIVATE_IP PORT[-PORT].
    PfAdd {
        bridge: String,
        public_ip: String,
        protocol: String,
        public_ports: String,
        private_ip: String,
        private_ports: String,
    },
    PfDel {
        public_ip: String,
        protocol: String,
        public_ports: String,
    },
    /// A load balancer NAME for VIP PROTO PORT, with backends IP:PORT[=WEIGHT].
    LbAdd {
        name: String,
        bridge: String,
        vip: String,
        protocol: String,
        port: u16,
        backends: Vec<String>,
        #[arg(long, default_value = "roundrobin")]
        algorithm: String,
        /// Seconds a client stays on its backend (0: off).
        #[arg(long, default_value_t = 0)]
        stickiness: u16,
        /// What a removed backend's connections get: drain or reset.
        #[arg(long, default_value = "drain")]
        on_remove: String,
    },
    LbDel {
        name: String,
    },
    /// Adds (or re-weights) a backend IP:PORT of load balancer NAME.
    LbBackendAdd {
        name: String,
        backend: String,
        #[arg(default_value_t = 1)]
        weight: u16,
    },
    LbBackendDel {
        name: String,
        backend: String,
    },
    /// The rules in the database.
    List,
    /// The rules as rvsd applies them, with counters.
    Show,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("rvsctl: {e}");
            std::process::exit(1);
        }
    }
}

fn where_eq(col: &str, v: Value) -> Value {
    json!([[col, "==", v]])
}

fn uuid_where(u: &str) -> Value {
    json!([["_uuid", "==", ["uuid", u]]])
}

fn find(rows: &HashMap<String, Row>, pred: impl Fn(&Row) -> bool) -> Option<(&String, &Row)> {
    rows.iter().find(|(_, r)| pred(r))
}

fn s(r: &Row, c: &str) -> String {
    datum::string(r, c).unwrap_or_default()
}

/// Refuses a rule for a bridge without a gateway: it would never apply.
fn need_gateway(c: &mut Client, bridge: &str) -> Result<(), String> {
    let gws = store::select(c, "Gateway")?;
    if find(&gws, |r| s(r, "bridge") == bridge).is_none() {
        return Err(format!(
            "bridge {bridge} has no gateway: first rvsctl gateway-set {bridge} MAC IP/PLEN..."
        ));
    }
    Ok(())
}

fn lb_row(c: &mut Client, name: &str) -> Result<(String, Row), String> {
    let lbs = store::select(c, "Load_Balancer")?;
    find(&lbs, |r| s(r, "name") == name)
        .map(|(u, r)| (u.clone(), r.clone()))
        .ok_or_else(|| format!("no load balancer named {name:?}"))
}

/// The operations one command makes (validated), or its output.
enum Plan {
    Write(Vec<Value>),
    Print(String),
}

fn plan(c: &mut Client, args: &Args) -> Result<Plan, String> {
    Ok(Plan::Write(match &args.cmd {
        Cmd::GatewaySet {
            bridge,
            mac,
            addresses,
            upstream,
            zone,
        } => {
            let g = spec::Gateway {
                bridge: bridge.clone(),
                mac: spec::mac(mac)?,
                addresses: addresses
                    .iter()
                    .map(|a| spec::cidr(a))
                    .collect::<Result<_, _>>()?,
                upstream: upstream
                    .as_deref()
                    .map(|u| spec::ip(u, "upstream"))
                    .transpose()?,
                zone: zone.unwrap_or(spec::DEFAULT_ZONE),
            };
            g.check()?;
            let row = json!({
                "bridge": bridge,
                "mac": spec::fmt_mac(g.mac),
                "addresses": make_set(addresses.iter().map(|a| a.as_str())),
                "upstream": make_set(upstream.iter().map(|u| u.as_str())),
                "zone": g.zone,
            });
            let gws = store::select(c, "Gateway")?;
            match find(&gws, |r| s(r, "bridge") == *bridge) {
                Some((u, _)) => vec![
                    json!({"op": "update", "table": "Gateway", "where": uuid_where(u), "row": row}),
                ],
                None => vec![json!({"op": "insert", "table": "Gateway", "row": row})],
            }
        }
        Cmd::GatewayDel { bridge } => {
            vec![
                json!({"op": "delete", "table": "Gateway", "where": where_eq("bridge", json!(bridge))}),
            ]
        }
        Cmd::NatAdd {
            bridge,
            public_ip,
            private_ip,
        } => {
            spec::ip(public_ip, "public_ip")?;
            spec::ip(private_ip, "private_ip")?;
            need_gateway(c, bridge)?;
            let nats = store::select(c, "Static_NAT")?;
            if let Some((_, r)) = find(&nats, |r| {
                s(r, "public_ip") == *public_ip || s(r, "private_ip") == *private_ip
            }) {
                return Err(format!(
                    "static NAT {} <-> {} exists already (rvsctl nat-del {} first)",
                    s(r, "public_ip"),
                    s(r, "private_ip"),
                    s(r, "public_ip")
                ));
            }
            vec![json!({"op": "insert", "table": "Static_NAT", "row": {
                "bridge": bridge, "public_ip": public_ip, "private_ip": private_ip}})]
        }
        Cmd::NatDel { public_ip } => {
            let nats = store::select(c, "Static_NAT")?;
            find(&nats, |r| s(r, "public_ip") == *public_ip)
                .ok_or_else(|| format!("no static NAT for {public_ip}"))?;
            vec![
                json!({"op": "delete", "table": "Static_NAT", "where": where_eq("public_ip", json!(public_ip))}),
            ]
        }
        Cmd::PfAdd {
            bridge,
            public_ip,
            protocol,
            public_ports,
            private_ip,
            private_ports,
        } => {
            let pf = PortForward {
                id: 0,
                bridge: bridge.clone(),
                public: spec::ip(public_ip, "public_ip")?,
                proto: Proto::parse(protocol)?,
                public_ports: spec::ports(public_ports, "public_ports")?,
                private: spec::ip(private_ip, "private_ip")?,
                private_ports: spec::ports(private_ports, "private_ports")?,
            };
            pf.check()?;
            need_gateway(c, bridge)?;
            let pfs = store::select(c, "Port_Forward")?;
            let clash = find(&pfs, |r| {
                let Ok(other) = spec::ports(&s(r, "public_ports"), "") else {
                    return false;
                };
                s(r, "public_ip") == *public_ip
                    && s(r, "protocol") == pf.proto.name()
                    && other.0 <= pf.public_ports.1
                    && pf.public_ports.0 <= other.1
            });
            if let Some((_, r)) = clash {
                return Err(format!(
                    "public_ports {}: {} {} {} is forwarded already",
                    public_ports,
                    public_ip,
                    s(r, "protocol"),
                    s(r, "public_ports")
                ));
            }
            vec![json!({"op": "insert", "table": "Port_Forward", "row": {
                "bridge": bridge, "public_ip": public_ip, "protocol": pf.proto.name(),
                "public_ports": spec::fmt_ports(pf.public_ports), "private_ip": private_ip,
                "private_ports": spec::fmt_ports(pf.private_ports)}})]
        }
        Cmd::PfDel {
            public_ip,
            protocol,
            public_ports,
        } => {
            let ports = spec::fmt_ports(spec::ports(public_ports, "public_ports")?);
            let pfs = store::select(c, "Port_Forward")?;
            let (u, _) = find(&pfs, |r| {
                s(r, "public_ip") == *public_ip
                    && s(r, "protocol") == *protocol
                    && s(r, "public_ports") == ports
            })
            .ok_or_else(|| format!("no port forwarding for {public_ip} {protocol} {ports}"))?;
            vec![json!({"op": "delete", "table": "Port_Forward", "where": uuid_where(u)})]
        }
        Cmd::LbAdd {
            name,
            bridge,
            vip,
            protocol,
            port,
            backends,
            algorithm,
            stickiness,
            on_remove,
        } => {
            spec::ip(vip, "vip")?;
            let proto = Proto::parse(protocol)?;
            let algorithm = Algorithm::parse(algorithm)?;
            let on_remove = OnRemove::parse(on_remove)?;
            if *port == 0 {
                return Err("port 0: give 1-65535".into());
            }
            let mut bes = Vec::new();
            for (i, b) in backends.iter().enumerate() {
                let (ep, w) = b.split_once('=').unwrap_or((b, "1"));
                spec::endpoint(ep)?;
                let w: u16 = w
                    .parse()
                    .ok()
                    .filter(|&w| w > 0)
                    .ok_or_else(|| format!("backend {b}: weight {w:?}: give 1-65535"))?;
                if bes.iter().any(|(e, _, _)| e == ep) {
                    return Err(format!("backend {ep} is listed twice"));
                }
                if i >= 255 {
                    return Err("at most 255 backends".into());
                }
                bes.push((ep.to_string(), w, i as i64 + 1));
            }
            need_gateway(c, bridge)?;
            let lbs = store::select(c, "Load_Balancer")?;
            if find(&lbs, |r| s(r, "name") == *name).is_some() {
                return Err(format!(
                    "load balancer {name:?} exists already (rvsctl lb-del {name} first)"
                ));
            }
            if let Some((_, r)) = find(&lbs, |r| {
                s(r, "vip") == *vip
                    && s(r, "protocol") == proto.name()
                    && datum::int(r, "port") == Some(*port as i64)
            }) {
                return Err(format!(
                    "{vip} {} {port} is load balancer {:?} already",
                    proto.name(),
                    s(r, "name")
                ));
            }
            vec![json!({"op": "insert", "table": "Load_Balancer", "row": {
                "name": name, "bridge": bridge, "vip": vip, "protocol": proto.name(), "port": port,
                "algorithm": algorithm.name(), "stickiness": stickiness, "on_remove": on_remove.name(),
                "backends": make_map(bes.iter().map(|(e, w, _)| (e.as_str(), json!(w)))),
                "backend_ids": make_map(bes.iter().map(|(e, _, i)| (e.as_str(), json!(i)))),
            }})]
        }
        Cmd::LbDel { name } => {
            let (u, _) = lb_row(c, name)?;
            vec![json!({"op": "delete", "table": "Load_Balancer", "where": uuid_where(&u)})]
        }
        Cmd::LbBackendAdd {
            name,
            backend,
            weight,
        } => {
            spec::endpoint(backend)?;
            if *weight == 0 {
                return Err("weight 0: give 1-65535".into());
            }
            let (u, r) = lb_row(c, name)?;
            let mut ws = datum::map(&r, "backends");
            let mut ids = datum::map(&r, "backend_ids");
            if !ids.contains_key(backend) {
                let used: Vec<u8> = ids.values().filter_map(|i| i.parse().ok()).collect();
                let free = (1..=255u8)
                    .find(|i| !used.contains(i))
                    .ok_or("at most 255 backends")?;
                ids.insert(backend.clone(), free.to_string());
            }
            ws.insert(backend.clone(), weight.to_string());
            let num = |m: &std::collections::BTreeMap<String, String>| {
                make_map(
                    m.iter()
                        .map(|(k, v)| (k.as_str(), json!(v.parse::<i64>().unwrap_or(1)))),
                )
            };
            vec![
                json!({"op": "update", "table": "Load_Balancer", "where": uuid_where(&u),
                "row": {"backends": num(&ws), "backend_ids": num(&ids)}}),
            ]
        }
        Cmd::LbBackendDel { name, backend } => {
            let (u, r) = lb_row(c, name)?;
            if !datum::map(&r, "backends").contains_key(backend) {
                return Err(format!("load balancer {name} has no backend {backend}"));
            }
            vec![
                json!({"op": "mutate", "table": "Load_Balancer", "where": uuid_where(&u),
                "mutations": [["backends", "delete", make_set([backend.as_str()])],
                              ["backend_ids", "delete", make_set([backend.as_str()])]]}),
            ]
        }
        Cmd::List => return Ok(Plan::Print(list(c)?)),
        Cmd::Show => {
            let dir = args.rundir.clone().unwrap_or_else(|| {
                PathBuf::from(
                    std::env::var("OVS_RUNDIR").unwrap_or_else(|_| "/var/run/openvswitch".into()),
                )
            });
            return Ok(Plan::Print(show(&dir, args.timeout)?));
        }
    }))
}

fn list(c: &mut Client) -> Result<String, String> {
    use std::fmt::Write;
    let mut out = String::new();
    let mut gws: Vec<Row> = store::select(c, "Gateway")?.into_values().collect();
    gws.sort_by_key(|r| s(r, "bridge"));
    for r in gws {
        let _ = writeln!(
            out,
            "gateway {} {} {}{}",
            s(&r, "bridge"),
            s(&r, "mac"),
            datum::strings(&r, "addresses").join(" "),
            datum::string(&r, "upstream")
                .map(|u| format!(" upstream {u}"))
                .unwrap_or_default()
        );
    }
    let mut nats: Vec<Row> = store::select(c, "Static_NAT")?.into_values().collect();
    nats.sort_by_key(|r| s(r, "public_ip"));
    for r in nats {
        let _ = writeln!(
            out,
            "static-nat {} {} <-> {}",
            s(&r, "bridge"),
            s(&r, "public_ip"),
            s(&r, "private_ip")
        );
    }
    let mut pfs: Vec<Row> = store::select(c, "Port_Forward")?.into_values().collect();
    pfs.sort_by_key(|r| (s(r, "public_ip"), s(r, "protocol"), s(r, "public_ports")));
    for r in pfs {
        let _ = writeln!(
            out,
            "port-forward {} {} {} {} -> {}:{}",
            s(&r, "bridge"),
            s(&r, "public_ip"),
            s(&r, "protocol"),
            s(&r, "public_ports"),
            s(&r, "private_ip"),
            s(&r, "private_ports")
        );
    }
    let mut lbs: Vec<Row> = store::select(c, "Load_Balancer")?.into_values().collect();
    lbs.sort_by_key(|r| s(r, "name"));
    for r in lbs {
        let bes: Vec<String> = datum::map(&r, "backends")
            .iter()
            .map(|(e, w)| format!("{e}={w}"))
            .collect();
        let _ = writeln!(
            out,
            "load-balancer {} {} {}:{} {} {} stickiness {} on-remove {} backends {}",
            s(&r, "name"),
            s(&r, "bridge"),
            s(&r, "vip"),
            datum::int(&r, "port").unwrap_or(0),
            s(&r, "protocol"),
            s(&r, "algorithm"),
            datum::int(&r, "stickiness").unwrap_or(0),
            s(&r, "on_remove"),
            bes.join(" ")
        );
    }
    Ok(out)
}

/// rvsd's `rvs/service/show` through its unixctl socket.
fn show(rundir: &Path, timeout: u64) -> Result<String, String> {
    let pid = std::fs::read_to_string(rundir.join("ovs-vswitchd.pid")).map_err(|e| {
        format!(
            "{}/ovs-vswitchd.pid: {e} (is rvsd running?)",
            rundir.display()
        )
    })?;
    let ctl = rundir.join(format!("ovs-vswitchd.{}.ctl", pid.trim()));
    let mut u = Client::connect(&ctl, Duration::from_secs(timeout))?;
    let r = u.call("rvs/service/show", json!([]))?;
    Ok(r.as_str().unwrap_or_default().to_string())
}

fn run(args: &Args) -> Result<String, String> {
    let sock = rvs_control::jsonrpc::unix_path(&args.db)?;
    let timeout = Duration::from_secs(args.timeout);
    let mut c = Client::connect(Path::new(sock), timeout)?;
    let dbs = c.call("list_dbs", json!([]))?;
    if !dbs
        .as_array()
        .is_some_and(|a| a.iter().any(|d| d == store::DB_NAME))
    {
        return Err(format!(
            "{} does not serve the {} database yet: start rvsd (it adds it) first",
            args.db,
            store::DB_NAME
        ));
    }
    let mut ops = match plan(&mut c, args)? {
        Plan::Print(s) => return Ok(s),
        Plan::Write(ops) => ops,
    };
    if store::select(&mut c, "Services")?.is_empty() {
        // The first command ever: the root row (a concurrent one wins).
        let _ = c.transact(vec![json!({"op": "insert", "table": "Services",
            "row": {"next_cfg": 0, "cur_cfg": 0}})]);
    }
    ops.push(json!({"op": "mutate", "table": "Services", "where": [],
        "mutations": [["next_cfg", "+=", 1]]}));
    ops.push(json!({"op": "select", "table": "Services", "where": [], "columns": ["next_cfg"]}));
    let n = ops.len();
    let res = c.transact(ops)?;
    let cfg = res
        .get(n - 1)
        .and_then(|r| r["rows"][0]["next_cfg"].as_i64())
        .ok_or("the database did not return next_cfg")?;
    if !args.no_wait {
        store::wait_applied(&mut c, cfg, timeout)?;
    }
    Ok(String::new())
}
