//! The authoritative rule and group tables of one bridge, changed by
//! OpenFlow flow_mod/group_mod semantics and published as immutable
//! `Pipeline`s. Classifiers share untouched subtables with the previous
//! publication, so a change costs what it touches.
use super::action::{ofpp, Action, Bucket, GroupType};
use super::classifier::Classifier;
use super::key::Match;
use super::rule::{flags, Group, HitStats, Pipeline, Rule};
use std::sync::Arc;

pub const N_TABLES: usize = 255;
pub const OFPTT_ALL: u8 = 0xff;
pub const OFPG_ALL: u32 = 0xffff_fffc;
pub const OFPG_ANY: u32 = 0xffff_ffff;
pub const OFPG_MAX: u32 = 0xffff_ff00;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Modify,
    ModifyStrict,
    Delete,
    DeleteStrict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowMod {
    pub command: Command,
    pub table: u8,
    pub m: Match,
    pub priority: u16,
    /// Filter for modify/delete (under `cookie_mask`), or the cookie of an
    /// added flow.
    pub cookie: u64,
    pub cookie_mask: u64,
    /// For modify: the cookie to give the rules (None keeps theirs).
    pub new_cookie: Option<u64>,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub importance: u16,
    pub flags: u16,
    pub out_port: u32,
    pub out_group: u32,
    pub actions: Vec<Action>,
}

