//! Bad input end to end: crafted frames from a namespace through a system
//! port (AF_PACKET sends them as written) — bad IPv4 header lengths and
//! total lengths, IP options, bad checksums, deep VLAN stacks, oversized
//! frames — and from a VM (testpmd replaying a pcap into virtio-user):
//! runts, cut-off 802.1Q tags, fragments. Each is dropped and
//! counted by reason, or forwarded untouched as a switch forwards what it
//! need not understand; tshark on the far side counts what arrived. Then
//! malformed unixctl requests: an error reply each, and the socket serves
//! the next client.
use rvs_tests::{pmd_drops, send_raw, tenant, Capture, Host, Netns};

use std::collections::BTreeMap;

const SRC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
const DST: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];

fn eth(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = DST.to_vec();
    f.extend_from_slice(&SRC);
    f.extend_from_slice(&ty.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4/UDP packet: `opts` words of options (NOP), fragment field
/// `frag`, a correct header checksum unless `bad_csum`, `total` as the
/// total length field (None: the real one), `pad` payload bytes.
fn ipv4(opts: usize, frag: u16, bad_csum: bool, total: Option<u16>, pad: usize) -> Vec<u8> {
    let hl = 20 + 4 * opts;
    let mut h = vec![0u8; hl];
    h[0] = 0x40 | (hl / 4) as u8;
    let udp_len = 8 + pad;
    let t = total.unwrap_or((hl + udp_len) as u16);
    h[2..4].copy_from_slice(&t.to_be_bytes());
    h[4..6].copy_from_slice(&7u16.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = 17;
    h[12..16].copy_from_slice(&[10, 7, 0, 1]);
    h[16..20].copy_from_slice(&[10, 7, 0, 2]);
    for b in &mut h[20..] {
        *b = 1; // NOP options
    }
    let c = rvs_dataplane::wire::checksum::checksum(&h);
    let c = if bad_csum { c ^ 0x5555 } else { c };
    h[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = vec![0u8; udp_len];
    udp[0..2].copy_from_slice(&4000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&4001u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    h.extend_from_slice(&udp);
    h
}

/// Frames by length: (kind, copies expected at the far side), 3 of each
/// kind sent; every kind must have a length of its own.
type ByLength<'a> = BTreeMap<usize, (&'a str, usize)>;

fn expected<'a>(kinds: &[(&'a str, Vec<u8>, bool)]) -> ByLength<'a> {
    let mut want = ByLength::new();
    for &(name, ref f, fwd) in kinds {
        assert!(
            want.insert(f.len(), (name, if fwd { 3 } else { 0 }))
                .is_none(),
            "{name}: lengths must differ"
        );
    }
    want
}

