//! VLANs and bridges with VM-side ports: access ports of different tags
//! exchange nothing, same tag do, a trunk carries both tagged; nothing
//! crosses bridges.
use rvs_tests::{arp_request_hex, send_raw, virtio_user, Capture, Host, Netns, TestPmd};

const BCAST: &str = "ff:ff:ff:ff:ff:ff";

#[test]
fn access_trunk_and_bridge_isolation() {
    let h = Host::start("vlan");
    h.vsctl(&["add-br", "br0"]);
    h.vsctl(&["add-br", "br1"]);
    h.vsctl(&[
        "add-port",
        "br0",
        "a10",
        "tag=10",
        "--",
        "set",
        "Interface",
        "a10",
        "type=dpdkvhostuser",
    ]);
    h.vsctl(&[
        "add-port",
        "br0",
        "b10",
        "tag=10",
        "--",
        "set",
        "Interface",
        "b10",
        "type=dpdkvhostuser",
    ]);
    h.vsctl(&[
        "add-port",
        "br0",
        "c20",
        "vlan_mode=access",
        "tag=20",
        "--",
        "set",
        "Interface",
        "c20",
        "type=dpdkvhostuser",
    ]);
    h.vsctl(&[
        "add-port",
        "br0",
        "t",
        "vlan_mode=trunk",
        "trunks=10,20",
        "--",
        "set",
        "Interface",
        "t",
        "type=dpdkvhostuser",
    ]);
    h.vsctl(&[
        "add-port",
        "br1",
        "d",
        "--",
        "set",
        "Interface",
        "d",
        "type=dpdkvhostuser",
    ]);
    let names = ["a10", "b10", "c20", "t", "d"];
    let devs: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| virtio_user(i, &h.dir.join(n), &format!("02:00:00:00:01:{i:02x}")))
        .collect();
    let mut tp = TestPmd::start("vlan", &devs);
    tp.cmd("set verbose 1");
    tp.cmd("start");
    h.wait_link_up(&names);

    tp.send(0, BCAST, 10); // a10: VLAN 10
    let c = tp.settle();
    assert_eq!(
        c.iter().map(|p| p.rx).collect::<Vec<_>>(),
        vec![0, 10, 0, 10, 0],
        "VLAN 10 reaches b10 and the trunk only"
    );
    tp.send(2, BCAST, 5); // c20: VLAN 20
    let c = tp.settle();
    assert_eq!(
        c.iter().map(|p| p.rx).collect::<Vec<_>>(),
        vec![0, 10, 0, 15, 0],
        "VLAN 20 reaches the trunk only"
    );
    // What the trunk received carries the tags: 68-byte 802.1Q frames.
    let out = tp.output();
    let on_trunk = out
        .split("port 3/queue 0: received")
        .skip(1)
        .map(|s| s.split("port ").next().unwrap_or(""))
        .collect::<String>();
    assert_eq!(
        on_trunk.matches("type=0x8100 - length=68").count(),
        15,
        "{on_trunk}"
    );
    // br1's port: alone on its bridge; nothing reaches br0.
    tp.send(4, BCAST, 9);
    let c = tp.settle();
    assert_eq!(
        c.iter().map(|p| p.rx).collect::<Vec<_>>(),
        vec![0, 10, 0, 15, 0]
    );
    assert_eq!(c[4].tx, 9);
    let pmd = h.appctl(&["dpif-netdev/pmd-stats-show"]);
    assert!(pmd.contains("    vlan-denied: 0\n"), "{pmd}");
    // br1's internal port got d's broadcasts; br0's got none of them.
    h.wait_stats("br1", "d's 9 broadcasts", |s| s["tx_packets"] == 9);
    assert_eq!(
        h.stats("br0")["tx_packets"],
        15,
        "br0's own port is an all-VLAN trunk: VLAN 10 and 20, none of br1's"
    );

    // A kernel host on a trunk port sends 802.1Q-tagged ARP requests in
    // VLAN 20: the VM on the tag-20 access port (testpmd icmpecho) answers,
    // and tshark on the trunk's far end sees the replies tagged 20.
    let tenant = Netns::new("vlt");
    rvs_tests::veth("tr0", &tenant, "tr0h", &h.ns);
    h.vsctl(&["add-port", "br0", "tr0h", "vlan_mode=trunk", "trunks=10,20"]);
    tp.cmd("stop");
    // The VM trunk port would answer too: leave it out of forwarding.
    tp.cmd("set portlist 0,1,2,4");
    tp.cmd("set fwd icmpecho");
    tp.cmd("start");
    let me = [2, 0, 0, 0, 2, 1];
    let cap = Capture::start(
        &tenant,
        "tr0",
        "arp.opcode == 2",
        &["eth.src", "vlan.id", "arp.src.proto_ipv4"],
        6,
    );
    let tagged: Vec<String> = (0..3)
        .map(|_| arp_request_hex(me, Some(20), [10, 20, 0, 2], [10, 20, 0, 9]))
        .collect();
    send_raw(&tenant, "tr0", &tagged);
    // Untagged is VLAN 0, not in the trunk's list: refused and counted.
    send_raw(
        &tenant,
        "tr0",
        &[arp_request_hex(me, None, [10, 20, 0, 2], [10, 20, 0, 9])],
    );
    let replies = cap.finish();
    assert_eq!(
        replies,
        vec!["02:00:00:00:01:02\t20\t10.20.0.9"; 3],
        "three replies from c20, tagged 20: {}\n{}",
        h.appctl(&["dpif-netdev/pmd-stats-show"]),
        &tp.output()[tp.output().len().saturating_sub(4000)..]
    );
    let pmd = h.appctl(&["dpif-netdev/pmd-stats-show"]);
    assert!(pmd.contains("    vlan-denied: 1\n"), "{pmd}");
    tp.quit();
}
