//! The real ovs-ofctl programs rvsd over OpenFlow 1.0 (+ Nicira
//! extensions) and 1.3: flows, groups, statistics, timeouts, errors;
//! testpmd's virtio-user ports carry the traffic that flow counters must
//! account for exactly.
use rvs_tests::{virtio_user, wait_for, Host, TestPmd};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const A: &str = "02:00:00:00:00:0a";
const B: &str = "02:00:00:00:00:0b";
const C: &str = "02:00:00:00:00:0c";

/// A host with br0 and three vhost-user VMs (testpmd virtio-user, MACs A,
/// B, C on ofports 1, 2, 3), links up, testpmd receiving.
fn three_vms(name: &str) -> (Host, TestPmd) {
    let h = Host::start(name);
    h.add_vhost_ports("br0", &["vm-a", "vm-b", "vm-c"]);
    let mut tp = TestPmd::start(
        name,
        &[
            virtio_user(0, &h.dir.join("vm-a"), A),
            virtio_user(1, &h.dir.join("vm-b"), B),
            virtio_user(2, &h.dir.join("vm-c"), C),
        ],
    );
    tp.cmd("start");
    h.wait_link_up(&["vm-a", "vm-b", "vm-c"]);
    (h, tp)
}

/// "match actions=..." of a dump-flows line.
fn rule_text(line: &str) -> String {
    let (head, acts) = line.split_once(" actions=").expect("actions");
    let m = head.rsplit(", ").next().unwrap().trim();
    format!("{m} actions={acts}")
}

fn with_proto<'a>(proto: Option<&'a str>, rest: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![];
    if let Some(p) = proto {
        a.extend(["-O", p]);
    }
    a.extend_from_slice(rest);
    a
}

/// What ovs-ofctl itself makes of a flow ("match actions=..."): the
/// oracle a dump must reproduce.
fn parsed(h: &Host, proto: Option<&str>, flow: &str) -> String {
    let out = h.ofctl(&with_proto(proto, &["parse-flow", flow]));
    let last = out.lines().last().unwrap();
    let rest = last.split_once(": ADD ").expect("ADD").1;
    let (pre, acts) = rest.split_once(" actions=").expect("actions");
    let m = pre
        .split(' ')
        .find(|t| {
            !["table:", "cookie:", "idle:", "hard:"]
                .iter()
                .any(|p| t.starts_with(p))
        })
        .unwrap_or("");
    format!("{m} actions={acts}")
}

/// Every match field and action the flow table takes, in forms both
/// versions carry.
const FLOWS: &[&str] = &[
    "priority=10,in_port=1,actions=output:2",
    "priority=11,dl_src=02:00:00:00:00:01,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=drop",
    "priority=12,dl_vlan=5,dl_vlan_pcp=3,actions=strip_vlan,output:3",
    "priority=13,vlan_tci=0x0000/0x1fff,actions=mod_vlan_vid:100,mod_vlan_pcp:2,output:2",
    "priority=14,dl_type=0x88cc,actions=NORMAL",
    "priority=15,ip,nw_src=10.0.0.0/8,nw_dst=192.168.1.1,nw_tos=8,nw_ttl=64,actions=mod_nw_src:1.2.3.4,mod_nw_dst:5.6.7.8,mod_nw_tos:16,dec_ttl,output:1",
    "priority=16,tcp,tp_src=1000,tp_dst=0x50/0xfff0,tcp_flags=+syn-ack,actions=mod_tp_src:1,mod_tp_dst:2,output:IN_PORT",
    "priority=17,udp,tp_dst=53,actions=mod_dl_src:02:00:00:00:00:09,mod_dl_dst:02:00:00:00:00:0a,LOCAL",
    "priority=18,icmp,icmp_type=8,icmp_code=0,actions=FLOOD",
    "priority=19,arp,arp_op=1,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/24,arp_sha=02:00:00:00:00:01,arp_tha=00:00:00:00:00:00,actions=ALL",
    "priority=20,tun_id=0x5,tun_src=192.0.2.1,tun_dst=192.0.2.2,actions=set_tunnel:0x10,output:1",
    "priority=21,metadata=0x1/0xff,reg0=0x1,reg15=0x10/0xf0,actions=load:0x5->NXM_NX_REG1[],load:0x1->NXM_NX_REG2[4..7],move:NXM_NX_REG1[0..15]->NXM_NX_REG3[16..31],resubmit(,2)",
    "priority=22,in_port=2,actions=resubmit(1,3),resubmit:3,note:01.02.03,set_tunnel64:0x1234567890",
    "priority=23,ip,in_port=3,actions=set_field:02:00:00:00:00:0b->eth_src,set_field:10.1.1.1->ip_dst,output:1",
    "priority=24,udp,nw_src=10.0.0.1,tp_src=0x100/0xff00,actions=set_field:0x5->reg4,output:2",
    "priority=25,in_port=1,actions=learn(table=10,hard_timeout=60,priority=5,NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15],load:0x7->NXM_NX_REG1[0..3],output:NXM_OF_IN_PORT[]),output:2",
];

