//! The gateway end to end through real loopback sockets, on a real pipeline (journal on disk):
//! logins, own-account enforcement, malformed and truncated frames, slow readers, rate limits,
//! heartbeats, cancel-on-disconnect, drop copy, reply order in a burst, and a thousand idle
//! sessions.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringmatch_gateway::protocol::frame_type;
use ringmatch_gateway::{
    hash_token, responder, Client, ClientError, Credential, ErrorCode, Frame, Gateway,
    GatewayConfig, LoginOptions, Order,
};
use ringmatch_journal::{DamagePolicy, Durability, Journal, JournalConfig};
use ringmatch_matcher::{Engine, InstrumentSpec, Limits, MatcherConfig};
use ringmatch_pipeline::{NullSink, Pipeline, PipelineConfig, Retention, StageCores, WaitKind};
use ringmatch_proto::{CancelReason, EventType, OcoLeg, Reason, RejectReason, Side, TimeInForce};

const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    dir: tempfile::TempDir,
    pipeline: Option<Pipeline>,
    gateway: Option<Gateway>,
}

impl Harness {
    fn start(tweak: impl FnOnce(&mut GatewayConfig)) -> Harness {
        Harness::start_with(Durability::None, tweak)
    }

    fn start_with(durability: Durability, tweak: impl FnOnce(&mut GatewayConfig)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(
            JournalConfig {
                dir: dir.path().join("journal"),
                segment_size_bytes: 8 << 20,
                durability,
            },
            DamagePolicy::Refuse,
        )
        .unwrap();
        let engine = Engine::new(MatcherConfig {
            instruments: vec![InstrumentSpec {
                id: 1,
                symbol: "DEMO".into(),
                tick_size: 1,
                lot_size: 1,
                min_price: 1,
                max_price: 100_000,
                max_qty: 1_000_000,
                session_end_ns: None,
            }],
            limits: Limits {
                orders_per_book_max: 200_000,
                orders_max: 200_000,
                accounts_max: 100,
                instruments_max: 1,
                resends_max: 1_000,
            },
        })
        .unwrap();
        let metrics = std::sync::Arc::new(ringmatch_gateway::GatewayMetrics::default());
        let (router, registrations) = responder(std::sync::Arc::clone(&metrics));
        let pipeline = Pipeline::start_with_router(
            &PipelineConfig {
                input_ring_slots_count: 1 << 14,
                output_ring_slots_count: 1 << 16,
                wait: WaitKind::Phased,
                cores: StageCores::default(),
                snapshot_every_commands: 0,
                retention: Retention::Keep,
            },
            engine,
            journal,
            NullSink::default(),
            None,
            Some(Box::new(router)),
        )
        .unwrap();
        let mut credentials: Vec<Credential> = (1..=3)
            .map(|account| {
                Credential::parse(
                    account,
                    &hash_token(b"test-salt", format!("token-{account}").as_bytes()),
                    vec![],
                )
                .unwrap()
            })
            .collect();
        credentials.push(
            Credential::parse(900, &hash_token(b"other-salt", b"drop-copy"), vec![1, 2]).unwrap(),
        );
        let mut config = GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            frame_size_max_bytes: 1024,
            sessions_max: 2_000,
            session_commands_per_second_max: 1_000_000,
            session_queue_depth_max: 4_096,
            heartbeat_interval: Duration::from_millis(200),
            session_timeout: Duration::from_secs(5),
            credentials,
        };
        tweak(&mut config);
        let gateway = Gateway::start(config, pipeline.submitter(), registrations, metrics).unwrap();
        Harness {
            dir,
            pipeline: Some(pipeline),
            gateway: Some(gateway),
        }
    }

    fn address(&self) -> std::net::SocketAddr {
        self.gateway.as_ref().unwrap().local_addr()
    }

    fn login(&self, account: u32) -> Client {
        Client::connect(
            self.address(),
            account,
            format!("token-{account}").as_bytes(),
            LoginOptions::default(),
        )
        .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown(Duration::from_secs(5));
        }
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.shutdown();
        }
    }
}

fn server_error(result: Result<Client, ClientError>) -> u16 {
    match result {
        Err(ClientError::Server { code, .. }) => code,
        Err(other) => panic!("expected a server error, got {other}"),
        Ok(_) => panic!("expected a server error, got a session"),
    }
}

