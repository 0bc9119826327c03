//! Tunnels against real peers: the Linux kernel's VXLAN on the far side of
//! a veth underlay, namespaces as tenants, tshark reading the underlay.
use rvs_tests::{
    drop_count, key_counts, ping, pmd_stat, reachable, tenant, underlay, wait_for, Capture, Host,
    Netns,
};

fn http_get(client: &Netns, server: &Netns, addr: &str, dir: &std::path::Path) -> String {
    let mut srv = rvs_tests::http_server(server, addr, "8089", dir);
    let body = client.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "20",
        &format!("http://{addr}:8089/blob"),
    ]);
    let _ = srv.kill();
    let _ = srv.wait();
    body
}

/// rvsd with underlay bridge br-phy (10.31.0.1) and tenant bridge br-t
/// whose port vxlan0 (VNI 4242) reaches a kernel vxlan device in `far`
/// (10.31.0.2, overlay 192.168.31.2); the tenant namespace has
/// 192.168.31.1 with the given MTU.
fn kernel_vxlan(name: &str, tenant_mtu: u16) -> (Host, Netns, Netns) {
    let h = Host::start(name);
    let far = Netns::new(&format!("{name}f"));
    underlay(
        &h,
        "br-phy",
        &format!("{name}u0"),
        "10.31.0.1/24",
        &far,
        "vxf0",
    );
    far.exec(&["ip", "address", "add", "10.31.0.2/24", "dev", "vxf0"]);
    far.exec(&[
        "ip",
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "4242",
        "remote",
        "10.31.0.1",
        "local",
        "10.31.0.2",
        "dstport",
        "4789",
        "dev",
        "vxf0",
    ]);
    far.exec(&["ip", "link", "set", "vx0", "up"]);
    far.exec(&["ip", "address", "add", "192.168.31.2/24", "dev", "vx0"]);
    far.exec(&["ethtool", "-K", "vx0", "tx", "off"]);

    h.vsctl(&["add-br", "br-t"]);
    h.vsctl(&[
        "add-port",
        "br-t",
        "vxlan0",
        "--",
        "set",
        "interface",
        "vxlan0",
        "type=vxlan",
        "options:remote_ip=10.31.0.2",
        "options:key=4242",
    ]);
    assert_eq!(h.get("Interface", "vxlan0", "error"), "[]");
    assert_eq!(h.ofport("vxlan0"), 1);
    let t = tenant(&h, "br-t", &format!("{name}t"), "192.168.31.1/24");
    t.exec(&[
        "ip",
        "link",
        "set",
        &format!("{name}ti"),
        "mtu",
        &tenant_mtu.to_string(),
    ]);
    (h, far, t)
}

