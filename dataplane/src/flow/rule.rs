//! Rules and groups as a published pipeline holds them, and the hit
//! counters PMDs add to (atomics, added once per run of packets).
use super::action::{Action, Bucket, GroupType};
use super::classifier::Classifier;
use super::key::Match;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default, Debug)]
pub struct HitStats {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Seconds on the switch clock of the last hit (0 = never).
    pub used: AtomicU64,
}

impl HitStats {
    #[inline]
    pub fn hit(&self, packets: u64, bytes: u64, now: u32) {
        self.packets.fetch_add(packets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.used.load(Ordering::Relaxed) != now as u64 {
            self.used.store(now as u64, Ordering::Relaxed);
        }
    }
    pub fn get(&self) -> (u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed) as u32
    }
    pub fn reset(&self) {
        self.packets.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }
}

pub mod flags {
    pub const SEND_FLOW_REM: u16 = 1 << 0;
    pub const CHECK_OVERLAP: u16 = 1 << 1;
    pub const RESET_COUNTS: u16 = 1 << 2;
    pub const NO_PKT_COUNTS: u16 = 1 << 3;
    pub const NO_BYT_COUNTS: u16 = 1 << 4;
}

#[derive(Debug)]
pub struct Rule {
    pub table: u8,
    pub priority: u16,
    pub m: Match,
    pub cookie: u64,
    pub actions: Arc<[Action]>,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub importance: u16,
    pub flags: u16,
    /// Switch-clock seconds and nanoseconds at creation (duration in
    /// dumps), and at the last modification (hard timeout restarts there).
    pub created_ns: u64,
    pub modified_ns: u64,
    pub stats: Arc<HitStats>,
}

#[derive(Debug)]
pub struct Group {
    pub id: u32,
    pub kind: GroupType,
    pub buckets: Vec<Bucket>,
    /// How a select group picks a bucket: "hash" (over `fields`, or the
    /// 5-tuple), "dp_hash", or rvs's "roundrobin" and "leastconn". Empty:
    /// OVS's default, the 5-tuple hash.
    pub selection_method: String,
    /// The fields "hash" hashes (empty: the 5-tuple).
    pub fields: Vec<super::key::Field>,
    /// Round-robin position and connections per bucket (leastconn).
    pub lb: Arc<GroupLb>,
    pub created_ns: u64,
    pub stats: Arc<HitStats>,
    pub bucket_stats: Vec<Arc<HitStats>>,
}

/// The rules and groups of one bridge, immutable once published.
pub struct Pipeline {
    /// Bumped on every change: cached translations of older generations are
    /// stale.
    pub generation: u64,
    /// OpenFlow tables 0..=254 (only as many as are in use).
    pub tables: Vec<Classifier<Arc<Rule>>>,
    pub groups: hashbrown::HashMap<u32, Arc<Group>>,
    /// Set when table 0 holds only `priority=0 actions=NORMAL` and nothing
    /// else exists: PMDs then run NORMAL over whole batches.
    pub only_normal: Option<Arc<Rule>>,
}

impl Pipeline {
    pub fn empty() -> Pipeline {
        Pipeline {
            generation: 0,
            tables: Vec::new(),
            groups: hashbrown::HashMap::new(),
            only_normal: None,
        }
    }

    pub fn n_rules(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }
}

/// What a select group's round-robin and least-connections methods keep
/// across translations: the next position, and per bucket the connections
/// committed through it that are still alive (the tracker decrements
/// them as connections go).
#[derive(Debug, Default)]
pub struct GroupLb {
    pub rr: std::sync::atomic::AtomicU64,
    pub active: Box<[Arc<std::sync::atomic::AtomicI64>]>,
}

impl GroupLb {
    pub fn new(buckets: usize) -> GroupLb {
        GroupLb {
            rr: Default::default(),
            active: (0..buckets).map(|_| Arc::default()).collect(),
        }
    }
}
