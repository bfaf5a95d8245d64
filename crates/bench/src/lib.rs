//! The benchmark drivers of ringmatch: the matcher alone beside the naive book
//! (`matcher_bench`), the pipeline flat out and open-loop against the crossbeam baseline, the
//! restart and the snapshot pause (`pipeline_bench`), the Kafka output (`kafka_bench`), and the
//! order-entry load generator with its echo baseline (`loadgen`). Latency is recorded in HDR
//! histograms from each command's intended send time and written as `.hgrm`, `.hlog` and SVG
//! files (`report`).
//!
//! It drives the engine through its public crates only; it knows nothing of the configuration
//! file or the command line, which `ringmatch-server` maps onto these options.

pub mod kafka_bench;
pub mod loadgen;
pub mod matcher_bench;
pub mod pacing;
pub mod pipeline_bench;
pub mod report;
pub mod stream_file;
