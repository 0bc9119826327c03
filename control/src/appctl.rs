//! The ovs-appctl commands rvsd answers, in ovs-vswitchd's output formats
//! where an operator's scripts may parse them.
use crate::reconcile::{Reconciler, OFPP_LOCAL};
use crate::unixctl::Commands;
use rvs_dataplane::packet::PacketBuf;
use rvs_dataplane::snapshot::Switch;
use rvs_dataplane::stats::{DropReason, PmdStats};
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// PMD counters at the last pmd-stats-clear (PMDs own their counters; a
/// clear moves the baseline instead of writing to them).
#[derive(Default, Clone, Copy)]
struct PmdBase {
    rx: u64,
    tx: u64,
    busy: u64,
    idle: u64,
    iterations: u64,
    busy_iterations: u64,
    flood: u64,
    hits: u64,
    misses: u64,
    emc_hits: u64,
    emc_misses: u64,
    mega_hits: u64,
    held: u64,
    recirc: u64,
    drops: [u64; DropReason::ALL.len()],
    /// When these were read (None: rvsd's start).
    at: Option<std::time::Instant>,
}

fn read(s: &PmdStats) -> PmdBase {
    let mut drops = [0; DropReason::ALL.len()];
    for (i, d) in s.drops.iter().enumerate() {
        drops[i] = d.get();
    }
    PmdBase {
        rx: s.rx_packets.get(),
        tx: s.tx_packets.get(),
        busy: s.busy_cycles.get(),
        idle: s.idle_cycles.get(),
        iterations: s.iterations.get(),
        busy_iterations: s.busy_iterations.get(),
        flood: s.flood_packets.get(),
        hits: s.mac_hits.get(),
        misses: s.mac_misses.get(),
        emc_hits: s.emc_hits.get(),
        emc_misses: s.emc_misses.get(),
        mega_hits: s.megaflow_hits.get(),
        held: s.tx_held.get(),
        recirc: s.recirculations.get(),
        drops,
        at: Some(std::time::Instant::now()),
    }
}

fn pct(a: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        a as f64 * 100.0 / total as f64
    }
}

fn per(a: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        a as f64 / n as f64
    }
}

pub struct AppCtx<P: PacketBuf> {
    pub switch: Arc<Switch<P>>,
    pub rec: Arc<Mutex<Reconciler<P>>>,
    pub version: String,
    /// The PMDs' cycle counter frequency (Hz).
    pub tsc_hz: u64,
    /// Stop rvsd; true: with `--cleanup`.
    pub exit: Box<dyn Fn(bool) + Send + Sync>,
}

