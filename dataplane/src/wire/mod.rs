//! Zero-copy views over frame bytes, in the manner of smoltcp's `wire`.
pub mod ethernet;

pub use ethernet::{EthernetFrame, MacAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer is shorter than the header claims or needs.
    Truncated,
}
