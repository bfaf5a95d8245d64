//! The `ringmatch` command line as a user meets it: `feed` from a file and from stdin,
//! malformed input, bad configuration, and complete help.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ringmatch(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmatch"))
        .current_dir(root())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn every_example_feeds_with_the_default_config() {
    let examples = root().join("config/examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "jsonl") {
            let output = ringmatch(&["feed", path.to_str().unwrap()], None);
            assert!(output.status.success(), "{}: {output:?}", path.display());
            assert!(!output.stdout.is_empty());
            count += 1;
        }
    }
    assert!(count >= 2, "examples missing");
}

#[test]
fn the_demo_prints_the_documented_events() {
    // docs/scripting.md shows this exact output for config/examples/demo.jsonl.
    let output = ringmatch(&["feed", "config/examples/demo.jsonl"], None);
    assert!(output.status.success(), "{output:?}");
    let docs = std::fs::read_to_string(root().join("docs/scripting.md")).unwrap();
    let stdout = text(&output.stdout);
    assert!(stdout.lines().count() > 5);
    for line in stdout.lines() {
        assert!(
            docs.contains(line),
            "docs/scripting.md does not show {line}"
        );
    }
}

#[test]
fn feed_reads_standard_input() {
    let input = "{\"type\":\"place\",\"account\":1,\"instrument\":1,\"side\":\"buy\",\"price\":5,\"qty\":2}\n";
    let output = ringmatch(&["feed", "-"], Some(input));
    assert!(output.status.success());
    assert_eq!(
        text(&output.stdout),
        "{\"seq\":1,\"type\":\"accepted\",\"instrument\":1,\"account\":1,\"order_id\":1,\"side\":\"buy\",\"price\":5,\"qty\":2}\n\
         {\"seq\":1,\"type\":\"level\",\"instrument\":1,\"side\":\"buy\",\"price\":5,\"qty\":2}\n"
    );
}

#[test]
fn a_malformed_line_stops_the_feed_and_names_the_line() {
    let input = "# a comment\n\
                 {\"type\":\"place\",\"account\":1,\"instrument\":1,\"side\":\"buy\",\"price\":5,\"qty\":2}\n\
                 \n\
                 {\"type\":\"place\",\"account\":1,\"instrument\":1,\"side\":\"buy\",\"price\":5}\n\
                 {\"type\":\"place\",\"account\":1,\"instrument\":1,\"side\":\"sell\",\"price\":5,\"qty\":2}\n";
    let output = ringmatch(&["feed", "-"], Some(input));
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("needs field `qty`"), "{stderr}");
    let stdout = text(&output.stdout);
    // Line 2 was applied; line 5 (which would have traded) was not.
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(!stdout.contains("fill"));
}

