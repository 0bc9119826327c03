//! Per-port rate limits: an ingress policer (`ingress_policing_rate` /
//! `ingress_policing_burst` on an Interface: what the port receives beyond
//! the rate is dropped) and an egress shaper (a Port's QoS, `linux-htb` or
//! `egress-policer`: what the switch sends beyond the rate waits in a
//! bounded queue and goes when the rate allows, as a qdisc would).
//!
//! A bucket is shared by every PMD that touches the port, so the rate holds
//! in sum; it is lock-free (a PMD never waits for another).
use crate::packet::PacketBuf;
use crate::stats::{DropReason, PmdStats};
use crate::Burst;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// A token bucket in bytes, refilled from a nanosecond clock.
#[derive(Debug)]
pub struct TokenBucket {
    /// Bytes per second.
    pub rate: u64,
    /// Bucket depth in bytes.
    pub burst: u64,
    tokens: AtomicI64,
    last_ns: AtomicU64,
    /// Frames dropped for this limit (for qos/show).
    pub dropped: AtomicU64,
}

impl TokenBucket {
    /// Starts full, as OVS's policers do.
    pub fn new(rate_bytes: u64, burst_bytes: u64) -> TokenBucket {
        TokenBucket {
            rate: rate_bytes,
            burst: burst_bytes,
            tokens: AtomicI64::new(burst_bytes as i64),
            last_ns: AtomicU64::new(u64::MAX),
            dropped: AtomicU64::new(0),
        }
    }

    /// Adds what `now_ns` brings since the last refill (once per burst).
    #[inline]
    pub fn refill(&self, now_ns: u64) {
        let last = self.last_ns.load(Ordering::Relaxed);
        if last == u64::MAX {
            let _ = self.last_ns.compare_exchange(
                u64::MAX,
                now_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return;
        }
        if now_ns <= last {
            return;
        }
        // Polls come far more often than a byte's worth of time at low
        // rates: the clock only advances by the time the added bytes
        // account for, so no fraction is lost between polls.
        let add = (now_ns - last) as u128 * self.rate as u128 / 1_000_000_000;
        if add == 0 {
            return;
        }
        let (add, next) = if add >= self.burst as u128 {
            (self.burst as i64, now_ns)
        } else {
            let used = (add * 1_000_000_000 / self.rate as u128) as u64;
            (add as i64, last + used)
        };
        // One PMD wins each interval; the others see it refilled.
        if self
            .last_ns
            .compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let t = self.tokens.fetch_add(add, Ordering::Relaxed) + add;
        if t > self.burst as i64 {
            self.tokens.fetch_min(self.burst as i64, Ordering::Relaxed);
        }
    }

    /// Takes `bytes` if the bucket holds them.
    #[inline]
    pub fn take(&self, bytes: u64) -> bool {
        let b = bytes as i64;
        let before = self.tokens.fetch_sub(b, Ordering::Relaxed);
        if before >= b {
            true
        } else {
            self.tokens.fetch_add(b, Ordering::Relaxed);
            false
        }
    }
}

/// A port's limits, as the snapshot carries them (shared, so the buckets
/// keep their state while snapshots change).
#[derive(Debug, Clone, Default)]
pub struct PortQos {
    pub policer: Option<Arc<TokenBucket>>,
    pub shaper: Option<Arc<TokenBucket>>,
    /// Frames that may wait for the shaper (0: an egress policer).
    pub shaper_queue: usize,
}

/// Frames a PMD keeps per shaped port before dropping (a qdisc's queue).
pub const SHAPER_QUEUE: usize = 1000;

/// Ingress policing of a received burst: frames beyond the rate are
/// dropped and counted against the port. Returns the bytes kept.
#[inline]
pub fn police<P: PacketBuf>(
    bucket: &TokenBucket,
    now_ns: u64,
    slot: u16,
    burst: &mut Burst<P>,
    stats: &PmdStats,
) {
    bucket.refill(now_ns);
    let before = burst.len();
    burst.retain(|p| bucket.take(p.wire_len() as u64));
    let dropped = (before - burst.len()) as u64;
    if dropped > 0 {
        stats.drop(DropReason::RxQos, Some(slot), dropped);
        bucket.dropped.fetch_add(dropped, Ordering::Relaxed);
    }
}

/// One PMD's queues of shaped frames waiting for their port's rate.
pub struct Backlog<P> {
    queues: Vec<(u16, VecDeque<P>)>,
}

impl<P> Default for Backlog<P> {
    fn default() -> Self {
        Backlog { queues: Vec::new() }
    }
}

impl<P: PacketBuf> Backlog<P> {
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(|(_, q)| q.is_empty())
    }

    /// Frames waiting for `slot`.
    pub fn len(&self, slot: u16) -> usize {
        self.queues
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or(0, |(_, q)| q.len())
    }

