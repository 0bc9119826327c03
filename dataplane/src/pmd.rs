//! The poll-mode worker loop: one thread per pinned core, run to completion
//! over bursts, never waiting for the control plane.
use crate::flow::cache::{FlowCache, RecircCache};
use crate::flow::rule::Pipeline;
use crate::flow_batch;
use crate::normal::{count_port_rx, count_rx, forward_batch, forward_uniform, one_port_uniform};
use crate::packet::PacketBuf;
use crate::qos::{self, Backlog};
use crate::snapshot::{PmdShared, Snapshot, Switch};
use crate::stats::{DropReason, PmdStats};
use crate::tunnel::path::{self as tnl_path, TnlLocal};
use crate::tunnel::state::TnlState;
use crate::tunnel::TunnelMeta;
use crate::txbuf::TxBuffers;
use crate::txhold::TxHold;
use crate::Burst;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Where the PMD reads time from: the TSC under DPDK, a monotonic clock in
/// tests.
#[derive(Clone, Copy)]
pub struct Clock {
    pub cycles: fn() -> u64,
    pub hz: u64,
}

impl Clock {
    pub fn monotonic() -> Clock {
        fn nanos() -> u64 {
            use std::sync::OnceLock;
            use std::time::Instant;
            static T0: OnceLock<Instant> = OnceLock::new();
            T0.get_or_init(Instant::now).elapsed().as_nanos() as u64
        }
        Clock {
            cycles: nanos,
            hz: 1_000_000_000,
        }
    }
}

/// What a PMD forwards by, as of one epoch: the snapshot, its tunnel
/// state and each bridge's pipeline (indexed as `snap.bridges`). Held
/// as counted references and refreshed only when the epoch changes, so a
/// turn reads them with plain loads; every publication (ports, tunnels,
/// flows) bumps the epoch and waits for the PMDs to announce it, and a
/// PMD lets go of its view before announcing, so what was replaced is
/// still freed by the control thread. (Loading each through `ArcSwap` per
/// batch cost ~2.5 cycles per packet: thread-local debt slots, perf
/// sampling, benches/RESULTS.md 2026-11-24.)
pub struct View<P: PacketBuf> {
    epoch: u64,
    pub snap: Arc<Snapshot<P>>,
    pub tnl: Arc<TnlState>,
    pub pipes: Vec<Arc<Pipeline>>,
}

impl<P: PacketBuf> View<P> {
    fn load(switch: &Switch<P>, epoch: u64) -> Self {
        let snap = switch.snap.load_full();
        View {
            epoch,
            tnl: snap.tnl.load_full(),
            pipes: snap
                .bridges
                .iter()
                .map(|b| b.flows.published.load_full())
                .collect(),
            snap,
        }
    }
}

/// What one PMD thread owns: its tx buffers, rx burst, flow cache and
/// tunnel recirculation.
pub struct PmdLocal<P: PacketBuf> {
    view: Option<View<P>>,
    pub tx: TxBuffers<P>,
    pub burst: Burst<P>,
    pub cache: FlowCache,
    /// Translations after ct(table=...).
    pub rcache: RecircCache,
    pub tnl: TnlLocal<P>,
    spare: Vec<tnl_path::Recirc<P>>,
    /// When lazy queues were last polled and how long until the next poll
    /// (clock cycles): doubled after each empty poll up to
    /// LAZY_POLL_MAX_US, back to LAZY_POLL_MIN_US when one brings frames,
    /// and 0 (every turn) while they fill bursts.
    lazy_at: u64,
    lazy_gap: Option<u64>,
    /// Frames waiting for a shaped port's rate.
    pub backlog: Backlog<P>,
    /// Frames waiting for room at a port whose far end's ring was full.
    pub hold: TxHold<P>,
    /// Loop accounting, OVS style: an iteration's cycles are counted when
    /// the next one starts, so the loop reads the clock once per turn.
    last_t0: u64,
    last_busy: bool,
    /// Which of this PMD's rx queues (by index, the first 64) are worth
    /// polling, as of snapshot epoch `live_epoch` and at most
    /// LIVE_REFRESH turns ago: a vhost-user port has a queue pair per
    /// possible guest queue, and a guest usually enables one.
    live: u64,
    live_epoch: u64,
    live_turns: u32,
    /// Whether this PMD had rx queues on its last turn (else it naps).
    has_queues: bool,
    /// (hz, nanoseconds per cycle << 32) for that hz.
    ns_mult: (u64, u64),
}