fn events_of(frames: &[Frame]) -> Vec<ringmatch_proto::Event> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            Frame::Event(event) => Some(*event),
            _ => None,
        })
        .collect()
}

#[test]
fn logins_are_checked_and_orders_before_login_refused() {
    let harness = Harness::start(|_| {});
    assert_eq!(
        server_error(Client::connect(
            harness.address(),
            1,
            b"wrong",
            LoginOptions::default()
        )),
        ErrorCode::LoginFailed as u16
    );
    assert_eq!(
        server_error(Client::connect(
            harness.address(),
            77,
            b"token-77",
            LoginOptions::default()
        )),
        ErrorCode::LoginFailed as u16
    );

    let mut raw = TcpStream::connect(harness.address()).unwrap();
    let mut bytes = Vec::new();
    ringmatch_gateway::encode_frame(
        &Frame::Command(ringmatch_proto::Command::limit(1, 1, Side::Buy, 10, 1)),
        &mut bytes,
    );
    raw.write_all(&bytes).unwrap();
    let reply = read_all(&mut raw);
    assert!(
        matches!(decode_first(&reply), Some(Frame::Error { code, .. }) if code == ErrorCode::NotLoggedIn as u16),
        "{reply:?}"
    );

    let mut client = harness.login(1);
    client
        .place(&Order::buy(1).limit(100).qty(5).client_order_id(42))
        .unwrap();
    let frames = client
        .recv_until(
            WAIT,
            |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Level),
        )
        .unwrap();
    assert!(
        matches!(
            frames[0],
            Frame::Ack {
                client_order_id: 42,
                seq: 1
            }
        ),
        "{frames:?}"
    );
    let events = events_of(&frames);
    assert_eq!(
        (
            events[0].event_type,
            events[0].account,
            events[0].client_order_id
        ),
        (EventType::Accepted, 1, 42)
    );
}

#[test]
fn a_session_acts_only_for_its_own_account() {
    let harness = Harness::start(|_| {});
    let mut alice = harness.login(1);
    let mut bob = harness.login(2);
    alice
        .place(&Order::sell(1).limit(500).qty(3).client_order_id(1))
        .unwrap();
    let frames = alice
        .recv_until(
            WAIT,
            |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Accepted),
        )
        .unwrap();
    let order_id = events_of(&frames)[0].order_id;
    // Bob names Alice's order, and even claims to be Alice: the gateway sends it as Bob's.
    let mut command = ringmatch_proto::Command::empty(ringmatch_proto::CommandType::Cancel);
    command.account = 1;
    command.order_id = order_id;
    bob.send(&command).unwrap();
    let frames = bob
        .recv_until(WAIT, |frame| matches!(frame, Frame::Event(_)))
        .unwrap();
    let rejected = events_of(&frames)[0];
    assert_eq!(
        (rejected.event_type, rejected.account, rejected.reason),
        (
            EventType::Rejected,
            2,
            Reason::Reject(RejectReason::NotYourOrder)
        )
    );
    // Bob buys from Alice: Alice, the maker, hears about the fill too.
    bob.place(&Order::buy(1).limit(500).qty(2).client_order_id(2))
        .unwrap();
    let frames = alice
        .recv_until(
            WAIT,
            |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Fill),
        )
        .unwrap();
    let fill = *events_of(&frames).last().unwrap();
    assert_eq!(
        (
            fill.maker_account,
            fill.account,
            fill.qty,
            fill.maker_remaining
        ),
        (1, 2, 2, 1)
    );
}

/// Alice's stop waits; Bob's trade at its stop price triggers it in Bob's command, and
/// Alice's session hears the trigger and the stop's own fill, as the taker.
/// A first trade at 500, `seller` to `buyer`, gives the instrument a last trade price.
fn first_trade_at_500(seller: &mut Client, buyer: &mut Client) {
    seller.place(&Order::sell(1).limit(500).qty(1)).unwrap();
    seller
        .recv_until(
            WAIT,
            |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Accepted),
        )
        .unwrap();
    buyer.place(&Order::buy(1).limit(500).qty(1)).unwrap();
    buyer
        .recv_until(
            WAIT,
            |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Fill),
        )
        .unwrap();
}

