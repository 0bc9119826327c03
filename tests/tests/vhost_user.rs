//! vhost-user in both modes against dpdk-testpmd's virtio-user (the VM side
//! as QEMU would be): exact counts on both sides and in the database, MAC
//! learning, flooding, a VM-side restart.
use rvs_tests::{virtio_user, virtio_user_server, Capture, Host, TestPmd};

const A: &str = "02:00:00:00:00:0a";
const B: &str = "02:00:00:00:00:0b";
const C: &str = "02:00:00:00:00:0c";
const BCAST: &str = "ff:ff:ff:ff:ff:ff";

#[test]
fn server_mode_learns_floods_and_counts_exactly() {
    let h = Host::start("vhs");
    h.add_vhost_ports("br0", &["vm-a", "vm-b", "vm-c"]);
    assert_eq!(h.ofport("vm-a"), 1);
    assert_eq!(h.ofport("vm-b"), 2);
    assert_eq!(h.ofport("vm-c"), 3);
    assert_eq!(h.ofport("br0"), 65534);
    let mut tp = TestPmd::start(
        "vhs",
        &[
            virtio_user(0, &h.dir.join("vm-a"), A),
            virtio_user(1, &h.dir.join("vm-b"), B),
            virtio_user(2, &h.dir.join("vm-c"), C),
        ],
    );
    tp.cmd("start");
    h.wait_link_up(&["vm-a", "vm-b", "vm-c"]);

    // A to B, unknown yet: flooded to B, C (and the bridge's own port).
    tp.send(0, B, 40);
    let c = tp.settle();
    assert_eq!((c[0].tx, c[1].rx, c[2].rx, c[0].rx), (40, 40, 40, 0));
    // B answers A, whom the switch has learned: only A gets it.
    tp.send(1, A, 25);
    let c = tp.settle();
    assert_eq!(
        (c[1].tx, c[0].rx, c[2].rx),
        (25, 25, 40),
        "learned unicast reaches A only"
    );
    // A to B again: B is learned now, C sees nothing more.
    tp.send(0, B, 10);
    let c = tp.settle();
    assert_eq!((c[1].rx, c[2].rx), (50, 40));
    // Broadcast from C floods to A and B.
    tp.send(2, BCAST, 7);
    let c = tp.settle();
    assert_eq!((c[0].rx, c[1].rx, c[2].rx, c[2].tx), (32, 57, 40, 7));

    let fdb = h.appctl(&["fdb/show", "br0"]);
    assert!(
        fdb.starts_with(" port  VLAN  MAC                Age\n"),
        "{fdb}"
    );
    for (port, mac) in [(1, A), (2, B), (3, C)] {
        assert!(
            fdb.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3]
                    == [port.to_string().as_str(), "0", mac]),
            "{mac} on {port}: {fdb}"
        );
    }

    // The database shows what the switch counted (rx = from the VM).
    // Statistics are written every second: wait for a write that follows
    // the last frame, then hold every counter to its exact value.
    let a = h.wait_stats("vm-a", "rx 50, tx 32", |s| {
        (s["rx_packets"], s["tx_packets"]) == (50, 32)
    });
    assert_eq!(
        (a["rx_packets"], a["tx_packets"], a["rx_bytes"]),
        (50, 32, 50 * 64)
    );
    let b = h.wait_stats("vm-b", "rx 25, tx 57", |s| {
        (s["rx_packets"], s["tx_packets"]) == (25, 57)
    });
    assert_eq!((b["rx_packets"], b["tx_packets"]), (25, 57));
    let c = h.wait_stats("vm-c", "rx 7, tx 40", |s| {
        (s["rx_packets"], s["tx_packets"]) == (7, 40)
    });
    assert_eq!((c["rx_packets"], c["tx_packets"]), (7, 40));
    let br = h.wait_stats("br0", "flooded frames", |s| s["tx_packets"] == 47);
    assert_eq!(
        br["rx_packets"], 0,
        "the isolated host sends nothing of its own"
    );

    // dpctl/show -s: the same counters, live, in dpctl.c's layout.
    let dp = h.appctl(&["dpctl/show", "-s"]);
    let port = |name: &str| -> Vec<String> {
        let mut lines = dp.lines().skip_while(|l| {
            !(l.starts_with("  port ") && l.ends_with(&format!(": {name} (dpdkvhostuser)")))
        });
        assert!(lines.next().is_some(), "{name} in {dp}");
        lines.take(4).map(str::to_string).collect()
    };
    assert_eq!(
        port("vm-a"),
        [
            "    RX packets:50 errors:0 dropped:0 overruns:0 frame:0",
            "    TX packets:32 errors:0 dropped:0 aborted:0 carrier:0",
            "    collisions:0",
            "    RX bytes:3200 (3.1 KiB)  TX bytes:2048 (2.0 KiB)",
        ],
        "{dp}"
    );
    assert_eq!(
        port("vm-c")[..2],
        [
            "    RX packets:7 errors:0 dropped:0 overruns:0 frame:0",
            "    TX packets:40 errors:0 dropped:0 aborted:0 carrier:0",
        ],
        "{dp}"
    );
    assert!(
        dp.starts_with("netdev@ovs-netdev:\n  lookups: hit:"),
        "{dp}"
    );

    let pmd = h.appctl(&["dpif-netdev/pmd-stats-show"]);
    assert!(pmd.contains("pmd thread numa_id 0 core_id 1:"), "{pmd}");
    assert!(pmd.contains("  packets received: 82\n"), "{pmd}");
    let perf = h.appctl(&["dpif-netdev/pmd-perf-show"]);
    assert!(perf.contains("pmd thread numa_id 0 core_id 1:"), "{perf}");
    let rx_line = perf.lines().find(|l| l.starts_with("  Rx packets:"));
    assert_eq!(
        rx_line.map(|l| l.split_whitespace().nth(2)),
        Some(Some("82")),
        "{perf}"
    );
    assert!(pmd.contains("  packets dropped: 0\n"), "{pmd}");
    let rxq = h.appctl(&["dpif-netdev/pmd-rxq-show"]);
    assert!(
        rxq.contains("port: vm-a") && rxq.contains("port: br0"),
        "{rxq}"
    );
    // testpmd's virtio-user enabled one queue pair of eight.
    for (q, state) in [(0, "(enabled)   "), (1, "(disabled)  ")] {
        let line = format!("  port: vm-a              queue-id:  {q} {state}pmd usage:");
        assert!(rxq.contains(&line), "{line:?} in {rxq}");
    }
    tp.quit();
    rvs_tests::wait_for("link down", std::time::Duration::from_secs(10), || {
        h.get("Interface", "vm-a", "link_state") == "down"
    });
}