#[test]
fn a_missing_file_or_bad_config_is_a_clear_error() {
    let output = ringmatch(&["feed", "no/such/file.jsonl"], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("cannot open no/such/file.jsonl"));

    let dir = std::env::temp_dir().join(format!("ringmatch-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        "[limits]\norders_max = 10\nspeed = 3\n[[instruments]]\n",
    )
    .unwrap();
    let output = ringmatch(
        &["--config", config.to_str().unwrap(), "feed", "-"],
        Some(""),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("speed"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `hash-token -` (or no argument) hashes the first line of standard input, so that the
/// token stays out of shell history; the printed hash verifies that token and no other.
#[test]
fn hash_token_reads_the_token_from_standard_input() {
    for args in [&["hash-token", "-"][..], &["hash-token"][..]] {
        let output = ringmatch(args, Some("s3cret-token\n"));
        assert!(output.status.success(), "{}", text(&output.stderr));
        let printed = text(&output.stdout);
        let hash = printed
            .trim()
            .strip_prefix("token_hash = \"")
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{printed}"));
        let credential = ringmatch_gateway::Credential::parse(1, hash, vec![]).unwrap();
        assert!(credential.verify(b"s3cret-token"));
        assert!(!credential.verify(b"-"));
        assert!(!credential.verify(b"s3cret-token\n"));
    }
    let output = ringmatch(&["hash-token", "-"], Some("\n"));
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("the token must be 1 to 64 bytes"));
}

#[test]
fn help_describes_every_subcommand() {
    let output = ringmatch(&["--help"], None);
    assert!(output.status.success());
    let help = text(&output.stdout);
    for subcommand in [
        "serve",
        "journal",
        "snapshot",
        "events",
        "loadgen",
        "hash-token",
        "feed",
        "bench",
    ] {
        assert!(help.contains(subcommand), "{help}");
        let output = ringmatch(&[subcommand, "--help"], None);
        assert!(output.status.success());
        let sub_help = text(&output.stdout);
        assert!(
            sub_help.len() > 300,
            "{subcommand} help is thin: {sub_help}"
        );
    }
    for nested in [
        ["journal", "verify"],
        ["journal", "dump"],
        ["snapshot", "verify"],
        ["events", "dump"],
    ] {
        let output = ringmatch(&[nested[0], nested[1], "--help"], None);
        assert!(output.status.success(), "{nested:?}");
        assert!(text(&output.stdout).len() > 150, "{nested:?} help is thin");
    }
    assert!(text(&ringmatch(&["feed", "--help"], None).stdout).contains("docs/scripting.md"));
    assert!(text(&ringmatch(&["bench", "--help"], None).stdout).contains("--matcher-only"));
}

#[test]
fn bench_matcher_only_reports_both_books() {
    let output = ringmatch(
        &[
            "bench",
            "--matcher-only",
            "--commands",
            "20000",
            "--runs",
            "1",
            "--naive-commands",
            "2000",
        ],
        None,
    );
    assert!(output.status.success(), "{output:?}");
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("fast engine") && stdout.contains("naive book"),
        "{stdout}"
    );
    assert!(stdout.contains("state hashes equal"), "{stdout}");
}

/// `config check` reads a file as `serve` would and says what it sets up, or why not.
#[test]
fn config_check_says_what_a_file_sets_up_or_why_not() {
    let output = ringmatch(&["config", "check", "config/default.toml"], None);
    assert!(output.status.success(), "{output:?}");
    let stdout = text(&output.stdout);
    assert!(stdout.contains("valid: a single node"), "{stdout}");
    assert!(stdout.contains("2 instruments"), "{stdout}");
    let output = ringmatch(
        &["config", "check", "config/examples/cluster/node2.toml"],
        None,
    );
    assert!(output.status.success(), "{output:?}");
    assert!(
        text(&output.stdout).contains("valid: node 2 of cluster 1 (3 voters, 0 learners)"),
        "{output:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let base = std::fs::read_to_string(root().join("config/default.toml")).unwrap();
    std::fs::write(&bad, base.replace("orders_max = 1000000", "orders_max = 0")).unwrap();
    let output = ringmatch(&["config", "check", bad.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(text(&output.stderr).contains("orders_max"), "{output:?}");
}

/// `--data-dir` replaces the configuration's data directory for every command, and a
/// missing default configuration says where it was looked for.
#[test]
fn data_dir_overrides_and_a_missing_default_config_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("elsewhere");
    let output = ringmatch(
        &["--data-dir", data.to_str().unwrap(), "events", "dump"],
        None,
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains(data.join("events.bin").to_str().unwrap()),
        "{output:?}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_ringmatch"))
        .current_dir(dir.path())
        .args(["events", "dump"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the default config/default.toml is not in")
            && stderr.contains("pass --config FILE"),
        "{stderr}"
    );
}

/// Every script answers `--help` with its usage, at once, and does nothing else.
#[test]
fn every_script_answers_help() {
    let mut count = 0;
    for entry in std::fs::read_dir(root().join("scripts")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "sh") {
            continue;
        }
        let mut child = Command::new("bash")
            .arg(&path)
            .arg("--help")
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!(
                    "{} --help did not return: it runs something",
                    path.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}: {output:?}", path.display());
        assert!(
            text(&output.stdout).contains("Usage"),
            "{} --help prints no usage",
            path.display()
        );
        count += 1;
    }
    assert!(count >= 8, "scripts missing: {count}");
}
