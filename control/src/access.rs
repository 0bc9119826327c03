//! Who may use rvsd's control sockets (unixctl, OpenFlow): root, rvsd's
//! own user and the members of one configured group (`--socket-group`).
//! File modes keep everyone else out (0770 with a group, 0700 without: a
//! unix socket needs write permission to connect, so the group gets rw and
//! others nothing); every connection's peer credentials are checked as
//! well, so a socket someone opened up with chmod still refuses them.
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Group, Uid};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

#[derive(Debug, Default)]
struct Policy {
    gid: Option<u32>,
}

static POLICY: OnceLock<Policy> = OnceLock::new();
/// Connections refused by the credential check.
pub static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Sets the group allowed besides root and rvsd's user (once, at start-up).
pub fn configure(group: Option<&str>) -> Result<(), String> {
    let gid = match group {
        None => None,
        Some(name) => match Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            Ok(None) => {
                return Err(format!(
                    "--socket-group {name}: no such group (create it, or leave the option out for root only)"
                ))
            }
            Err(e) => return Err(format!("--socket-group {name}: {e}")),
        },
    };
    let _ = POLICY.set(Policy { gid });
    Ok(())
}

fn policy() -> &'static Policy {
    POLICY.get_or_init(Policy::default)
}

/// Gives a freshly bound socket its owner and mode.
pub fn secure(path: &Path) -> Result<(), String> {
    let p = policy();
    if let Some(gid) = p.gid {
        nix::unistd::chown(path, None, Some(Gid::from_raw(gid))).map_err(|e| {
            format!(
                "{}: cannot give it to the socket group: {e}",
                path.display()
            )
        })?;
    }
    let mode = if p.gid.is_some() { 0o770 } else { 0o700 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: cannot set its mode: {e}", path.display()))
}

/// The supplementary groups of a process, from /proc.
fn groups_of(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Whether the peer of `s` may talk to rvsd; a refusal is logged and
/// counted, and the caller hangs up.
pub fn allows(s: &UnixStream, what: &str) -> bool {
    let Ok(c) = getsockopt(s, PeerCredentials) else {
        return false;
    };
    let p = policy();
    let ok = c.uid() == 0
        || c.uid() == Uid::effective().as_raw()
        || p.gid
            .is_some_and(|g| c.gid() == g || groups_of(c.pid()).contains(&g));
    if !ok {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "{what}: refused a connection from pid {} (uid {}, gid {}): not root, rvsd's user or the socket group",
            c.pid(),
            c.uid(),
            c.gid()
        );
    }
    ok
}
