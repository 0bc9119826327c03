//! CloudStack's overlay: three rvsd hosts (each with its own ovsdb-server,
//! run directory and DPDK file prefix) on one underlay segment, tenant
//! bridges `OVSTunnel<key>` built with the exact ovs-vsctl commands of
//! CloudStack's ovstunnel.py, a full mesh of `t<key>-<src>-<dst>` ports
//! (GRE for two tenants, VXLAN for two), four tenants with the same MAC
//! and IP addresses on every host. Floods are counted frame by frame on
//! every tenant interface: each reaches its own tenant only, once (no loop
//! through the mesh), and spoofed or malformed tunnel frames from the
//! underlay reach nobody and are counted by reason.
// Hosts and tenants are a grid addressed by (host, tenant) index throughout.
#![allow(clippy::needless_range_loop)]

use rvs_tests::cloudstack::{create_tunnel, join_underlay, setup_ovs_bridge, underlay};
use rvs_tests::{drop_count, key_counts, ping, reachable, send_raw, tenant, Host, Netns};

const HOSTS: usize = 3;
const KEYS: [u64; 4] = [1001, 1002, 1003, 1004];

fn kind(t: usize) -> &'static str {
    if t < 2 {
        "gre"
    } else {
        "vxlan"
    }
}

fn host_ip(h: usize) -> String {
    format!("10.40.0.{}", h + 1)
}

