//! rvsd's life around the database and the operator: ovsdb-server restarts,
//! ovs-appctl version/list-commands/exit, refusing ports the mbuf budget
//! cannot back, rvs-hugepages without root.
use rvs_tests::{wait_for, Host};
use std::process::Command;
use std::time::Duration;

/// Runs rvsd in the foreground on `h`'s database and run directory until
/// it exits (start-up refusals).
fn rvsd_once(h: &Host, prefix: &str) -> std::process::Output {
    Command::new(rvs_tests::rvsd_bin())
        .args([
            "--db",
            &h.db(),
            "--rundir",
            h.dir.to_str().unwrap(),
            "--file-prefix",
            prefix,
            "--pidfile",
        ])
        .output()
        .unwrap()
}

#[test]
fn survives_an_ovsdb_server_restart_and_converges_after() {
    let mut h = Host::start("dbr");
    h.add_vhost_ports("br0", &["a"]);
    h.restart_ovsdb();
    // Changes made while rvsd reconnects are picked up: ovs-vsctl (which
    // waits for cur_cfg) returns only once rvsd applied them.
    h.vsctl(&[
        "add-port",
        "br0",
        "b",
        "--",
        "set",
        "Interface",
        "b",
        "type=dpdkvhostuser",
    ]);
    assert_eq!(h.ofport("b"), 2);
    assert!(h.dir.join("b").exists());
    assert_eq!(h.ofport("a"), 1, "ofport kept");
    assert!(
        h.log().contains("reconnected to the database"),
        "{}",
        h.log_tail()
    );
    assert!(h.rvsd_running());
}

