//! Frames a port's far end has no room for are held by the PMD and sent
//! first, in order, once it has; beyond the port's hold they are dropped
//! and counted, and a port that takes nothing for STALL_NS has what
//! waits for it dropped (txhold).
mod common;

use rvs_dataplane::netdev::{MemDev, NetDev};
use rvs_dataplane::packet::HeapBuf;
use rvs_dataplane::pmd::{assign_rxqs, poll_once, Clock, PmdLocal};
use rvs_dataplane::snapshot::Switch;
use rvs_dataplane::stats::DropReason;
use rvs_dataplane::txhold::STALL_NS;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// br0 with p0 (frames come in) and, when given, p1 (the receiver).
fn publish(sw: &Switch<HeapBuf>, p0: &Arc<MemDev<HeapBuf>>, p1: Option<&Arc<MemDev<HeapBuf>>>) {
    let mut devs: Vec<Arc<dyn NetDev<HeapBuf>>> = vec![p0.clone()];
    if let Some(p1) = p1 {
        devs.push(p1.clone());
    }
    let q: Vec<(u16, u16, i32)> = (0..devs.len() as u16).map(|i| (i, 0, 0)).collect();
    let mut snap = common::br0(devs);
    snap.rxqs = assign_rxqs(&[(0, 0)], &q);
    sw.publish(snap);
}

/// A broadcast frame (flooded from p0 to p1) carrying `seq`.
fn frame(seq: u16) -> HeapBuf {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0]);
    f[14..16].copy_from_slice(&seq.to_be_bytes());
    HeapBuf::new(&f)
}

fn seqs(sink: &MemDev<HeapBuf>) -> Vec<u16> {
    sink.sent
        .lock()
        .unwrap()
        .drain(..)
        .map(|p| u16::from_be_bytes([p.data()[14], p.data()[15]]))
        .collect()
}

fn offer(p0: &MemDev<HeapBuf>, seqs: std::ops::Range<u16>) {
    p0.rxq.lock().unwrap().extend(seqs.map(frame));
}

struct Lab {
    sw: Arc<Switch<HeapBuf>>,
    local: PmdLocal<HeapBuf>,
    clock: Clock,
}

impl Lab {
    fn new(clock: Clock) -> Lab {
        Lab {
            sw: Switch::<HeapBuf>::new(&[(0, 0)]),
            local: PmdLocal::new(64),
            clock,
        }
    }
    /// A lab with br0's p0, where frames come in, and p1, a receiver whose
    /// ring takes `capacity` frames and for which the PMD holds `hold`.
    fn with_receiver(
        clock: Clock,
        capacity: usize,
        hold: usize,
    ) -> (Lab, Arc<MemDev<HeapBuf>>, Arc<MemDev<HeapBuf>>) {
        let l = Lab::new(clock);
        let p0 = Arc::new(MemDev::default());
        let p1 = Arc::new(MemDev {
            tx_capacity: capacity,
            hold,
            ..Default::default()
        });
        publish(&l.sw, &p0, Some(&p1));
        (l, p0, p1)
    }
    fn turns(&mut self, n: usize) {
        let me = self.sw.pmds[0].clone();
        for _ in 0..n {
            poll_once(&self.sw, &me, &mut self.local, &self.clock, 0);
        }
    }
    fn drops(&self, r: DropReason) -> u64 {
        self.sw.pmds[0].stats.drops[r as usize].get()
    }
    fn dropped(&self) -> u64 {
        self.sw.pmds[0].stats.dropped_total()
    }
}

use rvs_dataplane::packet::PacketBuf;

#[test]
fn frames_a_full_ring_refuses_wait_and_leave_in_order() {
    let (mut l, p0, p1) = Lab::with_receiver(Clock::monotonic(), 40, 256);

    offer(&p0, 0..100);
    l.turns(4);
    assert_eq!(
        p1.sent.lock().unwrap().len(),
        40,
        "the ring's 40 go at once"
    );
    assert_eq!(l.local.hold.len(1), 60);

    // More arrive while frames wait and the ring is still full: they
    // queue behind them.
    offer(&p0, 100..110);
    l.turns(1);
    assert_eq!(p1.sent.lock().unwrap().len(), 40);
    assert_eq!(l.local.hold.len(1), 70);

    // The receiver drains its ring (seqs() empties it), three times.
    let mut got = seqs(&p1);
    l.turns(1);
    got.extend(seqs(&p1));
    l.turns(1);
    got.extend(seqs(&p1));
    assert_eq!(
        got,
        (0..110).collect::<Vec<_>>(),
        "every frame once, in order"
    );
    assert_eq!(l.local.hold.len(1), 0);
    assert!(l.local.hold.is_empty());

    let s = &l.sw.pmds[0].stats;
    assert_eq!(l.dropped(), 0, "nothing lost");
    assert_eq!(s.tx_held.get(), 70);
    assert_eq!(s.ports[1].tx_held.get(), 70);
    assert_eq!(s.ports[1].tx_packets.get(), 110);
    assert_eq!(s.ports[1].tx_bytes.get(), 110 * 60);
    assert_eq!(s.ports[1].tx_dropped.get(), 0);
}

