//! A real KVM-style guest: QEMU booting Debian's cloud kernel with a
//! busybox initramfs (built by tests/peers/guest-image.sh from Debian's
//! packages), its one NIC a vhost-user virtio-net device as libvirt starts
//! it for the interface XML CloudStack writes for DPDK NICs. The test drives
//! the guest's shell over its serial console.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Where the guest's kernel and initramfs are built once per machine.
const IMAGE_DIR: &str = "/var/cache/rvs-guest";

/// Builds the guest image unless it is there; returns (kernel, initrd).
pub fn image() -> (PathBuf, PathBuf) {
    let dir = Path::new(IMAGE_DIR);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/guest-image.sh");
    let o = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .output()
        .expect("bash");
    assert!(
        o.status.success(),
        "building the guest image failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (dir.join("vmlinuz"), dir.join("initrd.img"))
}

/// Which side owns the vhost-user socket, in libvirt's words for
/// `<source type='unix' path=... mode=.../>`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// QEMU connects: the switch serves the socket (`dpdkvhostuser`).
    Client,
    /// QEMU serves the socket: the switch connects (`dpdkvhostuserclient`).
    Server,
}

/// The network part of the domain: one vhost-user interface.
pub struct Nic {
    pub socket: PathBuf,
    pub mode: Mode,
    pub mac: String,
    /// `<driver queues='N'/>`.
    pub queues: u32,
    /// Seconds between QEMU's reconnect attempts when it is the client
    /// (libvirt's `<reconnect enabled='yes' timeout='N'/>`); 0: never.
    pub reconnect: u32,
}

pub struct Guest {
    pub name: String,
    qemu: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// Everything the console printed, for failure messages.
    transcript: Vec<String>,
    seq: u64,
    pub qmp: PathBuf,
}

impl Guest {
    /// Boots the guest with `ip` (ADDR/LEN) on its NIC and waits for its
    /// shell.
    pub fn boot(name: &str, dir: &Path, nic: &Nic, ip: &str) -> Guest {
        let mut g = Guest::start(name, dir, nic, ip, None);
        g.wait_ready(Duration::from_secs(120));
        g
    }

    /// Starts QEMU; `incoming`: as a live-migration destination on that
    /// QEMU URI instead of booting.
    pub fn start(name: &str, dir: &Path, nic: &Nic, ip: &str, incoming: Option<&str>) -> Guest {
        Guest::start_cpu(name, dir, nic, ip, incoming, "max")
    }

    /// As `start` with a CPU model: a migration's source and destination
    /// need one whose state migrates under TCG (`qemu64`; `max` does not
    /// reliably: the guest may reset on arrival).
    pub fn start_cpu(
        name: &str,
        dir: &Path,
        nic: &Nic,
        ip: &str,
        incoming: Option<&str>,
        cpu: &str,
    ) -> Guest {
        let mut chardev = format!("socket,id=charnet0,path={}", nic.socket.display());
        match nic.mode {
            Mode::Server => chardev.push_str(",server=on,wait=off"),
            Mode::Client if nic.reconnect > 0 => {
                chardev.push_str(&format!(",reconnect={}", nic.reconnect))
            }
            Mode::Client => {}
        }
        let mut netdev = "vhost-user,chardev=charnet0,id=hostnet0".to_string();
        // TCG with vhost-user: vectors=0, or QEMU 7.2 aborts when the
        // guest's driver starts (DESIGN.md).
        let mut device = format!(
            "virtio-net-pci,netdev=hostnet0,id=net0,mac={},vectors=0",
            nic.mac
        );
        if nic.queues > 1 {
            netdev.push_str(&format!(",queues={}", nic.queues));
            device.push_str(",mq=on");
        }
        let nic_args = ["-chardev", &chardev, "-netdev", &netdev, "-device", &device];
        Guest::spawn(name, dir, &nic_args, ip, incoming, None, cpu)
    }

