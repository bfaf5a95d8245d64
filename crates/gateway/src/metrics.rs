//! What the gateway counts: sessions, logins, refusals, how sessions ended, and wire-to-wire
//! latency (from the gateway's ingress stamp on a command to its `ack` being written to the
//! session's socket).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use ringmatch_pipeline::new_histogram;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client logged out.
    Logout,
    /// The client closed its connection.
    Closed,
    /// Nothing arrived within the session timeout.
    Timeout,
    /// Its outbound queue filled: it did not read its replies.
    SlowConsumer,
    /// The server is stopping.
    ShuttingDown,
    /// It broke the protocol (a malformed or oversized frame, a forbidden command).
    ProtocolError,
}

impl SessionEnd {
    /// Every reason, in the order of [`GatewayMetrics::session_ends`].
    pub const ALL: [SessionEnd; 6] = [
        SessionEnd::Logout,
        SessionEnd::Closed,
        SessionEnd::Timeout,
        SessionEnd::SlowConsumer,
        SessionEnd::ShuttingDown,
        SessionEnd::ProtocolError,
    ];

    /// Its name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            SessionEnd::Logout => "logout",
            SessionEnd::Closed => "closed",
            SessionEnd::Timeout => "timeout",
            SessionEnd::SlowConsumer => "slow_consumer",
            SessionEnd::ShuttingDown => "shutting_down",
            SessionEnd::ProtocolError => "protocol_error",
        }
    }
}

/// The gateway's counters, shared by its sessions, its Responder and the admin surface.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused because the gateway had its maximum number of sessions.
    pub connections_refused: AtomicU64,
    /// Sessions logged in now.
    pub sessions_active: AtomicU64,
    /// Logins accepted.
    pub logins_accepted: AtomicU64,
    /// Logins refused (unknown account, wrong token, wrong version, no login in time).
    pub logins_refused: AtomicU64,
    /// Commands put on the input ring.
    pub commands: AtomicU64,
    /// Commands refused by the session's rate limit.
    pub throttled: AtomicU64,
    /// Commands refused because the input ring was full.
    pub busy: AtomicU64,
    /// Sessions ended, by [`SessionEnd`] (in the order of [`SessionEnd::ALL`]).
    pub session_ends: [AtomicU64; 6],
    /// Wire-to-wire latency of each acknowledged command (nanoseconds).
    pub wire_to_wire: Mutex<Histogram<u64>>,
    /// The exact sum of `wire_to_wire` (nanoseconds).
    pub wire_to_wire_sum_ns: AtomicU64,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics {
            connections: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            sessions_active: AtomicU64::new(0),
            logins_accepted: AtomicU64::new(0),
            logins_refused: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            session_ends: std::array::from_fn(|_| AtomicU64::new(0)),
            wire_to_wire: Mutex::new(new_histogram()),
            wire_to_wire_sum_ns: AtomicU64::new(0),
        }
    }
}

impl GatewayMetrics {
    /// Counts a session's end.
    pub fn session_ended(&self, end: SessionEnd) {
        let index = SessionEnd::ALL
            .iter()
            .position(|candidate| *candidate == end)
            .expect("ALL holds every reason");
        self.session_ends[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Sessions ended for `end`.
    pub fn sessions_ended(&self, end: SessionEnd) -> u64 {
        let index = SessionEnd::ALL
            .iter()
            .position(|candidate| *candidate == end)
            .expect("ALL holds every reason");
        self.session_ends[index].load(Ordering::Relaxed)
    }
}
