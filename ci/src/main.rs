//! `rvs-ci doctor`: before the integration tests run, check every outside
//! thing they rely on and name the fix for what is missing, so that a broken
//! machine fails in one clear line instead of in a test's timeout.
#![deny(unsafe_code)]
use std::path::Path;
use std::process::Command;

fn has_cmd(c: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {c} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn hugepages_free() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let mut problems = Vec::new();
    let cmds = [
        ("ovsdb-server", "openvswitch-switch"),
        ("ovsdb-tool", "openvswitch-switch"),
        ("ovs-vsctl", "openvswitch-switch"),
        ("ovs-appctl", "openvswitch-common"),
        ("dpdk-testpmd", "dpdk-dev"),
        ("pkg-config", "pkg-config"),
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("nc", "netcat-openbsd"),
        ("curl", "curl"),
        ("tshark", "tshark"),
        ("stdbuf", "coreutils"),
        ("python3", "python3"),
    ];
    for (c, pkg) in cmds {
        if !has_cmd(c) {
            problems.push(format!(
                "{c} is missing: install Debian package {pkg} (bash ci/setup.sh does)"
            ));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        problems.push(
            "/dev/net/tun is missing: internal ports need the tun module (modprobe tun)".into(),
        );
    }
    let want = 1024;
    let free = hugepages_free();
    if free < want {
        problems.push(format!(
            "{free} hugepages free, the tests need {want}: rvs-hugepages reserve 1536"
        ));
    }
    let probe = format!("rvs-ci-probe-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    } else {
        problems.push(
            "cannot create network namespaces (ip netns add): the tests must run as root".into(),
        );
    }
    if problems.is_empty() {
        println!("rvs-ci doctor: this machine has everything the tests need");
        return;
    }
    for p in &problems {
        eprintln!("rvs-ci doctor: {p}");
    }
    std::process::exit(1);
}
