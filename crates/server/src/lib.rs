//! The `ringmatch` service and tools: configuration, the command line, the service itself
//! (`serve`: recovery, pipeline, admin HTTP), the operator tools and the JSON-lines scripting
//! format. The benchmark drivers are `ringmatch-bench`; the command line maps onto them.
//!
//! This crate is the top of the dependency graph and the only one that knows about the
//! command line, configuration files and the process's standard streams. The matching rules
//! themselves live in `ringmatch-matcher`; this crate only wires inputs to them.

mod admin;
pub mod cluster;
pub mod config;
pub mod failover_bench;
pub mod logging;
pub mod script;
pub mod serve;
mod shadow;
mod signals;
pub mod tools;
