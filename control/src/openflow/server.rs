//! Listeners on `<rundir>/<bridge>.mgmt` (one thread per bridge, one per
//! session), and the flow-timer thread that expires idle/hard timeouts and
//! applies what learn actions ask for.
use super::conn::{hello, Session};
use super::wire::{Header, HEADER_LEN};
use super::{Bridge, Env};
use rvs_dataplane::flow::table::{Command, FlowMod};
use rvs_dataplane::snapshot::BridgeFlows;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a session may keep changes unpublished while more requests
/// keep arriving (a bulk add-flows publishes this often, not per message).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

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
    stop: Arc<AtomicBool>,
    timer: Option<JoinHandle<()>>,
}

/// What a bridge brings: its tables, datapath id and allowed versions.
pub struct BridgeDesc {
    pub flows: Arc<BridgeFlows>,
    pub datapath_id: u64,
    pub protocols: Vec<String>,
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
            let _ = sock.set_nonblocking(true);
            let stop = Arc::new(AtomicBool::new(false));
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
    }

    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
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
            Ok((s, _)) => {
                let (bridge, stop) = (bridge.clone(), stop.clone());
                if let Ok(h) = std::thread::Builder::new()
                    .name(format!("rvs-ofc-{}", bridge.name))
                    .spawn(move || serve(s, bridge, stop))
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
fn serve(mut s: UnixStream, bridge: Arc<Bridge>, stop: Arc<AtomicBool>) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(&hello(&bridge.protocols())).is_err() {
        return;
    }
    let mut sess = Session::new(bridge.clone());
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    let mut last_publish = Instant::now();
    'outer: while !stop.load(Ordering::SeqCst) {
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

fn more_pending(s: &UnixStream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
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
            let mut t = b.flows.tables.lock().unwrap_or_else(|e| e.into_inner());
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
