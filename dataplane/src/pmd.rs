//! The poll-mode worker loop: one thread per pinned core, run to completion
//! over bursts, never waiting for the control plane.
use crate::flow::cache::FlowCache;
use crate::flow_batch;
use crate::normal::process_batch;
use crate::packet::PacketBuf;
use crate::snapshot::{PmdShared, Snapshot, Switch};
use crate::stats::{DropReason, PmdStats};
use crate::txbuf::TxBuffers;
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

/// What one PMD thread owns: its tx buffers, rx burst and flow cache.
pub struct PmdLocal<P: PacketBuf> {
    pub tx: TxBuffers<P>,
    pub burst: Burst<P>,
    pub cache: FlowCache,
}

impl<P: PacketBuf> PmdLocal<P> {
    pub fn new(cache_entries: usize) -> Self {
        PmdLocal {
            tx: TxBuffers::default(),
            burst: Burst::new(),
            cache: FlowCache::new(cache_entries),
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
    let PmdLocal { tx, burst, cache } = local;
    // Announce a new epoch before loading the snapshot: once the control
    // thread sees it, we hold nothing older than its swap. An unchanged
    // epoch was announced already, so the common case is one plain load.
    let epoch = switch.epoch.load(Ordering::Acquire);
    if me.seen_epoch.load(Ordering::Relaxed) != epoch {
        me.seen_epoch.store(epoch, Ordering::SeqCst);
    }
    let snap = switch.snap.load();
    let t0 = (clock.cycles)();
    let stats = &me.stats;
    let mut got = 0;
    let Some(rxqs) = snap.rxqs.get(me.index) else {
        return 0;
    };
    for rq in rxqs {
        let Some(port) = snap.port(rq.slot) else {
            continue;
        };
        let n = port.dev.rx(rq.queue, burst);
        if n == 0 {
            continue;
        }
        got += n;
        let bridge = &snap.bridges[port.bridge as usize];
        let pipe = bridge.flows.published.load();
        match &pipe.only_normal {
            // The default table: NORMAL over the whole batch, the rule
            // credited once.
            Some(rule) => {
                let bytes = process_batch(&snap, rq.slot, burst, now, stats, tx);
                rule.stats.hit(n as u64, bytes, now);
            }
            None => flow_batch::process_batch(&snap, &pipe, rq.slot, burst, now, stats, tx, cache),
        }
        flush(&snap, me.index as u16, stats, tx);
    }
    if me.index == 0 {
        got += inject_packet_outs(switch, &snap, now, stats, tx);
    }
    let dt = (clock.cycles)().wrapping_sub(t0);
    stats.iterations.add(1);
    if got > 0 {
        stats.busy_cycles.add(dt);
        stats.busy_iterations.add(1);
    } else {
        stats.idle_cycles.add(dt);
    }
    got
}

/// PMD 0 sends what controllers asked for with packet-outs. A lock only
/// this PMD takes (try_lock: never waits), checked after an atomic load.
fn inject_packet_outs<P: PacketBuf>(
    switch: &Switch<P>,
    snap: &Snapshot<P>,
    now: u32,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
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
                Some(pkt) => flow_batch::inject(snap, b, &inj, pkt, now, stats, tx),
                None => stats.drop(DropReason::PoolEmpty, None, 1),
            }
        }
    }
    if n > 0 {
        flush(snap, 0, stats, tx);
    }
    n
}

#[inline]
fn flush<P: PacketBuf>(snap: &Snapshot<P>, txq: u16, stats: &PmdStats, tx: &mut TxBuffers<P>) {
    tx.flush(|slot, b| {
        let n = b.len() as u64;
        let Some(port) = snap.port(slot) else {
            stats.drop(DropReason::NoPort, None, n);
            return;
        };
        let pc = &stats.ports[slot as usize];
        if port.dev.tx_down() {
            stats.drop(DropReason::TxPortDown, None, n);
            pc.tx_dropped.add(n);
            return;
        }
        let bytes: u64 = b.iter().map(|p| p.wire_len() as u64).sum();
        let sent = port.dev.tx(txq, b) as u64;
        if sent == n {
            pc.tx_bytes.add(bytes);
        } else {
            // Byte count of what the driver took is not known per packet
            // after the call; scale (exact when all or none went).
            pc.tx_bytes.add(bytes * sent / n.max(1));
            stats.drop(DropReason::TxFull, None, n - sent);
            pc.tx_dropped.add(n - sent);
        }
        pc.tx_packets.add(sent);
        stats.tx_packets.add(sent);
    });
}

/// The PMD thread body, until `stop` is set.
pub fn run<P: PacketBuf>(switch: Arc<Switch<P>>, me: Arc<PmdShared>, clock: Clock) {
    let mut local = PmdLocal::<P>::new(switch.emc_entries);
    me.running.store(true, Ordering::SeqCst);
    let mut idle_spins = 0u32;
    // MAC ageing needs seconds: derive them from the cycle counter rather
    // than asking the OS clock every iteration.
    let (base_secs, base_cycles) = (switch.now_secs(), (clock.cycles)());
    let hz = clock.hz.max(1);
    while !me.stop.load(Ordering::Relaxed) {
        let now = base_secs + ((clock.cycles)().wrapping_sub(base_cycles) / hz) as u32;
        let got = poll_once(&switch, &me, &mut local, &clock, now);
        // A PMD with nothing to poll naps instead of burning its core; one
        // with queues stays hot.
        if got == 0
            && switch
                .snap
                .load()
                .rxqs
                .get(me.index)
                .is_none_or(|q| q.is_empty())
        {
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
        out[best].push(crate::snapshot::RxqRef { slot, queue });
    }
    out
}
