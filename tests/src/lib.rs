//! The test bench: a `Host` is one hypervisor as CloudStack sees it — its
//! own ovsdb-server and database, rvsd in its own network namespace (so its
//! internal ports and the kernel's chatter are isolated), driven by the real
//! ovs-vsctl and ovs-appctl. `TestPmd` is the VM side of vhost-user: a real
//! dpdk-testpmd with net_virtio_user ports. `Netns` is another host or tenant
//! reached through veths and system ports.
pub mod cloudstack;
pub mod guest;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Debian's OVS-DPDK switch (package openvswitch-switch-dpdk).
pub const OVS_VSWITCHD_DPDK: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";

/// The rvsd binary built next to this test binary.
pub fn rvsd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RVSD") {
        return PathBuf::from(p);
    }
    workspace_bin("rvsd")
}

/// A binary of this workspace, built beside the test binaries.
pub fn workspace_bin(name: &str) -> PathBuf {
    // Test binaries live in target/<profile>/deps, tools in target/<profile>.
    let exe = std::env::current_exe().expect("own exe path");
    let here = exe.parent().expect("exe dir");
    let p = [
        here.join(name),
        here.parent().map(|d| d.join(name)).unwrap_or_default(),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| here.join(name));
    assert!(
        p.exists(),
        "{} not built: run the tests with `cargo test --workspace` (ci/test.sh does)",
        p.display()
    );
    p
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    wait_for_or(what, timeout, f, String::new);
}

/// `wait_for`, saying `seen()` (what was there instead) when it times out.
pub fn wait_for_or(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    seen: impl Fn() -> String,
) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}{}",
            seen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Parses ovs-vsctl's map output `{a=1, b="x"}`.