pub fn register<P: PacketBuf + 'static>(cmds: &mut Commands, ctx: Arc<AppCtx<P>>) {
    let bases: Arc<Mutex<Vec<PmdBase>>> =
        Arc::new(Mutex::new(vec![PmdBase::default(); ctx.switch.pmds.len()]));

    let (c, b) = (ctx.clone(), bases.clone());
    let show = move |_: &[String]| -> Result<String, String> {
        let bases = b.lock().map_err(|_| "lock poisoned")?;
        let mut out = String::new();
        for (i, p) in c.switch.pmds.iter().enumerate() {
            let now = read(&p.stats);
            let base = bases[i];
            let rx = now.rx - base.rx;
            let busy = now.busy - base.busy;
            let idle = now.idle - base.idle;
            let total = busy + idle;
            let _ = writeln!(out, "pmd thread numa_id {} core_id {}:", p.numa, p.core);
            let _ = writeln!(out, "  packets received: {rx}");
            // OVS's two lines: how many passes through the tables a
            // received packet took on average.
            let recirc = now.recirc - base.recirc;
            let _ = writeln!(out, "  packet recirculations: {recirc}");
            let _ = writeln!(
                out,
                "  avg. datapath passes per packet: {:.2}",
                per(rx + recirc, rx)
            );
            let _ = writeln!(out, "  packets sent: {}", now.tx - base.tx);
            // Sent late rather than dropped: a receiver's ring was full.
            let _ = writeln!(out, "  packets held: {}", now.held - base.held);
            let _ = writeln!(out, "  packets flooded: {}", now.flood - base.flood);
            let _ = writeln!(out, "  mac table hits: {}", now.hits - base.hits);
            let _ = writeln!(out, "  mac table misses: {}", now.misses - base.misses);
            // Packets of bridges with flows beyond the default NORMAL one:
            // found in the exact-match cache, in a megaflow, or translated
            // through the classifier (and then cached).
            let _ = writeln!(out, "  emc hits: {}", now.emc_hits - base.emc_hits);
            let mega = now.mega_hits - base.mega_hits;
            let _ = writeln!(out, "  megaflow hits: {mega}");
            let _ = writeln!(
                out,
                "  classifier lookups: {}",
                (now.emc_misses - base.emc_misses).saturating_sub(mega)
            );
            let dropped: u64 = now
                .drops
                .iter()
                .zip(base.drops.iter())
                .map(|(a, b)| a - b)
                .sum();
            let _ = writeln!(out, "  packets dropped: {dropped}");
            for r in DropReason::ALL {
                let _ = writeln!(
                    out,
                    "    {}: {}",
                    r.name(),
                    now.drops[r as usize] - base.drops[r as usize]
                );
            }
            let _ = writeln!(out, "  idle cycles: {idle} ({:.2}%)", pct(idle, total));
            let _ = writeln!(
                out,
                "  processing cycles: {busy} ({:.2}%)",
                pct(busy, total)
            );
            let _ = writeln!(
                out,
                "  avg cycles per packet: {:.2} ({total}/{rx})",
                per(total, rx)
            );
            let _ = writeln!(
                out,
                "  avg processing cycles per packet: {:.2} ({busy}/{rx})",
                per(busy, rx)
            );
            // How full the bursts are: a PMD with time to spare polls
            // sooner and takes fewer packets per poll.
            let its = now.busy_iterations - base.busy_iterations;
            let _ = writeln!(
                out,
                "  avg packets per busy iteration: {:.2} ({rx}/{its})",
                per(rx, its)
            );
        }
        Ok(out)
    };
    let show = Arc::new(show);
    for name in ["pmd-stats-show", "dpif-netdev/pmd-stats-show"] {
        let s = show.clone();
        cmds.add(name, "[-pmd core] [dp]", 0, 3, Box::new(move |a| s(a)));
    }

    // OVS's pmd-perf-show summary: how long a loop iteration takes and
    // how the cycles split between idle polls and work, which is what
    // sets the latency of a lone packet (it waits half an iteration on
    // average before it is polled).
    let (c, b) = (ctx.clone(), bases.clone());
    let started = std::time::Instant::now();
    let perf = move |_: &[String]| -> Result<String, String> {
        let bases = b.lock().map_err(|_| "lock poisoned")?;
        let now_wall = std::time::Instant::now();
        let since = bases.first().and_then(|b| b.at).unwrap_or(started);
        let secs = now_wall.duration_since(since).as_secs_f64();
        let mut out = String::new();
        let _ = writeln!(out, "Measurement duration: {secs:.3} s\n");
        for (i, p) in c.switch.pmds.iter().enumerate() {
            let now = read(&p.stats);
            let base = bases[i];
            let its = now.iterations - base.iterations;
            let busy_its = now.busy_iterations - base.busy_iterations;
            let (busy, idle) = (now.busy - base.busy, now.idle - base.idle);
            let used = busy + idle;
            let total = (secs * c.tsc_hz as f64) as u64;
            let (rx, tx) = (now.rx - base.rx, now.tx - base.tx);
            let us_per = |cycles: u64, n: u64| per(cycles, n) * 1e6 / c.tsc_hz.max(1) as f64;
            let _ = writeln!(out, "pmd thread numa_id {} core_id {}:\n", p.numa, p.core);
            let _ = writeln!(
                out,
                "  Iterations: {its:>20}  ({:.2} us/it)",
                secs * 1e6 / its.max(1) as f64
            );
            let _ = writeln!(
                out,
                "  - Used TSC cycles: {used:>14}  ({:5.1} % of total cycles)",
                pct(used, total)
            );
            let _ = writeln!(
                out,
                "  - idle iterations: {:>14}  ({:5.1} % of used cycles, {:.0} cycles/it, {:.3} us/it)",
                its - busy_its,
                pct(idle, used),
                per(idle, its - busy_its),
                us_per(idle, its - busy_its)
            );
            let _ = writeln!(
                out,
                "  - busy iterations: {busy_its:>14}  ({:5.1} % of used cycles, {:.0} cycles/it, {:.3} us/it)",
                pct(busy, used),
                per(busy, busy_its),
                us_per(busy, busy_its)
            );
            let _ = writeln!(
                out,
                "  Rx packets: {rx:>21}  ({:.0} Kpps, {:.0} cycles/pkt)",
                rx as f64 / secs.max(1e-9) / 1e3,
                per(busy, rx)
            );
            let _ = writeln!(
                out,
                "  Tx packets: {tx:>21}  ({:.0} Kpps)",
                tx as f64 / secs.max(1e-9) / 1e3
            );
        }
        Ok(out)
    };
    cmds.add(
        "dpif-netdev/pmd-perf-show",
        "[-nh] [-it iter-history-len] [-ms ms-history-len] [-pmd core] [dp]",
        0,
        8,
        Box::new(perf),
    );

    let (c, b) = (ctx.clone(), bases.clone());
    let clear = Arc::new(move |_: &[String]| -> Result<String, String> {
        let mut bases = b.lock().map_err(|_| "lock poisoned")?;
        for (i, p) in c.switch.pmds.iter().enumerate() {
            bases[i] = read(&p.stats);
        }
        Ok(String::new())
    });
    for name in ["pmd-stats-clear", "dpif-netdev/pmd-stats-clear"] {
        let s = clear.clone();
        cmds.add(name, "[-pmd core] [dp]", 0, 3, Box::new(move |a| s(a)));
    }

    let c = ctx.clone();
    let rxq = Arc::new(move |_: &[String]| -> Result<String, String> {
        let snap = c.switch.snap.load();
        let mut out = String::new();
        for p in &c.switch.pmds {
            let _ = writeln!(out, "pmd thread numa_id {} core_id {}:", p.numa, p.core);
            let _ = writeln!(out, "  isolated : false");
            for q in snap.rxqs.get(p.index).into_iter().flatten() {
                if let Some(port) = snap.port(q.slot) {
                    // As OVS: a vhost-user queue the guest has not enabled
                    // is listed, disabled (the PMD skips it).
                    let state = if port.dev.rxq_live(q.queue) {
                        "(enabled) "
                    } else {
                        "(disabled)"
                    };
                    let _ = writeln!(
                        out,
                        "  port: {:<16}  queue-id: {:>2} {state}  pmd usage: NOT AVAIL",
                        port.name, q.queue
                    );
                }
            }
        }
        Ok(out)
    });
    for name in ["pmd-rxq-show", "dpif-netdev/pmd-rxq-show"] {
        let s = rxq.clone();
        cmds.add(name, "[-pmd core] [dp]", 0, 3, Box::new(move |a| s(a)));
    }

    let c = ctx.clone();
    cmds.add(
        "fdb/show",
        "bridge",
        1,
        1,
        Box::new(move |a| {
            let rec = c.rec.lock().map_err(|_| "lock poisoned")?;
            let br = rec
                .bridges
                .get(&a[0])
                .ok_or_else(|| "no such bridge".to_string())?;
            let ofports: std::collections::HashMap<u16, i64> = rec
                .bridge_ports(&a[0])
                .into_iter()
                .map(|(of, _, slot)| (slot, of))
                .collect();
            let mut out = String::from(" port  VLAN  MAC                Age\n");
            for e in br.macs.entries(c.switch.now_secs()) {
                let port = match ofports.get(&e.port) {
                    Some(&OFPP_LOCAL) => "LOCAL".to_string(),
                    Some(of) => of.to_string(),
                    None => continue,
                };
                let _ = writeln!(out, "{:>5}  {:>4}  {}  {:>3}", port, e.vlan, e.mac, e.age);
            }
            Ok(out)
        }),
    );

    let c = ctx.clone();
    cmds.add(
        "fdb/flush",
        "[bridge]",
        0,
        1,
        Box::new(move |a| {
            let rec = c.rec.lock().map_err(|_| "lock poisoned")?;
            match a.first() {
                Some(b) => rec
                    .bridges
                    .get(b)
                    .ok_or_else(|| "no such bridge".to_string())?
                    .macs
                    .flush(),
                None => rec.bridges.values().for_each(|b| b.macs.flush()),
            }
            Ok("table successfully flushed\n".into())
        }),
    );

    let c = ctx.clone();
    cmds.add(
        "qos/show",
        "interface",
        1,
        1,
        Box::new(move |a| {
            let rec = c.rec.lock().map_err(|_| "lock poisoned")?;
            let lp = rec
                .ports
                .get(&a[0])
                .ok_or_else(|| format!("no such interface {}", a[0]))?;
            qos_show(&a[0], lp)
        }),
    );

    let c = ctx.clone();
    cmds.add(
        "dpif/show",
        "",
        0,
        0,
        Box::new(move |_| {
            let rec = c.rec.lock().map_err(|_| "lock poisoned")?;
            let (hits, misses) = c.switch.pmds.iter().fold((0, 0), |(h, m), p| {
                (h + p.stats.mac_hits.get(), m + p.stats.mac_misses.get())
            });
            let mut out = format!("netdev@ovs-netdev: hit:{hits} missed:{misses}\n");
            for b in rec.bridges.keys() {
                let _ = writeln!(out, "  {b}:");
                // By name, as ovs-vswitchd lists them.
                let mut ports = rec.bridge_ports(b);
                ports.sort_by(|x, y| x.1.cmp(&y.1));
                for (of, name, slot) in ports {
                    let kind = rec
                        .ports
                        .get(&name)
                        .map(|p| {
                            if p.spec.kind.is_empty() {
                                "system".to_string()
                            } else {
                                p.spec.kind.clone()
                            }
                        })
                        .unwrap_or_default();
                    let kind = if kind == "internal" {
                        "tap".to_string()
                    } else {
                        kind
                    };
                    let _ = writeln!(out, "    {name} {of}/{slot}: ({kind})");
                }
            }
            Ok(out)
        }),
    );

    let c = ctx.clone();
    cmds.add(
        "dpctl/show",
        "[-s] [dp]",
        0,
        2,
        Box::new(move |a| dpctl_show(&c, a.iter().any(|x| x == "-s" || x == "--statistics"))),
    );

    let c = ctx.clone();
    cmds.add(
        "ofproto/trace",
        "BRIDGE FLOW",
        2,
        2,
        Box::new(move |a| trace(&c.switch, &a[0], &a[1])),
    );

    let v = ctx.version.clone();
    cmds.add("version", "", 0, 0, Box::new(move |_| Ok(format!("{v}\n"))));
    let c = ctx.clone();
    cmds.add(
        "exit",
        "[--cleanup]",
        0,
        1,
        Box::new(move |a| match a.first().map(String::as_str) {
            None => {
                (c.exit)(false);
                Ok(String::new())
            }
            Some("--cleanup") => {
                (c.exit)(true);
                Ok(String::new())
            }
            Some(other) => Err(format!("exit: unknown option '{other}' (only --cleanup)")),
        }),
    );
}

