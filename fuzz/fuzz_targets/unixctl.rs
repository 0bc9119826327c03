//! The unixctl request decoder: a byte stream as a client would send it,
//! framed as JSON-RPC and dispatched to commands. Every request gets a
//! reply or the stream an error; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs_control::jsonrpc::read_messages;
use rvs_control::unixctl::Commands;
use std::sync::OnceLock;

fn commands() -> &'static Commands {
    static C: OnceLock<Commands> = OnceLock::new();
    C.get_or_init(|| {
        let mut c = Commands::default();
        c.add("echo", "ARG...", 0, 4, Box::new(|a| Ok(a.join(" "))));
        c.add("fail", "", 0, 0, Box::new(|_| Err("refused".to_string())));
        c
    })
}

fuzz_target!(|data: &[u8]| {
    let c = commands();
    let _ = read_messages(std::io::Cursor::new(data), |req| {
        let reply = c.dispatch(&req);
        // A reply always carries exactly one of result and error.
        assert!(reply["result"].is_null() != reply["error"].is_null());
        true
    });
});