/// What tshark saw (frame.len lines), tallied against `want`'s kinds.
fn arrived<'a>(want: &ByLength<'a>, got: &[String]) -> ByLength<'a> {
    let mut seen: ByLength = want.iter().map(|(l, (n, _))| (*l, (*n, 0))).collect();
    for l in got {
        let n: usize = l.trim().parse().unwrap();
        seen.entry(n).or_insert(("unexpected", 0)).1 += 1;
    }
    seen
}

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn malformed_frames_are_dropped_and_counted_or_forwarded_untouched() {
    let h = Host::start("bad");
    h.vsctl(&["add-br", "br0"]);
    let a = tenant(&h, "br0", "ba", "10.7.0.1/24");
    let b = tenant(&h, "br0", "bb", "10.7.0.2/24");
    // Jumbo-capable veths: the oversized frame reaches rvsd's port.
    for (ns, dev) in [(&a, "bai"), (&h.ns, "bao"), (&h.ns, "bbo"), (&b, "bbi")] {
        ns.exec(&["ip", "link", "set", dev, "mtu", "9000"]);
    }
    // Deliver everything from a to b whatever it is (as a port-to-port
    // flow would), so what arrives shows what rvsd let through.
    h.ofctl(&["del-flows", "br0"]);
    h.ofctl(&["add-flow", "br0", "in_port=bao,actions=output:bbo"]);

    let vlan = |tags: &[u16], inner: Vec<u8>| {
        let mut p = Vec::new();
        for (i, t) in tags.iter().enumerate() {
            p.extend_from_slice(&t.to_be_bytes());
            let next: u16 = if i + 1 < tags.len() { 0x8100 } else { 0x0800 };
            p.extend_from_slice(&next.to_be_bytes());
        }
        p.extend_from_slice(&inner);
        eth(0x8100, &p)
    };
    let mut bad_hl = ipv4(0, 0, false, None, 40);
    bad_hl[0] = 0x43; // header length 12 bytes
                      // Each kind has its own frame length, so the far side tells them
                      // apart: (name, frame, forwarded?). What the kernel will not carry is
                      // left to the unit tests and the fuzzers: it refuses to send frames
                      // shorter than an Ethernet header, drops cut-off 802.1Q tags itself,
                      // and net_af_packet's fanout reassembles IP fragments before rvsd
                      // sees them.
    let kinds: Vec<(&str, Vec<u8>, bool)> = vec![
        ("IPv4 header length 12", eth(0x0800, &bad_hl), true),
        (
            "IPv4 total length past the frame",
            eth(0x0800, &ipv4(0, 0, false, Some(1400), 41)),
            true,
        ),
        (
            "IP options",
            eth(0x0800, &ipv4(2, 0, false, None, 42)),
            true,
        ),
        (
            "bad IP checksum",
            eth(0x0800, &ipv4(0, 0, true, None, 45)),
            true,
        ),
        (
            "four VLAN tags",
            vlan(&[10, 20, 30, 40], ipv4(0, 0, false, None, 46)),
            true,
        ),
        (
            "oversized (3000 bytes)",
            eth(0x0800, &ipv4(0, 0, false, None, 2954)),
            false,
        ),
    ];
    let want = expected(&kinds);
    let cap = Capture::start(&b, "bbi", "eth.src == 02:00:00:00:0a:01", &["frame.len"], 6);
    for (_, f, _) in &kinds {
        send_raw(&a, "bai", &vec![hex(f); 3]);
    }
    let got = cap.finish();
    let seen = arrived(&want, &got);
    assert_eq!(
        seen,
        want,
        "\n{}\n{}",
        h.ofctl(&["dump-ports", "br0"]),
        h.appctl(&["dpif-netdev/pmd-stats-show"])
    );
    assert_eq!(pmd_drops(&h, "malformed"), 0);
    // The oversized frames were cut short by the kernel's packet ring:
    // dropped and counted on the port, never forwarded in pieces.
    rvs_tests::wait_for(
        "3 oversized counted",
        std::time::Duration::from_secs(5),
        || h.stats("bao").get("rx_oversize_errors") == Some(&3),
    );
    assert_eq!(h.stats("bao").get("rx_packets"), Some(&15));
    assert!(h.appctl(&["version"]).starts_with("rvsd (rvs)"));
}

#[test]
fn malformed_frames_from_a_vm_are_dropped_and_counted_or_forwarded_untouched() {
    // What the kernel will not carry, from the VM side: testpmd replays a
    // pcap into its virtio-user port exactly as written.
    let h = Host::start("badvm");
    h.vsctl(&["add-br", "br0"]);
    h.add_vhost_ports("br0", &["vm"]);
    let b = tenant(&h, "br0", "bv", "10.7.0.2/24");
    h.ofctl(&["del-flows", "br0"]);
    h.ofctl(&["add-flow", "br0", "in_port=vm,actions=output:bvo"]);
    let kinds: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "runt",
            DST.iter().chain(&SRC[..4]).copied().collect(),
            false,
        ),
        ("cut-off 802.1Q tag", eth(0x8100, &[0, 5]), false),
        (
            "first fragment",
            eth(0x0800, &ipv4(0, 0x2000, false, None, 43)),
            true,
        ),
        (
            "later fragment",
            eth(0x0800, &ipv4(0, 0x0040, false, None, 44)),
            true,
        ),
        (
            "IP options",
            eth(0x0800, &ipv4(2, 0, false, None, 47)),
            true,
        ),
    ];
    let want = expected(&kinds);
    let pcap = h.dir.join("bad.pcap");
    rvs_tests::write_pcap(
        &pcap,
        (0..3).flat_map(|_| kinds.iter().map(|k| k.1.clone())),
    );
    let cap = Capture::start(&b, "bvi", "eth.src == 02:00:00:00:0a:01", &["frame.len"], 6);
    let mut tp = rvs_tests::TestPmd::virtio(
        "badvm",
        &[
            format!(
                "net_pcap0,rx_pcap={},tx_pcap={}",
                pcap.display(),
                h.dir.join("back.pcap").display()
            ),
            rvs_tests::virtio_user(1, &h.dir.join("vm"), "02:00:00:00:0a:01"),
        ],
        256,
        &[
            "-i",
            "--nb-cores=1",
            "--forward-mode=io",
            "--total-num-mbufs=8192",
            // testpmd empties its rx queues at start unless told not to:
            // the pcap would be read and thrown away.
            "--no-flush-rx",
        ],
    );
    h.wait_link_up(&["vm"]);
    tp.cmd("start");
    let got = cap.finish();
    tp.quit();
    let seen = arrived(&want, &got);
    assert_eq!(
        seen,
        want,
        "\n{}",
        h.appctl(&["dpif-netdev/pmd-stats-show"])
    );
    // Runts and cut-off tags: dropped as malformed, 3 each, and counted
    // against the VM's port.
    assert_eq!(pmd_drops(&h, "malformed"), 6);
    rvs_tests::wait_for(
        "rx_dropped 6 on vm",
        std::time::Duration::from_secs(5),
        || h.stats("vm").get("rx_dropped") == Some(&6),
    );
}

