//! rvs-loadgen: a one-way, rate-controlled DPDK traffic source and sink for
//! rvs-bench, for what testpmd cannot measure: latency through the switch
//! at a chosen fraction of its maximum, loss at that rate, and one-way
//! scenarios whose frames must be built (tunnel decapsulation).
//!
//! It opens two virtio-user ports (the switch's vhost-user sockets), sends
//! copies of one template frame out of `--tx` at `--rate-mpps` (0: as fast
//! as the ring takes them), each stamped at its tail with a sequence number
//! and the TSC at send time, and receives on `--rx` (and drains `--tx`).
//! The stamp is at the tail because encapsulation adds headers in front
//! and decapsulation removes them, never the end of the inner frame.
//! Frames stamped inside the window are counted and their latency (TSC at
//! receive minus TSC at send, one clock, one process) goes into a 10 ns
//! histogram. Prints `WARM` when the window opens and one `RESULT` line.
use clap::Parser;
use rvs_dataplane::wire::checksum::{finish, sum};
use rvs_ffi::{eal, ethdev::EthDev, mbuf::Mbuf, mempool::Mempool};

#[derive(Parser)]
#[command(
    name = "rvs-loadgen",
    about = "one-way rate-controlled load with latency"
)]
struct Args {
    /// devargs of the sending port (net_virtio_user...).
    #[arg(long)]
    tx: String,
    /// devargs of the receiving port.
    #[arg(long)]
    rx: String,
    /// The frame to send, hex (its last 16 bytes are overwritten by the stamp).
    #[arg(long)]
    frame: String,
    /// Frames per second offered, in millions; 0 sends as fast as the ring takes them.
    #[arg(long, default_value_t = 0.0)]
    rate_mpps: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 3.0)]
    window: f64,
    /// CPU to run on (the EAL's main lcore).
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Send this many frames with the template's MACs swapped out of `--rx`
    /// first, so that a learning switch knows where the receiver is.
    #[arg(long, default_value_t = 8)]
    learn: usize,
    /// Distinct UDP 5-tuples to cycle through (1: the template as it is).
    /// Frame k carries flow i = k mod N: the template's IPv4 source plus
    /// i / 60000 and UDP source port 1024 + i % 60000; the template must
    /// be IPv4 without options carrying UDP, right after the Ethernet
    /// header.
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Count frames received while the window is open without reading
    /// them (throughput only: no latency, and `lost` is then approximate).
    /// Reading each frame's stamp, a line the switch's core wrote, was the
    /// generator's dearest step, and the generator, not rvs, set the pace.
    #[arg(long)]
    arrivals: bool,
}

/// The template's 5-tuple stepped through `n` flows, one per frame.
struct FlowCycle {
    n: u32,
    i: u32,
    base_src: u32,
    src: u32,
    sport: u16,
    /// The IPv4 header's sum without its source address and checksum:
    /// each frame's checksum adds only the address (a full sum per frame
    /// was a tenth of the generator's time).
    rest_sum: u32,
}

const PORTS_PER_SRC: u16 = 60_000;
const FIRST_SPORT: u16 = 1024;

impl FlowCycle {
    fn new(frame: &mut [u8], n: u32) -> Result<Option<FlowCycle>, String> {
        if n <= 1 {
            return Ok(None);
        }
        if frame.len() < 42 + 16
            || frame[12..14] != [0x08, 0x00]
            || frame[14] != 0x45
            || frame[23] != 17
        {
            return Err(
                "--flows: the frame must be IPv4 without options carrying UDP right after \
                 the Ethernet header, with room for the 16-byte stamp after the UDP header"
                    .into(),
            );
        }
        // No UDP checksum (allowed over IPv4): the port changes per frame.
        frame[40..42].fill(0);
        let base_src = u32::from_be_bytes([frame[26], frame[27], frame[28], frame[29]]);
        let mut hdr = [0u8; 20];
        hdr.copy_from_slice(&frame[14..34]);
        hdr[10..16].fill(0);
        Ok(Some(FlowCycle {
            n,
            i: 0,
            base_src,
            src: base_src,
            sport: FIRST_SPORT,
            rest_sum: sum(&hdr, 0),
        }))
    }

    /// Writes the next flow's source address, port and IPv4 checksum.
    #[inline]
    fn stamp(&mut self, d: &mut [u8]) {
        d[26..30].copy_from_slice(&self.src.to_be_bytes());
        d[34..36].copy_from_slice(&self.sport.to_be_bytes());
        let sum = finish(self.rest_sum + (self.src >> 16) + (self.src & 0xffff));
        d[24..26].copy_from_slice(&sum.to_be_bytes());
        self.i += 1;
        self.sport += 1;
        if self.i == self.n {
            self.i = 0;
            self.src = self.base_src;
            self.sport = FIRST_SPORT;
        } else if self.sport == FIRST_SPORT + PORTS_PER_SRC {
            self.src = self.src.wrapping_add(1);
            self.sport = FIRST_SPORT;
        }
    }
}

