//! rvs-bench: rvs and OVS-DPDK side by side, and testpmd's plain forwarding
//! as the ceiling, on this machine, in one run.
//!
//! Method (no NIC): a generator dpdk-testpmd on CPU 0 with two virtio-user
//! ports, each reflecting what it receives (macswap, loop topology), keeps
//! frames circling through the switch under test,
//! whose one PMD is pinned to CPU 1: testpmd -> switch -> testpmd -> ...
//! Both switches get the same database written with ovs-vsctl. Throughput is
//! what the generator receives per second over a fixed window after a
//! warm-up; cycles per packet come from each switch's own pmd-stats-show,
//! and the ceiling's from testpmd's --record-core-cycles.
//! Switches alternate within every run; medians and spread are reported.
use clap::Parser;
use rvs_tests::{Host, TestPmd};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "rvs-bench",
    about = "rvs vs OVS-DPDK vs testpmd ceiling, same machine, same run"
)]
struct Args {
    /// Scenarios: normal (MAC learning, port to port), vlan (the same with
    /// both ports access ports of VLAN 10), l2 (port-to-port OpenFlow
    /// rules written with ovs-ofctl: in_port=1->2, in_port=2->1), gre and
    /// vxlan (every frame is encapsulated on one pass through the switch
    /// and decapsulated on the next: see `tunnel_ports`), nat, pf and lb
    /// (identical ct()/group flows on both switches: see `service_flows`;
    /// a `-mf` suffix makes the generator vary the source address, 256
    /// connections instead of one); flows-1k, flows-100k, flows-1m (the
    /// l2 rules, that many distinct 5-tuples) and nat-100k, pf-100k,
    /// lb-100k: a `-<N>k`/`-<N>m` suffix sends N distinct UDP flows from
    /// rvs-loadgen into p0, one way (see `one_way_stream`); gre-encap,
    /// gre-decap, vxlan-encap, vxlan-decap: the tunnel configuration with
    /// one-way traffic from rvs-loadgen, plain frames into the VM port or
    /// encapsulated ones into the "NIC" port (see `one_way`).
    #[arg(long, value_delimiter = ',', default_value = "normal,vlan,l2")]
    scenarios: Vec<String>,
    /// Frame sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    sizes: Vec<usize>,
    /// Switches: ceiling, ovs, rvs; rvs-b is a second rvsd build (RVSD_B)
    /// for A/B runs, reported per run only.
    #[arg(long, value_delimiter = ',', default_value = "ceiling,ovs,rvs")]
    switches: Vec<String>,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of warm-up before the window.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    window: u64,
    /// Append the table here.
    #[arg(long, default_value = "benches/RESULTS.md")]
    results: String,
    /// Draw the throughput table here (SVG: ceiling, OVS-DPDK, rvs per scenario).
    #[arg(long, default_value = "benches/results.svg")]
    plot: String,
    /// Ports added and then removed with ovs-vsctl per switch to time the
    /// control plane (0: skip).
    #[arg(long, default_value_t = 20)]
    port_ops: usize,
    /// Flows loaded with one `ovs-ofctl add-flows` (then removed with one
    /// `del-flows`) per switch to time flow-mods (0: skip).
    #[arg(long, default_value_t = 20_000)]
    flow_mods: usize,
    /// Loads (percent of each switch's median Mpps in that scenario) at
    /// which rvs-loadgen measures one-way latency and loss (the flag alone: skip).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "10,50,90")]
    latency_loads: Vec<f64>,
    /// One more latency run per switch at this many Mpps, the same for
    /// every switch (0: none): what each spends per packet carrying the
    /// same traffic, below both maxima.
    #[arg(long, default_value_t = 0.0)]
    equal_rate_mpps: f64,
    /// Seconds measured per latency load (after 1 s of warm-up).
    #[arg(long, default_value_t = 3.0)]
    latency_window: f64,
    /// Open_vSwitch other_config settings (KEY=VALUE) for `rvs` only, not
    /// `rvs-b`: with RVSD_B the same binary, an A/B of a setting.
    #[arg(long, value_delimiter = ',')]
    rvs_other_config: Vec<String>,
    /// Seconds of `rvs-c2c --mode read` on CPUs 0 and 1 before and after
    /// each run (0: skip): what the host charges the PMD's core, at that
    /// moment, per cache line the generator's core wrote (see `line_price`).
    #[arg(long, default_value_t = 0.5)]
    line_probe: f64,
}

/// `--rvs-other-config`, for the hosts that start `rvs`.
static RVS_OTHER_CONFIG: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Seconds for `ovs-ofctl add-flows` of `n` distinct flows, and for the
/// `del-flows` that removes them, on switch `kind`.
fn flow_mod_time(kind: &str, n: usize) -> (f64, f64) {
    let h = switch_host(kind, "fm");
    let file = h.dir.join("bench.flows");
    let flows: String = (0..n)
        .map(|i| {
            format!(
                "priority=10,ip,nw_src=10.{}.{}.{},tcp,tp_dst=80,actions=output:1\n",
                i >> 16 & 255,
                i >> 8 & 255,
                i & 255
            )
        })
        .collect();
    std::fs::write(&file, flows).expect("flow file");
    let t = Instant::now();
    h.ofctl(&["add-flows", "br0", file.to_str().unwrap()]);
    let add = t.elapsed().as_secs_f64();
    let t = Instant::now();
    h.ofctl(&["del-flows", "br0", "ip"]);
    (add, t.elapsed().as_secs_f64())
}

/// Median add-port and del-port latency (ms) through ovs-vsctl, which
/// returns once the switch has applied the change (cur_cfg).
fn port_latency(kind: &str, n: usize) -> (f64, f64) {
    let h = switch_host(kind, "ctl");
    let time = |args: &[&str]| {
        let t = Instant::now();
        h.vsctl(args);
        t.elapsed().as_secs_f64() * 1e3
    };
    let mut adds: Vec<f64> = (0..n)
        .map(|i| {
            let p = format!("c{i}");
            time(&[
                "add-port",
                "br0",
                &p,
                "--",
                "set",
                "Interface",
                &p,
                "type=dpdkvhostuser",
            ])
        })
        .collect();
    let mut dels: Vec<f64> = (0..n)
        .map(|i| time(&["del-port", &format!("c{i}")]))
        .collect();
    (median(&mut adds), median(&mut dels))
}