#[test]
fn a_stop_owner_hears_its_stop_trigger_in_another_session_s_command() {
    let harness = Harness::start(|_| {});
    let mut alice = harness.login(1);
    let mut bob = harness.login(2);
    let mut carol = harness.login(3);
    first_trade_at_500(&mut carol, &mut bob);
    alice
        .place(
            &Order::buy(1)
                .market()
                .stop(502)
                .qty(2)
                .tif(TimeInForce::Ioc),
        )
        .unwrap();
    let frames = alice
        .recv_until(
            WAIT,
            |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Accepted),
        )
        .unwrap();
    let stop = *events_of(&frames).last().unwrap();
    assert_eq!(stop.stop_kind, Some(ringmatch_proto::OrderKind::StopMarket));
    // Carol offers at 502 and 503; Bob buys 1 at 502, which reaches Alice's stop: it buys the
    // rest at 502 and 1 at 503.
    carol.place(&Order::sell(1).limit(502).qty(2)).unwrap();
    carol.place(&Order::sell(1).limit(503).qty(5)).unwrap();
    carol
        .recv_until(WAIT, |frame| {
            matches!(frame, Frame::Event(event)
                if event.event_type == EventType::Accepted && event.price == 503)
        })
        .unwrap();
    bob.place(&Order::buy(1).limit(502).qty(1)).unwrap();
    let frames = alice
        .recv_until(WAIT, |frame| {
            matches!(frame, Frame::Event(event)
                if event.event_type == EventType::Fill && event.price == 503)
        })
        .unwrap();
    let events = events_of(&frames);
    let triggered = events
        .iter()
        .find(|event| event.event_type == EventType::Triggered)
        .expect("alice hears her stop trigger");
    assert_eq!(
        (triggered.order_id, triggered.stop_price),
        (stop.order_id, 502)
    );
    let fills: Vec<(u64, i64, u64)> = events
        .iter()
        .filter(|event| event.event_type == EventType::Fill)
        .map(|event| (event.order_id, event.price, event.qty))
        .collect();
    assert_eq!(fills, [(stop.order_id, 502, 1), (stop.order_id, 503, 1)]);
}

/// An OCO placed over the wire: when another session trades with its limit leg, the owner
/// hears the fill and its stop leg's cancel (reason `oco`), in that session's command.
#[test]
fn an_oco_owner_hears_its_stop_leg_go_when_its_limit_leg_trades() {
    let harness = Harness::start(|_| {});
    let mut alice = harness.login(1);
    let mut bob = harness.login(2);
    let mut carol = harness.login(3);
    first_trade_at_500(&mut carol, &mut bob);
    alice
        .place(&Order::sell(1).limit(505).qty(3).oco_stop_limit(495, 494))
        .unwrap();
    let frames = alice
        .recv_until(WAIT, |frame| {
            matches!(frame, Frame::Event(event)
                if event.event_type == EventType::Accepted && event.oco_leg == Some(OcoLeg::Stop))
        })
        .unwrap();
    let legs: Vec<(u64, Option<OcoLeg>)> = events_of(&frames)
        .iter()
        .filter(|event| event.event_type == EventType::Accepted)
        .map(|event| (event.order_id, event.oco_leg))
        .collect();
    let [(limit_leg, Some(OcoLeg::Limit)), (stop_leg, Some(OcoLeg::Stop))] = legs[..] else {
        panic!("two legs accepted: {legs:?}");
    };
    assert_eq!(stop_leg, limit_leg + 1);
    bob.place(&Order::buy(1).limit(505).qty(1)).unwrap();
    let frames = alice
        .recv_until(WAIT, |frame| {
            matches!(frame, Frame::Event(event) if event.event_type == EventType::Cancelled)
        })
        .unwrap();
    let events = events_of(&frames);
    let fill = events
        .iter()
        .find(|event| event.event_type == EventType::Fill)
        .expect("alice hears her limit leg trade");
    assert_eq!((fill.maker_order_id, fill.qty), (limit_leg, 1));
    let cancelled = events.last().unwrap();
    assert_eq!(
        (cancelled.order_id, cancelled.reason, cancelled.seq),
        (stop_leg, Reason::Cancel(CancelReason::Oco), fill.seq)
    );
}

fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    use std::io::Read;
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