#[test]
fn vxlan_with_the_linux_kernel() {
    // The kernel's vxlan device leaves room for its 50 bytes of headers.
    let (h, far, t) = kernel_vxlan("vxk", 1450);
    reachable(&t, "192.168.31.2", 20);
    let route = h.appctl(&["ovs/route/lookup", "10.31.0.2"]);
    assert_eq!(route, "src 10.31.0.1\ngateway ::\ndev br-phy\n");
    let show = h.appctl(&["ovs/route/show"]);
    assert!(
        show.contains("Cached: 10.31.0.0/24 dev br-phy SRC 10.31.0.1\n"),
        "{show}"
    );
    let arp = h.appctl(&["tnl/arp/show"]);
    let far_mac = far.exec(&["cat", "/sys/class/net/vxf0/address"]);
    assert!(
        arp.contains(&format!(
            "10.31.0.2{}{}   br-phy",
            " ".repeat(46 - 9),
            far_mac.trim()
        )),
        "{arp}"
    );

    // Exact counts: 5 echo requests out, 5 replies in, through key 4242,
    // seen on the underlay as VXLAN with that VNI and sound checksums.
    let cap = Capture::start_with(
        &far,
        "vxf0",
        &[
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ],
        "vxlan && icmp",
        &[
            "ip.src",
            "vxlan.vni",
            "ip.checksum.status",
            "_ws.expert.severity",
            "_ws.malformed",
            "icmp.type",
        ],
        4,
    );
    let before = key_counts(&h, "vxlan", 4242);
    let recirc = pmd_stat(&h, "packet recirculations");
    let out = ping(&t, "192.168.31.2", 5, &[]);
    assert!(out.contains("5 packets transmitted, 5 received"), "{out}");
    let after = key_counts(&h, "vxlan", 4242);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (5, 5, 0)
    );
    // The 5 replies, decapsulated, take a second pass through br-t; the 5
    // requests, encapsulated, go straight to the underlay port br-phy's
    // NORMAL has learned for the far host, without a pass through br-phy.
    assert_eq!(pmd_stat(&h, "packet recirculations") - recirc, 5);
    let lines = cap.finish();
    assert_eq!(lines.len(), 10, "{lines:?}");
    for l in &lines {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f[1], "4242", "{l}");
        assert!(
            f[2].split(',').all(|s| s == "1"),
            "outer IP checksum not good: {l}"
        );
        assert_eq!((f[3], f[4]), ("", ""), "tshark warns: {l}");
    }
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("10.31.0.1,")).count(),
        5
    );

    wait_for(
        "tunnel_egress_iface",
        std::time::Duration::from_secs(5),
        || {
            h.vsctl(&[
                "--if-exists",
                "get",
                "Interface",
                "vxlan0",
                "status:tunnel_egress_iface",
            ])
            .trim()
                == "br-phy"
        },
    );
    // Routes of our own, and a flushed neighbour cache that refills.
    assert_eq!(
        h.appctl(&["ovs/route/add", "10.99.0.0/16", "br-phy", "10.31.0.254"]),
        "OK\n"
    );
    let show = h.appctl(&["ovs/route/show"]);
    assert!(
        show.contains("User: 10.99.0.0/16 dev br-phy GW 10.31.0.254 SRC 10.31.0.1\n"),
        "{show}"
    );
    assert_eq!(
        h.appctl(&["ovs/route/lookup", "10.99.1.1"]),
        "src 10.31.0.1\ngateway 10.31.0.254\ndev br-phy\n"
    );
    assert_eq!(h.appctl(&["ovs/route/del", "10.99.0.0/16"]), "OK\n");
    let t_ctl = h.ctl_path();
    let again = rvs_tests::run(
        "ovs-appctl",
        &[
            "-t",
            t_ctl.to_str().unwrap(),
            "ovs/route/del",
            "10.99.0.0/16",
        ],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("Not found"));
    assert_eq!(h.appctl(&["tnl/arp/flush"]), "OK\n");
    assert!(!h.appctl(&["tnl/neigh/show"]).contains("10.31.0.2"));
    reachable(&t, "192.168.31.2", 10);
    assert!(h.appctl(&["tnl/neigh/show"]).contains("10.31.0.2"));

    // TCP both ways: curl across the overlay to an http.server.
    let blob: String = (0..40000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    std::fs::write(h.dir.join("blob"), &blob).unwrap();
    assert_eq!(http_get(&t, &far, "192.168.31.2", &h.dir), blob);
    assert_eq!(http_get(&far, &t, "192.168.31.1", &h.dir), blob);

    // Split horizon and key isolation: a frame with another VNI from the
    // same remote is dropped and counted, never delivered.
    let unknown = drop_count(&h, "tunnel-unknown-key");
    far.exec(&[
        "ip",
        "link",
        "add",
        "vx1",
        "type",
        "vxlan",
        "id",
        "4243",
        "remote",
        "10.31.0.1",
        "local",
        "10.31.0.2",
        "dstport",
        "4789",
        "dev",
        "vxf0",
    ]);
    far.exec(&["ip", "link", "set", "vx1", "up"]);
    far.exec(&["ip", "address", "add", "192.168.32.2/24", "dev", "vx1"]);
    let out = ping(&far, "192.168.32.1", 3, &["-I", "vx1"]);
    assert!(out.contains("3 packets transmitted, 0 received"), "{out}");
    assert_eq!(drop_count(&h, "tunnel-unknown-key") - unknown, 3);
    assert_eq!(key_counts(&h, "vxlan", 4243), (0, 0, 3));
}