fn mac(h: usize) -> String {
    format!("02:00:00:00:0{h}:01")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn csum(b: &[u8]) -> u16 {
    let mut s = 0u32;
    for c in b.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An outer frame to `dst_mac`/10.40.0.1 from `src_ip` carrying `l4`
/// (GRE or UDP+VXLAN) around a broadcast inner frame.
fn outer(dst_mac: &str, src_ip: [u8; 4], proto: u8, l4: &[u8], bad_ip_csum: bool) -> String {
    let mut inner = vec![0xffu8; 6];
    inner.extend_from_slice(&[2, 0, 0, 0, 0x0e, 1, 0x88, 0xb5]);
    inner.resize(60, 0x5a);
    let mut f: Vec<u8> = dst_mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    f.extend_from_slice(&[2, 0, 0, 0, 0x0e, 0x0e, 0x08, 0x00]);
    let total = (20 + l4.len() + inner.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src_ip);
    ip.extend_from_slice(&[10, 40, 0, 1]);
    let c = csum(&ip) ^ if bad_ip_csum { 0x0101 } else { 0 };
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f.extend_from_slice(&inner);
    hex(&f)
}

fn gre(flags: u16, key: u32) -> Vec<u8> {
    let mut g = flags.to_be_bytes().to_vec();
    g.extend_from_slice(&[0x65, 0x58]);
    g.extend_from_slice(&key.to_be_bytes());
    g
}

fn vxlan(flags: u8, vni: u32) -> Vec<u8> {
    let mut v = vec![0xc0, 0x00, 0x12, 0xb5, 0, 8 + 8 + 60, 0, 0];
    v.extend_from_slice(&[flags, 0, 0, 0]);
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v
}

#[test]
fn cloudstack_mesh_of_three_hosts_isolates_four_tenants() {
    let under = underlay("msu");
    let mut hosts = Vec::new();
    for h in 0..HOSTS {
        let mut host = Host::without_rvsd(&format!("ms{h}"));
        // Spread the three PMDs over both cores.
        let mask = if h == 1 { "0x1" } else { "0x2" };
        host.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:pmd-cpu-mask={mask}"),
        ]);
        host.start_rvsd();
        join_underlay(&host, &under, h, &format!("{}/24", host_ip(h)));
        hosts.push(host);
    }
    // Tenants: on each host, one namespace per tenant network, all with
    // the same MAC and IP per host position.
    let mut tenants: Vec<Vec<Netns>> = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        let mut row = Vec::new();
        for (t, key) in KEYS.iter().enumerate() {
            let br = format!("OVSTunnel{key}");
            setup_ovs_bridge(host, &br, *key, h + 1);
            assert_eq!(host.get("Bridge", &br, "stp_enable"), "true");
            let ns = tenant(
                host,
                &br,
                &format!("m{t}{h}"),
                &format!("192.168.50.{}/24", h + 1),
            );
            let ifc = format!("m{t}{h}i");
            ns.exec(&["ip", "link", "set", &ifc, "address", &mac(h)]);
            row.push(ns);
        }
        tenants.push(row);
    }
    // The mesh between hosts 0 and 1 first.
    let link = |a: usize, b: usize| {
        for (t, key) in KEYS.iter().enumerate() {
            let br = format!("OVSTunnel{key}");
            create_tunnel(&hosts[a], &br, kind(t), *key, &host_ip(b), a + 1, b + 1);
            create_tunnel(&hosts[b], &br, kind(t), *key, &host_ip(a), b + 1, a + 1);
        }
    };
    link(0, 1);
    for t in 0..KEYS.len() {
        reachable(&tenants[0][t], "192.168.50.2", 30);
        let out = ping(&tenants[1][t], "192.168.50.1", 3, &[]);
        assert!(
            out.contains("3 packets transmitted, 3 received"),
            "tenant {t}: {out}"
        );
    }
    // A third host joins: every host gets ports to it.
    link(0, 2);
    link(1, 2);
    for t in 0..KEYS.len() {
        reachable(&tenants[2][t], "192.168.50.1", 30);
        reachable(&tenants[2][t], "192.168.50.2", 30);
    }
    assert_eq!(hosts[2].ofport("t1001-3-1"), 2);

    // Floods: tenant t on host h sends b(t,h) broadcasts and u(t,h)
    // unknown unicasts. Every tenant interface must receive exactly the
    // floods of its own tenant on the other hosts.
    let b = |t: usize, h: usize| 3 + t + 4 * h;
    let u = |t: usize, h: usize| 2 + h + t;
    let ifc = |t: usize, h: usize| format!("m{t}{h}i");
    let read = |tenants: &Vec<Vec<Netns>>| {
        (0..HOSTS)
            .map(|h| {
                (0..KEYS.len())
                    .map(|t| tenants[h][t].rx_packets(&ifc(t, h)))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    // No ARP probes (the kernel re-confirms neighbours it used a few
    // seconds ago) while frames are counted.
    for h in 0..HOSTS {
        for t in 0..KEYS.len() {
            for o in (0..HOSTS).filter(|&o| o != h) {
                tenants[h][t].exec(&[
                    "ip",
                    "neigh",
                    "replace",
                    &format!("192.168.50.{}", o + 1),
                    "lladdr",
                    &mac(o),
                    "dev",
                    &ifc(t, h),
                    "nud",
                    "permanent",
                ]);
            }
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = read(&tenants);
    let encap_before: Vec<_> = (0..KEYS.len())
        .map(|t| key_counts(&hosts[0], kind(t), KEYS[t]))
        .collect();
    for h in 0..HOSTS {
        for t in 0..KEYS.len() {
            let mut frames = Vec::new();
            for i in 0..b(t, h) {
                frames.push(format!(
                    "ffffffffffff{}88b5{:02x}{:02x}{:02x}{}",
                    mac(h).replace(':', ""),
                    t,
                    h,
                    i,
                    "00".repeat(43)
                ));
            }
            for i in 0..u(t, h) {
                frames.push(format!(
                    "029999999999{}88b5{:02x}{:02x}{:02x}{}",
                    mac(h).replace(':', ""),
                    t,
                    h,
                    i,
                    "00".repeat(43)
                ));
            }
            send_raw(&tenants[h][t], &ifc(t, h), &frames);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = read(&tenants);
    let report = || {
        hosts
            .iter()
            .map(|x| {
                let pmd = x.appctl(&["dpif-netdev/pmd-stats-show"]);
                let drops: Vec<&str> = pmd
                    .lines()
                    .filter(|l| l.starts_with("    ") && !l.ends_with(": 0"))
                    .collect();
                let phy = x.vsctl(&["list-ports", "cloudbr0"]);
                let phy = phy.trim();
                format!(
                    "{}: drops {drops:?}\nkernel {}\nrvs {}\n{}",
                    x.name,
                    x.ns.exec(&["ip", "-s", "link", "show", phy]),
                    x.get("Interface", phy, "statistics"),
                    x.appctl(&["rvs/tunnel/show"])
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut wrong = Vec::new();
    for h in 0..HOSTS {
        for t in 0..KEYS.len() {
            let want: usize = (0..HOSTS)
                .filter(|&o| o != h)
                .map(|o| b(t, o) + u(t, o))
                .sum();
            let got = after[h][t] - before[h][t];
            if got != want as u64 {
                wrong.push(format!(
                    "tenant {t} on host {h}: received {got} frames, expected {want}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{wrong:#?}\n{}\nunderlay:\n{}",
        report(),
        under.exec(&["ip", "-s", "link"])
    );
    // Host 0 encapsulated each of its floods once per remote host.
    for t in 0..KEYS.len() {
        let now = key_counts(&hosts[0], kind(t), KEYS[t]);
        assert_eq!(
            now.0 - encap_before[t].0,
            2 * (b(t, 0) + u(t, 0)) as u64,
            "tenant {t}"
        );
        assert_eq!(
            now.1 - encap_before[t].1,
            (b(t, 1) + u(t, 1) + b(t, 2) + u(t, 2)) as u64,
            "tenant {t}"
        );
    }

    // Spoofed and malformed tunnel frames from the underlay: each dropped
    // with its reason, none delivered.
    let h0mac = hosts[0]
        .ns
        .exec(&["cat", "/sys/class/net/cloudbr0/address"])
        .trim()
        .to_string();
    let before = read(&tenants);
    let reasons = [
        "tunnel-unknown-key",
        "tunnel-bad-flags",
        "tunnel-bad-checksum",
    ];
    let d0: Vec<u64> = reasons.iter().map(|r| drop_count(&hosts[0], r)).collect();
    let frames = vec![
        // A key no tenant has, from a real host.
        outer(&h0mac, [10, 40, 0, 2], 47, &gre(0x2000, 9999), false),
        // Tenant 0's key from an address that is no tunnel's remote.
        outer(&h0mac, [10, 40, 0, 99], 47, &gre(0x2000, 1001), false),
        // Routing present.
        outer(&h0mac, [10, 40, 0, 2], 47, &gre(0x6000, 1001), false),
        // VXLAN with a reserved flag.
        outer(&h0mac, [10, 40, 0, 2], 17, &vxlan(0x0c, 1003), false),
        // A bad outer checksum.
        outer(&h0mac, [10, 40, 0, 2], 47, &gre(0x2000, 1001), true),
    ];
    send_raw(&under, "ubr", &frames);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let d1: Vec<u64> = reasons.iter().map(|r| drop_count(&hosts[0], r)).collect();
    assert_eq!((d1[0] - d0[0], d1[1] - d0[1], d1[2] - d0[2]), (2, 2, 1));
    assert_eq!(read(&tenants), before, "a spoofed frame reached a tenant");
    assert_eq!(key_counts(&hosts[0], "gre", 9999).2, 1);
}
