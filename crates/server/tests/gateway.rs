//! Order entry through `ringmatch serve`: clients log in over TCP, rest orders, the service is
//! killed with kill -9, restarted, and the clients reconnect and act on the orders they had:
//! the restored order state is what the journal says.

mod support;

use std::time::Duration;

use ringmatch_gateway::{hash_token, Client, Frame, LoginOptions, Order, Replace};
use ringmatch_proto::{CancelReason, EventType, Reason, Side};
use support::{field, stdout, Setup};

fn setup() -> Setup {
    let logins: String = (1..=2)
        .map(|account| {
            format!(
                "[[gateway.logins]]\naccount = {account}\ntoken_hash = \"{}\"\n",
                hash_token(b"test-salt-1234", format!("token-{account}").as_bytes())
            )
        })
        .collect();
    Setup::new(&format!(
        "[gateway]\nenabled = true\nlisten = \"127.0.0.1:0\"\n{logins}"
    ))
}

fn connect(port: u16, account: u32) -> Client {
    Client::connect(
        ("127.0.0.1", port),
        account,
        format!("token-{account}").as_bytes(),
        LoginOptions::default(),
    )
    .unwrap()
}

fn accepted_order_id(client: &mut Client, client_order_id: u64) -> u64 {
    let frames = client
        .recv_until(Duration::from_secs(10), |frame| {
            matches!(frame, Frame::Event(event) if event.event_type == EventType::Accepted && event.client_order_id == client_order_id)
        })
        .unwrap();
    match frames.last() {
        Some(Frame::Event(event)) => event.order_id,
        other => panic!("{other:?}"),
    }
}

/// (order id, client order id, side, price, total qty, open qty) of an order-status event.
type OrderState = (u64, u64, Option<Side>, i64, u64, u64);

fn state_of(event: &ringmatch_proto::Event) -> OrderState {
    (
        event.order_id,
        event.client_order_id,
        event.side,
        event.price,
        event.qty,
        event.remaining,
    )
}

/// Replays the journal on a fresh matcher and asks it for the account's open orders.
fn open_orders_in_journal(setup: &Setup, account: u32) -> Vec<OrderState> {
    let config = ringmatch_server::config::Config::load(&setup.config).unwrap();
    let mut engine = ringmatch_matcher::Engine::new(config.matcher()).unwrap();
    let mut events = Vec::new();
    let mut last_seq = 0;
    for record in ringmatch_journal::JournalReader::open(&config.journal_dir(), 1).unwrap() {
        let Ok(record) = record else { break };
        engine.apply(record.seq, &record.command, &mut events);
        last_seq = record.seq;
    }
    let mut query = ringmatch_proto::Command::empty(ringmatch_proto::CommandType::OpenOrders);
    query.account = account;
    let mut answer = Vec::new();
    engine.apply(last_seq + 1, &query, &mut answer);
    answer
        .iter()
        .filter(|event| event.event_type == EventType::OrderStatus)
        .map(state_of)
        .collect()
}