fn decode_first(bytes: &[u8]) -> Option<Frame> {
    match ringmatch_gateway::decode_frame(bytes, 1 << 16) {
        Ok(ringmatch_gateway::Decoded::Frame(frame, _)) => Some(frame),
        _ => None,
    }
}

#[test]
fn malformed_truncated_and_oversized_frames_end_only_their_own_session() {
    let harness = Harness::start(|_| {});
    let mut healthy = harness.login(3);
    let cases: Vec<(Vec<u8>, Option<ErrorCode>)> = vec![
        (
            vec![0xde, 0xad, 0xbe, 0xef, 0x01, 0x02],
            Some(ErrorCode::FrameTooLarge),
        ),
        (vec![0, 0, 0, 0], Some(ErrorCode::MalformedFrame)),
        (vec![1, 0, 0, 0, 99], Some(ErrorCode::MalformedFrame)),
        (
            vec![2, 0, 0, 0, frame_type::HEARTBEAT, 7],
            Some(ErrorCode::MalformedFrame),
        ),
        (
            {
                let mut bytes = vec![65, 0, 0, 0, frame_type::COMMAND];
                bytes.extend_from_slice(&[0xff; 64]);
                bytes
            },
            Some(ErrorCode::MalformedFrame),
        ),
        // Half a frame, then the client goes away.
        (vec![65, 0, 0, 0, frame_type::COMMAND, 1, 1], None),
    ];
    // Well-formed commands no client may send: the admin's snapshot and the cluster's term
    // record.
    let mut cases = cases;
    for command in [
        ringmatch_proto::Command::empty(ringmatch_proto::CommandType::Snapshot),
        ringmatch_proto::Command::term(3),
    ] {
        let mut bytes = vec![65, 0, 0, 0, frame_type::COMMAND];
        bytes.extend_from_slice(&command.to_bytes());
        cases.push((bytes, Some(ErrorCode::MalformedFrame)));
    }
    for (bytes, expected) in cases {
        let client = harness.login(1);
        let mut raw = client_stream(client);
        raw.write_all(&bytes).unwrap();
        match expected {
            Some(code) => {
                let reply = read_all(&mut raw);
                let error = frames_of(&reply)
                    .into_iter()
                    .find(|frame| matches!(frame, Frame::Error { .. }));
                assert!(
                    matches!(error, Some(Frame::Error { code: got, .. }) if got == code as u16),
                    "{bytes:?}: {reply:?}"
                );
            }
            None => drop(raw),
        }
    }
    // The healthy session never noticed.
    healthy
        .place(&Order::buy(1).limit(10).qty(1).client_order_id(5))
        .unwrap();
    let frames = healthy
        .recv_until(WAIT, |frame| matches!(frame, Frame::Event(_)))
        .unwrap();
    assert!(frames.iter().any(|frame| matches!(
        frame,
        Frame::Ack {
            client_order_id: 5,
            ..
        }
    )));
}

/// The logged-in connection of `client`, for a test that sends raw bytes on it.
fn client_stream(client: Client) -> TcpStream {
    // What arrived after the login (a heartbeat at most) is dropped: the test reads only the
    // answers to its own bytes.
    let (stream, _) = client.into_parts();
    stream
}

fn frames_of(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Ok(ringmatch_gateway::Decoded::Frame(frame, length)) =
        ringmatch_gateway::decode_frame(bytes, 1 << 16)
    {
        frames.push(frame);
        bytes = &bytes[length..];
    }
    frames
}

