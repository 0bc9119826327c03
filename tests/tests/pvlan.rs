//! CloudStack's private VLANs on a KVM host: the flows its scripts
//! ovs-pvlan-kvm-vm.sh and ovs-pvlan-kvm-dhcp-host.sh (CloudStack 4.x,
//! scripts/vm/network/) install, issued here command for command through
//! the real ovs-vsctl and ovs-ofctl and built on what those print (the trunk
//! port from `ovs-ofctl show`, a VM's port from `ovs-vsctl find`, group
//! members from `ovs-ofctl -O OpenFlow13 dump-groups`). Frames from a VM
//! are QinQ-tagged (primary outside, secondary inside; vlan-limit=2) and
//! looked up again as if from the trunk; promiscuous, community and isolated
//! semantics are checked on the wire with exact frame counts, the trunk's
//! double tags with tshark.
use rvs_tests::guest::received;
use rvs_tests::{send_raw, veth, Capture, Host, Netns};

const BR: &str = "cloudbr0";
const PRI: u16 = 200;
const COMMUNITY: u16 = 201;
const ISOLATED: u16 = 202;
const FF: &str = "ff:ff:ff:ff:ff:ff";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Promiscuous,
    Community,
    Isolated,
}

struct Vm {
    name: &'static str,
    mac: String,
    ip: String,
    kind: Kind,
    sec: u16,
    ns: Netns,
}

impl Vm {
    fn ifname(&self) -> String {
        format!("{}i", self.name)
    }
}

/// find_port: the ofport of the interface with this attached-mac, cut out
/// of `ovs-vsctl --column ofport find` as the script does.
fn find_port(h: &Host, mac: &str) -> String {
    let esc = mac.replace(':', "\\:");
    let out = h.vsctl(&[
        "--column",
        "ofport",
        "find",
        "interface",
        &format!("external_ids:attached-mac={esc}"),
    ]);
    let flat = out.replace(' ', "");
    flat.split(':').nth(1).unwrap_or("").trim().to_string()
}

/// find_port_group: the ports in a group's buckets, from dump-groups.
fn find_port_group(h: &Host, gid: u16) -> String {
    let dump = h.ofctl(&["-O", "OpenFlow13", "dump-groups", BR]);
    let Some(line) = dump
        .lines()
        .find(|l| l.contains(&format!("group_id={gid},")))
    else {
        return String::new();
    };
    let mut s = match line.rfind("type=all,") {
        Some(i) => line[i + "type=all,".len()..].to_string(),
        None => line.to_string(),
    };
    for cut in [
        "bucket=actions=",
        "resubmit(,1)",
        "strip_vlan,",
        "pop_vlan,",
        "output:",
    ] {
        s = s.replace(cut, "");
    }
    let s = s.trim_start_matches(',').trim_end_matches(',');
    s.replace(",,", ",").replace(' ', "")
}

fn add_to_ports(ports: &str, port: &str) -> String {
    if ports.is_empty() {
        port.to_string()
    } else if ports.split(',').any(|p| p == port) {
        ports.to_string()
    } else {
        format!("{port},{ports}")
    }
}

fn mod_group(h: &Host, gid: u16, ports: &str) {
    let id = format!("group_id={gid},type=all");
    if gid == PRI {
        let spec = if ports.is_empty() {
            format!("{id},bucket=resubmit(,1)")
        } else {
            let acts = ports.replace(',', ",bucket=actions=strip_vlan,output:");
            format!("{id},bucket=resubmit(,1),bucket=actions=strip_vlan,output:{acts}")
        };
        h.ofctl(&["-O", "OpenFlow13", "mod-group", "--may-create", BR, &spec]);
        return;
    }
    if ports.is_empty() {
        h.ofctl(&[
            "-O",
            "OpenFlow13",
            "del-groups",
            BR,
            &format!("group_id={gid}"),
        ]);
    } else {
        let acts = ports.replace(',', ",bucket=actions=");
        h.ofctl(&[
            "-O",
            "OpenFlow13",
            "mod-group",
            "--may-create",
            BR,
            &format!("{id},bucket=actions={acts}"),
        ]);
    }
}

fn add_flow(h: &Host, flow: &str) {
    h.ofctl(&["add-flow", BR, flow]);
}