#[test]
fn client_mode_reconnects_after_the_vm_side_restarts() {
    let h = Host::start("vhc");
    h.vsctl(&["add-br", "br0"]);
    // CloudStack's form, double slash kept as the agent writes it.
    let dir = h.dir.to_str().unwrap().to_string();
    for p in ["csdpdk-1", "csdpdk-2"] {
        let opt = format!("options:vhost-server-path={dir}//{p}");
        h.vsctl(&[
            "add-port",
            "br0",
            p,
            "--",
            "set",
            "Interface",
            p,
            "type=dpdkvhostuserclient",
            &opt,
        ]);
    }
    assert_eq!(
        h.get("Interface", "csdpdk-1", "options"),
        format!("{{vhost-server-path=\"{dir}//csdpdk-1\"}}")
    );
    let devs = [
        virtio_user_server(0, &h.dir.join("csdpdk-1"), A),
        virtio_user_server(1, &h.dir.join("csdpdk-2"), B),
    ];
    for round in 0..2 {
        let mut tp = TestPmd::start("vhc", &devs);
        tp.cmd("start");
        for p in ["csdpdk-1", "csdpdk-2"] {
            rvs_tests::wait_for(
                "rvsd to connect",
                std::time::Duration::from_secs(15),
                || h.get("Interface", p, "link_state") == "up",
            );
        }
        tp.send(0, B, 30);
        tp.send(1, A, 20);
        let c = tp.settle();
        assert_eq!(
            (c[0].tx, c[1].rx, c[1].tx, c[0].rx),
            (30, 30, 20, 20),
            "round {round}"
        );
        tp.quit();
        rvs_tests::wait_for("link down", std::time::Duration::from_secs(10), || {
            h.get("Interface", "csdpdk-1", "link_state") == "down"
        });
    }
    let s = h.wait_stats("csdpdk-1", "rx 60, tx 40", |s| {
        (s["rx_packets"], s["tx_packets"]) == (60, 40)
    });
    assert_eq!(s["tx_packets"], 40);
}

