//! rvsd: the rvs switch daemon, in ovs-vswitchd's place. It is a client of
//! the real ovsdb-server: it monitors the Open_vSwitch database, converges
//! the DPDK dataplane to it and writes back what ovs-vswitchd writes.
use clap::Parser;
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use log::{error, info, warn, LevelFilter};
use rvs_control::appctl::{self, AppCtx};
use rvs_control::budget::Budget;
use rvs_control::config::desired;
use rvs_control::db::{monitor_request, transact, Db};
use rvs_control::eal_args::{allowed_cpus, hugepages_available, plan, MBUF_BYTES};
use rvs_control::jsonrpc::{read_messages, send, unix_path};
use rvs_control::openflow::server::{BridgeDesc, OfServer};
use rvs_control::openflow::{Env, PortInfo};
use rvs_control::ports::{DpdkFactory, TYPES};
use rvs_control::reconcile::{datapath_id, Reconciler};
use rvs_control::service::{store, BridgeHandle, ServiceLayer};
use rvs_control::unixctl::{self, Commands};
use rvs_control::{datum, logger, pidfile};
use rvs_dataplane::packet::PacketBuf;
use rvs_dataplane::pmd::{self, Clock};
use rvs_dataplane::snapshot::Switch;
use rvs_dataplane::stats::port_totals;
use rvs_ffi::{eal, Mbuf, Mempool};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "rvsd",
    version,
    about = "rvs userspace virtual switch daemon (DPDK), in place of ovs-vswitchd"
)]
struct Args {
    /// The Open_vSwitch database to follow, as unix:PATH.
    #[arg(long, default_value = "unix:/var/run/openvswitch/db.sock")]
    db: String,
    /// Run directory: unixctl socket, pid file, vhost-user sockets (relative vhost-sock-dir).
    #[arg(long, default_value = "/var/run/openvswitch")]
    rundir: PathBuf,
    /// DPDK --file-prefix: distinct per DPDK process on the host.
    #[arg(long, default_value = "rvs")]
    file_prefix: String,
    /// Write the pid here (default <rundir>/ovs-vswitchd.pid, where ovs-appctl looks).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pidfile: Option<String>,
    /// unixctl socket for ovs-appctl (default <rundir>/ovs-vswitchd.<pid>.ctl).
    #[arg(long)]
    unixctl: Option<PathBuf>,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: LevelFilter,
    /// The file of the Rvs database (service rules): added to ovsdb-server
    /// when it does not serve it yet, created if missing.
    #[arg(long, default_value = "/etc/openvswitch/rvs.db")]
    services_db: PathBuf,
    /// ovsdb-server's unixctl socket (default: found beside the database
    /// socket, from ovsdb-server.pid).
    #[arg(long)]
    ovsdb_ctl: Option<PathBuf>,
    /// Group whose members may use the unixctl and OpenFlow sockets besides
    /// root (sockets 0770 root:GROUP; without it 0700, root only).
    #[arg(long)]
    socket_group: Option<String>,
    /// Directory where each bridge's flows and groups are kept
    /// (<bridge>.flows) and restored from at start-up; "none": not kept.
    #[arg(long, default_value = "/var/lib/rvs")]
    flow_store: PathBuf,
}

enum Ev {
    Db(Value),
    DbClosed(String),
    LinkChanged,
    /// true: `exit --cleanup`.
    Exit(bool),
}

struct DbConn {
    w: UnixStream,
    next_id: u64,
    monitor_id: u64,
    /// The Rvs database's monitor, once it is served.
    svc_monitor_id: Option<u64>,
}

