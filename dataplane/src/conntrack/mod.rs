//! Connection tracking for `ct()` flows: a bounded table of connections,
//! each reachable from the key of either direction, with TCP state, NAT,
//! marks and labels. Sharded (a lock per shard and per connection, never a
//! global one): two PMDs polling the two directions of one connection meet
//! only on that connection's lock.
pub mod key;
pub mod nat;
pub mod tcp;

use key::{parse, ConnKey, Parsed, Untrackable};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tcp::{TcpTrack, Verdict};

/// ct_state bits, as OVS numbers them.
pub mod state {
    pub const NEW: u8 = 0x01;
    pub const EST: u8 = 0x02;
    pub const REL: u8 = 0x04;
    pub const RPL: u8 = 0x08;
    pub const INV: u8 = 0x10;
    pub const TRK: u8 = 0x20;
    pub const SNAT: u8 = 0x40;
    pub const DNAT: u8 = 0x80;
}

const SHARDS: usize = 64;
/// Connections looked at to pick one to evict.
const EVICT_CANDIDATES: usize = 16;
/// OVS's default limit for the userspace table is 3 M; ours defaults to
/// at least the 1 M the issue asks for.
pub const DEFAULT_LIMIT: usize = 1 << 20;

/// Timeouts in seconds, per protocol state (OVS userspace defaults).
#[derive(Debug)]
pub struct Timeouts {
    pub tcp_syn: AtomicU64,
    pub tcp_established: AtomicU64,
    pub tcp_closing: AtomicU64,
    pub udp_first: AtomicU64,
    pub udp_multiple: AtomicU64,
    pub icmp: AtomicU64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: AtomicU64::new(30),
            tcp_established: AtomicU64::new(24 * 3600),
            tcp_closing: AtomicU64::new(30),
            udp_first: AtomicU64::new(30),
            udp_multiple: AtomicU64::new(180),
            icmp: AtomicU64::new(30),
        }
    }
}

impl Timeouts {
    /// Names for `other_config:ct-timeout-<name>`.
    pub fn set(&self, name: &str, secs: u64) -> bool {
        let t = match name {
            "tcp-syn" => &self.tcp_syn,
            "tcp-established" => &self.tcp_established,
            "tcp-closing" => &self.tcp_closing,
            "udp-first" => &self.udp_first,
            "udp-multiple" => &self.udp_multiple,
            "icmp" => &self.icmp,
            _ => return false,
        };
        t.store(secs, Ordering::Relaxed);
        true
    }
}

/// A NAT translation applied to the original direction: the address and
/// port the source and/or destination became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatDone {
    pub src: Option<(u32, u16)>,
    pub dst: Option<(u32, u16)>,
}

#[derive(Debug)]
pub struct ConnState {
    pub tcp: Option<TcpTrack>,
    /// Something went the reply way.
    pub replied: bool,
    pub expires_ns: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub mark: u32,
    pub label: u128,
    /// In its load balancer's count of live connections: from commit
    /// until the connection closes (FIN or RST) or goes.
    pub counted: bool,
}

#[derive(Debug)]
pub struct Conn {
    pub orig: ConnKey,
    pub reply: ConnKey,
    pub nat: NatDone,
    /// ICMP type of the first packet (for dumps).
    pub icmp_type: u8,
    pub st: Mutex<ConnState>,
    /// A load balancer's count of live connections through one backend:
    /// up while this connection lives.
    pub counter: Option<Arc<std::sync::atomic::AtomicI64>>,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (mark, label) now.
    pub fn marks(&self) -> (u32, u128) {
        let s = self.lock();
        (s.mark, s.label)
    }
}

type Shard = hashbrown::HashMap<ConnKey, (Arc<Conn>, u8)>;

/// Counters of the table.
#[derive(Debug, Default)]
pub struct CtStats {
    pub created: AtomicU64,
    pub expired: AtomicU64,
    pub evicted: AtomicU64,
    /// New connections refused because the table was full of live ones.
    pub full: AtomicU64,
    pub invalid: AtomicU64,
    /// Source NAT found no free port in its range.
    pub nat_exhausted: AtomicU64,
}

pub struct Conntrack {
    shards: Box<[Mutex<Shard>]>,
    count: AtomicUsize,
    /// The shard the next eviction looks at.
    evict_at: AtomicUsize,
    pub limit: AtomicUsize,
    pub timeouts: Timeouts,
    pub stats: CtStats,
}

/// What `ct()` says about a packet, and the NAT to apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    pub state: u8,
    pub zone: u16,
    pub mark: u32,
    pub label: u128,
    /// The connection's original-direction tuple (ct_nw_src, ...).
    pub orig: Option<ConnKey>,
    pub rewrite: Option<nat::Rewrite>,
}

