//! Locked-down control sockets: unixctl and OpenFlow sockets belong to
//! root and the configured group (0770) or to root alone (0700); peer
//! credentials are checked on every connection, so a socket opened up
//! with chmod still refuses strangers; rvsd listens on no TCP port.
use rvs_tests::{run, Host};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn mode_and_gid(p: &Path) -> (u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (m.permissions().mode() & 0o777, m.gid())
}

/// A command as user nobody, with or without group adm (gid 4).
fn as_nobody(with_adm: bool, cmd: &[&str]) -> std::process::Output {
    let mut a = vec!["--reuid=65534", "--regid=65534"];
    a.push(if with_adm {
        "--groups=4"
    } else {
        "--clear-groups"
    });
    a.extend_from_slice(cmd);
    run("setpriv", &a)
}

#[test]
fn sockets_are_for_root_and_the_socket_group_only() {
    // Without a group: root only.
    let h = Host::start("sec0");
    h.vsctl(&["add-br", "br0"]);
    assert_eq!(mode_and_gid(&h.ctl_path()), (0o700, 0));
    assert_eq!(mode_and_gid(&h.dir.join("br0.mgmt")), (0o700, 0));
    drop(h);

    let mut h = Host::without_rvsd("sec");
    h.start_rvsd_with(&["--socket-group", "adm"]);
    h.vsctl(&["add-br", "br0"]);
    let ctl = h.ctl_path();
    let mgmt = h.dir.join("br0.mgmt");
    assert_eq!(mode_and_gid(&ctl), (0o770, 4));
    assert_eq!(mode_and_gid(&mgmt), (0o770, 4));
    let ctl_s = ctl.to_str().unwrap();
    let mgmt_s = format!("unix:{}", mgmt.display());

    // A member of the group gets in; a stranger does not.
    let o = as_nobody(true, &["ovs-appctl", "-t", ctl_s, "version"]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("rvsd (rvs)"));
    let o = as_nobody(true, &["ovs-ofctl", "show", &mgmt_s]);
    assert!(o.status.success(), "{o:?}");
    let o = as_nobody(false, &["ovs-appctl", "-t", ctl_s, "version"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{o:?}"
    );

    // Opened up by chmod, the sockets still refuse the stranger (peer
    // credentials), count it and keep serving the next client.
    for p in [&ctl, &mgmt] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let o = as_nobody(false, &["ovs-appctl", "-t", ctl_s, "version"]);
    assert!(!o.status.success(), "{o:?}");
    let o = as_nobody(false, &["ovs-ofctl", "show", &mgmt_s]);
    assert!(!o.status.success(), "{o:?}");
    assert_eq!(
        h.appctl(&["rvs/access/show"]),
        "socket group: adm\nrefused connections: 2\n"
    );
    assert!(h.log().contains("unixctl: refused a connection from pid"));
    assert!(h.log().contains("br0: refused a connection from pid"));
    assert!(h.ofctl(&["show", "br0"]).contains("LOCAL(br0)"));

    // No TCP listener: nothing in rvsd's namespace listens.
    let ss = h.ns.exec(&["ss", "-H", "-l", "-t", "-n"]);
    assert_eq!(ss.trim(), "", "{ss}");
}

#[test]
fn an_unknown_socket_group_stops_start_up_and_says_what_to_fix() {
    let h = Host::without_rvsd("secg");
    let o = std::process::Command::new(rvs_tests::rvsd_bin())
        .args([
            "--db",
            &h.db(),
            "--rundir",
            h.dir.to_str().unwrap(),
            "--socket-group",
            "no-such-group-here",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--socket-group no-such-group-here: no such group (create it, or leave the option out for root only)"),
        "{e}"
    );
}
