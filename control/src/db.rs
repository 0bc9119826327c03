//! rvsd's replica of the Open_vSwitch database, kept by an OVSDB `monitor`,
//! and the transactions rvsd writes back.
use crate::datum::Row;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Tables and columns rvsd monitors. Status columns it writes (ofport,
/// statistics, cur_cfg ...) are monitored too so that a restart can reuse
/// them (ofport) and ovs-vsctl's view and ours agree.
pub const MONITORED: &[(&str, &[&str])] = &[
    (
        "Open_vSwitch",
        &["bridges", "other_config", "next_cfg", "cur_cfg"],
    ),
    (
        "Bridge",
        &[
            "name",
            "ports",
            "other_config",
            "datapath_type",
            "datapath_id",
            "fail_mode",
            "stp_enable",
            "protocols",
            "controller",
        ],
    ),
    (
        "Port",
        &[
            "name",
            "interfaces",
            "tag",
            "trunks",
            "vlan_mode",
            "other_config",
            "qos",
        ],
    ),
    (
        "Interface",
        &[
            "name",
            "type",
            "options",
            "ofport",
            "ofport_request",
            "mtu_request",
            "other_config",
            "external_ids",
            "ingress_policing_rate",
            "ingress_policing_burst",
        ],
    ),
    ("QoS", &["type", "other_config", "queues"]),
    ("Controller", &["target", "is_connected"]),
    ("Queue", &["other_config"]),
];

pub const MONITOR_ID: &str = "rvsd";

#[derive(Default, Debug, Clone)]
pub struct Db {
    pub tables: HashMap<String, HashMap<String, Row>>,
}

impl Db {
    /// Applies a <table-updates> object (RFC 7047 4.1.6): a "new" row
    /// replaces the old one (monitor sends every monitored column), no "new"
    /// deletes it.
    pub fn apply(&mut self, updates: &Value) -> Result<(), String> {
        let tables = updates
            .as_object()
            .ok_or("table-updates is not an object")?;
        for (table, rows) in tables {
            let rows = rows
                .as_object()
                .ok_or_else(|| format!("updates of table {table} are not an object"))?;
            let t = self.tables.entry(table.clone()).or_default();
            for (uuid, upd) in rows {
                match upd.get("new").and_then(|n| n.as_object()) {
                    Some(new) => {
                        t.insert(uuid.clone(), new.clone());
                    }
                    None => {
                        t.remove(uuid);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn row(&self, table: &str, uuid: &str) -> Option<&Row> {
        self.tables.get(table)?.get(uuid)
    }

    pub fn root(&self) -> Option<(&String, &Row)> {
        self.tables.get("Open_vSwitch")?.iter().next()
    }
}

pub fn monitor_request(id: u64) -> Value {
    let mut req = serde_json::Map::new();
    for (t, cols) in MONITORED {
        req.insert(t.to_string(), json!({ "columns": cols }));
    }
    json!({"method": "monitor", "params": ["Open_vSwitch", MONITOR_ID, req], "id": id})
}

pub fn transact(id: u64, ops: Vec<Value>) -> Value {
    let mut params = vec![json!("Open_vSwitch")];
    params.extend(ops);
    json!({"method": "transact", "params": params, "id": id})
}

pub fn update_op(table: &str, uuid: &str, row: Value) -> Value {
    json!({"op": "update", "table": table, "where": [["_uuid", "==", ["uuid", uuid]]], "row": row})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_insert_modify_delete() {
        let mut db = Db::default();
        db.apply(&json!({"Bridge": {"u1": {"new": {"name": "br0"}}}}))
            .unwrap();
        db.apply(&json!({"Bridge": {"u1": {"new": {"name": "br1"}, "old": {"name": "br0"}}}}))
            .unwrap();
        assert_eq!(db.row("Bridge", "u1").unwrap()["name"], "br1");
        db.apply(&json!({"Bridge": {"u1": {"old": {"name": "br1"}}}}))
            .unwrap();
        assert!(db.row("Bridge", "u1").is_none());
        assert!(db.apply(&json!([1])).is_err());
    }
}
