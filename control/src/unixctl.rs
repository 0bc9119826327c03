//! OVS's unixctl protocol (JSON-RPC on a unix socket), so that the real
//! `ovs-appctl -t <socket> COMMAND ARGS...` talks to rvsd.
use crate::jsonrpc::{read_messages, send};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

pub type Handler = Box<dyn Fn(&[String]) -> Result<String, String> + Send + Sync>;

pub struct Command {
    pub usage: &'static str,
    pub min_args: usize,
    pub max_args: usize,
    pub handler: Handler,
}

#[derive(Default)]
pub struct Commands {
    map: BTreeMap<String, Command>,
}

impl Commands {
    pub fn add(
        &mut self,
        name: &str,
        usage: &'static str,
        min_args: usize,
        max_args: usize,
        handler: Handler,
    ) {
        self.map.insert(
            name.into(),
            Command {
                usage,
                min_args,
                max_args,
                handler,
            },
        );
    }

    pub fn list(&self) -> String {
        let mut s = String::from("The available commands are:\n");
        for (n, c) in &self.map {
            s.push_str(&format!("  {:<32}{}\n", n, c.usage));
        }
        s
    }

    /// Runs one request; the reply is a complete JSON-RPC response.
    pub fn dispatch(&self, req: &Value) -> Value {
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let err = |msg: String| json!({"id": id, "result": null, "error": msg});
        let Some(method) = req.get("method").and_then(|m| m.as_str()) else {
            return err("request has no \"method\" string".into());
        };
        let params = match req.get("params") {
            Some(Value::Array(a)) => a,
            _ => return err("request \"params\" must be an array of strings".into()),
        };
        let mut args = Vec::with_capacity(params.len());
        for p in params {
            match p.as_str() {
                Some(s) => args.push(s.to_string()),
                None => return err("request \"params\" must be an array of strings".into()),
            }
        }
        if method == "list-commands" {
            return json!({"id": id, "result": self.list(), "error": null});
        }
        let Some(c) = self.map.get(method) else {
            return err(format!("\"{method}\" is not a valid command (use \"list-commands\" to see a list of valid commands)"));
        };
        if args.len() < c.min_args {
            return err(format!(
                "\"{method}\" command requires at least {} arguments",
                c.min_args
            ));
        }
        if args.len() > c.max_args {
            return err(format!(
                "\"{method}\" command takes at most {} arguments",
                c.max_args
            ));
        }
        match (c.handler)(&args) {
            Ok(r) => json!({"id": id, "result": r, "error": null}),
            Err(e) => err(e),
        }
    }
}

/// Serves `cmds` on `path` until the process exits; one thread per client
/// (ovs-appctl clients are few and short-lived).
pub fn serve(path: &str, cmds: Arc<Commands>) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on unixctl socket {path}: {e}"))?;
    crate::access::secure(std::path::Path::new(path))?;
    std::thread::Builder::new()
        .name("unixctl".into())
        .spawn(move || {
            for conn in l.incoming().flatten() {
                if !crate::access::allows(&conn, "unixctl") {
                    continue;
                }
                let cmds = cmds.clone();
                let _ = std::thread::Builder::new()
                    .name("unixctl-conn".into())
                    .spawn(move || client(conn, &cmds));
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn client(conn: UnixStream, cmds: &Commands) {
    let Ok(mut w) = conn.try_clone() else { return };
    let why = read_messages(conn, |req| send(&mut w, &cmds.dispatch(&req)).is_ok());
    if why.starts_with("bad") {
        // Tell the client why before hanging up; the socket keeps serving others.
        let _ = send(&mut w, &json!({"id": null, "result": null, "error": why}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_checks_arguments_and_names() {
        let mut c = Commands::default();
        c.add("echo", "ARG", 1, 1, Box::new(|a| Ok(a[0].clone())));
        assert_eq!(
            c.dispatch(&json!({"id": 1, "method": "echo", "params": ["x"]}))["result"],
            "x"
        );
        assert!(
            c.dispatch(&json!({"id": 1, "method": "echo", "params": []}))["error"]
                .as_str()
                .unwrap()
                .contains("at least 1")
        );
        assert!(
            c.dispatch(&json!({"id": 1, "method": "nope", "params": []}))["error"]
                .as_str()
                .unwrap()
                .contains("not a valid command")
        );
        assert!(
            c.dispatch(&json!({"id": 1, "method": "echo", "params": [1]}))["error"]
                .as_str()
                .unwrap()
                .contains("array of strings")
        );
        assert!(
            c.dispatch(&json!({"id": 1, "method": "list-commands", "params": []}))["result"]
                .as_str()
                .unwrap()
                .contains("echo")
        );
    }
}
