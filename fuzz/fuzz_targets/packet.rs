//! The packet parser and the tunnel classifier on arbitrary bytes: every
//! frame parses or is refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs_dataplane::flow::extract::extract;
use rvs_dataplane::tunnel::decap::{classify, Terminates, Verdict};
use rvs_dataplane::tunnel::encap::inner_hash;

/// Terminates everything: every GRE/VXLAN-looking frame goes all the way
/// through the classifier.
struct All;
impl Terminates for All {
    fn is_local(&self, _: u32) -> bool {
        true
    }
    fn gre(&self) -> bool {
        true
    }
    fn udp_port(&self, _: u16) -> bool {
        true
    }
}

fuzz_target!(|frame: &[u8]| {
    if let Ok((_key, off)) = extract(frame, 1, None) {
        let _ = off;
    }
    if let Verdict::Tunnel(o) = classify(frame, &All) {
        // What the classifier says lies inside the frame.
        assert!(o.strip + o.trim + 14 <= frame.len());
        let _ = extract(&frame[o.strip..frame.len() - o.trim], 2, None);
    }
    let _ = inner_hash(frame);
});
