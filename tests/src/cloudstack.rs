//! CloudStack's own ovs-vsctl sequences, verbatim, for tests that build
//! what the agent and its scripts build.
use crate::{veth, Host, Netns};

/// The physical network between hosts: a kernel bridge `ubr` in its own
/// namespace `name`.
pub fn underlay(name: &str) -> Netns {
    let under = Netns::new(name);
    under.exec(&["ip", "link", "add", "ubr", "type", "bridge"]);
    under.exec(&["ip", "link", "set", "ubr", "up"]);
    under
}

/// Host `h`'s NIC on the underlay, as a CloudStack host's traffic-label
/// bridge holds it: veth `phy<h>` (peer `u<h>` on `ubr`) in bridge
/// cloudbr0, which carries the host's address `cidr`.
pub fn join_underlay(host: &Host, under: &Netns, h: usize, cidr: &str) {
    let (port, peer) = (format!("phy{h}"), format!("u{h}"));
    veth(&peer, under, &port, &host.ns);
    under.exec(&["ip", "link", "set", &peer, "master", "ubr"]);
    host.vsctl(&["add-br", "cloudbr0"]);
    host.vsctl(&["add-port", "cloudbr0", &port]);
    host.ns.exec(&["ip", "link", "set", "cloudbr0", "up"]);
    host.ns
        .exec(&["ip", "address", "add", cidr, "dev", "cloudbr0"]);
}

/// setup_ovs_bridge as ovstunnel.py runs it (the agent creates the bridge
/// first with --may-exist add-br).
pub fn setup_ovs_bridge(h: &Host, br: &str, key: u64, host_id: usize) {
    h.vsctl(&["--", "--may-exist", "add-br", br]);
    h.vsctl(&["set", "bridge", br, &format!("other_config:gre_key={key}")]);
    h.vsctl(&["set", "Bridge", br, "stp_enable=true"]);
    assert_eq!(
        h.vsctl(&["get", "bridge", br, "other_config:gre_key"])
            .trim(),
        format!("\"{key}\"")
    );
    h.vsctl(&["set", "bridge", br, "other_config:is-ovs-tun-network=True"]);
    h.vsctl(&[
        "set",
        "bridge",
        br,
        &format!("other_config:ovs-host-setup={host_id}"),
    ]);
}

/// create_tunnel as ovstunnel.py runs it; returns the ofport it reads.
pub fn create_tunnel(
    h: &Host,
    br: &str,
    kind: &str,
    key: u64,
    remote: &str,
    src: usize,
    dst: usize,
) -> i64 {
    let name = format!("t{key}-{src}-{dst}");
    let got = h.vsctl(&[
        "--timeout=30",
        "wait-until",
        "bridge",
        br,
        "--",
        "get",
        "bridge",
        br,
        "name",
    ]);
    assert!(got.contains(br));
    h.vsctl(&[
        "add-port",
        br,
        &name,
        "--",
        "set",
        "interface",
        &name,
        &format!("type={kind}"),
        &format!("options:key={key}"),
        &format!("options:remote_ip={remote}"),
    ]);
    let ifaces = h.vsctl(&["get", "port", &name, "interfaces"]);
    let uuid = ifaces
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    assert_eq!(uuid.split(',').count(), 1, "{ifaces}");
    assert_eq!(
        h.vsctl(&["get", "interface", &uuid, "options:key"]).trim(),
        format!("\"{key}\"")
    );
    assert_eq!(
        h.vsctl(&["get", "interface", &uuid, "options:remote_ip"])
            .trim(),
        format!("\"{remote}\"")
    );
    assert_eq!(h.get("Interface", &uuid, "error"), "[]");
    let ofport: i64 = h
        .vsctl(&["get", "interface", &uuid, "ofport"])
        .trim()
        .parse()
        .unwrap();
    assert!(ofport > 0);
    ofport
}
