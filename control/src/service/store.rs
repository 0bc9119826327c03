//! Where service rules live: the Rvs database (schema in
//! control/schema/rvs.ovsschema), served by the same ovsdb-server as
//! Open_vSwitch. rvsd adds it to a running ovsdb-server when it is not
//! there (creating the file with ovsdb-tool the first time), so a host
//! whose ovsdb-server is started by ovs-ctl needs nothing else; rvsctl
//! writes it and waits for rvsd, as ovs-vsctl does with next_cfg/cur_cfg.
use crate::db::Db;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const SCHEMA: &str = include_str!("../../schema/rvs.ovsschema");
pub const DB_NAME: &str = "Rvs";
pub const MONITOR_ID: &str = "rvsd-services";

pub const TABLES: &[(&str, &[&str])] = &[
    ("Services", &["next_cfg", "cur_cfg"]),
    (
        "Gateway",
        &["bridge", "mac", "addresses", "upstream", "zone"],
    ),
    ("Static_NAT", &["bridge", "public_ip", "private_ip"]),
    (
        "Port_Forward",
        &[
            "bridge",
            "public_ip",
            "protocol",
            "public_ports",
            "private_ip",
            "private_ports",
        ],
    ),
    (
        "Load_Balancer",
        &[
            "name",
            "bridge",
            "vip",
            "protocol",
            "port",
            "algorithm",
            "stickiness",
            "on_remove",
            "backends",
            "backend_ids",
        ],
    ),
];

pub fn monitor_request(id: u64) -> Value {
    let mut req = serde_json::Map::new();
    for (t, cols) in TABLES {
        req.insert(t.to_string(), json!({ "columns": cols }));
    }
    json!({"method": "monitor", "params": [DB_NAME, MONITOR_ID, req], "id": id})
}

pub fn transact(id: u64, ops: Vec<Value>) -> Value {
    let mut params = vec![json!(DB_NAME)];
    params.extend(ops);
    json!({"method": "transact", "params": params, "id": id})
}

/// The service rules in a replica of the Rvs database.
pub fn services(db: &Db) -> super::spec::Services {
    let tables: BTreeMap<String, BTreeMap<String, crate::datum::Row>> = db
        .tables
        .iter()
        .map(|(t, rows)| {
            (
                t.clone(),
                rows.iter().map(|(u, r)| (u.clone(), r.clone())).collect(),
            )
        })
        .collect();
    super::spec::Services::from_tables(&tables)
}

/// The write that tells rvsctl the configuration it asked for is live:
/// cur_cfg = next_cfg on the Services row.
pub fn cur_cfg_op(db: &Db) -> Option<Value> {
    let (uuid, row) = db.tables.get("Services")?.iter().next()?;
    let next = crate::datum::int(row, "next_cfg")?;
    if crate::datum::int(row, "cur_cfg") == Some(next) {
        return None;
    }
    Some(json!({"op": "update", "table": "Services",
        "where": [["_uuid", "==", ["uuid", uuid]]], "row": {"cur_cfg": next}}))
}

/// A blocking JSON-RPC client for one-off requests (list_dbs, transact,
/// unixctl commands).
pub struct Client {
    w: UnixStream,
    r: serde_json::StreamDeserializer<
        'static,
        serde_json::de::IoRead<BufReader<UnixStream>>,
        Value,
    >,
    next: u64,
}

impl Client {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, String> {
        let w = UnixStream::connect(path)
            .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
        let _ = w.set_read_timeout(Some(timeout));
        let r = w.try_clone().map_err(|e| e.to_string())?;
        Ok(Client {
            w,
            r: serde_json::Deserializer::from_reader(BufReader::new(r)).into_iter(),
            next: 1,
        })
    }

