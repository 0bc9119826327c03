//! Brings a bridge's flow tables to a compiled set of service flows and
//! groups by difference: flows that stay keep their counters, the
//! operator's own flows (other cookies) are never touched, and learned
//! neighbours and sticky entries stay while the gateway does.
use super::compile::{cookie_kind, Compiled, KIND_LEARNED, T_NEIGH};
use rvs_dataplane::flow::key::{Field, Match};
use rvs_dataplane::flow::table::{Command, FlowMod, FlowTables, GroupCommand, GroupMod};
use std::collections::BTreeMap;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub removed: usize,
    pub kept: usize,
}

impl Changes {
    pub fn changed(&self) -> bool {
        self.added + self.removed > 0
    }
}

/// Service groups live in 0x70000000..0x70ffffff.
fn is_service_group(id: u32) -> bool {
    id & 0xff00_0000 == 0x7000_0000
}

fn strict(table: u8, m: Match, priority: u16, command: Command) -> FlowMod {
    let mut fm = FlowMod::add(table, priority, m, Vec::new());
    fm.command = command;
    fm
}

pub fn install(t: &mut FlowTables, c: &Compiled, now_ns: u64) -> Result<Changes, String> {
    let mut n = Changes::default();
    // Groups first: flows name them.
    for g in &c.groups {
        let same = t.groups().any(|x| {
            x.id == g.id
                && x.buckets == g.buckets
                && x.selection_method == g.selection_method
                && x.fields == g.fields
        });
        if same {
            continue;
        }
        let exists = t.groups().any(|x| x.id == g.id);
        let gm = GroupMod {
            command: if exists {
                GroupCommand::Modify
            } else {
                GroupCommand::Add
            },
            ..g.clone()
        };
        t.group_mod(&gm, now_ns)
            .map_err(|e| format!("group {:#x}: {e:?}", g.id))?;
    }
    let gateway_gone = c.flows.is_empty();
    let stale: Vec<(u8, Match, u16)> = t
        .rules()
        .filter(|r| match cookie_kind(r.cookie) {
            None => false,
            Some(KIND_LEARNED) => gateway_gone,
            Some(_) => !c.flows.iter().any(|f| {
                f.table == r.table
                    && f.priority == r.priority
                    && f.m == r.m
                    && f.cookie == r.cookie
                    && f.actions[..] == r.actions[..]
            }),
        })
        .map(|r| (r.table, r.m, r.priority))
        .collect();
    for (table, m, prio) in stale {
        if t.flow_mod(&strict(table, m, prio, Command::DeleteStrict), now_ns)
            .is_ok_and(|r| !r.is_empty())
        {
            n.removed += 1;
        }
    }
    for f in &c.flows {
        let same = t
            .find(f.table, &f.m, f.priority)
            .is_some_and(|r| r.cookie == f.cookie && r.actions[..] == f.actions[..]);
        if same {
            n.kept += 1;
            continue;
        }
        t.flow_mod(f, now_ns)
            .map_err(|e| format!("flow in table {} priority {}: {e:?}", f.table, f.priority))?;
        n.added += 1;
    }
    let unused: Vec<u32> = t
        .groups()
        .map(|g| g.id)
        .filter(|&id| is_service_group(id) && !c.groups.iter().any(|g| g.id == id))
        .collect();
    for id in unused {
        let gm = GroupMod {
            command: GroupCommand::Delete,
            kind: rvs_dataplane::flow::action::GroupType::Select,
            id,
            buckets: Vec::new(),
            selection_method: String::new(),
            fields: Vec::new(),
        };
        let _ = t.group_mod(&gm, now_ns);
    }
    Ok(n)
}

/// The neighbours the gateway has learned: IP -> MAC.
pub fn neighbours(t: &FlowTables) -> BTreeMap<u32, [u8; 6]> {
    t.rules()
        .filter(|r| r.table == T_NEIGH && cookie_kind(r.cookie) == Some(KIND_LEARNED))
        .filter_map(|r| {
            let (ip, mask) = r.m.field(Field::NwDst);
            let mac = super::loaded(&r.actions, Field::DlDst)?;
            let b = mac.to_be_bytes();
            (mask == 0xffff_ffff).then_some((ip as u32, [b[2], b[3], b[4], b[5], b[6], b[7]]))
        })
        .collect()
}
