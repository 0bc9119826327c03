//! Connection tracking and NAT written as ct() flows with the real
//! ovs-ofctl: a client namespace reaches a VM namespace's http.server
//! through a public address (static NAT, and a forwarded port), the VM
//! reaches the client as the public address, ICMP errors about a
//! translated connection come back translated (traceroute), the kernel
//! stacks and tshark check every checksum, and ovs-appctl dpctl/ shows
//! the connections.
use rvs_tests::{ping, wait_for, Capture, Host, Netns};
use std::time::Duration;

const GW: &str = "02:00:00:00:00:fe";
const CMAC: &str = "02:00:00:00:00:c1";
const VMAC: &str = "02:00:00:00:00:a1";

fn side(h: &Host, name: &str, mac: &str, addr: &str, route: &[&str]) -> Netns {
    let ns = Netns::new(name);
    let (i, o) = (format!("{name}i"), format!("{name}o"));
    rvs_tests::veth(&i, &ns, &o, &h.ns);
    h.vsctl(&["add-port", "br0", &o]);
    ns.exec(&["ip", "link", "set", &i, "address", mac]);
    ns.exec(&["ip", "address", "add", addr, "dev", &i]);
    ns.exec(&["ethtool", "-K", &i, "tx", "off"]);
    let gw = route[route.len() - 1];
    ns.exec(&[
        "ip",
        "neigh",
        "replace",
        gw,
        "lladdr",
        GW,
        "dev",
        &i,
        "nud",
        "permanent",
    ]);
    let mut r = vec!["ip", "route", "add"];
    r.extend_from_slice(route);
    ns.exec(&r);
    ns
}

