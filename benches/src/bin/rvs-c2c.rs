//! rvs-c2c: what this machine charges one core for cache lines another
//! core wrote, under the discipline rvs's ring reader and writer use
//! (a burst's lines prefetched before the first is touched).
//!
//! One-way vhost traffic (the flows-* scenarios) makes the switch's core
//! read each frame's lines right after the generator's core wrote them,
//! and write each receive buffer's lines that the generator's core last
//! held. No switching code can avoid those transfers, so their price per
//! line, times the lines a frame needs, is a floor under the switch's
//! cycles per packet. This measures that price with nothing else running:
//!
//! - `read`: a producer thread writes each 64-byte slot of a ring and
//!   publishes its count; the consumer prefetches a burst of slots, reads
//!   every word of each and hands the burst back.
//! - `write`: the consumer prefetches a burst for writing and writes every
//!   word of each slot; the producer reads each slot back before the
//!   consumer may write it again (a guest reading what it received).
//! - `local`: `read` without a producer: the consumer reads lines it wrote
//!   itself, the price of the same loop with no transfer.
//!
//! The consumer's time counts only while it works a burst (as a PMD's
//! busy cycles do), in TSC cycles calibrated against the OS clock.
use clap::{Parser, ValueEnum};
use rvs_ffi::{eal::rdtsc, prefetch};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Mode {
    Read,
    Write,
    Local,
}

#[derive(Parser)]
#[command(
    name = "rvs-c2c",
    about = "price per cache line another core wrote, read or written in prefetched bursts"
)]
struct Args {
    #[arg(long, value_enum, default_value = "read")]
    mode: Mode,
    /// CPU of the producer (the generator's side).
    #[arg(long, default_value_t = 0)]
    producer_cpu: usize,
    /// CPU of the consumer (the switch's PMD side).
    #[arg(long, default_value_t = 1)]
    consumer_cpu: usize,
    /// Slots in the ring (a virtqueue's size).
    #[arg(long, default_value_t = 256)]
    slots: usize,
    /// Slots the consumer takes at a time.
    #[arg(long, default_value_t = 32)]
    burst: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

/// One slot: a cache line of words.
#[repr(align(64))]
struct Line([AtomicU64; 8]);

/// A counter on a line of its own, so that the two sides' counters do
/// not share one.
#[repr(align(64))]
struct Counter(AtomicU64);

struct Ring {
    slots: Vec<Line>,
    /// Slots the producer has finished (written, or read back).
    made: Counter,
    /// Slots the consumer has finished.
    used: Counter,
    stop: AtomicBool,
}

impl Ring {
    fn new(n: usize) -> Ring {
        Ring {
            slots: (0..n)
                .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            made: Counter(AtomicU64::new(0)),
            used: Counter(AtomicU64::new(0)),
            stop: AtomicBool::new(false),
        }
    }