/// `qos/show IFACE`: OVS's first lines (type, max-rate), then what rvs
/// enforces: the shaper's rate and bucket, the ingress policer, and the
/// frames each dropped.
fn qos_show<P: PacketBuf>(
    name: &str,
    lp: &crate::reconcile::LivePort<P>,
) -> Result<String, String> {
    use std::sync::atomic::Ordering::Relaxed;
    let q = &lp.spec.qos;
    if q.policing.is_none() && !matches!(q.shaping, Ok(Some(_)) | Err(_)) {
        return Err(format!("QoS not configured on {name}"));
    }
    let mut out = String::new();
    match (&q.shaping, &lp.qos.shaper) {
        (Ok(Some(s)), Some(b)) => {
            let _ = writeln!(out, "QoS: {name} {}", s.kind);
            let _ = writeln!(out, "max-rate: {}", s.max_rate);
            let _ = writeln!(out, "burst: {}", s.burst * 8);
            let _ = writeln!(
                out,
                "{}: {}",
                if s.queue {
                    "queue-full drops"
                } else {
                    "policed drops"
                },
                b.dropped.load(Relaxed)
            );
        }
        (Err(e), _) => {
            let _ = writeln!(out, "QoS: {name} refused: {e}");
        }
        _ => {}
    }
    if let (Some((rate, burst)), Some(b)) = (q.policing, &lp.qos.policer) {
        let burst = if burst == 0 { 8000 } else { burst };
        let _ = writeln!(out, "ingress_policing_rate: {rate}");
        let _ = writeln!(out, "ingress_policing_burst: {burst}");
        let _ = writeln!(out, "ingress policed drops: {}", b.dropped.load(Relaxed));
    }
    Ok(out)
}

