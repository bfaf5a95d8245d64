//! The stages as plain state machines, one per module, each with a method per command or
//! event and one at the end of each ring batch. None of them reads the clock, starts a thread
//! or touches a file except through its port; the time they record is handed to them. The
//! ring runtime (`crate::Pipeline`) drives them in production, and the simulator
//! (`crates/sim`) drives the same structs step by step over simulated storage.

mod journaler;
mod matcher;
mod publisher;
mod replicator;
mod responder;
mod snapshot_writer;

pub use journaler::Journaler;
pub use matcher::{FrozenSnapshot, Matcher, SnapshotRequest};
pub use publisher::Publisher;
pub use replicator::Replicator;
pub use responder::{EventRouter, Responder};
pub use snapshot_writer::{SnapshotWriter, Written};