/// OpenFlow 1.0 only.
const FLOWS10: &[&str] = &["table=4,priority=40,in_port=1,actions=strip_vlan,strip_vlan,output:2"];

/// OpenFlow 1.3 only: push_vlan, goto_table, write_metadata, pop_vlan.
const FLOWS13: &[&str] = &[
    "table=3,priority=30,ip,actions=push_vlan:0x8100,set_field:4196->vlan_vid,resubmit(,0)",
    "table=5,priority=50,vlan_tci=0x0000/0x1fff,actions=push_vlan:0x8100,set_field:4196->vlan_vid,goto_table:6",
    "table=6,priority=60,dl_vlan=100,actions=pop_vlan,goto_table:7",
    "table=7,priority=70,actions=write_metadata:0x10/0xff,goto_table:8",
];

#[test]
fn every_match_field_and_action_round_trips_in_both_versions() {
    let h = Host::start("ofrt");
    h.add_vhost_ports("br0", &["vm-a", "vm-b", "vm-c"]);
    // A new bridge behaves as OVS's: one NORMAL flow.
    let d = h.ofctl(&["dump-flows", "br0"]);
    let lines: Vec<&str> = d.lines().filter(|l| l.starts_with(' ')).collect();
    assert_eq!(lines.len(), 1, "{d}");
    assert_eq!(rule_text(lines[0]), "priority=0 actions=NORMAL");
    for proto in [None, Some("OpenFlow13")] {
        h.ofctl(&["del-flows", "br0"]);
        let extra = if proto.is_some() { FLOWS13 } else { FLOWS10 };
        let list: Vec<&str> = FLOWS.iter().chain(extra).copied().collect();
        for f in &list {
            h.ofctl(&with_proto(proto, &["add-flow", "br0", f]));
        }
        let dump = h.ofctl(&with_proto(proto, &["dump-flows", "br0"]));
        assert!(!dump.contains("error"), "{dump}");
        let mut got: Vec<String> = dump
            .lines()
            .filter(|l| l.starts_with(' '))
            .map(rule_text)
            .collect();
        let mut want: Vec<String> = list.iter().map(|f| parsed(&h, proto, f)).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{proto:?}");
        let agg = h.ofctl(&with_proto(proto, &["dump-aggregate", "br0"]));
        assert!(agg.contains(&format!("flow_count={}", list.len())), "{agg}");
    }
    // Cookies, timeouts and table ids come back as given; cookie filters
    // select.
    h.ofctl(&["del-flows", "br0"]);
    h.ofctl(&[
        "add-flow",
        "br0",
        "table=9,cookie=0x1234,idle_timeout=300,hard_timeout=600,priority=7,in_port=1,actions=drop",
    ]);
    h.ofctl(&["add-flow", "br0", "cookie=0x99,in_port=2,actions=drop"]);
    let d = h.ofctl(&["dump-flows", "br0", "cookie=0x1234/-1"]);
    let lines: Vec<&str> = d.lines().filter(|l| l.starts_with(' ')).collect();
    assert_eq!(lines.len(), 1, "{d}");
    for want in [
        "cookie=0x1234,",
        "table=9,",
        "idle_timeout=300,",
        "hard_timeout=600,",
        "priority=7,in_port=1 actions=drop",
    ] {
        assert!(lines[0].contains(want), "{want} in {}", lines[0]);
    }
    h.ofctl(&["del-flows", "br0", "cookie=0x99/-1"]);
    let d = h.ofctl(&["dump-flows", "br0"]);
    assert_eq!(d.lines().filter(|l| l.starts_with(' ')).count(), 1, "{d}");
    // Bridge `protocols` is honoured: 1.3 only refuses a 1.0 session.
    h.vsctl(&["set", "bridge", "br0", "protocols=OpenFlow13"]);
    wait_for("1.0 refused", Duration::from_secs(10), || {
        !h.ofctl_raw(&["dump-flows", "br0"]).status.success()
    });
    h.ofctl(&["-O", "OpenFlow13", "dump-flows", "br0"]);
}