    /// A guest whose NIC is kernel tap `ifname` in namespace `netns`, as
    /// libvirt attaches system VMs and non-DPDK guests
    /// (`<interface type='bridge'>` with `<virtualport type='openvswitch'/>`).
    /// The guest computes its own checksums (`<driver><host csum='off'/>`):
    /// a `system` port takes frames as the kernel holds them, and offloaded
    /// ones would reach the wire with partial checksums (README, known
    /// limitations; the same holds for OVS-DPDK's system ports).
    pub fn boot_tap(
        name: &str,
        dir: &Path,
        ifname: &str,
        mac: &str,
        ip: &str,
        netns: &str,
    ) -> Guest {
        let netdev = format!("tap,id=hostnet0,ifname={ifname},script=no,downscript=no");
        let device = format!("virtio-net-pci,netdev=hostnet0,id=net0,mac={mac},csum=off");
        let mut g = Guest::spawn(
            name,
            dir,
            &["-netdev", &netdev, "-device", &device],
            ip,
            None,
            Some(netns),
            "max",
        );
        g.wait_ready(Duration::from_secs(120));
        g
    }

    fn spawn(
        name: &str,
        dir: &Path,
        nic_args: &[&str],
        ip: &str,
        incoming: Option<&str>,
        netns: Option<&str>,
        cpu: &str,
    ) -> Guest {
        let (kernel, initrd) = image();
        let qmp = dir.join(format!("{name}.qmp"));
        let _ = std::fs::remove_file(&qmp);
        // Guest RAM on hugepages, shared with the switch, as CloudStack's
        // <memoryBacking><hugepages/><access mode='shared'/> gives it.
        let mem =
            "memory-backend-file,id=mem0,size=256M,mem-path=/dev/hugepages,share=on,prealloc=off";
        let append = format!("console=ttyS0 quiet panic=-1 rvs.ip={ip}");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        cmd.args([
            "-name", name, "-accel", "tcg", "-cpu", cpu, "-m", "256", "-smp", "1",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-object", mem, "-numa", "node,memdev=mem0"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &append])
        .args(nic_args)
        .args(["-serial", "stdio"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()));
        if let Some(uri) = incoming {
            cmd.args(["-incoming", uri]);
        }
        let mut qemu = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64 (Debian's qemu-system-x86): bash ci/setup.sh");
        let stdin = qemu.stdin.take().unwrap();
        let out = qemu.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Guest {
            name: name.into(),
            qemu,
            stdin,
            lines,
            transcript: Vec::new(),
            seq: 0,
            qmp,
        }
    }

    /// Waits for the shell the guest's init starts (after the NIC is up).
    pub fn wait_ready(&mut self, timeout: Duration) {
        self.read_until(timeout, |l| l.starts_with("RVS-GUEST-READY"));
    }

    fn read_until(&mut self, timeout: Duration, mut done: impl FnMut(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let left = timeout.saturating_sub(t0.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.transcript.push(l.clone());
                    if done(&l) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "guest {}: nothing awaited within {timeout:?}; console:\n{}",
                    self.name,
                    self.transcript.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "guest {}: QEMU exited ({:?}); console:\n{}",
                    self.name,
                    self.qemu.try_wait(),
                    self.transcript.join("\n")
                ),
            }
        }
    }

    /// Runs a shell command in the guest; returns its exit status and
    /// output (kernel messages are off: `quiet`).
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> (i32, String) {
        let mark = self.type_cmd(cmd);
        self.await_mark(&mark, timeout)
    }

    /// Types a command without waiting for it; returns the marker its end
    /// prints (to await here, or on a migration's destination).
    pub fn type_cmd(&mut self, cmd: &str) -> String {
        self.seq += 1;
        let mark = format!("__RVS_END_{}_{}_", self.name, self.seq);
        if let Err(e) =
            writeln!(self.stdin, "{cmd}; echo {mark}$?").and_then(|_| self.stdin.flush())
        {
            panic!(
                "guest {}: console: {e}; QEMU {:?}; console:\n{}",
                self.name,
                self.qemu.try_wait(),
                self.transcript.join("\n")
            );
        }
        mark
    }

    /// The end of a typed command: its exit status and output.
    pub fn await_mark(&mut self, mark: &str, timeout: Duration) -> (i32, String) {
        let start = self.transcript.len();
        let last = self.read_until(timeout, |l| l.contains(mark));
        Self::split_mark(
            &self.transcript[start..self.transcript.len() - 1],
            &last,
            mark,
        )
    }

    /// As `await_mark`, without waiting: None unless the console already
    /// printed it.
    pub fn take_mark(&mut self, mark: &str) -> Option<(i32, String)> {
        let start = self.transcript.len();
        while let Ok(l) = self.lines.try_recv() {
            self.transcript.push(l.clone());
            if l.contains(mark) {
                return Some(Self::split_mark(
                    &self.transcript[start..self.transcript.len() - 1],
                    &l,
                    mark,
                ));
            }
        }
        None
    }

    fn split_mark(before: &[String], last: &str, mark: &str) -> (i32, String) {
        let at = last.find(mark).unwrap_or(0);
        let rc = last[at + mark.len()..].trim().parse().unwrap_or(-1);
        let mut out: Vec<String> = before.to_vec();
        if at > 0 {
            out.push(last[..at].to_string());
        }
        // ash's prompt (PS1 is empty but "$ " may remain) is not output.
        (rc, out.join("\n"))
    }

    /// Runs a command that must succeed; returns its output.
    pub fn sh(&mut self, cmd: &str) -> String {
        let (rc, out) = self.run(cmd, Duration::from_secs(60));
        assert_eq!(rc, 0, "guest {}: `{cmd}` failed:\n{out}", self.name);
        out
    }

    /// Whether QEMU's QMP socket is there yet.
    pub fn qmp_ready(&self) -> bool {
        std::os::unix::net::UnixStream::connect(&self.qmp).is_ok()
    }

    /// A QMP command (JSON), after the capabilities handshake; returns the
    /// reply line.
    pub fn qmp(&self, command: &str) -> String {
        let s = std::os::unix::net::UnixStream::connect(&self.qmp).unwrap_or_else(|e| {
            let dir = self.qmp.parent().map(|d| {
                std::fs::read_dir(d).map(|r| {
                    r.filter_map(|e| e.ok())
                        .map(|e| e.file_name())
                        .collect::<Vec<_>>()
                })
            });
            panic!("QMP socket {}: {e}; {dir:?}", self.qmp.display())
        });
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut line = String::new();
        r.read_line(&mut line).unwrap(); // greeting
        writeln!(w, "{{\"execute\":\"qmp_capabilities\"}}").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        writeln!(w, "{command}").unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            // Events may come first.
            if !line.contains("\"event\"") {
                return line;
            }
        }
    }

    /// What the console printed so far (for failure messages), and how
    /// QEMU is.
    pub fn console(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.transcript.push(l);
        }
        format!(
            "QEMU {:?}; console:\n{}",
            self.qemu.try_wait(),
            self.transcript.join("\n")
        )
    }

