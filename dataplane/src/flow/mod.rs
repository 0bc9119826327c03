//! The OpenFlow flow table: keys and matches (`key`), frame parsing into
//! keys (`extract`), the wildcard classifier, rules and groups, the
//! control-side tables that apply flow_mods (`table`), translation of a key
//! through the pipeline into datapath ops (`xlate`), the per-PMD exact-match
//! cache (`cache`) and the header rewrites ops perform (`rewrite`).
pub mod action;
pub mod cache;
pub mod classifier;
pub mod extract;
pub mod key;
pub mod rewrite;
pub mod rule;
pub mod table;
pub mod xlate;