/// The connection the last packet of a batch belonged to: the next packet
/// with the same key skips the shard's lock and hash probe (a burst is
/// mostly runs of one connection). Held for one batch only, so a
/// connection removed meanwhile is at most a batch late to notice.
#[derive(Debug, Default)]
pub struct CtMemo(Option<(ConnKey, Arc<Conn>, u8)>);

impl CtMemo {
    /// Whether the last packet through `process_with` found its
    /// connection already there (and it still is the packet's).
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

/// What a `ct` action asks for.
#[derive(Debug, Clone, Default)]
pub struct CtRequest<'a> {
    pub zone: u16,
    pub commit: bool,
    pub force: bool,
    /// `nat` present: apply the connection's NAT; with a range, set it up
    /// on commit of a new connection.
    pub nat: Option<&'a nat::NatSpec>,
    /// (value, mask) to store on commit.
    pub set_mark: Option<(u32, u32)>,
    pub set_label: Option<(u128, u128)>,
    /// Counted up while a connection committed here lives.
    pub counter: Option<&'a Arc<std::sync::atomic::AtomicI64>>,
    /// The packet was NATed by an earlier ct in this zone (its ct_state
    /// has snat or dnat): its connection is found by the reverse of its
    /// key, and it is not translated again (as OVS's conntrack).
    pub natted: bool,
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack::new(DEFAULT_LIMIT)
    }
}

impl Conntrack {
    pub fn new(limit: usize) -> Conntrack {
        Conntrack {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            count: AtomicUsize::new(0),
            evict_at: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            timeouts: Timeouts::default(),
            stats: CtStats::default(),
        }
    }

