//! Reading OVSDB data (RFC 7047 section 5.1): atoms, ["set", [...]],
//! ["map", [[k, v], ...]], ["uuid", "..."].
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub type Row = serde_json::Map<String, Value>;

/// Members of a set column (a bare atom is a one-element set).
pub fn set(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(a)) if a.len() == 2 && a[0] == "set" => a[1]
            .as_array()
            .map(|x| x.iter().collect())
            .unwrap_or_default(),
        Some(Value::Array(a)) if a.len() == 2 && (a[0] == "map") => Vec::new(),
        Some(v) => vec![v],
        None => Vec::new(),
    }
}

pub fn uuid(v: &Value) -> Option<&str> {
    match v {
        Value::Array(a) if a.len() == 2 && a[0] == "uuid" => a[1].as_str(),
        _ => None,
    }
}

pub fn uuids(row: &Row, col: &str) -> Vec<String> {
    set(row.get(col))
        .into_iter()
        .filter_map(uuid)
        .map(String::from)
        .collect()
}

pub fn string(row: &Row, col: &str) -> Option<String> {
    set(row.get(col))
        .first()
        .and_then(|v| v.as_str())
        .map(String::from)
}

pub fn int(row: &Row, col: &str) -> Option<i64> {
    set(row.get(col)).first().and_then(|v| v.as_i64())
}

pub fn ints(row: &Row, col: &str) -> Vec<i64> {
    set(row.get(col))
        .into_iter()
        .filter_map(|v| v.as_i64())
        .collect()
}

pub fn strings(row: &Row, col: &str) -> Vec<String> {
    set(row.get(col))
        .into_iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

pub fn boolean(row: &Row, col: &str) -> Option<bool> {
    set(row.get(col)).first().and_then(|v| v.as_bool())
}

pub fn map(row: &Row, col: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Array(a)) = row.get(col) {
        if a.len() == 2 && a[0] == "map" {
            for kv in a[1].as_array().into_iter().flatten() {
                if let (Some(k), Some(v)) = (kv.get(0).and_then(|x| x.as_str()), kv.get(1)) {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.insert(k.to_string(), v);
                }
            }
        }
    }
    out
}

pub fn make_map<K: AsRef<str>, V: Into<Value>>(kv: impl IntoIterator<Item = (K, V)>) -> Value {
    let pairs: Vec<Value> = kv
        .into_iter()
        .map(|(k, v)| json!([k.as_ref(), v.into()]))
        .collect();
    json!(["map", pairs])
}

pub fn make_set<V: Into<Value>>(vals: impl IntoIterator<Item = V>) -> Value {
    let v: Vec<Value> = vals.into_iter().map(Into::into).collect();
    json!(["set", v])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ovsdb_encodings() {
        let row: Row = serde_json::from_value(json!({
            "name": "br0",
            "ports": ["set", [["uuid", "a"], ["uuid", "b"]]],
            "one": ["uuid", "c"],
            "tag": ["set", []],
            "trunks": ["set", [10, 20]],
            "ofport_request": 7,
            "options": ["map", [["key", "5"], ["remote_ip", "10.0.0.1"]]],
            "stp_enable": true
        }))
        .unwrap();
        assert_eq!(uuids(&row, "ports"), vec!["a", "b"]);
        assert_eq!(uuids(&row, "one"), vec!["c"]);
        assert_eq!(int(&row, "tag"), None);
        assert_eq!(ints(&row, "trunks"), vec![10, 20]);
        assert_eq!(int(&row, "ofport_request"), Some(7));
        assert_eq!(
            map(&row, "options").get("remote_ip").map(String::as_str),
            Some("10.0.0.1")
        );
        assert_eq!(string(&row, "name").as_deref(), Some("br0"));
        assert_eq!(boolean(&row, "stp_enable"), Some(true));
        assert_eq!(make_map([("a", 1)]), json!(["map", [["a", 1]]]));
    }
}
