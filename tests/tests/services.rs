//! The service layer driven by rvsctl: a gateway on br0 between a public
//! subnet (the client namespace) and the VMs' private subnet, static NAT,
//! port forwarding (TCP and UDP, single ports and ranges) and load
//! balancers, checked by the kernels' TCP/UDP stacks, ARP, tshark, and
//! the rules' own counters; the rules come back after rvsd is killed.
use rvs_tests::{http_server, ping, tenant, wait_for, Capture, Host, Netns};
use std::process::Child;
use std::time::Duration;

const GW: &str = "02:00:00:00:00:fe";

/// A namespace on br0 with a route through the gateway.
fn member(h: &Host, name: &str, addr: &str, route: &[&str]) -> Netns {
    let ns = tenant(h, "br0", name, addr);
    let mut r = vec!["ip", "route", "add"];
    r.extend_from_slice(route);
    ns.exec(&r);
    ns
}

fn gateway(h: &Host) {
    h.vsctl(&["add-br", "br0"]);
    h.rvsctl(&["gateway-set", "br0", GW, "10.1.0.1/24", "198.51.100.1/24"]);
}

fn client(h: &Host, name: &str) -> Netns {
    member(
        h,
        name,
        "198.51.100.7/24",
        &["203.0.113.0/24", "via", "198.51.100.1"],
    )
}

fn vm(h: &Host, name: &str, addr: &str) -> Netns {
    member(
        h,
        name,
        &format!("{addr}/24"),
        &["default", "via", "10.1.0.1"],
    )
}

