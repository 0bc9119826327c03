//! A small stderr logger in OVS's format (timestamp|module|level|message).
use log::{Level, LevelFilter, Metadata, Record};
use std::io::Write;

struct Logger {
    level: LevelFilter,
}

impl log::Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }
    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let lvl = match r.level() {
            Level::Error => "ERR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DBG",
            Level::Trace => "TRACE",
        };
        let module = r
            .module_path()
            .unwrap_or("rvsd")
            .rsplit("::")
            .next()
            .unwrap_or("rvsd");
        let _ = writeln!(
            std::io::stderr(),
            "{}.{:03}|{}|{}|{}",
            now.as_secs(),
            now.subsec_millis(),
            module,
            lvl,
            r.args()
        );
    }
    fn flush(&self) {}
}

pub fn init(level: LevelFilter) {
    let _ = log::set_boxed_logger(Box::new(Logger { level }));
    log::set_max_level(level);
}
