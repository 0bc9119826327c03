//! rvsd's control plane: the OVSDB client that keeps a replica of the
//! Open_vSwitch database, the reconciliation that converges the dataplane to
//! it, the unixctl server behind ovs-appctl, and start-up (EAL, pools, PMDs).
#![deny(unsafe_code)]

pub mod access;
pub mod appctl;
pub mod budget;
pub mod config;
pub mod ctctl;
pub mod datum;
pub mod db;
pub mod eal_args;
pub mod jsonrpc;
pub mod logger;
pub mod openflow;
pub mod pidfile;
pub mod ports;
pub mod reconcile;
pub mod service;
pub mod underlay;
pub mod unixctl;