#[test]
fn beyond_the_hold_frames_are_dropped_and_counted() {
    let (mut l, p0, p1) = Lab::with_receiver(Clock::monotonic(), 8, 16);
    offer(&p0, 0..40);
    l.turns(2);
    assert_eq!(seqs(&p1), (0..8).collect::<Vec<_>>());
    assert_eq!(l.local.hold.len(1), 16);
    assert_eq!(l.drops(DropReason::TxFull), 16);
    let s = &l.sw.pmds[0].stats;
    assert_eq!(s.ports[1].tx_dropped.get(), 16);
    assert_eq!(s.ports[1].tx_held.get(), 16);
    // The held ones are the first 16 that did not fit: 8..24.
    l.turns(1);
    l.turns(1);
    assert_eq!(seqs(&p1), (8..16).collect::<Vec<_>>());
    l.turns(1);
    assert_eq!(seqs(&p1), (16..24).collect::<Vec<_>>());
    assert_eq!(l.dropped(), 16);
}

#[test]
fn a_full_port_is_offered_frames_once_a_turn() {
    // Finding a guest's ring full costs a read of a line its core keeps
    // writing: a turn offers a full port its frames once, and what else
    // comes for it that turn joins them unoffered.
    let (mut l, p0, p1) = Lab::with_receiver(Clock::monotonic(), 15, 256);
    let offers = || p1.offers.load(Ordering::Relaxed);
    offer(&p0, 0..25);
    l.turns(1);
    assert_eq!((offers(), l.local.hold.len(1)), (1, 10), "15 taken");
    offer(&p0, 25..35);
    l.turns(1);
    assert_eq!(
        (offers(), l.local.hold.len(1)),
        (2, 20),
        "the held frames offered and refused; the new batch not offered"
    );
    let mut got = seqs(&p1);
    l.turns(1);
    assert_eq!((offers(), l.local.hold.len(1)), (3, 5), "room for 15");
    offer(&p0, 35..40);
    l.turns(1);
    assert_eq!((offers(), l.local.hold.len(1)), (4, 10));
    got.extend(seqs(&p1));
    l.turns(1);
    assert_eq!((offers(), l.local.hold.len(1)), (5, 0));
    got.extend(seqs(&p1));
    // With nothing held, each batch is offered at once again.
    offer(&p0, 40..45);
    l.turns(1);
    assert_eq!((offers(), l.local.hold.len(1)), (6, 0));
    got.extend(seqs(&p1));
    assert_eq!(
        got,
        (0..45).collect::<Vec<_>>(),
        "every frame once, in order"
    );
    assert_eq!(l.dropped(), 0);
    assert_eq!(l.sw.pmds[0].stats.ports[1].tx_held.get(), 25);
}

/// The test clock of `a_port_that_takes_nothing_...` (nanoseconds).
static FAKE_NS: AtomicU64 = AtomicU64::new(1_000_000_000);

fn fake_ns() -> u64 {
    FAKE_NS.load(Ordering::Relaxed)
}

#[test]
fn a_port_that_takes_nothing_has_its_frames_dropped_after_a_stall() {
    let (mut l, p0, _p1) = Lab::with_receiver(
        Clock {
            cycles: fake_ns,
            hz: 1_000_000_000,
        },
        0,
        256,
    );
    offer(&p0, 0..10);
    l.turns(1);
    assert_eq!(l.local.hold.len(1), 10);
    FAKE_NS.fetch_add(STALL_NS / 2, Ordering::Relaxed);
    l.turns(1);
    assert_eq!(l.local.hold.len(1), 10, "half a stall: still waiting");
    assert_eq!(l.dropped(), 0);
    FAKE_NS.fetch_add(STALL_NS / 2 + 1_000, Ordering::Relaxed);
    l.turns(1);
    assert_eq!(l.local.hold.len(1), 0);
    assert!(l.local.hold.is_empty());
    assert_eq!(l.drops(DropReason::TxFull), 10);
    assert_eq!(l.sw.pmds[0].stats.ports[1].tx_dropped.get(), 10);
    assert_eq!(l.sw.pmds[0].stats.ports[1].tx_packets.get(), 0);
}

#[test]
fn frames_held_for_a_port_that_goes_away_are_not_sent_to_its_successor() {
    let (mut l, p0, _p1) = Lab::with_receiver(Clock::monotonic(), 4, 256);
    offer(&p0, 0..10);
    l.turns(1);
    assert_eq!(l.local.hold.len(1), 6);
    // Slot 1 goes to another port, in one snapshot.
    let other = Arc::new(MemDev {
        hold: 256,
        ..Default::default()
    });
    publish(&l.sw, &p0, Some(&other));
    l.turns(1);
    assert!(
        other.sent.lock().unwrap().is_empty(),
        "not the old port's frames"
    );
    assert_eq!(l.drops(DropReason::NoPort), 6);
    assert!(l.local.hold.is_empty());
    // Not counted against the slot's new port.
    assert_eq!(l.sw.pmds[0].stats.ports[1].tx_dropped.get(), 0);
    offer(&p0, 10..12);
    l.turns(1);
    assert_eq!(seqs(&other), vec![10, 11]);
}