    /// Shapes `b` for port `slot`: the frames that fit the rate stay in `b`
    /// (to be sent now, behind what already waits); the rest wait, up to
    /// `limit`, beyond which they are dropped and counted.
    #[allow(clippy::too_many_arguments)]
    pub fn shape(
        &mut self,
        bucket: &TokenBucket,
        limit: usize,
        now_ns: u64,
        slot: u16,
        b: &mut Burst<P>,
        stats: &PmdStats,
    ) {
        bucket.refill(now_ns);
        let i = match self.queues.iter().position(|(s, _)| *s == slot) {
            Some(i) => i,
            None => {
                self.queues.push((slot, VecDeque::new()));
                self.queues.len() - 1
            }
        };
        let q = &mut self.queues[i].1;
        // Order is kept: while frames wait, new ones queue behind them.
        let mut out: Burst<P> = Burst::new();
        while let Some(front) = q.front() {
            if out.is_full() || !bucket.take(front.wire_len() as u64) {
                break;
            }
            if let Some(p) = q.pop_front() {
                out.push(p);
            }
        }
        let mut dropped = 0u64;
        for p in b.drain(..) {
            if q.is_empty() && !out.is_full() && bucket.take(p.wire_len() as u64) {
                out.push(p);
            } else if q.len() < limit {
                q.push_back(p);
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            bucket.dropped.fetch_add(dropped, Ordering::Relaxed);
            stats.tx_drop(DropReason::TxQos, slot, dropped);
        }
        *b = out;
    }

    /// Slots with frames waiting, for the PMD to offer them again.
    pub fn waiting(&self) -> impl Iterator<Item = u16> + '_ {
        self.queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(s, _)| *s)
    }

    /// Frees what waits for a port that is gone or no longer shaped.
    pub fn discard(&mut self, slot: u16, stats: &PmdStats) {
        if let Some((_, q)) = self.queues.iter_mut().find(|(s, _)| *s == slot) {
            let n = q.len() as u64;
            q.clear();
            if n > 0 {
                stats.drop(DropReason::NoPort, None, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HeapBuf;

    fn burst(n: usize, len: usize) -> Burst<HeapBuf> {
        (0..n).map(|_| HeapBuf::new(&vec![0u8; len])).collect()
    }

    #[test]
    fn policer_passes_the_burst_then_the_rate() {
        let stats = PmdStats::default();
        // 1000 bytes/s, 3000-byte bucket.
        let b = TokenBucket::new(1000, 3000);
        let mut p = burst(5, 1000);
        police(&b, 0, 1, &mut p, &stats);
        assert_eq!(p.len(), 3);
        assert_eq!(b.dropped.load(Ordering::Relaxed), 2);
        // Two seconds later: two more frames' worth.
        let mut p = burst(5, 1000);
        police(&b, 2_000_000_000, 1, &mut p, &stats);
        assert_eq!(p.len(), 2);
        // Never more than the bucket, however long the pause.
        let mut p = burst(5, 1000);
        police(&b, 100_000_000_000, 1, &mut p, &stats);
        assert_eq!(p.len(), 3);
        assert_eq!(stats.drops[DropReason::RxQos as usize].get(), 7);
    }

    #[test]
    fn frequent_refills_lose_no_time() {
        // 1000 bytes/s polled every 100 us: each poll brings 0.1 byte.
        let b = TokenBucket::new(1000, 10_000);
        assert!(b.take(10_000));
        b.refill(0);
        for i in 1..=10_000u64 {
            b.refill(i * 100_000);
        }
        // One second: 1000 bytes, not 0.
        assert!(b.take(1000));
        assert!(!b.take(1));
    }

    #[test]
    fn shaper_holds_what_exceeds_the_rate_and_sends_it_later_in_order() {
        let stats = PmdStats::default();
        let b = TokenBucket::new(1000, 2000);
        let mut q: Backlog<HeapBuf> = Backlog::default();
        let mut p: Burst<HeapBuf> = (0..5u8).map(|i| HeapBuf::new(&[i; 1000])).collect();
        q.shape(&b, 10, 0, 3, &mut p, &stats);
        assert_eq!(p.len(), 2);
        assert_eq!(q.len(3), 3);
        // A second later one frame may go: the oldest.
        let mut out = Burst::new();
        q.shape(&b, 10, 1_000_000_000, 3, &mut out, &stats);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data()[0], 2);
        // New frames queue behind those waiting.
        let mut p: Burst<HeapBuf> = (5..7u8).map(|i| HeapBuf::new(&[i; 1000])).collect();
        q.shape(&b, 10, 2_000_000_000, 3, &mut p, &stats);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].data()[0], 3);
        assert_eq!(q.len(3), 3);
        // The queue's limit: beyond it frames are dropped and counted.
        let mut p = burst(20, 1000);
        q.shape(&b, 10, 2_000_000_000, 3, &mut p, &stats);
        assert_eq!(q.len(3), 10);
        assert_eq!(b.dropped.load(Ordering::Relaxed), 13);
        assert_eq!(stats.ports[3].tx_dropped.get(), 13);
    }
}