fn open_orders_of(client: &mut Client) -> Vec<OrderState> {
    client.open_orders(0).unwrap();
    let frames = client
        .recv_until(Duration::from_secs(10), |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::OpenOrdersEnd))
        .unwrap();
    frames
        .iter()
        .filter_map(|frame| match frame {
            Frame::Event(event) if event.event_type == EventType::OrderStatus => {
                Some(state_of(event))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn orders_survive_kill_9_and_reconnecting_clients_act_on_them() {
    let setup = setup();
    let server = setup.start(&[]);
    let port = server.gateway_port.expect("gateway port in the log");
    let mut alice = connect(port, 1);
    let mut bob = connect(port, 2);
    alice
        .place(&Order::buy(1).limit(100).qty(5).client_order_id(11))
        .unwrap();
    let alice_order = accepted_order_id(&mut alice, 11);
    bob.place(&Order::sell(1).limit(120).qty(7).client_order_id(21))
        .unwrap();
    let bob_order = accepted_order_id(&mut bob, 21);
    // Bob's second order trades 2 against Alice's bid before the crash.
    bob.place(&Order::sell(1).limit(100).qty(2).client_order_id(22))
        .unwrap();
    alice
        .recv_until(
            Duration::from_secs(10),
            |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Fill),
        )
        .unwrap();
    server.kill9();

    let expected_hash = field(&stdout(&setup.tool(&["journal", "verify"])), "state_hash");
    let expected_orders = [
        open_orders_in_journal(&setup, 1),
        open_orders_in_journal(&setup, 2),
    ];
    assert_eq!(expected_orders[0].len(), 1, "{expected_orders:?}");
    assert_eq!(expected_orders[1].len(), 1, "{expected_orders:?}");
    let server = setup.start(&[]);
    assert_eq!(server.recovered_hash(), expected_hash);
    let port = server.gateway_port.unwrap();
    let mut alice = connect(port, 1);
    let mut bob = connect(port, 2);
    // Reconnected clients see exactly the open orders the journal says they have.
    assert_eq!(open_orders_of(&mut alice), expected_orders[0]);
    assert_eq!(open_orders_of(&mut bob), expected_orders[1]);
    // Alice's bid is still there with 3 left; Bob's ask at 120 with all 7.
    alice.cancel(alice_order).unwrap();
    let frames = alice
        .recv_until(Duration::from_secs(10), |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Cancelled))
        .unwrap();
    let Some(Frame::Event(cancelled)) = frames.last() else {
        panic!("{frames:?}")
    };
    assert_eq!(
        (cancelled.order_id, cancelled.qty, cancelled.reason),
        (alice_order, 3, Reason::Cancel(CancelReason::User))
    );
    bob.replace(&Replace::order(bob_order).qty(4)).unwrap();
    let frames = bob
        .recv_until(
            Duration::from_secs(10),
            |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Replaced),
        )
        .unwrap();
    let Some(Frame::Event(replaced)) = frames.last() else {
        panic!("{frames:?}")
    };
    assert_eq!(
        (
            replaced.order_id,
            replaced.qty,
            replaced.remaining,
            replaced.price
        ),
        (bob_order, 4, 4, 120)
    );
    // Bob cannot touch Alice's orders.
    bob.cancel(alice_order).unwrap();
    let frames = bob
        .recv_until(
            Duration::from_secs(10),
            |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Rejected),
        )
        .unwrap();
    assert!(matches!(frames.last(), Some(Frame::Event(event)) if event.account == 2));
    drop((alice, bob));
    assert_eq!(server.terminate(), Some(0));
    assert!(stdout(&setup.tool(&["journal", "verify"])).contains("equal to a clean replay"));
}

#[test]
fn loadgen_drives_sessions_open_loop_and_reports_latency() {
    let setup = setup();
    let server = setup.start(&[]);
    let port = server.gateway_port.unwrap();
    let out = setup.dir.path().join("load");
    let output = std::process::Command::new(support::binary())
        .args([
            "loadgen",
            "--gateway",
            &format!("127.0.0.1:{port}"),
            "--login",
            "1:token-1",
            "--login",
            "2:token-2",
        ])
        .args(["--rate", "2000", "--duration-secs", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 2 sessions at 1,000/s each for one second: every command answered, none refused.
    assert!(
        text.contains("ringmatch: 2000 sent, 2000 answered, 0 refused"),
        "{text}"
    );
    assert!(text.contains("ringmatch latency us: p50"), "{text}");
    for file in ["ringmatch.hgrm", "ringmatch.hlog", "ringmatch.svg"] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    assert_eq!(server.terminate(), Some(0));
    let verify = stdout(&setup.tool(&["journal", "verify"]));
    assert!(verify.contains("journal: sequences 1..2001"), "{verify}");

    let echo = std::process::Command::new(support::binary())
        .args([
            "loadgen",
            "--echo",
            "--rate",
            "2000",
            "--duration-secs",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&echo.stdout).into_owned();
    assert!(
        text.contains("tcp-echo: 2000 sent, 2000 answered"),
        "{text}"
    );
}