#[test]
fn appctl_version_list_commands_and_exit() {
    let mut h = Host::start("ctl");
    h.add_vhost_ports("br0", &["a"]);
    let v = h.appctl(&["version"]);
    assert!(v.starts_with("rvsd (rvs) 0.1.0\nDPDK 22.11"), "{v}");
    let l = h.appctl(&["list-commands"]);
    for c in [
        "fdb/show",
        "dpif-netdev/pmd-stats-show",
        "dpif-netdev/pmd-rxq-show",
        "pmd-stats-clear",
        "dpif/show",
        "exit",
        "version",
    ] {
        assert!(l.contains(c), "{c} missing: {l}");
    }
    // A bad request gets an error and the socket keeps serving.
    let t = h.ctl_path();
    let o = Command::new("ovs-appctl")
        .args(["-t", t.to_str().unwrap(), "fdb/show"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("requires at least 1 arguments"));
    let o = Command::new("ovs-appctl")
        .args(["-t", t.to_str().unwrap(), "fdb/show", "nosuchbr"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such bridge"));
    let o = Command::new("ovs-appctl")
        .args(["-t", t.to_str().unwrap(), "no-such-command"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a valid command"));
    assert!(h.appctl(&["version"]).contains("rvsd"));
    // A bare target name works as for ovs-vswitchd: OVS_RUNDIR's pid file
    // (locked by its owner) names the socket.
    let o = Command::new("ovs-appctl")
        .env("OVS_RUNDIR", &h.dir)
        .args(["-t", "ovs-vswitchd", "version"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("rvsd (rvs)"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A second switch on the same run directory is refused at once.
    let o = rvsd_once(&h, "second");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is locked by another running switch"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // exit: a clean stop that removes what rvsd created.
    h.appctl(&["exit"]);
    let st = h.wait_rvsd_exit();
    assert!(st.success(), "{st}");
    assert!(!h.dir.join("a").exists(), "vhost socket removed");
    assert!(!h.dir.join("ovs-vswitchd.pid").exists());
    assert!(!t.exists(), "unixctl socket removed");
    // The bridge's kernel device stays (as OVS's datapath keeps it without
    // --cleanup), so its addresses survive until rvsd comes back.
    assert!(
        h.ns.exec(&["ip", "-o", "link"]).contains("br0:"),
        "internal port kept"
    );
    // And it comes back to the same state from the database.
    h.start_rvsd();
    wait_for("socket back", Duration::from_secs(10), || {
        h.dir.join("a").exists()
    });
    assert_eq!(h.ofport("a"), 1);
    assert!(h.ns.exec(&["ip", "-o", "link"]).contains("br0:"));
}

#[test]
fn ports_the_mbuf_pool_cannot_back_are_refused_with_the_shortfall() {
    let h = Host::start("budget");
    h.vsctl(&["add-br", "br0"]);
    // 64 rx queues of 1024 descriptors hold 65536 mbufs: the 256 MB pool
    // (about 85000 mbufs) backs one such port, not two.
    let o = h.vsctl_raw(&[
        "add-port",
        "br0",
        "big1",
        "--",
        "set",
        "Interface",
        "big1",
        "type=dpdk",
        "options:dpdk-devargs=net_tap_big1,iface=big1",
        "options:n_rxq=64",
    ]);
    assert!(o.status.success());
    assert_eq!(
        h.get("Interface", "big1", "error"),
        "[]",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    h.vsctl_raw(&[
        "add-port",
        "br0",
        "big2",
        "--",
        "set",
        "Interface",
        "big2",
        "type=dpdk",
        "options:dpdk-devargs=net_tap_big2,iface=big2",
        "options:n_rxq=64",
    ]);
    let e = h.get("Interface", "big2", "error");
    assert!(
        e.contains("not enough packet buffers on NUMA node 0: the port needs 66592 mbufs"),
        "{e}"
    );
    assert!(
        e.contains("raise other_config:dpdk-socket-mem by at least"),
        "{e}"
    );
    assert_eq!(h.ofport("big2"), -1);
    let pools = h.appctl(&["rvs/mempool-show"]);
    assert!(
        pools.starts_with("NUMA node 0: pool rvs_mp_0: 85019 mbufs of 2176 bytes, "),
        "{pools}"
    );
    assert!(
        pools.contains("68672 reserved by ports"),
        "br0 (2080) and big1 (66592) hold their reservations: {pools}"
    );
    // A NIC-type port reports the device's own error counters too.
    let st = h.wait_stats("big1", "device counters", |s| {
        s.contains_key("rx_mbuf_allocation_errors")
    });
    assert_eq!(
        (st["rx_missed_errors"], st["rx_mbuf_allocation_errors"]),
        (0, 0)
    );
    // Freeing the first makes room for the second (retried on the change).
    h.vsctl(&["del-port", "big1"]);
    h.vsctl(&["set", "Interface", "big2", "options:n_rxq=32"]);
    assert_eq!(h.get("Interface", "big2", "error"), "[]");
    assert!(h.ofport("big2") > 0);
}

#[test]
fn rvs_hugepages_reports_and_refuses_without_root() {
    let exe = rvs_tests::rvsd_bin().with_file_name("rvs-hugepages");
    let show = Command::new(&exe).output().unwrap();
    let out = String::from_utf8_lossy(&show.stdout);
    assert!(
        out.starts_with("node   size      total     free\n"),
        "{out}"
    );
    assert!(out.contains("hugetlbfs: /dev/hugepages"), "{out}");
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["reserve", "8"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("reserving hugepages needs root"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(&exe)
        .args(["reserve", "8", "--size", "4K"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("page size \"4K\" is not 2M or 1G"));
}

#[test]
fn a_bad_cache_size_stops_start_up_and_says_what_to_fix() {
    let h = Host::without_rvsd("emcbad");
    h.vsctl(&[
        "--no-wait",
        "set",
        "Open_vSwitch",
        ".",
        "other_config:emc-entries=lots",
    ]);
    let o = rvsd_once(&h, &h.prefix);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("other_config:emc-entries=\"lots\": give a number of exact-match cache entries per PMD between 2 and 4194304"),
        "{err}"
    );
    // Fixed, it starts and says what it uses.
    let mut h = h;
    h.vsctl(&[
        "--no-wait",
        "set",
        "Open_vSwitch",
        ".",
        "other_config:emc-entries=1000",
    ]);
    h.start_rvsd();
    assert!(
        h.log().contains("exact-match cache: 1024 entries per PMD"),
        "{}",
        h.log()
    );
}
