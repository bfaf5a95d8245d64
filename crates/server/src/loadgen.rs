//! `ringmatch loadgen`: order-entry sessions against a running `serve`, open-loop at a fixed
//! rate (or flat out), measuring wire-to-wire latency from each command's *intended* send
//! time to the first event of its response (coordinated omission corrected).
//!
//! Each session trades its own account with an exchange-core-like mix by client order id:
//! 9% GTC limit orders near the mid, 3% IOC orders that cross, 6% cancels of its oldest order
//! and 82% replaces (a price move) of one of its orders. Every command gets an `ack` with its
//! sequence, and every command produces at least one event with that sequence: the latency of
//! a command ends at the first event carrying its sequence.
//!
//! `--echo` instead measures the raw TCP round trip of the same frame size against a plain echo
//! server in this process: the floor any TCP order entry stands on.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringmatch_gateway::{Client, Frame, LoginOptions};
use ringmatch_pipeline::{new_histogram, now_ns};
use ringmatch_proto::{Command, CommandType, Side, TimeInForce};

/// Options of a load run.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Gateway address.
    pub gateway: SocketAddr,
    /// (account, token) of each session.
    pub logins: Vec<(u32, String)>,
    /// Total offered rate over all sessions, commands per second; None: flat out.
    pub rate_per_second: Option<u64>,
    /// How long to send.
    pub duration: Duration,
    /// Instrument to trade.
    pub instrument: u32,
    /// Mid price of the mix.
    pub mid_price: i64,
    /// Where to write histograms and the plot (None: nowhere).
    pub out_dir: Option<PathBuf>,
    /// Measure a raw TCP echo round trip instead.
    pub echo: bool,
}

/// What a run measured.
pub struct LoadReport {
    /// Responses received (commands answered).
    pub responses_count: u64,
    /// Commands sent.
    pub sent_count: u64,
    /// Commands refused (throttled or busy).
    pub refused_count: u64,
    /// Time from the first send to the last response.
    pub elapsed: Duration,
    /// Latency from intended send time to response, nanoseconds.
    pub latency: Histogram<u64>,
}