    /// Stops QEMU at once (as a crashed or destroyed domain).
    pub fn kill(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }

    pub fn exited(&mut self) -> bool {
        self.qemu.try_wait().unwrap().is_some()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The agent's port for a DPDK NIC (an access port when `tag` is given): in
/// server mode rvsd serves DIR/NAME, in client mode it connects to QEMU's
/// socket at `DIR//NAME` (the double slash as the agent writes it).
pub fn agent_port(h: &crate::Host, bridge: &str, name: &str, mode: Mode, tag: Option<u16>) {
    let path = format!("options:vhost-server-path={}//{name}", h.dir.display());
    let tag = tag.map(|t| format!("tag={t}"));
    let mut args = vec!["add-port", bridge, name];
    if let Some(t) = &tag {
        args.extend(["vlan_mode=access", t.as_str()]);
    }
    args.extend(["--", "set", "Interface", name]);
    match mode {
        Mode::Client => args.push("type=dpdkvhostuser"),
        Mode::Server => {
            args.push("type=dpdkvhostuserclient");
            args.push(&path);
        }
    }
    h.vsctl(&args);
    if mode == Mode::Server {
        assert_eq!(
            h.get("Interface", name, "options:vhost-server-path"),
            format!("\"{}//{name}\"", h.dir.display())
        );
    }
}

/// A one-queue-pair NIC (or `queues`) on DIR/NAME; QEMU as client retries
/// every second.
pub fn nic(dir: &Path, name: &str, mode: Mode, mac: &str, queues: u32) -> Nic {
    Nic {
        socket: dir.join(name),
        mode,
        mac: mac.into(),
        queues,
        reconnect: 1,
    }
}

/// Replies counted by ping: busybox's "5 packets transmitted, 5 packets
/// received, 0% packet loss" or iputils' "5 packets transmitted, 5
/// received, 0% packet loss".
pub fn received(ping_out: &str) -> Option<u64> {
    let l = ping_out
        .lines()
        .find(|l| l.contains("packets transmitted"))?;
    l.split(", ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
