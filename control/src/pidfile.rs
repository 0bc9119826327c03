//! The pid file, as OVS writes it: ovs-appctl (and OVS's scripts) trust a
//! pid file only while its owner holds an fcntl write lock on it, so rvsd
//! keeps the file open and locked for as long as it runs (and never opens
//! it again: closing any descriptor of a file drops the process's locks).
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Creates `path` holding `pid` and locks it; keep the returned file.
pub fn create(path: &Path, pid: u32) -> Result<File, String> {
    let err = |e: &dyn std::fmt::Display| format!("cannot write pid file {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|e| err(&e))?;
    let lock = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLK(&lock)).map_err(|e| match e {
        nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES => format!("pid file {} is locked by another running switch (ovs-vswitchd or rvsd): stop it first", path.display()),
        e => err(&e),
    })?;
    f.set_len(0).map_err(|e| err(&e))?;
    writeln!(f, "{pid}").map_err(|e| err(&e))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pid_and_refuses_a_second_owner() {
        let p = std::env::temp_dir().join(format!("rvs-pidfile-test-{}", std::process::id()));
        let _held = create(&p, 4242).unwrap();
        // Another process (as ovs-appctl is) must find the file locked.
        // (Checked before this process opens the file again: closing any fd
        // of a file drops the process's fcntl locks on it.)
        let out = std::process::Command::new("python3")
            .args(["-c", &format!("import fcntl,struct;f=open('{}','r+');\ntry:\n fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB);print('free')\nexcept OSError:\n print('locked')", p.display())])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "locked");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "4242\n");
        let _ = std::fs::remove_file(&p);
    }
}