#[test]
fn tunnel_peer_allowlist_drops_and_counts_other_senders() {
    let (h, _far, t) = kernel_vxlan("vxa", 1450);
    reachable(&t, "192.168.31.2", 20);
    let set = |v: &str| {
        h.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:tunnel-peer-allowlist=\"{v}\""),
        ])
    };
    // The peer 10.31.0.2 is not in the list: its 5 replies are dropped
    // and counted, against its key too.
    set("10.31.0.9,172.16.0.0/12");
    let denied = drop_count(&h, "tunnel-peer-denied");
    let (_, decap0, dropped0) = key_counts(&h, "vxlan", 4242);
    let r = ping(&t, "192.168.31.2", 5, &["-W", "1"]);
    assert!(r.contains(" 0 received"), "{r}");
    wait_for("5 denied", std::time::Duration::from_secs(5), || {
        drop_count(&h, "tunnel-peer-denied") == denied + 5
    });
    let (_, decap1, dropped1) = key_counts(&h, "vxlan", 4242);
    assert_eq!((decap1 - decap0, dropped1 - dropped0), (0, 5));
    // A bad list is refused whole (the field named) and the last stays.
    set("10.31.0.0/33");
    assert!(h.log().contains(
        "other_config:tunnel-peer-allowlist: \"10.31.0.0/33\" has a prefix length outside 0-32"
    ));
    let r = ping(&t, "192.168.31.2", 2, &["-W", "1"]);
    assert!(r.contains(" 0 received"), "{r}");
    // Its network in the list: through again, nothing more denied.
    set("10.31.0.0/24");
    let r = ping(&t, "192.168.31.2", 3, &[]);
    assert!(r.contains("3 received"), "{r}");
    assert_eq!(drop_count(&h, "tunnel-peer-denied"), denied + 7);
}

#[test]
fn mtu_limits_with_and_without_df() {
    // A tenant at 1500 over a 1500 underlay: inner IP packets of 1450
    // bytes fit VXLAN's 50 bytes of overhead, 1451 do not.
    let (h, far, t) = kernel_vxlan("vxm", 1500);
    far.exec(&["ip", "link", "set", "vxf0", "mtu", "1600"]);
    far.exec(&["ip", "link", "set", "vx0", "mtu", "1500"]);
    h.ns.exec(&["ip", "link", "set", "vxmu0", "mtu", "1600"]);
    reachable(&t, "192.168.31.2", 20);
    let (fit, over) = ("1422", "1423"); // ICMP payload: IP length - 28
    let mtu_drops = drop_count(&h, "mtu-exceeded");
    // Without DF first (once the tenant knows the path MTU it fragments
    // by itself): just under passes, just over is dropped and counted.
    let out = ping(&t, "192.168.31.2", 3, &["-M", "dont", "-s", fit]);
    assert!(out.contains("3 packets transmitted, 3 received"), "{out}");
    let out = ping(&t, "192.168.31.2", 3, &["-M", "dont", "-s", over]);
    assert!(out.contains("3 packets transmitted, 0 received"), "{out}");
    assert_eq!(drop_count(&h, "mtu-exceeded") - mtu_drops, 3);
    // With DF: just under passes; just over is answered with ICMP
    // fragmentation-needed carrying the overlay MTU.
    let out = ping(&t, "192.168.31.2", 3, &["-M", "do", "-s", fit]);
    assert!(out.contains("3 packets transmitted, 3 received"), "{out}");
    let out = ping(&t, "192.168.31.2", 1, &["-M", "do", "-s", over]);
    assert!(out.contains("Frag needed and DF set (mtu = 1450)"), "{out}");
    assert_eq!(drop_count(&h, "mtu-exceeded") - mtu_drops, 4);
    let route = t.exec(&["ip", "route", "get", "192.168.31.2"]);
    assert!(
        route.contains("mtu 1450"),
        "the tenant learned the path MTU: {route}"
    );
    // TCP finds the path MTU the same way: the far side takes 1500-byte
    // frames (its underlay has room), so only our ICMP tells the tenant.
    t.exec(&["ip", "route", "flush", "cache"]);
    let before = drop_count(&h, "mtu-exceeded");
    let lis = far.spawn(&["sh", "-c", "nc -l -N 192.168.31.2 9100 | wc -c"]);
    rvs_tests::wait_for("nc listener", std::time::Duration::from_secs(10), || {
        far.try_exec(&["sh", "-c", "ss -ltn | grep -q 192.168.31.2:9100"])
            .status
            .success()
    });
    t.exec(&[
        "sh",
        "-c",
        "head -c 300000 /dev/zero | nc -N -w 10 192.168.31.2 9100",
    ]);
    let got = lis.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "300000");
    assert!(
        drop_count(&h, "mtu-exceeded") > before,
        "no segment needed ICMP?"
    );
    let route = t.exec(&["ip", "route", "get", "192.168.31.2"]);
    assert!(route.contains("mtu 1450"), "{route}");

    // The underlay's MTU is the endpoint port's: mtu_request on it moves
    // the limit (1400 - 50 = 1350 for the inner IP packet).
    h.vsctl(&["set", "Interface", "br-phy", "mtu_request=1400"]);
    wait_for(
        "br-phy mtu 1400",
        std::time::Duration::from_secs(10),
        || {
            h.ns.exec(&["cat", "/sys/class/net/br-phy/mtu"]).trim() == "1400"
                && h.appctl(&["rvs/tunnel/show"]).contains("underlay mtu 1400")
        },
    );
    t.exec(&["ip", "route", "flush", "cache"]);
    let out = ping(&t, "192.168.31.2", 2, &["-M", "do", "-s", "1322"]);
    assert!(out.contains("2 packets transmitted, 2 received"), "{out}");
    let out = ping(&t, "192.168.31.2", 1, &["-M", "do", "-s", "1323"]);
    assert!(out.contains("Frag needed and DF set (mtu = 1350)"), "{out}");
}

