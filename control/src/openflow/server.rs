//! Listeners on `<rundir>/<bridge>.mgmt` (one thread per bridge, one per
//! session), and the flow-timer thread that expires idle/hard timeouts and
//! applies what learn actions ask for.
use super::conn::{hello, Session};
use super::wire::{Header, HEADER_LEN};
use super::{Bridge, Env};
use rvs_dataplane::flow::table::{Command, FlowMod};
use rvs_dataplane::snapshot::{BridgeFlows, PacketIn};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a session may keep changes unpublished while more requests
/// keep arriving (a bulk add-flows publishes this often, not per message).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// What an OpenFlow session runs over: a unix or TCP stream.
pub trait Stream: Read + Write + AsRawFd + Send + 'static {
    fn set_timeout(&self, d: Duration) -> std::io::Result<()>;
}

impl Stream for UnixStream {
    fn set_timeout(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}

impl Stream for TcpStream {
    fn set_timeout(&self, d: Duration) -> std::io::Result<()> {
        let _ = self.set_nodelay(true);
        self.set_read_timeout(Some(d))
    }
}

/// An active connection to a controller (Bridge `controller`): connects,
/// serves the session, and reconnects every second after it ends.
struct Active {
    target: String,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connected session, ready to be served.
type Connected = Box<dyn FnOnce(Arc<Bridge>, Arc<AtomicBool>, Option<PacketIns>) + Send>;

/// Packet-ins for one controller session.
type PacketIns = crossbeam_channel::Receiver<Arc<PacketIn>>;

fn connect(target: &str) -> std::io::Result<Connected> {
    if let Some(path) = target.strip_prefix("unix:") {
        let s = UnixStream::connect(path)?;
        return Ok(Box::new(move |b, stop, pin| serve(s, b, stop, pin)));
    }
    if let Some(addr) = target.strip_prefix("tcp:") {
        use std::net::ToSocketAddrs;
        // OVS's default controller port when none is given.
        let addr = if addr
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            addr.to_string()
        } else {
            format!("{addr}:6653")
        };
        let sa = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "no address"))?;
        let s = TcpStream::connect_timeout(&sa, Duration::from_secs(1))?;
        return Ok(Box::new(move |b, stop, pin| serve(s, b, stop, pin)));
    }
    Err(std::io::Error::new(
        ErrorKind::Unsupported,
        format!("controller target {target:?}: rvs connects to tcp:IP[:PORT] and unix:PATH"),
    ))
}

