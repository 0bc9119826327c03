//! A bridge's flows and groups kept on disk, so a restarted rvsd forwards
//! as before without a controller putting them back. The file is a stream
//! of OpenFlow messages, groups first (flows may name them) as
//! NXT_GROUP_MOD (what ovs-ofctl sends for add-group), then flows as
//! OpenFlow 1.5 flow_mods: the codecs the OpenFlow endpoint already has,
//! and a format `ovs-ofctl ofp-parse` reads. Written whole to a temporary file, synced
//! and renamed over the old one: a crash leaves the old or the new tables,
//! never half of them.
use super::actions::encode_instructions;
use super::conn::{decode_flow_mod13, decode_group_mod15, group_desc15, put_ofp13_match};
use super::wire::{Header, Reader, Writer, HEADER_LEN, NX_VENDOR, OFP10};
use rvs_dataplane::flow::action::ofpp;
use rvs_dataplane::flow::table::{FlowTables, OFPG_ANY};
use std::io::Write;
use std::path::{Path, PathBuf};

const OFP15: u8 = 0x06;
const OFPT_FLOW_MOD: u8 = 14;
const OFPT_VENDOR: u8 = 4;
const NXT_GROUP_MOD: u32 = 31;
/// Where importance sits in a 1.5 flow_mod body (1.3's padding).
const IMPORTANCE_AT: usize = 38;

/// The file a bridge's tables are kept in, under `dir`; `None` for a name
/// that is not a plain file name.
pub fn path_for(dir: &Path, bridge: &str) -> Option<PathBuf> {
    (!bridge.is_empty() && !bridge.starts_with('.') && !bridge.contains('/'))
        .then(|| dir.join(format!("{bridge}.flows")))
}

/// The tables as OpenFlow 1.5 group_mod and flow_mod messages.
pub fn encode(t: &FlowTables) -> Vec<u8> {
    let mut out = Vec::new();
    let mut groups: Vec<_> = t.groups().collect();
    groups.sort_by_key(|g| g.id);
    for g in groups {
        // A 1.5 group_mod is the group-desc entry with the command in
        // place of the length and "all buckets" as the command bucket.
        let desc = group_desc15(g, true);
        let mut w = Writer::msg(OFP10, OFPT_VENDOR, 0);
        w.u32(NX_VENDOR).u32(NXT_GROUP_MOD).u16(0).bytes(&desc[2..]);
        let mut m = w.finish();
        let at = HEADER_LEN + 8 + 12;
        m[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        push(&mut out, m);
    }
    for r in t.rules() {
        let mut w = Writer::msg(OFP15, OFPT_FLOW_MOD, 0);
        w.u64(r.cookie).u64(0).u8(r.table).u8(0);
        w.u16(r.idle_timeout).u16(r.hard_timeout).u16(r.priority);
        w.u32(u32::MAX).u32(ofpp::ANY).u32(OFPG_ANY);
        w.u16(r.flags).u16(r.importance);
        put_ofp13_match(&mut w, &r.m);
        w.bytes(&encode_instructions(&r.actions, &r.m));
        push(&mut out, w.finish());
    }
    out
}

/// Messages longer than OpenFlow can frame cannot have come in through
/// OpenFlow either; they are left out rather than written corrupt.
fn push(out: &mut Vec<u8>, m: Vec<u8>) {
    if m.len() <= u16::MAX as usize {
        out.extend_from_slice(&m);
    } else {
        log::warn!("a flow or group too large to save was left out");
    }
}

/// What a restore put back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub flows: usize,
    pub groups: usize,
}