impl DbConn {
    fn connect(path: &str, tx: &Sender<Ev>) -> std::io::Result<DbConn> {
        let s = UnixStream::connect(path)?;
        let r = s.try_clone()?;
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("ovsdb-rx".into())
            .spawn(move || {
                let why = read_messages(r, |m| tx.send(Ev::Db(m)).is_ok());
                let _ = tx.send(Ev::DbClosed(why));
            })?;
        let mut c = DbConn {
            w: s,
            next_id: 1,
            monitor_id: 0,
            svc_monitor_id: None,
        };
        c.monitor_id = c.id();
        send(&mut c.w, &monitor_request(c.monitor_id))?;
        Ok(c)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn transact(&mut self, ops: Vec<Value>) {
        if ops.is_empty() {
            return;
        }
        let id = self.id();
        if let Err(e) = send(&mut self.w, &transact(id, ops)) {
            warn!("cannot write to the database: {e}");
        }
    }

    fn transact_services(&mut self, ops: Vec<Value>) {
        if ops.is_empty() || self.svc_monitor_id.is_none() {
            return;
        }
        let id = self.id();
        if let Err(e) = send(&mut self.w, &store::transact(id, ops)) {
            warn!("cannot write to the Rvs database: {e}");
        }
    }

    /// Makes sure ovsdb-server serves the Rvs database and monitors it.
    /// Without it the switch still runs; service rules wait.
    fn monitor_services(&mut self, db_path: &str, args: &Args) {
        match store::ensure(
            std::path::Path::new(db_path),
            &args.services_db,
            args.ovsdb_ctl.as_deref(),
        ) {
            Ok(did) => {
                if did != "served" {
                    info!("Rvs database {}: {did}", args.services_db.display());
                }
                let id = self.id();
                self.svc_monitor_id = Some(id);
                if let Err(e) = send(&mut self.w, &store::monitor_request(id)) {
                    warn!("cannot monitor the Rvs database: {e}");
                }
            }
            Err(e) => warn!("service rules unavailable: the Rvs database could not be served: {e}"),
        }
    }
}

fn block_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    let _ = set.thread_block();
    set
}