    fn shard(&self, k: &ConnKey) -> std::sync::MutexGuard<'_, Shard> {
        let mut h = ((k.src as u64) << 32 | k.dst as u64)
            ^ ((k.sport as u64) << 16 | k.dport as u64)
            ^ ((k.proto as u64) << 40 | (k.zone as u64) << 48);
        h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.shards[(h >> 58) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Connections in the table (both directions count once).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(&self, k: &ConnKey, now: u64) -> Option<(Arc<Conn>, u8)> {
        let (c, d) = self.shard(k).get(k).cloned()?;
        if c.lock().expires_ns <= now {
            return None;
        }
        Some((c, d))
    }

    fn timeout(&self, c: &ConnState, proto: u8) -> u64 {
        let t = &self.timeouts;
        let secs = match (&c.tcp, proto) {
            (Some(tt), _) => match tt.state {
                tcp::TcpState::SynSent | tcp::TcpState::SynRecv => &t.tcp_syn,
                tcp::TcpState::Established => &t.tcp_established,
                _ => &t.tcp_closing,
            },
            (None, crate::wire::ipv4::PROTO_ICMP) => &t.icmp,
            (None, _) if c.replied => &t.udp_multiple,
            (None, _) => &t.udp_first,
        };
        secs.load(Ordering::Relaxed) * 1_000_000_000
    }

    /// Runs a packet through the tracker (the `ct` action).
    pub fn process(&self, frame: &[u8], req: &CtRequest, now: u64) -> Outcome {
        let mut out = Outcome::default();
        self.process_with(frame, req, now, &mut CtMemo::default(), &mut out);
        out
    }

    /// `process` into `out` (written in place: an Outcome is ~100 bytes,
    /// and moving it out and into the caller's was a tenth of a lookup),
    /// remembering the packet's connection in `memo` for the next packet.
    pub fn process_with(
        &self,
        frame: &[u8],
        req: &CtRequest,
        now: u64,
        memo: &mut CtMemo,
        out: &mut Outcome,
    ) {
        *out = Outcome {
            zone: req.zone,
            ..Default::default()
        };
        let mut p = Parsed::default();
        if let Err(Untrackable::NotIp | Untrackable::Invalid) = parse(frame, req.zone, &mut p) {
            self.stats.invalid.fetch_add(1, Ordering::Relaxed);
            out.state = state::TRK | state::INV;
            return;
        }
        let key = if req.natted { p.key.reverse() } else { p.key };
        let found = match memo.0.take() {
            Some((k, c, d)) if k == key => Some((c, d)),
            _ => self.shard(&key).get(&key).cloned(),
        };
        if let Some((c, dir)) = found {
            // A NATed packet's reverse key is the other direction's.
            let d = if req.natted { dir ^ 1 } else { dir };
            if let Some(live) = self.existing(&c, d, &p, frame.len(), req, now, out) {
                if live {
                    memo.0 = Some((key, c, dir));
                }
                return;
            }
        }
        if let Some((quoted, q)) = p.related {
            if let Some((c, dir)) = self.find(&quoted.reverse(), now) {
                out.state = state::TRK | state::REL | if dir == 1 { state::RPL } else { 0 };
                let (mark, label) = c.marks();
                out.mark = mark;
                out.label = label;
                out.orig = Some(c.orig);
                if req.nat.is_some() && c.nat != NatDone::default() {
                    out.rewrite = Some(nat::related(&c, dir, &p, q));
                    out.state |= nat_bits(&c.nat);
                }
                return;
            }
        }
        *out = self.create(&p, frame.len(), req, now, *out);
    }

    /// `n` more packets (`bytes` in all) of the connection the last
    /// packet through `memo` belonged to, going its way, for a request like
    /// that packet's: counted and its expiry pushed back, as `process`
    /// would for each, when they cannot change its state (UDP or ICMP:
    /// no TCP window to follow). False, with nothing done, when that is
    /// not so or the connection has expired; they then go one by one.
    pub fn repeat(&self, memo: &CtMemo, req: &CtRequest, n: u64, bytes: u64, now: u64) -> bool {
        let Some((_, c, dir)) = &memo.0 else {
            return false;
        };
        let d = (if req.natted { dir ^ 1 } else { *dir }) as usize;
        let mut st = c.lock();
        if st.tcp.is_some() || st.expires_ns <= now || (d == 1 && !st.replied) {
            return false;
        }
        st.packets[d] += n;
        st.bytes[d] += bytes;
        if req.commit {
            apply_marks(&mut st, req);
        }
        st.expires_ns = now + self.timeout(&st, c.orig.proto);
        true
    }

    /// A packet that belongs to no connection: +new, and a connection
    /// (with its NAT) when the action commits.
    fn create(
        &self,
        p: &Parsed,
        len: usize,
        req: &CtRequest,
        now: u64,
        mut out: Outcome,
    ) -> Outcome {
        let tcp = match p.tcp {
            Some(t) => match TcpTrack::new(&t) {
                Some(tt) => Some(tt),
                None => {
                    self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                    out.state = state::TRK | state::INV;
                    return out;
                }
            },
            None => None,
        };
        out.state = state::TRK | state::NEW;
        out.orig = Some(p.key);
        if !req.commit {
            return out;
        }
        let mut nat_done = NatDone::default();
        let mut reply = p.key.reverse();
        if let Some(spec) = req.nat.filter(|n| n.kind != nat::NatKind::Reverse) {
            match nat::choose(spec, &p.key, |k| self.find(k, now).is_some()) {
                Some((done, r)) => {
                    nat_done = done;
                    reply = r;
                }
                None => {
                    self.stats.nat_exhausted.fetch_add(1, Ordering::Relaxed);
                    out.state = state::TRK | state::INV;
                    return out;
                }
            }
        }
        if !self.make_room(now) {
            self.stats.full.fetch_add(1, Ordering::Relaxed);
            out.state = state::TRK | state::INV;
            return out;
        }
        let mut st = ConnState {
            tcp,
            replied: false,
            expires_ns: 0,
            packets: [1, 0],
            bytes: [len as u64, 0],
            mark: 0,
            label: 0,
            counted: req.counter.is_some(),
        };
        apply_marks(&mut st, req);
        st.expires_ns = now + self.timeout(&st, p.key.proto);
        out.mark = st.mark;
        out.label = st.label;
        let conn = Arc::new(Conn {
            orig: p.key,
            reply,
            nat: nat_done,
            icmp_type: p.icmp.map(|i| i.0).unwrap_or(0),
            st: Mutex::new(st),
            counter: req.counter.cloned(),
        });
        if let Some(c) = &conn.counter {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.shard(&p.key).insert(p.key, (conn.clone(), 0));
        self.shard(&reply).insert(reply, (conn.clone(), 1));
        self.count.fetch_add(1, Ordering::Relaxed);
        self.stats.created.fetch_add(1, Ordering::Relaxed);
        if req.nat.is_some() && nat_done != NatDone::default() {
            out.rewrite = Some(nat::forward(&conn, 0, p));
            out.state |= nat_bits(&nat_done);
        }
        out
    }

    /// A packet of connection `c` (direction `dir`): None when `c` has
    /// expired, else what ct says and whether `c` is still the packet's
    /// connection (not when the packet reopened it).
    #[allow(clippy::too_many_arguments)]
    fn existing(
        &self,
        c: &Arc<Conn>,
        dir: u8,
        p: &Parsed,
        len: usize,
        req: &CtRequest,
        now: u64,
        out: &mut Outcome,
    ) -> Option<bool> {
        let d = dir as usize;
        {
            let mut st = c.lock();
            if st.expires_ns <= now {
                return None;
            }
            if let (Some(tt), Some(ti)) = (st.tcp.as_mut(), p.tcp.as_ref()) {
                match tt.update(d, ti) {
                    Verdict::Ok => {
                        // A closing connection no longer counts for
                        // leastconn (as IPVS's active connections).
                        let closing = tt.state >= tcp::TcpState::FinWait;
                        if st.counted && closing {
                            st.counted = false;
                            if let Some(n) = &c.counter {
                                n.fetch_sub(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Verdict::Invalid => {
                        self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                        out.state = state::TRK | state::INV;
                        return Some(true);
                    }
                    Verdict::Reopen => {
                        drop(st);
                        self.remove(c);
                        *out = self.create(p, len, req, now, *out);
                        return Some(false);
                    }
                }
            }
            if dir == 1 {
                st.replied = true;
            }
            st.packets[d] += 1;
            st.bytes[d] += len as u64;
            if req.commit {
                apply_marks(&mut st, req);
            }
            st.expires_ns = now + self.timeout(&st, c.orig.proto);
            out.state = state::TRK
                | if st.replied { state::EST } else { state::NEW }
                | if dir == 1 { state::RPL } else { 0 };
            out.mark = st.mark;
            out.label = st.label;
        }
        out.orig = Some(c.orig);
        if req.nat.is_some() && c.nat != NatDone::default() {
            if !req.natted {
                out.rewrite = Some(nat::forward(c, dir, p));
            }
            out.state |= nat_bits(&c.nat);
        }
        Some(true)
    }

    /// Room for one more connection: true when there is, after evicting
    /// one if the table is at its limit. The victim is the soonest to
    /// expire among a few connections of the next shard in turn: a bounded
    /// look on the packet's path, not a scan of the table.
    fn make_room(&self, now: u64) -> bool {
        if self.len() < self.limit.load(Ordering::Relaxed) {
            return true;
        }
        for _ in 0..SHARDS {
            let i = self.evict_at.fetch_add(1, Ordering::Relaxed) % SHARDS;
            let victim = {
                let g = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
                g.values()
                    .take(EVICT_CANDIDATES)
                    .map(|(c, _)| c.clone())
                    .min_by_key(|c| c.lock().expires_ns)
            };
            if let Some(c) = victim {
                if c.lock().expires_ns <= now {
                    self.stats.expired.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                }
                self.remove(&c);
                return true;
            }
        }
        false
    }

    fn remove(&self, c: &Arc<Conn>) {
        let mut gone = false;
        for k in [c.orig, c.reply] {
            let mut s = self.shard(&k);
            if s.get(&k).is_some_and(|(x, _)| Arc::ptr_eq(x, c)) {
                s.remove(&k);
                gone = true;
            }
        }
        if gone {
            self.count.fetch_sub(1, Ordering::Relaxed);
            let mut st = c.lock();
            if st.counted {
                st.counted = false;
                if let Some(n) = &c.counter {
                    n.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Every connection (counted once, by its original-direction entry)
    /// that `keep` selects.
    fn collect(&self, keep: impl Fn(&Conn) -> bool) -> Vec<Arc<Conn>> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let g = s.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(
                g.values()
                    .filter(|(c, d)| *d == 0 && keep(c))
                    .map(|(c, _)| c.clone()),
            );
        }
        out
    }

    /// Removes expired connections; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let dead = self.collect(|c| c.lock().expires_ns <= now);
        for c in &dead {
            self.remove(c);
        }
        self.stats
            .expired
            .fetch_add(dead.len() as u64, Ordering::Relaxed);
        dead.len()
    }

    /// Removes every connection (of one zone).
    pub fn flush(&self, zone: Option<u16>) -> usize {
        self.flush_where(|c| zone.is_none_or(|z| c.orig.zone == z))
    }

    /// Removes the connections `pick` selects; returns how many.
    pub fn flush_where(&self, pick: impl Fn(&Conn) -> bool) -> usize {
        let all = self.collect(pick);
        for c in &all {
            self.remove(c);
        }
        all.len()
    }

    /// Every live connection, in a stable order.
    pub fn dump(&self, zone: Option<u16>) -> Vec<Arc<Conn>> {
        let mut all = self.collect(|c| zone.is_none_or(|z| c.orig.zone == z));
        all.sort_by_key(|c| c.orig);
        all
    }
}

fn nat_bits(n: &NatDone) -> u8 {
    (if n.src.is_some() { state::SNAT } else { 0 })
        | (if n.dst.is_some() { state::DNAT } else { 0 })
}

fn apply_marks(st: &mut ConnState, req: &CtRequest) {
    if let Some((v, m)) = req.set_mark {
        st.mark = (st.mark & !m) | (v & m);
    }
    if let Some((v, m)) = req.set_label {
        st.label = (st.label & !m) | (v & m);
    }
}