impl<P: PacketBuf> PmdLocal<P> {
    pub fn new(cache_entries: usize) -> Self {
        PmdLocal {
            view: None,
            tx: TxBuffers::default(),
            burst: Burst::new(),
            cache: FlowCache::new(cache_entries),
            rcache: RecircCache::default(),
            tnl: TnlLocal::default(),
            spare: Vec::new(),
            lazy_at: 0,
            lazy_gap: None,
            backlog: Backlog::default(),
            hold: TxHold::default(),
            last_t0: 0,
            last_busy: false,
            live: u64::MAX,
            live_epoch: u64::MAX,
            live_turns: 0,
            has_queues: false,
            ns_mult: (0, 0),
        }
    }
}

/// Runs one loop iteration: polls every rx queue assigned to PMD `me` once.
/// Returns the packets received.
pub fn poll_once<P: PacketBuf>(
    switch: &Switch<P>,
    me: &PmdShared,
    local: &mut PmdLocal<P>,
    clock: &Clock,
    now: u32,
) -> usize {
    let PmdLocal {
        view,
        tx,
        burst,
        cache,
        rcache,
        tnl,
        spare,
        lazy_at,
        lazy_gap,
        backlog,
        hold,
        last_t0,
        last_busy,
        live,
        live_epoch,
        live_turns,
        has_queues,
        ns_mult,
    } = local;
    // Announce a new epoch before loading the snapshot: once the control
    // thread sees it, we hold nothing older than its swap. An unchanged
    // epoch was announced already, so the common case is one plain load.
    let epoch = switch.epoch.load(Ordering::Acquire);
    if view.as_ref().is_none_or(|v| v.epoch != epoch) {
        // Let go of the old view before announcing: the control thread
        // frees what it replaced once every PMD has announced.
        *view = None;
        me.seen_epoch.store(epoch, Ordering::SeqCst);
        *view = Some(View::load(switch, epoch));
    }
    let Some(view) = view.as_ref() else {
        return 0;
    };
    let snap = &view.snap;
    let t0 = (clock.cycles)();
    let stats = &me.stats;
    // The previous turn ends where this one starts. A gap longer than
    // 10 ms is a nap or a caller that paused (tests): not loop time.
    let dt = t0.wrapping_sub(*last_t0);
    if *last_t0 != 0 && dt < clock.hz / 100 {
        if *last_busy {
            stats.busy_cycles.add(dt);
        } else {
            stats.idle_cycles.add(dt);
        }
    }
    *last_t0 = t0;
    *last_busy = false;
    stats.iterations.add(1);
    if ns_mult.0 != clock.hz {
        *ns_mult = (clock.hz, ns_multiplier(clock.hz));
    }
    let now_ns = ((t0 as u128 * ns_mult.1 as u128) >> 32) as u64;
    let mut got = 0;
    let Some(rxqs) = snap.rxqs.get(me.index) else {
        *has_queues = false;
        return 0;
    };
    *has_queues = !rxqs.is_empty();
    if *live_turns == 0 || *live_epoch != epoch {
        *live = live_queues(snap, rxqs);
        *live_epoch = epoch;
        *live_turns = LIVE_REFRESH;
    }
    *live_turns -= 1;
    if !hold.is_empty() {
        hold.release(snap, me.index as u16, stats, now_ns);
    }
    if !backlog.is_empty() {
        release_shaped(snap, me.index as u16, now_ns, stats, backlog, hold);
    }
    let (gap_min, gap_max) = (
        clock.hz / 1_000_000 * LAZY_POLL_MIN_US,
        clock.hz / 1_000_000 * LAZY_POLL_MAX_US,
    );
    let gap = *lazy_gap.get_or_insert(gap_min);
    let lazy_turn = t0.wrapping_sub(*lazy_at) >= gap;
    let mut lazy_got = 0;
    if lazy_turn {
        *lazy_at = t0;
    }
    for (i, rq) in rxqs.iter().enumerate() {
        if (rq.lazy && !lazy_turn) || (i < 64 && *live & (1 << i) == 0) {
            continue;
        }
        let Some(port) = snap.port(rq.slot) else {
            continue;
        };
        let n = port.dev.rx(rq.queue, burst);
        if rq.lazy {
            lazy_got = lazy_got.max(n);
        }
        if n == 0 {
            continue;
        }
        got += n;
        let mut bytes = count_rx(stats, rq.slot, burst);
        if snap.hold {
            stats.drop(DropReason::RestoreWait, Some(rq.slot), n as u64);
            burst.clear();
            continue;
        }
        if let Some(pol) = &port.qos.policer {
            qos::police(pol, now_ns, rq.slot, burst, stats);
            if burst.len() < n {
                if burst.is_empty() {
                    continue;
                }
                bytes = burst.iter().map(|p| p.wire_len() as u64).sum();
            }
        }
        run_batch(
            snap,
            &view.pipes,
            rq.slot,
            burst,
            None,
            false,
            bytes,
            now,
            stats,
            tx,
            cache,
            rcache,
        );
        let mut d = Drain {
            view,
            txq: me.index as u16,
            now,
            now_ns,
            stats,
            events: &switch.tnl_events,
            backlog,
            hold,
        };
        d.run(tx, cache, rcache, tnl, spare);
    }
    if lazy_turn {
        *lazy_gap = Some(match lazy_got {
            0 => (gap * 2).clamp(gap_min, gap_max),
            crate::BURST => 0,
            _ => gap_min,
        });
    }
    if me.index == 0 {
        let n = inject_packet_outs(switch, snap, now, stats, tx, rcache);
        if n > 0 {
            got += n;
            let mut d = Drain {
                view,
                txq: 0,
                now,
                now_ns,
                stats,
                events: &switch.tnl_events,
                backlog,
                hold,
            };
            d.run(tx, cache, rcache, tnl, spare);
        }
    }
    if got > 0 {
        *last_busy = true;
        stats.busy_iterations.add(1);
    }
    got
}