#[test]
fn multiqueue_guest_uses_every_queue_pair() {
    let h = Host::start("vhmq");
    h.add_vhost_ports("br0", &["mq", "sq"]);
    let mq = format!(
        "net_virtio_user0,path={},queues=2,mac={A}",
        h.dir.join("mq").display()
    );
    let sq = format!(
        "net_virtio_user1,path={},queues=2,mac={B}",
        h.dir.join("sq").display()
    );
    let mut tp = TestPmd::virtio(
        "vhmq",
        &[mq, sq],
        256,
        &[
            "-i",
            "--nb-cores=1",
            "--forward-mode=rxonly",
            "--rxq=2",
            "--txq=2",
            "--total-num-mbufs=8192",
        ],
    );
    tp.cmd("start");
    rvs_tests::wait_for(
        "mq up with 2 pairs",
        std::time::Duration::from_secs(10),
        || {
            rvs_tests::parse_map(&h.get("Interface", "mq", "status"))
                .get("enabled_queue_pairs")
                .map(String::as_str)
                == Some("2")
        },
    );
    // tx_first sends a burst on each of the port's two tx queues.
    tp.send(0, B, 20);
    let c = tp.settle();
    assert_eq!(c[0].tx, 40, "20 frames on each of mq's two queues");
    assert_eq!(c[1].rx, 40, "all of them reached sq");
    let rxq = h.appctl(&["dpif-netdev/pmd-rxq-show"]);
    assert!(
        rxq.contains("port: mq                queue-id:  1"),
        "{rxq}"
    );
    let s = h.wait_stats("mq", "rx 40", |s| s["rx_packets"] == 40);
    assert_eq!(s["rx_bytes"], 40 * 64);
    tp.quit();
}

#[test]
fn tx_retries_max_changes_in_place_and_a_bad_value_names_the_field() {
    let h = Host::start("vhtr");
    h.add_vhost_ports("br0", &["ra", "rb"]);
    let mut tp = TestPmd::start(
        "vhtr",
        &[
            virtio_user(0, &h.dir.join("ra"), A),
            virtio_user(1, &h.dir.join("rb"), B),
        ],
    );
    tp.cmd("start");
    h.wait_link_up(&["ra", "rb"]);
    tp.send(1, A, 1);
    tp.send(0, B, 10);
    let c = tp.settle();
    assert_eq!((c[0].tx, c[1].rx), (10, 10));
    let s = h.wait_stats("rb", "retries counted", |s| {
        s.contains_key("ovs_tx_retries")
    });
    assert_eq!(
        s["ovs_tx_retries"], 0,
        "the guest drains its ring: no retry"
    );

    // Applied in place: reopening a server socket would cut testpmd off
    // (it does not reconnect), and these frames would not arrive.
    for v in ["0", "32"] {
        h.vsctl(&[
            "set",
            "Interface",
            "rb",
            &format!("options:tx-retries-max={v}"),
        ]);
        assert_eq!(h.get("Interface", "rb", "error"), "[]");
        tp.send(0, B, 10);
        let c = tp.settle();
        assert_eq!(c[1].rx, if v == "0" { 20 } else { 30 }, "still connected");
    }

    h.vsctl(&["set", "Interface", "rb", "options:tx-retries-max=33"]);
    rvs_tests::wait_for(
        "error naming tx-retries-max",
        std::time::Duration::from_secs(10),
        || {
            h.get("Interface", "rb", "error")
                .contains("options:tx-retries-max=\\\"33\\\" is not a number from 0 to 32")
        },
    );
    tp.quit();
}

