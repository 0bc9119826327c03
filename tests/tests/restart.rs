//! rvsd's own restarts and stops. Killed under traffic it comes back with
//! its flows and groups (kept on disk, restored before forwarding; no
//! controller puts them back) and its vhost-user client port reconnects to
//! the VM side; `flow-restore-wait` holds forwarding as in OVS; SIGTERM
//! under traffic returns every mbuf to its pool. The VM is dpdk-testpmd
//! answering ARP and pings (icmpecho) as the vhost-user server; the other
//! end is the kernel's ping in a namespace on a veth.
use rvs_tests::{pmd_drops, tenant, wait_for, Host, Netns, TestPmd};
use std::time::Duration;

const VM: &str = "52:54:00:00:00:01";
const VM_IP: &str = "10.9.0.2";

/// br0 with the VM on csdpdk-1 (ofport 1) and a tenant on port rto
/// (ofport 2) who knows the VM's MAC (no ARP: frames counted exactly).
fn setup(h: &Host, name: &str) -> (TestPmd, Netns) {
    h.vsctl(&["add-br", "br0"]);
    let tp = rvs_tests::icmpecho_vm(h, name, "br0", "csdpdk-1", VM);
    let ns = tenant(h, "br0", "rt", "10.9.0.1/24");
    ns.exec(&[
        "ip",
        "neigh",
        "replace",
        VM_IP,
        "lladdr",
        VM,
        "dev",
        "rti",
        "nud",
        "permanent",
    ]);
    assert_eq!(h.ofport("csdpdk-1"), 1);
    assert_eq!(h.ofport("rto"), 2);
    (tp, ns)
}

/// Pings `n` times while forwarding is held: none answered, all `n`
/// counted as flow-restore-wait drops. Returns that counter.
fn pings_held(h: &Host, ns: &Netns, n: u64) -> u64 {
    let held = pmd_drops(h, "flow-restore-wait");
    let r = rvs_tests::ping(ns, VM_IP, n as u32, &["-W", "1"]);
    assert!(replies(&r).is_empty(), "{r}");
    wait_for("pings held", Duration::from_secs(5), || {
        pmd_drops(h, "flow-restore-wait") == held + n
    });
    held + n
}

/// Lifts flow-restore-wait; `n` pings are answered again.
fn resume(h: &Host, ns: &Netns, n: u32) {
    h.vsctl(&[
        "remove",
        "Open_vSwitch",
        ".",
        "other_config",
        "flow-restore-wait",
    ]);
    let r = rvs_tests::ping(ns, VM_IP, n, &[]);
    assert_eq!(replies(&r), (1..=n as u64).collect::<Vec<_>>(), "{r}");
}

/// Echo replies received, by icmp_seq, from ping's output.
fn replies(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect()
}

fn groups(h: &Host) -> Vec<String> {
    let mut g: Vec<String> = h
        .ofctl(&["dump-groups", "br0"])
        .lines()
        .filter(|l| l.starts_with(' '))
        .map(|l| l.trim().to_string())
        .collect();
    g.sort();
    g
}