/// A grouped bar chart of Mpps per scenario and size, as plain SVG.
fn svg(rows: &[(String, f64, f64, f64)]) -> String {
    let (w, h, left, bottom, top) = (
        (120.0 * rows.len().max(1) as f64 + 80.0).max(520.0),
        360.0,
        50.0,
        50.0,
        30.0,
    );
    let max = rows
        .iter()
        .flat_map(|r| [r.1, r.2, r.3])
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.1;
    let y = |v: f64| h - bottom - (v / max) * (h - bottom - top);
    let mut o = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n");
    let _ = writeln!(o, "<text x=\"{left}\" y=\"18\" font-size=\"13\">Mpps through one PMD core (median): ceiling, OVS-DPDK 3.1, rvs</text>");
    let _ = writeln!(
        o,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - bottom,
        w - 10.0,
        h - bottom
    );
    for (i, (label, ce, ov, rv)) in rows.iter().enumerate() {
        let x0 = left + 10.0 + i as f64 * 120.0;
        for (j, (v, color)) in [(*ce, "#999999"), (*ov, "#d62728"), (*rv, "#1f77b4")]
            .iter()
            .enumerate()
        {
            if !v.is_finite() {
                continue;
            }
            let x = x0 + j as f64 * 32.0;
            let _ = writeln!(
                o,
                "<rect x=\"{x}\" y=\"{:.1}\" width=\"28\" height=\"{:.1}\" fill=\"{color}\"/>",
                y(*v),
                h - bottom - y(*v)
            );
            let _ = writeln!(
                o,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"middle\">{v:.1}</text>",
                x + 14.0,
                y(*v) - 3.0
            );
        }
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            x0 + 46.0,
            h - bottom + 16.0
        );
    }
    for (k, (name, color)) in [
        ("ceiling (testpmd io)", "#999999"),
        ("OVS-DPDK", "#d62728"),
        ("rvs", "#1f77b4"),
    ]
    .iter()
    .enumerate()
    {
        let x = left + k as f64 * 150.0;
        let _ = writeln!(o, "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{name}</text>", h - 20.0, x + 14.0, h - 11.0);
    }
    o.push_str("</svg>\n");
    o
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    mpps: f64,
    cycles_per_pkt: Option<f64>,
    /// Share of the PMD's cycles spent in turns that received nothing: a
    /// switch that idles (or only waits on a full guest ring) was held
    /// back by the generator, and its Mpps is the generator's, not its own.
    idle_pct: Option<f64>,
    /// The host's price per cache line another core wrote, just before
    /// and just after the run (`line_price`): the host's state can change
    /// within seconds, so only a pair that agrees places the run in one.
    line_cycles: [Option<f64>; 2],
}

impl Sample {
    fn from_stats(mpps: f64, stats: Option<String>) -> Sample {
        Sample {
            mpps,
            cycles_per_pkt: stats.as_deref().and_then(cycles),
            idle_pct: stats.as_deref().and_then(idle_pct),
            line_cycles: [None; 2],
        }
    }
}

const MAC0: &str = "02:00:00:00:00:01";
const MAC1: &str = "02:00:00:00:00:02";

/// N in a scenario's `-<N>k` / `-<N>m` suffix.
fn flow_count(scenario: &str) -> Option<usize> {
    let tail = scenario.rsplit('-').next()?;
    let (n, mul) = if let Some(n) = tail.strip_suffix('k') {
        (n, 1_000)
    } else if let Some(n) = tail.strip_suffix('m') {
        (n, 1_000_000)
    } else {
        return None;
    };
    n.parse::<usize>().ok().map(|n| n * mul)
}

/// The scenario without its generator suffix.
fn base(scenario: &str) -> &str {
    let s = scenario.trim_end_matches("-mf");
    match flow_count(s) {
        Some(_) => s.rsplit_once('-').map_or(s, |(b, _)| b),
        None => s,
    }
}