/// `ofproto/trace BRIDGE FLOW`: the tables a packet would go through, the
/// rules it would hit and what would be done to it, as OVS shows it.
fn trace<P: PacketBuf>(sw: &Switch<P>, bridge: &str, flow: &str) -> Result<String, String> {
    use rvs_dataplane::flow::xlate::{trace, DpOp};
    let key = crate::openflow::flow_text::parse(flow)?;
    let snap = sw.snap.load();
    let b = snap
        .bridges
        .iter()
        .find(|b| &*b.name == bridge)
        .ok_or_else(|| format!("{bridge}: no such bridge"))?;
    let in_port = key.get(rvs_dataplane::flow::key::Field::InPort) as u32;
    let in_slot = b.ofport_slot.get(&in_port).copied().unwrap_or(u16::MAX);
    let pipe = b.flows.published.load();
    let (x, steps) = trace(&pipe, b, in_slot, &key);
    let ofport = |slot: &u16| {
        snap.port(*slot)
            .map(|p| p.ofport.to_string())
            .unwrap_or_else(|| format!("slot{slot}"))
    };
    fn ops(o: &[DpOp], ofport: &dyn Fn(&u16) -> String) -> Vec<String> {
        o.iter()
            .map(|op| match op {
                DpOp::Output(s) => ofport(s),
                DpOp::Normal => "NORMAL".into(),
                DpOp::Clone(sub) => format!("clone({})", ops(sub, ofport).join(",")),
                DpOp::FastFailover(alts) => format!(
                    "ff({})",
                    alts.iter()
                        .map(|(_, sub)| ops(sub, ofport).join(","))
                        .collect::<Vec<_>>()
                        .join(";")
                ),
                DpOp::Controller(r) => format!("userspace(controller,reason={r})"),
                DpOp::SetTunnel(t) => {
                    let mut s = format!("set(tunnel(tun_id={:#x}", t.id);
                    if t.src != 0 {
                        s += &format!(",src={}", std::net::Ipv4Addr::from(t.src));
                    }
                    if t.dst != 0 {
                        s += &format!(",dst={}", std::net::Ipv4Addr::from(t.dst));
                    }
                    s + "))"
                }
                other => format!("{other:?}"),
            })
            .collect()
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Flow: {flow}\n\nbridge(\"{bridge}\")\n{}",
        "-".repeat(bridge.len() + 8)
    );
    for s in &steps {
        let _ = writeln!(out, " {s}");
    }
    let acts = ops(&x.ops, &ofport);
    let _ = writeln!(
        out,
        "\nDatapath actions: {}",
        if acts.is_empty() {
            "drop".to_string()
        } else {
            acts.join(",")
        }
    );
    if let Some(r) = x.drop {
        let _ = writeln!(out, "Dropped: {}", r.name());
    }
    Ok(out)
}

/// ovs-appctl dpctl/show [-s], as dpctl.c prints it for the netdev
/// datapath: the datapath's cache hits and misses, then every port by
/// datapath port number (rvs's slot) with, under -s, its counters. The
/// `flows:` line is left out: rvs's flow caches are per PMD and not
/// counted in one place.
fn dpctl_show<P: PacketBuf + 'static>(c: &AppCtx<P>, stats: bool) -> Result<String, String> {
    let rec = c.rec.lock().map_err(|_| "lock poisoned")?;
    let (mut hit, mut missed) = (0, 0);
    for p in &c.switch.pmds {
        let s = &p.stats;
        hit += s.mac_hits.get() + s.emc_hits.get() + s.megaflow_hits.get();
        missed += s.mac_misses.get() + s.emc_misses.get().saturating_sub(s.megaflow_hits.get());
    }
    let mut out = format!("netdev@ovs-netdev:\n  lookups: hit:{hit} missed:{missed} lost:0\n");
    let mut ports: Vec<_> = rec.ports.values().collect();
    ports.sort_by_key(|p| p.slot);
    for p in ports {
        let kind = match p.spec.kind.as_str() {
            "" | "system" => String::new(),
            "internal" => " (tap)".to_string(),
            k => format!(" ({k})"),
        };
        let _ = writeln!(out, "  port {}: {}{kind}", p.slot, p.spec.name);
        if !stats {
            continue;
        }
        let t = rec.port_stats(p);
        let _ = writeln!(
            out,
            "    RX packets:{} errors:0 dropped:{} overruns:0 frame:0",
            t.rx_packets, t.rx_dropped
        );
        let _ = writeln!(
            out,
            "    TX packets:{} errors:0 dropped:{} aborted:0 carrier:0",
            t.tx_packets, t.tx_dropped
        );
        let _ = writeln!(out, "    collisions:0");
        let _ = writeln!(
            out,
            "    RX bytes:{}{}  TX bytes:{}{}",
            t.rx_bytes,
            human_size(t.rx_bytes),
            t.tx_bytes,
            human_size(t.tx_bytes)
        );
    }
    Ok(out)
}

/// dpctl.c's print_human_size.
fn human_size(v: u64) -> String {
    const K: f64 = 1024.0;
    let f = v as f64;
    if f >= K * K * K * K {
        format!(" ({:.1} TiB)", f / (K * K * K * K))
    } else if f >= K * K * K {
        format!(" ({:.1} GiB)", f / (K * K * K))
    } else if f >= K * K {
        format!(" ({:.1} MiB)", f / (K * K))
    } else if f >= K {
        format!(" ({:.1} KiB)", f / K)
    } else {
        String::new()
    }
}
