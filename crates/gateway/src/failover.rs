//! A session that survives the loss of its server: it reconnects (to a cluster's new leader,
//! or to a restarted single node) and resends, as possible resends, the places the server had
//! not acknowledged. The engine answers a resend it already took with the original's outcome
//! (`resent`), never with a second order (`docs/order-entry-protocol.md`, "Resending after a
//! lost connection").
//!
//! It keeps what it tracks in memory only. An application that must also survive its own
//! restart stores, with each place it sends, the floor that place was sent under
//! ([`FailoverClient::highest_acked_seq`] read just before the send), and after a restart
//! hands the places it holds no ack for to [`FailoverClient::resend`] with their floors
//! (0 when it kept none: never a second order, but `resend_unknown` once the engine's resend
//! window has forgotten anything). What it deliberately does not know: where the application
//! keeps its orders, and whether a cancel or replace whose ack it never saw took effect.
//!
//! What it tracks: places with a non-zero client order id, from the moment they are sent
//! until their ack (or a `throttled` / `busy` refusal). Each remembers its resend floor, the
//! highest sequence acknowledged to this client before it was first sent. Other commands are
//! passed on and not resent: after a reconnect, a cancel or replace whose ack did not arrive
//! may or may not have happened, which `open_orders` tells (a command whose own write failed
//! is written again on the new session, as it never left). A place is marked as a possible
//! resend only when sent again: the engine can tell a resend from its original only when
//! the original comes first, so a client must not resend while its old connection may still
//! deliver to a live server. This one resends only after the old session failed, or after
//! `silence_max` without a byte from a server that may still be alive; in that second case
//! an original still queued on the old connection can reach the engine after its resend and
//! be placed too (a known limit). A `throttled` or `busy` refusal
//! names only a client order id, so a refused cancel that names its order by client order id
//! also ends the tracking of that order's place if it is still in flight (that place is then
//! not resent).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ringmatch_proto::{Command, CommandType};

use crate::client::{Client, ClientError, LoginOptions};
use crate::protocol::{ErrorCode, Frame};

/// Where and how a [`FailoverClient`] connects.
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// Order-entry addresses (`HOST:PORT`), tried in turn: every member of a cluster, or
    /// the one address of a single node.
    pub addresses: Vec<String>,
    /// The account to log in as.
    pub account: u32,
    /// Its token.
    pub token: Vec<u8>,
    /// Login options.
    pub login: LoginOptions,
    /// How long a reconnect may take before the client gives up
    /// ([`ClientError::Timeout`]).
    pub reconnect_for: Duration,
    /// How long a live session may stay silent (not even a heartbeat) before the client
    /// takes it for dead and reconnects; at least three of the server's heartbeat intervals.
    pub silence_max: Duration,
}

impl FailoverOptions {
    /// Options with a 30 s reconnect budget and a 5 s silence limit.
    pub fn new(addresses: Vec<String>, account: u32, token: &[u8]) -> FailoverOptions {
        FailoverOptions {
            addresses,
            account,
            token: token.to_vec(),
            login: LoginOptions::default(),
            reconnect_for: Duration::from_secs(30),
            silence_max: Duration::from_secs(5),
        }
    }
}

/// A place sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    command: Command,
    resend_floor: u64,
}

/// A session that reconnects and resends; see the module documentation.
pub struct FailoverClient {
    options: FailoverOptions,
    client: Option<Client>,
    /// The address the last `not_leader` answer named, tried first.
    leader_hint: Option<String>,
    next_address: usize,
    in_flight: VecDeque<InFlight>,
    highest_acked_seq: u64,
    reconnects_count: u64,
    resends_count: u64,
    last_heard: Instant,
    last_sent: Instant,
}

impl FailoverClient {
    /// Connects (following `not_leader` answers) and logs in.
    pub fn connect(options: FailoverOptions) -> Result<FailoverClient, ClientError> {
        assert!(!options.addresses.is_empty(), "no address to connect to");
        let mut client = FailoverClient {
            options,
            client: None,
            leader_hint: None,
            next_address: 0,
            in_flight: VecDeque::new(),
            highest_acked_seq: 0,
            reconnects_count: 0,
            resends_count: 0,
            last_heard: Instant::now(),
            last_sent: Instant::now(),
        };
        client.reconnect()?;
        client.reconnects_count = 0;
        Ok(client)
    }

    /// The address of the current session's server, if connected.
    pub fn connected_to(&self) -> Option<String> {
        self.client
            .as_ref()
            .and_then(|client| client.peer_address().ok())
    }

    /// Times the client lost its session and made a new one.
    pub fn reconnects_count(&self) -> u64 {
        self.reconnects_count
    }

    /// Places sent again, as possible resends, after a reconnect.
    pub fn resends_count(&self) -> u64 {
        self.resends_count
    }