impl LoadReport {
    /// Responses per second.
    pub fn throughput(&self) -> f64 {
        self.responses_count as f64 / self.elapsed.as_secs_f64()
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// The mix of one session, by client order id.
struct SessionMix {
    rng: Rng,
    next_client_order_id: u64,
    resting: VecDeque<(u64, Side)>,
    instrument: u32,
    mid_price: i64,
}

impl SessionMix {
    fn next(&mut self, account: u32) -> Command {
        self.next_client_order_id += 1;
        let client_order_id = self.next_client_order_id;
        let roll = self.rng.below(100);
        let side = if self.rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let passive = |rng: &mut Rng, side: Side, mid: i64| match side {
            Side::Buy => mid - 1 - rng.below(300) as i64,
            Side::Sell => mid + 1 + rng.below(300) as i64,
        };
        let mut command = if roll < 9 || self.resting.len() < 20 {
            let mut command = Command::limit(
                account,
                self.instrument,
                side,
                passive(&mut self.rng, side, self.mid_price),
                1 + self.rng.below(10),
            );
            command.client_order_id = client_order_id;
            self.resting.push_back((client_order_id, side));
            if self.resting.len() > 200 {
                self.resting.pop_front();
            }
            command
        } else if roll < 12 {
            let price = match side {
                Side::Buy => self.mid_price + 20,
                Side::Sell => self.mid_price - 20,
            };
            let mut command =
                Command::limit(account, self.instrument, side, price, 1 + self.rng.below(5));
            command.tif = TimeInForce::Ioc;
            command.client_order_id = client_order_id;
            command
        } else if roll < 18 {
            let (target, _) = self.resting.pop_front().expect("at least 20 resting");
            let mut command = Command::empty(CommandType::Cancel);
            command.client_order_id = target;
            command
        } else {
            let index = self.rng.below(self.resting.len() as u64) as usize;
            let (target, side) = self.resting[index];
            let mut command = Command::empty(CommandType::Replace);
            command.client_order_id = target;
            command.has_price = true;
            command.price = passive(&mut self.rng, side, self.mid_price);
            command
        };
        command.account = account;
        command.instrument = self.instrument;
        command
    }
}

struct Shared {
    latency: Mutex<Histogram<u64>>,
    responses: AtomicU64,
    sent: AtomicU64,
    refused: AtomicU64,
    last_response_ns: AtomicU64,
    window: Mutex<Histogram<u64>>,
}

/// Runs the load and prints a report.
pub fn run(options: &LoadgenOptions) -> anyhow::Result<LoadReport> {
    if options.echo {
        return run_echo(options);
    }
    anyhow::ensure!(
        !options.logins.is_empty(),
        "give at least one --login ACCOUNT:TOKEN"
    );
    let shared = Arc::new(Shared {
        latency: Mutex::new(new_histogram()),
        responses: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        last_response_ns: AtomicU64::new(0),
        window: Mutex::new(new_histogram()),
    });
    let sessions_count = options.logins.len() as u64;
    let interval_ns = options
        .rate_per_second
        .map(|rate| 1_000_000_000 * sessions_count / rate.max(1));
    let start_ns = now_ns() + 200_000_000;
    let sending_done = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (index, (account, token)) in options.logins.iter().enumerate() {
        let client = Client::connect(
            options.gateway,
            *account,
            token.as_bytes(),
            LoginOptions::default(),
        )
        .map_err(|error| anyhow::anyhow!("login of account {account} failed: {error}"))?;
        let shared = Arc::clone(&shared);
        let (duration, instrument, mid_price, account) = (
            options.duration,
            options.instrument,
            options.mid_price,
            *account,
        );
        // Stagger sessions evenly over one interval so the total rate is smooth.
        let offset_ns = interval_ns.map_or(0, |interval| interval * index as u64 / sessions_count);
        threads.push(std::thread::spawn(move || {
            session(
                client,
                account,
                instrument,
                mid_price,
                start_ns + offset_ns,
                interval_ns,
                duration,
                &shared,
                index as u64,
            )
        }));
    }
    let started = Instant::now();
    let progress = {
        let shared = Arc::clone(&shared);
        let sending_done = Arc::clone(&sending_done);
        std::thread::spawn(move || {
            let mut last = (Instant::now(), 0u64);
            while !sending_done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let responses = shared.responses.load(Ordering::Relaxed);
                let p99 = {
                    let mut window = shared.window.lock().expect("not poisoned");
                    let p99 = window.value_at_quantile(0.99);
                    window.reset();
                    p99
                };
                let rate = (responses - last.1) as f64 / last.0.elapsed().as_secs_f64();
                eprintln!(
                    "loadgen: {:>5.1} s, {:>9.0} responses/s, p99 {:>9.1} us (last second)",
                    started.elapsed().as_secs_f64(),
                    rate,
                    p99 as f64 / 1_000.0
                );
                last = (Instant::now(), responses);
            }
        })
    };
    for thread in threads {
        thread.join().expect("session thread panicked")?;
    }
    sending_done.store(true, Ordering::Relaxed);
    progress.join().expect("progress thread panicked");
    let latency = shared.latency.lock().expect("not poisoned").clone();
    let elapsed_ns = shared
        .last_response_ns
        .load(Ordering::Relaxed)
        .saturating_sub(start_ns)
        .max(1);
    let report = LoadReport {
        responses_count: shared.responses.load(Ordering::Relaxed),
        sent_count: shared.sent.load(Ordering::Relaxed),
        refused_count: shared.refused.load(Ordering::Relaxed),
        elapsed: Duration::from_nanos(elapsed_ns),
        latency,
    };
    print_report("ringmatch", &report, options);
    Ok(report)
}

/// The most commands one session writes in one system call.
const SEND_BATCH_MAX: usize = 32;

#[allow(clippy::too_many_arguments)]
fn session(
    client: Client,
    account: u32,
    instrument: u32,
    mid_price: i64,
    start_ns: u64,
    interval_ns: Option<u64>,
    duration: Duration,
    shared: &Arc<Shared>,
    seed: u64,
) -> anyhow::Result<()> {
    let mut mix = SessionMix {
        rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)),
        next_client_order_id: 0,
        resting: VecDeque::new(),
        instrument,
        mid_price,
    };
    let stream = ringmatch_gateway::client::raw_socket(&client).try_clone()?;
    // Every command gets exactly one reply (ack, throttled or busy), in order: the intended
    // send times wait here in the same order.
    let pending: Arc<Mutex<VecDeque<u64>>> = Arc::new(Mutex::new(VecDeque::new()));
    let outstanding = Arc::new(AtomicU64::new(0));
    let receiver = {
        let pending = Arc::clone(&pending);
        let outstanding = Arc::clone(&outstanding);
        let shared = Arc::clone(shared);
        // The receiving half owns the client; the sender writes raw frames on a clone of its
        // socket.
        let mut client = client;
        std::thread::spawn(move || receive(&mut client, &pending, &outstanding, &shared))
    };
    let mut stream = stream;
    let mut bytes = Vec::with_capacity(SEND_BATCH_MAX * 128);
    let end_ns = start_ns + duration.as_nanos() as u64;
    let mut index = 0u64;
    while let Some(mut intended_ns) = next_send(start_ns, index, interval_ns, end_ns) {
        // Flat out still keeps a bounded number of commands in flight. While the window is
        // full the sender sleeps: yielding in a loop would take, on a small machine, the CPU
        // the server needs to answer (a profile had 4 yielding senders at 85% of all samples).
        let mut waits = 0u32;
        while interval_ns.is_none() && outstanding.load(Ordering::Relaxed) > 2_000 {
            waits += 1;
            if waits < 16 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        // Commands whose send time has come already (flat out: while the window allows) go
        // out in the same write, like a client with several orders ready would send them.
        bytes.clear();
        let mut batch = 0u64;
        {
            let mut pending = pending.lock().expect("not poisoned");
            loop {
                let command = mix.next(account);
                pending.push_back(intended_ns);
                ringmatch_gateway::encode_frame(&Frame::Command(command), &mut bytes);
                batch += 1;
                index += 1;
                if batch == SEND_BATCH_MAX as u64 {
                    break;
                }
                let now = now_ns();
                let next_ns = match interval_ns {
                    Some(interval) => start_ns + index * interval,
                    None if outstanding.load(Ordering::Relaxed) + batch < 2_000 => now,
                    None => break,
                };
                if next_ns > now || next_ns >= end_ns {
                    break;
                }
                intended_ns = next_ns;
            }
        }
        // Counted before the write: the answers may arrive before `write_all` returns.
        outstanding.fetch_add(batch, Ordering::Relaxed);
        stream.write_all(&bytes)?;
        shared.sent.fetch_add(batch, Ordering::Relaxed);
    }
    // Wait for the answers still in flight (at most 10 s), then stop the receiver.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut heartbeat = Vec::new();
    ringmatch_gateway::encode_frame(&Frame::Heartbeat, &mut heartbeat);
    let mut last_heartbeat = Instant::now();
    while outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        if last_heartbeat.elapsed() > Duration::from_millis(500) {
            stream.write_all(&heartbeat)?;
            last_heartbeat = Instant::now();
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    receiver.join().expect("receiver panicked")?;
    Ok(())
}

fn receive(
    client: &mut Client,
    pending: &Mutex<VecDeque<u64>>,
    outstanding: &AtomicU64,
    shared: &Shared,
) -> anyhow::Result<()> {
    let mut by_seq: HashMap<u64, u64> = HashMap::new();
    loop {
        let frame = match client.recv(Duration::from_millis(200)) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            // The sender shut the socket down after the last answer (or the gateway went away).
            Err(_) => return Ok(()),
        };
        match frame {
            Frame::Ack { seq, .. } => {
                if let Some(intended) = pending.lock().expect("not poisoned").pop_front() {
                    by_seq.insert(seq, intended);
                }
            }
            Frame::Throttled { .. } | Frame::Busy { .. } => {
                pending.lock().expect("not poisoned").pop_front();
                shared.refused.fetch_add(1, Ordering::Relaxed);
                outstanding.fetch_sub(1, Ordering::Relaxed);
            }
            Frame::Event(event) => {
                if let Some(intended) = by_seq.remove(&event.seq) {
                    let now = now_ns();
                    let latency = now.saturating_sub(intended).max(1);
                    shared
                        .latency
                        .lock()
                        .expect("not poisoned")
                        .saturating_record(latency);
                    shared
                        .window
                        .lock()
                        .expect("not poisoned")
                        .saturating_record(latency);
                    shared.responses.fetch_add(1, Ordering::Relaxed);
                    shared.last_response_ns.fetch_max(now, Ordering::Relaxed);
                    outstanding.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Frame::Error { code, text } => {
                anyhow::bail!("the gateway ended the session: {code} {text}")
            }
            _ => {}
        }
    }
}

/// The intended send time of command `index`, once it has come (None: the run is over).
/// Open-loop: the schedule never waits for answers. Flat out, it is simply now.
fn next_send(start_ns: u64, index: u64, interval_ns: Option<u64>, end_ns: u64) -> Option<u64> {
    match interval_ns {
        Some(interval) => {
            let intended = start_ns + index * interval;
            (intended < end_ns).then(|| {
                wait_until(intended);
                intended
            })
        }
        None => {
            let now = now_ns().max(start_ns);
            (now < end_ns).then_some(now)
        }
    }
}

/// How close to its target a pacing sleep ends; the rest is spent yielding. A sleep can end
/// late by tens of microseconds on a busy machine, which the open-loop schedule absorbs (and
/// the latency, measured from the intended time, includes); yielding all the way would take a
/// core from the system under test.
const WAIT_UNTIL_YIELD_WINDOW_NS: u64 = 25_000;

/// Sleeps (with a tight timer slack) until shortly before `intended_ns`, then yields until it.
pub fn wait_until(intended_ns: u64) {
    ringmatch_pipeline::tighten_timer_slack();
    loop {
        let now = now_ns();
        if now >= intended_ns {
            return;
        }
        let left = intended_ns - now;
        if left > WAIT_UNTIL_YIELD_WINDOW_NS {
            std::thread::sleep(Duration::from_nanos(left - WAIT_UNTIL_YIELD_WINDOW_NS));
        } else {
            std::thread::yield_now();
        }
    }
}

/// The raw TCP round trip: a plain echo server and one client sending frames of the command
/// frame's size, open-loop at the same rate.
fn run_echo(options: &LoadgenOptions) -> anyhow::Result<LoadReport> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_nodelay(true);
            let mut buffer = [0u8; 64 * 1024];
            while let Ok(read) = stream.read(&mut buffer) {
                if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
        }
    });
    let frame_size = 4 + 1 + ringmatch_proto::COMMAND_SIZE_BYTES;
    let mut sender = TcpStream::connect(address)?;
    sender.set_nodelay(true)?;
    let mut receiver = sender.try_clone()?;
    let interval_ns = options
        .rate_per_second
        .map(|rate| 1_000_000_000 / rate.max(1));
    let start_ns = now_ns() + 50_000_000;
    let end_ns = start_ns + options.duration.as_nanos() as u64;
    let histogram = Arc::new(Mutex::new(new_histogram()));
    let sent = Arc::new(AtomicU64::new(0));
    let reader = {
        let histogram = Arc::clone(&histogram);
        std::thread::spawn(move || -> u64 {
            let mut buffer = vec![0u8; frame_size];
            let mut count = 0u64;
            let mut last = 0u64;
            while receiver.read_exact(&mut buffer).is_ok() {
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&buffer[5..13]);
                let now = now_ns();
                histogram
                    .lock()
                    .expect("not poisoned")
                    .saturating_record(now.saturating_sub(u64::from_le_bytes(stamp)).max(1));
                count += 1;
                last = now;
            }
            let _ = count;
            last
        })
    };
    let mut frame = vec![0u8; frame_size];
    frame[0..4].copy_from_slice(&((frame_size - 4) as u32).to_le_bytes());
    let mut index = 0u64;
    while let Some(intended) = next_send(start_ns, index, interval_ns, end_ns) {
        frame[5..13].copy_from_slice(&intended.to_le_bytes());
        sender.write_all(&frame)?;
        sent.fetch_add(1, Ordering::Relaxed);
        index += 1;
    }
    std::thread::sleep(Duration::from_millis(200));
    sender.shutdown(std::net::Shutdown::Write)?;
    let last_ns = reader.join().expect("echo reader panicked");
    let latency = histogram.lock().expect("not poisoned").clone();
    let report = LoadReport {
        responses_count: latency.len(),
        sent_count: sent.load(Ordering::Relaxed),
        refused_count: 0,
        elapsed: Duration::from_nanos(last_ns.saturating_sub(start_ns).max(1)),
        latency,
    };
    print_report("tcp-echo", &report, options);
    Ok(report)
}

fn print_report(name: &str, report: &LoadReport, options: &LoadgenOptions) {
    let quantile = |q: f64| report.latency.value_at_quantile(q) as f64 / 1_000.0;
    println!(
        "{name}: {} sent, {} answered, {} refused, {:.0} responses/s over {:.2} s",
        report.sent_count,
        report.responses_count,
        report.refused_count,
        report.throughput(),
        report.elapsed.as_secs_f64()
    );
    println!(
        "{name} latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}",
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(0.999),
        quantile(0.9999),
        report.latency.max() as f64 / 1_000.0
    );
    if let Some(dir) = &options.out_dir {
        if let Err(error) =
            crate::pipeline_bench::write_histogram_files(dir, name, &report.latency, report.elapsed)
        {
            eprintln!("loadgen: cannot write {}: {error}", dir.display());
        }
    }
}
