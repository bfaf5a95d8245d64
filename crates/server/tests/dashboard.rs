//! The dashboard in a real headless browser (Debian's `chromium`): the page is loaded from a
//! running `serve` fed with orders, its script fetches and renders the state, and the book it
//! shows must be the book `/book` answers. A screenshot is kept as a test artifact in
//! `target/test-artifacts/dashboard.png`.
//!
//! Without a browser the test says SKIPPED, unless `RINGMATCH_REQUIRE_BROWSER=1` (set by
//! `scripts/test.sh`, which installs `chromium` when it is missing), where it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::Setup;

fn browser() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("RINGMATCH_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .map(|name| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Runs the browser headless on `url` with `what` (`--dump-dom` or `--screenshot=...`),
/// letting the page's script run for 4 s of virtual time; returns its standard output.
fn headless(browser: &Path, profile: &Path, url: &str, what: &str) -> String {
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1280,1500",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} {what} failed: {}",
        browser.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The value of attribute `name` in the tag text `tag`.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(&tag[start..end])
}

/// Price levels: (price, quantity), best first.
type Levels = Vec<(i64, u64)>;

/// The levels the page shows for one instrument: (bids, asks).
fn levels_shown(dom: &str, instrument: u32) -> (Levels, Levels) {
    let start = dom
        .find(&format!("id=\"book-{instrument}\""))
        .unwrap_or_else(|| panic!("no book {instrument} on the page:\n{dom}"));
    let end = dom[start..]
        .find("id=\"book-")
        .filter(|offset| *offset > 0)
        .map_or(dom.len(), |offset| start + offset);
    let (mut bids, mut asks) = (Vec::new(), Vec::new());
    for tag in dom[start..end].split("<tr").skip(1) {
        let tag = &tag[..tag.find('>').unwrap()];
        let (Some(side), Some(price), Some(qty)) = (
            attribute(tag, "data-side"),
            attribute(tag, "data-price"),
            attribute(tag, "data-qty"),
        ) else {
            continue;
        };
        let level = (price.parse().unwrap(), qty.parse().unwrap());
        match side {
            "bid" => bids.push(level),
            "ask" => asks.push(level),
            other => panic!("side {other}"),
        }
    }
    // Asks are drawn highest first, above the bids.
    asks.reverse();
    (bids, asks)
}

fn as_levels(value: &serde_json::Value) -> Levels {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|level| (level[0].as_i64().unwrap(), level[1].as_u64().unwrap()))
        .collect()
}

#[test]
fn the_dashboard_shows_the_book_trades_and_latency_in_a_real_browser() {
    let Some(browser) = browser() else {
        if std::env::var("RINGMATCH_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!(
                "no headless browser: install Debian's chromium (apt-get install chromium) or set \
                 RINGMATCH_CHROMIUM"
            );
        }
        eprintln!("SKIPPED: no chromium on PATH (apt-get install chromium; scripts/test.sh does)");
        return;
    };
    let setup = Setup::new("");
    let server = setup.start(&[]);
    // A book of eight levels a side on instrument 1 (more than one order on some), then two
    // crossing orders that trade.
    let mut lines = Vec::new();
    for level in 0..8i64 {
        for account in 1..=(1 + level % 2) {
            lines.push(format!(
                r#"{{"type":"place","account":{account},"instrument":1,"side":"buy","price":{},"qty":{}}}"#,
                1_000 - level * 5,
                10 + level
            ));
            lines.push(format!(
                r#"{{"type":"place","account":{account},"instrument":1,"side":"sell","price":{},"qty":{}}}"#,
                1_010 + level * 5,
                20 + level
            ));
        }
    }
    lines.push(
        r#"{"type":"place","account":3,"instrument":1,"side":"buy","price":1010,"qty":5}"#.into(),
    );
    lines.push(
        r#"{"type":"place","account":3,"instrument":1,"side":"sell","price":995,"qty":12}"#.into(),
    );
    let (status, body) = server
        .request("POST", "/commands", &lines.join("\n"))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    // The sampler looks once a second: wait for a look that holds every stage's latencies
    // (on a loaded machine it may take a few).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, state) = server.request("GET", "/dashboard/state", "").unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        let counted = state["latency"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| {
                ["journaled", "replicated", "matched", "published"]
                    .contains(&row["name"].as_str().unwrap_or(""))
                    && row["count"].as_u64().unwrap_or(0) > 0
            })
            .count();
        if counted == 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{state}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/", server.port);
    let dom = headless(&browser, profile.path(), &url, "--dump-dom");
    let updates: u64 = attribute(&dom[dom.find("<body").unwrap()..], "data-updates")
        .unwrap()
        .parse()
        .unwrap();
    assert!(updates >= 1, "the page never rendered the state:\n{dom}");

    // The book shown is the book /book answers (ten levels).
    let (_, book) = server.request("GET", "/book/1?levels=10", "").unwrap();
    let book: serde_json::Value = serde_json::from_str(&book).unwrap();
    let (bids, asks) = levels_shown(&dom, 1);
    assert_eq!(bids, as_levels(&book["bids"]), "{dom}");
    assert_eq!(asks, as_levels(&book["asks"]), "{dom}");
    assert!(bids.len() >= 6 && asks.len() >= 6, "{book}");

    // Both trades of the crossing orders, newest first, and a latency row per stage with a
    // count from the window.
    let trades = dom.matches("<tr data-seq=\"").count();
    assert!(trades >= 2, "{dom}");
    for stage in ["journaled", "replicated", "matched", "published"] {
        let row = dom
            .find(&format!("<tr data-series=\"{stage}\">"))
            .unwrap_or_else(|| panic!("no latency row for {stage}:\n{dom}"));
        let count: u64 = dom[row..]
            .split("<td>")
            .nth(2)
            .and_then(|cell| cell.split('<').next())
            .unwrap()
            .replace(',', "")
            .parse()
            .unwrap();
        assert!(count >= 1, "{stage}: {dom}");
    }
    assert!(dom.contains("single node"), "{dom}");

    // The screenshot, kept for a person to look at.
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &browser,
        profile.path(),
        &url,
        &format!("--screenshot={}", shot.display()),
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
    assert_eq!(server.terminate(), Some(0));
}
