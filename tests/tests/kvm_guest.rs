//! A real Linux guest under QEMU (TCG; Debian's kernel and busybox) on rvsd,
//! its NIC set up as libvirt does for the interface XML CloudStack writes for
//! DPDK NICs (`<interface type='vhostuser'>`, `<source type='unix'
//! path='DIR/csdpdk-N' mode='client|server'/>`, `<model type='virtio'/>`,
//! `<driver queues='N'/>`, guest RAM shared on hugepages): the port made with
//! the agent's ovs-vsctl commands, the guest's own kernel and tools on the
//! other side (ping, wget, httpd).
use rvs_tests::guest::{self, nic, received, Guest, Mode};
use rvs_tests::{http_server, Host};
use std::time::Duration;

const HOST_IP: &str = "10.50.0.1";

/// cloudbr0 with the host's address on fake bridge cloudbr30 (VLAN 30),
/// as CloudStack puts a host on a tagged guest network.
fn host_bridge(h: &Host) {
    h.vsctl(&["add-br", "cloudbr0"]);
    h.vsctl(&["add-br", "cloudbr30", "cloudbr0", "30"]);
    h.ns.exec(&["ip", "link", "set", "cloudbr30", "up"]);
    h.ns.exec(&["ip", "address", "add", "10.50.0.1/24", "dev", "cloudbr30"]);
}

fn agent_port(h: &Host, name: &str, mode: Mode) {
    guest::agent_port(h, "cloudbr0", name, mode, Some(30));
}