/// Flows without their counters (which start again at zero).
fn flows_without_counters(h: &Host) -> Vec<String> {
    let mut f: Vec<String> = h
        .flows(&["br0"])
        .iter()
        .map(|l| {
            l.split(", ")
                .filter(|x| !x.starts_with("n_packets=") && !x.starts_with("n_bytes="))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    f.sort();
    f
}

#[test]
fn killed_under_traffic_it_comes_back_with_its_flows_and_the_vm() {
    let mut h = Host::start("rst");
    let (tp, ns) = setup(&h, "rst");
    // Tables no controller will put back: forwarding depends on them.
    h.ofctl(&[
        "add-group",
        "br0",
        "group_id=1,type=select,selection_method=roundrobin,bucket=weight:5,actions=output:1",
    ]);
    h.ofctl(&[
        "add-group",
        "br0",
        "group_id=2,type=select,selection_method=hash,fields(ip_src,nw_proto),bucket=bucket_id:0,actions=output:2",
    ]);
    h.ofctl(&["del-flows", "br0"]);
    for f in [
        "table=0,priority=10,in_port=2,actions=resubmit(,7)",
        "table=0,priority=10,in_port=1,actions=group:2",
        "table=7,priority=100,cookie=0x77,icmp,actions=mod_nw_tos:32,group:1",
        "table=7,priority=5,actions=drop",
        "table=9,priority=1,idle_timeout=600,udp,tp_dst=53,actions=learn(table=10,idle_timeout=30,eth_type=0x800,nw_proto=17,NXM_OF_UDP_SRC[]=NXM_OF_UDP_DST[],output:NXM_OF_IN_PORT[]),output:1",
    ] {
        h.ofctl(&["add-flow", "br0", f]);
    }
    let before_flows = flows_without_counters(&h);
    let before_groups = groups(&h);
    assert_eq!(before_flows.len(), 5, "{before_flows:?}");
    assert_eq!(before_groups.len(), 2, "{before_groups:?}");
    let reply = rvs_tests::ping(&ns, VM_IP, 3, &[]);
    assert_eq!(replies(&reply), vec![1, 2, 3], "{reply}");

    // The saved tables are OpenFlow messages ovs-ofctl itself reads.
    let saved = h.dir.join("br0.flows");
    wait_for("tables saved", Duration::from_secs(5), || saved.exists());
    let parsed = rvs_tests::sh("ovs-ofctl", &["ofp-parse", saved.to_str().unwrap()]);
    // (rvs's own selection methods are beyond ovs-ofctl's decoder.)
    assert_eq!(parsed.matches("NXT_GROUP_MOD").count(), 2, "{parsed}");
    assert!(parsed.contains("roundrob"), "{parsed}");
    assert!(
        parsed.contains(" ADD group_id=2,type=select,selection_method=hash,fields(ip_src,nw_proto),bucket=bucket_id:0,actions=output:2"),
        "{parsed}"
    );
    assert_eq!(
        parsed
            .matches("OFPT_FLOW_MOD (OF1.5) (xid=0x0): ADD ")
            .count(),
        5,
        "{parsed}"
    );
    assert!(
        parsed.contains(
            "ADD table:7 priority=100,icmp cookie:0x77 actions=set_field:8->ip_dscp,group:1"
        ),
        "{parsed}"
    );

    // 600 pings, 50 a second; rvsd dies 2 s in and is started again.
    let pinger = ns.spawn(&["ping", "-i", "0.02", "-W", "1", "-c", "600", VM_IP]);
    std::thread::sleep(Duration::from_secs(2));
    h.kill_rvsd();
    let t_kill = std::time::Instant::now();
    h.start_rvsd();
    let started = t_kill.elapsed();
    let out = pinger.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let got = replies(&out);
    let last = 600;
    let gap = got.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap_or(0);
    eprintln!(
        "restart (vhost-user client mode): rvsd up again after {:.0} ms; {} of {last} pings answered; longest gap {gap} pings = {} ms",
        started.as_secs_f64() * 1000.0,
        got.len(),
        gap * 20
    );
    // Traffic came back and stayed: the second half of the run is whole.
    assert!(gap > 0, "a SIGKILLed switch loses something:\n{out}");
    let tail: Vec<u64> = got.iter().copied().filter(|&s| s > last - 100).collect();
    assert_eq!(tail.len(), 100, "the last 2 s all answered:\n{out}");

    let log = h.log();
    assert!(
        log.contains("br0: restored 5 flows and 2 groups from"),
        "{}",
        h.log_tail()
    );
    assert_eq!(flows_without_counters(&h), before_flows);
    assert_eq!(groups(&h), before_groups);
    // The restored flows are the ones forwarding: their counters moved.
    let hits = h.flows(&["br0", "table=7,icmp"]).join("\n");
    assert!(!hits.contains("n_packets=0,"), "{hits}");

    // del-br takes the saved tables with it.
    drop(tp);
    h.vsctl(&["del-br", "br0"]);
    wait_for("saved tables removed", Duration::from_secs(5), || {
        !saved.exists()
    });
}

#[test]
fn flow_restore_wait_holds_forwarding_and_counts_what_it_held() {
    let h = Host::start("frw");
    let (_tp, ns) = setup(&h, "frw");
    let r = rvs_tests::ping(&ns, VM_IP, 2, &[]);
    assert_eq!(replies(&r), vec![1, 2], "{r}");
    h.vsctl(&[
        "set",
        "Open_vSwitch",
        ".",
        "other_config:flow-restore-wait=true",
    ]);
    let held = pings_held(&h, &ns, 5);
    wait_for("rx_dropped 5 on rto", Duration::from_secs(5), || {
        h.stats("rto").get("rx_dropped") == Some(&5)
    });
    resume(&h, &ns, 3);
    assert_eq!(pmd_drops(&h, "flow-restore-wait"), held);
}

#[test]
fn sigterm_under_traffic_returns_every_mbuf() {
    let mut h = Host::start("term");
    let (_tp, ns) = setup(&h, "term");
    let flood = ns.spawn(&["ping", "-f", "-w", "6", VM_IP]);
    wait_for("the flood through rvsd", Duration::from_secs(5), || {
        h.stats("csdpdk-1").get("tx_packets").copied().unwrap_or(0) >= 1000
    });
    let st = h.stop_rvsd();
    assert!(st.success(), "{st}\n{}", h.log_tail());
    let _ = flood.wait_with_output();
    let log = h.log();
    let line = log
        .lines()
        .find(|l| l.contains("mbuf pool rvs_mp_0"))
        .unwrap_or_else(|| panic!("no pool line at exit:\n{}", h.log_tail()));
    assert!(
        line.contains("all ") && line.contains(" mbufs returned"),
        "{line}"
    );
}

#[test]
fn ovsdb_server_down_forwarding_goes_on_and_what_changed_meanwhile_applies() {
    let mut h = Host::start("odb");
    let (_tp, ns) = setup(&h, "odb");
    h.kill_ovsdb();
    // The database is gone: forwarding goes on with the last configuration.
    let r = rvs_tests::ping(&ns, VM_IP, 5, &[]);
    assert_eq!(replies(&r), vec![1, 2, 3, 4, 5], "{r}");
    assert!(h.rvsd_running());
    // Changed while no server ran (written into the file directly).
    let db = h.dir.join("conf.db");
    rvs_tests::sh(
        "ovsdb-tool",
        &[
            "transact",
            db.to_str().unwrap(),
            r#"["Open_vSwitch",{"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["other_config","insert",["map",[["flow-restore-wait","true"]]]]]}]"#,
        ],
    );
    h.start_ovsdb();
    wait_for("rvsd to reconnect", Duration::from_secs(15), || {
        h.log().contains("reconnected to the database")
    });
    wait_for("the change applied", Duration::from_secs(10), || {
        h.log().contains("flow-restore-wait=true: forwarding held")
    });
    pings_held(&h, &ns, 3);
    resume(&h, &ns, 2);
}

/// The agent gives cloud0 its link-local address once, at add-br: the
/// bridge's kernel device must outlive a crash of rvsd with its address,
/// routes and MAC, and carry traffic again once rvsd is back.
#[test]
fn a_bridge_s_kernel_device_keeps_its_address_and_mac_across_a_crash() {
    let mut h = Host::start("rstif");
    h.vsctl(&["add-br", "cloud0"]);
    h.ns.exec(&["ip", "link", "set", "cloud0", "up"]);
    h.ns.exec(&[
        "ip",
        "address",
        "add",
        "169.254.0.1/255.255.0.0",
        "dev",
        "cloud0",
    ]);
    let ns = tenant(&h, "cloud0", "rsv", "169.254.3.2/16");
    let out = rvs_tests::ping(&ns, "169.254.0.1", 3, &[]);
    assert_eq!(replies(&out), vec![1, 2, 3], "{out}");
    let mac = h.ns.exec(&["cat", "/sys/class/net/cloud0/address"]);
    h.kill_rvsd();
    // rvsd is gone; the device and its address are not.
    let addr =
        h.ns.exec(&["ip", "-o", "-4", "address", "show", "dev", "cloud0"]);
    assert!(addr.contains("inet 169.254.0.1/16"), "{addr}");
    h.start_rvsd();
    wait_for("cloud0 back in the switch", Duration::from_secs(10), || {
        h.ofport("cloud0") == 65534 && h.get("Interface", "cloud0", "error") == "[]"
    });
    assert_eq!(h.ns.exec(&["cat", "/sys/class/net/cloud0/address"]), mac);
    let addr =
        h.ns.exec(&["ip", "-o", "-4", "address", "show", "dev", "cloud0"]);
    assert!(addr.contains("inet 169.254.0.1/16"), "{addr}");
    rvs_tests::reachable(&ns, "169.254.0.1", 20);
    let out = rvs_tests::ping(&ns, "169.254.0.1", 3, &[]);
    assert_eq!(replies(&out), vec![1, 2, 3], "{out}");
    // Deleted from the database, it goes from the kernel.
    h.vsctl(&["del-br", "cloud0"]);
    assert!(!h.ns.exec(&["ip", "-o", "link", "show"]).contains("cloud0:"));
}