#[test]
fn a_session_that_does_not_read_is_dropped_without_slowing_others() {
    let harness = Harness::start(|config| config.session_queue_depth_max = 64);
    let mut slow = harness.login(1);
    let mut other = harness.login(2);
    let mut dropped = false;
    for index in 0..200_000u64 {
        if slow
            .place(
                &Order::buy(1)
                    .limit(1 + (index % 1_000) as i64)
                    .qty(1)
                    .client_order_id(index + 1),
            )
            .is_err()
        {
            dropped = true;
            break;
        }
        if index % 5_000 == 0 {
            if let Ok(frames) = other.recv_until(Duration::from_millis(1), |_| false) {
                drop(frames);
            }
        }
    }
    // Reading now shows the end: an error frame (slow consumer) or a closed connection.
    let mut saw_end = dropped;
    while !saw_end {
        match slow.recv(WAIT) {
            Ok(Some(Frame::Error { code, .. })) => {
                assert_eq!(code, ErrorCode::SlowConsumer as u16);
                saw_end = true;
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the slow session was never dropped"),
            Err(_) => saw_end = true,
        }
    }
    // Once dropped, the slow session's commands are no longer taken: the engine saw far
    // fewer than the 200,000 it tried to send.
    let taken = harness
        .pipeline
        .as_ref()
        .unwrap()
        .metrics()
        .input_published_seq
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("commands taken from the slow session: {taken}");
    assert!(
        dropped && taken < 150_000,
        "{taken} commands taken, dropped: {dropped}"
    );
    other
        .place(&Order::sell(1).limit(99_000).qty(1).client_order_id(7))
        .unwrap();
    let frames = other
        .recv_until(
            WAIT,
            |frame| matches!(frame, Frame::Event(event) if event.client_order_id == 7),
        )
        .unwrap();
    assert!(!frames.is_empty());
}

/// A client that only waits in `recv` sends heartbeats by itself, so its session outlives
/// many session timeouts; `try_recv` never waits and still sees every reply.
#[test]
fn a_waiting_client_heartbeats_by_itself_and_try_recv_never_waits() {
    let harness = Harness::start(|config| config.session_timeout = Duration::from_millis(600));
    let mut client = harness.login(1);
    let until = Instant::now() + Duration::from_millis(2_000);
    while Instant::now() < until {
        match client.recv(Duration::from_millis(250)).unwrap() {
            None | Some(Frame::Heartbeat) => {}
            Some(other) => panic!("the session ended: {other:?}"),
        }
    }
    let started = Instant::now();
    let polled = client.try_recv().unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(polled, None | Some(Frame::Heartbeat)),
        "{polled:?}"
    );
    client
        .place(&Order::buy(1).limit(10).qty(1).client_order_id(77))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match client.try_recv().unwrap() {
            Some(Frame::Ack {
                client_order_id: 77,
                ..
            }) => break,
            Some(_) => {}
            None => {
                assert!(Instant::now() < deadline, "no ack");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    // A usage error is refused here, sent to nobody.
    assert!(matches!(
        client.place(&Order::buy(1).qty(1)),
        Err(ClientError::Usage(_))
    ));
}

#[test]
fn the_rate_limit_throttles_and_heartbeats_keep_sessions_alive() {
    let harness = Harness::start(|config| {
        config.session_commands_per_second_max = 50;
        config.session_timeout = Duration::from_millis(600);
    });
    let mut client = harness.login(1);
    for index in 0..200u64 {
        client
            .place(&Order::buy(1).limit(10).qty(1).client_order_id(index + 1))
            .unwrap();
    }
    let mut throttled = 0;
    let mut acked = 0;
    while let Ok(Some(frame)) = client.recv(Duration::from_millis(300)) {
        match frame {
            Frame::Throttled { .. } => throttled += 1,
            Frame::Ack { .. } => acked += 1,
            _ => {}
        }
        if throttled + acked == 200 {
            break;
        }
    }
    assert_eq!(throttled + acked, 200);
    assert!(
        throttled >= 100 && acked >= 50,
        "throttled {throttled}, acked {acked}"
    );

    // A session that heartbeats stays; a silent one is dropped after the timeout.
    let mut silent = harness.login(2);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(200));
        client.heartbeat().unwrap();
    }
    let frames = silent.recv_until(WAIT, |frame| matches!(frame, Frame::Error { .. }));
    assert!(
        matches!(frames.as_deref(), Ok([.., Frame::Error { code, .. }]) if *code == ErrorCode::Timeout as u16),
        "{frames:?}"
    );
    client
        .place(&Order::buy(1).limit(11).qty(1).client_order_id(999))
        .unwrap();
    assert!(client
        .recv_until(WAIT, |frame| matches!(
            frame,
            Frame::Ack {
                client_order_id: 999,
                ..
            } | Frame::Throttled {
                client_order_id: 999
            }
        ))
        .is_ok());
}