/// Turns between re-reading which rx queues can bring frames: about
/// 0.1-0.3 ms of polling, less than OVS takes to reconfigure a vhost-user
/// port whose guest enabled a queue.
const LIVE_REFRESH: u32 = 1024;

fn live_queues<P: PacketBuf>(snap: &Snapshot<P>, rxqs: &[crate::snapshot::RxqRef]) -> u64 {
    let mut live = 0u64;
    for (i, rq) in rxqs.iter().enumerate().take(64) {
        if snap.port(rq.slot).is_some_and(|p| p.dev.rxq_live(rq.queue)) {
            live |= 1 << i;
        }
    }
    live
}

/// Nanoseconds per clock cycle in 32.32 fixed point: a turn converts
/// its timestamp with a multiply, not a 128-bit division.
fn ns_multiplier(hz: u64) -> u64 {
    ((1_000_000_000u128 << 32) / hz.max(1) as u128).min(u64::MAX as u128) as u64
}

/// PMD 0 sends what controllers asked for with packet-outs. A lock only
/// this PMD takes (try_lock: never waits), checked after an atomic load.
fn inject_packet_outs<P: PacketBuf>(
    switch: &Switch<P>,
    snap: &Snapshot<P>,
    now: u32,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
    rcache: &mut RecircCache,
) -> usize {
    let mut n = 0;
    for b in &snap.bridges {
        let f = &b.flows;
        if f.inject_pending.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let Ok(rx) = f.inject_rx.try_lock() else {
            continue;
        };
        for inj in rx.try_iter().take(crate::BURST) {
            f.inject_pending.fetch_sub(1, Ordering::Relaxed);
            n += 1;
            match switch.packet_alloc.get().and_then(|a| a(&inj.data)) {
                Some(pkt) => flow_batch::inject(snap, b, &inj, pkt, now, stats, tx, rcache),
                None => stats.drop(DropReason::PoolEmpty, None, 1),
            }
        }
    }
    n
}