fn active_loop(
    target: String,
    bridge: Arc<Bridge>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let mut warned = false;
    while !stop.load(Ordering::SeqCst) {
        match connect(&target) {
            Ok(run) => {
                log::info!("{}: connected to controller {target}", bridge.name);
                warned = false;
                connected.store(true, Ordering::SeqCst);
                let (tx, rx) = crossbeam_channel::bounded(1024);
                bridge.subscribe(tx);
                bridge.flows.controllers_up.fetch_add(1, Ordering::SeqCst);
                run(bridge.clone(), stop.clone(), Some(rx));
                bridge.flows.controllers_up.fetch_sub(1, Ordering::SeqCst);
                connected.store(false, Ordering::SeqCst);
                log::info!("{}: controller {target} disconnected", bridge.name);
            }
            Err(e) if !warned => {
                log::warn!(
                    "{}: controller {target}: {e}; retrying every second",
                    bridge.name
                );
                warned = true;
            }
            Err(_) => {}
        }
        for _ in 0..10 {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

struct Listener {
    bridge: Arc<Bridge>,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

pub struct OfServer {
    rundir: PathBuf,
    env: Arc<Env>,
    listeners: Arc<Mutex<BTreeMap<String, Listener>>>,
    /// Controller connections by Controller row uuid.
    actives: Mutex<BTreeMap<String, Active>>,
    stop: Arc<AtomicBool>,
    timer: Option<JoinHandle<()>>,
}

/// What a bridge brings: its tables, datapath id and allowed versions.
pub struct BridgeDesc {
    pub flows: Arc<BridgeFlows>,
    pub datapath_id: u64,
    pub protocols: Vec<String>,
    /// (Controller row uuid, target).
    pub controllers: Vec<(String, String)>,
}

impl OfServer {
    pub fn new(rundir: &Path, env: Env) -> OfServer {
        let listeners: Arc<Mutex<BTreeMap<String, Listener>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let env = Arc::new(env);
        let timer = {
            let (listeners, stop) = (listeners.clone(), stop.clone());
            std::thread::Builder::new()
                .name("rvs-flowtimer".into())
                .spawn(move || flow_timer(listeners, stop))
                .expect("spawn flow timer")
        };
        OfServer {
            rundir: rundir.to_path_buf(),
            env,
            listeners,
            actives: Mutex::default(),
            stop,
            timer: Some(timer),
        }
    }

    /// Makes the listeners match the bridges: new bridges get a socket,
    /// removed ones lose theirs (and their sessions).
    pub fn sync(&self, bridges: &BTreeMap<String, BridgeDesc>) {
        let mut ls = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        ls.retain(|name, l| {
            bridges
                .get(name)
                .is_some_and(|b| Arc::ptr_eq(&b.flows, &l.bridge.flows))
        });
        for (name, b) in bridges {
            if let Some(l) = ls.get(name) {
                *l.bridge.protocols.lock().unwrap_or_else(|e| e.into_inner()) = b.protocols.clone();
                continue;
            }
            let bridge = Arc::new(Bridge {
                name: name.clone(),
                datapath_id: b.datapath_id,
                flows: b.flows.clone(),
                env: self.env.clone(),
                protocols: Mutex::new(b.protocols.clone()),
                subscribers: Mutex::default(),
            });
            let path = self.rundir.join(format!("{name}.mgmt"));
            let _ = std::fs::remove_file(&path);
            let sock = match UnixListener::bind(&path) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("{name}: cannot listen on {}: {e}", path.display());
                    continue;
                }
            };
            if let Err(e) = crate::access::secure(&path) {
                log::error!("{name}: {e}");
                continue;
            }
            let _ = sock.set_nonblocking(true);
            let stop = Arc::new(AtomicBool::new(false));
            {
                let (bridge, stop) = (bridge.clone(), stop.clone());
                let _ = std::thread::Builder::new()
                    .name(format!("rvs-pktin-{name}"))
                    .spawn(move || dispatch_packet_ins(bridge, stop));
            }
            let thread = {
                let (bridge, stop) = (bridge.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("rvs-of-{name}"))
                    .spawn(move || accept_loop(sock, bridge, stop))
                    .ok()
            };
            log::info!("{name}: OpenFlow on unix:{}", path.display());
            ls.insert(
                name.clone(),
                Listener {
                    bridge,
                    path,
                    stop,
                    thread,
                },
            );
        }
        let mut act = self.actives.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: BTreeMap<&str, (&str, &str)> = bridges
            .iter()
            .flat_map(|(n, b)| {
                b.controllers
                    .iter()
                    .map(move |(u, t)| (u.as_str(), (n.as_str(), t.as_str())))
            })
            .collect();
        act.retain(|u, a| wanted.get(u.as_str()).is_some_and(|w| w.1 == a.target));
        for (uuid, (br, target)) in wanted {
            if act.contains_key(uuid) {
                continue;
            }
            let Some(l) = ls.get(br) else { continue };
            let (connected, stop) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let thread = {
                let (t, b, c, s) = (
                    target.to_string(),
                    l.bridge.clone(),
                    connected.clone(),
                    stop.clone(),
                );
                std::thread::Builder::new()
                    .name(format!("rvs-ctl-{br}"))
                    .spawn(move || active_loop(t, b, c, s))
                    .ok()
            };
            act.insert(
                uuid.to_string(),
                Active {
                    target: target.to_string(),
                    connected,
                    stop,
                    thread,
                },
            );
        }
    }

    /// (Controller row uuid, is_connected) for every controller.
    pub fn controller_status(&self) -> Vec<(String, bool)> {
        self.actives
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(u, a)| (u.clone(), a.connected.load(Ordering::SeqCst)))
            .collect()
    }

    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
        self.actives
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Drop for OfServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(sock: UnixListener, bridge: Arc<Bridge>, stop: Arc<AtomicBool>) {
    let mut sessions: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match sock.accept() {
            Ok((s, _)) if !crate::access::allows(&s, &bridge.name) => drop(s),
            Ok((s, _)) => {
                let (bridge, stop) = (bridge.clone(), stop.clone());
                if let Ok(h) = std::thread::Builder::new()
                    .name(format!("rvs-ofc-{}", bridge.name))
                    .spawn(move || serve(s, bridge, stop, None))
                {
                    sessions.push(h);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                log::warn!("{}: OpenFlow accept: {e}", bridge.name);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        sessions.retain(|h| !h.is_finished());
    }
    for h in sessions {
        let _ = h.join();
    }
}

/// One session until the peer closes, sends something unframeable, or
/// the bridge goes away.
fn serve<S: Stream>(mut s: S, bridge: Arc<Bridge>, stop: Arc<AtomicBool>, pin: Option<PacketIns>) {
    // A controller session also waits for packet-ins: poll its socket
    // often enough that they go out promptly.
    let tick = if pin.is_some() { 10 } else { 200 };
    let _ = s.set_timeout(Duration::from_millis(tick));
    if s.write_all(&hello(&bridge.protocols())).is_err() {
        return;
    }
    let mut sess = Session::new(bridge.clone());
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    let mut last_publish = Instant::now();
    'outer: while !stop.load(Ordering::SeqCst) {
        if let Some(rx) = &pin {
            let mut out = Vec::new();
            for p in rx.try_iter() {
                if sess.version != 0 {
                    out.extend_from_slice(&sess.packet_in(&p));
                }
            }
            if !out.is_empty() && s.write_all(&out).is_err() {
                break;
            }
        }
        let n = match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if sess.dirty {
                    bridge.publish();
                    sess.dirty = false;
                    last_publish = Instant::now();
                }
                continue;
            }
            Err(_) => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        let mut out: Vec<u8> = Vec::new();
        while let Some(h) = Header::parse(&buf[at..]) {
            let len = h.length as usize;
            if len < HEADER_LEN {
                log::warn!(
                    "{}: OpenFlow message with length {len}: closing",
                    bridge.name
                );
                break 'outer;
            }
            if buf.len() - at < len {
                break;
            }
            match sess.handle(&buf[at..at + len]) {
                Ok(replies) => {
                    for r in replies {
                        out.extend_from_slice(&r);
                    }
                }
                Err(_) => break 'outer,
            }
            at += len;
        }
        buf.drain(..at);
        if sess.dirty && (last_publish.elapsed() >= PUBLISH_EVERY || !more_pending(&s)) {
            bridge.publish();
            sess.dirty = false;
            last_publish = Instant::now();
        }
        if !out.is_empty() && s.write_all(&out).is_err() {
            break;
        }
    }
    if sess.dirty {
        bridge.publish();
    }
}

/// Hands each packet-in the PMDs queued to every connected controller
/// session of the bridge.
fn dispatch_packet_ins(bridge: Arc<Bridge>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let got = {
            let rx = bridge
                .flows
                .packet_in_rx
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            rx.recv_timeout(Duration::from_millis(100))
        };
        if let Ok(p) = got {
            bridge.deliver(Arc::new(p));
        }
    }
}

fn more_pending<S: Stream>(s: &S) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    let mut b = [0u8; 1];
    let r = recv(
        s.as_raw_fd(),
        &mut b,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    );
    matches!(r, Ok(n) if n > 0)
}

