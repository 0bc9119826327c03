//! JSON-RPC 1.0 over a unix stream socket, as OVSDB (RFC 7047) and OVS's
//! unixctl speak it: a stream of concatenated JSON objects, no framing.
use serde_json::Value;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;

/// Reads messages from `stream` until EOF or a syntax error, handing each to
/// `f`; returns why it stopped.
pub fn read_messages(stream: impl std::io::Read, mut f: impl FnMut(Value) -> bool) -> String {
    let reader = BufReader::new(stream);
    let mut it = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
    loop {
        match it.next() {
            None => return "connection closed".into(),
            Some(Err(e)) => return format!("bad JSON-RPC message: {e}"),
            Some(Ok(v)) => {
                if !f(v) {
                    return "stopped".into();
                }
            }
        }
    }
}

pub fn send(stream: &mut UnixStream, msg: &Value) -> std::io::Result<()> {
    let mut b = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    b.push(b'\n');
    stream.write_all(&b)
}

/// The socket path of an OVS-style `unix:PATH` remote.
pub fn unix_path(remote: &str) -> Result<&str, String> {
    remote
        .strip_prefix("unix:")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("--db {remote:?}: only unix:PATH remotes are supported"))
}
