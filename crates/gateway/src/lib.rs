//! TCP order entry for ringmatch: the session protocol (`docs/order-entry-protocol.md`), the
//! gateway server that puts sessions' commands on the input ring, the Responder stage that
//! routes events back to sessions, and the client library (orders built by name, heartbeats
//! sent by themselves, waiting or polling receives, and a session that reconnects and resends
//! across a failover).
//!
//! The gateway runs on its own tokio runtime thread; engine threads never run async code.
//! Sessions log in with an account and a token (stored only as salted SHA-256 hashes), act only
//! for their own account, and are bounded in frame size, command rate and outbound queue depth;
//! a session that breaks a rule is told why and disconnected, never able to slow the engine or
//! other sessions.
//!
//! This crate knows nothing of Kafka, journals or matching rules: it moves wire records.

pub mod auth;
pub mod client;
pub mod failover;
pub mod metrics;
pub mod order;
pub mod output;
pub mod protocol;
pub mod responder;
pub mod server;

pub use auth::{hash_token, Credential};
pub use client::{Client, ClientError, LoginOptions};
pub use failover::{FailoverClient, FailoverOptions};
pub use metrics::{GatewayMetrics, SessionEnd};
pub use order::{Order, Replace};
pub use output::SessionOutput;
pub use protocol::{decode_frame, encode_frame, Decoded, ErrorCode, Frame, FrameError};
pub use responder::{responder, Registration, Responder};
pub use server::{Gateway, GatewayConfig};