#[test]
fn cancel_on_disconnect_and_drop_copy() {
    let harness = Harness::start(|_| {});
    let mut drop_copy = Client::connect(
        harness.address(),
        900,
        b"drop-copy",
        LoginOptions::default(),
    )
    .unwrap();
    let mut careful = Client::connect(
        harness.address(),
        1,
        b"token-1",
        LoginOptions {
            cancel_on_disconnect: true,
        },
    )
    .unwrap();
    let mut casual = harness.login(2);
    careful
        .place(&Order::buy(1).limit(100).qty(1).client_order_id(1))
        .unwrap();
    careful
        .place(&Order::buy(1).limit(101).qty(1).client_order_id(2))
        .unwrap();
    casual
        .place(&Order::sell(1).limit(200).qty(1).client_order_id(3))
        .unwrap();
    careful.recv_until(WAIT, |frame| matches!(frame, Frame::Event(event) if event.client_order_id == 2 && event.event_type == EventType::Accepted)).unwrap();
    casual
        .recv_until(
            WAIT,
            |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Accepted),
        )
        .unwrap();
    drop(careful);
    drop(casual);
    // The drop copy sees both accounts' orders, then account 1's orders cancelled on
    // disconnect, and account 2's order still there (no cancel for it).
    let frames = drop_copy
        .recv_until(WAIT, |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Cancelled && event.client_order_id == 2))
        .unwrap();
    let events = events_of(&frames);
    let accepted: Vec<(u32, u64)> = events
        .iter()
        .filter(|e| e.event_type == EventType::Accepted)
        .map(|e| (e.account, e.client_order_id))
        .collect();
    assert!(
        accepted.contains(&(1, 1)) && accepted.contains(&(1, 2)) && accepted.contains(&(2, 3)),
        "{accepted:?}"
    );
    let cancelled: Vec<u64> = events
        .iter()
        .filter(|e| e.reason == Reason::Cancel(CancelReason::MassCancel))
        .map(|e| e.client_order_id)
        .collect();
    assert_eq!(cancelled, vec![1, 2]);
    assert!(!events
        .iter()
        .any(|e| e.event_type == EventType::Cancelled && e.account == 2));
    // A drop-copy session is read-only.
    drop_copy
        .place(&Order::buy(1).limit(1).qty(1).client_order_id(1))
        .unwrap();
    let frames = drop_copy
        .recv_until(WAIT, |frame| matches!(frame, Frame::Error { .. }))
        .unwrap();
    assert!(
        matches!(frames.last(), Some(Frame::Error { code, .. }) if *code == ErrorCode::ReadOnlySession as u16)
    );
}