/// A python3 http.server in `ns` answering /who with `who`.
fn web(h: &Host, ns: &Netns, addr: &str, port: &str, who: &str) -> Child {
    let dir = h.dir.join(format!("www-{who}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("who"), format!("{who}\n")).unwrap();
    http_server(ns, addr, port, &dir)
}

fn curl(ns: &Netns, url: &str, extra: &[&str]) -> Result<String, String> {
    let mut a = vec!["curl", "-sS", "--max-time", "5"];
    a.extend_from_slice(extra);
    a.push(url);
    let o = ns.try_exec(&a);
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// The show line that starts with `prefix` (after indentation).
fn show_line(h: &Host, prefix: &str) -> String {
    let s = h.rvsctl(&["show"]);
    s.lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{s}"))
        .to_string()
}

/// "N connections, P packets, B bytes" of a show line.
fn counts(line: &str) -> (u64, u64) {
    let tail = line.rsplit("): ").next().unwrap();
    let n: Vec<u64> = tail
        .split(", ")
        .map(|p| p.split(' ').next().unwrap().parse().unwrap())
        .collect();
    (n[0], n[1])
}

fn wait_neighbours(h: &Host, ips: &[&str]) {
    let t0 = std::time::Instant::now();
    loop {
        let s = h.rvsctl(&["show"]);
        if ips.iter().all(|ip| s.contains(&format!("neighbour {ip} "))) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the gateway did not resolve {ips:?}:\n{s}\n{}",
            h.ofctl(&["dump-flows", "br0", "arp"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
d, a = s.recvfrom(100)
s.sendto(d.upper(), a)
"#;

const UDP_ASK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(b'hi', (sys.argv[1], int(sys.argv[2])))
try:
    d, a = s.recvfrom(100)
    print(d.decode(), a[0], a[1])
except socket.timeout:
    print('timeout')
"#;

#[test]
fn static_nat_and_port_forwarding_by_rvsctl() {
    let mut h = Host::start("svn");
    h.vsctl(&["add-br", "br0"]);
    // A rule for a bridge without a gateway would never apply: refused.
    let o = h.rvsctl_raw(&["nat-add", "br0", "203.0.113.10", "10.1.0.5"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bridge br0 has no gateway"), "{err}");
    h.rvsctl(&["gateway-set", "br0", GW, "10.1.0.1/24", "198.51.100.1/24"]);
    // Bad values are refused whole, naming the field.
    for (args, want) in [
        (
            vec![
                "pf-add",
                "br0",
                "203.0.113.11",
                "tcp",
                "1000-1010",
                "10.1.0.6",
                "2000-2005",
            ],
            "private_ports 2000-2005: a range must be as long as public_ports 1000-1010",
        ),
        (
            vec!["nat-add", "br0", "203.0.113.300", "10.1.0.5"],
            "public_ip \"203.0.113.300\"",
        ),
        (
            vec![
                "pf-add",
                "br0",
                "203.0.113.11",
                "sctp",
                "80",
                "10.1.0.6",
                "80",
            ],
            "protocol \"sctp\": give tcp or udp",
        ),
    ] {
        let o = h.rvsctl_raw(&args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(
        h.rvsctl(&["list"]),
        format!("gateway br0 {GW} 10.1.0.1/24 198.51.100.1/24\n")
    );

    let cl = client(&h, "svc");
    let v1 = vm(&h, "svv", "10.1.0.5");
    let v2 = vm(&h, "svw", "10.1.0.6");
    h.rvsctl(&["nat-add", "br0", "203.0.113.10", "10.1.0.5"]);
    h.rvsctl(&[
        "pf-add",
        "br0",
        "203.0.113.11",
        "tcp",
        "8080",
        "10.1.0.6",
        "8000",
    ]);
    h.rvsctl(&[
        "pf-add",
        "br0",
        "203.0.113.11",
        "tcp",
        "9000-9002",
        "10.1.0.6",
        "8000",
    ]);
    h.rvsctl(&[
        "pf-add",
        "br0",
        "203.0.113.11",
        "udp",
        "5000-5004",
        "10.1.0.6",
        "6000-6004",
    ]);
    let o = h.rvsctl_raw(&[
        "pf-add",
        "br0",
        "203.0.113.11",
        "tcp",
        "9002-9010",
        "10.1.0.6",
        "8000",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("203.0.113.11 tcp 9000-9002 is forwarded already"));

    // The rules are flows and groups ovs-ofctl shows.
    let dump = h.ofctl(&["dump-flows", "br0"]);
    for want in [
        "table=220, n_packets=0, n_bytes=0, idle_age=0, priority=60,ct_state=+new+trk,ip,nw_dst=203.0.113.10 actions=learn(",
        "ct(commit,table=221,zone=65000,nat(dst=10.1.0.5),exec(set_field:0x",
        "priority=65,ct_state=+new+trk,udp,nw_dst=203.0.113.11,tp_dst=5003 actions=learn(",
        "nat(dst=10.1.0.6:6003)",
        "priority=65,ct_state=+new+trk,tcp,nw_dst=203.0.113.11,tp_dst=9001 actions=",
        "priority=50000,ip,dl_dst=02:00:00:00:00:fe actions=ct(table=220,zone=65000,nat)",
    ] {
        assert!(dump.contains(want), "{want:?} not in:\n{dump}");
    }
    // They are plain OpenFlow: what dump-flows prints, ovs-ofctl's own
    // parser takes back (prerequisites checked) onto another bridge.
    h.vsctl(&["add-br", "br1"]);
    let text: String = h
        .ofctl(&["dump-flows", "--no-stats", "br0"])
        .lines()
        .filter(|l| l.starts_with(' '))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let file = h.dir.join("service-flows.txt");
    std::fs::write(&file, &text).unwrap();
    h.ofctl(&["add-flows", "br1", file.to_str().unwrap()]);
    // OpenFlow 1.0 carries the ct exec's set_field as a load.
    let back: String = h
        .ofctl(&["dump-flows", "--no-stats", "br1"])
        .lines()
        .filter(|l| l.starts_with(' '))
        .map(|l| {
            let l = l.trim().replace("exec(load:", "exec(set_field:");
            format!("{}\n", l.replace("->NXM_NX_CT_MARK[]", "->ct_mark"))
        })
        .collect();
    let (mut a, mut b): (Vec<&str>, Vec<&str>) = (back.lines().collect(), text.lines().collect());
    a.sort();
    b.sort();
    let only_back: Vec<_> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_text: Vec<_> = b.iter().filter(|l| !a.contains(l)).collect();
    assert!(
        only_back.is_empty() && only_text.is_empty(),
        "{only_back:#?}\n{only_text:#?}"
    );
    h.vsctl(&["del-br", "br1"]);
    wait_neighbours(&h, &["10.1.0.5", "10.1.0.6"]);

    // Static NAT: the client pings and curls the public address.
    let out = ping(&cl, "203.0.113.10", 3, &[]);
    assert!(out.contains("3 packets transmitted, 3 received"), "{out}");
    let mut s1 = web(&h, &v1, "10.1.0.5", "8000", "vm1");
    let mut s2 = web(&h, &v2, "10.1.0.6", "8000", "vm2");
    let cap = Capture::start_with(
        &cl,
        "svci",
        &[
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ],
        "ip.src==203.0.113.10 || ip.src==203.0.113.11",
        &[
            "ip.checksum.status",
            "tcp.checksum.status",
            "udp.checksum.status",
        ],
        8,
    );
    assert_eq!(
        curl(&cl, "http://203.0.113.10:8000/who", &[]),
        Ok("vm1".into())
    );
    // Port forwarding: one port, and a range to one port.
    assert_eq!(
        curl(&cl, "http://203.0.113.11:8080/who", &[]),
        Ok("vm2".into())
    );
    assert_eq!(
        curl(&cl, "http://203.0.113.11:9001/who", &[]),
        Ok("vm2".into())
    );
    // A port not forwarded gets nothing (one SYN in half a second).
    assert!(curl(&cl, "http://203.0.113.11:8000/who", &["--max-time", "0.5"]).is_err());
    // UDP, a range offset to offset: 5003 is the VM's 6003.
    let mut echo = v2.spawn(&["python3", "-c", UDP_ECHO, "10.1.0.6", "6003"]);
    std::thread::sleep(Duration::from_millis(300));
    let got = cl.exec(&["python3", "-c", UDP_ASK, "203.0.113.11", "5003"]);
    assert_eq!(got.trim(), "HI 203.0.113.11 5003");
    let _ = echo.wait();
    let got = cl.exec(&["python3", "-c", UDP_ASK, "203.0.113.11", "5005"]);
    assert_eq!(got.trim(), "timeout");
    let lines = cap.finish();
    assert!(lines.len() >= 12, "{lines:?}");
    for l in &lines {
        // ip, tcp, udp checksum status: 1 = good (empty for the other L4).
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f[0], "1", "{l}");
        assert!(f[1] == "1" || f[2] == "1", "{l}");
    }

    // The VM reaches the client as its public address.
    let mut cs = web(&h, &cl, "198.51.100.7", "8001", "client");
    assert_eq!(
        curl(&v1, "http://198.51.100.7:8001/who", &[]),
        Ok("client".into())
    );
    let _ = cs.kill();
    let log = cs.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&log.stderr).contains("203.0.113.10 - -"),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );

    // Counters per rule: connections exactly; UDP's packets exactly.
    let nat = show_line(&h, "static-nat 203.0.113.10 <-> 10.1.0.5");
    assert_eq!(counts(&nat).0, 3, "ping, curl in, curl out: {nat}");
    let udp = show_line(
        &h,
        "port-forward 203.0.113.11 udp 5000-5004 -> 10.1.0.6:6000-6004",
    );
    assert_eq!(counts(&udp), (1, 2), "{udp}");
    assert_eq!(
        counts(&show_line(
            &h,
            "port-forward 203.0.113.11 tcp 8080 -> 10.1.0.6:8000"
        ))
        .0,
        1
    );
    assert_eq!(
        counts(&show_line(
            &h,
            "port-forward 203.0.113.11 tcp 9000-9002 -> 10.1.0.6:8000"
        ))
        .0,
        1
    );
    assert_eq!(
        show_line(&h, "refused"),
        "refused (no rule for the port): 2 connections"
    );

    // ICMP errors about a translated connection come back translated.
    let tr = v1.exec(&[
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

    // Killed and started again, rvsd re-applies the rules from the
    // database and re-resolves the VMs.
    h.kill_rvsd();
    h.start_rvsd();
    wait_for(
        "static NAT after a restart",
        Duration::from_secs(30),
        || curl(&cl, "http://203.0.113.10:8000/who", &["--max-time", "1"]) == Ok("vm1".into()),
    );
    assert_eq!(
        curl(&cl, "http://203.0.113.11:9002/who", &[]),
        Ok("vm2".into())
    );

    // Removed, the public address answers nothing.
    h.rvsctl(&["nat-del", "203.0.113.10"]);
    let out = ping(&cl, "203.0.113.10", 2, &[]);
    assert!(out.contains("2 packets transmitted, 0 received"), "{out}");
    assert!(!h
        .ofctl(&["dump-flows", "br0"])
        .contains("nat(dst=10.1.0.5)"));
    for s in [&mut s1, &mut s2] {
        let _ = s.kill();
        let _ = s.wait();
    }
}

/// Backend name per request, from `n` curls through the VIP.
fn tally(
    h: &Host,
    ns: &Netns,
    url: &str,
    n: usize,
    extra: &[&str],
) -> std::collections::BTreeMap<String, usize> {
    let mut t = std::collections::BTreeMap::new();
    for i in 0..n {
        let who = curl(ns, url, extra).unwrap_or_else(|e| {
            panic!(
                "{url} request {i}: {e}\n{}\n{}\n{}",
                h.rvsctl(&["show"]),
                h.appctl(&["dpif-netdev/pmd-stats-show"]),
                h.appctl(&["dpctl/dump-conntrack"])
            )
        });
        *t.entry(who).or_insert(0) += 1;
    }
    t
}

/// Opens TCP connections to addr:port and holds them until killed; on a
/// line on stdin it sends a GET on each and prints each answer's body.
const HOLD: &str = r#"
import socket, sys
ss = [socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
      for _ in range(int(sys.argv[3]))]
print('open', flush=True)
sys.stdin.readline()
for s in ss:
    try:
        s.sendall(b'GET /who HTTP/1.0\r\n\r\n')
        data = b''
        while True:
            c = s.recv(4096)
            if not c:
                break
            data += c
        body = data.decode().split('\r\n\r\n')[-1].strip()
        print(body or 'closed', flush=True)
    except Exception as e:
        print(type(e).__name__, flush=True)
"#;

struct Held {
    child: Child,
}

impl Held {
    fn open(ns: &Netns, addr: &str, port: &str, n: usize) -> Held {
        use std::io::BufRead;
        let mut child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "python3",
                "-c",
                HOLD,
                addr,
                port,
                &n.to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "open");
        Held { child }
    }

    /// Sends a request on every held connection; the answers.
    fn ask(mut self) -> Vec<String> {
        use std::io::Write;
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"go\n")
            .unwrap();
        let out = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }
}

fn backend(h: &Host, lb: &str, be: &str) -> (u64, u64) {
    let s = h.rvsctl(&["show"]);
    let mut in_lb = false;
    for l in s.lines() {
        let t = l.trim_start();
        if t.starts_with("load-balancer ") {
            in_lb = t.starts_with(&format!("load-balancer {lb} "));
        } else if in_lb && t.starts_with(&format!("backend {be} ")) {
            return counts(t);
        }
    }
    panic!("no backend {be} of {lb} in:\n{s}");
}

#[test]
fn load_balancers_by_rvsctl() {
    let h = Host::start("svl");
    gateway(&h);
    let cl = client(&h, "slc");
    for a in ["198.51.100.8/24", "198.51.100.9/24"] {
        cl.exec(&["ip", "address", "add", a, "dev", "slci"]);
    }
    let names = ["b1", "b2", "b3"];
    let mut servers = Vec::new();
    let mut nss = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let addr = format!("10.1.0.{}", 11 + i);
        let ns = vm(&h, &format!("sl{n}"), &addr);
        servers.push(web(&h, &ns, &addr, "8000", n));
        nss.push(ns);
    }
    let bes = ["10.1.0.11:8000", "10.1.0.12:8000", "10.1.0.13:8000"];
    let lb_add = |head: &[&str]| {
        let mut a = vec!["lb-add"];
        a.extend_from_slice(head);
        a.extend_from_slice(&bes);
        h.rvsctl(&a);
    };
    lb_add(&["web", "br0", "203.0.113.20", "tcp", "80"]);
    lb_add(&[
        "src",
        "br0",
        "203.0.113.21",
        "tcp",
        "80",
        "--algorithm",
        "source",
    ]);
    lb_add(&[
        "lc",
        "br0",
        "203.0.113.22",
        "tcp",
        "80",
        "--algorithm",
        "leastconn",
        "--on-remove",
        "reset",
    ]);
    lb_add(&[
        "sticky",
        "br0",
        "203.0.113.23",
        "tcp",
        "80",
        "--stickiness",
        "60",
    ]);
    let groups = h.ofctl(&["dump-groups", "br0"]);
    assert!(
        groups.contains("type=select,selection_method=hash,fields=ip_src,bucket=bucket_id:0,actions=load:0x1->NXM_NX_REG6[],resubmit(,225)"),
        "{groups}"
    );
    wait_neighbours(&h, &["10.1.0.11", "10.1.0.12", "10.1.0.13"]);

    // roundrobin: 300 requests, exactly 100 each, and each backend's
    // counter says so.
    let t = tally(&h, &cl, "http://203.0.113.20/who", 300, &[]);
    assert_eq!(
        t.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100],
        "{t:?}"
    );
    for be in bes {
        assert_eq!(backend(&h, "web", be).0, 100, "{be}");
    }

    // source: each client address stays on one backend.
    let mut seen = std::collections::BTreeSet::new();
    for a in ["198.51.100.7", "198.51.100.8", "198.51.100.9"] {
        let t = tally(&h, &cl, "http://203.0.113.21/who", 20, &["--interface", a]);
        assert_eq!(t.len(), 1, "{a}: {t:?}");
        assert_eq!(t.values().next(), Some(&20));
        seen.insert(t.keys().next().unwrap().clone());
    }

    // leastconn: b1 and b2 each hold a long connection, so 30 short
    // requests all go to b3.
    let held = Held::open(&cl, "203.0.113.22", "80", 2);
    let t = tally(&h, &cl, "http://203.0.113.22/who", 30, &[]);
    assert_eq!(t.get("b3"), Some(&30), "{t:?}");
    assert_eq!(
        (backend(&h, "lc", bes[0]).0, backend(&h, "lc", bes[1]).0),
        (1, 1)
    );
    // Removing b1 with on-remove=reset cuts its connection; b2's goes on.
    h.rvsctl(&["lb-backend-del", "lc", bes[0]]);
    let answers = held.ask();
    assert_eq!(answers[1], "b2", "{answers:?}");
    assert_ne!(answers[0], "b1", "{answers:?}");

    // drain (the default): a held connection to a removed backend goes on.
    let held = Held::open(&cl, "203.0.113.20", "80", 3);
    h.rvsctl(&["lb-backend-del", "web", bes[0]]);
    let mut answers = held.ask();
    answers.sort();
    assert_eq!(answers, vec!["b1", "b2", "b3"]);
    let t = tally(&h, &cl, "http://203.0.113.20/who", 30, &[]);
    assert_eq!(t.get("b1"), None, "{t:?}");
    assert_eq!(t.values().sum::<usize>(), 30);

    // stickiness: once the first request is remembered, the client
    // stays on its backend although the algorithm is roundrobin.
    let first = curl(&cl, "http://203.0.113.23/who", &[]).unwrap();
    wait_for("the sticky entry", Duration::from_secs(5), || {
        h.ofctl(&["dump-flows", "br0", "table=224"])
            .contains("nw_src=198.51.100.7")
    });
    let t = tally(&h, &cl, "http://203.0.113.23/who", 10, &[]);
    assert_eq!(t.get(&first), Some(&10), "{t:?}");
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    drop(nss);
}
