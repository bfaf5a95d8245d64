//! The admin listener under clients that misbehave, and `/metrics` read by a Prometheus text
//! parser.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringmatch_gateway::{hash_token, Client, ClientError, LoginOptions, Order};
use support::Setup;

fn setup() -> Setup {
    Setup::new(&format!(
        "[gateway]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
         [[gateway.logins]]\naccount = 1\ntoken_hash = \"{}\"\n",
        hash_token(b"test-salt-1234", b"token-1")
    ))
}

/// Reads one HTTP/1.1 response from a kept-alive connection (its body sized by
/// Content-Length): (status, body).
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "connection closed");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn idle_and_trickling_clients_never_delay_another() {
    let setup = setup();
    let server = setup.start(&[]);
    let port = server.port;
    // Connections that send nothing.
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // Connections that send a request one byte every 200 ms.
    let tricklers: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let started = Instant::now();
                for byte in b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
                    if stream.write_all(&[*byte]).is_err() {
                        // The server closed it: the header time limit.
                        return started.elapsed();
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                panic!("a request trickled over {:?} was served", started.elapsed());
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut took = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let (status, body) = server.request("GET", "/status", "").unwrap();
        took.push(started.elapsed());
        assert_eq!(status, 200, "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(status["journal"]["next_seq"].is_u64(), "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    took.sort();
    // The old listener served one connection at a time: one idle connection delayed every
    // request by 5 s. Each answer here comes within 100 ms (a slack of 20x over the usual few
    // milliseconds, for a loaded machine, on the median; the slowest within a second).
    assert!(
        took[took.len() / 2] < Duration::from_millis(100),
        "{took:?}"
    );
    assert!(took[took.len() - 1] < Duration::from_secs(1), "{took:?}");
    // A trickler is cut off once its headers have taken the header time limit (5 s).
    for trickler in tricklers {
        let lasted = trickler.join().unwrap();
        assert!(
            lasted >= Duration::from_secs(4) && lasted < Duration::from_secs(9),
            "{lasted:?}"
        );
    }
    drop(idle);
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn keep_alive_chunked_bodies_and_limits() {
    let setup = setup();
    let server = setup.start(&[]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Two requests on one connection.
    for _ in 0..2 {
        write!(stream, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let (status, body) = read_response(&mut stream);
        assert_eq!(status, 200, "{body}");
    }
    // A chunked body: two places in three chunks.
    let lines = "{\"type\":\"place\",\"account\":1,\"instrument\":1,\"side\":\"buy\",\"price\":100,\"qty\":10}\n\
                 {\"type\":\"place\",\"account\":1,\"instrument\":1,\"side\":\"buy\",\"price\":101,\"qty\":5}\n";
    let (first, rest) = lines.split_at(30);
    let (second, third) = rest.split_at(60);
    write!(
        stream,
        "POST /commands HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for chunk in [first, second, third] {
        write!(stream, "{:x}\r\n{chunk}\r\n", chunk.len()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    write!(stream, "0\r\n\r\n").unwrap();
    let (status, body) = read_response(&mut stream);
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["submitted"], 2, "{reply}");
    assert_eq!(reply["durable"], true, "{reply}");
    assert_eq!(reply["last_seq"], 2, "{reply}");
    let (_, book) = server.request("GET", "/book/1", "").unwrap();
    let book: serde_json::Value = serde_json::from_str(&book).unwrap();
    assert_eq!(
        book["bids"],
        serde_json::json!([[101, 5], [100, 10]]),
        "{book}"
    );

    // Broken chunked framing: refused, nothing submitted.
    let mut broken = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    broken
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The server may close the connection before it has read everything: the write may fail.
    let _ = write!(
        broken,
        "POST /commands HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{lines}\r\n0\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = broken.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // A body over the limit is refused (413) before it is read.
    let mut large = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    large
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = write!(
        large,
        "POST /commands HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{lines}",
        64 << 20
    );
    let (status, body) = read_response(&mut large);
    assert_eq!(status, 413, "{body}");

    // Nothing but the two places went in.
    let (_, status) = server.request("GET", "/status", "").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["journal"]["next_seq"], 3, "{status}");
    assert_eq!(server.terminate(), Some(0));
}

/// The value of the sample `name` with exactly `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == name
                && sample.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match found.value {
        prometheus_parse::Value::Counter(value)
        | prometheus_parse::Value::Gauge(value)
        | prometheus_parse::Value::Untyped(value) => value,
        ref other => panic!("{name}: {other:?}"),
    }
}

fn scrape(port: u16) -> (prometheus_parse::Scrape, String) {
    let (status, text) = support::http(port, "GET", "/metrics", "").unwrap();
    assert_eq!(status, 200, "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_string())))
        .expect("a Prometheus text scrape");
    (scrape, text)
}

#[test]
fn metrics_are_prometheus_histograms_counters_and_gauges() {
    let setup = setup();
    let server = setup.start(&[]);
    let gateway = server.gateway_port.unwrap();
    // A refused login, then a session that places three orders.
    let refused = Client::connect(
        ("127.0.0.1", gateway),
        1,
        b"wrong-token",
        LoginOptions::default(),
    );
    let refusal = refused.err();
    assert!(
        matches!(refusal, Some(ClientError::Server { code: 2, .. })),
        "{refusal:?}"
    );
    let mut client = Client::connect(
        ("127.0.0.1", gateway),
        1,
        b"token-1",
        LoginOptions::default(),
    )
    .unwrap();
    for coid in 1..=3u64 {
        client
            .place(
                &Order::buy(1)
                    .limit(100 + coid as i64)
                    .qty(10)
                    .client_order_id(coid),
            )
            .unwrap();
    }
    client
        .recv_until(Duration::from_secs(10), |frame| {
            matches!(
                frame,
                ringmatch_gateway::Frame::Ack {
                    client_order_id: 3,
                    ..
                }
            )
        })
        .unwrap();
    // Latencies reach the shared histograms at the end of each stage's batch (one batch
    // later when a reader held the lock): commands keep coming until they are all there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut coid = 100;
    let (scrape, text) = loop {
        let (scrape, text) = scrape(server.port);
        let wire = sample(&scrape, "ringmatch_gateway_wire_to_wire_seconds_count", &[]);
        let published = sample(
            &scrape,
            "ringmatch_stage_latency_seconds_count",
            &[("stage", "published")],
        );
        if wire >= 3.0 && published >= 3.0 {
            break (scrape, text);
        }
        assert!(Instant::now() < deadline, "{text}");
        coid += 1;
        client
            .place(&Order::sell(1).limit(200_000).qty(1).client_order_id(coid))
            .unwrap();
        std::thread::sleep(Duration::from_millis(60));
    };

    // Every histogram has cumulative buckets ending in +Inf equal to its count, and a sum.
    for (name, labels) in [
        (
            "ringmatch_stage_latency_seconds",
            vec![("stage", "journaled")],
        ),
        (
            "ringmatch_stage_latency_seconds",
            vec![("stage", "published")],
        ),
        ("ringmatch_journal_commit_seconds", vec![]),
        ("ringmatch_gateway_wire_to_wire_seconds", vec![]),
    ] {
        let histogram = scrape
            .samples
            .iter()
            .find(|sample| {
                sample.metric == name
                    && labels
                        .iter()
                        .all(|(key, value)| sample.labels.get(key) == Some(*value))
            })
            .unwrap_or_else(|| panic!("no histogram {name}: {text}"));
        let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
            panic!("{name} is not a histogram: {:?}", histogram.value);
        };
        let count = sample(&scrape, &format!("{name}_count"), &labels);
        let sum = sample(&scrape, &format!("{name}_sum"), &labels);
        assert!(count >= 1.0 && sum > 0.0, "{name}: {text}");
        assert!(
            buckets.windows(2).all(|pair| pair[0].count <= pair[1].count
                && pair[0].less_than < pair[1].less_than),
            "{name}: {buckets:?}"
        );
        let last = buckets.last().unwrap();
        assert!(
            last.less_than.is_infinite() && last.count == count,
            "{name}: {buckets:?}"
        );
        // The mean lies within the buckets that hold samples.
        let mean = sum / count;
        let first_holding = buckets.iter().find(|bucket| bucket.count > 0.0).unwrap();
        assert!(mean > 0.0 && mean <= 60.0, "{name}: mean {mean}");
        assert!(
            first_holding.less_than >= mean / 1000.0,
            "{name}: {buckets:?}"
        );
    }
    // Counters and gauges.
    assert_eq!(
        sample(
            &scrape,
            "ringmatch_gateway_logins_total",
            &[("result", "refused")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "ringmatch_gateway_logins_total",
            &[("result", "accepted")]
        ),
        1.0
    );
    assert_eq!(sample(&scrape, "ringmatch_gateway_sessions", &[]), 1.0);
    assert!(sample(&scrape, "ringmatch_gateway_commands_total", &[]) >= 3.0);
    assert!(sample(&scrape, "ringmatch_journal_syncs_total", &[]) >= 1.0);
    assert!(
        sample(&scrape, "ringmatch_journal_durable_sequence", &[]) >= 3.0,
        "{text}"
    );
    assert!(sample(&scrape, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(sample(&scrape, "process_open_fds", &[]) >= 3.0);
    let started = sample(&scrape, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} {now}"
    );
    let build = scrape
        .samples
        .iter()
        .find(|sample| sample.metric == "ringmatch_build_info")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    // Every family has HELP and TYPE, and every name is in the conventions' alphabet.
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| text.contains(&format!("# TYPE {base} histogram")))
            })
            .unwrap_or(name);
        assert!(text.contains(&format!("# HELP {family} ")), "{line}");
        assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
    }
    // The refused login and the session's end are in the log, with the client's address.
    client.logout().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("session ended") {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.log();
    let refused = log
        .lines()
        .find(|line| line.contains("login refused"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        refused.contains(" WARN ") && refused.contains("peer=127.0.0.1:"),
        "{refused}"
    );
    let ended = log
        .lines()
        .find(|line| line.contains("session ended"))
        .unwrap();
    assert!(
        ended.contains("peer=127.0.0.1:") && ended.contains("reason=\"logout\""),
        "{ended}"
    );
    assert_eq!(server.terminate(), Some(0));
}

/// One request with the given extra headers: (status, body).
fn request_with(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, answer.split_once("\r\n\r\n").unwrap().1.to_string())
}

/// A web page elsewhere cannot use the operator's browser against the loopback listener:
/// a cross-origin request, or one under a rebound DNS name, is refused and submits nothing.
#[test]
fn browsers_cannot_post_commands_for_another_site() {
    let setup = setup();
    let server = setup.start(&[]);
    let port = server.port;
    let place = r#"{"type":"place","account":1,"instrument":1,"side":"buy","price":100,"qty":1}"#;
    let own = format!("Host: 127.0.0.1:{port}\r\n");
    let cases = [
        format!("{own}Origin: http://evil.example\r\nContent-Type: text/plain\r\n"),
        format!("{own}Origin: null\r\n"),
        format!("Host: rebound.example:{port}\r\n"),
    ];
    for headers in &cases {
        let (status, body) = request_with(port, "POST", "/commands", headers, place);
        assert_eq!(status, 403, "{headers}: {body}");
        let (status, _) = request_with(port, "GET", "/status", headers, "");
        assert_eq!(status, 403, "{headers}");
    }
    let (_, status) = server.request("GET", "/status", "").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["journal"]["next_seq"], 1,
        "nothing went in: {status}"
    );
    // The listener's own page, and tools that send no Origin, are served.
    let same = format!("{own}Origin: http://127.0.0.1:{port}\r\n");
    let (code, body) = request_with(port, "POST", "/commands", &same, place);
    assert_eq!(code, 200, "{body}");
    let (code, _) = request_with(
        port,
        "GET",
        "/status",
        &format!("Host: localhost:{port}\r\n"),
        "",
    );
    assert_eq!(code, 200);
    assert_eq!(server.terminate(), Some(0));
}

/// The engine clock: a GTD order expires on time though nothing else arrives, by a `time`
/// command the service journals once the expiry has come; an idle service with nothing due
/// journals nothing.
#[test]
fn an_idle_service_expires_a_gtd_order_by_its_clock() {
    let setup = Setup::new("");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let text = text.replace("[pipeline]\n", "[pipeline]\ntime_tick_ms = 20\n");
    std::fs::write(&setup.config, text).unwrap();
    let server = setup.start(&[]);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let expire_ns = now_ns + 400_000_000;
    let place = format!(
        r#"{{"type":"place","account":1,"instrument":1,"side":"buy","tif":"gtd","expire_time_ns":{expire_ns},"price":100,"qty":1,"timestamp_ns":{now_ns}}}"#
    );
    let (code, body) = server.request("POST", "/commands", &place).unwrap();
    assert_eq!(code, 200, "{body}");
    let next_seq = |server: &support::Server| -> u64 {
        let (_, status) = server.request("GET", "/status", "").unwrap();
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        status["journal"]["next_seq"].as_u64().unwrap()
    };
    // Before the expiry, idle ticks journal nothing.
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(next_seq(&server), 2, "nothing is due yet");
    let deadline = Instant::now() + Duration::from_secs(10);
    while next_seq(&server) < 3 {
        assert!(Instant::now() < deadline, "no time command came");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        next_seq(&server),
        3,
        "one time command, then nothing is due"
    );
    assert_eq!(server.terminate(), Some(0));
    let dump = support::stdout(&setup.tool(&["events", "dump"]));
    let expired: Vec<&str> = dump
        .lines()
        .filter(|line| line.contains(r#""reason":"expired""#))
        .collect();
    assert_eq!(expired.len(), 1, "{dump}");
    assert!(expired[0].contains(r#""seq":2"#), "{dump}");
    let journal = support::stdout(&setup.tool(&["journal", "dump"]));
    let time_line = journal
        .lines()
        .find(|line| line.contains(r#""type":"time""#))
        .unwrap_or_else(|| panic!("{journal}"));
    let stamped: u64 = time_line
        .split(r#""timestamp_ns":"#)
        .nth(1)
        .and_then(|rest| rest.trim_end_matches('}').split(',').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("{time_line}"));
    assert!(stamped >= expire_ns, "{time_line}");
}
