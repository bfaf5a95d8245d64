//! The `ringmatch` service and tools: configuration, the command line, the service itself
//! (`serve`: recovery, pipeline, admin HTTP), the operator tools, the JSON-lines scripting
//! format and the benchmark drivers.
//!
//! This crate is the top of the dependency graph and the only one that knows about the
//! command line, configuration files and the process's standard streams. The matching rules
//! themselves live in `ringmatch-matcher`; this crate only wires inputs to them.

pub mod bench;
pub mod config;
pub mod kafka_bench;
pub mod loadgen;
pub mod pipeline_bench;
pub mod script;
pub mod serve;
pub mod tools;