/// Runs a batch received on `slot` (already counted) through its bridge:
/// NORMAL over the whole batch while the bridge has only the default
/// table (its rule credited once), the OpenFlow pipeline otherwise.
#[allow(clippy::too_many_arguments)]
#[inline]
fn run_batch<P: PacketBuf>(
    snap: &Snapshot<P>,
    pipes: &[Arc<Pipeline>],
    slot: u16,
    pkts: &mut Burst<P>,
    tun: Option<&[TunnelMeta]>,
    uniform: bool,
    bytes: u64,
    now: u32,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
    cache: &mut FlowCache,
    rcache: &mut RecircCache,
) {
    let Some(port) = snap.port(slot) else {
        stats.drop(DropReason::NoPort, None, pkts.len() as u64);
        pkts.clear();
        return;
    };
    let Some(pipe) = pipes.get(port.bridge as usize) else {
        stats.drop(DropReason::NoPort, None, pkts.len() as u64);
        pkts.clear();
        return;
    };
    match &pipe.only_normal {
        Some(rule) => {
            rule.stats.hit(pkts.len() as u64, bytes, now);
            if uniform {
                forward_uniform(snap, slot, pkts, now, stats, tx);
            } else {
                forward_batch(snap, slot, pkts, now, stats, tx);
            }
        }
        None => {
            flow_batch::process_batch(snap, pipe, slot, pkts, tun, now, stats, tx, cache, rcache)
        }
    }
}

/// How often queues whose polling costs a system call (TAP internal
/// ports: a read() per poll) are polled: every 20 us while they carry
/// frames, backing off to every 500 us while they are idle. A poll costs
/// the PMD a few microseconds in which no vhost-user frame moves, so
/// polling an idle TAP every 20 us cost every forwarded frame throughput and
/// latency (rvs-bench's latency runs); the first frame after an idle
/// spell waits at most 500 us.
const LAZY_POLL_MIN_US: u64 = 20;
const LAZY_POLL_MAX_US: u64 = 500;

/// Recirculation passes before what is left is dropped: encap and decap
/// take one each, and nothing legitimate nests deeper.
const MAX_PASSES: usize = 4;

/// Sends what a batch queued, and runs what tunnels hand back (outer
/// frames through the underlay bridge, inner frames through the tenant
/// bridge) until nothing is left.
struct Drain<'a, P: PacketBuf> {
    view: &'a View<P>,
    txq: u16,
    now: u32,
    now_ns: u64,
    stats: &'a PmdStats,
    events: &'a std::sync::mpsc::SyncSender<crate::tunnel::TnlEvent>,
    backlog: &'a mut Backlog<P>,
    hold: &'a mut TxHold<P>,
}