#[test]
fn a_polling_switch_asks_the_guest_not_to_kick() {
    // rvs polls every ring, so a guest's kick after each burst it queues
    // (or each batch of receive buffers it refills) is wasted work: a VM
    // exit for a QEMU guest, an eventfd write(2) for virtio-user. rvs sets
    // VRING_USED_F_NO_NOTIFY on every ring, as OVS-DPDK does; the guest
    // then makes no write(2) at all while frames circle through rvs.
    let h = Host::start("kick");
    h.add_vhost_ports("br0", &["ka", "kb"]);
    h.ofctl(&["del-flows", "br0"]);
    h.ofctl(&["add-flow", "br0", "in_port=1,actions=output:2"]);
    h.ofctl(&["add-flow", "br0", "in_port=2,actions=output:1"]);
    let mut tp = TestPmd::virtio(
        "kick",
        &[
            virtio_user(0, &h.dir.join("ka"), A),
            virtio_user(1, &h.dir.join("kb"), B),
        ],
        256,
        &[
            "-i",
            "--nb-cores=1",
            "--forward-mode=io",
            "--port-topology=loop",
            "--total-num-mbufs=8192",
        ],
    );
    h.wait_link_up(&["ka", "kb"]);
    tp.cmd("set burst 32");
    tp.cmd("start tx_first 4");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let rx0 = tp.rx_total();
    // testpmd writes its prompt and answers: read syscw only between
    // commands.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let w0 = tp.write_syscalls();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let w1 = tp.write_syscalls();
    let rx1 = tp.rx_total();
    let frames = rx1 - rx0;
    assert!(
        frames > 100_000,
        "frames must circle for the count to mean anything: {frames}"
    );
    assert_eq!(
        w1 - w0,
        0,
        "write(2) calls by the guest while {frames} frames went through rvs"
    );
    tp.cmd("stop");
    tp.quit();
}

#[test]
fn own_ring_reader_hands_the_ring_back_and_forth_without_losing_a_frame() {
    // By default (vhost-own-rx unset) rvs takes frames off a guest's
    // transmit ring itself (ffi/src/vring.rs); switching to rte_vhost's
    // dequeue and back hands the ring over at the frame rvs reached, so
    // nothing is read twice or skipped.
    ring_handed_back_and_forth("vhor", "vhost-own-rx", "oa", "rx_ring_reader");
}

#[test]
fn own_ring_writer_hands_the_ring_back_and_forth_without_losing_a_frame() {
    // The same for guests' receive rings (vhost-own-tx, on by default):
    // rvs writes the frames for ob itself or through rte_vhost's
    // enqueue, and each switch hands the ring over at the buffer reached.
    ring_handed_back_and_forth("vhow", "vhost-own-tx", "ob", "tx_ring_writer");
}