/// `ovs-pvlan-kvm-vm.sh -A -b cloudbr0 -p PRI -s SEC -m MAC -{P,C,I}`.
fn pvlan_vm_add(h: &Host, vm: &Vm) {
    let (pri, sec, mac) = (PRI, vm.sec, vm.mac.as_str());
    h.vsctl(&[
        "set",
        "bridge",
        BR,
        "protocols=OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13",
    ]);
    h.vsctl(&["set", "Open_vSwitch", ".", "other_config:vlan-limit=2"]);
    add_flow(h, "priority=0,actions=NORMAL");
    let show = h.ofctl(&["show", BR]);
    let trunk = show
        .lines()
        .find(|l| {
            l.split_once('(').is_some_and(|(_, r)| {
                (r.starts_with("eth") || r.starts_with("em"))
                    && r[if r.starts_with("eth") { 3 } else { 2 }..]
                        .starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .and_then(|l| l.split('(').next())
        .map(|s| s.trim().to_string())
        .expect("a trunk port named eth*/em* in ovs-ofctl show");
    let vm_port = find_port(h, mac);
    assert!(!vm_port.is_empty(), "{mac} not found");
    let (pri_h, sec_h) = (4096 + pri, 4096 + sec);
    let mut pri_ports = find_port_group(h, pri_h);
    let mut sec_ports = find_port_group(h, sec);

    if vm.kind == Kind::Promiscuous {
        add_flow(h, &format!("table=0,priority=70,dl_vlan={pri},dl_dst={mac},actions=strip_vlan,strip_vlan,output:{vm_port}"));
    } else {
        add_flow(
            h,
            &format!(
                "table=0,priority=70,dl_vlan={pri},dl_dst={mac},actions=strip_vlan,resubmit(,1)"
            ),
        );
    }
    add_flow(
        h,
        &format!(
            "table=1,priority=70,dl_vlan={pri},dl_dst={mac},actions=strip_vlan,output:{vm_port}"
        ),
    );
    if vm.kind == Kind::Community {
        add_flow(h, &format!("table=1,priority=70,dl_vlan={sec},dl_dst={mac},actions=strip_vlan,output:{vm_port}"));
    }
    if vm.kind == Kind::Isolated {
        add_flow(h, &format!("table=1,priority=70,udp,dl_vlan={sec},dl_dst={mac},tp_src=67,actions=strip_vlan,output:{vm_port}"));
    }
    add_flow(h, "table=1,priority=0,actions=drop");
    add_flow(
        h,
        &format!("table=0,priority=60,dl_vlan={pri},dl_src={mac},actions=output:{trunk}"),
    );
    h.ofctl(&["add-flow", "-O", "OpenFlow13", BR, &format!("table=0,priority=50,vlan_tci=0x0000,dl_src={mac},actions=push_vlan:0x8100,set_field:{sec_h}->vlan_vid,push_vlan:0x8100,set_field:{pri_h}->vlan_vid,resubmit:{trunk}")]);

    if vm.kind != Kind::Promiscuous {
        pri_ports = add_to_ports(&pri_ports, &vm_port);
        mod_group(h, pri_h, &pri_ports);
    }
    sec_ports = add_to_ports(&sec_ports, &vm_port);
    mod_group(h, sec, &sec_ports);
    let prom = find_port_group(h, pri);
    mod_group(h, pri, &prom);

    add_flow(h, &format!("table=0,priority=300,dl_vlan={pri},dl_src={mac},dl_dst={FF},actions=output:{trunk},strip_vlan,group:{pri}"));
    add_flow(
        h,
        &format!("table=0,priority=70,dl_vlan={pri},dl_dst={FF},actions=strip_vlan,group:{pri}"),
    );
    add_flow(
        h,
        &format!("table=1,priority=70,dl_vlan={pri},dl_dst={FF},actions=strip_vlan,group:{pri_h}"),
    );
    if vm.kind == Kind::Community {
        add_flow(
            h,
            &format!(
                "table=1,priority=70,dl_vlan={sec},dl_dst={FF},actions=strip_vlan,group:{sec}"
            ),
        );
    }
    if vm.kind == Kind::Isolated {
        add_flow(h, &format!("table=1,priority=70,udp,dl_vlan={sec},tp_src=67,dl_dst={FF},actions=strip_vlan,group:{sec}"));
    }
}

fn del_from_ports(ports: &str, port: &str) -> String {
    ports
        .split(',')
        .filter(|p| !p.is_empty() && *p != port)
        .collect::<Vec<_>>()
        .join(",")
}

fn del_flows_strict(h: &Host, flow: &str) {
    h.ofctl(&["del-flows", BR, "--strict", flow]);
}

/// `ovs-pvlan-kvm-vm.sh -D ...`: the VM's flows go, its port leaves the
/// groups (found again from dump-flows, as the script does).
fn pvlan_vm_del(h: &Host, vm: &Vm) {
    let (pri, sec, mac) = (PRI, vm.sec, vm.mac.as_str());
    let pri_h = 4096 + pri;
    let pri_ports = find_port_group(h, pri_h);
    let sec_ports = find_port_group(h, sec);
    del_flows_strict(
        h,
        &format!("table=0,priority=70,dl_vlan={pri},dl_dst={mac}"),
    );
    let dump = h.ofctl(&["dump-flows", BR]);
    let needle = format!("priority=70,dl_vlan={pri},dl_dst={mac}");
    let vm_port = dump
        .lines()
        .filter(|l| l.contains(&needle))
        .flat_map(|l| l.split(':'))
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(!vm_port.is_empty(), "{dump}");
    del_flows_strict(
        h,
        &format!("table=1,priority=70,dl_vlan={pri},dl_dst={mac}"),
    );
    if vm.kind == Kind::Community {
        del_flows_strict(
            h,
            &format!("table=1,priority=70,dl_vlan={sec},dl_dst={mac}"),
        );
    }
    if vm.kind == Kind::Isolated {
        del_flows_strict(
            h,
            &format!("table=1,priority=70,udp,dl_vlan={sec},dl_dst={mac},tp_src=67"),
        );
    }
    del_flows_strict(
        h,
        &format!("table=0,priority=60,dl_vlan={pri},dl_src={mac}"),
    );
    del_flows_strict(
        h,
        &format!("table=0,priority=50,vlan_tci=0x0000,dl_src={mac}"),
    );
    del_flows_strict(
        h,
        &format!("table=0,priority=50,vlan_tci=0x0000/0x1fff,dl_src={mac}"),
    );
    mod_group(h, pri_h, &del_from_ports(&pri_ports, &vm_port));
    mod_group(h, sec, &del_from_ports(&sec_ports, &vm_port));
    del_flows_strict(
        h,
        &format!("table=0,priority=300,dl_vlan={pri},dl_src={mac},dl_dst={FF}"),
    );
    // The last VM of the primary VLAN on this host takes the VLAN's rules
    // with it (not the case here: the other ports stay).
    let res1 = h
        .vsctl(&["--column", "_uuid", "find", "port", &format!("tag={pri}")])
        .lines()
        .count();
    let res2 = find_port(h, mac).lines().count();
    assert!(res1 > 1 && res2 == 1, "{res1} {res2}");
}

/// `ovs-pvlan-kvm-dhcp-host.sh -A -b cloudbr0 -p PRI -s SEC -m MAC -d IP`.
fn pvlan_dhcp_host_add(h: &Host, sec: u16, mac: &str, dhcp_ip: &str) {
    h.vsctl(&[
        "set",
        "bridge",
        BR,
        "protocols=OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13",
    ]);
    h.vsctl(&["set", "Open_vSwitch", ".", "other_config:vlan-limit=2"]);
    let port = find_port(h, mac);
    let pri = PRI;
    add_flow(h, &format!("table=0,priority=200,arp,dl_vlan={pri},nw_dst={dhcp_ip},actions=strip_vlan,resubmit(,1)"));
    add_flow(h, &format!("table=1,priority=200,arp,dl_vlan={sec},nw_dst={dhcp_ip},actions=strip_vlan,output:{port}"));
    add_flow(h, &format!("table=0,priority=100,udp,dl_vlan={pri},nw_dst=255.255.255.255,tp_dst=67,actions=strip_vlan,resubmit(,1)"));
    add_flow(h, &format!("table=1,priority=100,udp,dl_vlan={sec},nw_dst=255.255.255.255,tp_dst=67,actions=strip_vlan,output:{port}"));
}

fn mac_bytes(mac: &str) -> Vec<u8> {
    mac.split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// A UDP frame (ports 40000 -> 9, never DHCP) as hex, with optional tags.
fn udp_hex(dst: &str, src: &str, tags: &[u16]) -> String {
    let mut f = mac_bytes(dst);
    f.extend(mac_bytes(src));
    for t in tags {
        f.extend([0x81, 0x00]);
        f.extend(t.to_be_bytes());
    }
    f.extend([0x08, 0x00]);
    let mut ip = vec![
        0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0, 10, 90, 0, 99, 255, 255, 255, 255,
    ];
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend([0x9c, 0x40, 0, 9, 0, 12, 0, 0, b'p', b'v', b'l', b'n']);
    f.resize(f.len().max(60), 0);
    f.iter().map(|b| format!("{b:02x}")).collect()
}

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

#[test]
fn cloudstack_pvlan_flows_keep_promiscuous_community_and_isolated_apart() {
    let mut h = Host::start("pvl");
    // As the agent makes a bridge with DPDK on.
    h.vsctl(&[
        "add-br",
        BR,
        "--",
        "set",
        "bridge",
        BR,
        "datapath_type=netdev",
    ]);
    // The trunk to the rest of the network: eth1, as the script looks for.
    let up = Netns::new("pvlup");
    veth("up0", &up, "eth1", &h.ns);
    h.vsctl(&["add-port", BR, "eth1"]);
    let spec: [(&str, &str, Kind, u16); 5] = [
        ("pvc1", "52:54:00:90:00:21", Kind::Community, COMMUNITY),
        ("pvc2", "52:54:00:90:00:22", Kind::Community, COMMUNITY),
        ("pvi1", "52:54:00:90:00:31", Kind::Isolated, ISOLATED),
        ("pvi2", "52:54:00:90:00:32", Kind::Isolated, ISOLATED),
        ("pvp", "52:54:00:90:00:01", Kind::Promiscuous, PRI),
    ];
    let mut vms = Vec::new();
    for (i, (name, mac, kind, sec)) in spec.into_iter().enumerate() {
        let ns = Netns::new(name);
        let port = format!("vnet{i}");
        let vm = Vm {
            name,
            mac: mac.into(),
            ip: format!("10.90.0.{}", i + 10),
            kind,
            sec,
            ns,
        };
        veth(&vm.ifname(), &vm.ns, &port, &h.ns);
        vm.ns
            .exec(&["ip", "link", "set", &vm.ifname(), "address", mac]);
        vm.ns.exec(&[
            "ip",
            "address",
            "add",
            &format!("{}/24", vm.ip),
            "dev",
            &vm.ifname(),
        ]);
        // As libvirt adds a guest's tap, on the primary VLAN.
        h.vsctl(&[
            "--",
            "--may-exist",
            "add-port",
            BR,
            &port,
            "--",
            "set",
            "Port",
            &port,
            &format!("tag={PRI}"),
            "--",
            "set",
            "Interface",
            &port,
            &format!("external-ids:attached-mac=\"{mac}\""),
        ]);
        vms.push(vm);
    }
    for vm in &vms {
        pvlan_vm_add(&h, vm);
    }
    let prom = &vms[4];
    pvlan_dhcp_host_add(&h, ISOLATED, &prom.mac, &prom.ip);
    // The groups as the scripts left them: community and isolated ports in
    // 4296, each secondary's ports in its own, the promiscuous one in 200.
    let port_of = |i: usize| h.ofport(&format!("vnet{i}")).to_string();
    assert_eq!(
        find_port_group(&h, COMMUNITY),
        format!("{},{}", port_of(1), port_of(0))
    );
    assert_eq!(
        find_port_group(&h, ISOLATED),
        format!("{},{}", port_of(3), port_of(2))
    );
    assert_eq!(find_port_group(&h, PRI), port_of(4));
    assert_eq!(
        find_port_group(&h, 4096 + PRI),
        format!(
            "{},{},{},{}",
            port_of(3),
            port_of(2),
            port_of(1),
            port_of(0)
        )
    );

    let counts = |vms: &[Vm], up: &Netns| -> Vec<u64> {
        let mut v: Vec<u64> = vms.iter().map(|m| m.ns.rx_packets(&m.ifname())).collect();
        v.push(up.rx_packets("up0"));
        v
    };
    // Sends `n` copies of a frame from VM `from` (or the trunk: None) and
    // returns what each VM and the trunk received.
    let send = |from: Option<usize>, hex: String, n: usize| -> Vec<u64> {
        let before = counts(&vms, &up);
        let frames = vec![hex; n];
        match from {
            Some(i) => send_raw(&vms[i].ns, &vms[i].ifname(), &frames),
            None => send_raw(&up, "up0", &frames),
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let after = counts(&vms, &up);
        after.iter().zip(&before).map(|(a, b)| a - b).collect()
    };
    let (c1, c2, i1, i2, p) = (0, 1, 2, 3, 4);
    let mac = |i: usize| vms[i].mac.clone();

    // Broadcasts. Columns: c1 c2 i1 i2 p trunk.
    let cap = Capture::start(&up, "up0", "udp.dstport == 9", &["vlan.id"], 4);
    assert_eq!(
        send(Some(c1), udp_hex(FF, &mac(c1), &[]), 3),
        [0, 3, 0, 0, 3, 3]
    );
    let lines = cap.finish();
    assert_eq!(lines, vec!["200,201"; 3], "QinQ on the trunk");
    assert_eq!(
        send(Some(i1), udp_hex(FF, &mac(i1), &[]), 4),
        [0, 0, 0, 0, 4, 4]
    );
    assert_eq!(
        send(Some(p), udp_hex(FF, &mac(p), &[]), 5),
        [5, 5, 5, 5, 0, 5]
    );
    // Unicast between VMs on this host.
    assert_eq!(send(Some(i1), udp_hex(&mac(i2), &mac(i1), &[]), 2), [0; 6]);
    assert_eq!(
        send(Some(i1), udp_hex(&mac(p), &mac(i1), &[]), 2),
        [0, 0, 0, 0, 2, 0]
    );
    assert_eq!(
        send(Some(c1), udp_hex(&mac(c2), &mac(c1), &[]), 3),
        [0, 3, 0, 0, 0, 0]
    );
    assert_eq!(send(Some(c1), udp_hex(&mac(i1), &mac(c1), &[]), 2), [0; 6]);
    assert_eq!(
        send(Some(p), udp_hex(&mac(i1), &mac(p), &[]), 2),
        [0, 0, 2, 0, 0, 0]
    );
    // From other hosts over the trunk, double-tagged: community to
    // community, isolated to isolated (dropped), promiscuous to isolated.
    assert_eq!(
        send(
            None,
            udp_hex(&mac(c2), "52:54:00:99:00:01", &[PRI, COMMUNITY]),
            1
        ),
        [0, 1, 0, 0, 0, 0]
    );
    assert_eq!(
        send(
            None,
            udp_hex(&mac(i2), "52:54:00:99:00:02", &[PRI, ISOLATED]),
            1
        ),
        [0; 6]
    );
    assert_eq!(
        send(None, udp_hex(&mac(i2), "52:54:00:99:00:03", &[PRI, PRI]), 1),
        [0, 0, 0, 1, 0, 0]
    );

    // Real traffic: the kernels' ARP and ICMP.
    let ping = |from: usize, to: usize| {
        let out = rvs_tests::ping(&vms[from].ns, &vms[to].ip, 3, &[]);
        received(&out).unwrap_or(0)
    };
    assert_eq!(ping(i1, p), 3, "isolated to promiscuous");
    assert_eq!(ping(c1, c2), 3, "within the community");
    assert_eq!(ping(c2, p), 3, "community to promiscuous");
    assert_eq!(ping(i1, i2), 0, "isolated to isolated");
    assert_eq!(ping(c1, i2), 0, "community to isolated");

    // No neighbour probes from the pings while frames are counted again.
    for vm in &vms {
        vm.ns.exec(&["ip", "neigh", "flush", "all"]);
    }

    // The isolated VM i2 stops: its flows and group memberships go.
    pvlan_vm_del(&h, &vms[i2]);
    assert_eq!(find_port_group(&h, ISOLATED), port_of(2));
    assert_eq!(
        find_port_group(&h, 4096 + PRI),
        format!("{},{},{}", port_of(2), port_of(1), port_of(0))
    );
    assert!(!h.ofctl(&["dump-flows", BR]).contains(&mac(i2)));
    assert_eq!(
        send(Some(p), udp_hex(FF, &mac(p), &[]), 4),
        [4, 4, 4, 0, 0, 4]
    );

    // The same commands against OVS-DPDK 3.1 on the same database leave
    // the same flows and groups, as ovs-ofctl prints them.
    let rvs_tables = tables(&h);
    h.appctl(&["exit", "--cleanup"]);
    h.stop_rvsd();
    h.start_ovs_vswitchd();
    assert!(h.appctl(&["version"]).contains("Open vSwitch"));
    rvs_tests::wait_for("OVS's bridge", std::time::Duration::from_secs(30), || {
        h.ofctl_raw(&["show", BR]).status.success()
    });
    for vm in &vms {
        pvlan_vm_add(&h, vm);
    }
    pvlan_dhcp_host_add(&h, ISOLATED, &vms[p].mac, &vms[p].ip);
    pvlan_vm_del(&h, &vms[i2]);
    assert_eq!(tables(&h), rvs_tables);
}

/// dump-flows (counters and ages cut) and dump-groups, sorted.
fn tables(h: &Host) -> (Vec<String>, Vec<String>) {
    let mut flows: Vec<String> = h
        .flows(&[BR])
        .into_iter()
        .map(|l| {
            l.split(", ")
                .filter(|f| !(f.starts_with("n_packets=") || f.starts_with("n_bytes=")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    flows.sort();
    let mut groups: Vec<String> = h
        .ofctl(&["-O", "OpenFlow13", "dump-groups", BR])
        .lines()
        .filter(|l| l.starts_with(' '))
        .map(|l| l.trim().to_string())
        .collect();
    groups.sort();
    (flows, groups)
}
