//! The PMD loop's own bookkeeping: rx queues that cannot bring frames
//! (a vhost-user queue pair the guest never enabled) are skipped, and
//! picked up again once they can; every turn is counted.
mod common;

use rvs_dataplane::netdev::{DevStatus, MemDev, NetDev};
use rvs_dataplane::packet::HeapBuf;
use rvs_dataplane::pmd::{assign_rxqs, poll_once, Clock, PmdLocal};
use rvs_dataplane::snapshot::Switch;
use rvs_dataplane::Burst;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A port with four rx queues of which only those in `live` can bring
/// frames, counting the polls each queue gets.
#[derive(Default)]
struct Gated {
    live: [AtomicBool; 4],
    polls: [AtomicU64; 4],
    rxq: Mutex<Vec<HeapBuf>>,
}

impl NetDev<HeapBuf> for Gated {
    fn n_rxq(&self) -> u16 {
        4
    }
    fn rx(&self, q: u16, out: &mut Burst<HeapBuf>) -> usize {
        self.polls[q as usize].fetch_add(1, Ordering::Relaxed);
        if !self.live[q as usize].load(Ordering::Relaxed) {
            return 0;
        }
        let mut v = self.rxq.lock().unwrap();
        let n = v.len();
        out.extend(v.drain(..));
        n
    }
    fn tx(&self, _q: u16, pkts: &mut Burst<HeapBuf>) -> usize {
        pkts.clear();
        0
    }
    fn rxq_live(&self, q: u16) -> bool {
        self.live[q as usize].load(Ordering::Relaxed)
    }
    fn status(&self) -> DevStatus {
        DevStatus {
            link_up: true,
            ..Default::default()
        }
    }
}

/// Bridge br0: port 0 the gated one, port 1 an in-memory sink.
fn publish(sw: &Switch<HeapBuf>, gated: &Arc<Gated>, sink: &Arc<MemDev<HeapBuf>>) {
    let mut snap = common::br0(vec![gated.clone(), sink.clone()]);
    let mut q: Vec<(u16, u16, i32)> = (0..4).map(|i| (0, i, 0)).collect();
    q.push((1, 0, 0));
    snap.rxqs = assign_rxqs(&[(0, 0)], &q);
    sw.publish(snap);
}

fn frame() -> HeapBuf {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0]);
    HeapBuf::new(&f)
}

fn turns(sw: &Switch<HeapBuf>, local: &mut PmdLocal<HeapBuf>, n: usize) -> usize {
    let me = sw.pmds[0].clone();
    (0..n)
        .map(|_| poll_once(sw, &me, local, &Clock::monotonic(), sw.now_secs()))
        .sum()
}

#[test]
fn queues_that_cannot_bring_frames_are_skipped_until_they_can() {
    let sw = Switch::<HeapBuf>::new(&[(0, 0)]);
    let gated = Arc::new(Gated::default());
    gated.live[0].store(true, Ordering::Relaxed);
    let sink = Arc::new(MemDev::default());
    publish(&sw, &gated, &sink);
    let mut local = PmdLocal::new(64);
    let polls = |q: usize| gated.polls[q].load(Ordering::Relaxed);

    assert_eq!(turns(&sw, &mut local, 10), 0);
    assert_eq!(
        (polls(0), polls(1), polls(2), polls(3)),
        (10, 0, 0, 0),
        "queues 1-3 are not live: never polled"
    );

    // Queue 2 comes up (the guest enabled it): a new snapshot is read at
    // once; without one, within the periodic re-read.
    gated.live[2].store(true, Ordering::Relaxed);
    gated.rxq.lock().unwrap().push(frame());
    publish(&sw, &gated, &sink);
    assert_eq!(turns(&sw, &mut local, 1), 1, "queue 0 brings the frame");
    assert_eq!((polls(1), polls(2)), (0, 1));
    assert_eq!(sink.sent.lock().unwrap().len(), 1);

    gated.live[3].store(true, Ordering::Relaxed);
    let n = turns(&sw, &mut local, 2000);
    assert_eq!(n, 0);
    let q3 = polls(3);
    assert!(
        q3 > 0 && q3 < 2000,
        "queue 3 polled after a re-read without a new snapshot, not from the first turn: {q3}"
    );
    assert_eq!(polls(2), 2001, "a live queue is polled every turn");
    assert_eq!(polls(1), 0);

    let s = &sw.pmds[0].stats;
    assert_eq!(s.iterations.get(), 2011, "every turn counted");
    assert_eq!(s.busy_iterations.get(), 1, "one turn brought frames");
    assert_eq!(s.rx_packets.get(), 1);
}
