//! The CloudStack agent's own ovs-vsctl commands, verbatim, against rvsd;
//! ports in rvsd exactly as the database says after each.
use rvs_tests::Host;

fn dp_ports(h: &Host) -> Vec<String> {
    let s = h.appctl(&["dpif/show"]);
    s.lines()
        .filter(|l| l.starts_with("    "))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn agent_sequence() {
    let h = Host::start("agent");
    h.vsctl(&["add-br", "cloud0"]);
    // The agent configures the link-local address at once: the bridge's
    // kernel device exists as soon as add-br has returned.
    h.ns.exec(&["ip", "link", "set", "cloud0", "up"]);
    h.ns.exec(&[
        "ip",
        "address",
        "add",
        "169.254.0.1/255.255.0.0",
        "dev",
        "cloud0",
    ]);
    let addr =
        h.ns.exec(&["ip", "-o", "-4", "address", "show", "dev", "cloud0"]);
    assert!(addr.contains("inet 169.254.0.1/16"), "{addr}");
    let mtu = h.ns.exec(&["cat", "/sys/class/net/cloud0/mtu"]);
    assert_eq!(mtu.trim(), "1500");

    h.vsctl(&["add-br", "cloudbr0"]);
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
    let path = format!("options:vhost-server-path={}//csdpdk-2", h.dir.display());
    h.vsctl(&[
        "add-port",
        "cloudbr0",
        "csdpdk-2",
        "vlan_mode=access",
        "tag=30",
        "--",
        "set",
        "Interface",
        "csdpdk-2",
        "type=dpdkvhostuserclient",
        &path,
    ]);
    assert!(
        h.dir.join("csdpdk-1").exists(),
        "server socket created before add-port returned"
    );
    // Fake bridge: a tagged internal port on its parent.
    h.vsctl(&["add-br", "cloudbr1", "cloudbr0", "300"]);

    assert_eq!(h.vsctl(&["list-br"]), "cloud0\ncloudbr0\ncloudbr1\n");
    assert!(h.vsctl_raw(&["br-exists", "cloudbr0"]).status.success());
    assert_eq!(
        h.vsctl_raw(&["br-exists", "nosuchbr"]).status.code(),
        Some(2)
    );
    assert_eq!(h.vsctl(&["br-to-parent", "cloudbr1"]).trim(), "cloudbr0");
    assert_eq!(h.vsctl(&["br-to-vlan", "cloudbr1"]).trim(), "300");
    assert_eq!(h.get("Interface", "csdpdk-1", "ofport"), "1");
    assert_eq!(h.get("Interface", "csdpdk-2", "ofport"), "2");
    assert_eq!(h.get("Interface", "cloudbr1", "ofport"), "3");
    assert_eq!(h.get("Interface", "cloudbr0", "ofport"), "65534");
    assert_eq!(h.get("Interface", "csdpdk-1", "error"), "[]");
    let show = h.vsctl(&["show"]);
    for want in [
        "Bridge cloudbr0",
        "Port csdpdk-1",
        "tag: 30",
        "type: dpdkvhostuser",
        "type: dpdkvhostuserclient",
        "Port cloudbr1",
        "tag: 300",
        "Bridge cloud0",
    ] {
        assert!(show.contains(want), "{want} missing from:\n{show}");
    }
    assert!(h
        .ns
        .exec(&["ip", "link", "show", "cloudbr1"])
        .contains("cloudbr1"));
    assert_eq!(
        dp_ports(&h),
        vec![
            "cloud0 65534/0: (tap)",
            "cloudbr0 65534/1: (tap)",
            "cloudbr1 3/4: (tap)",
            "csdpdk-1 1/2: (dpdkvhostuser)",
            "csdpdk-2 2/3: (dpdkvhostuserclient)"
        ]
    );
    assert_eq!(h.get("Open_vSwitch", ".", "dpdk_initialized"), "true");
    assert!(h
        .get("Open_vSwitch", ".", "dpdk_version")
        .contains("DPDK 22.11"));
    assert_eq!(
        h.get("Bridge", "cloudbr0", "datapath_id").len(),
        18,
        "16 hex digits, quoted"
    );

    h.vsctl(&["del-port", "csdpdk-1"]);
    assert!(
        !h.dir.join("csdpdk-1").exists(),
        "socket removed with the port"
    );
    h.vsctl(&["del-br", "cloudbr1"]);
    assert!(
        !h.ns
            .exec(&["ip", "-o", "link", "show"])
            .contains("cloudbr1:"),
        "fake bridge's device gone"
    );
    assert_eq!(
        dp_ports(&h),
        vec![
            "cloud0 65534/0: (tap)",
            "cloudbr0 65534/1: (tap)",
            "csdpdk-2 2/3: (dpdkvhostuserclient)"
        ]
    );
    h.vsctl(&["del-br", "cloud0"]);
    assert!(!h.ns.exec(&["ip", "-o", "link", "show"]).contains("cloud0:"));
    assert_eq!(h.vsctl(&["list-br"]), "cloudbr0\n");
    // ofport_request is honoured.
    h.vsctl(&[
        "add-port",
        "cloudbr0",
        "p9",
        "--",
        "set",
        "Interface",
        "p9",
        "type=dpdkvhostuser",
        "ofport_request=9",
    ]);
    assert_eq!(h.ofport("p9"), 9);
}

#[test]
fn bad_rows_show_an_error_and_leave_the_rest_working() {
    let h = Host::start("badrows");
    h.vsctl(&["add-br", "br0"]);
    h.vsctl(&[
        "add-port",
        "br0",
        "good",
        "--",
        "set",
        "Interface",
        "good",
        "type=dpdkvhostuser",
    ]);
    let cases: [(&str, Vec<&str>, &str); 5] = [
        (
            "bad-type",
            vec!["type=frobnicator"],
            "unknown interface type 'frobnicator'",
        ),
        (
            "bad-dpdk",
            vec!["type=dpdk"],
            "'bad-dpdk' is missing 'options:dpdk-devargs'",
        ),
        (
            "bad-args",
            vec!["type=dpdk", "options:dpdk-devargs=net_nosuchdriver0"],
            "Error attaching device 'net_nosuchdriver0' to DPDK",
        ),
        (
            "bad-path",
            vec![
                "type=dpdkvhostuserclient",
                "options:vhost-server-path=/nonexistent/dir/sock",
            ],
            "directory /nonexistent/dir does not exist",
        ),
        (
            "bad-sys",
            vec!["type=system"],
            "could not open network device bad-sys (No such device)",
        ),
    ];
    for (name, sets, want) in &cases {
        let mut a = vec!["add-port", "br0", name, "--", "set", "Interface", name];
        a.extend(sets.iter());
        let o = h.vsctl_raw(&a);
        assert!(o.status.success(), "ovs-vsctl reports, it does not fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("Error detected while setting up '{name}'"))
                && err.contains(want),
            "{name}: {err}"
        );
        assert_eq!(h.ofport(name), -1);
        assert!(h.get("Interface", name, "error").contains(want));
    }
    assert_eq!(h.ofport("good"), 1);
    assert_eq!(h.get("Interface", "good", "error"), "[]");
    // A row fixed in place comes up.
    h.vsctl(&[
        "set",
        "Interface",
        "bad-args",
        "options:dpdk-devargs=net_tap_fixed,iface=fixed0",
    ]);
    assert_eq!(h.get("Interface", "bad-args", "error"), "[]");
    assert!(h.ofport("bad-args") > 0);
    assert!(h
        .ns
        .exec(&["ip", "link", "show", "fixed0"])
        .contains("fixed0"));
    // Bad VLAN settings are refused with the field named.
    let o = h.vsctl_raw(&[
        "add-port",
        "br0",
        "v1",
        "vlan_mode=native-untagged",
        "--",
        "set",
        "Interface",
        "v1",
        "type=dpdkvhostuser",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needs a tag"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dp = h.appctl(&["dpif/show"]);
    assert!(dp.contains("good 1/") && dp.contains("bad-args "), "{dp}");
    assert!(!dp.contains("bad-type") && !dp.contains("bad-path"));
}
