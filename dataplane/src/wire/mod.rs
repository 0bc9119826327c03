//! Zero-copy views over frame bytes, in the manner of smoltcp's `wire`:
//! `new_checked` validates once what the accessors then read without checks.
pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gre;
pub mod ipv4;
pub mod l4;
pub mod vxlan;

pub use ethernet::{EthernetFrame, MacAddr};

/// The big-endian u16 at `at` (callers have checked the length).
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer is shorter than the header claims or needs.
    Truncated,
    /// A field holds a value the header cannot have (version, lengths).
    Malformed,
}