#[test]
fn a_command_is_acknowledged_before_any_of_its_events_even_in_a_burst() {
    // 10,000 commands (fewer than the input ring holds) in one write: the gateway submits them back to back while the engine
    // answers the first ones, so a command's events can reach the session's queue before its
    // ack. The client must still see the ack first, for every command. (The queue holds
    // every reply: the client reads only after writing the whole burst.)
    let harness = Harness::start(|config| config.session_queue_depth_max = 100_000);
    let mut client = harness.login(1);
    let count = 10_000u64;
    let mut burst = Vec::new();
    for index in 0..count {
        let mut command =
            ringmatch_proto::Command::limit(1, 1, Side::Buy, 1 + (index % 50_000) as i64, 1);
        command.client_order_id = index + 1;
        burst.push(command);
    }
    client.send_batch(&burst).unwrap();
    let mut acked = std::collections::HashSet::new();
    let mut accepted = 0u64;
    while accepted < count {
        let frame = client
            .recv(WAIT)
            .unwrap()
            .expect("replies before the timeout");
        match frame {
            Frame::Ack { seq, .. } => assert!(acked.insert(seq), "two acks for {seq}"),
            Frame::Event(event) => {
                assert!(
                    acked.contains(&event.seq),
                    "an event of command {} (client order id {}) came before its ack",
                    event.seq,
                    event.client_order_id
                );
                if event.event_type == EventType::Accepted {
                    accepted += 1;
                }
            }
            Frame::Heartbeat => {}
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert_eq!(acked.len() as u64, count);
}

/// An ack is a promise: it leaves only once the Journaler has synced the command, and the
/// command is in the journal under the acknowledged sequence. Under `every` each command is
/// synced on its own, so a burst of commands keeps the journal busy for a while: protocol
/// version 1, which acknowledged a command once it was on the input ring, sent nearly every
/// ack of the burst before its command was synced.
#[test]
fn an_ack_leaves_only_once_its_command_is_synced() {
    let mut harness = Harness::start_with(Durability::Every, |_| {});
    let metrics = harness.pipeline.as_ref().unwrap().metrics();
    let mut client = harness.login(1);
    let count = 200u64;
    let mut burst = Vec::new();
    let mut sent = std::collections::HashMap::new();
    for index in 0..count {
        let mut command = ringmatch_proto::Command::limit(1, 1, Side::Buy, 1 + index as i64, 1);
        command.client_order_id = 1_000 + index;
        sent.insert(command.client_order_id, command);
        burst.push(command);
    }
    client.send_batch(&burst).unwrap();
    let mut acked = Vec::new();
    while (acked.len() as u64) < count {
        match client
            .recv(WAIT)
            .unwrap()
            .expect("replies before the timeout")
        {
            Frame::Ack {
                client_order_id,
                seq,
            } => {
                let synced = metrics.stage_seq[ringmatch_pipeline::Stage::Journaled as usize]
                    .load(std::sync::atomic::Ordering::Acquire);
                assert!(
                    synced >= seq,
                    "the ack of sequence {seq} arrived while the journal was synced only to \
                     {synced}"
                );
                acked.push((seq, client_order_id));
            }
            Frame::Event(_) | Frame::Heartbeat => {}
            other => panic!("unexpected reply {other:?}"),
        }
    }
    drop(client);
    if let Some(gateway) = harness.gateway.take() {
        gateway.shutdown(Duration::from_secs(5));
    }
    if let Some(pipeline) = harness.pipeline.take() {
        pipeline.shutdown();
    }
    let first_seq = acked.iter().map(|(seq, _)| *seq).min().unwrap();
    let journaled: std::collections::HashMap<u64, ringmatch_proto::Command> =
        ringmatch_journal::JournalReader::open(&harness.dir.path().join("journal"), first_seq)
            .unwrap()
            .map(|record| {
                let record = record.unwrap();
                (record.seq, record.command)
            })
            .collect();
    for (seq, client_order_id) in acked {
        let stored = journaled
            .get(&seq)
            .expect("every acknowledged sequence is journaled");
        assert_eq!(stored.client_order_id, client_order_id);
        assert_eq!(stored.price, sent[&client_order_id].price);
    }
}

#[test]
fn a_thousand_idle_sessions_and_a_busy_one() {
    let harness = Harness::start(|config| config.session_timeout = Duration::from_secs(30));
    let idle: Vec<Client> = (0..1_000)
        .map(|index| harness.login(1 + index % 3))
        .collect();
    assert_eq!(harness.gateway.as_ref().unwrap().sessions_count(), 1_000);
    let mut busy = harness.login(3);
    for index in 0..1_000u64 {
        busy.place(
            &Order::buy(1)
                .limit(1 + index as i64)
                .qty(1)
                .client_order_id(index + 1),
        )
        .unwrap();
    }
    busy.recv_until(WAIT, |frame| matches!(frame, Frame::Event(event) if event.client_order_id == 1_000 && event.event_type == EventType::Accepted)).unwrap();
    drop(idle);
}

#[test]
fn a_session_that_neither_reads_nor_closes_is_ended_when_its_queue_fills() {
    let harness = Harness::start(|config| {
        config.session_queue_depth_max = 64;
        config.session_timeout = Duration::from_secs(60);
    });
    let mut stuck = harness.login(1);
    let gateway = harness.gateway.as_ref().unwrap();
    assert_eq!(gateway.sessions_count(), 1);
    // Send until the server gives up on the session (the kernel's buffers, then 64 frames'
    // worth of queue, fill with its replies); never read, never close.
    let mut index = 0u64;
    while index < 2_000_000
        && stuck
            .place(
                &Order::buy(1)
                    .limit(1 + (index % 1_000) as i64)
                    .qty(1)
                    .client_order_id(index + 1),
            )
            .is_ok()
    {
        index += 1;
        if index % 10_000 == 0 && gateway.sessions_count() == 0 {
            break;
        }
    }
    // The server ends the session by itself, without the client reading a byte.
    let deadline = Instant::now() + WAIT;
    while gateway.sessions_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        gateway.sessions_count(),
        0,
        "the stuck session is still open"
    );
    drop(stuck);
}