#[test]
fn groups_of_every_type_round_trip_in_both_versions() {
    let h = Host::start("ofgrp");
    h.add_vhost_ports("br0", &["vm-a", "vm-b"]);
    let groups = [
        "group_id=5,type=select,bucket=weight:10,output:1,bucket=weight:20,output:2",
        "group_id=6,type=all,bucket=output:1,bucket=mod_vlan_vid:7,output:2",
        "group_id=7,type=ff,bucket=watch_port:1,output:1,bucket=watch_port:2,output:2",
        "group_id=8,type=indirect,bucket=output:1",
    ];
    // OpenFlow 1.0 carries groups as Nicira messages in OpenFlow 1.5's
    // format (bucket ids), 1.3 as its own group_mod.
    let want10 = [
        "group_id=5,type=select,bucket=bucket_id:0,weight:10,actions=output:1,bucket=bucket_id:1,weight:20,actions=output:2",
        "group_id=6,type=all,bucket=bucket_id:0,actions=output:1,bucket=bucket_id:1,actions=mod_vlan_vid:7,output:2",
        "group_id=7,type=ff,bucket=bucket_id:0,watch_port:1,actions=output:1,bucket=bucket_id:1,watch_port:2,actions=output:2",
        "group_id=8,type=indirect,bucket=bucket_id:0,actions=output:1",
    ];
    let want13 = [
        "group_id=5,type=select,bucket=weight:10,actions=output:1,bucket=weight:20,actions=output:2",
        "group_id=6,type=all,bucket=actions=output:1,bucket=actions=push_vlan:0x8100,set_field:4103->vlan_vid,output:2",
        "group_id=7,type=ff,bucket=watch_port:1,actions=output:1,bucket=watch_port:2,actions=output:2",
        "group_id=8,type=indirect,bucket=actions=output:1",
    ];
    let lines = |d: String| -> Vec<String> {
        d.lines()
            .filter(|l| l.starts_with(' '))
            .map(|l| l.trim().to_string())
            .collect()
    };
    for (proto, add_proto) in [
        (None, None),
        (Some("OpenFlow13"), Some("OpenFlow13")),
        (None, Some("OpenFlow13")),
    ] {
        h.ofctl(&["del-groups", "br0"]);
        for g in groups {
            h.ofctl(&with_proto(add_proto, &["add-group", "br0", g]));
        }
        let want: Vec<String> = if proto.is_some() { want13 } else { want10 }
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            lines(h.ofctl(&with_proto(proto, &["dump-groups", "br0"]))),
            want
        );
    }
    // A group that exists cannot be added again; a flow needs its group.
    let o = h.ofctl_raw(&["add-group", "br0", groups[3]]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("OFPGMFC_GROUP_EXISTS"),
        "{o:?}"
    );
    let o = h.ofctl_raw(&["add-flow", "br0", "in_port=1,actions=group:99"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("OFPBAC_BAD_OUT_GROUP"),
        "{o:?}"
    );
    h.ofctl(&["add-flow", "br0", "in_port=1,actions=group:6"]);
    let stats = h.ofctl(&["dump-group-stats", "br0", "group_id=6"]);
    assert!(
        stats.contains("group_id=6,") && stats.contains("ref_count=1,"),
        "{stats}"
    );
    h.ofctl(&["del-groups", "br0", "group_id=5"]);
    assert_eq!(lines(h.ofctl(&["dump-groups", "br0"])).len(), 3);
}

#[test]
fn ofproto_trace_shows_the_way_through_the_tables() {
    let h = Host::start("oftrace");
    h.add_vhost_ports("br0", &["vm-a", "vm-b", "vm-c"]);
    h.ofctl(&["del-flows", "br0"]);
    h.ofctl(&[
        "add-flow",
        "br0",
        "table=0,priority=10,in_port=1,actions=load:0x7->NXM_NX_REG0[],resubmit(,1)",
    ]);
    h.ofctl(&[
        "add-flow",
        "br0",
        "table=1,priority=20,reg0=7,tcp,tp_dst=80,actions=mod_dl_dst:02:00:00:00:00:0c,output:3",
    ]);
    h.ofctl(&["add-flow", "br0", "table=1,priority=5,actions=output:2"]);
    let t = h.appctl(&[
        "ofproto/trace",
        "br0",
        "in_port=1,tcp,nw_dst=10.0.0.1,tp_dst=80",
    ]);
    assert!(
        t.starts_with("Flow: in_port=1,tcp,nw_dst=10.0.0.1,tp_dst=80\n\nbridge(\"br0\")\n"),
        "{t}"
    );
    assert!(t.contains(" 0. ") && t.contains("priority 10,"), "{t}");
    assert!(
        t.contains("     1. ") && t.contains("priority 20,"),
        "table 1 nested under the resubmit: {t}"
    );
    assert!(
        t.contains("\nDatapath actions: SetDlDst(2199023255564),3\n"),
        "{t}"
    );
    // Another port: table 0 misses.
    let t = h.appctl(&["ofproto/trace", "br0", "in_port=2,udp"]);
    assert!(
        t.contains(" 0. No match.") && t.contains("Datapath actions: drop\nDropped: table-miss"),
        "{t}"
    );
    // A bad flow is refused with the field named.
    let o = std::process::Command::new("ovs-appctl")
        .args([
            "-t",
            h.ctl_path().to_str().unwrap(),
            "ofproto/trace",
            "br0",
            "in_port=1,colour=red",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown field \"colour\""),
        "{o:?}"
    );
}