fn serve(ns: &Netns, addr: &str, port: &str, dir: &std::path::Path) -> std::process::Child {
    let c = ns.spawn(&[
        "python3",
        "-m",
        "http.server",
        "--bind",
        addr,
        "--directory",
        dir.to_str().unwrap(),
        port,
    ]);
    let mut c = c;
    let t0 = std::time::Instant::now();
    while !ns
        .try_exec(&["sh", "-c", &format!("ss -ltn | grep -q {addr}:{port}")])
        .status
        .success()
    {
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = c.kill();
            let out = c.wait_with_output().unwrap();
            panic!("http.server: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    c
}

#[test]
fn static_nat_and_port_forwarding_by_ct_flows() {
    let h = Host::start("ctn");
    h.vsctl(&["add-br", "br0"]);
    let client = side(
        &h,
        "ctc",
        CMAC,
        "198.51.100.7/24",
        &["203.0.113.0/24", "via", "198.51.100.1"],
    );
    let vm = side(
        &h,
        "ctv",
        VMAC,
        "10.1.0.5/24",
        &["default", "via", "10.1.0.1"],
    );
    let (cp, vp) = (h.ofport("ctco"), h.ofport("ctvo"));
    let to_vm = format!("mod_dl_src:{GW},mod_dl_dst:{VMAC},output:{vp}");
    let to_client = format!("mod_dl_src:{GW},mod_dl_dst:{CMAC},output:{cp}");
    let flows = format!(
        "table=0,priority=10,in_port={cp},ip,nw_dst=203.0.113.10,actions=ct(zone=1,nat,table=1)\n\
         table=0,priority=10,in_port={vp},ip,actions=ct(zone=1,nat,table=2)\n\
         table=0,priority=0,actions=drop\n\
         table=1,priority=20,ct_state=+new+trk,tcp,tp_dst=8080,actions=ct(commit,zone=1,nat(dst=10.1.0.5:8000)),{to_vm}\n\
         table=1,priority=10,ct_state=+new+trk,ip,actions=ct(commit,zone=1,nat(dst=10.1.0.5),exec(set_field:0x21->ct_mark)),{to_vm}\n\
         table=1,priority=10,ct_state=+est+trk,ip,actions={to_vm}\n\
         table=1,priority=10,ct_state=+rel+trk,ip,actions={to_vm}\n\
         table=2,priority=10,ct_state=+new+trk,ip,actions=ct(commit,zone=1,nat(src=203.0.113.10)),{to_client}\n\
         table=2,priority=10,ct_state=+est+trk,ip,actions={to_client}\n\
         table=2,priority=10,ct_state=+rel+trk,ip,actions={to_client}\n"
    );
    std::fs::write(h.dir.join("flows.txt"), flows).unwrap();
    h.ofctl(&["del-flows", "br0"]);
    h.ofctl(&[
        "add-flows",
        "br0",
        h.dir.join("flows.txt").to_str().unwrap(),
    ]);
    let dump = h.ofctl(&["dump-flows", "br0"]);
    // As OVS prints it (OpenFlow 1.0 carries set_field as load).
    assert!(
        dump.contains("ct(commit,zone=1,nat(dst=10.1.0.5),exec(load:0x21->NXM_NX_CT_MARK[]))"),
        "{dump}"
    );
    assert!(
        dump.contains(
            "ct_state=+new+trk,tcp,tp_dst=8080 actions=ct(commit,zone=1,nat(dst=10.1.0.5:8000))"
        ),
        "{dump}"
    );

    // The client pings and curls the public address: the VM answers.
    let out = ping(&client, "203.0.113.10", 3, &[]);
    assert!(out.contains("3 packets transmitted, 3 received"), "{out}");
    std::fs::write(h.dir.join("who"), "vm\n").unwrap();
    let mut srv = serve(&vm, "10.1.0.5", "8000", &h.dir);
    let cap = Capture::start_with(
        &client,
        "ctci",
        &[
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
        ],
        "ip.src==203.0.113.10 && tcp",
        &["ip.checksum.status", "tcp.checksum.status", "tcp.srcport"],
        5,
    );
    let body = client.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://203.0.113.10:8000/who",
    ]);
    assert_eq!(body, "vm\n");
    // A forwarded port: 8080 on the public address is the VM's 8000.
    let body = client.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://203.0.113.10:8080/who",
    ]);
    assert_eq!(body, "vm\n");
    let lines = cap.finish();
    assert!(lines.len() >= 10, "{lines:?}");
    for l in &lines {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!((f[0], f[1]), ("1", "1"), "checksums: {l}");
        assert!(f[2] == "8000" || f[2] == "8080", "{l}");
    }
    let _ = srv.kill();
    let _ = srv.wait();

    // The connections, as OVS prints them.
    let ct = h.appctl(&["dpctl/dump-conntrack"]);
    assert!(
        ct.lines().any(
            |l| l.starts_with("tcp,orig=(src=198.51.100.7,dst=203.0.113.10,")
                && l.contains("dport=8000),reply=(src=10.1.0.5,dst=198.51.100.7,sport=8000,")
                && l.contains(",zone=1,mark=33,protoinfo=(state=")
        ),
        "{ct}"
    );
    assert!(
        ct.lines()
            .any(|l| l.contains("dport=8080),reply=(src=10.1.0.5,dst=198.51.100.7,sport=8000,")),
        "{ct}"
    );
    assert!(
        ct.contains("icmp,orig=(src=198.51.100.7,dst=203.0.113.10,id="),
        "{ct}"
    );

    // The VM reaches the client, which sees the public address.
    std::fs::write(h.dir.join("who"), "client\n").unwrap();
    let mut csrv = client.spawn(&[
        "python3",
        "-m",
        "http.server",
        "--bind",
        "198.51.100.7",
        "--directory",
        h.dir.to_str().unwrap(),
        "8001",
    ]);
    wait_for("client http.server", Duration::from_secs(10), || {
        client
            .try_exec(&["sh", "-c", "ss -ltn | grep -q 198.51.100.7:8001"])
            .status
            .success()
    });
    let body = vm.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://198.51.100.7:8001/who",
    ]);
    assert_eq!(body, "client\n");
    let _ = csrv.kill();
    let log = csrv.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&log.stderr);
    assert!(log.contains("203.0.113.10 - -"), "client saw: {log}");

    // ICMP errors about a translated connection come back translated:
    // UDP to a closed port of the client gets "port unreachable" quoting
    // the public address, which the VM must see quoting its own.
    let tr = vm.exec(&[
        "busybox",
        "traceroute",
        "-n",
        "-m",
        "2",
        "-w",
        "2",
        "198.51.100.7",
    ]);
    assert!(
        tr.lines()
            .any(|l| l.trim_start().starts_with("1  198.51.100.7")),
        "{tr}"
    );
    let stats = h.appctl(&["dpctl/ct-stats-show"]);
    assert!(stats.contains("Connections Stats:"), "{stats}");
    assert_eq!(h.appctl(&["dpctl/flush-conntrack", "zone=1"]), "");
    assert_eq!(h.appctl(&["dpctl/ct-get-nconns"]).trim(), "0");
}