const MAGIC: u32 = 0x5256_534c; // "RVSL"
const BURST: usize = 32;
/// Received mbufs kept for sending again.
const SPARE: usize = 512;
/// 10 ns buckets up to 1 ms, then 1 us buckets up to ~101 ms.
const FINE: usize = 100_000;
const COARSE: usize = 100_000;

fn bucket(ns: u64) -> usize {
    if ns < 1_000_000 {
        (ns / 10) as usize
    } else {
        FINE + (((ns - 1_000_000) / 1_000) as usize).min(COARSE - 1)
    }
}

fn bucket_ns(i: usize) -> u64 {
    if i < FINE {
        i as u64 * 10 + 5
    } else {
        1_000_000 + (i - FINE) as u64 * 1_000 + 500
    }
}

fn percentile(h: &[u64], total: u64, p: f64) -> u64 {
    if total == 0 {
        return 0;
    }
    let want = ((total as f64) * p).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in h.iter().enumerate() {
        seen += n;
        if seen >= want {
            return bucket_ns(i);
        }
    }
    bucket_ns(h.len() - 1)
}

/// Keeps a received one-segment mbuf for sending again (freed otherwise).
fn recycle(spare: &mut Vec<Mbuf>, m: Mbuf) {
    if spare.len() < SPARE && m.pkt_len() == m.data().len() as u32 {
        spare.push(m);
    }
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("--frame: odd number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("--frame: {e}")))
        .collect()
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("rvs-loadgen: {e}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> Result<(), String> {
    let mut frame = hex(&a.frame)?;
    if frame.len() < 60 || frame.len() > 9000 {
        return Err(format!(
            "--frame: {} bytes; want 60 to 9000 (the stamp takes the last 16)",
            frame.len()
        ));
    }
    let mut flows = FlowCycle::new(&mut frame, a.flows)?;
    let prefix = format!("loadgen-{}", std::process::id());
    eal::init(&[
        "-l".into(),
        a.cpu.to_string(),
        "--no-pci".into(),
        "--file-prefix".into(),
        prefix,
        "--single-file-segments".into(),
        "-m".into(),
        "512".into(),
        "--log-level".into(),
        "*:error".into(),
    ])?;
    let room = (frame.len().max(2048) + 128) as u16;
    let pool = Mempool::create("loadgen", 16_383, 256, room, -1)?;
    let tx = EthDev::open(&a.tx, 1, 1, 1024, None, pool)?;
    let rx = EthDev::open(&a.rx, 1, 1, 1024, None, pool)?;
    let hz = eal::tsc_hz();
    let t = eal::rdtsc();
    while !(tx.link().0 && rx.link().0) {
        if eal::rdtsc() - t > 10 * hz {
            return Err("the switch's vhost-user ports did not come up within 10 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut burst: arrayvec::ArrayVec<Mbuf, BURST> = arrayvec::ArrayVec::new();
    // Received mbufs are sent again (refilled with the template): the
    // generator's cost per frame stays near testpmd's io forwarding, which
    // allocates nothing either.
    let mut spare: Vec<Mbuf> = Vec::with_capacity(SPARE);
    let fill = |burst: &mut arrayvec::ArrayVec<_, BURST>,
                spare: &mut Vec<Mbuf>,
                f: &[u8]|
     -> Result<(), String> {
        let mut m = match spare.pop() {
            Some(m) => m,
            None => pool.alloc().ok_or("mbuf pool empty")?,
        };
        let (have, want) = (m.data().len(), f.len());
        let fits = if have > want {
            m.trim((have - want) as u16)
        } else {
            m.append((want - have) as u16)
        };
        if !fits {
            return Err("frame larger than an mbuf".into());
        }
        m.data_mut().copy_from_slice(f);
        burst.push(m);
        Ok(())
    };
    if a.learn > 0 {
        let mut back = frame.clone();
        back.copy_within(0..6, 12);
        back.copy_within(6..12, 0);
        back.copy_within(12..18, 6);
        for _ in 0..a.learn.min(BURST) {
            fill(&mut burst, &mut spare, &back)?;
        }
        rx.tx_burst(0, &mut burst);
        burst.clear();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let mut hist = vec![0u64; FINE + COARSE];
    // Nanoseconds per cycle in 32.32 fixed point: a float conversion
    // each way per frame was the receive loop's dearest arithmetic.
    let ns_per_cycle = ((1e9 * (1u64 << 32) as f64) / hz as f64) as u128;
    let start = eal::rdtsc();
    let warm_end = start + (a.warmup * hz as f64) as u64;
    let end = warm_end + (a.window * hz as f64) as u64;
    // What is still in flight when sending stops gets this long to arrive.
    let drain_end = end + hz / 5;
    let per_cycle = a.rate_mpps * 1e6 / hz as f64;
    let (mut sent, mut sent_window, mut refused, mut rx_window, mut rx_other) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut seq, mut warm_said) = (0u32, false);
    let len = frame.len();
    let mut rxb: arrayvec::ArrayVec<Mbuf, BURST> = arrayvec::ArrayVec::new();
    loop {
        let now = eal::rdtsc();
        if now >= drain_end {
            break;
        }
        if !warm_said && now >= warm_end {
            warm_said = true;
            println!("WARM");
        }
        if now < end {
            let due = if a.rate_mpps <= 0.0 {
                BURST as u64
            } else {
                (((now - start) as f64 * per_cycle) as u64)
                    .saturating_sub(sent + refused)
                    .min(BURST as u64)
            };
            for _ in 0..due {
                fill(&mut burst, &mut spare, &frame)?;
                let d = burst.last_mut().expect("pushed").data_mut();
                if let Some(fc) = flows.as_mut() {
                    fc.stamp(d);
                }
                let tail = &mut d[len - 16..];
                tail[0..4].copy_from_slice(&MAGIC.to_be_bytes());
                tail[4..8].copy_from_slice(&seq.to_be_bytes());
                tail[8..16].copy_from_slice(&now.to_ne_bytes());
                seq = seq.wrapping_add(1);
            }
            let n = burst.len() as u64;
            let took = tx.tx_burst(0, &mut burst) as u64;
            sent += took;
            refused += n - took;
            if now >= warm_end {
                sent_window += took;
            }
            // Refused frames are not offered: a paced source would have
            // waited, and as fast as possible means as fast as taken.
            burst.clear();
        }
        let got = rx.rx_burst(0, &mut rxb);
        if got > 0 && a.arrivals {
            let t = eal::rdtsc();
            if t >= warm_end && t < end {
                rx_window += got as u64;
            }
            for m in rxb.drain(..) {
                recycle(&mut spare, m);
            }
        } else if got > 0 {
            let t = eal::rdtsc();
            for m in &rxb {
                m.prefetch_tail(16);
            }
            for m in rxb.drain(..) {
                let d = m.data();
                if d.len() < 16 || d[d.len() - 16..d.len() - 12] != MAGIC.to_be_bytes() {
                    rx_other += 1;
                    continue;
                }
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&d[d.len() - 8..]);
                let sent_at = u64::from_ne_bytes(stamp);
                if sent_at >= warm_end && sent_at < end {
                    rx_window += 1;
                    let ns = ((t.saturating_sub(sent_at) as u128 * ns_per_cycle) >> 32) as u64;
                    hist[bucket(ns)] += 1;
                }
                recycle(&mut spare, m);
            }
        }
        // The sending port may get frames back (a flood, a reply): drop.
        tx.rx_burst(0, &mut rxb);
        rvs_ffi::mbuf::free_burst(&mut rxb);
    }
    let w = a.window;
    println!(
        "RESULT sent={sent_window} received={rx_window} lost={} refused={refused} other={rx_other} \
         offered_mpps={:.4} rx_mpps={:.4} p50_ns={} p99_ns={} p999_ns={} max_ns={}",
        sent_window.saturating_sub(rx_window),
        sent_window as f64 / w / 1e6,
        rx_window as f64 / w / 1e6,
        percentile(&hist, rx_window, 0.50),
        percentile(&hist, rx_window, 0.99),
        percentile(&hist, rx_window, 0.999),
        hist.iter()
            .rposition(|&n| n > 0)
            .map(bucket_ns)
            .unwrap_or(0),
    );
    drop(spare);
    drop(tx);
    drop(rx);
    // Gives the hugepage file back (it would outlive the process).
    eal::cleanup();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_dataplane::wire::checksum::checksum;

    /// A 64-byte Ethernet/IPv4/UDP frame from 10.0.0.1 port 1024.
    fn template() -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&50u16.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 1, 1]);
        f[34..36].copy_from_slice(&1024u16.to_be_bytes());
        f[36..38].copy_from_slice(&4789u16.to_be_bytes());
        f
    }

    #[test]
    fn every_stamped_frame_has_a_valid_header_checksum_and_its_own_tuple() {
        let mut f = template();
        let mut fc = FlowCycle::new(&mut f, 130_001).unwrap().unwrap();
        let mut seen = std::collections::HashSet::new();
        for k in 0..130_001u32 {
            fc.stamp(&mut f);
            assert_eq!(checksum(&f[14..34]), 0, "frame {k}: header checksum");
            let src = u32::from_be_bytes(f[26..30].try_into().unwrap());
            let sport = u16::from_be_bytes([f[34], f[35]]);
            assert_eq!(src, 0x0a00_0001 + k / 60_000, "frame {k}: source");
            assert_eq!(sport as u32, 1024 + k % 60_000, "frame {k}: port");
            assert!(seen.insert((src, sport)), "frame {k} repeats a flow");
        }
        // The cycle starts again with the first flow.
        fc.stamp(&mut f);
        assert_eq!(f[26..30], [10, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), 1024);
        assert_eq!(checksum(&f[14..34]), 0);
    }
}
