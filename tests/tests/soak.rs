//! Soak: traffic on three ports (two kernel namespaces on veths, a
//! vhost-user VM played by testpmd answering pings) for RVS_SOAK_SECS
//! (default 60; hours by hand) while ports, flows, NAT and load-balancer
//! rules churn. At the end: rvsd never stopped, every frame received was
//! sent or counted as dropped, rvsd's memory stayed flat, and at SIGTERM
//! every mbuf went back to its pool.
use rvs_tests::{tenant, Host};
use std::time::{Duration, Instant};

const VM: &str = "52:54:00:00:00:07";

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn churn_under_traffic_loses_nothing_unaccounted() {
    let secs: u64 = std::env::var("RVS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut h = Host::start("soak");
    h.vsctl(&["add-br", "br0"]);
    let tp = rvs_tests::icmpecho_vm(&h, "soak", "br0", "vm", VM);
    let a = tenant(&h, "br0", "sa", "10.8.0.1/24");
    let b = tenant(&h, "br0", "sb", "10.8.0.2/24");
    let mac = |ns: &rvs_tests::Netns, dev: &str| {
        ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")])
            .trim()
            .to_string()
    };
    let (ma, mb) = (mac(&a, "sai"), mac(&b, "sbi"));
    for (ns, dev, ip, m) in [
        (&a, "sai", "10.8.0.2", mb.as_str()),
        (&a, "sai", "10.8.0.7", VM),
        (&b, "sbi", "10.8.0.1", ma.as_str()),
    ] {
        ns.exec(&[
            "ip",
            "neigh",
            "replace",
            ip,
            "lladdr",
            m,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }
    // Explicit port-to-port flows: each frame received has exactly one
    // place to go, so counters must balance.
    h.ofctl(&["del-flows", "br0"]);
    for f in [
        "priority=10,in_port=sao,ip,nw_dst=10.8.0.2,actions=output:sbo",
        "priority=10,in_port=sao,ip,nw_dst=10.8.0.7,actions=output:vm",
        "priority=10,in_port=sbo,actions=output:sao",
        "priority=10,in_port=vm,actions=output:sao",
    ] {
        h.ofctl(&["add-flow", "br0", f]);
    }
    // Service rules churn on a bridge of their own: the gateway's ARP
    // requests (packet-outs, sent without being received) stay out of
    // br0's balance.
    h.vsctl(&["add-br", "br1"]);
    h.rvsctl(&[
        "gateway-set",
        "br1",
        "02:00:00:00:99:01",
        "10.9.0.1/24",
        "198.51.100.1/24",
    ]);

    let pid =
        h.ns.exec(&["cat", h.dir.join("ovs-vswitchd.pid").to_str().unwrap()])
            .trim()
            .to_string();
    let deadline = (secs + 5).to_string();
    let pingers = [
        a.spawn(&[
            "ping", "-q", "-i", "0.002", "-s", "200", "-w", &deadline, "10.8.0.2",
        ]),
        a.spawn(&[
            "ping", "-q", "-i", "0.002", "-s", "64", "-w", &deadline, "10.8.0.7",
        ]),
    ];
    std::thread::sleep(Duration::from_secs(3));
    let rss0 = rss_kib(&pid);
    let t0 = Instant::now();
    let mut rounds = 0u64;
    let flows: String = (0..200)
        .map(|i| {
            format!(
                "table=5,priority={i},udp,tp_dst={},actions=drop\n",
                1000 + i
            )
        })
        .collect();
    std::fs::write(h.dir.join("churn.flows"), flows).unwrap();
    let churn_flows = h.dir.join("churn.flows");
    while t0.elapsed() < Duration::from_secs(secs) {
        rounds += 1;
        h.vsctl(&[
            "add-port",
            "br0",
            "churn",
            "--",
            "set",
            "Interface",
            "churn",
            "type=dpdkvhostuser",
        ]);
        h.ofctl(&["add-flows", "br0", churn_flows.to_str().unwrap()]);
        h.rvsctl(&["nat-add", "br1", "198.51.100.10", "10.9.0.5"]);
        h.rvsctl(&[
            "lb-add",
            "web",
            "br1",
            "198.51.100.20",
            "tcp",
            "80",
            "10.9.0.11:8000",
            "10.9.0.12:8000",
        ]);
        h.ofctl(&["del-flows", "br0", "table=5"]);
        h.rvsctl(&["lb-del", "web"]);
        h.rvsctl(&["nat-del", "198.51.100.10"]);
        h.vsctl(&["del-port", "churn"]);
        assert!(h.rvsd_running(), "rvsd died in round {rounds}");
    }
    for p in pingers {
        let _ = p.wait_with_output();
    }
    let rss1 = rss_kib(&pid);

    // Counters settle once the last statistics write is in.
    let ports = ["sao", "sbo", "vm", "br0"];
    let totals = |h: &Host| {
        let (mut rx, mut out) = (0u64, 0u64);
        for p in ports {
            let s = h.stats(p);
            let g = |k: &str| s.get(k).copied().unwrap_or(0);
            rx += g("rx_packets");
            out += g("tx_packets") + g("tx_dropped") + g("rx_dropped");
        }
        (rx, out)
    };
    std::thread::sleep(Duration::from_secs(3));
    let (rx, out) = totals(&h);
    eprintln!(
        "soak: {secs} s, {rounds} churn rounds, {rx} frames received, {out} sent or dropped; rvsd RSS {rss0} KiB -> {rss1} KiB"
    );
    assert!(rx > 10_000, "traffic flowed: {rx}");
    assert_eq!(rx, out, "every frame sent or counted as dropped");
    // Flat: no growth beyond allocator noise while churning.
    assert!(
        rss1 <= rss0 + 16 * 1024,
        "rvsd grew from {rss0} KiB to {rss1} KiB"
    );
    tp.quit();
    let st = h.stop_rvsd();
    assert!(st.success(), "{st}");
    let log = h.log();
    let line = log
        .lines()
        .find(|l| l.contains("mbuf pool rvs_mp_0"))
        .unwrap();
    assert!(
        line.contains("all ") && line.contains(" mbufs returned"),
        "{line}"
    );
}
