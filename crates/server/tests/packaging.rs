//! The Dockerfile and the systemd unit stay in step with the binary: every flag they pass is
//! one the binary has, the files they copy exist, the configuration they ship is valid and
//! listens where the image says, and the exact command lines they run start `serve` (with the
//! paths pointed at a temporary directory). Where a container runtime answers, the image is
//! built too; where `systemd-analyze` is installed, the unit is verified.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The instruction lines of a Dockerfile, continuation lines joined.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// The JSON-array argument of the instruction `name`.
fn exec_form(instructions: &[String], name: &str) -> Vec<String> {
    let line = instructions
        .iter()
        .rfind(|line| line.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name}"));
    serde_json::from_str(&line[name.len() + 1..]).unwrap_or_else(|error| panic!("{line}: {error}"))
}

/// Every `--flag` of `args` is in the help of the binary or of the subcommand it runs.
fn assert_flags_exist(args: &[String]) {
    let help = |args: &[&str]| {
        let output = Command::new(support::binary()).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let subcommands: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|arg| ["serve", "config", "check"].contains(arg))
        .collect();
    let mut all_help = help(&["--help"]);
    if !subcommands.is_empty() {
        let mut with_help = subcommands.clone();
        with_help.push("--help");
        all_help.push_str(&help(&with_help));
    }
    for flag in args.iter().filter(|arg| arg.starts_with("--")) {
        assert!(
            all_help.contains(&format!("{flag} ")) || all_help.contains(&format!("{flag}\n")),
            "{flag} is not a flag of ringmatch {subcommands:?}"
        );
    }
}

/// A copy of the configuration at `path` in `dir`, listening on loopback ports the system
/// picks, with its data directory in `dir`.
fn local_copy(path: &str, dir: &Path) -> PathBuf {
    let text = read(path)
        .replace("\"0.0.0.0:8711\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:8711\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:8710\"", "\"127.0.0.1:0\"");
    let copy = dir.join("ringmatch.toml");
    std::fs::write(&copy, text).unwrap();
    copy
}