fn mac_bytes(m: &str) -> Vec<u8> {
    m.split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// The scenarios' frame: UDP 198.19.0.1:1024 -> 198.18.0.2:9, `size`
/// bytes. rvs-loadgen --flows N steps its source address and port through
/// N distinct pairs.
fn flow_frame(size: usize) -> Vec<u8> {
    let mut f = vec![0u8; size.max(60)];
    f[0..6].copy_from_slice(&mac_bytes(MAC1));
    f[6..12].copy_from_slice(&mac_bytes(MAC0));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (f.len() - 14) as u16;
    f[14..34].copy_from_slice(&ipv4_header(
        ip_len,
        17,
        [198, 19, 0, 1],
        0xc612_0002u32.to_be_bytes(),
    ));
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&1024u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// An IPv4 header without options, its checksum filled in.
fn ipv4_header(total_len: u16, proto: u8, src: [u8; 4], dst: [u8; 4]) -> [u8; 20] {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = rvs_dataplane::wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip
}

/// `inner` as tunnel tB receives it (`tunnel_ports`): from 10.99.0.1 to
/// 10.99.0.2 with key/VNI 7, to the underlay bridge's MAC `dst`.
fn tunnel_frame(kind: &str, inner: &[u8], dst: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(inner.len() + 64);
    f.extend_from_slice(dst);
    f.extend_from_slice(&mac_bytes(MAC1));
    f.extend_from_slice(&[0x08, 0x00]);
    let hdr: Vec<u8> = if kind == "gre" {
        // Key present, transparent Ethernet bridging, key 7.
        vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 7]
    } else {
        let udp_len = (16 + inner.len()) as u16;
        let mut h = vec![0xc0, 0x00, 0x12, 0xb5];
        h.extend_from_slice(&udp_len.to_be_bytes());
        // No UDP checksum (RFC 7348 allows it over IPv4); VNI 7, I flag.
        h.extend_from_slice(&[0, 0, 0x08, 0, 0, 0, 0, 0, 7, 0]);
        h
    };
    let total = (20 + hdr.len() + inner.len()) as u16;
    let proto = if kind == "gre" { 47 } else { 17 };
    f.extend_from_slice(&ipv4_header(total, proto, [10, 99, 0, 1], [10, 99, 0, 2]));
    f.extend_from_slice(&hdr);
    f.extend_from_slice(inner);
    f
}

/// `gre-encap` -> ("gre", true); `vxlan-decap` -> ("vxlan", false).
fn one_way(scenario: &str) -> Option<(&str, bool)> {
    let (kind, dir) = scenario.split_once('-')?;
    if !["gre", "vxlan"].contains(&kind) {
        return None;
    }
    match dir {
        "encap" => Some((kind, true)),
        "decap" => Some((kind, false)),
        _ => None,
    }
}

/// The tunnel (gre or vxlan) a scenario configures, if any.
fn tunnel_kind(scenario: &str) -> Option<&str> {
    match scenario {
        "gre" | "vxlan" => Some(scenario),
        _ => one_way(scenario).map(|(k, _)| k),
    }
}

/// One-way traffic from rvs-loadgen: which of the switch's sockets it
/// sends into and receives from, and the frame.
struct OneWay {
    tx: String,
    rx: String,
    frame: Vec<u8>,
    /// Distinct 5-tuples rvs-loadgen cycles through (`flow_frame`).
    flows: usize,
}

/// The one-way stream for `scenario`: the scenario's usual frame from p0 to
/// p1; for `-encap` a plain frame into the VM port p0, received
/// encapsulated on the "NIC" p1; for `-decap` an encapsulated frame (to
/// `bridge_mac`, the underlay bridge's) into p1, received plain on p0.
fn one_way_stream(dir: &std::path::Path, size: usize, scenario: &str, bridge_mac: &[u8]) -> OneWay {
    let p0 = rvs_tests::virtio_user(0, &dir.join("p0"), MAC0);
    let p1 = rvs_tests::virtio_user(1, &dir.join("p1"), MAC1);
    let inner = flow_frame(size);
    match one_way(scenario) {
        Some((kind, false)) => OneWay {
            tx: p1,
            rx: p0,
            frame: tunnel_frame(kind, &inner, bridge_mac),
            flows: 1,
        },
        _ => OneWay {
            tx: p0,
            rx: p1,
            frame: inner,
            flows: flow_count(scenario).unwrap_or(1),
        },
    }
}

/// What one rvs-loadgen run saw.
#[derive(Clone, Copy, Debug, Default)]
struct LoadResult {
    sent: u64,
    received: u64,
    offered_mpps: f64,
    rx_mpps: f64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    /// Frames the switch counted as dropped over the window and, for rvs,
    /// how many of them a receiver's full ring took (None: no switch).
    /// (dropped, of them a receiver's full ring, held for a full ring).
    switch_dropped: Option<(u64, u64, u64)>,
    /// The PMD's busy cycles over the frames it received in the window
    /// (pmd-stats-show's processing cycles and packets received, both
    /// switches), None without a switch.
    switch_cycles: Option<f64>,
}

/// Runs rvs-loadgen at `rate_mpps` (0: as fast as it goes); `on_warm`
/// runs when its window opens.
fn loadgen(
    ow: &OneWay,
    rate_mpps: f64,
    arrivals: bool,
    warmup: f64,
    window: f64,
    on_warm: &mut dyn FnMut(),
) -> LoadResult {
    use std::io::BufRead;
    let exe = std::env::current_exe()
        .expect("own path")
        .with_file_name("rvs-loadgen");
    let frame: String = ow.frame.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = std::process::Command::new(&exe)
        .args(["--tx", &ow.tx, "--rx", &ow.rx, "--frame", &frame])
        .args(["--rate-mpps", &rate_mpps.to_string()])
        .args(["--flows", &ow.flows.to_string()])
        .args(arrivals.then_some("--arrivals"))
        .args([
            "--warmup",
            &warmup.to_string(),
            "--window",
            &window.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --release --workspace)", exe.display()));
    let out = child.stdout.take().expect("piped");
    let mut r = LoadResult::default();
    let mut result = false;
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        if line == "WARM" {
            on_warm();
        } else if let Some(rest) = line.strip_prefix("RESULT ") {
            result = true;
            for kv in rest.split_whitespace() {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let (u, f) = (
                    v.parse::<u64>().unwrap_or(0),
                    v.parse::<f64>().unwrap_or(0.0),
                );
                match k {
                    "sent" => r.sent = u,
                    "received" => r.received = u,
                    "offered_mpps" => r.offered_mpps = f,
                    "rx_mpps" => r.rx_mpps = f,
                    "p50_ns" => r.p50_ns = u,
                    "p99_ns" => r.p99_ns = u,
                    "p999_ns" => r.p999_ns = u,
                    _ => {}
                }
            }
        }
    }
    let st = child.wait().expect("rvs-loadgen exit");
    assert!(st.success() && result, "rvs-loadgen failed ({st})");
    r
}

/// The loop scenarios' generator: testpmd with two virtio-user ports on
/// the switch's sockets p0 and p1. Many-flow scenarios use rvs-loadgen
/// instead (`one_way_stream`): frames a loop keeps circling cannot carry
/// 100,000 connections.
fn generator(h_dir: &std::path::Path, size: usize, scenario: &str) -> TestPmd {
    let p0 = rvs_tests::virtio_user(0, &h_dir.join("p0"), MAC0);
    let p1 = rvs_tests::virtio_user(1, &h_dir.join("p1"), MAC1);
    // Each generator port reflects what it receives (macswap, loop
    // topology), so frames circle testpmd -> switch -> testpmd. Through
    // NAT it swaps addresses and ports too (5tswap): what comes back is
    // the connection's reply, as a server's answer would be.
    let mut app = vec![
        "-i",
        "--nb-cores=1",
        if is_service(scenario) {
            "--forward-mode=5tswap"
        } else {
            "--forward-mode=macswap"
        },
        "--port-topology=loop",
        "--rxd=1024",
        "--txd=1024",
        "--total-num-mbufs=32768",
    ];
    if scenario.ends_with("-mf") {
        app.push("--txonly-multi-flow");
    }
    let mut tp = TestPmd::virtio("gen", &[p0, p1], 1024, &app);
    tp.cmd("stop");
    tp.cmd(&format!("set eth-peer 0 {MAC1}"));
    tp.cmd(&format!("set eth-peer 1 {MAC0}"));
    tp.cmd(&format!("set txpkts {size}"));
    tp.cmd("set burst 32");
    tp
}

/// Runs an ovs-appctl command against the switch under test.
type Appctl<'a> = &'a dyn Fn(&[&str]) -> String;

/// Where a scenario's traffic comes from: testpmd (loops) or rvs-loadgen
/// (one-way tunnel and many-flow scenarios).
enum Source {
    Pmd(TestPmd),
    Load(OneWay),
}

impl Source {
    fn quit(self) {
        if let Source::Pmd(tp) = self {
            tp.quit();
        }
    }
}

fn source(dir: &std::path::Path, size: usize, scenario: &str, bridge_mac: &[u8]) -> Source {
    if one_way(scenario).is_some() || flow_count(scenario).is_some() {
        Source::Load(one_way_stream(dir, size, scenario, bridge_mac))
    } else {
        Source::Pmd(generator(dir, size, scenario))
    }
}

fn measure(src: &mut Source, a: &Args, pmd_stats: Option<Appctl>) -> Sample {
    let tp = match src {
        Source::Pmd(tp) => tp,
        Source::Load(ow) => {
            let mut clear = || {
                if let Some(ctl) = pmd_stats {
                    ctl(&["dpif-netdev/pmd-stats-clear"]);
                }
            };
            // Throughput counts arrivals: the generator is the slower side
            // here, and reading stamps would slow it further.
            let r = loadgen(ow, 0.0, true, a.warmup as f64, a.window as f64, &mut clear);
            let stats = pmd_stats.map(|ctl| ctl(&["dpif-netdev/pmd-stats-show"]));
            return Sample::from_stats(r.rx_mpps, stats);
        }
    };
    // 512 frames in flight per port, circling.
    tp.cmd("start tx_first 16");
    std::thread::sleep(Duration::from_secs(a.warmup));
    if let Some(ctl) = pmd_stats {
        if std::env::var_os("RVS_BENCH_VERBOSE").is_some() {
            eprintln!("after warm-up:\n{}", ctl(&["dpif-netdev/pmd-stats-show"]));
        }
        ctl(&["dpif-netdev/pmd-stats-clear"]);
    }
    let (r0, t0) = (tp.rx_total(), Instant::now());
    std::thread::sleep(Duration::from_secs(a.window));
    let (r1, t1) = (tp.rx_total(), Instant::now());
    let stats = pmd_stats.map(|ctl| ctl(&["dpif-netdev/pmd-stats-show"]));
    tp.cmd("stop");
    Sample::from_stats((r1 - r0) as f64 / (t1 - t0).as_secs_f64() / 1e6, stats)
}

/// The percentage in "idle cycles: N (P%)" from pmd-stats-show (the first
/// PMD's: the benchmark runs one).
fn idle_pct(s: &str) -> Option<f64> {
    s.split("idle cycles: ")
        .nth(1)?
        .split('(')
        .nth(1)?
        .split('%')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// "avg processing cycles per packet" from pmd-stats-show, or the
/// ceiling's "CPU cycles/packet=" from testpmd's `show fwd stats all`
/// (--record-core-cycles: likewise only polls that brought frames).
fn cycles(s: &str) -> Option<f64> {
    if std::env::var_os("RVS_BENCH_VERBOSE").is_some() {
        eprintln!("{s}");
    }
    ["avg processing cycles per packet: ", "CPU cycles/packet="]
        .iter()
        .find_map(|k| s.split(k).nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Cycles the consumer paid per line in `rvs-c2c`'s RESULT line.
fn c2c_cycles(s: &str) -> Option<f64> {
    s.split("cycles_per_line=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What this host charges CPU 1 per cache line CPU 0 wrote, read in
/// prefetched bursts (rvs-c2c, beside this binary), measured with neither
/// switch nor generator running. On this workplace's VMs it moved between
/// about 10 cycles (no dearer than a line of its own) and about 23 from one
/// moment to the next, with every switch's speed: it tells a figure taken
/// in the host's slow state from one taken in its fast state.
fn line_price(seconds: f64) -> Option<f64> {
    if seconds <= 0.0 {
        return None;
    }
    let exe = std::env::current_exe().ok()?.with_file_name("rvs-c2c");
    let out = std::process::Command::new(&exe)
        .args(["--mode", "read", "--seconds", &seconds.to_string()])
        .output()
        .map_err(|e| eprintln!("rvs-bench: {}: {e}", exe.display()))
        .ok()?;
    let got = c2c_cycles(&String::from_utf8_lossy(&out.stdout));
    if got.is_none() {
        eprintln!(
            "rvs-bench: rvs-c2c gave no price: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    got
}

fn configure(h: &Host) {
    h.vsctl(&[
        "--no-wait",
        "set",
        "Open_vSwitch",
        ".",
        "other_config:dpdk-socket-mem=1024",
        "other_config:dpdk-lcore-mask=0x1",
        "other_config:pmd-cpu-mask=0x2",
    ]);
}

/// A database configured for the bench, the switch `kind` (rvs or ovs)
/// running on it, and bridge br0 on the netdev datapath.
fn switch_host(kind: &str, tag: &str) -> Host {
    let mut h = Host::without_rvsd(&format!("{tag}-{kind}"));
    configure(&h);
    if kind == "rvs" {
        let extra: Vec<String> = RVS_OTHER_CONFIG
            .get()
            .into_iter()
            .flatten()
            .map(|kv| format!("other_config:{kv}"))
            .collect();
        if !extra.is_empty() {
            let mut args = vec!["--no-wait", "set", "Open_vSwitch", "."];
            args.extend(extra.iter().map(String::as_str));
            h.vsctl(&args);
        }
        h.start_rvsd();
    } else if kind == "rvs-b" {
        // A second rvsd build for A/B runs inside one bench run (per-run
        // lines only; the table compares ceiling, OVS-DPDK and rvs).
        let b = std::env::var("RVSD_B").expect("rvs-b needs RVSD_B=<rvsd binary>");
        h.start_rvsd_from(std::path::Path::new(&b), &[]);
    } else {
        h.start_ovs_vswitchd();
    }
    h.vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "Bridge",
        "br0",
        "datapath_type=netdev",
    ]);
    h
}

/// The tunnel loop, the same ovs-vsctl/ovs-ofctl/ovs-appctl commands for
/// both switches: VM port p0 on tenant bridge br-t, "NIC" port p1 on
/// underlay bridge br-phy whose internal port holds both endpoint
/// addresses (10.99.0.1 and .2) and switches by NORMAL, as a CloudStack
/// host's traffic-label bridge does. br-t sends p0's frames into tunnel tA
/// (.1 -> .2); br-phy sends them out of p1; the generator reflects them
/// with MACs swapped (to br-phy's MAC), br-phy hands them to its internal
/// port, where they terminate on tunnel tB (local .2, remote .1), and
/// br-t sends what tB receives back out of p0. Each circle is one
/// encapsulation and one decapsulation.
fn tunnel_ports(h: &Host, kind: &str) {
    for br in ["br-t", "br-phy"] {
        h.vsctl(&[
            "add-br",
            br,
            "--",
            "set",
            "bridge",
            br,
            "datapath_type=netdev",
        ]);
    }
    h.vsctl(&[
        "add-port",
        "br-t",
        "p0",
        "--",
        "set",
        "Interface",
        "p0",
        "type=dpdkvhostuser",
    ]);
    // The "NIC" carries outer frames: room for a 1518-byte frame plus the
    // tunnel headers (OVS drops what exceeds a vhost port's MTU).
    h.vsctl(&[
        "add-port",
        "br-phy",
        "p1",
        "--",
        "set",
        "Interface",
        "p1",
        "type=dpdkvhostuser",
        "mtu_request=1600",
    ]);
    for (name, local, remote) in [
        ("tA", "10.99.0.1", "10.99.0.2"),
        ("tB", "10.99.0.2", "10.99.0.1"),
    ] {
        h.vsctl(&[
            "add-port",
            "br-t",
            name,
            "--",
            "set",
            "Interface",
            name,
            &format!("type={kind}"),
            &format!("options:local_ip={local}"),
            &format!("options:remote_ip={remote}"),
            "options:key=7",
        ]);
    }
    h.ns.exec(&["ip", "link", "set", "br-phy", "up", "mtu", "1600"]);
    h.ns.exec(&["ip", "address", "add", "10.99.0.1/24", "dev", "br-phy"]);
    h.ns.exec(&["ip", "address", "add", "10.99.0.2/24", "dev", "br-phy"]);
    let (p0, ta, tb) = (h.ofport("p0"), h.ofport("tA"), h.ofport("tB"));
    for args in [
        vec!["del-flows".to_string(), "br-t".into()],
        vec![
            "add-flow".into(),
            "br-t".into(),
            format!("in_port={p0},actions=output:{ta}"),
        ],
        vec![
            "add-flow".into(),
            "br-t".into(),
            format!("in_port={tb},actions=output:{p0}"),
        ],
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        h.ofctl(&a);
    }
    // The next hop is the generator's port 1.
    std::thread::sleep(Duration::from_secs(2));
    h.appctl(&["tnl/neigh/set", "br-phy", "10.99.0.2", MAC1]);
}

fn is_service(scenario: &str) -> bool {
    ["nat", "pf", "lb"].contains(&base(scenario))
}

/// Static NAT, port forwarding and load balancing as OVS users write them
/// (one zone; the generator's frames are UDP 198.18.0.1:9 -> 198.18.0.2:9):
/// p0's new connections are committed with their translation (for lb by a
/// select group of two backends) and sent to p1; what p1 sends back is
/// their reply, un-translated by ct(nat) and sent to p0. A bucket commits
/// and recirculates to table 3 (as OVN's load balancers do: OVS does not
/// send on from a bucket's ct without `table=`). Loaded with the
/// same ovs-ofctl commands on both switches. (The +new flow matches any
/// UDP: a connection's later packets come back from `ct(nat)` already
/// translated. The generator's first frames from p1 are new connections
/// in table 2 and are dropped by both switches: 512 frames circle.)
fn service_flows(h: &Host, scenario: &str) {
    let commit = match base(scenario) {
        "nat" => "ct(commit,zone=1,nat(dst=10.0.0.2)),output:2".to_string(),
        "pf" => "ct(commit,zone=1,nat(dst=10.0.0.2:8080)),output:2".to_string(),
        _ => "group:1".to_string(),
    };
    let flows = format!(
        "table=0,priority=10,in_port=1,ip,actions=ct(zone=1,nat,table=1)\n\
         table=0,priority=10,in_port=2,ip,actions=ct(zone=1,nat,table=2)\n\
         table=0,priority=0,actions=drop\n\
         table=1,priority=10,ct_state=+new+trk,udp,actions={commit}\n\
         table=1,priority=10,ct_state=+est+trk,ip,actions=output:2\n\
         table=2,priority=10,ct_state=+est+trk,ip,actions=output:1\n\
         table=3,priority=10,actions=output:2\n"
    );
    let file = h.dir.join("service-flows.txt");
    std::fs::write(&file, flows).unwrap();
    h.ofctl(&["del-flows", "br0"]);
    if base(scenario) == "lb" {
        h.ofctl(&[
            "add-group",
            "br0",
            "group_id=1,type=select,\
             bucket=weight:1,actions=ct(commit,table=3,zone=1,nat(dst=10.0.0.2:80)),\
             bucket=weight:1,actions=ct(commit,table=3,zone=1,nat(dst=10.0.0.3:80))",
        ]);
    }
    h.ofctl(&["add-flows", "br0", file.to_str().unwrap()]);
}

fn ports(h: &Host, scenario: &str) {
    if let Some(kind) = tunnel_kind(scenario) {
        return tunnel_ports(h, kind);
    }
    let (t0, t1): (&[&str], &[&str]) = match scenario {
        // Both VM ports access ports of VLAN 10 (testpmd's virtio-user strips
        // received tags, so a generator cannot reflect frames onto a trunk).
        "vlan" => (&["tag=10"], &["vlan_mode=access", "tag=10"]),
        _ => (&[], &[]),
    };
    for (p, extra) in [("p0", t0), ("p1", t1)] {
        let mut a = vec!["add-port", "br0", p];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--", "set", "Interface", p, "type=dpdkvhostuser"]);
        h.vsctl(&a);
    }
    if is_service(scenario) {
        service_flows(h, scenario);
    }
    if scenario == "l2" || base(scenario) == "flows" {
        // The same ovs-ofctl commands for both switches.
        for args in [
            vec!["del-flows", "br0"],
            vec!["add-flow", "br0", "in_port=1,actions=output:2"],
            vec!["add-flow", "br0", "in_port=2,actions=output:1"],
        ] {
            h.ofctl(&args);
        }
    }
}

/// testpmd forwarding between two net_vhost ports (io) on the switch's
/// core: the ceiling. Returns its socket directory (p0, p1) and the
/// running forwarder.
fn ceiling_forwarder() -> (std::path::PathBuf, TestPmd) {
    let dir = std::path::PathBuf::from(format!("/tmp/rvs-bench-ceiling-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut fwd = TestPmd::start_with(
        "ceil",
        &[
            "--lcores",
            "0@0,1@1",
            "--no-pci",
            "--file-prefix",
            "bench-ceil",
            "-m",
            "1024",
            "--vdev",
            &format!("net_vhost0,iface={}/p0,queues=1", dir.display()),
            "--vdev",
            &format!("net_vhost1,iface={}/p1,queues=1", dir.display()),
        ],
        &[
            "-i",
            "--nb-cores=1",
            "--forward-mode=io",
            "--total-num-mbufs=32768",
            // Busy cycles per packet, as the switches report theirs: the
            // cycles of polls that brought frames, over the frames.
            "--record-core-cycles",
        ],
    );
    fwd.cmd("start");
    (dir, fwd)
}

fn run_switch(kind: &str, scenario: &str, size: usize, a: &Args) -> Sample {
    match kind {
        "ceiling" => {
            let (dir, fwd) = ceiling_forwarder();
            let fwd = std::cell::RefCell::new(fwd);
            let mut src = source(&dir, size, scenario, &mac_bytes(MAC1));
            // testpmd's own counters stand in for pmd-stats-clear/-show.
            let ctl = |args: &[&str]| {
                let c = match args.first() {
                    Some(&"dpif-netdev/pmd-stats-clear") => "clear fwd stats all",
                    _ => "show fwd stats all",
                };
                fwd.borrow_mut().cmd(c)
            };
            let s = measure(&mut src, a, Some(&ctl));
            src.quit();
            fwd.into_inner().quit();
            let _ = std::fs::remove_dir_all(&dir);
            s
        }
        "rvs" | "rvs-b" | "ovs" => {
            let h = switch_host(kind, "bench");
            ports(&h, scenario);
            let mut src = source(&h.dir, size, scenario, &bridge_mac(&h, scenario));
            let ctl = |args: &[&str]| h.appctl(args);
            let s = measure(&mut src, a, Some(&ctl));
            src.quit();
            drop(h);
            s
        }
        other => panic!("unknown switch {other:?} (ceiling, ovs, rvs, rvs-b)"),
    }
}

/// The underlay bridge's MAC, where decapsulation scenarios send.
fn bridge_mac(h: &Host, scenario: &str) -> Vec<u8> {
    if tunnel_kind(scenario).is_none() {
        return mac_bytes(MAC1);
    }
    let m = h.ns.exec(&["cat", "/sys/class/net/br-phy/address"]);
    mac_bytes(m.trim())
}

/// What a switch had counted at one moment of a latency run.
#[derive(Clone, Copy, Default)]
struct SwitchCount {
    dropped: u64,
    ring_full: u64,
    held: u64,
    busy_cycles: u64,
    received: u64,
}

/// One-way latency and loss through switch `kind` at each of `rates`
/// (a label and the Mpps offered).
fn latency(
    kind: &str,
    scenario: &str,
    size: usize,
    rates: &[(String, f64)],
    a: &Args,
) -> Vec<(String, LoadResult)> {
    // The ceiling's latency is the floor: generator, vhost-user and
    // virtio-user, no switching.
    let (h, fwd) = if kind == "ceiling" {
        (None, Some(ceiling_forwarder()))
    } else {
        let h = switch_host(kind, "lat");
        ports(&h, scenario);
        (Some(h), None)
    };
    let ow = match (&h, &fwd) {
        (Some(h), _) => one_way_stream(&h.dir, size, scenario, &bridge_mac(h, scenario)),
        (_, Some((dir, _))) => one_way_stream(dir, size, scenario, &mac_bytes(MAC1)),
        _ => unreachable!("one of the two is set"),
    };
    // What the switch itself counted as dropped from the window's start
    // to the end of the run: loss the switch saw, against loss it never
    // saw (inside the generator or its rings). OVS-DPDK: every port's rx
    // and tx `dropped` in dpctl/show -s (a vhost-user ring the receiver
    // left full counts as tx dropped). rvs: pmd-stats-show, which also
    // says how many were a receiver's full ring, both read at one moment.
    // Busy cycles and frames received: pmd-stats-show on both.
    let rvs = kind.starts_with("rvs");
    let count = || {
        h.as_ref().map(|h| {
            let s = h.appctl(&["dpif-netdev/pmd-stats-show"]);
            let dropped = if rvs {
                counter(&s, "packets dropped: ")
            } else {
                counter(&h.appctl(&["dpctl/show", "-s"]), "dropped:")
            };
            SwitchCount {
                dropped,
                ring_full: counter(&s, "tx-queue-full: "),
                held: counter(&s, "packets held: "),
                busy_cycles: counter(&s, "processing cycles: "),
                received: counter(&s, "packets received: "),
            }
        })
    };
    let out = rates
        .iter()
        .map(|(label, rate)| {
            let mut at_warm = None;
            let mut r = loadgen(&ow, *rate, false, 1.0, a.latency_window, &mut || {
                at_warm = count()
            });
            if let Some((w, e)) = at_warm.zip(count()) {
                r.switch_dropped = Some((
                    e.dropped.saturating_sub(w.dropped),
                    e.ring_full.saturating_sub(w.ring_full),
                    e.held.saturating_sub(w.held),
                ));
                let frames = e.received.saturating_sub(w.received);
                r.switch_cycles = (frames > 0)
                    .then(|| e.busy_cycles.saturating_sub(w.busy_cycles) as f64 / frames as f64);
            }
            eprintln!("latency {scenario} {size}B {kind} at {label}: {r:?}");
            (label.clone(), r)
        })
        .collect();
    drop(h);
    if let Some((dir, f)) = fwd {
        f.quit();
        let _ = std::fs::remove_dir_all(dir);
    }
    out
}

/// The sum of the numbers after every `name` in s.
fn counter(s: &str, name: &str) -> u64 {
    s.split(name)
        .skip(1)
        .filter_map(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let a = Args::parse();
    if let Some(bad) = a.rvs_other_config.iter().find(|kv| !kv.contains('=')) {
        eprintln!("rvs-bench: --rvs-other-config {bad}: expected KEY=VALUE");
        std::process::exit(2);
    }
    let _ = RVS_OTHER_CONFIG.set(a.rvs_other_config.clone());
    let started = sh("date -u '+%Y-%m-%d %H:%M UTC'");
    let mut table = String::new();
    // best rvs/OVS: each switch's fastest run against the other's. On a
    // host whose speed jumps between states from one process start to the
    // next, medians can pair one switch's slow runs with the other's fast
    // ones; the fastest runs are each switch in the host's better state.
    // per core: OVS's fewest cycles per packet over rvs's. Busy cycles
    // per packet do not depend on which side set the pace (a switch that
    // outruns its generator idles), and noise on a shared host only adds.
    let _ = writeln!(table, "| scenario | size | ceiling Mpps | OVS-DPDK Mpps | rvs Mpps | rvs/OVS | best rvs/OVS | rvs/ceiling | ceiling cyc/pkt least | rvs cyc/pkt median / least | OVS cyc/pkt median / least | per core rvs/OVS (least cycles) | idle % in best run, rvs / OVS | remote line cyc before-after least-cycles run, ceiling / rvs / OVS |");
    let _ = writeln!(
        table,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let mut rows: Vec<(String, f64, f64, f64)> = Vec::new();
    let mut lat = String::new();
    // rvs against a second build (rvs-b), when one runs.
    let mut ab = String::new();
    for scenario in &a.scenarios {
        for &size in &a.sizes {
            let mut got: std::collections::BTreeMap<String, Vec<Sample>> = Default::default();
            for run in 0..a.runs {
                // Alternate the order so drift in the host's speed hits both switches alike.
                let mut order = a.switches.clone();
                if run % 2 == 1 {
                    order.reverse();
                }
                for sw in &order {
                    let before = line_price(a.line_probe);
                    let mut s = run_switch(sw, scenario, size, &a);
                    s.line_cycles = [before, line_price(a.line_probe)];
                    eprintln!(
                        "run {run} {scenario} {size}B {sw}: {:.2} Mpps, {:?} cycles/pkt, {:?} % idle, {:?} cycles per remote line before and after",
                        s.mpps, s.cycles_per_pkt, s.idle_pct, s.line_cycles
                    );
                    got.entry(sw.clone()).or_default().push(s);
                }
            }
            let stat = |k: &str| -> (f64, f64, f64, Option<f64>) {
                let v = got.get(k).cloned().unwrap_or_default();
                let mut m: Vec<f64> = v.iter().map(|s| s.mpps).collect();
                let lo = m.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = m.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let mut c: Vec<f64> = v.iter().filter_map(|s| s.cycles_per_pkt).collect();
                let cyc = if c.is_empty() {
                    None
                } else {
                    Some(median(&mut c))
                };
                (median(&mut m), lo, hi, cyc)
            };
            // Idle share of the switch's fastest run: the run the best
            // ratio is taken from.
            let fastest_idle = |k: &str| {
                got.get(k)?
                    .iter()
                    .max_by(|x, y| x.mpps.total_cmp(&y.mpps))?
                    .idle_pct
            };
            let (ce, cel, ceh, _) = stat("ceiling");
            let (ov, ovl, ovh, ovc) = stat("ovs");
            let (rv, rvl, rvh, rvc) = stat("rvs");
            rows.push((format!("{scenario} {size}B"), ce, ov, rv));
            let f = |m: f64, l: f64, h: f64| {
                if m.is_nan() {
                    "-".to_string()
                } else {
                    format!("{m:.2} ({l:.2}-{h:.2})")
                }
            };
            let c = |x: Option<f64>| x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
            let tenths =
                |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
            let r = |x: f64, y: f64| {
                if !(x.is_finite() && y.is_finite()) {
                    "-".to_string()
                } else {
                    format!("{:.2}", x / y)
                }
            };
            // The fewest cycles of the runs: on a shared host noise only adds.
            let least = |k: &str| {
                got.get(k)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.cycles_per_pkt)
                    .reduce(f64::min)
            };
            // The host's line price around the run `least` comes from.
            let least_price = |k: &str| {
                let p = got
                    .get(k)?
                    .iter()
                    .filter_map(|s| Some((s.cycles_per_pkt?, s.line_cycles)))
                    .min_by(|x, y| x.0.total_cmp(&y.0))?
                    .1;
                Some(format!("{}-{}", tenths(p[0]), tenths(p[1])))
            };
            let nan = f64::NAN;
            let _ = writeln!(
                table,
                "| {scenario} | {size} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} / {} | {} / {} / {} |",
                f(ce, cel, ceh),
                f(ov, ovl, ovh),
                f(rv, rvl, rvh),
                r(rv, ov),
                r(rvh, ovh),
                r(rv, ce),
                c(least("ceiling")),
                c(rvc),
                c(least("rvs")),
                c(ovc),
                c(least("ovs")),
                r(least("ovs").unwrap_or(nan), least("rvs").unwrap_or(nan)),
                tenths(fastest_idle("rvs")),
                tenths(fastest_idle("ovs")),
                least_price("ceiling").unwrap_or_else(|| "-".into()),
                least_price("rvs").unwrap_or_else(|| "-".into()),
                least_price("ovs").unwrap_or_else(|| "-".into())
            );
            if got.contains_key("rvs-b") {
                let (bv, bvl, bvh, bvc) = stat("rvs-b");
                let _ = writeln!(
                    ab,
                    "| {scenario} | {size} | {} | {} | {} | {} / {} | {} / {} |",
                    f(rv, rvl, rvh),
                    f(bv, bvl, bvh),
                    r(rv, bv),
                    c(rvc),
                    c(least("rvs")),
                    c(bvc),
                    c(least("rvs-b"))
                );
            }
            // rvs-loadgen sends one flow or a `-<N>k` scenario's N, not
            // the 256 connections of `-mf`.
            let loadgen_like = !scenario.ends_with("-mf");
            for (kind, max) in [("ceiling", ce), ("ovs", ov), ("rvs", rv)] {
                if !loadgen_like || !max.is_finite() || max <= 0.0 {
                    continue;
                }
                let mut rates: Vec<(String, f64)> = a
                    .latency_loads
                    .iter()
                    .map(|l| (format!("{l:.0} %"), max * l / 100.0))
                    .collect();
                if a.equal_rate_mpps > 0.0 {
                    rates.push((format!("{} Mpps", a.equal_rate_mpps), a.equal_rate_mpps));
                }
                if rates.is_empty() {
                    continue;
                }
                for (load, r) in latency(kind, scenario, size, &rates, &a) {
                    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
                    let _ = writeln!(
                        lat,
                        "| {scenario} | {size} | {} | {load} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
                        match kind {
                            "ovs" => "OVS-DPDK",
                            k => k,
                        },
                        r.offered_mpps,
                        r.rx_mpps,
                        r.sent,
                        r.sent.saturating_sub(r.received),
                        match r.switch_dropped {
                            None => "-".to_string(),
                            Some((d, ring, held)) if kind.starts_with("rvs") => {
                                match (d > 0, held > 0) {
                                    (true, true) => format!("{d} ({ring} ring full; {held} held)"),
                                    (true, false) => format!("{d} ({ring} ring full)"),
                                    (false, true) => format!("0 ({held} held)"),
                                    (false, false) => "0".to_string(),
                                }
                            }
                            Some((d, ..)) => d.to_string(),
                        },
                        r.switch_cycles
                            .map(|c| format!("{c:.0}"))
                            .unwrap_or_else(|| "-".into()),
                        us(r.p50_ns),
                        us(r.p99_ns),
                        us(r.p999_ns)
                    );
                }
            }
        }
    }
    let cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
    let cmdline: Vec<String> = std::env::args().collect();
    let ovs_ver = sh("/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk --version | head -1");
    let dpdk_ver = sh("pkg-config --modversion libdpdk");
    let mut out = String::new();
    let _ = writeln!(out, "\n## {started}\n");
    let _ = writeln!(
        out,
        "- machine: {} CPUs, {cpu}; kernel {}",
        sh("nproc"),
        sh("uname -r")
    );
    let _ = writeln!(
        out,
        "- versions: rvs {} (git {}), {ovs_ver}, DPDK {dpdk_ver}",
        env!("CARGO_PKG_VERSION"),
        sh("git rev-parse --short HEAD")
    );
    let _ = writeln!(out, "- command: `{}`", cmdline.join(" "));
    let _ = writeln!(out, "- method: generator testpmd on CPU 0, the switch's single PMD on CPU 1. Loop scenarios: 2 virtio-user ports reflecting what they receive (macswap; 5tswap for nat/pf/lb, so replies come back), loop topology, 512 frames in flight per port. `-<N>k`/`-<N>m` scenarios: rvs-loadgen cycles through N distinct UDP 5-tuples one way p0 -> p1, as fast as the ring takes them. `-encap`/`-decap` scenarios: rvs-loadgen sends one flow one way as fast as the ring takes it (plain frames p0 -> p1 for encap, encapsulated frames p1 -> p0 for decap). Mpps = frames the generator received per second over {} s after {} s warm-up; median (min-max) of {} runs, switches alternating. Cycles per packet: busy cycles (polls that brought frames) over frames, from pmd-stats-show, and for the ceiling from testpmd's --record-core-cycles\n", a.window, a.warmup, a.runs);
    if a.line_probe > 0.0 {
        let _ = writeln!(out, "- remote line price: `rvs-c2c --mode read --seconds {}` before and after each run (cycles CPU 1 pays per line CPU 0 wrote: about 10 in the host's fast state, about 23 in its slow one)", a.line_probe);
    }
    out.push_str(&table);
    if !ab.is_empty() {
        let _ = writeln!(
            out,
            "\nA/B: rvs against rvs-b (RVSD_B), same runs\n\n\
             | scenario | size | rvs Mpps | rvs-b Mpps | rvs/rvs-b | rvs cyc/pkt median / least | rvs-b cyc/pkt median / least |\n\
             | --- | --- | --- | --- | --- | --- | --- |"
        );
        out.push_str(&ab);
    }
    if !lat.is_empty() {
        let _ = writeln!(out, "\nLatency and loss, one way p0 -> p1 (rvs-loadgen: one flow, or a `-<N>k` scenario's N, each frame stamped with the TSC at send and read back on receive by the same process; -decap: into p1, out of p0), offered at a percentage of each switch's median Mpps above; 1 s warm-up, {} s window. lost = sent - received; dropped by switch = what the switch counted as dropped from the window's start to the run's end: OVS-DPDK, the rx and tx `dropped` counters of `ovs-appctl dpctl/show -s` over its ports (a vhost-user ring the receiver left full counts there); rvs, `packets dropped` of pmd-stats-show with, in brackets, how many of them were a receiver's full ring (`tx-queue-full`) and how many frames waited for room instead of being dropped (`packets held`); busy cyc/pkt = the PMD's processing cycles over the frames it received in the window (pmd-stats-show, both switches): what carrying that load costs it. A load in Mpps (`--equal-rate-mpps`) is the same for every switch\n", a.latency_window);
        let _ = writeln!(out, "| scenario | size | switch | load | offered Mpps | received Mpps | frames sent | lost | dropped by switch | busy cyc/pkt | p50 us | p99 us | p99.9 us |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        out.push_str(&lat);
    }
    if a.port_ops > 0 {
        let (ra, rd) = port_latency("rvs", a.port_ops);
        let (oa, od) = port_latency("ovs", a.port_ops);
        let _ = writeln!(out, "\nControl plane: median latency of `ovs-vsctl add-port` / `del-port` of a dpdkvhostuser port ({} each; ovs-vsctl returns once the switch applied it)\n", a.port_ops);
        let _ = writeln!(
            out,
            "| switch | add-port ms | del-port ms |\n| --- | --- | --- |"
        );
        let _ = writeln!(
            out,
            "| OVS-DPDK | {oa:.1} | {od:.1} |\n| rvs | {ra:.1} | {rd:.1} |"
        );
        let _ = writeln!(out, "| rvs/OVS | {:.2} | {:.2} |", ra / oa, rd / od);
    }
    if a.flow_mods > 0 {
        let n = a.flow_mods as f64;
        let (ra, rd) = flow_mod_time("rvs", a.flow_mods);
        let (oa, od) = flow_mod_time("ovs", a.flow_mods);
        let _ = writeln!(out, "\nControl plane: `ovs-ofctl add-flows` of {} distinct flows in one file (ovs-ofctl waits for each flow_mod's barrier), then one `del-flows` removing them all\n", a.flow_mods);
        let _ = writeln!(
            out,
            "| switch | add-flows s | flow_mods/s | del-flows s |\n| --- | --- | --- | --- |"
        );
        let _ = writeln!(
            out,
            "| OVS-DPDK | {oa:.2} | {:.0} | {od:.2} |\n| rvs | {ra:.2} | {:.0} | {rd:.2} |",
            n / oa,
            n / ra
        );
        let _ = writeln!(out, "| rvs/OVS (rate) | | {:.2} | |", oa / ra);
    }
    // A control-plane-only run (--runs 0) has nothing to draw: keep the
    // last plot.
    if rows
        .iter()
        .any(|r| r.1.is_finite() || r.2.is_finite() || r.3.is_finite())
    {
        std::fs::write(&a.plot, svg(&rows)).expect("plot file");
        let _ = writeln!(out, "\nPlot: `{}`", a.plot);
    }
    print!("{out}");
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.results)
        .expect("results file");
    f.write_all(out.as_bytes()).unwrap();
}

#[cfg(test)]
mod tests {
    use super::{c2c_cycles, cycles, idle_pct};

    /// The lines rvs-bench reads, as rvsd and ovs-vswitchd 3.1 print them
    /// (OVS adds a "main thread" block without cycle lines).
    const RVS: &str = "pmd thread numa_id 0 core_id 1:\n  packets received: 23348512\n  \
        packets held: 14290560\n  idle cycles: 1527229340 (18.20%)\n  \
        processing cycles: 6865795196 (81.80%)\n  \
        avg cycles per packet: 359.47 (8393024536/23348512)\n  \
        avg processing cycles per packet: 294.06 (6865795196/23348512)\n";
    const OVS: &str = "pmd thread numa_id 0 core_id 1:\n  emc hits: 0\n  \
        idle cycles: 644396379 (7.72%)\n  processing cycles: 7704259953 (92.28%)\n  \
        avg cycles per packet: 219.87 (8348656332/37970016)\n  \
        avg processing cycles per packet: 202.90 (7704259953/37970016)\n\
        main thread:\n  packets received: 0\n";

    #[test]
    fn reads_the_pmds_idle_share_and_cycles_per_packet() {
        assert_eq!(idle_pct(RVS), Some(18.20));
        assert_eq!(cycles(RVS), Some(294.06));
        assert_eq!(idle_pct(OVS), Some(7.72));
        assert_eq!(cycles(OVS), Some(202.90));
        assert_eq!(idle_pct("no pmd threads"), None);
        assert_eq!(cycles("no pmd threads"), None);
        let testpmd = "  +++ Accumulated forward statistics for all ports+++\n  \
            CPU cycles/packet=147.96 (total cycles=12421089005 / total io packets=83950624) \
            at 2600 MHz Clock\n";
        assert_eq!(cycles(testpmd), Some(147.96));
        assert_eq!(idle_pct(testpmd), None);
    }

    #[test]
    fn reads_the_line_price_off_rvs_c2c() {
        let line = "RESULT mode=read lines=104261824 cycles_per_line=21.9 ns_per_line=8.42 \
            tsc_ghz=2.596 burst=32 slots=256 cpus=0,1\n";
        assert_eq!(c2c_cycles(line), Some(21.9));
        assert_eq!(c2c_cycles("rvs-c2c: cannot pin to cpu 1: EINVAL"), None);
    }
}