#[test]
fn malformed_unixctl_requests_get_errors_and_the_socket_stays_up() {
    let h = Host::start("badctl");
    let ctl = h.ctl_path();
    let ask = |req: &str| {
        let script = format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\ns.sendall({:?}.encode())\ns.shutdown(socket.SHUT_WR)\nb=b''\nwhile True:\n    d=s.recv(4096)\n    if not d: break\n    b+=d\nsys.stdout.write(b.decode())\n",
            ctl.to_str().unwrap(),
            req
        );
        rvs_tests::sh("python3", &["-c", &script])
    };
    for (req, want) in [
        (
            r#"{"id":1,"method":"version","params":[7]}"#,
            "array of strings",
        ),
        (r#"{"id":2,"params":[]}"#, "has no \\\"method\\\""),
        (
            r#"{"id":3,"method":"no/such","params":[]}"#,
            "is not a valid command",
        ),
        (
            r#"{"id":4,"method":"version","params":["x","y","z"]}"#,
            "at most 0 arguments",
        ),
        (r#"{"id":5,"method":"#, "bad JSON-RPC message"),
        ("}}garbage", "bad JSON-RPC message"),
    ] {
        let r = ask(req);
        assert!(r.contains(want), "{req}: {r}");
        assert!(r.contains("\"error\""), "{req}: {r}");
    }
    // Still serving, and nothing changed.
    assert!(h.appctl(&["version"]).starts_with("rvsd (rvs)"));
    assert_eq!(h.vsctl(&["list-br"]), "");
}

/// tests/peers/hostile_vhost.py: a vhost-user frontend that shares its
/// memory properly and posts what its mode says.
const HOSTILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/hostile_vhost.py");

/// A host whose br0 has the vhost-user port `evil` (returned: the socket
/// HOSTILE connects to) and a tenant namespace `ns` at `addr`.
fn hostile_host(name: &str, ns: &str, addr: &str) -> (Host, Netns, String) {
    let h = Host::start(name);
    h.vsctl(&["add-br", "br0"]);
    h.add_vhost_ports("br0", &["evil"]);
    let t = tenant(&h, "br0", ns, addr);
    let sock = h.dir.join("evil").to_str().expect("utf-8 path").to_string();
    (h, t, sock)
}

#[test]
fn a_vm_posting_bad_receive_buffers_hurts_only_itself() {
    // rvs writes guests' receive rings itself (vhost-own-tx, the
    // default): tests/peers/hostile_vhost.py posts one receive buffer per
    // run, as each mode says, and one broadcast ARP from a tenant is
    // flooded to it. A buffer rvs cannot write goes back empty and the
    // frame is counted; a frame longer than a legacy guest's buffer is
    // dropped and counted and the buffer stays with the guest.
    let (mut h, a, sock) = hostile_host("hostrx", "hra", "10.7.0.1/24");
    let mac = [0x02, 0, 0, 0, 0x0f, 0x01];
    let arp = rvs_tests::arp_request_hex(mac, None, [10, 7, 0, 1], [10, 7, 0, 9]);
    for (connects, (mode, want)) in [
        (
            "rx-valid",
            "rxused 1 len 70 data ffffffffffff020000000f01\n",
        ),
        ("rx-outside", "rxused 1 len 0 "),
        ("rx-badnext", "rxused 1 len 0 "),
        ("rx-short", "rxused 0 len 0 "),
    ]
    .into_iter()
    .enumerate()
    {
        let connects = connects + 1;
        let mut child = std::process::Command::new("python3")
            .args([HOSTILE, &sock, mode, "3"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "posted\n", "{mode}");
        rvs_tests::wait_for("evil connected", std::time::Duration::from_secs(5), || {
            h.log().matches("evil: guest connected").count() == connects
        });
        send_raw(&a, "hrai", std::slice::from_ref(&arp));
        line.clear();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(child.wait().unwrap().success(), "{mode}");
        assert!(line.starts_with(want), "{mode}: {line}");
        assert!(h.rvsd_running(), "{mode}: rvsd died\n{}", h.log_tail());
        rvs_tests::wait_for(
            "evil disconnected",
            std::time::Duration::from_secs(5),
            || h.log().matches("evil: guest disconnected").count() == connects,
        );
    }
    let s = h.wait_stats("evil", "4 frames counted", |s| {
        s["tx_packets"] + s["tx_dropped"] == 4
    });
    assert_eq!(
        (
            s["tx_packets"],
            s["tx_dropped"],
            s["tx_bad_descriptors"],
            s["ovs_tx_mtu_exceeded_drops"]
        ),
        (1, 3, 2, 1),
        "one written, two bad buffers, one frame too long"
    );
}

#[test]
fn a_vm_posting_descriptors_outside_its_memory_hurts_only_itself() {
    // HOSTILE posts a transmit descriptor pointing outside its memory,
    // running past its end, or chained to itself.
    let (mut h, a, sock) = hostile_host("hostile", "ha", "10.6.0.1/24");
    let _b = tenant(&h, "br0", "hb", "10.6.0.2/24");
    // With vhost-own-rx rvs reads the ring itself: a chain it cannot
    // follow is returned to the guest unread and counted, and the guest's
    // queue goes on. rte_vhost's dequeue (vhost-own-rx=false) leaves it
    // posted.
    // A frame longer than an mbuf is returned and counted as such.
    h.vsctl(&["set", "Open_vSwitch", ".", "other_config:vhost-own-rx=true"]);
    let out = rvs_tests::sh("python3", &[HOSTILE, &sock, "long", "2"]);
    assert!(out.contains("used 1 "), "long: {out}");
    for (own, used) in [("true", "used 1 "), ("false", "used 0 ")] {
        h.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:vhost-own-rx={own}"),
        ]);
        for mode in ["outside", "overrun", "loop"] {
            let out = rvs_tests::sh("python3", &[HOSTILE, &sock, mode, "2"]);
            assert!(out.starts_with("posted\n"), "{mode}: {out}");
            assert!(out.contains(used), "{own} {mode}: {out}");
            assert!(h.rvsd_running(), "{mode}: rvsd died\n{}", h.log_tail());
        }
    }
    // Each time the device was really up (rvsd polled its queues) and
    // went away with its frontend.
    let log = h.log();
    assert_eq!(
        log.matches("evil: guest connected").count(),
        7,
        "{}",
        h.log_tail()
    );
    // The last frontend's going is logged as its socket closes.
    rvs_tests::wait_for("7 disconnects", std::time::Duration::from_secs(5), || {
        h.log().matches("evil: guest disconnected").count() == 7
    });
    rvs_tests::wait_for("stats written", std::time::Duration::from_secs(5), || {
        h.stats("evil").get("rx_bad_descriptors") == Some(&3)
    });
    let s = h.stats("evil");
    assert_eq!(
        (s.get("rx_packets"), s.get("rx_oversize_errors")),
        (Some(&0), Some(&1)),
        "the long frame is the one oversize: a loop is a bad chain"
    );
    h.vsctl(&["set", "Open_vSwitch", ".", "other_config:vhost-own-rx=true"]);
    // The control: the same frontend with a proper descriptor gets it
    // taken and the frame counted.
    let out = rvs_tests::sh("python3", &[HOSTILE, &sock, "valid", "2"]);
    assert!(out.contains("used 1 "), "{out}");
    rvs_tests::wait_for(
        "1 frame from the VM",
        std::time::Duration::from_secs(5),
        || h.stats("evil").get("rx_packets") == Some(&1),
    );
    // The rest of the switch forwards as before.
    let r = rvs_tests::ping(&a, "10.6.0.2", 3, &[]);
    assert!(r.contains("3 received"), "{r}");
}
