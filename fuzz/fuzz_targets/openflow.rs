//! The OpenFlow decoder against a hostile controller: arbitrary messages
//! on a session (hello, flow and group mods, stats, packet-outs, Nicira
//! extensions), each answered or refused; then fixed frames run through
//! whatever flows it managed to install.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs_control::openflow::conn::Session;
use rvs_control::openflow::{Bridge, Env, PortInfo};
use rvs_dataplane::snapshot::BridgeFlows;
use std::sync::{Arc, Mutex};

#[path = "lab.rs"]
mod lab;

fn bridge(flows: Arc<BridgeFlows>) -> Arc<Bridge> {
    let env = Env {
        ports: Box::new(|_| {
            (1..=3)
                .map(|p| PortInfo {
                    ofport: p,
                    name: format!("p{p}"),
                    link_up: true,
                    admin_up: true,
                    ..Default::default()
                })
                .collect()
        }),
        quiesce: Box::new(|| {}),
        now_ns: Box::new(|| 1_000_000_000),
    };
    Arc::new(Bridge {
        name: "br0".into(),
        datapath_id: 1,
        flows,
        env: Arc::new(env),
        protocols: Mutex::new(Vec::new()),
        subscribers: Mutex::default(),
    })
}

const FRAMES: [&[u8]; 3] = [
    // UDP 10.0.0.1:12345 -> 10.0.0.99:53
    &[
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0, 0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0x66, 0x5d,
        10, 0, 0, 1, 10, 0, 0, 99, 0x30, 0x39, 0, 53, 0, 12, 0, 0, b'a', b'b', b'c', b'd',
    ],
    // ARP request
    &[
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 8, 6, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0,
        0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ],
    // 802.1Q-tagged IPv4 with a bad checksum
    &[
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0, 0, 5, 8, 0, 0x45, 0, 0, 20, 0, 1, 0, 0, 1, 6,
        0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ],
];

fuzz_target!(|data: &[u8]| {
    let flows = BridgeFlows::new(0);
    let b = bridge(flows.clone());
    let mut s = Session::new(b.clone());
    let mut rest = data;
    while rest.len() >= 8 {
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        if len < 8 || len > rest.len() {
            break; // the server hangs up on an unframeable message
        }
        if s.handle(&rest[..len]).is_err() {
            break;
        }
        rest = &rest[len..];
    }
    b.publish();
    let mut l = lab::Lab::new(flows);
    for (i, f) in FRAMES.iter().enumerate() {
        l.run(i, &[f]);
    }
});