    /// Places sent and not answered yet.
    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// The highest sequence acknowledged to this client: the resend floor of a place sent
    /// now. An application that keeps its orders across its own restarts stores this value,
    /// read before the send, with each place (see [`FailoverClient::resend`]).
    pub fn highest_acked_seq(&self) -> u64 {
        self.highest_acked_seq
    }

    /// The places sent and not answered yet, oldest first, each with its resend floor.
    pub fn in_flight(&self) -> impl Iterator<Item = (&Command, u64)> {
        self.in_flight
            .iter()
            .map(|sent| (&sent.command, sent.resend_floor))
    }

    /// Sends, as a possible resend, a place that an earlier client (an earlier run of this
    /// process, say) sent and never saw answered, under the resend floor it was first sent
    /// with: the highest sequence acknowledged to that client before the send, or 0 if that
    /// is not known (0 is always safe: the engine then answers with the original's outcome
    /// while its resend window holds it, and `resend_unknown` once the window has forgotten
    /// any place, never with a second order). The earlier client's connection must be gone
    /// (its process ended), so that the original, if it was sent, reached the engine first.
    /// The place is tracked like any other and resent again, with the same floor, after a
    /// reconnect. Only a place with a client order id can be resent.
    pub fn resend(&mut self, command: &Command, resend_floor: u64) -> Result<(), ClientError> {
        if command.command_type != CommandType::Place || command.client_order_id == 0 {
            return Err(ClientError::Usage(
                "only a place with a client order id can be resent".to_string(),
            ));
        }
        let mut original = *command;
        original.possible_resend = false;
        self.track(original, resend_floor)?;
        if self.write_tracked(&original.as_resend(resend_floor))? {
            self.resends_count += 1;
        }
        Ok(())
    }

    /// Sends a command (the server sets its account and timestamp). A place with a client
    /// order id is tracked until answered and resent after a reconnect; two such places in
    /// flight may not share a client order id. A lost connection is repaired first.
    pub fn send(&mut self, command: &Command) -> Result<(), ClientError> {
        let tracked = command.command_type == CommandType::Place && command.client_order_id != 0;
        if !tracked {
            return self.write(command, false).map(|_| ());
        }
        let mut original = *command;
        original.possible_resend = false;
        self.track(original, self.highest_acked_seq)?;
        self.write_tracked(command).map(|_| ())
    }

    /// Starts tracking a place (unless its client order id is already in flight).
    fn track(&mut self, command: Command, resend_floor: u64) -> Result<(), ClientError> {
        if self
            .in_flight
            .iter()
            .any(|sent| sent.command.client_order_id == command.client_order_id)
        {
            return Err(ClientError::Usage(format!(
                "client order id {} is already in flight",
                command.client_order_id
            )));
        }
        self.in_flight.push_back(InFlight {
            command,
            resend_floor,
        });
        Ok(())
    }

    /// Writes the place just tracked; if it could not be sent at all, it is not tracked.
    fn write_tracked(&mut self, command: &Command) -> Result<bool, ClientError> {
        let written = self.write(command, true);
        if written.is_err() {
            // Not sent: the caller is told, and nothing resends it later.
            self.in_flight.pop_back();
        }
        written
    }