/// GRE with the incumbent: OVS-DPDK 3.1's userspace tunnelling (Debian's
/// ovs-vswitchd-dpdk, netdev datapath, its own database, run directory and
/// DPDK file prefix) on the far side of the underlay, as CloudStack's other
/// hosts would run it. Ping and TCP both ways; tshark decodes the key.
#[test]
fn gre_with_ovs_dpdk() {
    let h = Host::start("ogr");
    let mut o = Host::without_rvsd("ogo");
    o.vsctl(&[
        "--no-wait",
        "set",
        "Open_vSwitch",
        ".",
        "other_config:pmd-cpu-mask=0x1",
    ]);
    o.start_ovs_vswitchd();
    rvs_tests::veth("ogo0", &o.ns, "ogr0", &h.ns);
    // rvs: underlay bridge, tenant bridge with the GRE port (key 77).
    h.vsctl(&["add-br", "br-phy"]);
    h.vsctl(&["add-port", "br-phy", "ogr0"]);
    h.ns.exec(&["ip", "link", "set", "br-phy", "up"]);
    h.ns.exec(&["ip", "address", "add", "10.51.0.1/24", "dev", "br-phy"]);
    h.vsctl(&["add-br", "br-t"]);
    h.vsctl(&[
        "add-port",
        "br-t",
        "gre0",
        "--",
        "set",
        "interface",
        "gre0",
        "type=gre",
        "options:remote_ip=10.51.0.2",
        "options:key=77",
    ]);
    let a = tenant(&h, "br-t", "ogta", "192.168.51.1/24");
    a.exec(&["ip", "link", "set", "ogtai", "mtu", "1400"]);
    // OVS-DPDK: the same, on its userspace (netdev) datapath.
    for br in ["br-phy", "br-t"] {
        o.vsctl(&[
            "add-br",
            br,
            "--",
            "set",
            "bridge",
            br,
            "datapath_type=netdev",
        ]);
    }
    o.vsctl(&["add-port", "br-phy", "ogo0"]);
    o.ns.exec(&["ip", "link", "set", "br-phy", "up"]);
    o.ns.exec(&["ip", "address", "add", "10.51.0.2/24", "dev", "br-phy"]);
    o.ns.exec(&["ethtool", "-K", "ogo0", "tx", "off"]);
    o.vsctl(&[
        "add-port",
        "br-t",
        "gre0",
        "--",
        "set",
        "interface",
        "gre0",
        "type=gre",
        "options:remote_ip=10.51.0.1",
        "options:key=77",
    ]);
    let b = tenant(&o, "br-t", "ogtb", "192.168.51.2/24");
    b.exec(&["ip", "link", "set", "ogtbi", "mtu", "1400"]);

    reachable(&a, "192.168.51.2", 40);
    let cap = Capture::start_with(
        &o.ns,
        "ogo0",
        &["-o", "ip.check_checksum:TRUE"],
        "gre && icmp",
        &[
            "ip.src",
            "gre.key",
            "ip.checksum.status",
            "_ws.expert.severity",
            "_ws.malformed",
        ],
        4,
    );
    let before = key_counts(&h, "gre", 77);
    let out = ping(&a, "192.168.51.2", 5, &[]);
    assert!(out.contains("5 packets transmitted, 5 received"), "{out}");
    let after = key_counts(&h, "gre", 77);
    assert_eq!((after.0 - before.0, after.1 - before.1), (5, 5));
    let lines = cap.finish();
    assert_eq!(lines.len(), 10, "{lines:?}");
    for l in &lines {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f[1], "0x0000004d", "{l}");
        assert!(f[2].split(',').all(|s| s == "1"), "{l}");
        assert_eq!((f[3], f[4]), ("", ""), "tshark warns: {l}");
    }
    let out = ping(&b, "192.168.51.1", 3, &[]);
    assert!(out.contains("3 packets transmitted, 3 received"), "{out}");
    let blob: String = (0..60000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    std::fs::write(h.dir.join("blob"), &blob).unwrap();
    assert_eq!(http_get(&a, &b, "192.168.51.2", &h.dir), blob);
    assert_eq!(http_get(&b, &a, "192.168.51.1", &h.dir), blob);
}

