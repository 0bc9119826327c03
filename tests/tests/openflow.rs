//! The real ovs-ofctl programs rvsd over OpenFlow 1.0 (+ Nicira
//! extensions) and 1.3: flows, groups, statistics, errors; testpmd's
//! virtio-user ports carry the traffic that flow counters must account for
//! exactly.
use rvs_tests::Host;

#[test]
fn scratch() {
    let h = Host::start("ofs");
    h.add_vhost_ports("br0", &["vm-a", "vm-b"]);
    for args in [
        vec!["show", "br0"],
        vec!["dump-flows", "br0"],
        vec!["add-flow", "br0", "in_port=1,actions=output:2"],
        vec!["add-flow", "br0", "table=1,priority=200,dl_vlan=5,dl_src=02:00:00:00:00:01,actions=resubmit(,1)"],
        vec!["dump-flows", "br0"],
        vec!["-O", "OpenFlow13", "dump-flows", "br0"],
        vec!["-O", "OpenFlow13", "add-flow", "br0", "table=2,priority=5,ip,nw_src=10.0.0.0/8,tcp,tp_dst=80,actions=push_vlan:0x8100,set_field:4196->vlan_vid,goto_table:3"],
        vec!["dump-flows", "br0"],
        vec!["-O", "OpenFlow13", "dump-flows", "br0"],
        vec!["dump-aggregate", "br0"],
        vec!["dump-ports", "br0"],
        vec!["-O", "OpenFlow13", "add-group", "br0", "group_id=1,type=all,bucket=output:1,bucket=output:2"],
        vec!["-O", "OpenFlow13", "dump-groups", "br0"],
        vec!["-O", "OpenFlow13", "dump-group-stats", "br0"],
        vec!["dump-tables", "br0"],
        vec!["del-flows", "br0", "in_port=1"],
        vec!["dump-flows", "br0"],
    ] {
        let o = h.ofctl_raw(&args);
        println!("$ ovs-ofctl {}\n{}{}", args.join(" "), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
}