/// Waits for the first complete copy of the database (start-up needs
/// other_config before DPDK can start), retrying the connection.
fn first_sync(path: &str, tx: &Sender<Ev>, rx: &Receiver<Ev>) -> Result<(DbConn, Db), String> {
    let mut told = false;
    loop {
        match DbConn::connect(path, tx) {
            Ok(mut c) => loop {
                match rx.recv_timeout(Duration::from_secs(30)) {
                    Ok(Ev::Db(m)) => {
                        if m.get("method").and_then(|x| x.as_str()) == Some("echo") {
                            let _ = send(
                                &mut c.w,
                                &json!({"id": m["id"], "result": m["params"], "error": null}),
                            );
                        } else if m.get("id").and_then(|i| i.as_u64()) == Some(c.monitor_id) {
                            if !m["error"].is_null() {
                                return Err(format!("the database refused rvsd's monitor request: {} (is {path} an Open_vSwitch database?)", m["error"]));
                            }
                            let mut db = Db::default();
                            db.apply(&m["result"])?;
                            return Ok((c, db));
                        }
                    }
                    Ok(Ev::Exit(_)) => return Err("stopped by a signal".into()),
                    Ok(Ev::DbClosed(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Err(e) => {
                if !told {
                    warn!("{path}: cannot connect to the database ({e}); retrying every second");
                    told = true;
                }
                if let Ok(Ev::Exit(_)) = rx.recv_timeout(Duration::from_secs(1)) {
                    return Err("stopped by a signal".into());
                }
            }
        }
    }
}

/// How the OpenFlow side reads ports, time and quiescence off the switch.
fn openflow_env(sw: Arc<Switch<Mbuf>>) -> Env {
    let (sw2, sw3) = (sw.clone(), sw.clone());
    Env {
        ports: Box::new(move |br| {
            let snap = sw.snap.load();
            let Some(b) = snap.bridges.iter().find(|b| &*b.name == br) else {
                return Vec::new();
            };
            b.ports
                .iter()
                .filter_map(|&slot| {
                    let p = snap.port(slot)?;
                    let st = p.dev.status();
                    Some(PortInfo {
                        ofport: p.ofport,
                        name: p.name.to_string(),
                        mac: st.mac.unwrap_or_default(),
                        link_up: st.link_up,
                        admin_up: true,
                        stats: {
                            let mut t = port_totals(sw.pmds.iter().map(|x| &x.stats), slot)
                                .minus(&p.baseline);
                            t.tx_dropped += p.dev.device_tx_dropped();
                            t
                        },
                    })
                })
                .collect()
        }),
        quiesce: Box::new(move || sw2.quiesce()),
        now_ns: Box::new(move || sw3.now_ns()),
    }
}

/// Every bridge's flow tables, for the service layer.
fn bridge_handles<P: PacketBuf>(r: &Reconciler<P>) -> Vec<BridgeHandle> {
    r.bridges
        .iter()
        .map(|(n, b)| (n.clone(), b.flows.clone()))
        .collect()
}

/// Keeps every bridge's saved tables current: a bridge whose tables
/// changed is written within 200 ms.
fn save_flows_loop<P: PacketBuf + 'static>(dir: &std::path::Path, rec: &Mutex<Reconciler<P>>) {
    let mut saved: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let bridges = match rec.lock() {
            Ok(r) => bridge_handles(&r),
            Err(_) => return,
        };
        // A bridge deleted just after its tables were written last time
        // must not leave them behind.
        saved.retain(|n, _| {
            let live = bridges.iter().any(|(b, _)| b == n);
            if !live {
                if let Some(p) = rvs_control::openflow::saved::path_for(dir, n) {
                    let _ = std::fs::remove_file(p);
                }
            }
            live
        });
        for (name, flows) in bridges {
            let Some(path) = rvs_control::openflow::saved::path_for(dir, &name) else {
                continue;
            };
            let (generation, bytes) = {
                let t = flows.tables.lock().unwrap_or_else(|e| e.into_inner());
                if saved.get(&name) == Some(&t.generation()) {
                    continue;
                }
                (t.generation(), rvs_control::openflow::saved::encode(&t))
            };
            match rvs_control::openflow::saved::write_file(&path, &bytes) {
                Ok(()) => {
                    saved.insert(name, generation);
                }
                Err(e) => warn!("{name}: cannot save flows to {}: {e}", path.display()),
            }
        }
    }
}

/// The bridges the OpenFlow server must serve.
fn openflow_bridges<P: PacketBuf>(r: &Reconciler<P>) -> BTreeMap<String, BridgeDesc> {
    r.bridges
        .iter()
        .map(|(name, lb)| {
            (
                name.clone(),
                BridgeDesc {
                    flows: lb.flows.clone(),
                    datapath_id: u64::from_str_radix(&datapath_id(name), 16).unwrap_or(0),
                    protocols: lb.spec.protocols.clone(),
                    controllers: lb.spec.controllers.clone(),
                },
            )
        })
        .collect()
}

fn main() {
    let args = Args::parse();
    logger::init(args.log_level);
    // A panic anywhere (a PMD thread included) must not leave a switch that
    // silently stopped forwarding: report it and abort, so the supervisor
    // restarts rvsd and it converges to the database again.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        error!("panic: {info}; aborting");
        std::process::abort();
    }));
    if let Err(e) = run(args) {
        error!("{e}");
        eprintln!("rvsd: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let sigs = block_signals();
    let db_path = unix_path(&args.db)?.to_string();
    std::fs::create_dir_all(&args.rundir)
        .map_err(|e| format!("cannot create run directory {}: {e}", args.rundir.display()))?;
    // Own the pid file first: a second switch on this run directory is
    // refused before it touches DPDK or the database.
    let pid = std::process::id();
    let pidfile = args.pidfile.as_ref().map(|p| {
        if p.is_empty() {
            args.rundir.join("ovs-vswitchd.pid")
        } else {
            PathBuf::from(p)
        }
    });
    let _pidfile_lock = match &pidfile {
        Some(pf) => Some(pidfile::create(pf, pid)?),
        None => None,
    };
    rvs_control::access::configure(args.socket_group.as_deref())?;
    let (tx, rx) = unbounded::<Ev>();
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Ok(sig) = sigs.wait() {
                    info!("{sig:?}: exiting");
                    let _ = tx.send(Ev::Exit(false));
                }
            })
            .map_err(|e| e.to_string())?;
    }

    // Adding a database makes ovsdb-server drop its clients: do it before
    // connecting.
    if let Ok(did) = store::ensure(
        std::path::Path::new(&db_path),
        &args.services_db,
        args.ovsdb_ctl.as_deref(),
    ) {
        info!("Rvs database {}: {did}", args.services_db.display());
    }
    let (mut conn, mut db) = first_sync(&db_path, &tx, &rx)?;
    conn.monitor_services(&db_path, &args);
    let mut svc_db = Db::default();
    let d = desired(&db);
    let cpus = allowed_cpus();
    let p = plan(&d.global, &args.file_prefix, &cpus, hugepages_available())
        .map_err(|e| format!("bad configuration: {e}"))?;
    let emc = match d.global.get("emc-entries") {
        None => rvs_dataplane::flow::cache::DEFAULT_ENTRIES,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (2..=1 << 22).contains(&n) => n,
            _ => {
                return Err(format!(
                    "other_config:emc-entries={v:?}: give a number of exact-match cache entries per PMD between 2 and 4194304"
                ))
            }
        },
    };

    d.global
        .tunnel_peers()
        .map_err(|e| format!("bad configuration: {e}"))?;
    for w in &p.warnings {
        warn!("{w}");
    }
    if p.no_huge {
        warn!("vhost-user ports work without hugepages only if the VM side shares its memory (memfd or hugetlbfs); rvsd's own buffers are not shared");
    }
    info!("starting DPDK: {}", p.eal_args.join(" "));
    eal::init(&p.eal_args)?;
    let dpdk_version = eal::version();
    info!("{dpdk_version} initialised; PMD cores {:?}", p.pmds);

    let mut nodes: Vec<i32> = p.pmds.iter().map(|x| x.1).collect();
    nodes.push(0);
    nodes.sort();
    nodes.dedup();
    if p.no_huge {
        nodes = vec![0];
    }
    let mut pools = BTreeMap::new();
    let mut budget = Budget::new(
        MBUF_BYTES,
        (rvs_dataplane::BURST * 8 * p.pmds.len().max(1)) as u64,
    );
    for n in nodes {
        let pool = Mempool::create(&format!("rvs_mp_{n}"), p.pool_mbufs, 256, 2048 + 128, n)?;
        info!("mbuf pool on NUMA node {n}: {} mbufs", pool.size);
        budget.add_pool(n, pool.size as u64);
        pools.insert(n, pool);
    }

    let switch = Switch::<Mbuf>::with_cache(&p.pmds, emc);
    // Packet-outs are built from the pool of PMD 0's node (PMD 0 sends them).
    let pmd0_node = p.pmds.first().map(|x| x.1).unwrap_or(0);
    if let Some(&pool) = pools.get(&pmd0_node).or_else(|| pools.values().next()) {
        let _ = switch.packet_alloc.set(Box::new(move |b: &[u8]| {
            let mut m = pool.alloc()?;
            if b.len() > u16::MAX as usize || !m.append(b.len() as u16) {
                return None;
            }
            m.data_mut().copy_from_slice(b);
            Some(m)
        }));
    }
    info!(
        "exact-match cache: {} entries per PMD",
        emc.next_power_of_two()
    );
    let clock = Clock {
        cycles: eal::rdtsc,
        hz: eal::tsc_hz(),
    };
    let mut pmd_threads = Vec::new();
    for me in switch.pmds.clone() {
        let sw = switch.clone();
        let core = me.core;
        let h = std::thread::Builder::new()
            .name(format!("pmd-c{core:02}"))
            .spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                if set.set(core).is_err()
                    || nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_err()
                {
                    error!("cannot pin PMD thread to core {core}");
                }
                if let Err(e) = eal::register_thread() {
                    warn!(
                        "PMD on core {core}: {e}; mbuf allocations will bypass the per-core cache"
                    );
                }
                pmd::run(sw, me, clock);
                eal::unregister_thread();
            })
            .map_err(|e| e.to_string())?;
        pmd_threads.push(h);
    }
    {
        let sw = switch.clone();
        let tx2 = tx.clone();
        rvs_ffi::vhost::set_hooks(
            Box::new(move || sw.quiesce()),
            Box::new(move || drop(tx2.send(Ev::LinkChanged))),
        );
    }

    let vhost_dir = {
        let v = d.global.get("vhost-sock-dir").unwrap_or("");
        if v.starts_with('/') {
            PathBuf::from(v)
        } else {
            args.rundir.join(v)
        }
    };
    let pool_list: Vec<&'static Mempool> = pools.values().copied().collect();
    let exit_pools = pool_list.clone();
    let factory = DpdkFactory {
        pools,
        n_pmds: p.pmds.len(),
        vhost_dir,
    };
    let mut reconciler = Reconciler::new(switch.clone(), Box::new(factory), budget);
    if args.flow_store != std::path::Path::new("none") {
        std::fs::create_dir_all(&args.flow_store).map_err(|e| {
            format!(
                "--flow-store {}: {e} (give a writable directory, or none)",
                args.flow_store.display()
            )
        })?;
        reconciler.flow_store = Some(args.flow_store.clone());
    }
    let rec = Arc::new(Mutex::new(reconciler));
    if let Some(dir) = rec.lock().map_err(|_| "lock poisoned")?.flow_store.clone() {
        let rec = rec.clone();
        std::thread::Builder::new()
            .name("flow-saver".into())
            .spawn(move || save_flows_loop(&dir, &rec))
            .map_err(|e| e.to_string())?;
    }

    let svc = {
        let (sw, sw2) = (switch.clone(), switch.clone());
        Arc::new(ServiceLayer::new(
            switch.ct.clone(),
            Box::new(move || sw.quiesce()),
            Box::new(move || sw2.now_ns()),
        ))
    };

    // The tunnel underlay: kernel routes and addresses, ARP for next hops.
    let underlay = rec.lock().map_err(|_| "lock poisoned")?.underlay.clone();
    underlay.refresh_kernel();
    {
        let (ul, sw, rec, svc) = (underlay.clone(), switch.clone(), rec.clone(), svc.clone());
        std::thread::Builder::new()
            .name("underlay".into())
            .spawn(move || {
                let mut swept = Instant::now();
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    // Expired connections go once a second.
                    if swept.elapsed() >= Duration::from_secs(1) {
                        swept = Instant::now();
                        sw.ct.sweep(sw.now_secs() as u64 * 1_000_000_000);
                    }
                    if ul.tick(&sw) {
                        match rec.lock() {
                            Ok(mut r) => r.publish_tunnels(),
                            Err(_) => return,
                        }
                    }
                    let bridges = match rec.lock() {
                        Ok(r) => bridge_handles(&r),
                        Err(_) => return,
                    };
                    svc.tick(&bridges);
                }
            })
            .map_err(|e| e.to_string())?;
    }

    let ctl = args
        .unixctl
        .clone()
        .unwrap_or_else(|| args.rundir.join(format!("ovs-vswitchd.{pid}.ctl")));
    let mut cmds = Commands::default();
    let tx_exit = tx.clone();
    let version = format!("rvsd (rvs) {}\n{dpdk_version}", env!("CARGO_PKG_VERSION"));
    appctl::register(
        &mut cmds,
        Arc::new(AppCtx {
            switch: switch.clone(),
            rec: rec.clone(),
            version,
            tsc_hz: clock.hz,
            exit: Box::new(move |cleanup| drop(tx_exit.send(Ev::Exit(cleanup)))),
        }),
    );
    {
        let rec = rec.clone();
        cmds.add(
            "rvs/mempool-show",
            "",
            0,
            0,
            Box::new(move |_| {
                use std::fmt::Write;
                let rec = rec.lock().map_err(|_| "lock poisoned")?;
                let mut out = String::new();
                for p in &pool_list {
                    let _ = writeln!(
                        out,
                        "NUMA node {}: pool {}: {} mbufs of {} bytes, {} free, {} in use; {} reserved by ports",
                        p.socket,
                        p.name,
                        p.size,
                        p.data_room,
                        p.avail(),
                        p.in_use(),
                        rec.budget.reserved(p.socket)
                    );
                }
                Ok(out)
            }),
        );
    }
    {
        let group = args.socket_group.clone();
        cmds.add(
            "rvs/access/show",
            "",
            0,
            0,
            Box::new(move |_| {
                Ok(format!(
                    "socket group: {}\nrefused connections: {}\n",
                    group.as_deref().unwrap_or("(none: root only)"),
                    rvs_control::access::REFUSED.load(Ordering::Relaxed)
                ))
            }),
        );
    }
    rvs_control::underlay::commands::register(&mut cmds, underlay, switch.clone(), rec.clone());
    {
        let (svc, rec) = (svc.clone(), rec.clone());
        cmds.add(
            "rvs/service/show",
            "",
            0,
            0,
            Box::new(move |_| {
                let bridges = bridge_handles(&*rec.lock().map_err(|_| "lock poisoned")?);
                Ok(svc.show(&bridges))
            }),
        );
    }
    {
        let sw = switch.clone();
        rvs_control::ctctl::register(
            &mut cmds,
            switch.ct.clone(),
            std::sync::Arc::new(move || sw.now_secs() as u64 * 1_000_000_000),
        );
    }
    unixctl::serve(&ctl.to_string_lossy(), Arc::new(cmds))?;
    info!("unixctl socket {}", ctl.display());
    let mut of = OfServer::new(&args.rundir, openflow_env(switch.clone()));

    let global_ops = |dpdk_version: &str| {
        vec![
            json!({"op": "update", "table": "Open_vSwitch", "where": [], "row": {
                "dpdk_initialized": true,
                "dpdk_version": dpdk_version,
                "datapath_types": datum::make_set(["netdev"]),
                "iface_types": datum::make_set(TYPES.iter().map(|t| t.to_string())),
            }}),
        ]
    };
    let mut connected = true;
    let mut dirty = true;
    let mut svc_dirty = false;
    conn.transact(global_ops(&dpdk_version));
    let mut interval = d.global.stats_interval();
    let mut next_stats = Instant::now();
    let mut last_attempt = Instant::now();
    let mut write_status = false;
    let mut cleanup = false;

    loop {
        let timeout = next_stats
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        let ev = rx.recv_timeout(timeout);
        let mut evs = Vec::new();
        match ev {
            Ok(e) => evs.push(e),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        evs.extend(rx.try_iter());
        let mut exit = false;
        for e in evs {
            match e {
                Ev::Exit(c) => {
                    exit = true;
                    cleanup |= c;
                }
                Ev::LinkChanged => write_status = true,
                Ev::DbClosed(why) => {
                    if connected {
                        warn!("database connection lost ({why}); forwarding goes on with the last configuration, reconnecting");
                        connected = false;
                    }
                }
                Ev::Db(m) => {
                    if !connected {
                        continue;
                    }
                    match m.get("method").and_then(|x| x.as_str()) {
                        Some("echo") => {
                            let _ = send(
                                &mut conn.w,
                                &json!({"id": m["id"], "result": m["params"], "error": null}),
                            );
                        }
                        Some("update") if m["params"][0] == store::MONITOR_ID => {
                            match svc_db.apply(&m["params"][1]) {
                                Ok(()) => svc_dirty = true,
                                Err(e) => warn!("ignored a malformed Rvs database update: {e}"),
                            }
                        }
                        Some("update") => match db.apply(&m["params"][1]) {
                            Ok(()) => dirty = true,
                            Err(e) => warn!("ignored a malformed database update: {e}"),
                        },
                        Some(_) => {}
                        None => {
                            let id = m.get("id").and_then(|i| i.as_u64());
                            if id == Some(conn.monitor_id) {
                                db = Db::default();
                                if let Err(e) = db.apply(&m["result"]) {
                                    warn!("malformed monitor reply: {e}");
                                }
                                dirty = true;
                            } else if id.is_some() && id == conn.svc_monitor_id {
                                svc_db = Db::default();
                                if !m["error"].is_null() {
                                    warn!(
                                        "the Rvs database refused rvsd's monitor: {}",
                                        m["error"]
                                    );
                                } else if let Err(e) = svc_db.apply(&m["result"]) {
                                    warn!("malformed Rvs monitor reply: {e}");
                                }
                                svc_dirty = true;
                            } else if !m["error"].is_null() {
                                warn!("database transaction failed: {}", m["error"]);
                            } else if let Some(res) = m["result"].as_array() {
                                for r in res.iter().filter(|r| r.get("error").is_some()) {
                                    warn!("database refused a write: {r}");
                                }
                            }
                        }
                    }
                }
            }
        }
        if exit {
            break;
        }
        if !connected && last_attempt.elapsed() >= Duration::from_secs(1) {
            last_attempt = Instant::now();
            if let Ok(c) = DbConn::connect(&db_path, &tx) {
                info!("reconnected to the database");
                conn = c;
                conn.monitor_services(&db_path, &args);
                connected = true;
                if let Ok(mut r) = rec.lock() {
                    r.forget_written();
                }
                conn.transact(global_ops(&dpdk_version));
            }
        }
        if connected && svc_dirty {
            svc.set_config(store::services(&svc_db));
        }
        if connected && (dirty || svc_dirty) {
            let d = desired(&db);
            interval = d.global.stats_interval();
            let mut r = rec.lock().map_err(|_| "lock poisoned")?;
            let ops = if dirty { r.apply(&d) } else { Vec::new() };
            of.sync(&openflow_bridges(&r));
            let bridges = bridge_handles(&r);
            drop(r);
            // Service flows follow the bridges (a new bridge gets its
            // rules) and the rules.
            svc.apply(&bridges);
            conn.transact(ops);
            conn.transact_services(store::cur_cfg_op(&svc_db).into_iter().collect());
            write_status |= dirty;
            dirty = false;
            svc_dirty = false;
        }
        if connected && (write_status || Instant::now() >= next_stats) {
            write_status = false;
            next_stats = Instant::now() + interval;
            let mut ops = rec.lock().map_err(|_| "lock poisoned")?.status_ops();
            for (uuid, up) in of.controller_status() {
                ops.push(rvs_control::db::update_op(
                    "Controller",
                    &uuid,
                    json!({ "is_connected": up }),
                ));
            }
            conn.transact(ops);
        }
    }

    info!("stopping: closing ports and PMD threads");
    of.shutdown();
    if let Ok(mut r) = rec.lock() {
        r.shutdown(cleanup);
    }
    for p in &switch.pmds {
        p.stop.store(true, Ordering::SeqCst);
    }
    for h in pmd_threads {
        let _ = h.join();
    }
    // Every port is closed and every PMD gone: each mbuf must be back in
    // its pool. Anything else is a leak worth a line in the log.
    for p in &exit_pools {
        let (free, size) = (p.avail(), p.size);
        if free == size {
            info!("mbuf pool {}: all {size} mbufs returned", p.name);
        } else {
            warn!(
                "mbuf pool {}: {free} of {size} mbufs returned, {} leaked",
                p.name,
                p.in_use()
            );
        }
    }
    let _ = std::fs::remove_file(&ctl);
    if let Some(pf) = pidfile {
        let _ = std::fs::remove_file(pf);
    }
    eal::cleanup();
    Ok(())
}