fn flow_line<'a>(dump: &'a str, m: &str) -> &'a str {
    dump.lines()
        .find(|l| l.contains(m))
        .unwrap_or_else(|| panic!("no flow {m} in\n{dump}"))
}

fn counter(line: &str, key: &str) -> u64 {
    line.split(key)
        .nth(1)
        .and_then(|r| r.split([',', ' ']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn flow_counters_equal_the_frames_sent() {
    let (h, mut tp) = three_vms("ofcnt");
    h.ofctl(&["del-flows", "br0"]);
    h.ofctl(&["add-flow", "br0", "cookie=0x10,in_port=1,actions=output:2"]);
    h.ofctl(&[
        "-O",
        "OpenFlow13",
        "add-flow",
        "br0",
        "in_port=2,actions=output:3",
    ]);

    tp.send(0, B, 40);
    let c = tp.settle();
    assert_eq!((c[1].rx, c[2].rx, c[0].rx), (40, 0, 0));
    tp.send(1, A, 25);
    let c = tp.settle();
    assert_eq!((c[2].rx, c[0].rx), (25, 0), "in_port=2 goes to 3 only");
    // From C nothing matches: dropped as a table miss.
    tp.send(2, A, 10);
    let c = tp.settle();
    assert_eq!((c[0].rx, c[1].rx), (0, 40));
    let d = h.ofctl(&["dump-flows", "br0"]);
    let l1 = flow_line(&d, "in_port=1 ");
    assert_eq!(
        (counter(l1, "n_packets="), counter(l1, "n_bytes=")),
        (40, 40 * 64)
    );
    let l2 = flow_line(&d, "in_port=2 ");
    assert_eq!(
        (counter(l2, "n_packets="), counter(l2, "n_bytes=")),
        (25, 25 * 64)
    );
    let agg = h.ofctl(&["dump-aggregate", "br0"]);
    assert!(
        agg.contains("packet_count=65 byte_count=4160 flow_count=2"),
        "{agg}"
    );
    let pmd = h.appctl(&["dpif-netdev/pmd-stats-show"]);
    assert!(pmd.contains("    table-miss: 10\n"), "{pmd}");
    // One translation per distinct packet key, the rest from the cache:
    // testpmd's frames differ only by port, so three keys (and three
    // megaflows: the port is what the rules match).
    assert!(
        pmd.contains("  emc hits: 72\n  megaflow hits: 0\n  classifier lookups: 3\n"),
        "{pmd}"
    );

    // mod-flows keeps the counters and redirects at once.
    h.ofctl(&[
        "-O",
        "OpenFlow13",
        "mod-flows",
        "br0",
        "in_port=1,actions=output:3",
    ]);
    tp.send(0, B, 5);
    let c = tp.settle();
    assert_eq!((c[1].rx, c[2].rx), (40, 30));
    let d = h.ofctl(&["-O", "OpenFlow13", "dump-flows", "br0", "cookie=0x10/-1"]);
    let l1 = flow_line(&d, "in_port=1 ");
    assert_eq!(counter(l1, "n_packets="), 45);
    assert!(l1.ends_with("actions=output:3"), "{l1}");
    // Port statistics count what testpmd sent and got.
    let ports = h.ofctl(&["dump-ports", "br0", "1"]);
    assert!(ports.contains("rx pkts=45, bytes=2880, drop=0"), "{ports}");
    // del-flows with a strict match removes exactly one.
    h.ofctl(&["--strict", "del-flows", "br0", "priority=32768,in_port=2"]);
    tp.send(1, A, 3);
    let c = tp.settle();
    assert_eq!(c[2].rx, 30, "in_port=2 now misses");
    let d = h.ofctl(&["dump-flows", "br0"]);
    assert_eq!(d.lines().filter(|l| l.starts_with(' ')).count(), 1, "{d}");
    tp.quit();
}

#[test]
fn pvlan_vocabulary_groups_and_timeouts() {
    let (h, mut tp) = three_vms("ofpv");
    let of13 = |args: &[&str]| {
        let mut a = vec!["-O", "OpenFlow13"];
        a.extend_from_slice(args);
        h.ofctl(&a)
    };
    h.ofctl(&["del-flows", "br0"]);
    of13(&[
        "add-group",
        "br0",
        "group_id=1,type=all,bucket=output:2,bucket=pop_vlan,output:3",
    ]);
    // CloudStack's PVLAN forms, verbatim: untagged from A is tagged 100 in
    // table 1, back to table 0, which sends A's VLAN-100 frames to table 1,
    // whose VLAN-100 rule hands them to the group.
    of13(&[
        "add-flow",
        "br0",
        &format!("table=0,priority=200,dl_vlan=100,dl_src={A},actions=resubmit(,1)"),
    ]);
    of13(&[
        "add-flow",
        "br0",
        "table=0,priority=100,in_port=1,actions=resubmit(,1)",
    ]);
    of13(&[
        "add-flow",
        "br0",
        "table=1,priority=50,vlan_tci=0x0000/0x1fff,actions=push_vlan:0x8100,set_field:4196->vlan_vid,resubmit(,0)",
    ]);
    of13(&[
        "add-flow",
        "br0",
        "table=1,priority=40,dl_vlan=100,actions=group:1",
    ]);
    tp.send(0, B, 30);
    let c = tp.settle();
    assert_eq!((c[1].rx, c[2].rx, c[0].rx), (30, 30, 0));
    // 68-byte frames at B (tagged), 64-byte ones at C (the tag popped).
    assert_eq!(
        (rx_bytes(&mut tp, 1), rx_bytes(&mut tp, 2)),
        (30 * 68, 30 * 64)
    );
    let d = of13(&["dump-flows", "br0"]);
    for m in [
        "priority=200,",
        "priority=100,",
        "priority=50,",
        "priority=40,",
    ] {
        assert_eq!(counter(flow_line(&d, m), "n_packets="), 30, "{m}\n{d}");
    }
    let g = of13(&["dump-group-stats", "br0"]);
    assert!(
        g.contains("group_id=1,") && g.contains("ref_count=1,packet_count=30,byte_count=1920,bucket0:packet_count=30,byte_count=1920,bucket1:packet_count=30,byte_count=1920"),
        "{g}"
    );
    let groups = of13(&["dump-groups", "br0"]);
    assert!(
        groups.contains(
            "group_id=1,type=all,bucket=actions=output:2,bucket=actions=pop_vlan,output:3"
        ),
        "{groups}"
    );
    // Deleting the group takes the flow that uses it along.
    of13(&["del-groups", "br0", "group_id=1"]);
    let d = of13(&["dump-flows", "br0"]);
    assert!(!d.contains("group:1"), "{d}");

    // OpenFlow 1.0's double strip and timeouts.
    h.ofctl(&["del-flows", "br0"]);
    let t_add = Instant::now();
    h.ofctl(&[
        "add-flow",
        "br0",
        "in_port=1,hard_timeout=2,actions=strip_vlan,strip_vlan,output:3",
    ]);
    h.ofctl(&[
        "add-flow",
        "br0",
        "in_port=2,idle_timeout=1,actions=output:3",
    ]);
    tp.send(0, B, 4);
    let c = tp.settle();
    assert_eq!(c[2].rx, 34);
    wait_for("idle flow expires", Duration::from_secs(5), || {
        !h.ofctl(&["dump-flows", "br0"]).contains("in_port=2")
    });
    wait_for("hard flow expires", Duration::from_secs(5), || {
        !h.ofctl(&["dump-flows", "br0"]).contains("in_port=1")
    });
    assert!(
        t_add.elapsed() >= Duration::from_secs(2),
        "not before its 2 s"
    );
    tp.send(0, B, 4);
    let c = tp.settle();
    assert_eq!(c[2].rx, 34, "expired: table miss");
    tp.quit();
}

/// ovs-testcontroller's control socket defaults to /var/run/openvswitch,
/// which exists only once an OVS service has run: without the directory it
/// exits right after it starts listening (rvsd sees one connection close).
fn unixctl_in(dir: &std::path::Path) -> String {
    format!("--unixctl={}", dir.join("testcontroller.ctl").display())
}

#[test]
fn a_real_controller_drives_rvs_over_tcp_and_unix() {
    let (h, mut tp) = three_vms("ofctlr");
    // OVS's own test controller, proactive: it pushes these flows when the
    // switch connects. It listens in rvsd's namespace (rvsd connects).
    let flows = h.dir.join("ctl.flows");
    std::fs::write(&flows, "priority=100,in_port=1,actions=output:3\n").unwrap();
    let connected = |want: &str| {
        wait_for(
            &format!("is_connected={want}"),
            Duration::from_secs(15),
            || {
                h.vsctl(&["get", "controller", "br0", "is_connected"])
                    .trim()
                    == want
            },
        )
    };
    let mut ctl = h.ns.spawn(&[
        "ovs-testcontroller",
        &unixctl_in(&h.dir),
        "-n",
        "--with-flows",
        flows.to_str().unwrap(),
        "ptcp:16653:127.0.0.1",
    ]);
    h.vsctl(&["set-controller", "br0", "tcp:127.0.0.1:16653"]);
    connected("true");
    wait_for("the controller's flow", Duration::from_secs(10), || {
        h.ofctl(&["dump-flows", "br0"])
            .contains("priority=100,in_port=1 actions=output:3")
    });
    tp.send(0, B, 12);
    let c = tp.settle();
    assert_eq!(
        (c[1].rx, c[2].rx),
        (0, 12),
        "the controller's flow forwards"
    );
    let _ = ctl.kill();
    let _ = ctl.wait();
    connected("false");
    // Over a unix socket, with another flow set.
    let sock = h.dir.join("ctl.sock");
    std::fs::write(&flows, "priority=100,in_port=1,actions=output:2\n").unwrap();
    let mut ctl = h.ns.spawn(&[
        "ovs-testcontroller",
        &unixctl_in(&h.dir),
        "-n",
        "--with-flows",
        flows.to_str().unwrap(),
        &format!("punix:{}", sock.display()),
    ]);
    wait_for("controller socket", Duration::from_secs(5), || {
        sock.exists()
    });
    h.vsctl(&["set-controller", "br0", &format!("unix:{}", sock.display())]);
    connected("true");
    wait_for("the new flow", Duration::from_secs(10), || {
        h.ofctl(&["dump-flows", "br0"])
            .contains("priority=100,in_port=1 actions=output:2")
    });
    tp.send(0, B, 7);
    let c = tp.settle();
    assert_eq!((c[1].rx, c[2].rx), (7, 12));
    h.vsctl(&["del-controller", "br0"]);
    let _ = ctl.kill();
    let _ = ctl.wait();
    tp.quit();
}

#[test]
fn a_reactive_controller_learns_through_packet_in_and_out() {
    let (h, mut tp) = three_vms("ofreact");
    h.ofctl(&["del-flows", "br0"]);
    // OVS's test controller as a learning switch: every table miss is a
    // packet-in, answered with a packet-out (flood, or the learned port)
    // and a flow for known destinations.
    let log = h.dir.join("testcontroller.log");
    let mut ctl = h.ns.spawn(&[
        "ovs-testcontroller",
        &unixctl_in(&h.dir),
        "-vfile:dbg",
        &format!("--log-file={}", log.display()),
        "ptcp:16654:127.0.0.1",
    ]);
    h.vsctl(&["set-controller", "br0", "tcp:127.0.0.1:16654"]);
    wait_for("connected", Duration::from_secs(15), || {
        h.vsctl(&["get", "controller", "br0", "is_connected"])
            .trim()
            == "true"
    });
    tp.send(0, B, 20);
    let c = tp.settle();
    assert_eq!(
        (c[1].rx, c[2].rx, c[0].rx),
        (20, 20, 0),
        "unknown B: flooded by packet-outs"
    );
    tp.send(1, A, 15);
    let c = tp.settle();
    assert_eq!(
        (c[0].rx, c[2].rx),
        (15, 20),
        "A learned: only A gets B's frames"
    );
    let d = h.ofctl(&["dump-flows", "br0"]);
    assert!(
        d.contains("actions=output:1"),
        "the controller installed a flow to A:\n{d}"
    );
    let pmd = h.appctl(&["dpif-netdev/pmd-stats-show"]);
    assert!(!pmd.contains("    to-controller: 0\n"), "{pmd}");
    let _ = ctl.kill();
    let _ = ctl.wait();
    tp.quit();
}

fn rx_bytes(tp: &mut TestPmd, port: usize) -> u64 {
    let s = tp.cmd(&format!("show port stats {port}"));
    s.split("RX-bytes:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no RX-bytes in {s}"))
}

#[test]
fn learn_builds_a_mac_table_from_traffic() {
    let (h, mut tp) = three_vms("oflearn");
    // The OVS tutorial's learning switch, in flows.
    h.ofctl(&["del-flows", "br0"]);
    h.ofctl(&[
        "add-flow",
        "br0",
        "table=0,actions=learn(table=1,idle_timeout=60,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[]),resubmit(,1)",
    ]);
    h.ofctl(&["add-flow", "br0", "table=1,priority=0,actions=FLOOD"]);
    tp.send(0, B, 20);
    let c = tp.settle();
    assert_eq!((c[1].rx, c[2].rx), (20, 20), "unknown B: flooded");
    wait_for("A learned", Duration::from_secs(5), || {
        h.ofctl(&["dump-flows", "br0", "table=1"])
            .contains(&format!("dl_dst={A}"))
    });
    tp.send(1, A, 15);
    let c = tp.settle();
    assert_eq!(
        (c[0].rx, c[2].rx),
        (15, 20),
        "A is known: only A gets B's frames"
    );
    let d = h.ofctl(&["dump-flows", "br0", "table=1"]);
    let l = flow_line(&d, &format!("dl_dst={A}"));
    assert!(
        l.contains("idle_timeout=60,") && l.ends_with("actions=output:1"),
        "{l}"
    );
    assert_eq!(counter(l, "n_packets="), 15);
    tp.quit();
}

fn recv_msg(s: &mut UnixStream) -> Vec<u8> {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).expect("a reply");
    let len = u16::from_be_bytes([h[2], h[3]]) as usize;
    let mut b = vec![0u8; len - 8];
    s.read_exact(&mut b).unwrap();
    [h.to_vec(), b].concat()
}

/// Sends `msg` and returns the error (type, code) it drew, reading past
/// anything else (echo, barrier replies).
fn error_for(s: &mut UnixStream, msg: &[u8]) -> (u16, u16) {
    s.write_all(msg).unwrap();
    // A barrier after it: if no error comes first, there was none.
    s.write_all(&[1, 18, 0, 8, 0, 0, 0, 99]).unwrap();
    loop {
        let r = recv_msg(s);
        match r[1] {
            1 => {
                let t = u16::from_be_bytes([r[8], r[9]]);
                let c = u16::from_be_bytes([r[10], r[11]]);
                let _ = recv_msg(s);
                return (t, c);
            }
            19 => return (0xffff, 0xffff),
            _ => {}
        }
    }
}

#[test]
fn malformed_openflow_gets_errors_and_changes_nothing() {
    let h = Host::start("ofbad");
    h.add_vhost_ports("br0", &["vm-a"]);
    let path = h.dir.join("br0.mgmt");
    let before = h.ofctl(&["dump-flows", "br0"]);
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = recv_msg(&mut s);
    assert_eq!((hello[1], hello[0]), (0, 4), "rvs offers up to 1.3");
    s.write_all(&[1, 0, 0, 8, 0, 0, 0, 1]).unwrap();
    // Unknown message type.
    assert_eq!(error_for(&mut s, &[1, 99, 0, 8, 0, 0, 0, 2]), (1, 1));
    // A flow_mod cut short of its fixed part.
    let mut fm = vec![1, 14, 0, 20, 0, 0, 0, 3];
    fm.extend_from_slice(&[0; 12]);
    assert_eq!(error_for(&mut s, &fm), (1, 6));
    // An OpenFlow 1.0 flow_mod with an unknown action type.
    let mut fm = vec![1, 14, 0, 80, 0, 0, 0, 4];
    fm.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // all wildcards
    fm.extend_from_slice(&[0; 36]);
    fm.extend_from_slice(&[0; 8]); // cookie
    fm.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0x80, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
    ]);
    fm.extend_from_slice(&[0, 77, 0, 8, 0, 0, 0, 0]);
    assert_eq!(error_for(&mut s, &fm), (2, 0));
    // An NXT_FLOW_MOD whose NXM names a field that does not exist: a
    // Nicira vendor error (NXET_VENDOR, 0xb0c2) in OpenFlow 1.0.
    let mut nx = vec![1, 4, 0, 56, 0, 0, 0, 5, 0, 0, 0x23, 0x20, 0, 0, 0, 13];
    nx.extend_from_slice(&[0; 8]); // cookie
    nx.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0x80, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
    ]);
    nx.extend_from_slice(&[0, 6, 0, 0, 0, 0, 0, 0]); // match_len 6, pad
    nx.extend_from_slice(&[0x00, 0x00, 0x7e, 0x02, 0, 0, 0, 0]); // bogus field, padded
    assert_eq!(error_for(&mut s, &nx), (0xb0c2, 0));
    // An OpenFlow 1.3 message on this 1.0 session: bad version.
    assert_eq!(error_for(&mut s, &[4, 5, 0, 8, 0, 0, 0, 6]), (1, 0));
    // Still answering, nothing changed.
    s.write_all(&[1, 2, 0, 12, 0, 0, 0, 7, 1, 2, 3, 4]).unwrap();
    let echo = recv_msg(&mut s);
    assert_eq!(echo, vec![1, 3, 0, 12, 0, 0, 0, 7, 1, 2, 3, 4]);
    // A length below the header size cannot be framed: the session ends,
    // rvsd does not.
    s.write_all(&[1, 2, 0, 4, 0, 0, 0, 8]).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap_or(0), 0, "session closed");
    let strip = |d: &str| -> Vec<String> {
        d.lines()
            .filter(|l| l.starts_with(' '))
            .map(rule_text)
            .collect()
    };
    assert_eq!(strip(&h.ofctl(&["dump-flows", "br0"])), strip(&before));
    assert!(h.appctl(&["version"]).contains("rvs"));
    // OpenFlow 1.3: a match with a bad OXM class.
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = recv_msg(&mut s);
    s.write_all(&[4, 0, 0, 8, 0, 0, 0, 1]).unwrap();
    let mut fm = vec![4, 14, 0, 64, 0, 0, 0, 2];
    fm.extend_from_slice(&[0; 16]); // cookie, mask
    fm.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x80, 0]); // table, cmd, idle, hard, prio
    fm.extend_from_slice(&[0xff; 12]); // buffer, out_port, out_group
    fm.extend_from_slice(&[0, 0, 0, 0]); // flags, pad
    fm.extend_from_slice(&[0, 1, 0, 12, 0x12, 0x34, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0]);
    // barrier is type 20 in 1.3
    s.write_all(&fm).unwrap();
    s.write_all(&[4, 20, 0, 8, 0, 0, 0, 3]).unwrap();
    let e = recv_msg(&mut s);
    assert_eq!(
        (e[1], &e[8..12]),
        (1, &[0u8, 4, 0, 6][..]),
        "OFPBMC_BAD_FIELD"
    );
    assert_eq!(recv_msg(&mut s)[1], 21);
    assert_eq!(strip(&h.ofctl(&["dump-flows", "br0"])), strip(&before));
}

