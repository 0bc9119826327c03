//! Kernel peers: a `system` port on a veth into another namespace, the
//! bridge's `internal` port carrying a host address, and a VM-side port
//! (testpmd answering ARP and ICMP echo): ping and TCP between them.
use rvs_tests::{virtio_user, wait_for, Host, Netns, TestPmd};
use std::time::Duration;

#[test]
fn ping_and_tcp_between_namespace_host_and_vm() {
    let h = Host::start("kp");
    let tenant = Netns::new("kpt");
    rvs_tests::veth("vt0", &tenant, "vh0", &h.ns);
    h.vsctl(&["add-br", "br0"]);
    h.vsctl(&["add-port", "br0", "vh0"]);
    h.vsctl(&[
        "add-port",
        "br0",
        "vm0",
        "--",
        "set",
        "Interface",
        "vm0",
        "type=dpdkvhostuser",
    ]);
    assert_eq!(h.ofport("vh0"), 1);
    assert_eq!(h.get("Interface", "vh0", "error"), "[]");
    h.ns.exec(&["ip", "address", "add", "10.9.0.1/24", "dev", "br0"]);
    h.ns.exec(&["ip", "link", "set", "br0", "up"]);
    tenant.exec(&["ip", "address", "add", "10.9.0.2/24", "dev", "vt0"]);
    // net_af_packet hands on what the kernel gives it: a veth's partial
    // checksums would reach the host unfinished (see docs/ARCHITECTURE.md).
    tenant.exec(&["ethtool", "-K", "vt0", "tx", "off"]);

    let ping = tenant.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.9.0.1"]);
    assert!(ping.contains("3 packets transmitted, 3 received"), "{ping}");
    let ping =
        h.ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.9.0.2"]);
    assert!(ping.contains("3 packets transmitted, 3 received"), "{ping}");

    // TCP: an HTTP server on the host address, curl from the tenant.
    std::fs::write(h.dir.join("hello.txt"), "through rvs\n").unwrap();
    let mut srv = rvs_tests::http_server(&h.ns, "10.9.0.1", "8089", &h.dir);
    let body = tenant.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://10.9.0.1:8089/hello.txt",
    ]);
    let _ = srv.kill();
    let _ = srv.wait();
    assert_eq!(body, "through rvs\n");
    // And the other way: nc from the host to a listener in the tenant.
    let lis = tenant.spawn(&["sh", "-c", "nc -l -N 10.9.0.2 9099 > /dev/null; echo done"]);
    wait_for("nc listener", Duration::from_secs(10), || {
        tenant
            .try_exec(&["sh", "-c", "ss -ltn | grep -q 10.9.0.2:9099"])
            .status
            .success()
    });
    h.ns.exec(&[
        "sh",
        "-c",
        "head -c 200000 /dev/zero | nc -N -w 5 10.9.0.2 9099",
    ]);
    let out = lis.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");

    // The VM side answers ARP and echo (testpmd icmpecho): from both.
    let mut tp = TestPmd::start(
        "kp",
        &[virtio_user(0, &h.dir.join("vm0"), "02:00:00:00:00:77")],
    );
    tp.cmd("set fwd icmpecho");
    tp.cmd("start");
    wait_for("vm0 up", Duration::from_secs(10), || {
        h.get("Interface", "vm0", "link_state") == "up"
    });
    let ping = tenant.exec(&["ping", "-c", "4", "-i", "0.2", "-W", "2", "10.9.0.77"]);
    assert!(ping.contains("4 packets transmitted, 4 received"), "{ping}");
    let ping =
        h.ns.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.9.0.77"]);
    assert!(ping.contains("2 packets transmitted, 2 received"), "{ping}");
    let neigh = tenant.exec(&["ip", "neigh", "show", "10.9.0.77"]);
    assert!(neigh.contains("02:00:00:00:00:77"), "{neigh}");
    let fdb = h.appctl(&["fdb/show", "br0"]);
    assert!(
        fdb.lines()
            .any(|l| l.trim_start().starts_with("2     0  02:00:00:00:00:77")),
        "{fdb}"
    );
    tp.quit();
}