    /// Sends a request and returns its reply's result (an error reply or
    /// a closed connection is an Err).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next;
        self.next += 1;
        crate::jsonrpc::send(
            &mut self.w,
            &json!({"method": method, "params": params, "id": id}),
        )
        .map_err(|e| format!("{method}: {e}"))?;
        loop {
            let m = match self.r.next() {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(format!("{method}: {e}")),
                None => return Err(format!("{method}: connection closed")),
            };
            if m.get("method").and_then(|x| x.as_str()) == Some("echo") {
                let reply = json!({"id": m["id"], "result": m["params"], "error": null});
                let _ = crate::jsonrpc::send(&mut self.w, &reply);
                continue;
            }
            if m.get("id").and_then(|i| i.as_u64()) != Some(id) {
                continue;
            }
            if !m["error"].is_null() {
                return Err(match &m["error"] {
                    Value::String(s) => s.clone(),
                    e => e.to_string(),
                });
            }
            return Ok(m["result"].clone());
        }
    }

    /// An Rvs transaction; the first operation error (with its details)
    /// fails it.
    pub fn transact(&mut self, ops: Vec<Value>) -> Result<Vec<Value>, String> {
        let mut params = vec![json!(DB_NAME)];
        params.extend(ops);
        let res = self.call("transact", Value::Array(params))?;
        let res = res.as_array().cloned().unwrap_or_default();
        if let Some(e) = res.iter().find(|r| r.get("error").is_some()) {
            return Err(format!(
                "the database refused the change: {}{}",
                e["error"].as_str().unwrap_or("error"),
                e.get("details")
                    .and_then(|d| d.as_str())
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ));
        }
        Ok(res)
    }
}

/// ovsdb-server's unixctl socket beside its database socket: the pid
/// file's `ovsdb-server.<pid>.ctl`, else `ovsdb-server.ctl`.
pub fn ovsdb_ctl(db_sock: &Path) -> Option<PathBuf> {
    let dir = db_sock.parent()?;
    if let Ok(pid) = std::fs::read_to_string(dir.join("ovsdb-server.pid")) {
        let p = dir.join(format!("ovsdb-server.{}.ctl", pid.trim()));
        if p.exists() {
            return Some(p);
        }
    }
    let p = dir.join("ovsdb-server.ctl");
    p.exists().then_some(p)
}

/// Makes ovsdb-server serve the Rvs database: nothing when it does,
/// otherwise creates `file` (if missing) and adds it through
/// ovsdb-server's unixctl. Returns what was done.
pub fn ensure(db_sock: &Path, file: &Path, ctl: Option<&Path>) -> Result<&'static str, String> {
    let mut c = Client::connect(db_sock, Duration::from_secs(5))?;
    let dbs = c.call("list_dbs", json!([]))?;
    if dbs
        .as_array()
        .is_some_and(|a| a.iter().any(|d| d == DB_NAME))
    {
        return Ok("served");
    }
    let mut did = "added";
    if !file.exists() {
        let schema = file.with_extension("ovsschema.tmp");
        std::fs::write(&schema, SCHEMA)
            .map_err(|e| format!("cannot write {}: {e}", schema.display()))?;
        let out = std::process::Command::new("ovsdb-tool")
            .arg("create")
            .arg(file)
            .arg(&schema)
            .output();
        let _ = std::fs::remove_file(&schema);
        let out = out.map_err(|e| format!("ovsdb-tool (openvswitch-common): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ovsdb-tool create {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        did = "created and added";
    }
    let ctl = match ctl {
        Some(p) => p.to_path_buf(),
        None => ovsdb_ctl(db_sock).ok_or_else(|| {
            format!(
                "ovsdb-server's control socket is not beside {} (give --ovsdb-ctl)",
                db_sock.display()
            )
        })?,
    };
    let mut u = Client::connect(&ctl, Duration::from_secs(5))?;
    u.call("ovsdb-server/add-db", json!([file.to_string_lossy()]))
        .map_err(|e| format!("ovsdb-server/add-db {}: {e}", file.display()))?;
    Ok(did)
}

/// Rows of an Rvs table by UUID (rvsctl's reads).
pub fn select(c: &mut Client, table: &str) -> Result<HashMap<String, crate::datum::Row>, String> {
    let res = c.transact(vec![json!({"op": "select", "table": table, "where": []})])?;
    let mut out = HashMap::new();
    for r in res[0]["rows"].as_array().into_iter().flatten() {
        if let (Some(u), Some(o)) = (r["_uuid"].get(1).and_then(|u| u.as_str()), r.as_object()) {
            out.insert(u.to_string(), o.clone());
        }
    }
    Ok(out)
}

/// Waits until rvsd has applied configuration `cfg`.
pub fn wait_applied(c: &mut Client, cfg: i64, timeout: Duration) -> Result<(), String> {
    let end = Instant::now() + timeout;
    loop {
        let rows = select(c, "Services")?;
        if rows
            .values()
            .any(|r| crate::datum::int(r, "cur_cfg").is_some_and(|v| v >= cfg))
        {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(format!(
                "rvsd did not apply the change within {}s (is rvsd running? --no-wait skips waiting)",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
