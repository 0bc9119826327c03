//! The OpenFlow endpoint ovs-ofctl (and controllers) talk to: framing
//! (`wire`), errors, NXM/OXM matches (`oxm`), OpenFlow 1.0's fixed match
//! (`ofp10`), actions and instructions, per-connection message handling
//! (`conn`) and the per-bridge listeners (`server`).
pub mod actions;
pub mod error;
pub mod ofp10;
pub mod oxm;
pub mod wire;
