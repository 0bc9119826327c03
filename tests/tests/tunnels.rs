//! Tunnels against real peers: the Linux kernel's VXLAN on the far side of
//! a veth underlay, namespaces as tenants, tshark reading the underlay.
use rvs_tests::{
    drop_count, key_counts, ping, reachable, tenant, underlay, wait_for, Capture, Host, Netns,
};
use std::time::Duration;

fn http_get(client: &Netns, server: &Netns, addr: &str, dir: &std::path::Path) -> String {
    let mut srv = server.spawn(&[
        "python3",
        "-m",
        "http.server",
        "--bind",
        addr,
        "--directory",
        dir.to_str().unwrap(),
        "8089",
    ]);
    wait_for("http.server", Duration::from_secs(10), || {
        server
            .try_exec(&["sh", "-c", &format!("ss -ltn | grep -q {addr}:8089")])
            .status
            .success()
    });
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

#[test]
fn vxlan_with_the_linux_kernel() {
    let h = Host::start("vxk");
    let far = Netns::new("vxkf");
    underlay(&h, "br-phy", "vxu0", "10.31.0.1/24", &far, "vxf0");
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
    // The kernel's vxlan device leaves room for its 50 bytes of headers.
    let t = tenant(&h, "br-t", "vxkt", "192.168.31.1/24");
    t.exec(&["ip", "link", "set", "vxkti", "mtu", "1450"]);

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
    let out = ping(&t, "192.168.31.2", 5, &[]);
    assert!(out.contains("5 packets transmitted, 5 received"), "{out}");
    let after = key_counts(&h, "vxlan", 4242);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (5, 5, 0)
    );
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