/// Replays saved messages into `t` (which the caller starts empty). The
/// whole file is checked first: a damaged file restores nothing and says
/// where it is damaged.
pub fn decode_into(b: &[u8], t: &mut FlowTables, now_ns: u64) -> Result<Restored, String> {
    let mut groups = Vec::new();
    let mut flows = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let h = Header::parse(&b[at..]).ok_or(format!("truncated header at byte {at}"))?;
        let len = h.length as usize;
        if len < HEADER_LEN || at + len > b.len() {
            return Err(format!("message at byte {at} runs past the end"));
        }
        let body = &b[at + HEADER_LEN..at + len];
        match (h.version, h.kind) {
            (OFP10, OFPT_VENDOR) => {
                let mut r = Reader::new(body, super::error::OfError::BadLen);
                let bad = |e| format!("group at byte {at}: {e:?}");
                if r.u32().map_err(bad)? != NX_VENDOR || r.u32().map_err(bad)? != NXT_GROUP_MOD {
                    return Err(format!("message at byte {at}: not NXT_GROUP_MOD"));
                }
                groups.push(decode_group_mod15(r.rest()).map_err(bad)?);
            }
            (OFP15, OFPT_FLOW_MOD) => {
                let mut fm =
                    decode_flow_mod13(body).map_err(|e| format!("flow at byte {at}: {e:?}"))?;
                if let Some(i) = body.get(IMPORTANCE_AT..IMPORTANCE_AT + 2) {
                    fm.importance = u16::from_be_bytes([i[0], i[1]]);
                }
                flows.push(fm);
            }
            (v, k) => return Err(format!("message at byte {at}: version {v} type {k}")),
        }
        at += len;
    }
    // Groups may chain to groups: add what can be added until nothing
    // more can.
    let mut restored = Restored::default();
    while !groups.is_empty() {
        let before = groups.len();
        groups.retain(|g| t.group_mod(g, now_ns).is_err());
        restored.groups += before - groups.len();
        if groups.len() == before {
            return Err(format!(
                "{} groups refer to groups that are not there",
                before
            ));
        }
    }
    for fm in &flows {
        t.flow_mod(fm, now_ns)
            .map_err(|e| format!("flow table {} priority {}: {e:?}", fm.table, fm.priority))?;
        restored.flows += 1;
    }
    Ok(restored)
}

/// Writes `bytes` as `path` durably (temporary file, fsync, rename, fsync
/// of the directory).
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("flows.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_dataplane::flow::action::{Action, Bucket, GroupType};
    use rvs_dataplane::flow::key::{Field, Match};
    use rvs_dataplane::flow::table::{FlowMod, GroupCommand, GroupMod};

    fn tables() -> FlowTables {
        let mut t = FlowTables::with_normal(0);
        t.group_mod(
            &GroupMod {
                command: GroupCommand::Add,
                kind: GroupType::Select,
                id: 7,
                buckets: (1..=2)
                    .map(|p| Bucket {
                        weight: p as u16 * 10,
                        watch_port: ofpp::ANY,
                        watch_group: OFPG_ANY,
                        actions: vec![Action::Output {
                            port: p,
                            max_len: 0,
                        }],
                    })
                    .collect(),
                selection_method: "roundrobin".into(),
                fields: Vec::new(),
            },
            0,
        )
        .unwrap();
        let mut m = Match::any();
        m.set(Field::InPort, 3, u64::MAX);
        let mut fm = FlowMod::add(5, 1234, m, vec![Action::Group(7)]);
        fm.cookie = 0xabc;
        fm.new_cookie = Some(0xabc);
        fm.idle_timeout = 60;
        fm.importance = 9;
        t.flow_mod(&fm, 0).unwrap();
        t
    }

    fn summary(t: &FlowTables) -> Vec<String> {
        let mut v: Vec<String> = t
            .rules()
            .map(|r| {
                format!(
                    "t{} p{} c{:x} i{} imp{} {:?} {:?}",
                    r.table, r.priority, r.cookie, r.idle_timeout, r.importance, r.m, r.actions
                )
            })
            .chain(t.groups().map(|g| {
                format!(
                    "g{} {:?} {} {:?}",
                    g.id, g.kind, g.selection_method, g.buckets
                )
            }))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn tables_come_back_as_they_were() {
        let t = tables();
        let b = encode(&t);
        let mut back = FlowTables::empty();
        let r = decode_into(&b, &mut back, 0).unwrap();
        assert_eq!(
            r,
            Restored {
                flows: 2,
                groups: 1
            }
        );
        assert_eq!(summary(&back), summary(&t));
    }

    #[test]
    fn a_damaged_file_restores_nothing_and_says_where() {
        let b = encode(&tables());
        let mut back = FlowTables::empty();
        let e = decode_into(&b[..b.len() - 3], &mut back, 0).unwrap_err();
        assert!(e.contains("runs past the end"), "{e}");
        assert_eq!(back.n_rules(), 0);
        assert_eq!(back.groups().count(), 0);
    }
}