    /// Writes a command, repairing a lost session first: true if written on the session it
    /// found, false if a tracked place was written by a reconnect (which resends every
    /// tracked place).
    fn write(&mut self, command: &Command, tracked: bool) -> Result<bool, ClientError> {
        loop {
            let result = match self.client.as_mut() {
                Some(client) => client.send(command),
                None => Err(ClientError::Closed),
            };
            match result {
                Ok(()) => {
                    self.last_sent = Instant::now();
                    return Ok(true);
                }
                // The reconnect resends every tracked place, this one included.
                Err(error) if is_session_loss(&error) => {
                    self.reconnect()?;
                    if tracked {
                        return Ok(false);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The next frame, waiting at most `timeout`; Ok(None) on timeout. Heartbeats are sent
    /// as needed and not returned. A lost session is replaced (and the tracked places resent)
    /// within the call; the frames the old session still had queued are lost with it.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Frame>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Never shorter than three of the server's heartbeat intervals.
            let silence_max = self.options.silence_max.max(
                3 * self
                    .client
                    .as_ref()
                    .map_or(Duration::ZERO, Client::heartbeat_interval),
            );
            if self.client.is_none() || now.duration_since(self.last_heard) > silence_max {
                self.reconnect()?;
                continue;
            }
            let heartbeat_every = self
                .client
                .as_ref()
                .map_or(Duration::from_secs(1), Client::heartbeat_interval)
                / 2;
            if now.duration_since(self.last_sent) >= heartbeat_every {
                let sent = self.client.as_mut().map(Client::heartbeat);
                match sent {
                    Some(Ok(())) => self.last_sent = now,
                    Some(Err(error)) if is_session_loss(&error) => {
                        self.reconnect()?;
                        continue;
                    }
                    Some(Err(error)) => return Err(error),
                    None => {}
                }
            }
            let wait = (deadline - now)
                .min(heartbeat_every.max(Duration::from_millis(1)))
                .min(silence_max);
            let received = match self.client.as_mut() {
                Some(client) => client.recv(wait),
                None => continue,
            };
            match received {
                Ok(None) => continue,
                Ok(Some(frame)) => {
                    self.last_heard = Instant::now();
                    match frame {
                        Frame::Heartbeat => continue,
                        Frame::Error { code, text } => {
                            if let Some(hint) = leader_address(code, &text) {
                                self.leader_hint = Some(hint);
                            }
                            self.client = None;
                            self.reconnect()?;
                            continue;
                        }
                        frame => {
                            self.note(&frame);
                            return Ok(Some(frame));
                        }
                    }
                }
                Err(error) if is_session_loss(&error) => {
                    self.client = None;
                    self.reconnect()?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Logs out and closes.
    pub fn logout(mut self) -> Result<(), ClientError> {
        match self.client.take() {
            Some(client) => client.logout(),
            None => Ok(()),
        }
    }

    /// Bookkeeping for an answer.
    fn note(&mut self, frame: &Frame) {
        match *frame {
            Frame::Ack {
                client_order_id,
                seq,
            } => {
                self.highest_acked_seq = self.highest_acked_seq.max(seq);
                self.forget(client_order_id);
            }
            Frame::Throttled { client_order_id } | Frame::Busy { client_order_id } => {
                self.forget(client_order_id);
            }
            _ => {}
        }
    }

    fn forget(&mut self, client_order_id: u64) {
        if client_order_id == 0 {
            return;
        }
        if let Some(index) = self
            .in_flight
            .iter()
            .position(|sent| sent.command.client_order_id == client_order_id)
        {
            self.in_flight.remove(index);
        }
    }

    /// A new session: tries the leader hint, then each address in turn, until one takes the
    /// login or `reconnect_for` passes; then resends every tracked place.
    fn reconnect(&mut self) -> Result<(), ClientError> {
        self.client = None;
        let give_up_at = Instant::now() + self.options.reconnect_for;
        loop {
            let address = match self.leader_hint.take() {
                Some(hint) => hint,
                None => {
                    let address = self.options.addresses[self.next_address].clone();
                    self.next_address = (self.next_address + 1) % self.options.addresses.len();
                    address
                }
            };
            let error = match Client::connect(
                address.as_str(),
                self.options.account,
                &self.options.token,
                self.options.login.clone(),
            ) {
                Ok(client) => {
                    self.client = Some(client);
                    break;
                }
                Err(ClientError::Server { code, text }) => {
                    match ErrorCode::from_code(code) {
                        Some(ErrorCode::NotLeader | ErrorCode::ShuttingDown) => {}
                        // A refused login will not pass on another try.
                        _ => return Err(ClientError::Server { code, text }),
                    }
                    self.leader_hint = leader_address(code, &text);
                    ClientError::Server { code, text }
                }
                Err(error) => error,
            };
            if Instant::now() >= give_up_at {
                return Err(error);
            }
            if self.leader_hint.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.reconnects_count += 1;
        self.last_heard = Instant::now();
        self.last_sent = Instant::now();
        let resends: Vec<Command> = self
            .in_flight
            .iter()
            .map(|sent| sent.command.as_resend(sent.resend_floor))
            .collect();
        for command in resends {
            let sent = match self.client.as_mut() {
                Some(client) => client.send(&command),
                None => Err(ClientError::Closed),
            };
            match sent {
                Ok(()) => self.resends_count += 1,
                // Lost again: the next call reconnects and resends what is still in flight.
                Err(error) if is_session_loss(&error) => {
                    self.client = None;
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Whether an error means the session is gone (and a new one may work).
fn is_session_loss(error: &ClientError) -> bool {
    matches!(error, ClientError::Io(_) | ClientError::Closed)
}

/// The leader's order-entry address from a `not_leader` error text, if it names one.
fn leader_address(code: u16, text: &str) -> Option<String> {
    if ErrorCode::from_code(code) != Some(ErrorCode::NotLeader) {
        return None;
    }
    let (_, address) = text.rsplit_once("order entry at ")?;
    let address = address.trim();
    (!address.is_empty()).then(|| address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_address_comes_from_a_not_leader_text() {
        assert_eq!(
            leader_address(
                11,
                "not the leader: node 2 leads, order entry at 127.0.0.1:8722"
            ),
            Some("127.0.0.1:8722".to_string())
        );
        assert_eq!(
            leader_address(11, "not the leader: no leader is known yet"),
            None
        );
        assert_eq!(leader_address(10, "order entry at 127.0.0.1:1"), None);
    }
}