/// Runs the binary with `args` and expects success.
fn run_ok(args: &[String]) {
    let output = Command::new(support::binary()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the binary with `args` (paths already replaced) until it logs `ready`, then stops it
/// with SIGTERM and expects status 0.
fn serve_starts_and_stops(args: &[String]) {
    let log_path = std::env::temp_dir().join(format!(
        "ringmatch-packaging-{}-{}.log",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(support::binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.lines().any(|line| line.ends_with(" ringmatch: ready")) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{args:?} exited with {status}:\n{text}");
        }
        assert!(Instant::now() < deadline, "{args:?} not ready:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{text}");
    let _ = std::fs::remove_file(&log_path);
}

#[test]
fn the_dockerfile_runs_flags_files_and_ports_the_binary_has() {
    let dockerfile = read("Dockerfile");
    let lines = instructions(&dockerfile);
    // Two stages: a build stage and a slim run stage.
    let stages: Vec<&String> = lines
        .iter()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].ends_with(" AS build"), "{stages:?}");
    // It builds this binary of this package.
    let build = lines
        .iter()
        .find(|line| line.starts_with("RUN cargo build"))
        .expect("a cargo build");
    assert!(
        build.contains("--locked") && build.contains("-p ringmatch-server"),
        "{build}"
    );
    assert!(build.contains("target/release/ringmatch "), "{build}");
    let manifest = read("crates/server/Cargo.toml");
    assert!(
        manifest.contains("name = \"ringmatch-server\"")
            && manifest.contains("name = \"ringmatch\""),
        "the package and binary names the Dockerfile builds"
    );
    // What it copies from the repository exists.
    for line in lines
        .iter()
        .filter(|line| line.starts_with("COPY ") && !line.contains("--from"))
    {
        let source = line.split_whitespace().nth(1).unwrap();
        assert!(repo().join(source).exists(), "{line}: {source} is missing");
    }
    // The configuration it ships is valid and listens on the ports it exposes.
    let config_line = lines
        .iter()
        .find(|line| line.starts_with("COPY packaging/"))
        .expect("the packaged configuration");
    let mut parts = config_line.split_whitespace().skip(1);
    let (config_source, config_target) = (parts.next().unwrap(), parts.next().unwrap());
    run_ok(&[
        "config".into(),
        "check".into(),
        repo().join(config_source).display().to_string(),
    ]);
    let config: toml::Value = toml::from_str(&read(config_source)).unwrap();
    let port = |section: &str| -> String {
        config[section]["listen"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    let exposed: Vec<String> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace().map(str::to_string))
        .collect();
    for section in ["gateway", "admin"] {
        assert!(
            exposed.contains(&port(section)),
            "{section} port not exposed: {exposed:?}"
        );
    }
    assert!(config["gateway"]["listen"]
        .as_str()
        .unwrap()
        .starts_with("0.0.0.0:"));
    let data_dir = config["data"]["dir"].as_str().unwrap().to_string();
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("VOLUME ") && line.contains(&format!("\"{data_dir}\""))),
        "the data directory {data_dir} is the volume"
    );

    // The command line it runs: the flags exist, and it starts `serve`.
    let mut command = exec_form(&lines, "ENTRYPOINT");
    command.extend(exec_form(&lines, "CMD"));
    assert!(command[0].ends_with("/ringmatch"), "{command:?}");
    let args = command[1..].to_vec();
    assert_flags_exist(&args);
    assert!(
        args.contains(&config_target.to_string()),
        "{args:?} runs {config_target}"
    );
    let dir = tempfile::tempdir().unwrap();
    let local_config = local_copy(config_source, dir.path());
    let data = dir.path().join("data");
    let args: Vec<String> = args
        .iter()
        .map(|arg| {
            if arg == config_target {
                local_config.display().to_string()
            } else if *arg == data_dir {
                data.display().to_string()
            } else {
                arg.clone()
            }
        })
        .collect();
    serve_starts_and_stops(&args);
    assert!(data.join("journal").is_dir(), "--data-dir was used");

    // Build the image where a container runtime answers.
    let runtime = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if runtime {
        let built = Command::new("docker")
            .args(["build", "--quiet", "-t", "ringmatch:test"])
            .arg(repo())
            .status()
            .unwrap();
        assert!(built.success(), "docker build failed");
    } else {
        eprintln!("no container runtime answers (docker info): the image is not built here");
    }
}

#[test]
fn the_systemd_unit_runs_flags_the_binary_has() {
    let unit = read("packaging/ringmatch.service");
    let value = |key: &str| -> String {
        unit.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}="))
            .to_string()
    };
    let exec_start: Vec<String> = value("ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pre: Vec<String> = value("ExecStartPre")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(exec_start.last().map(String::as_str), Some("serve"));
    assert_flags_exist(&exec_start[1..]);
    assert_flags_exist(&pre[1..]);
    let state = value("StateDirectory");
    let data_dir = format!("/var/lib/{state}");
    assert!(
        exec_start.contains(&data_dir),
        "{exec_start:?} uses {data_dir}"
    );
    assert_eq!(value("KillSignal"), "SIGTERM");
    assert_eq!(value("Restart"), "on-failure");

    // Both command lines, with the paths pointed at a temporary directory.
    let dir = tempfile::tempdir().unwrap();
    let local_config = local_copy("config/default.toml", dir.path());
    let data = dir.path().join("data");
    let local = |args: &[String]| -> Vec<String> {
        args[1..]
            .iter()
            .map(|arg| match arg.as_str() {
                "/etc/ringmatch/ringmatch.toml" => local_config.display().to_string(),
                other if other == data_dir => data.display().to_string(),
                other => other.to_string(),
            })
            .collect()
    };
    run_ok(&local(&pre));
    serve_starts_and_stops(&local(&exec_start));
    assert!(data.join("journal").is_dir(), "--data-dir was used");

    // systemd's own check, where it is installed (with the binary where the unit expects it
    // replaced by this one).
    if let Ok(output) = Command::new("systemd-analyze").arg("--version").output() {
        if output.status.success() {
            let copy = dir.path().join("ringmatch.service");
            std::fs::write(
                &copy,
                unit.replace("/usr/local/bin/ringmatch", support::binary()),
            )
            .unwrap();
            let verify = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&copy)
                .output()
                .unwrap();
            let complaints = String::from_utf8_lossy(&verify.stderr);
            let complaints: Vec<&str> = complaints
                .lines()
                .filter(|line| line.contains("ringmatch.service"))
                .collect();
            assert!(
                complaints.is_empty(),
                "systemd-analyze verify: {complaints:?}"
            );
        }
    }
}