#[test]
fn update_storm_leaves_untouched_flows_exact() {
    let (h, mut tp) = three_vms("ofstorm");
    h.ofctl(&["del-flows", "br0"]);
    h.ofctl(&["add-flow", "br0", "priority=10,in_port=1,actions=output:2"]);
    // The churned set: 5,000 flows that match traffic nobody sends.
    let file = h.dir.join("churn.flows");
    let flows: String = (0..5000)
        .map(|i| {
            format!(
                "priority=20,in_port=3,dl_dst=02:99:00:00:{:02x}:{:02x},actions=output:1\n",
                i / 256,
                i % 256
            )
        })
        .collect();
    std::fs::write(&file, flows).unwrap();
    let storm = {
        let dir = h.dir.clone();
        let file = file.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut changes = 0u64;
            while t0.elapsed() < Duration::from_secs(4) {
                for args in [
                    vec!["add-flows", "br0", file.to_str().unwrap()],
                    vec!["del-flows", "br0", "in_port=3"],
                ] {
                    let o = std::process::Command::new("ovs-ofctl")
                        .env("OVS_RUNDIR", &dir)
                        .args(&args)
                        .output()
                        .unwrap();
                    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                    changes += 5000;
                }
            }
            (changes, t0.elapsed())
        })
    };
    let mut sent = 0u64;
    while !storm.is_finished() {
        tp.send(0, B, 256);
        sent += 256;
    }
    let (changes, took) = storm.join().unwrap();
    let c = tp.settle();
    println!(
        "{changes} flow changes in {:.2} s ({:.0}/s) while {sent} frames crossed",
        took.as_secs_f64(),
        changes as f64 / took.as_secs_f64()
    );
    assert!(changes >= 20_000, "the storm ran: {changes}");
    assert_eq!(
        (c[0].tx, c[1].rx, c[2].rx),
        (sent, sent, 0),
        "zero drops, none misdirected"
    );
    let d = h.ofctl(&["dump-flows", "br0"]);
    assert_eq!(counter(flow_line(&d, "in_port=1 "), "n_packets="), sent);
    let pmd = h.appctl(&["dpif-netdev/pmd-stats-show"]);
    for r in ["table-miss", "tx-queue-full", "pool-empty", "no-port"] {
        assert!(pmd.contains(&format!("    {r}: 0\n")), "{r}\n{pmd}");
    }
    tp.quit();
}