/// Every 200 ms: applies learned flows and removes expired ones, then
/// publishes what changed.
fn flow_timer(listeners: Arc<Mutex<BTreeMap<String, Listener>>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let bridges: Vec<Arc<Bridge>> = listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|l| l.bridge.clone())
            .collect();
        for b in bridges {
            let now_ns = b.now_ns();
            let now_s = (now_ns / 1_000_000_000) as u32;
            let mut t = b.tables();
            let rx = b.flows.learned_rx.lock().unwrap_or_else(|e| e.into_inner());
            while let Ok(l) = rx.try_recv() {
                let f = &l.flow;
                let same = t
                    .find(f.table, &f.m, f.priority)
                    .is_some_and(|r| r.actions[..] == f.actions[..]);
                if same {
                    // A learned flow seen again: refresh, without a new
                    // pipeline (cached translations stay valid).
                    if let Some(r) = t.find(f.table, &f.m, f.priority) {
                        r.stats.hit(0, 0, now_s);
                    }
                    continue;
                }
                let mut fm = FlowMod::add(f.table, f.priority, f.m, f.actions.clone());
                fm.command = Command::Add;
                fm.idle_timeout = f.idle_timeout;
                fm.hard_timeout = f.hard_timeout;
                fm.cookie = f.cookie;
                if let Err(e) = t.flow_mod(&fm, now_ns) {
                    log::warn!("{}: learned flow refused: {e:?}", b.name);
                }
            }
            drop(rx);
            let gone = t.expire(now_ns);
            if !gone.is_empty() {
                log::debug!("{}: {} flows expired", b.name, gone.len());
            }
            b.flows.publish(&mut t, || (b.env.quiesce)());
        }
    }
}
