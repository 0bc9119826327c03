//! rvsd where ovs-vswitchd was: installed by control/dist/install.sh as a
//! systemd drop-in for Debian's ovs-vswitchd.service (checked by
//! systemd-analyze against Debian's own unit), running under the process
//! name CloudStack's plugin library looks for, and switched over from and
//! back to Debian's OVS-DPDK on the same ovsdb-server and database.
use rvs_tests::{ping, reachable, run, tenant, Host};
use std::path::{Path, PathBuf};

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn install(root: &Path, extra: &[&str]) -> String {
    let script = top().join("control/dist/install.sh");
    let mut a = vec![script.to_str().unwrap(), "--root", root.to_str().unwrap()];
    a.extend_from_slice(extra);
    let o = run("bash", &a);
    assert!(
        o.status.success(),
        "install.sh {extra:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// CloudStack's cloudstack_pluginlib.check_switch for the switch:
/// `_is_process_run(OVS_PID_PATH, "ovs-vswitchd")` reads the pid file's
/// first line, drops its last character (the newline) and looks for a line
/// of `ps -ae` holding both the pid and the name.
fn cloudstack_switch_check(pidfile: &Path) -> &'static str {
    let Ok(text) = std::fs::read_to_string(pidfile) else {
        return "NO_SWITCH_PID_FILE";
    };
    let line = text
        .lines()
        .next()
        .map(|l| format!("{l}\n"))
        .unwrap_or_default();
    let pid = &line[..line.len().saturating_sub(1)];
    let ps = rvs_tests::sh("ps", &["-ae"]);
    if ps
        .lines()
        .any(|l| l.contains(pid) && l.contains("ovs-vswitchd"))
    {
        "SUCCESS"
    } else {
        "SWITCH_NOT_RUN"
    }
}

#[test]
fn installed_as_ovs_vswitchd_s_drop_in_it_passes_cloudstack_s_switch_check() {
    let root = PathBuf::from(format!("/tmp/rvs-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    install(&root, &[]);
    let link = root.join("usr/lib/rvs/ovs-vswitchd");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("rvsd"));
    let dropin = root.join("etc/systemd/system/ovs-vswitchd.service.d/rvs.conf");
    let conf = std::fs::read_to_string(&dropin).unwrap();
    let exec: Vec<&str> = conf
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .collect();
    // The unit's own ExecStart (ovs-ctl) is cleared, then rvsd's.
    assert_eq!(
        exec,
        vec![
            "",
            "/usr/lib/rvs/ovs-vswitchd --db unix:/var/run/openvswitch/db.sock --rundir /var/run/openvswitch --pidfile $RVS_OPTS"
        ]
    );
    // systemd itself loads Debian's unit with the drop-in: no unknown key,
    // the command exists and is executable in the installed tree.
    let units = root.join("lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for u in ["ovs-vswitchd.service", "ovsdb-server.service"] {
        std::fs::copy(Path::new("/lib/systemd/system").join(u), units.join(u))
            .expect("Debian's openvswitch-switch units: bash ci/setup.sh");
    }
    let rootarg = format!("--root={}", root.display());
    let o = run(
        "systemd-analyze",
        &[&rootarg, "verify", "ovs-vswitchd.service"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.trim().is_empty(), "{err}");

    // Started the way the unit starts it (through the link), on a test
    // database and run directory.
    let mut h = Host::without_rvsd("inst");
    h.start_rvsd_from(&link, &[]);
    let pidfile = h.dir.join("ovs-vswitchd.pid");
    assert_eq!(cloudstack_switch_check(&pidfile), "SUCCESS");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", pid.trim())).unwrap();
    assert!(
        cmdline.starts_with(&format!("{}\0", link.display())),
        "{cmdline:?}"
    );
    assert_eq!(
        rvs_tests::sh("pidof", &["ovs-vswitchd"])
            .split_whitespace()
            .filter(|p| *p == pid.trim())
            .count(),
        1
    );
    assert!(h.appctl(&["version"]).contains("rvs"));
    h.stop_rvsd();
    // A stopped switch leaves no pid file behind (as ovs-vswitchd).
    assert_eq!(cloudstack_switch_check(&pidfile), "NO_SWITCH_PID_FILE");

    // Uninstalled: nothing of rvs is left, Debian's unit is as it was.
    let out = install(&root, &["--uninstall"]);
    assert!(out.contains("systemctl restart ovs-vswitchd"), "{out}");
    let left = rvs_tests::sh("find", &[root.to_str().unwrap(), "-not", "-type", "d"]);
    let mut left: Vec<&str> = left.lines().collect();
    left.sort();
    let want: Vec<String> = ["ovs-vswitchd.service", "ovsdb-server.service"]
        .iter()
        .map(|u| units.join(u).display().to_string())
        .collect();
    assert_eq!(left, want);
    let _ = std::fs::remove_dir_all(&root);
}

/// The switch-over procedure of the README: ovs-vswitchd (Debian's OVS-DPDK)
/// stopped, rvsd started on the same database, and back. Bridges, ports and
/// their OpenFlow numbers come through unchanged and two tenants reach each
/// other through whichever switch runs.
#[test]
fn switch_over_from_ovs_dpdk_and_back_on_the_same_database() {
    let mut h = Host::without_rvsd("swo");
    h.start_ovs_vswitchd();
    h.vsctl(&[
        "add-br",
        "cloudbr0",
        "--",
        "set",
        "bridge",
        "cloudbr0",
        "datapath_type=netdev",
    ]);
    let a = tenant(&h, "cloudbr0", "swa", "10.61.0.1/24");
    let b = tenant(&h, "cloudbr0", "swb", "10.61.0.2/24");
    h.vsctl(&[
        "add-port",
        "cloudbr0",
        "csdpdk-1",
        "vlan_mode=access",
        "tag=30",
        "--",
        "set",
        "Interface",
        "csdpdk-1",
        "type=dpdkvhostuser",
    ]);
    let ports = |h: &Host| {
        ["swao", "swbo", "csdpdk-1"]
            .iter()
            .map(|p| h.ofport(p))
            .collect::<Vec<_>>()
    };
    let under_ovs = ports(&h);
    assert!(under_ovs.iter().all(|&p| p > 0), "{under_ovs:?}");
    reachable(&a, "10.61.0.2", 30);
    // The host's own address on the bridge, as the agent sets cloud0's.
    h.ns.exec(&["ip", "link", "set", "cloudbr0", "up"]);
    h.ns.exec(&["ip", "address", "add", "10.61.0.254/24", "dev", "cloudbr0"]);
    reachable(&a, "10.61.0.254", 30);
    let show = h.vsctl(&["show"]);

    // Over to rvs.
    h.stop_rvsd();
    h.start_rvsd();
    h.wait_link_up(&["swao", "swbo"]);
    assert_eq!(ports(&h), under_ovs);
    assert_eq!(h.vsctl(&["show"]), show);
    assert_eq!(h.get("Interface", "csdpdk-1", "error"), "[]");
    assert_eq!(h.get("Interface", "cloudbr0", "error"), "[]");
    reachable(&a, "10.61.0.254", 30);
    rvs_tests::wait_for(
        "vhost-user socket served",
        std::time::Duration::from_secs(10),
        || h.dir.join("csdpdk-1").exists(),
    );
    reachable(&a, "10.61.0.2", 30);
    let out = ping(&b, "10.61.0.1", 5, &[]);
    assert!(out.contains("5 packets transmitted, 5 received"), "{out}");
    assert!(h.appctl(&["version"]).contains("rvs"));

    // And back to OVS. rvs's bridge devices are multi-queue taps OVS
    // cannot open: `exit --cleanup` removes them (as OVS's own does), and
    // the host's address goes on OVS's new device (the README's procedure).
    h.appctl(&["exit", "--cleanup"]);
    h.stop_rvsd();
    assert!(!h
        .ns
        .try_exec(&["ip", "link", "show", "cloudbr0"])
        .status
        .success());
    h.start_ovs_vswitchd();
    assert_eq!(ports(&h), under_ovs);
    reachable(&a, "10.61.0.2", 30);
    assert!(h.appctl(&["version"]).contains("Open vSwitch"));
    rvs_tests::wait_for("OVS's cloudbr0", std::time::Duration::from_secs(10), || {
        h.ns.try_exec(&["ip", "link", "show", "cloudbr0"])
            .status
            .success()
    });
    h.ns.exec(&["ip", "link", "set", "cloudbr0", "up"]);
    h.ns.exec(&["ip", "address", "add", "10.61.0.254/24", "dev", "cloudbr0"]);
    reachable(&a, "10.61.0.254", 30);
}