impl FlowMod {
    pub fn add(table: u8, priority: u16, m: Match, actions: Vec<Action>) -> FlowMod {
        FlowMod {
            command: Command::Add,
            table,
            m,
            priority,
            cookie: 0,
            cookie_mask: 0,
            new_cookie: None,
            idle_timeout: 0,
            hard_timeout: 0,
            importance: 0,
            flags: 0,
            out_port: ofpp::ANY,
            out_group: OFPG_ANY,
            actions,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowModError {
    BadTable(u8),
    Overlap,
    UnknownGroup(u32),
    TableFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCommand {
    Add,
    Modify,
    Delete,
    /// Creates the group or replaces it (OVS's OFPGC11_ADD_OR_MOD).
    AddOrModify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMod {
    pub command: GroupCommand,
    pub kind: GroupType,
    pub id: u32,
    pub buckets: Vec<Bucket>,
    pub selection_method: String,
    /// Fields of selection_method=hash.
    pub fields: Vec<super::key::Field>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupModError {
    Exists,
    Unknown,
    InvalidId,
    BadBucket,
    Loop,
    WatchUnsupported,
}

/// Generations are unique across bridges: a PMD's exact-match cache is
/// shared by all bridges, and an entry's stamp must not be valid for a
/// packet of another bridge with the same key (ofports repeat per bridge).
fn next_generation() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A classifier change, kept so the copy PMDs forwarded by can be brought
/// up to date once it comes back (see `FlowTables::publish`).
enum ClsOp {
    Insert(u8, Match, u16, Arc<Rule>),
    Remove(u8, Match, u16),
}

pub struct FlowTables {
    tables: Vec<Classifier<Arc<Rule>>>,
    /// Changes to `tables` since the last publication.
    log: Vec<ClsOp>,
    groups: hashbrown::HashMap<u32, Arc<Group>>,
    generation: u64,
    /// Limit on rules over all tables.
    pub max_rules: usize,
}

fn outputs_to(actions: &[Action], port: u32) -> bool {
    actions.iter().any(|a| match a {
        Action::Output { port: p, .. } => *p == port,
        _ => false,
    })
}

fn uses_group(actions: &[Action], id: u32) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Group(g) if *g == id))
}

impl FlowTables {
    /// Tables as a new OVS bridge has them: one rule, `priority=0
    /// actions=NORMAL`.
    pub fn with_normal(now_ns: u64) -> FlowTables {
        let mut t = FlowTables::empty();
        let fm = FlowMod::add(
            0,
            0,
            Match::any(),
            vec![Action::Output {
                port: ofpp::NORMAL,
                max_len: 0,
            }],
        );
        t.flow_mod(&fm, now_ns).expect("the default rule is valid");
        t
    }

    pub fn empty() -> FlowTables {
        FlowTables {
            tables: Vec::new(),
            log: Vec::new(),
            groups: hashbrown::HashMap::new(),
            generation: next_generation(),
            max_rules: 4_000_000,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn n_rules(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }

    pub fn table_len(&self, t: u8) -> usize {
        self.tables.get(t as usize).map_or(0, |c| c.len())
    }

    fn table_mut(&mut self, t: u8) -> &mut Classifier<Arc<Rule>> {
        if self.tables.len() <= t as usize {
            self.tables.resize_with(t as usize + 1, Classifier::default);
        }
        &mut self.tables[t as usize]
    }

    fn cls_insert(&mut self, t: u8, m: &Match, prio: u16, r: Arc<Rule>) -> Option<Arc<Rule>> {
        self.log.push(ClsOp::Insert(t, *m, prio, r.clone()));
        self.table_mut(t).insert(m, prio, r)
    }

    fn cls_remove(&mut self, t: u8, m: &Match, prio: u16) -> Option<Arc<Rule>> {
        self.log.push(ClsOp::Remove(t, *m, prio));
        self.table_mut(t).remove(m, prio)
    }

    /// The rules a modify/delete selects.
    fn select(&self, fm: &FlowMod, strict: bool) -> Vec<Arc<Rule>> {
        let tables: Vec<usize> = if fm.table == OFPTT_ALL {
            (0..self.tables.len()).collect()
        } else {
            vec![fm.table as usize]
        };
        let mut out = Vec::new();
        for t in tables {
            let Some(c) = self.tables.get(t) else {
                continue;
            };
            let pick = |r: &Arc<Rule>| {
                (r.cookie & fm.cookie_mask) == (fm.cookie & fm.cookie_mask)
                    && (fm.out_port == ofpp::ANY || outputs_to(&r.actions, fm.out_port))
                    && (fm.out_group == OFPG_ANY || uses_group(&r.actions, fm.out_group))
            };
            if strict {
                if let Some(r) = c.find_exact(&fm.m, fm.priority) {
                    if pick(r) {
                        out.push(r.clone());
                    }
                }
            } else {
                for (m, _, r) in c.iter() {
                    if m.is_within(&fm.m) && pick(r) {
                        out.push(r.clone());
                    }
                }
            }
        }
        out
    }

    fn check_groups(&self, actions: &[Action]) -> Result<(), FlowModError> {
        for a in actions {
            if let Action::Group(g) = a {
                if !self.groups.contains_key(g) {
                    return Err(FlowModError::UnknownGroup(*g));
                }
            }
        }
        Ok(())
    }

    /// Applies a flow_mod. Returns the rules it removed (for flow-removed
    /// messages and logs).
    pub fn flow_mod(&mut self, fm: &FlowMod, now_ns: u64) -> Result<Vec<Arc<Rule>>, FlowModError> {
        match fm.command {
            Command::Add => {
                if fm.table as usize >= N_TABLES {
                    return Err(FlowModError::BadTable(fm.table));
                }
                self.check_groups(&fm.actions)?;
                if fm.flags & flags::CHECK_OVERLAP != 0 && self.overlaps(fm) {
                    return Err(FlowModError::Overlap);
                }
                let exists = self
                    .tables
                    .get(fm.table as usize)
                    .and_then(|c| c.find_exact(&fm.m, fm.priority))
                    .is_some();
                if !exists && self.n_rules() >= self.max_rules {
                    return Err(FlowModError::TableFull);
                }
                let rule = Arc::new(Rule {
                    table: fm.table,
                    priority: fm.priority,
                    m: Match {
                        key: fm.m.key.masked(&fm.m.mask),
                        mask: fm.m.mask,
                    },
                    cookie: fm.cookie,
                    actions: fm.actions.clone().into(),
                    idle_timeout: fm.idle_timeout,
                    hard_timeout: fm.hard_timeout,
                    importance: fm.importance,
                    flags: fm.flags,
                    created_ns: now_ns,
                    modified_ns: now_ns,
                    stats: Arc::new(HitStats::default()),
                });
                let old = self.cls_insert(fm.table, &fm.m, fm.priority, rule);
                self.generation = next_generation();
                Ok(old.into_iter().collect())
            }
            Command::Modify | Command::ModifyStrict => {
                if fm.table != OFPTT_ALL && fm.table as usize >= N_TABLES {
                    return Err(FlowModError::BadTable(fm.table));
                }
                self.check_groups(&fm.actions)?;
                let rules = self.select(fm, fm.command == Command::ModifyStrict);
                if rules.is_empty() {
                    // OpenFlow 1.0: a modify that matches nothing adds.
                    if fm.cookie_mask == 0 && fm.table != OFPTT_ALL {
                        let mut add = fm.clone();
                        add.command = Command::Add;
                        add.cookie = fm.new_cookie.unwrap_or(fm.cookie);
                        return self.flow_mod(&add, now_ns);
                    }
                    return Ok(Vec::new());
                }
                for r in rules {
                    let stats = if fm.flags & flags::RESET_COUNTS != 0 {
                        Arc::new(HitStats::default())
                    } else {
                        r.stats.clone()
                    };
                    let nr = Arc::new(Rule {
                        table: r.table,
                        priority: r.priority,
                        m: r.m,
                        cookie: fm.new_cookie.unwrap_or(r.cookie),
                        actions: fm.actions.clone().into(),
                        idle_timeout: r.idle_timeout,
                        hard_timeout: r.hard_timeout,
                        importance: r.importance,
                        flags: r.flags,
                        created_ns: r.created_ns,
                        modified_ns: now_ns,
                        stats,
                    });
                    self.cls_insert(r.table, &r.m, r.priority, nr);
                }
                self.generation = next_generation();
                Ok(Vec::new())
            }
            Command::Delete | Command::DeleteStrict => {
                if fm.table != OFPTT_ALL && fm.table as usize >= N_TABLES {
                    return Err(FlowModError::BadTable(fm.table));
                }
                let rules = self.select(fm, fm.command == Command::DeleteStrict);
                for r in &rules {
                    self.cls_remove(r.table, &r.m, r.priority);
                }
                if !rules.is_empty() {
                    self.generation = next_generation();
                }
                Ok(rules)
            }
        }
    }

    fn overlaps(&self, fm: &FlowMod) -> bool {
        let Some(c) = self.tables.get(fm.table as usize) else {
            return false;
        };
        c.iter().any(|(m, p, _)| {
            p == fm.priority
                && (0..super::key::KEY_WORDS).all(|i| {
                    let both = m.mask.w[i] & fm.m.mask.w[i];
                    m.key.w[i] & both == fm.m.key.w[i] & both
                })
        })
    }

    pub fn group_mod(
        &mut self,
        gm: &GroupMod,
        now_ns: u64,
    ) -> Result<Vec<Arc<Rule>>, GroupModError> {
        match gm.command {
            GroupCommand::Add | GroupCommand::Modify | GroupCommand::AddOrModify => {
                if gm.id > OFPG_MAX {
                    return Err(GroupModError::InvalidId);
                }
                if gm.kind == GroupType::Indirect && gm.buckets.len() != 1 {
                    return Err(GroupModError::BadBucket);
                }
                for b in &gm.buckets {
                    for a in &b.actions {
                        if let Action::Group(g) = a {
                            if *g == gm.id {
                                return Err(GroupModError::Loop);
                            }
                            if !self.groups.contains_key(g) {
                                return Err(GroupModError::Unknown);
                            }
                        }
                    }
                }
                let exists = self.groups.contains_key(&gm.id);
                match (gm.command, exists) {
                    (GroupCommand::Add, true) => return Err(GroupModError::Exists),
                    (GroupCommand::Modify, false) => return Err(GroupModError::Unknown),
                    _ => {}
                }
                let old = self.groups.get(&gm.id);
                let (created_ns, stats) = match old {
                    Some(g) => (g.created_ns, g.stats.clone()),
                    None => (now_ns, Arc::new(HitStats::default())),
                };
                // A bucket that stays (same actions) keeps its counters and
                // its live connections (leastconn must go on counting the
                // ones committed before the change).
                let mut lb = super::rule::GroupLb::new(gm.buckets.len());
                let mut bucket_stats = Vec::with_capacity(gm.buckets.len());
                for (i, b) in gm.buckets.iter().enumerate() {
                    let kept =
                        old.and_then(|g| g.buckets.iter().position(|x| x.actions == b.actions));
                    match (old, kept) {
                        (Some(g), Some(j)) => {
                            lb.active[i] = g.lb.active[j].clone();
                            bucket_stats.push(g.bucket_stats[j].clone());
                        }
                        _ => bucket_stats.push(Arc::default()),
                    }
                }
                if let Some(g) = old {
                    lb.rr.store(
                        g.lb.rr.load(std::sync::atomic::Ordering::Relaxed),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                let g = Group {
                    id: gm.id,
                    kind: gm.kind,
                    buckets: gm.buckets.clone(),
                    selection_method: gm.selection_method.clone(),
                    fields: gm.fields.clone(),
                    lb: Arc::new(lb),
                    created_ns,
                    stats,
                    bucket_stats,
                };
                self.groups.insert(gm.id, Arc::new(g));
                self.generation = next_generation();
                Ok(Vec::new())
            }
            GroupCommand::Delete => {
                let ids: Vec<u32> = if gm.id == OFPG_ALL {
                    self.groups.keys().copied().collect()
                } else {
                    vec![gm.id]
                };
                let mut removed = Vec::new();
                for id in ids {
                    if self.groups.remove(&id).is_none() {
                        continue;
                    }
                    // Flows that use a deleted group go with it.
                    let mut fm = FlowMod::add(OFPTT_ALL, 0, Match::any(), Vec::new());
                    fm.command = Command::Delete;
                    fm.out_group = id;
                    if let Ok(r) = self.flow_mod(&fm, now_ns) {
                        removed.extend(r);
                    }
                }
                self.generation = next_generation();
                Ok(removed)
            }
        }
    }

    /// The rule with exactly this match and priority in table `t`.
    pub fn find(&self, t: u8, m: &Match, priority: u16) -> Option<&Arc<Rule>> {
        self.tables.get(t as usize)?.find_exact(m, priority)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }

    /// Every rule, table by table.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.tables.iter().flat_map(|c| c.iter().map(|(_, _, r)| r))
    }

    /// The rules a flow-stats request selects (non-strict match, cookie and
    /// out_port filters), ordered by table then priority (highest first).
    pub fn query(
        &self,
        table: u8,
        m: &Match,
        cookie: u64,
        cookie_mask: u64,
        out_port: u32,
        out_group: u32,
    ) -> Vec<Arc<Rule>> {
        let mut fm = FlowMod::add(table, 0, *m, Vec::new());
        fm.cookie = cookie;
        fm.cookie_mask = cookie_mask;
        fm.out_port = out_port;
        fm.out_group = out_group;
        let mut v = self.select(&fm, false);
        v.sort_by(|a, b| a.table.cmp(&b.table).then(b.priority.cmp(&a.priority)));
        v
    }

    /// Removes rules whose idle or hard timeout has passed at `now_ns`.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Arc<Rule>> {
        const S: u64 = 1_000_000_000;
        let due: Vec<Arc<Rule>> = self
            .rules()
            .filter(|r| {
                let hard =
                    r.hard_timeout != 0 && now_ns >= r.modified_ns + r.hard_timeout as u64 * S;
                // PMDs stamp use in whole seconds: count a use as at the end
                // of its second, so a flow never goes early.
                let used = match r.stats.used() {
                    0 => 0,
                    u => (u as u64 + 1) * S,
                };
                let last = used.max(r.modified_ns);
                let idle = r.idle_timeout != 0 && now_ns >= last + r.idle_timeout as u64 * S;
                hard || idle
            })
            .cloned()
            .collect();
        for r in &due {
            self.cls_remove(r.table, &r.m, r.priority);
        }
        if !due.is_empty() {
            self.generation = next_generation();
        }
        due
    }

    /// The next timeout due, in switch seconds, if any rule has one.
    pub fn has_timeouts(&self) -> bool {
        self.rules()
            .any(|r| r.idle_timeout != 0 || r.hard_timeout != 0)
    }

    /// Publishes the current state into `slot` without copying the
    /// classifiers: they move into the new pipeline, and the pipeline they
    /// replace comes back (once `quiesce` says no PMD holds it) to be
    /// brought up to date by replaying the changes since its publication.
    /// A publication costs what changed, not the table size, so per-change
    /// barriers (ovs-ofctl add-flows) stay linear.
    pub fn publish(&mut self, slot: &arc_swap::ArcSwap<Pipeline>, quiesce: impl FnOnce()) {
        if slot.load().generation == self.generation {
            return;
        }
        let mut next = self.pipeline_header();
        next.tables = std::mem::take(&mut self.tables);
        let log = std::mem::take(&mut self.log);
        let old = slot.swap(Arc::new(next));
        quiesce();
        match Arc::try_unwrap(old) {
            Ok(p) => {
                self.tables = p.tables;
                for op in log {
                    match op {
                        ClsOp::Insert(t, m, prio, r) => {
                            self.table_mut(t).insert(&m, prio, r);
                        }
                        ClsOp::Remove(t, m, prio) => {
                            self.table_mut(t).remove(&m, prio);
                        }
                    }
                }
            }
            // Someone still holds it: share the new one's subtables
            // instead (changes then copy what they touch).
            Err(_) => self.tables = slot.load().tables.clone(),
        }
        debug_assert_eq!(self.n_rules(), slot.load().n_rules());
    }

    /// The pipeline without its tables.
    fn pipeline_header(&self) -> Pipeline {
        let only_normal = self.only_normal();
        Pipeline {
            generation: self.generation,
            tables: Vec::new(),
            groups: self.groups.clone(),
            only_normal,
        }
    }

    fn only_normal(&self) -> Option<Arc<Rule>> {
        match (self.n_rules(), self.groups.is_empty()) {
            (1, true) => self.tables.first().and_then(|c| {
                c.iter()
                    .next()
                    .filter(|(m, _, r)| {
                        m.mask.is_zero()
                            && r.actions[..]
                                == [Action::Output {
                                    port: ofpp::NORMAL,
                                    max_len: 0,
                                }]
                    })
                    .map(|(_, _, r)| r.clone())
            }),
            _ => None,
        }
    }

    /// A pipeline sharing this state's subtables (tests, the first
    /// publication).
    pub fn pipeline(&self) -> Pipeline {
        let mut p = self.pipeline_header();
        p.tables = self.tables.clone();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::Field;

    fn out(p: u32) -> Vec<Action> {
        vec![Action::Output {
            port: p,
            max_len: 0,
        }]
    }

    #[test]
    fn default_is_normal_and_delete_all_clears_it() {
        let mut t = FlowTables::with_normal(0);
        assert!(t.pipeline().only_normal.is_some());
        let mut del = FlowMod::add(OFPTT_ALL, 0, Match::any(), Vec::new());
        del.command = Command::Delete;
        assert_eq!(t.flow_mod(&del, 0).unwrap().len(), 1);
        assert_eq!(t.n_rules(), 0);
        assert!(t.pipeline().only_normal.is_none());
    }

    #[test]
    fn modify_keeps_counts_and_strictness() {
        let mut t = FlowTables::empty();
        let mut m = Match::any();
        m.exact(Field::InPort, 1);
        t.flow_mod(&FlowMod::add(0, 100, m, out(2)), 0).unwrap();
        t.flow_mod(&FlowMod::add(0, 200, m, out(3)), 0).unwrap();
        t.rules().for_each(|r| r.stats.hit(5, 500, 1));
        let mut strict = FlowMod::add(0, 100, m, out(4));
        strict.command = Command::ModifyStrict;
        t.flow_mod(&strict, 0).unwrap();
        let rules = t.query(OFPTT_ALL, &Match::any(), 0, 0, ofpp::ANY, OFPG_ANY);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].priority, 200);
        assert_eq!(&rules[0].actions[..], &out(3)[..]);
        assert_eq!(&rules[1].actions[..], &out(4)[..]);
        assert_eq!(rules[1].stats.get(), (5, 500));
        // Non-strict delete with out_port filter.
        let mut del = FlowMod::add(OFPTT_ALL, 0, Match::any(), Vec::new());
        del.command = Command::Delete;
        del.out_port = 3;
        assert_eq!(t.flow_mod(&del, 0).unwrap().len(), 1);
        assert_eq!(t.n_rules(), 1);
    }

    #[test]
    fn cookies_filter() {
        let mut t = FlowTables::empty();
        for c in 0..4u64 {
            let mut m = Match::any();
            m.exact(Field::Reg(0), c);
            let mut fm = FlowMod::add(0, 1, m, out(1));
            fm.cookie = c;
            t.flow_mod(&fm, 0).unwrap();
        }
        let mut del = FlowMod::add(0, 0, Match::any(), Vec::new());
        del.command = Command::Delete;
        del.cookie = 2;
        del.cookie_mask = u64::MAX;
        assert_eq!(t.flow_mod(&del, 0).unwrap()[0].cookie, 2);
        assert_eq!(t.n_rules(), 3);
    }

    #[test]
    fn timeouts() {
        let mut t = FlowTables::empty();
        let mut fm = FlowMod::add(0, 1, Match::any(), out(1));
        fm.hard_timeout = 5;
        t.flow_mod(&fm, 0).unwrap();
        let mut m = Match::any();
        m.exact(Field::InPort, 7);
        let mut fm = FlowMod::add(0, 1, m, out(1));
        fm.idle_timeout = 3;
        t.flow_mod(&fm, 0).unwrap();
        const S: u64 = 1_000_000_000;
        assert!(t.expire(2 * S).is_empty());
        // Used in second 2: idle until the end of it plus 3.
        t.rules()
            .filter(|r| r.idle_timeout != 0)
            .for_each(|r| r.stats.hit(1, 1, 2));
        assert!(t.expire(4 * S).is_empty());
        assert_eq!(t.expire(5 * S).len(), 1, "hard 5 s");
        assert!(t.expire(6 * S - 1).is_empty());
        assert_eq!(t.expire(6 * S).len(), 1, "idle 3 s after second 2");
        assert_eq!(t.n_rules(), 0);
    }

    #[test]
    fn groups_and_their_flows() {
        let mut t = FlowTables::empty();
        let gm = GroupMod {
            command: GroupCommand::Add,
            kind: GroupType::All,
            id: 1,
            buckets: vec![Bucket {
                weight: 0,
                watch_port: ofpp::ANY,
                watch_group: OFPG_ANY,
                actions: out(2),
            }],
            selection_method: String::new(),
            fields: Vec::new(),
        };
        assert_eq!(
            t.flow_mod(&FlowMod::add(0, 1, Match::any(), vec![Action::Group(1)]), 0)
                .err(),
            Some(FlowModError::UnknownGroup(1))
        );
        t.group_mod(&gm, 0).unwrap();
        assert_eq!(t.group_mod(&gm, 0).err(), Some(GroupModError::Exists));
        t.flow_mod(&FlowMod::add(0, 1, Match::any(), vec![Action::Group(1)]), 0)
            .unwrap();
        let mut del = gm.clone();
        del.command = GroupCommand::Delete;
        assert_eq!(t.group_mod(&del, 0).unwrap().len(), 1);
        assert_eq!(t.n_rules(), 0);
    }
}