    fn slot(&self, seq: u64) -> &Line {
        &self.slots[seq as usize % self.slots.len()]
    }
}

fn pin(cpu: usize) -> Result<(), String> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(|e| format!("cpu {cpu}: {e}"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| format!("cannot pin to cpu {cpu}: {e}"))
}

/// The producer's side of `read`: fill each slot the consumer has handed
/// back with its sequence number, then publish it.
fn produce(r: &Ring) {
    let mut seq = 0u64;
    while !r.stop.load(Ordering::Relaxed) {
        if seq - r.used.0.load(Ordering::Acquire) >= r.slots.len() as u64 {
            std::hint::spin_loop();
            continue;
        }
        for w in &r.slot(seq).0 {
            w.store(seq, Ordering::Relaxed);
        }
        seq += 1;
        r.made.0.store(seq, Ordering::Release);
    }
}

/// The producer's side of `write`: read back each slot the consumer
/// wrote, then hand it back. Counts slots that did not hold what was
/// written.
fn read_back(r: &Ring) -> u64 {
    let (mut seq, mut bad) = (0u64, 0u64);
    while !r.stop.load(Ordering::Relaxed) {
        if seq >= r.used.0.load(Ordering::Acquire) {
            std::hint::spin_loop();
            continue;
        }
        bad += r
            .slot(seq)
            .0
            .iter()
            .any(|w| w.load(Ordering::Relaxed) != seq) as u64;
        seq += 1;
        r.made.0.store(seq, Ordering::Release);
    }
    bad
}

/// What the consumer measured.
#[derive(Debug)]
struct Tally {
    lines: u64,
    busy: u64,
    bad: u64,
}

fn consume(r: &Ring, mode: Mode, burst: usize, until: Instant) -> Tally {
    let n = r.slots.len() as u64;
    let b = burst as u64;
    let mut t = Tally {
        lines: 0,
        busy: 0,
        bad: 0,
    };
    let mut seq = 0u64;
    while Instant::now() < until {
        // Wait, unmeasured, for a whole burst: the producer's slowness is
        // idle time, not the price of a line.
        let ready = match mode {
            Mode::Read => r.made.0.load(Ordering::Acquire) >= seq + b,
            Mode::Write => seq + b - r.made.0.load(Ordering::Acquire) <= n,
            Mode::Local => true,
        };
        if !ready {
            std::hint::spin_loop();
            continue;
        }
        if mode == Mode::Local {
            for s in seq..seq + b {
                for w in &r.slot(s).0 {
                    w.store(s, Ordering::Relaxed);
                }
            }
        }
        let t0 = rdtsc();
        for s in seq..seq + b {
            let p = r.slot(s) as *const Line as *const u8;
            match mode {
                Mode::Write => prefetch::write(p),
                _ => prefetch::read(p),
            }
        }
        for s in seq..seq + b {
            let line = &r.slot(s).0;
            match mode {
                Mode::Write => line.iter().for_each(|w| w.store(s, Ordering::Relaxed)),
                _ => t.bad += line.iter().any(|w| w.load(Ordering::Relaxed) != s) as u64,
            }
        }
        seq += b;
        r.used.0.store(seq, Ordering::Release);
        t.busy += rdtsc().wrapping_sub(t0);
        t.lines += b;
    }
    t
}

/// TSC ticks per second, against the OS clock.
fn tsc_hz() -> f64 {
    let (i0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(Duration::from_millis(200));
    let (i1, c1) = (Instant::now(), rdtsc());
    c1.wrapping_sub(c0) as f64 / (i1 - i0).as_secs_f64()
}

/// Runs `mode` for `seconds`, the producer and consumer pinned to `cpus`
/// when given. Errs if the hand-over ever let a side see a slot the other
/// had not finished (the measurement would be of a broken ring).
fn measure(
    mode: Mode,
    slots: usize,
    burst: usize,
    seconds: f64,
    cpus: Option<(usize, usize)>,
) -> Result<Tally, String> {
    if !slots.is_power_of_two() || burst == 0 || burst > slots {
        return Err(format!(
            "--slots {slots} must be a power of two and --burst {burst} between 1 and it"
        ));
    }
    let ring = Ring::new(slots);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let (t, producer_bad) = std::thread::scope(|s| -> Result<(Tally, u64), String> {
        let r = &ring;
        let producer = (mode != Mode::Local).then(|| {
            s.spawn(move || -> Result<u64, String> {
                if let Some((p, _)) = cpus {
                    pin(p)?;
                }
                Ok(match mode {
                    Mode::Write => read_back(r),
                    _ => {
                        produce(r);
                        0
                    }
                })
            })
        });
        let consumer = s.spawn(move || -> Result<Tally, String> {
            if let Some((_, c)) = cpus {
                pin(c)?;
            }
            Ok(consume(r, mode, burst, until))
        });
        let t = consumer.join().map_err(|_| "consumer panicked")?;
        // However the consumer ended (even unpinned), the producer stops.
        ring.stop.store(true, Ordering::Relaxed);
        let pb = match producer {
            Some(p) => p.join().map_err(|_| "producer panicked")??,
            None => 0,
        };
        Ok((t?, pb))
    })?;
    if t.bad + producer_bad > 0 {
        return Err(format!(
            "{} slots held the wrong words: the ring's hand-over is broken",
            t.bad + producer_bad
        ));
    }
    if t.lines == 0 {
        return Err("no burst was ever ready: is the producer's CPU online?".into());
    }
    Ok(t)
}

fn run(a: Args) -> Result<(), String> {
    let hz = tsc_hz();
    let t = measure(
        a.mode,
        a.slots,
        a.burst,
        a.seconds,
        Some((a.producer_cpu, a.consumer_cpu)),
    )?;
    let cycles = t.busy as f64 / t.lines as f64;
    println!(
        "RESULT mode={} lines={} cycles_per_line={:.1} ns_per_line={:.2} tsc_ghz={:.3} burst={} slots={} cpus={},{}",
        match a.mode {
            Mode::Read => "read",
            Mode::Write => "write",
            Mode::Local => "local",
        },
        t.lines,
        cycles,
        cycles / hz * 1e9,
        hz / 1e9,
        a.burst,
        a.slots,
        a.producer_cpu,
        a.consumer_cpu
    );
    Ok(())
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("rvs-c2c: {e}");
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_hands_each_slot_over_whole_and_counts_its_lines() {
        // Unpinned: the test machine's CPUs may be busy with other tests.
        for mode in [Mode::Read, Mode::Write, Mode::Local] {
            let t = measure(mode, 64, 8, 0.2, None).unwrap();
            assert!(t.lines > 0 && t.lines.is_multiple_of(8), "{}", t.lines);
            assert_eq!(t.bad, 0);
        }
        assert!(measure(Mode::Read, 100, 8, 0.1, None)
            .unwrap_err()
            .contains("--slots 100"));
    }
}