impl<P: PacketBuf> Drain<'_, P> {
    fn run(
        &mut self,
        tx: &mut TxBuffers<P>,
        cache: &mut FlowCache,
        rcache: &mut RecircCache,
        tnl: &mut TnlLocal<P>,
        spare: &mut Vec<tnl_path::Recirc<P>>,
    ) {
        let view = self.view;
        let st: &TnlState = &view.tnl;
        self.flush(st, tx, tnl);
        let mut pass = 0;
        while !tnl.recirc.is_empty() {
            pass += 1;
            std::mem::swap(&mut tnl.recirc, spare);
            // By reference: a group is ~800 bytes, not worth moving.
            for g in spare.iter_mut() {
                if pass > MAX_PASSES {
                    self.stats
                        .drop(DropReason::RecursionLimit, None, g.pkts.len() as u64);
                    continue;
                }
                self.stats.recirculations.add(g.pkts.len() as u64);
                let bytes = if g.count {
                    count_port_rx(self.stats, g.slot, &g.pkts)
                } else {
                    g.pkts.iter().map(|p| p.wire_len() as u64).sum()
                };
                let meta = (!g.meta.is_empty()).then_some(&g.meta[..]);
                run_batch(
                    &view.snap,
                    &view.pipes,
                    g.slot,
                    &mut g.pkts,
                    meta,
                    g.uniform,
                    bytes,
                    self.now,
                    self.stats,
                    tx,
                    cache,
                    rcache,
                );
                // One group at a time: a burst per output port, as for
                // what the port's own rx queue brings.
                self.flush(st, tx, tnl);
            }
            spare.clear();
        }
    }

    #[inline]
    fn flush(&mut self, st: &TnlState, tx: &mut TxBuffers<P>, tnl: &mut TnlLocal<P>) {
        tx.flush(|slot, b, metas| self.send(st, slot, b, metas, tnl));
    }

    /// Sends burst `b` queued for port `slot` (`metas`: its tunnel fields
    /// when a tunnel port): encapsulates it for a tunnel port, takes the
    /// tunnel traffic out of it for an endpoint's internal port, and
    /// sends the rest.
    #[inline]
    fn send(
        &mut self,
        st: &TnlState,
        slot: u16,
        b: &mut Burst<P>,
        metas: &[TunnelMeta],
        tnl: &mut TnlLocal<P>,
    ) {
        let Some(port) = self.view.snap.port(slot) else {
            self.stats.drop(DropReason::NoPort, None, b.len() as u64);
            return;
        };
        if !port.tunnel {
            return self.send_plain(st, port, slot, b, tnl);
        }
        let Some(tp) = st.ports.get(&slot) else {
            self.stats
                .tx_drop(DropReason::TunnelNoRoute, slot, b.len() as u64);
            return;
        };
        let Some(under) = tnl_path::encap(
            st,
            tp,
            slot,
            b,
            metas,
            self.now,
            self.stats,
            tnl,
            self.events,
        ) else {
            return;
        };
        // One outer header went in front of every frame.
        if !self.straight_on(st, under, b, tnl) {
            tnl.push_all(under, false, b, true);
        }
    }

    /// Sends `b`, outer frames with one Ethernet header (one remote's)
    /// leaving through underlay port `under`, straight to the port the
    /// underlay bridge's NORMAL picks for them, when that bridge has only
    /// NORMAL and NORMAL picks one port: no pass through the bridge per
    /// burst. OVS's native tunnelling likewise settles the underlay's
    /// output when it translates the flow. False (nothing done) otherwise:
    /// the frames take their pass.
    #[inline]
    fn straight_on(
        &mut self,
        st: &TnlState,
        under: u16,
        b: &mut Burst<P>,
        tnl: &mut TnlLocal<P>,
    ) -> bool {
        let (view, stats, now) = (self.view, self.stats, self.now);
        let snap: &Snapshot<P> = &view.snap;
        let Some(port) = snap.port(under) else {
            return false;
        };
        let Some(rule) = view
            .pipes
            .get(port.bridge as usize)
            .and_then(|p| p.only_normal.as_ref())
        else {
            return false;
        };
        let n = b.len() as u64;
        let bytes = b.iter().map(|p| p.wire_len() as u64).sum();
        let Some(out) = one_port_uniform(snap, under, b, now, stats) else {
            return false;
        };
        rule.stats.hit(n, bytes, now);
        if let Some(port) = snap.port(out) {
            self.send_plain(st, port, out, b, tnl);
        }
        true
    }

    /// Sends burst `b` to port `slot` (`port`), not a tunnel; what is left
    /// in `b` is freed by the caller.
    #[inline(always)]
    fn send_plain(
        &mut self,
        st: &TnlState,
        port: &crate::snapshot::PortEntry<P>,
        slot: u16,
        b: &mut Burst<P>,
        tnl: &mut TnlLocal<P>,
    ) {
        let (txq, stats, now_ns) = (self.txq, self.stats, self.now_ns);
        if let Some(ep) = st.endpoints.get(&slot) {
            tnl_path::decap(st, ep, slot, b, stats, tnl, self.events);
            if b.is_empty() {
                return;
            }
        }
        if let Some(sh) = &port.qos.shaper {
            self.backlog
                .shape(sh, port.qos.shaper_queue, now_ns, slot, b, stats);
            if b.is_empty() {
                return;
            }
        }
        self.hold.send(port, slot, txq, stats, b, now_ns);
    }
}

