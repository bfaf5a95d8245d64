//! Logs in to a running `ringmatch serve` (default config: gateway on 127.0.0.1:8711, demo
//! login account 1 with token `demo-token-1`), places a limit order, prints what comes back,
//! then cancels it.
//!
//! ```text
//! cargo run --release -p ringmatch-server -- serve --config config/default.toml &
//! cargo run -p ringmatch-gateway --example place_order
//! ```

use std::time::Duration;

use ringmatch_gateway::{Client, Frame, LoginOptions, Order};
use ringmatch_proto::EventType;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8711".into());
    let mut client = Client::connect(
        address.as_str(),
        1,
        b"demo-token-1",
        LoginOptions::default(),
    )?;
    println!(
        "logged in as account {}, session {}",
        client.account(),
        client.session_id()
    );

    client.place(&Order::buy(1).limit(100).qty(5).client_order_id(1))?;
    let frames = client.recv_until(
        Duration::from_secs(5),
        |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Level),
    )?;
    let mut order_id = 0;
    for frame in &frames {
        println!("{frame:?}");
        if let Frame::Event(event) = frame {
            if event.event_type == EventType::Accepted {
                order_id = event.order_id;
            }
        }
    }

    client.cancel(order_id)?;
    let frames = client.recv_until(
        Duration::from_secs(5),
        |frame| matches!(frame, Frame::Event(event) if event.event_type == EventType::Cancelled),
    )?;
    for frame in frames {
        println!("{frame:?}");
    }
    client.logout()?;
    Ok(())
}