#[test]
fn a_guest_in_each_vhost_user_mode_reaches_the_host_and_the_other_guest() {
    let h = Host::start("vm");
    // By default rvs reads the guests' transmit rings itself (checked at
    // the end).
    host_bridge(&h);
    agent_port(&h, "csdpdk-1", Mode::Client);
    agent_port(&h, "csdpdk-2", Mode::Server);
    // Both guests boot at once; the one that serves its socket is connected
    // to by rvsd as soon as it is there.
    let mut g1 = Guest::start(
        "g1",
        &h.dir,
        &nic(&h.dir, "csdpdk-1", Mode::Client, "52:54:00:50:00:11", 1),
        "10.50.0.11/24",
        None,
    );
    let mut g2 = Guest::start(
        "g2",
        &h.dir,
        &nic(&h.dir, "csdpdk-2", Mode::Server, "52:54:00:50:00:12", 2),
        "10.50.0.12/24",
        None,
    );
    g1.wait_ready(Duration::from_secs(120));
    g2.wait_ready(Duration::from_secs(120));
    h.wait_link_up(&["csdpdk-1", "csdpdk-2"]);

    for (g, ip) in [(&mut g1, "10.50.0.11"), (&mut g2, "10.50.0.12")] {
        let out = g.sh(&format!("ping -c 5 -W 2 {HOST_IP}"));
        assert_eq!(received(&out), Some(5), "{}: {out}", g.name);
        let out = rvs_tests::ping(&h.ns, ip, 5, &[]);
        assert_eq!(received(&out), Some(5), "to {}: {out}", g.name);
    }
    let out = g1.sh("ping -c 5 -W 2 10.50.0.12");
    assert_eq!(received(&out), Some(5), "g1 to g2: {out}");

    // TCP both ways: a 1 MB file from the host's web server to each guest
    // (full-size segments through the VLAN), the guest's httpd to the host.
    let www = h.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let blob: Vec<u8> = (0u32..1 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(www.join("blob"), &blob).unwrap();
    let want = rvs_tests::sh("md5sum", &[www.join("blob").to_str().unwrap()]);
    let want = want.split_whitespace().next().unwrap().to_string();
    let mut srv = http_server(&h.ns, HOST_IP, "8080", &www);
    for g in [&mut g1, &mut g2] {
        let got = g.sh(&format!("wget -q -O - http://{HOST_IP}:8080/blob | md5sum"));
        assert_eq!(
            got.split_whitespace().next(),
            Some(want.as_str()),
            "{}",
            g.name
        );
    }
    for ip in ["10.50.0.11", "10.50.0.12"] {
        let page =
            h.ns.exec(&["curl", "-s", "--max-time", "10", &format!("http://{ip}/")]);
        assert_eq!(page, "hello from guest\n");
    }
    let _ = srv.kill();
    let _ = srv.wait();
    // Exactly the frames sent: neighbours fixed on both guests, 7 pings
    // from g1 to g2 are 7 frames in and 7 out on each port.
    g1.sh("arp -s 10.50.0.12 52:54:00:50:00:12");
    g2.sh("arp -s 10.50.0.11 52:54:00:50:00:11");
    std::thread::sleep(Duration::from_secs(2));
    let (p1, p2) = (h.stats("csdpdk-1"), h.stats("csdpdk-2"));
    let out = g1.sh("ping -c 7 -i 0.2 -W 2 10.50.0.12");
    assert_eq!(received(&out), Some(7), "g1 to g2: {out}");
    for (port, before) in [("csdpdk-1", &p1), ("csdpdk-2", &p2)] {
        let want = |s: &std::collections::BTreeMap<String, u64>| {
            s["rx_packets"] == before["rx_packets"] + 7
                && s["tx_packets"] == before["tx_packets"] + 7
        };
        let got = h.wait_stats(port, "7 frames each way", want);
        assert_eq!(got["rx_dropped"], before["rx_dropped"], "{port}");
        // The kernel's virtio-net rings (event index, indirect chains for
        // the TCP transfers above) were read by rvs itself, every chain a
        // frame.
        assert_eq!(
            (got["rx_bad_descriptors"], got["rx_oversize_errors"]),
            (0, 0),
            "{port}"
        );
        let status = rvs_tests::parse_map(&h.get("Interface", port, "status"));
        assert_eq!(
            status.get("rx_ring_reader").map(String::as_str),
            Some("rvs"),
            "{port}"
        );
        // Their receive rings (mergeable buffers, event index) were
        // written by rvs too, and every frame fitted.
        assert_eq!(
            status.get("tx_ring_writer").map(String::as_str),
            Some("rvs"),
            "{port}"
        );
        assert_eq!(
            (
                got["tx_dropped"],
                got["tx_bad_descriptors"],
                got["ovs_tx_mtu_exceeded_drops"]
            ),
            (before["tx_dropped"], 0, 0),
            "{port}"
        );
    }
}

/// Echo replies received, by icmp_seq, from ping's output.
fn replies(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect()
}

/// rvsd killed with SIGKILL under traffic to a guest in each vhost-user
/// mode and started again: in server mode (dpdkvhostuser) rvsd recreates
/// the socket and QEMU reconnects (libvirt's `<reconnect enabled='yes'
/// timeout='1'/>`); in client mode rvsd reconnects to QEMU. The gap is
/// measured on each guest's pings.
#[test]
fn killed_rvsd_each_guest_comes_back_and_the_gap_is_measured() {
    let mut h = Host::start("vmrst");
    h.vsctl(&["add-br", "br0"]);
    for (name, mode) in [("csdpdk-1", Mode::Client), ("csdpdk-2", Mode::Server)] {
        let path = format!("options:vhost-server-path={}/{name}", h.dir.display());
        let ty = match mode {
            Mode::Client => "type=dpdkvhostuser",
            Mode::Server => "type=dpdkvhostuserclient",
        };
        h.vsctl(&[
            "add-port",
            "br0",
            name,
            "--",
            "set",
            "Interface",
            name,
            ty,
            &path,
        ]);
    }
    let ns = rvs_tests::tenant(&h, "br0", "vr", "10.9.0.1/24");
    let mut g1 = Guest::start(
        "r1",
        &h.dir,
        &nic(&h.dir, "csdpdk-1", Mode::Client, "52:54:00:09:00:11", 1),
        "10.9.0.11/24",
        None,
    );
    let mut g2 = Guest::start(
        "r2",
        &h.dir,
        &nic(&h.dir, "csdpdk-2", Mode::Server, "52:54:00:09:00:12", 1),
        "10.9.0.12/24",
        None,
    );
    g1.wait_ready(Duration::from_secs(120));
    g2.wait_ready(Duration::from_secs(120));
    h.wait_link_up(&["csdpdk-1", "csdpdk-2"]);
    for ip in ["10.9.0.11", "10.9.0.12"] {
        rvs_tests::reachable(&ns, ip, 30);
    }

    // 600 pings to each guest, 50 a second; rvsd dies 2 s in.
    let n = 600u64;
    let pingers: Vec<_> = ["10.9.0.11", "10.9.0.12"]
        .iter()
        .map(|ip| ns.spawn(&["ping", "-i", "0.02", "-W", "1", "-c", &n.to_string(), ip]))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    h.kill_rvsd();
    h.start_rvsd();
    for (p, mode) in pingers
        .into_iter()
        .zip(["server (dpdkvhostuser)", "client (dpdkvhostuserclient)"])
    {
        let out = p.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let got = replies(&out);
        let gap = got.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap_or(0);
        eprintln!(
            "restart, vhost-user {mode} mode, QEMU guest: {} of {n} pings answered; longest gap {gap} pings = {} ms",
            got.len(),
            gap * 20
        );
        assert!(gap > 0, "a SIGKILLed switch loses something:\n{out}");
        let tail = got.iter().filter(|&&s| s > n - 100).count();
        assert_eq!(tail, 100, "{mode}: the last 2 s all answered:\n{out}");
    }
    // The guests never noticed beyond the lost frames: their links are up
    // and they reach each other.
    let out = g1.sh("ping -c 3 -W 2 10.9.0.12");
    assert_eq!(received(&out), Some(3), "{out}");
    assert!(!g2.exited());
}

const VM_UUID: &str = "0d3c5e1a-7f7b-4c6e-9a51-2b3c4d5e6f70";
const IFACE_UUID: &str = "5f0e2a7c-1b2d-4e3f-8a9b-0c1d2e3f4a5b";

/// `ovs-vsctl` as libvirt runs it for a tap NIC with
/// `<virtualport type='openvswitch'/>` and `<vlan><tag id='V'/></vlan>`.
fn libvirt_add_port(h: &Host, br: &str, ifname: &str, mac: &str, tag: u16) {
    let ext = |k: &str, v: &str| format!("external-ids:{k}=\"{v}\"");
    h.vsctl(&[
        "--timeout=5",
        "--",
        "--may-exist",
        "add-port",
        br,
        ifname,
        "--",
        "set",
        "Port",
        ifname,
        "other_config:transient=true",
        &format!("tag={tag}"),
        "--",
        "set",
        "Interface",
        ifname,
        &ext("attached-mac", mac),
        "--",
        "set",
        "Interface",
        ifname,
        &ext("iface-id", IFACE_UUID),
        "--",
        "set",
        "Interface",
        ifname,
        &ext("vm-id", VM_UUID),
        "--",
        "set",
        "Interface",
        ifname,
        "external-ids:iface-status=active",
    ]);
}

/// libvirt's `<bandwidth>` on an Open vSwitch port (average, peak in kB/s,
/// burst in kB; the same inbound and outbound, as CloudStack writes its
/// network rate): a linux-htb QoS with queue 0 for what goes to the guest,
/// ingress policing for what comes from it.
fn libvirt_set_bandwidth(h: &Host, ifname: &str, average: u64, peak: u64, burst: u64) {
    let vmid = format!("external-ids:vm-id=\"{VM_UUID}\"");
    let ifn = format!("external-ids:ifname=\"{ifname}\"");
    let found = h.vsctl(&[
        "--timeout=5",
        "--no-heading",
        "--columns=_uuid",
        "find",
        "queue",
        &vmid,
        &ifn,
    ]);
    assert_eq!(found, "", "no queue yet");
    let rates = [
        format!("other_config:min-rate={}", average * 8192),
        format!("other_config:burst={}", burst * 8192),
        format!("other_config:max-rate={}", peak * 8192),
    ];
    let mut a = vec![
        "--timeout=5",
        "set",
        "port",
        ifname,
        "qos=@qos1",
        &vmid,
        &ifn,
    ];
    a.extend(["--", "--id=@qos1", "create", "qos", "type=linux-htb"]);
    a.extend(rates.iter().map(String::as_str));
    a.extend([vmid.as_str(), ifn.as_str(), "queues:0=@queue0"]);
    a.extend(["--", "--id=@queue0", "create", "queue"]);
    a.extend(rates.iter().map(String::as_str));
    a.extend([vmid.as_str(), ifn.as_str()]);
    h.vsctl(&a);
    h.vsctl(&[
        "--timeout=5",
        "set",
        "Interface",
        ifname,
        &format!("ingress_policing_rate={}", average * 8),
        &format!("ingress_policing_burst={}", burst * 8),
    ]);
}

/// A guest on a kernel tap (as libvirt attaches system VMs and non-DPDK
/// guests) switched by rvsd as a `system` port added with libvirt's own
/// command, then limited with libvirt's bandwidth commands: downloads to the
/// guest are shaped to the rate (linux-htb), uploads from it policed
/// (ingress_policing_rate); `qos/show` reports both; libvirt's removal
/// takes the port away.
#[test]
fn a_tap_guest_attached_and_rate_limited_as_libvirt_does_it() {
    let h = Host::start("tapvm");
    host_bridge(&h);
    h.ns.exec(&["ip", "tuntap", "add", "dev", "vnet0", "mode", "tap"]);
    h.ns.exec(&["ip", "link", "set", "vnet0", "up"]);
    let mac = "52:54:00:70:00:11";
    let mut g = Guest::boot_tap("tg", &h.dir, "vnet0", mac, "10.50.0.21/24", &h.ns.name);
    libvirt_add_port(&h, "cloudbr0", "vnet0", mac, 30);
    assert_eq!(
        h.get("Port", "vnet0", "other_config"),
        "{transient=\"true\"}"
    );
    assert_eq!(h.get("Interface", "vnet0", "error"), "[]");
    // The host's own stack is kept off the switched tap.
    let tc =
        h.ns.exec(&["tc", "filter", "show", "dev", "vnet0", "ingress"]);
    assert!(tc.contains("bpf") && tc.contains("direct-action"), "{tc}");
    let out = g.sh(&format!("ping -c 5 -W 2 {HOST_IP}"));
    assert_eq!(received(&out), Some(5), "{out}");

    // 1024 kB/s = 8 Mbit/s each way, 64 kB bursts.
    libvirt_set_bandwidth(&h, "vnet0", 1024, 1024, 64);
    let show = h.appctl(&["qos/show", "vnet0"]);
    assert_eq!(
        show,
        "QoS: vnet0 linux-htb\nmax-rate: 8388608\nburst: 524288\nqueue-full drops: 0\n\
         ingress_policing_rate: 8192\ningress_policing_burst: 512\ningress policed drops: 0\n"
    );

    // To the guest: 4 MiB cannot arrive faster than the rate allows after
    // the first bucket (3.94 s), and arrives whole.
    let www = h.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let blob: Vec<u8> = (0u32..4 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(www.join("blob"), &blob).unwrap();
    let want = rvs_tests::sh("md5sum", &[www.join("blob").to_str().unwrap()]);
    let mut srv = http_server(&h.ns, HOST_IP, "8080", &www);
    let t0 = std::time::Instant::now();
    let got = g.sh(&format!("wget -q -O - http://{HOST_IP}:8080/blob | md5sum"));
    let down = t0.elapsed();
    assert_eq!(
        got.split_whitespace().next(),
        want.split_whitespace().next()
    );
    let _ = srv.kill();
    let _ = srv.wait();
    let floor = (4u64 << 20) as f64 - 65536.0;
    assert!(
        down.as_secs_f64() >= floor / 1_048_576.0,
        "4 MiB shaped to 8 Mbit/s took only {down:?}"
    );

    // From the guest: the policer drops what exceeds 8.192 Mbit/s; TCP
    // recovers and the file arrives whole, no faster than the rate.
    g.sh("dd if=/dev/urandom of=/www/up bs=1024 count=2048 2>/dev/null");
    let sum = g.sh("md5sum /www/up");
    let t0 = std::time::Instant::now();
    let up = h.ns.exec(&[
        "sh",
        "-c",
        "curl -s --max-time 120 http://10.50.0.21/up | md5sum",
    ]);
    let upt = t0.elapsed();
    assert_eq!(up.split_whitespace().next(), sum.split_whitespace().next());
    assert!(
        upt.as_secs_f64() >= (2_097_152.0 - 64_000.0) / 1_024_000.0,
        "2 MiB policed at 8.192 Mbit/s took only {upt:?}"
    );
    let show = h.appctl(&["qos/show", "vnet0"]);
    let policed: u64 = show
        .lines()
        .find_map(|l| l.strip_prefix("ingress policed drops: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(policed > 0, "{show}");
    assert_eq!(rvs_tests::pmd_drops(&h, "ingress-policing"), policed);
    eprintln!("tap guest: 4 MiB down (shaped) in {down:?}, 2 MiB up (policed, {policed} frames dropped) in {upt:?}");

    // Only the switch answered the guest: had the host's stack seen the
    // tap's frames, its ARP replies would have taught the guest the tap's
    // MAC and frames to it would come back as same-port drops.
    assert_eq!(rvs_tests::pmd_drops(&h, "same-port"), 0);

    // libvirt's removal when the domain stops: the tap is the host's again.
    h.vsctl(&["--timeout=5", "--", "--if-exists", "del-port", "vnet0"]);
    assert!(!h.appctl(&["dpif/show"]).contains("vnet0"));
    let tc = h.ns.exec(&["tc", "qdisc", "show", "dev", "vnet0"]);
    assert!(!tc.contains("clsact"), "{tc}");
    h.vsctl(&["--timeout=5", "--", "--if-exists", "del-port", "vnet0"]);
}