/// Sends what shaped ports' rates allow now of what waits for them.
fn release_shaped<P: PacketBuf>(
    snap: &Snapshot<P>,
    txq: u16,
    now_ns: u64,
    stats: &PmdStats,
    backlog: &mut Backlog<P>,
    hold: &mut TxHold<P>,
) {
    let slots: arrayvec::ArrayVec<u16, 16> = backlog.waiting().take(16).collect();
    for slot in slots {
        match snap.port(slot) {
            Some(port) if port.qos.shaper.is_some() => {
                let mut b = Burst::new();
                if let Some(sh) = &port.qos.shaper {
                    backlog.shape(sh, port.qos.shaper_queue, now_ns, slot, &mut b, stats);
                }
                if !b.is_empty() {
                    hold.send(port, slot, txq, stats, &mut b, now_ns);
                }
            }
            _ => backlog.discard(slot, stats),
        }
    }
}

/// The PMD thread body, until `stop` is set.
pub fn run<P: PacketBuf>(switch: Arc<Switch<P>>, me: Arc<PmdShared>, clock: Clock) {
    let mut local = PmdLocal::<P>::new(switch.emc_entries);
    me.running.store(true, Ordering::SeqCst);
    let mut idle_spins = 0u32;
    // MAC ageing needs seconds: derive them from the cycle counter rather
    // than asking the OS clock every iteration, and from the timestamp
    // the last turn took (one clock read per turn), dividing once a second.
    let (mut now, mut sec_at) = (switch.now_secs(), (clock.cycles)());
    let hz = clock.hz.max(1);
    while !me.stop.load(Ordering::Relaxed) {
        let since = local.last_t0.wrapping_sub(sec_at);
        if local.last_t0 != 0 && since >= hz && since < u64::MAX / 2 {
            let secs = since / hz;
            now += secs as u32;
            sec_at += secs * hz;
        }
        let got = poll_once(&switch, &me, &mut local, &clock, now);
        // A PMD with nothing to poll naps instead of burning its core; one
        // with queues stays hot.
        if got == 0 && !local.has_queues {
            idle_spins += 1;
            if idle_spins > 1000 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        } else {
            idle_spins = 0;
        }
    }
    me.running.store(false, Ordering::SeqCst);
}

/// Assigns rx queues to PMDs: each queue to the least loaded PMD on the
/// port's NUMA node, or on any node when that node has no PMD (as OVS's
/// pmd-rxq-assign=cycles does when it has no history yet).
pub fn assign_rxqs(
    pmds: &[(usize, i32)],
    queues: &[(u16, u16, i32)],
) -> Vec<Vec<crate::snapshot::RxqRef>> {
    let mut out = vec![Vec::new(); pmds.len()];
    if pmds.is_empty() {
        return out;
    }
    for &(slot, queue, numa) in queues {
        let local: Vec<usize> = (0..pmds.len())
            .filter(|&i| pmds[i].1 == numa || numa < 0)
            .collect();
        let cands = if local.is_empty() {
            (0..pmds.len()).collect()
        } else {
            local
        };
        let best = cands
            .into_iter()
            .min_by_key(|&i| (out[i].len(), i))
            .expect("non-empty");
        out[best].push(crate::snapshot::RxqRef {
            slot,
            queue,
            lazy: false,
        });
    }
    out
}