pub fn parse_map(s: &str) -> BTreeMap<String, String> {
    let s = s.trim().trim_start_matches('{').trim_end_matches('}');
    s.split(", ")
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

fn unique(name: &str) -> String {
    format!("{name}{}", std::process::id() % 10000)
}

/// A network namespace, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Frames the kernel counted as received on `iface` here.
    pub fn rx_packets(&self, iface: &str) -> u64 {
        self.exec(&[
            "cat",
            &format!("/sys/class/net/{iface}/statistics/rx_packets"),
        ])
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("rx_packets of {iface}: {e}"))
    }

    pub fn new(name: &str) -> Netns {
        let name = unique(name);
        let _ = run("ip", &["netns", "del", &name]);
        // Name lookups fail at once inside (no resolver reachable): a
        // python http.server's reverse lookup of its own address would
        // otherwise wait out DNS timeouts through a default route.
        let etc = PathBuf::from("/etc/netns").join(&name);
        let _ = std::fs::create_dir_all(&etc);
        let _ = std::fs::write(
            etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        );
        sh("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        // No IPv6: the kernel's router solicitations and DAD would add
        // frames the tests count exactly.
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        sh("ip", &a)
    }

    pub fn try_exec(&self, args: &[&str]) -> Output {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        Command::new("ip")
            .args(&a)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in netns")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Creates veth `a` in namespace `ns_a` (None: the host side stays where it
/// is created) and `b` in `ns_b`.
pub fn veth(a: &str, ns_a: &Netns, b: &str, ns_b: &Netns) {
    sh(
        "ip",
        &[
            "link", "add", a, "netns", &ns_a.name, "type", "veth", "peer", "name", b, "netns",
            &ns_b.name,
        ],
    );
    ns_a.exec(&["ip", "link", "set", a, "up"]);
    ns_b.exec(&["ip", "link", "set", b, "up"]);
}

fn spawn_ovsdb(dir: &Path) -> Child {
    let sock = dir.join("db.sock");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("ovsdb-server.log"))
        .unwrap();
    let c = Command::new("ovsdb-server")
        .arg(format!("--remote=punix:{}", sock.display()))
        .arg(format!(
            "--unixctl={}",
            dir.join("ovsdb-server.ctl").display()
        ))
        .arg(dir.join("conf.db"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("ovsdb-server (Debian's openvswitch-switch) must be installed: bash ci/setup.sh");
    wait_for("ovsdb-server socket", Duration::from_secs(10), || {
        sock.exists()
    });
    c
}

/// One hypervisor: ovsdb-server, rvsd in its own namespace.
pub struct Host {
    pub name: String,
    pub dir: PathBuf,
    pub ns: Netns,
    pub prefix: String,
    ovsdb: Child,
    rvsd: Option<Child>,
}

impl Host {
    /// A database with `other_config` set as a test needs, and rvsd on it.
    pub fn start(name: &str) -> Host {
        let mut h = Host::without_rvsd(name);
        h.start_rvsd();
        h
    }

    pub fn without_rvsd(name: &str) -> Host {
        let dir = PathBuf::from(format!("/tmp/rvs-test-{}", unique(name)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("conf.db");
        sh(
            "ovsdb-tool",
            &[
                "create",
                db.to_str().unwrap(),
                "/usr/share/openvswitch/vswitch.ovsschema",
            ],
        );
        let sock = dir.join("db.sock");
        let log = std::fs::File::create(dir.join("ovsdb-server.log")).unwrap();
        let ovsdb = Command::new("ovsdb-server")
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!(
                "--unixctl={}",
                dir.join("ovsdb-server.ctl").display()
            ))
            .arg(db.to_str().unwrap())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "ovsdb-server (Debian's openvswitch-switch) must be installed: bash ci/setup.sh",
            );
        wait_for("ovsdb-server socket", Duration::from_secs(10), || {
            sock.exists()
        });
        let ns = Netns::new(&format!("rvs-{name}-"));
        let h = Host {
            name: name.into(),
            prefix: format!("rvs-{}", unique(name)),
            dir,
            ns,
            ovsdb,
            rvsd: None,
        };
        h.vsctl(&["--no-wait", "init"]);
        h.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:pmd-cpu-mask=0x2",
            "other_config:dpdk-socket-mem=256",
            "other_config:stats-update-interval=1000",
            "other_config:dpdk-init=true",
        ]);
        h
    }

    /// Kills ovsdb-server (as a crash would) and starts it again on the
    /// same database file.
    pub fn restart_ovsdb(&mut self) {
        self.kill_ovsdb();
        self.start_ovsdb();
    }

    /// Kills ovsdb-server (as a crash would).
    pub fn kill_ovsdb(&mut self) {
        let _ = self.ovsdb.kill();
        let _ = self.ovsdb.wait();
        let _ = std::fs::remove_file(self.dir.join("db.sock"));
    }

    /// Starts ovsdb-server again on the same database file.
    pub fn start_ovsdb(&mut self) {
        self.ovsdb = spawn_ovsdb(&self.dir);
    }

    pub fn db(&self) -> String {
        format!("unix:{}", self.dir.join("db.sock").display())
    }

    pub fn start_rvsd(&mut self) {
        self.start_rvsd_with(&[]);
    }

    /// rvsd with extra arguments.
    pub fn start_rvsd_with(&mut self, extra: &[&str]) {
        self.start_rvsd_from(&rvsd_bin(), extra);
    }

    /// rvsd started through `bin` (a path or a link to it: the process is
    /// named after it), with extra arguments.
    pub fn start_rvsd_from(&mut self, bin: &Path, extra: &[&str]) {
        let (db, dir) = (self.db(), self.dir.to_str().unwrap().to_string());
        let prefix = self.prefix.clone();
        let svc = format!("{dir}/rvs.db");
        let mut args = vec![
            "--db",
            &db,
            "--rundir",
            &dir,
            "--file-prefix",
            &prefix,
            "--pidfile",
            "--services-db",
            &svc,
            "--flow-store",
            &dir,
        ];
        args.extend_from_slice(extra);
        self.start_switch(bin.to_str().unwrap(), &args, &[]);
    }

    /// Runs Debian's OVS-DPDK ovs-vswitchd in rvsd's place, on the same
    /// database and run directory (for side-by-side benchmarks).
    pub fn start_ovs_vswitchd(&mut self) {
        let db = self.db();
        let dir = self.dir.to_str().unwrap().to_string();
        let prefix = format!("--file-prefix {}-ovs", self.prefix);
        self.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:dpdk-extra={prefix}"),
        ]);
        let pidfile = format!("--pidfile={dir}/ovs-vswitchd.pid");
        let logfile = format!("--log-file={dir}/ovs-vswitchd.log");
        self.start_switch(
            OVS_VSWITCHD_DPDK,
            &[&db, &pidfile, &logfile],
            &[("OVS_RUNDIR", &dir), ("OVS_LOGDIR", &dir)],
        );
    }

    fn start_switch(&mut self, program: &str, args: &[&str], env: &[(&str, &str)]) {
        assert!(self.rvsd.is_none());
        let _ = std::fs::remove_file(self.dir.join("ovs-vswitchd.pid"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("rvsd.log"))
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.name, program])
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn the switch");
        self.rvsd = Some(child);
        let t0 = Instant::now();
        while self.find_ctl().is_none() {
            if let Some(st) = self.rvsd.as_mut().unwrap().try_wait().unwrap() {
                panic!("{program} exited at start-up ({st}):\n{}", self.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{program} did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills rvsd with SIGKILL, as a crash would.
    pub fn kill_rvsd(&mut self) {
        let mut c = self.rvsd.take().expect("rvsd running");
        let _ = c.kill();
        let _ = c.wait();
    }

    /// rvsctl on this host's database and run directory. Must succeed.
    pub fn rvsctl(&self, args: &[&str]) -> String {
        let o = self.rvsctl_raw(args);
        assert!(
            o.status.success(),
            "rvsctl {args:?} failed: {}\nrvsd log:\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn rvsctl_raw(&self, args: &[&str]) -> Output {
        let db = format!("--db={}", self.db());
        let dir = format!("--rundir={}", self.dir.display());
        let mut a = vec![db.as_str(), dir.as_str(), "--timeout=30"];
        a.extend_from_slice(args);
        run(workspace_bin("rvsctl").to_str().unwrap(), &a)
    }

    /// Stops rvsd with SIGTERM and waits for it; returns its exit status.
    pub fn stop_rvsd(&mut self) -> std::process::ExitStatus {
        let mut c = self.rvsd.take().expect("rvsd running");
        // `ip netns exec` execs rvsd, so the child pid is rvsd's.
        let _ = run("kill", &["-TERM", &c.id().to_string()]);
        let t0 = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                let st = c.wait().unwrap();
                if !std::thread::panicking() {
                    panic!(
                        "the switch did not stop within 15 s of SIGTERM:\n{}",
                        self.log()
                    );
                }
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rvsd.log")).unwrap_or_default()
    }

    /// Adds `bridge` (unless it exists) with a dpdkvhostuser port per name.
    pub fn add_vhost_ports(&self, bridge: &str, ports: &[&str]) {
        self.vsctl(&["--may-exist", "add-br", bridge]);
        for p in ports {
            self.vsctl(&[
                "add-port",
                bridge,
                p,
                "--",
                "set",
                "Interface",
                p,
                "type=dpdkvhostuser",
            ]);
        }
    }

    /// Waits until the database shows each port's link up.
    pub fn wait_link_up(&self, ports: &[&str]) {
        for p in ports {
            wait_for(&format!("{p} link up"), Duration::from_secs(10), || {
                self.get("Interface", p, "link_state") == "up"
            });
        }
    }

    /// ovs-ofctl as an operator runs it: `ovs-ofctl CMD br0 ...` finds the
    /// bridge's `<rundir>/br0.mgmt` through OVS_RUNDIR. Must succeed.
    pub fn ofctl(&self, args: &[&str]) -> String {
        let o = self.ofctl_raw(args);
        assert!(
            o.status.success(),
            "ovs-ofctl {args:?} failed: {}\nrvsd log:\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn ofctl_raw(&self, args: &[&str]) -> Output {
        Command::new("ovs-ofctl")
            .env("OVS_RUNDIR", &self.dir)
            .arg("--timeout=30")
            .args(args)
            .output()
            .expect("ovs-ofctl (Debian's openvswitch-common)")
    }

    /// `dump-flows` lines with the volatile fields (duration, ages) cut,
    /// so that tests compare exact text.
    pub fn flows(&self, extra: &[&str]) -> Vec<String> {
        let mut a = vec!["dump-flows"];
        a.extend_from_slice(extra);
        self.ofctl(&a)
            .lines()
            .filter(|l| l.starts_with(' '))
            .map(|l| {
                l.split(", ")
                    .filter(|f| {
                        !(f.trim_start().starts_with("duration=")
                            || f.starts_with("idle_age=")
                            || f.starts_with("hard_age="))
                    })
                    .map(|f| {
                        // "idle_age=N, " may be glued to the match with a
                        // space: keep only what follows it.
                        match f.find(" idle_age=") {
                            Some(_) => f.to_string(),
                            None => f.to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
                    .trim()
                    .to_string()
            })
            .collect()
    }

    /// ovs-vsctl with this host's database; must succeed.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let o = self.vsctl_raw(args);
        assert!(
            o.status.success(),
            "ovs-vsctl {args:?} failed: {}\nrvsd log:\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn vsctl_raw(&self, args: &[&str]) -> Output {
        let db = format!("--db={}", self.db());
        let mut a = vec![db.as_str(), "--timeout=30"];
        a.extend_from_slice(args);
        run("ovs-vsctl", &a)
    }

    /// The switch's unixctl socket: `<program>.<pid>.ctl` in the run
    /// directory (ovs-vswitchd for rvsd, ovs-vswitchd-dpdk for Debian's OVS).
    fn find_ctl(&self) -> Option<PathBuf> {
        let pid = std::fs::read_to_string(self.dir.join("ovs-vswitchd.pid")).ok()?;
        let pid = pid.trim();
        if pid.is_empty() {
            return None;
        }
        ["ovs-vswitchd", "ovs-vswitchd-dpdk"]
            .iter()
            .map(|n| self.dir.join(format!("{n}.{pid}.ctl")))
            .find(|p| p.exists())
    }

    pub fn ctl_path(&self) -> PathBuf {
        self.find_ctl().expect("the switch's unixctl socket")
    }

    /// ovs-appctl against rvsd's unixctl socket; must succeed.
    pub fn appctl(&self, args: &[&str]) -> String {
        let t = self.ctl_path();
        let mut a = vec!["-t", t.to_str().unwrap()];
        a.extend_from_slice(args);
        sh("ovs-appctl", &a)
    }

    pub fn get(&self, table: &str, rec: &str, col: &str) -> String {
        self.vsctl(&["get", table, rec, col]).trim().to_string()
    }

    pub fn ofport(&self, iface: &str) -> i64 {
        self.get("Interface", iface, "ofport").parse().unwrap()
    }

    pub fn stats(&self, iface: &str) -> BTreeMap<String, u64> {
        parse_map(&self.get("Interface", iface, "statistics"))
            .into_iter()
            .map(|(k, v)| (k, v.parse().unwrap_or(0)))
            .collect()
    }

    /// Waits until the database's statistics of `iface` satisfy `f`
    /// (rvsd refreshes them every stats-update-interval).
    pub fn wait_stats(
        &self,
        iface: &str,
        what: &str,
        f: impl Fn(&BTreeMap<String, u64>) -> bool,
    ) -> BTreeMap<String, u64> {
        let t0 = Instant::now();
        loop {
            let s = self.stats(iface);
            if f(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{iface} statistics never showed {what}: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_tail(&self) -> String {
        let l = self.log();
        let lines: Vec<&str> = l
            .lines()
            .filter(|l| !l.starts_with("VHOST_CONFIG"))
            .collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits for rvsd to exit by itself (after `ovs-appctl exit`).
    pub fn wait_rvsd_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.rvsd.take().expect("rvsd running");
        let t0 = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "rvsd did not exit:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn rvsd_running(&mut self) -> bool {
        match self.rvsd.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- rvsd log of host {} ---\n{}",
                self.name,
                self.log_tail()
            );
        }
        if self.rvsd.is_some() {
            let st = self.stop_rvsd();
            // ovs-vswitchd re-raises SIGTERM to exit; rvsd exits 0.
            let ovs_ok = self.log().contains("(Open vSwitch)")
                && std::os::unix::process::ExitStatusExt::signal(&st) == Some(15);
            if !std::thread::panicking() && !ovs_ok {
                assert!(st.success(), "rvsd exited with {st}:\n{}", self.log_tail());
            }
        }
        let _ = self.ovsdb.kill();
        let _ = self.ovsdb.wait();
        remove_hugepage_files(&self.prefix);
        remove_hugepage_files(&format!("{}-ovs", self.prefix));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Port statistics as testpmd counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounts {
    pub rx: u64,
    pub tx: u64,
}

/// A dpdk-testpmd process with virtio-user ports: the VM side.
pub struct TestPmd {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
    pub n_ports: usize,
    prefix: String,
}

impl TestPmd {
    /// `vdevs` are net_virtio_user devargs. Ports are polled in rxonly mode;
    /// `send` transmits from one port at a time.
    pub fn start(name: &str, vdevs: &[String]) -> TestPmd {
        TestPmd::virtio(
            name,
            vdevs,
            256,
            &[
                "-i",
                "--nb-cores=1",
                "--forward-mode=rxonly",
                "--total-num-mbufs=8192",
                "--no-flush-rx",
            ],
        )
    }

    /// testpmd with virtio-user `vdevs`, `mem_mb` of hugepages and the given
    /// application arguments; both its lcores on CPU 0 (CPU 1 belongs to the
    /// switch's PMD).
    pub fn virtio(name: &str, vdevs: &[String], mem_mb: u32, app: &[&str]) -> TestPmd {
        let prefix = format!("tp-{}", unique(name));
        let mem = mem_mb.to_string();
        let mut eal = vec![
            "--lcores",
            "0@0,1@0",
            "--no-pci",
            "--file-prefix",
            &prefix,
            "--single-file-segments",
            "-m",
            &mem,
        ];
        for v in vdevs {
            eal.push("--vdev");
            eal.push(v);
        }
        TestPmd::start_with(name, &eal, app)
    }

    /// testpmd with the given EAL and application arguments (interactive).
    pub fn start_with(name: &str, eal: &[&str], app: &[&str]) -> TestPmd {
        let prefix = eal
            .iter()
            .position(|a| *a == "--file-prefix")
            .map(|i| eal[i + 1].to_string())
            .unwrap_or_else(|| format!("tp-{}", unique(name)));
        // Unbuffered stdio: on a pipe testpmd's printf output would lag
        // behind its prompt, which it writes directly.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-o0", "-e0", "dpdk-testpmd"])
            .args(eal)
            .arg("--")
            .args(app);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dpdk-testpmd (Debian's dpdk-dev) must be installed: bash ci/setup.sh");
        let stdin = child.stdin.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let o = out.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b' ', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => o.lock().unwrap().push_str(&String::from_utf8_lossy(&buf)),
                    }
                }
            });
        }
        let n_ports = eal.iter().filter(|a| **a == "--vdev").count();
        let mut t = TestPmd {
            child,
            stdin,
            out,
            n_ports,
            prefix,
        };
        // Start-up only: with five virtio-user ports on a loaded 2-core VM
        // testpmd once took over 30 s to print its first prompt (CI run of
        // 2026-11-23 05:0x, vlan test); what it then does is still timed by
        // each command's own wait.
        t.wait_prompt(0, Duration::from_secs(90));
        t
    }

    fn prompts(&self) -> usize {
        self.out.lock().unwrap().matches("testpmd> ").count()
    }

    fn wait_prompt(&mut self, before: usize, timeout: Duration) {
        let t0 = Instant::now();
        while self.prompts() <= before {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("testpmd exited ({st}):\n{}", self.output());
            }
            assert!(
                t0.elapsed() < timeout,
                "testpmd did not answer:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Runs one interactive command and returns what it printed.
    pub fn cmd(&mut self, c: &str) -> String {
        let before = self.prompts();
        let start = self.out.lock().unwrap().len();
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
        self.wait_prompt(before, Duration::from_secs(30));
        self.out.lock().unwrap()[start..].to_string()
    }

    pub fn all_ports(&self) -> String {
        (0..self.n_ports)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Sends `n` frames (n <= 512) from `port` to `dst` (a MAC), then goes
    /// back to receiving on every port.
    pub fn send(&mut self, port: usize, dst: &str, n: usize) {
        assert!(n > 0 && n <= 512);
        // Settings change only while forwarding is stopped.
        self.cmd("stop");
        self.cmd(&format!("set eth-peer {port} {dst}"));
        self.cmd(&format!("set portlist {port}"));
        self.cmd(&format!("set burst {n}"));
        self.cmd("start tx_first 1");
        // The forwarding lcore sends the first burst after `start` returns.
        std::thread::sleep(Duration::from_millis(300));
        self.cmd("stop");
        let all = self.all_ports();
        self.cmd(&format!("set portlist {all}"));
        self.cmd("start");
    }

    /// Frames received over all ports (testpmd's own counters).
    pub fn rx_total(&mut self) -> u64 {
        self.counts().iter().map(|c| c.rx).sum()
    }

    /// write(2) calls testpmd has made so far, all threads (/proc/PID/io
    /// syscw): a virtio-user port's kick is one, an eventfd write.
    pub fn write_syscalls(&self) -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.child.id()))
            .expect("/proc/PID/io of testpmd");
        io.lines()
            .find_map(|l| l.strip_prefix("syscw: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no syscw in {io}"))
    }

    /// Waits until testpmd's own counters stop changing, then returns them.
    pub fn settle(&mut self) -> Vec<PortCounts> {
        let mut last = self.counts();
        loop {
            std::thread::sleep(Duration::from_millis(400));
            let now = self.counts();
            if now == last {
                return now;
            }
            last = now;
        }
    }

    pub fn counts(&mut self) -> Vec<PortCounts> {
        (0..self.n_ports)
            .map(|p| {
                let s = self.cmd(&format!("show port stats {p}"));
                PortCounts {
                    rx: field(&s, "RX-packets:"),
                    tx: field(&s, "TX-packets:"),
                }
            })
            .collect()
    }

    pub fn clear(&mut self) {
        self.cmd("clear port stats all");
    }

    pub fn quit(mut self) {
        let _ = writeln!(self.stdin, "stop");
        let _ = writeln!(self.stdin, "quit");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(s: &str, key: &str) -> u64 {
    s.split(key)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in testpmd output: {s}"))
}

impl Drop for TestPmd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
        remove_hugepage_files(&self.prefix);
    }
}

/// Hugepage files a DPDK process with `prefix` left behind (a killed
/// process leaves them and they hold their pages until removed).
pub fn remove_hugepage_files(prefix: &str) {
    if let Ok(rd) = std::fs::read_dir("/dev/hugepages") {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}map_"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}

/// A VM on `bridge`: port `port` (dpdkvhostuserclient) to dpdk-testpmd
/// as the vhost-user server with MAC `mac`, answering ARP and pings for
/// any address (icmpecho). Returns once rvsd is connected.
pub fn icmpecho_vm(h: &Host, name: &str, bridge: &str, port: &str, mac: &str) -> TestPmd {
    let sock = h.dir.join(format!("{port}.sock"));
    h.vsctl(&[
        "add-port",
        bridge,
        port,
        "--",
        "set",
        "Interface",
        port,
        "type=dpdkvhostuserclient",
        &format!("options:vhost-server-path={}", sock.display()),
    ]);
    // testpmd's virtio-user server waits for rvsd to connect at start-up.
    let mut tp = TestPmd::virtio(
        name,
        &[virtio_user_server(0, &sock, mac)],
        256,
        &[
            "-i",
            "--nb-cores=1",
            "--forward-mode=icmpecho",
            "--total-num-mbufs=8192",
        ],
    );
    tp.cmd("start");
    wait_for("rvsd to connect", Duration::from_secs(15), || {
        h.get("Interface", port, "link_state") == "up"
    });
    tp
}

/// Writes `frames` as a pcap file (what net_pcap replays into a switch).
pub fn write_pcap(path: &Path, frames: impl IntoIterator<Item = Vec<u8>>) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for f in frames {
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&f);
    }
    std::fs::write(path, b).unwrap();
}

/// virtio-user devargs for a vhost-user socket rvsd serves.
pub fn virtio_user(idx: usize, path: &Path, mac: &str) -> String {
    format!(
        "net_virtio_user{idx},path={},queues=1,mac={mac}",
        path.display()
    )
}

/// virtio-user devargs where testpmd is the vhost-user server (rvsd connects).
pub fn virtio_user_server(idx: usize, path: &Path, mac: &str) -> String {
    format!(
        "net_virtio_user{idx},path={},queues=1,server=1,mac={mac}",
        path.display()
    )
}

/// Sends raw Ethernet frames (hex) out of `iface` in `ns` through an
/// AF_PACKET socket: for frames the kernel here cannot build (802.1Q).
pub fn send_raw(ns: &Netns, iface: &str, frames_hex: &[String]) {
    let script = format!(
        "import socket,binascii\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{iface}',0))\nfor h in {frames_hex:?}:\n    s.send(binascii.unhexlify(h))\n"
    );
    ns.exec(&["python3", "-c", &script]);
}

/// An ARP request (optionally 802.1Q-tagged) as hex.
pub fn arp_request_hex(
    src_mac: [u8; 6],
    vid: Option<u16>,
    sender_ip: [u8; 4],
    target_ip: [u8; 4],
) -> String {
    let mut f: Vec<u8> = vec![0xff; 6];
    f.extend_from_slice(&src_mac);
    if let Some(v) = vid {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f.resize(f.len().max(60), 0);
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// tshark capturing on an interface in a namespace, printing the fields
/// asked for, one line per frame that matches the display filter.
pub struct Capture {
    child: Child,
    err: Arc<Mutex<String>>,
}

impl Capture {
    pub fn start(
        ns: &Netns,
        iface: &str,
        display_filter: &str,
        fields: &[&str],
        seconds: u32,
    ) -> Capture {
        Capture::start_with(ns, iface, &[], display_filter, fields, seconds)
    }

    /// As `start`, with tshark options (`-o` preferences) before the rest.
    pub fn start_with(
        ns: &Netns,
        iface: &str,
        opts: &[&str],
        display_filter: &str,
        fields: &[&str],
        seconds: u32,
    ) -> Capture {
        let dur = format!("duration:{seconds}");
        let mut args = vec!["tshark", "-l", "-n"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[
            "-i",
            iface,
            "-a",
            &dur,
            "-Y",
            display_filter,
            "-T",
            "fields",
        ]);
        for f in fields {
            args.push("-e");
            args.push(f);
        }
        let mut child = ns.spawn(&args);
        let err = Arc::new(Mutex::new(String::new()));
        let e = err.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                e.lock().unwrap().push_str(&(l + "\n"));
            }
        });
        wait_for("tshark to capture", Duration::from_secs(20), || {
            err.lock().unwrap().contains("Capturing on")
        });
        // tshark reports before its capture child is reading.
        std::thread::sleep(Duration::from_millis(500));
        Capture { child, err }
    }

    /// Waits for the capture to end (its duration) and returns its lines.
    pub fn finish(self) -> Vec<String> {
        let out = self.child.wait_with_output().unwrap();
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<String> = s
            .lines()
            .map(String::from)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            eprintln!("tshark said: {}", self.err.lock().unwrap());
        }
        lines
    }
}

/// Starts `python3 -m http.server` on `addr:port` in `ns`, serving `dir`,
/// and returns once it listens (its stderr in the panic when it does not
/// within 10 s).
pub fn http_server(ns: &Netns, addr: &str, port: &str, dir: &Path) -> Child {
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
    listening(ns, c, addr, port)
}

/// An HTTP server on `addr:port` in `ns` that answers every GET with
/// `file`, sent no faster than `bytes_per_sec`: a download that lasts
/// as long on a fast host as on a slow one.
pub fn paced_http_server(
    ns: &Netns,
    addr: &str,
    port: &str,
    file: &Path,
    bytes_per_sec: u64,
) -> Child {
    const SERVER: &str = r#"
import http.server, os, sys, time
addr, port, path, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
class Paced(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.end_headers()
        t0, sent = time.monotonic(), 0
        with open(path, "rb") as f:
            while chunk := f.read(65536):
                self.wfile.write(chunk)
                sent += len(chunk)
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    def log_message(self, *args):
        pass
http.server.HTTPServer((addr, port), Paced).serve_forever()
"#;
    let rate = bytes_per_sec.to_string();
    let c = ns.spawn(&[
        "python3",
        "-c",
        SERVER,
        addr,
        port,
        file.to_str().unwrap(),
        &rate,
    ]);
    listening(ns, c, addr, port)
}

/// Returns `c` once something listens on `addr:port` in `ns`; kills it
/// and panics with its stderr when nothing does within 10 s.
fn listening(ns: &Netns, mut c: Child, addr: &str, port: &str) -> Child {
    let t0 = Instant::now();
    while !ns
        .try_exec(&["sh", "-c", &format!("ss -ltn | grep -q {addr}:{port}")])
        .status
        .success()
    {
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = c.kill();
            let out = c.wait_with_output().unwrap();
            panic!("http server: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    c
}

// Overlay helpers: underlay bridges, tenants, tunnel counters.

/// Makes `br` an underlay bridge: a `system` port on veth `port` (whose
/// peer `peer` goes into `far`) and the host's endpoint address on the
/// bridge's internal port.
pub fn underlay(h: &Host, br: &str, port: &str, addr: &str, far: &Netns, peer: &str) {
    veth(peer, far, port, &h.ns);
    h.vsctl(&["add-br", br]);
    h.vsctl(&["add-port", br, port]);
    h.ns.exec(&["ip", "link", "set", br, "up"]);
    h.ns.exec(&["ip", "address", "add", addr, "dev", br]);
    // Frames the kernel sends through a veth carry partial checksums.
    far.exec(&["ethtool", "-K", peer, "tx", "off"]);
}

/// A tenant namespace on a veth whose other end is a `system` port of
/// `br`.
pub fn tenant(h: &Host, br: &str, name: &str, addr: &str) -> Netns {
    let ns = Netns::new(name);
    let (inner, outer) = (format!("{name}i"), format!("{name}o"));
    veth(&inner, &ns, &outer, &h.ns);
    h.vsctl(&["add-port", br, &outer]);
    ns.exec(&["ip", "address", "add", addr, "dev", &inner]);
    ns.exec(&["ethtool", "-K", &inner, "tx", "off"]);
    ns
}

/// (encapsulated, decapsulated, dropped) of a key in rvs/tunnel/show.
pub fn key_counts(h: &Host, kind: &str, key: u64) -> (u64, u64, u64) {
    let show = h.appctl(&["rvs/tunnel/show"]);
    let prefix = format!("  {kind} key {key}: ");
    let Some(l) = show.lines().find(|l| l.starts_with(&prefix)) else {
        return (0, 0, 0);
    };
    let n: Vec<u64> = l[prefix.len()..]
        .split(", ")
        .map(|p| p.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    (n[0], n[1], n[2])
}

pub fn drop_count(h: &Host, reason: &str) -> u64 {
    h.appctl(&["rvs/tunnel/show"])
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("  {reason}: "))
                .map(|v| v.parse().unwrap())
        })
        .unwrap_or(0)
}

/// Frames dropped for `reason` (a name as pmd-stats-show prints it),
/// summed over PMDs since the last pmd-stats-clear.
pub fn pmd_drops(h: &Host, reason: &str) -> u64 {
    pmd_sum(h, &format!("    {reason}: "))
}

/// A pmd-stats-show counter (`name` as it prints it, e.g. "packet
/// recirculations"), summed over PMDs since the last pmd-stats-clear.
pub fn pmd_stat(h: &Host, name: &str) -> u64 {
    pmd_sum(h, &format!("  {name}: "))
}

fn pmd_sum(h: &Host, prefix: &str) -> u64 {
    h.appctl(&["dpif-netdev/pmd-stats-show"])
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .sum()
}

/// Pings until one answer comes (ARP on both sides of the overlay and the
/// underlay resolve first), within `secs`.
pub fn reachable(ns: &Netns, dst: &str, secs: u64) {
    wait_for(
        &format!("{dst} reachable"),
        Duration::from_secs(secs),
        || {
            ns.try_exec(&["ping", "-c", "1", "-W", "1", dst])
                .status
                .success()
        },
    );
}

pub fn ping(ns: &Netns, dst: &str, n: u32, extra: &[&str]) -> String {
    let c = n.to_string();
    let mut a = vec!["ping", "-c", &c, "-i", "0.2", "-W", "2"];
    a.extend_from_slice(extra);
    a.push(dst);
    String::from_utf8_lossy(&ns.try_exec(&a).stdout).into_owned()
}