#[test]
fn a_frame_longer_than_a_guest_buffer_spans_its_mergeable_buffers() {
    // testpmd's receive buffers here hold 204 bytes (320-byte mbufs, the
    // virtio-net header in the headroom), so a 1000-byte frame from a
    // tenant takes five of them (VIRTIO_NET_F_MRG_RXBUF): written by rvs
    // (the default) and, as the control, by rte_vhost's enqueue. testpmd
    // swaps its MACs and sends it back as a five-segment chain, which
    // rvs reads and forwards to the tenant: the bytes must come back
    // as they left.
    let h = Host::start("vhmrg");
    h.add_vhost_ports("br0", &["mg"]);
    let t = rvs_tests::tenant(&h, "br0", "vmg", "10.8.0.1/24");
    let mut tp = TestPmd::virtio(
        "vhmrg",
        &[virtio_user(0, &h.dir.join("mg"), A)],
        256,
        &[
            "-i",
            "--nb-cores=1",
            "--forward-mode=macswap",
            "--total-num-mbufs=8192",
            "--mbuf-size=320",
            "--enable-scatter",
            "--no-flush-rx",
        ],
    );
    tp.cmd("set verbose 1");
    tp.cmd("start");
    h.wait_link_up(&["mg"]);
    let payload: String = (0..(1000 - 14))
        .map(|i| format!("{:02x}", i as u8))
        .collect();
    let frame = format!("02000000000a02000000100188b5{payload}");
    let cap = Capture::start(
        &t,
        "vmgi",
        "eth.src == 02:00:00:00:00:0a",
        &["frame.len", "data.data"],
        12,
    );
    for (round, own) in [(1u64, "true"), (2, "false")] {
        h.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:vhost-own-tx={own}"),
        ]);
        rvs_tests::send_raw(&t, "vmgi", std::slice::from_ref(&frame));
        rvs_tests::wait_for(
            "the frame in testpmd",
            std::time::Duration::from_secs(10),
            || tp.output().matches("length=1000 - nb_segs=5").count() as u64 == round,
        );
        let s = h.wait_stats("mg", "both ways counted", |s| {
            s["tx_packets"] == round && s["rx_packets"] == round
        });
        assert_eq!(
            (
                s["tx_dropped"],
                s["rx_oversize_errors"],
                s["rx_bad_descriptors"]
            ),
            (0, 0, 0),
            "vhost-own-tx={own}"
        );
    }
    let got = cap.finish();
    assert_eq!(
        got,
        vec![format!("1000\t{payload}"); 2],
        "both came back whole"
    );
    tp.quit();
}

/// Frames from oa to ob while `key` is set to false and true in turn, to
/// a bad value and then removed: every frame arrives once, and `port`'s
/// status says who handles the ring (`status`).
fn ring_handed_back_and_forth(prefix: &str, key: &str, port: &str, status: &str) {
    let h = Host::start(prefix);
    h.add_vhost_ports("br0", &["oa", "ob"]);
    let mut tp = TestPmd::start(
        prefix,
        &[
            virtio_user(0, &h.dir.join("oa"), A),
            virtio_user(1, &h.dir.join("ob"), B),
        ],
    );
    tp.cmd("start");
    h.wait_link_up(&["oa", "ob"]);
    let handler = |want: &str| {
        rvs_tests::wait_for(
            &format!("{port} handled by {want}"),
            std::time::Duration::from_secs(10),
            || {
                rvs_tests::parse_map(&h.get("Interface", port, "status"))
                    .get(status)
                    .map(String::as_str)
                    == Some(want)
            },
        )
    };
    let set = |v: &str| {
        h.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:{key}={v}"),
        ])
    };
    tp.send(1, A, 1);
    tp.send(0, B, 10);
    let c = tp.settle();
    assert_eq!((c[0].tx, c[1].rx), (10, 10));
    handler("rvs");
    let mut want_rx = 10;
    for (own, n) in [("false", 7usize), ("true", 5), ("false", 3), ("true", 9)] {
        set(own);
        tp.send(0, B, n);
        let c = tp.settle();
        want_rx += n as u64;
        assert_eq!(c[1].rx, want_rx, "{key}={own}: every frame once");
        handler(if own == "true" { "rvs" } else { "rte_vhost" });
    }
    // A bad value changes nothing.
    set("maybe");
    tp.send(0, B, 4);
    let c = tp.settle();
    want_rx += 4;
    assert_eq!(c[1].rx, want_rx);
    handler("rvs");
    // Given to the library, then the key removed: back to the default.
    set("false");
    handler("rte_vhost");
    h.vsctl(&["remove", "Open_vSwitch", ".", "other_config", key]);
    tp.send(0, B, 6);
    let c = tp.settle();
    want_rx += 6;
    assert_eq!(
        c[1].rx, want_rx,
        "every frame once after the default came back"
    );
    handler("rvs");
    let s = h.wait_stats("oa", "rx counted", |s| s["rx_packets"] == want_rx);
    assert_eq!(
        (s["rx_bad_descriptors"], s["rx_oversize_errors"]),
        (0, 0),
        "every chain was a frame"
    );
    let s = h.wait_stats("ob", "tx counted", |s| s["tx_packets"] == want_rx);
    assert_eq!(
        (
            s["tx_dropped"],
            s["tx_bad_descriptors"],
            s["ovs_tx_mtu_exceeded_drops"]
        ),
        (0, 0, 0),
        "every frame written"
    );
    tp.quit();
}

