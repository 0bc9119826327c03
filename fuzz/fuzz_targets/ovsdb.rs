//! The OVSDB update decoder: arbitrary JSON (and bytes that are not) as a
//! monitor reply or update, then what rvsd derives from the database
//! (bridges, ports, options, service rules). Refusals, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs_control::config::desired;
use rvs_control::db::Db;
use rvs_control::service::store;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let mut db = Db::default();
    if db.apply(&v).is_ok() {
        let d = desired(&db);
        let _ = d.global.tunnel_peers();
        let _ = d.global.stats_interval();
        let _ = store::services(&db);
        // A second update on top of the first (modify/delete paths).
        let _ = db.apply(&v);
        let _ = desired(&db);
    }
});