/// A flow-based tunnel port (remote_ip=flow, key=flow) driven by flows
/// through the real ovs-ofctl: set_field on tun_dst and set_tunnel pick
/// the remote and VNI, tun_id/tun_src matches pick what is received.
#[test]
fn flow_based_vxlan_by_openflow() {
    let h = Host::start("vxf");
    let far = Netns::new("vxff");
    underlay(&h, "br-phy", "vxfu0", "10.32.0.1/24", &far, "vxff0");
    far.exec(&["ip", "address", "add", "10.32.0.2/24", "dev", "vxff0"]);
    for (dev, vni, addr) in [
        ("vx0", "500", "192.168.33.2/24"),
        ("vx1", "501", "192.168.34.2/24"),
    ] {
        far.exec(&[
            "ip",
            "link",
            "add",
            dev,
            "type",
            "vxlan",
            "id",
            vni,
            "remote",
            "10.32.0.1",
            "local",
            "10.32.0.2",
            "dstport",
            "4789",
            "dev",
            "vxff0",
        ]);
        far.exec(&["ip", "link", "set", dev, "up"]);
        far.exec(&["ip", "address", "add", addr, "dev", dev]);
        far.exec(&["ethtool", "-K", dev, "tx", "off"]);
    }
    h.vsctl(&["add-br", "br-t"]);
    h.vsctl(&[
        "add-port",
        "br-t",
        "vxf",
        "--",
        "set",
        "interface",
        "vxf",
        "type=vxlan",
        "options:remote_ip=flow",
        "options:key=flow",
    ]);
    let t = tenant(&h, "br-t", "vxft", "192.168.33.1/24");
    t.exec(&["ip", "link", "set", "vxfti", "mtu", "1450"]);
    let (vxf, tp) = (h.ofport("vxf"), h.ofport("vxfto"));
    let flows = format!(
        "priority=10,in_port={tp},actions=set_field:10.32.0.2->tun_dst,set_tunnel:500,output:{vxf}\n\
         priority=10,in_port={vxf},tun_id=500,tun_src=10.32.0.2,actions=output:{tp}\n\
         priority=10,in_port={vxf},tun_id=501,actions=drop\n"
    );
    std::fs::write(h.dir.join("flows.txt"), flows).unwrap();
    h.ofctl(&["del-flows", "br-t"]);
    h.ofctl(&[
        "add-flows",
        "br-t",
        h.dir.join("flows.txt").to_str().unwrap(),
    ]);

    reachable(&t, "192.168.33.2", 20);
    let n = |needle: &str| -> u64 {
        let d = h.ofctl(&["dump-flows", "br-t"]);
        let l = d
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{d}"));
        let at = l.find("n_packets=").unwrap() + 10;
        l[at..].split(',').next().unwrap().parse().unwrap()
    };
    let (out0, in0, drop0) = (n("set_tunnel"), n("tun_id=0x1f4"), n("tun_id=0x1f5"));
    let out = ping(&t, "192.168.33.2", 5, &[]);
    assert!(out.contains("5 packets transmitted, 5 received"), "{out}");
    assert_eq!((n("set_tunnel") - out0, n("tun_id=0x1f4") - in0), (5, 5));
    // VNI 501 reaches the port (key=flow) and the drop flow takes it.
    let out = ping(&far, "192.168.34.1", 3, &["-I", "vx1"]);
    assert!(out.contains("3 packets transmitted, 0 received"), "{out}");
    assert_eq!(n("tun_id=0x1f5") - drop0, 3);
    assert_eq!(key_counts(&h, "vxlan", 501).1, 3);
    let trace = h.appctl(&[
        "ofproto/trace",
        "br-t",
        &format!("in_port={tp},dl_type=0x0800,nw_dst=192.168.33.2"),
    ]);
    assert!(
        trace.contains(&format!(
            "Datapath actions: set(tunnel(tun_id=0x1f4,dst=10.32.0.2)),{vxf}\n"
        )),
        "{trace}"
    );
}