/// A counter line of `dpif-netdev/pmd-stats-show` ("  packets held: N").
fn pmd_counter(show: &str, name: &str) -> u64 {
    show.lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {show}"))
}

#[test]
fn frames_a_full_guest_ring_cannot_take_are_held_and_dropped_only_when_it_stalls() {
    // testpmd polls only the sending port while it sends (`send` sets the
    // port list), so the receiving guest's 256-entry ring fills and stays
    // full for 300 ms: what rvs could not put there waits in the PMD's
    // hold (up to 256 frames), and is dropped, counted, once the guest has
    // taken nothing for 10 ms. Every frame is accounted for exactly.
    let h = Host::start("vhhold");
    h.add_vhost_ports("br0", &["ha", "hb"]);
    let mut tp = TestPmd::start(
        "vhhold",
        &[
            // The sender's ring is deeper, so one burst of 512 leaves it.
            format!("{},queue_size=1024", virtio_user(0, &h.dir.join("ha"), A)),
            virtio_user(1, &h.dir.join("hb"), B),
        ],
    );
    tp.cmd("start");
    h.wait_link_up(&["ha", "hb"]);
    tp.send(1, A, 1);
    tp.send(0, B, 1);
    let c = tp.settle();
    assert_eq!((c[0].rx, c[1].rx), (1, 1), "both learned");
    tp.clear();
    h.appctl(&["dpif-netdev/pmd-stats-clear"]);

    tp.send(0, B, 512);
    let c = tp.settle();
    let (sent, got) = (c[0].tx, c[1].rx);
    assert!(
        sent > 300,
        "more than a ring's worth must leave testpmd for this test: {sent}"
    );
    let over = sent - got;
    assert!(
        (sent - 300..=sent - 200).contains(&got),
        "the guest's ring took about its size: {got} of {sent}"
    );
    let show = h.appctl(&["dpif-netdev/pmd-stats-show"]);
    assert_eq!(pmd_counter(&show, "packets received"), sent, "{show}");
    assert_eq!(pmd_counter(&show, "packets sent"), got, "{show}");
    assert_eq!(pmd_counter(&show, "packets held"), over.min(256), "{show}");
    assert_eq!(pmd_counter(&show, "tx-queue-full"), over, "{show}");
    assert_eq!(pmd_counter(&show, "packets dropped"), over, "{show}");
    let s = h.wait_stats("hb", "held frames counted", |s| {
        s.get("tx_dropped") == Some(&over)
    });
    assert_eq!(
        (s["tx_packets"], s["tx_held"], s["tx_dropped"]),
        (got + 1, over.min(256), over)
    );

    // A guest that drains its ring loses nothing and nothing waits.
    tp.send(0, B, 200);
    let c = tp.settle();
    assert_eq!((c[0].tx - sent, c[1].rx - got), (200, 200));
    tp.quit();
}
