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
use ringmatch_gateway::{decode_frame, Client, Decoded, Frame, LoginOptions};
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
    /// Connections of the echo measurement (the rate is shared among them like sessions').
    pub echo_sessions: usize,
    /// Cores for the session threads (None: all).
    pub cores: Option<Vec<usize>>,
    /// Cores for the echo server's threads (None: all).
    pub echo_server_cores: Option<Vec<usize>>,
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
    /// Latency from intended send time to the command's `ack`, nanoseconds (order entry).
    pub ack_latency: Histogram<u64>,
    /// `latency` by one-second interval of the run: (start after the first send, length,
    /// histogram), in order; a response counts in the interval its session reported it in
    /// (sessions report every 20 ms).
    pub intervals: Vec<(Duration, Duration, Histogram<u64>)>,
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

/// Counters every session adds to, read by the progress line and the final report.
struct Shared {
    latency: Mutex<Histogram<u64>>,
    ack_latency: Mutex<Histogram<u64>>,
    /// The latencies since the progress line last read them.
    window: Mutex<Histogram<u64>>,
    /// The one-second intervals closed so far and the open one.
    intervals: Mutex<Intervals>,
    /// When the first command is due (the intervals count from it).
    start_ns: u64,
    responses: AtomicU64,
    sent: AtomicU64,
    refused: AtomicU64,
    last_response_ns: AtomicU64,
}

/// The closed intervals as (index, histogram), the open one's index, and the open one.
type Intervals = (Vec<(u64, Histogram<u64>)>, u64, Histogram<u64>);

/// The length of an interval of the `.hlog`.
const INTERVAL_NS: u64 = 1_000_000_000;

impl Shared {
    fn new(start_ns: u64) -> Shared {
        Shared {
            latency: Mutex::new(new_histogram()),
            ack_latency: Mutex::new(new_histogram()),
            window: Mutex::new(new_histogram()),
            intervals: Mutex::new((Vec::new(), 0, new_histogram())),
            start_ns,
            responses: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_response_ns: AtomicU64::new(0),
        }
    }

    /// Adds a session's latencies of the last few milliseconds to the interval of `now_ns`.
    fn add_to_interval(&self, window: &Histogram<u64>, now_ns: u64) {
        let index = now_ns.saturating_sub(self.start_ns) / INTERVAL_NS;
        let mut intervals = self.intervals.lock().expect("not poisoned");
        let (closed, open_index, open) = &mut *intervals;
        if index > *open_index {
            if !open.is_empty() {
                closed.push((*open_index, std::mem::replace(open, new_histogram())));
            }
            *open_index = index;
        }
        let _ = open.add(window);
    }

    fn report(&self, start_ns: u64) -> LoadReport {
        let intervals = {
            let mut intervals = self.intervals.lock().expect("not poisoned");
            let (closed, open_index, open) = &mut *intervals;
            let mut all = std::mem::take(closed);
            if !open.is_empty() {
                all.push((*open_index, std::mem::replace(open, new_histogram())));
            }
            all.into_iter()
                .map(|(index, histogram)| {
                    (
                        Duration::from_nanos(index * INTERVAL_NS),
                        Duration::from_nanos(INTERVAL_NS),
                        histogram,
                    )
                })
                .collect()
        };
        let elapsed_ns = self
            .last_response_ns
            .load(Ordering::Relaxed)
            .saturating_sub(start_ns)
            .max(1);
        LoadReport {
            responses_count: self.responses.load(Ordering::Relaxed),
            sent_count: self.sent.load(Ordering::Relaxed),
            refused_count: self.refused.load(Ordering::Relaxed),
            elapsed: Duration::from_nanos(elapsed_ns),
            latency: self.latency.lock().expect("not poisoned").clone(),
            ack_latency: self.ack_latency.lock().expect("not poisoned").clone(),
            intervals,
        }
    }
}

/// What one session measured; handed to [`Shared`] every few milliseconds, so the session
/// thread takes no lock per response.
struct Tally {
    latency: Histogram<u64>,
    ack_latency: Histogram<u64>,
    window: Histogram<u64>,
    responses: u64,
    refused: u64,
    last_response_ns: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: new_histogram(),
            ack_latency: new_histogram(),
            window: new_histogram(),
            responses: 0,
            refused: 0,
            last_response_ns: 0,
        }
    }

    fn record(&mut self, intended_ns: u64, now_ns: u64) {
        let latency = now_ns.saturating_sub(intended_ns).max(1);
        self.latency.saturating_record(latency);
        self.window.saturating_record(latency);
        self.responses += 1;
        self.last_response_ns = now_ns;
    }

    /// Moves the counts and the window to `shared` (the whole histogram too when `last`).
    fn flush(&mut self, shared: &Shared, last: bool) {
        shared
            .responses
            .fetch_add(std::mem::take(&mut self.responses), Ordering::Relaxed);
        shared
            .refused
            .fetch_add(std::mem::take(&mut self.refused), Ordering::Relaxed);
        shared
            .last_response_ns
            .fetch_max(self.last_response_ns, Ordering::Relaxed);
        if !self.window.is_empty() {
            let _ = shared
                .window
                .lock()
                .expect("not poisoned")
                .add(&self.window);
            shared.add_to_interval(&self.window, now_ns());
            self.window.reset();
        }
        if last {
            let _ = shared
                .latency
                .lock()
                .expect("not poisoned")
                .add(&self.latency);
            let _ = shared
                .ack_latency
                .lock()
                .expect("not poisoned")
                .add(&self.ack_latency);
        }
    }
}

/// What one connection of the driver speaks: order entry with the gateway, or the echo.
trait Conversation {
    /// Appends the frame of the next command, whose intended send time is `intended_ns`.
    fn encode_next(&mut self, intended_ns: u64, out: &mut Vec<u8>);
    /// Handles the whole frames at the start of `input`, read at `now_ns`; returns the bytes
    /// used.
    fn receive(&mut self, input: &[u8], now_ns: u64, tally: &mut Tally) -> anyhow::Result<usize>;
    /// Commands sent and not answered yet.
    fn outstanding(&self) -> u64;
    /// A frame that keeps an otherwise silent connection alive while answers drain.
    fn keepalive(&self) -> Option<Vec<u8>>;
}

/// When commands are due: open-loop at a fixed interval per session, or flat out.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start_ns: u64,
    end_ns: u64,
    /// None: flat out, with at most [`WINDOW_MAX`] commands in flight per session.
    interval_ns: Option<u64>,
}

/// The most commands one session writes in one system call.
const SEND_BATCH_MAX: u64 = 32;
/// Flat out, the most commands one session has in flight.
const WINDOW_MAX: u64 = 2_000;
/// How long a session waits for the answers still in flight after its last send.
const DRAIN_FOR: Duration = Duration::from_secs(10);

/// Runs one session on the calling thread: sends each command when it is due and reads the
/// answers in between, sleeping in `ppoll` (not spinning or yielding) until the next send
/// time or the next answer, so the load generator takes as little CPU from the system under
/// test as it can. A late wake-up is never hidden: latency counts from the intended time.
fn drive(
    stream: &TcpStream,
    conversation: &mut impl Conversation,
    schedule: Schedule,
    shared: &Shared,
) -> anyhow::Result<()> {
    ringmatch_pipeline::tighten_timer_slack();
    stream.set_nonblocking(true)?;
    let mut stream_ref = stream;
    let mut tally = Tally::new();
    let mut output: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut written = 0usize;
    let mut input = vec![0u8; 256 * 1024];
    let (mut input_start, mut input_end) = (0usize, 0usize);
    let mut index = 0u64;
    let mut sending = true;
    let mut drain_deadline: Option<Instant> = None;
    let mut last_keepalive = Instant::now();
    let mut last_flush = Instant::now();
    loop {
        let now = now_ns();
        // Queue the commands whose time has come (flat out: while the window allows), in one
        // write, like a client with several orders ready would send them.
        if sending && written == output.len() {
            output.clear();
            written = 0;
            let mut batch = 0u64;
            while batch < SEND_BATCH_MAX && now >= schedule.start_ns {
                let intended_ns = match schedule.interval_ns {
                    Some(interval) => schedule.start_ns + index * interval,
                    None => now,
                };
                if intended_ns >= schedule.end_ns {
                    sending = false;
                    break;
                }
                if intended_ns > now
                    || (schedule.interval_ns.is_none() && conversation.outstanding() >= WINDOW_MAX)
                {
                    break;
                }
                conversation.encode_next(intended_ns, &mut output);
                index += 1;
                batch += 1;
            }
            shared.sent.fetch_add(batch, Ordering::Relaxed);
        }
        if written < output.len() {
            match stream_ref.write(&output[written..]) {
                Ok(count) => written += count,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error.into()),
            }
        }
        // Read and handle everything that has arrived.
        loop {
            if input_end == input.len() {
                if input_start > 0 {
                    input.copy_within(input_start..input_end, 0);
                    input_end -= input_start;
                    input_start = 0;
                } else {
                    input.resize(input.len() * 2, 0);
                }
            }
            match stream_ref.read(&mut input[input_end..]) {
                Ok(0) => {
                    anyhow::ensure!(
                        !sending && conversation.outstanding() == 0,
                        "the server closed the connection with {} commands unanswered",
                        conversation.outstanding()
                    );
                    break;
                }
                Ok(count) => {
                    input_end += count;
                    input_start += conversation.receive(
                        &input[input_start..input_end],
                        now_ns(),
                        &mut tally,
                    )?;
                    if input_start == input_end {
                        input_start = 0;
                        input_end = 0;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error.into()),
            }
        }
        if last_flush.elapsed() >= Duration::from_millis(20) {
            tally.flush(shared, false);
            last_flush = Instant::now();
        }
        if !sending && written == output.len() {
            if conversation.outstanding() == 0 {
                break;
            }
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_FOR);
            if Instant::now() >= deadline {
                eprintln!(
                    "loadgen: {} commands still unanswered after {} s",
                    conversation.outstanding(),
                    DRAIN_FOR.as_secs()
                );
                break;
            }
            if last_keepalive.elapsed() >= Duration::from_millis(500) {
                if let Some(frame) = conversation.keepalive() {
                    output.clear();
                    output.extend_from_slice(&frame);
                    written = 0;
                }
                last_keepalive = Instant::now();
                continue;
            }
        }
        // Sleep until the next command is due, an answer arrives or the socket takes more.
        let now = now_ns();
        let wait_ns = if written < output.len() || !sending {
            100_000_000
        } else {
            match schedule.interval_ns {
                _ if now < schedule.start_ns => schedule.start_ns - now,
                Some(interval) => (schedule.start_ns + index * interval).saturating_sub(now),
                None if conversation.outstanding() >= WINDOW_MAX => 100_000_000,
                None => 0,
            }
        };
        if wait_ns > 0 {
            poll_socket(stream, written < output.len(), wait_ns)?;
        }
    }
    tally.flush(shared, true);
    Ok(())
}

/// Waits up to `wait_ns` for the socket to be readable (or writable, when `write` is set).
fn poll_socket(stream: &TcpStream, write: bool, wait_ns: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut descriptor = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN | if write { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    let timeout = libc::timespec {
        tv_sec: (wait_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (wait_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: one valid pollfd and a valid timespec, both alive for the call; no signal mask.
    #[allow(unsafe_code)]
    let result = unsafe { libc::ppoll(&mut descriptor, 1, &timeout, std::ptr::null()) };
    if result < 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

/// An order-entry session: the exchange-core mix, answered by an `ack` (or a refusal) and
/// then events; a command's latency ends at the first event carrying its sequence.
struct OrderEntry {
    mix: SessionMix,
    account: u32,
    /// Intended send times of the commands not acknowledged yet, in sending order: every
    /// command gets exactly one `ack`, `throttled` or `busy`, in order.
    unacknowledged: VecDeque<u64>,
    /// Intended send times of acknowledged commands still waiting for their first event.
    by_seq: HashMap<u64, u64>,
    outstanding: u64,
}

impl Conversation for OrderEntry {
    fn encode_next(&mut self, intended_ns: u64, out: &mut Vec<u8>) {
        let command = self.mix.next(self.account);
        ringmatch_gateway::encode_frame(&Frame::Command(command), out);
        self.unacknowledged.push_back(intended_ns);
        self.outstanding += 1;
    }

    fn receive(&mut self, input: &[u8], now_ns: u64, tally: &mut Tally) -> anyhow::Result<usize> {
        let mut used = 0;
        while let Decoded::Frame(frame, length) = decode_frame(&input[used..], 1 << 16)? {
            used += length;
            match frame {
                Frame::Ack { seq, .. } => {
                    if let Some(intended_ns) = self.unacknowledged.pop_front() {
                        tally
                            .ack_latency
                            .saturating_record(now_ns.saturating_sub(intended_ns).max(1));
                        self.by_seq.insert(seq, intended_ns);
                    }
                }
                Frame::Throttled { .. } | Frame::Busy { .. } => {
                    self.unacknowledged.pop_front();
                    tally.refused += 1;
                    self.outstanding -= 1;
                }
                Frame::Event(event) => {
                    if let Some(intended_ns) = self.by_seq.remove(&event.seq) {
                        tally.record(intended_ns, now_ns);
                        self.outstanding -= 1;
                    }
                }
                Frame::Error { code, text } => {
                    anyhow::bail!("the gateway ended the session: {code} {text}")
                }
                _ => {}
            }
        }
        Ok(used)
    }

    fn outstanding(&self) -> u64 {
        self.outstanding
    }

    fn keepalive(&self) -> Option<Vec<u8>> {
        let mut frame = Vec::new();
        ringmatch_gateway::encode_frame(&Frame::Heartbeat, &mut frame);
        Some(frame)
    }
}

/// Runs the load and prints a report.
pub fn run(options: &LoadgenOptions) -> anyhow::Result<LoadReport> {
    if let Some(cores) = &options.echo_server_cores {
        anyhow::ensure!(options.echo, "--echo-server-cores needs --echo");
        // Checked here so that a bad id fails the command, not the server thread.
        ringmatch_pipeline::check_cores("--echo-server-cores", cores)?;
    }
    // Every thread started from here on inherits the restriction.
    if let Some(cores) = &options.cores {
        ringmatch_pipeline::restrict_thread_to_cores("--cores", cores)?;
    }
    if options.echo {
        return run_echo(options);
    }
    anyhow::ensure!(
        !options.logins.is_empty(),
        "give at least one --login ACCOUNT:TOKEN"
    );
    let sessions_count = options.logins.len() as u64;
    let interval_ns = options
        .rate_per_second
        .map(|rate| 1_000_000_000 * sessions_count / rate.max(1));
    let start_ns = now_ns() + 200_000_000;
    let shared = Arc::new(Shared::new(start_ns));
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
        // Stagger sessions evenly over one interval so the total rate is smooth.
        let offset_ns = interval_ns.map_or(0, |interval| interval * index as u64 / sessions_count);
        let schedule = Schedule {
            start_ns: start_ns + offset_ns,
            end_ns: start_ns + offset_ns + options.duration.as_nanos() as u64,
            interval_ns,
        };
        let mut conversation = OrderEntry {
            mix: SessionMix {
                rng: Rng(
                    0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)
                ),
                next_client_order_id: 0,
                resting: VecDeque::new(),
                instrument: options.instrument,
                mid_price: options.mid_price,
            },
            account: *account,
            unacknowledged: VecDeque::new(),
            by_seq: HashMap::new(),
            outstanding: 0,
        };
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let (stream, pending) = client.into_parts();
            anyhow::ensure!(
                pending.is_empty(),
                "the gateway sent {} bytes after the login before any command",
                pending.len()
            );
            let stream = &stream;
            let result = drive(stream, &mut conversation, schedule, &shared);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            result
        }));
    }
    let progress = Progress::start(Arc::clone(&shared));
    let mut outcome = Ok(());
    for thread in threads {
        let result = thread.join().expect("session thread panicked");
        if outcome.is_ok() {
            outcome = result;
        }
    }
    progress.stop();
    outcome?;
    let report = shared.report(start_ns);
    print_report("ringmatch", &report, options);
    Ok(report)
}

/// The progress line: elapsed time, answers per second and the p99 of the last second.
struct Progress {
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Progress {
    fn start(shared: Arc<Shared>) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut last = (Instant::now(), 0u64);
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.0.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
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
        Progress { done, thread }
    }

    fn stop(self) {
        self.done.store(true, Ordering::Relaxed);
        self.thread.join().expect("progress thread panicked");
    }
}

/// The size of an echo frame: the size of a command frame.
const ECHO_FRAME_SIZE_BYTES: usize = 4 + 1 + ringmatch_proto::COMMAND_SIZE_BYTES;

/// The raw round trip: fixed-size frames carrying their intended send time, echoed back.
struct Echo {
    sent: u64,
    received: u64,
}

impl Conversation for Echo {
    fn encode_next(&mut self, intended_ns: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + ECHO_FRAME_SIZE_BYTES, 0);
        let frame = &mut out[start..];
        frame[0..4].copy_from_slice(&((ECHO_FRAME_SIZE_BYTES - 4) as u32).to_le_bytes());
        frame[5..13].copy_from_slice(&intended_ns.to_le_bytes());
        self.sent += 1;
    }

    fn receive(&mut self, input: &[u8], now_ns: u64, tally: &mut Tally) -> anyhow::Result<usize> {
        let mut used = 0;
        while input.len() - used >= ECHO_FRAME_SIZE_BYTES {
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&input[used + 5..used + 13]);
            tally.record(u64::from_le_bytes(stamp), now_ns);
            self.received += 1;
            used += ECHO_FRAME_SIZE_BYTES;
        }
        Ok(used)
    }

    fn outstanding(&self) -> u64 {
        self.sent - self.received
    }

    fn keepalive(&self) -> Option<Vec<u8>> {
        None
    }
}

/// The raw TCP round trip: a plain echo server (one blocking thread per connection) and as
/// many connections as `--echo-sessions`, driven exactly like order-entry sessions (same
/// driver, same frame size, same schedule).
fn run_echo(options: &LoadgenOptions) -> anyhow::Result<LoadReport> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let sessions_count = options.echo_sessions.max(1) as u64;
    let server_cores = options.echo_server_cores.clone();
    std::thread::spawn(move || {
        if let Some(cores) = server_cores {
            ringmatch_pipeline::restrict_thread_to_cores("--echo-server-cores", &cores)
                .expect("checked before");
        }
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_nodelay(true);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 64 * 1024];
                while let Ok(read) = stream.read(&mut buffer) {
                    if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let interval_ns = options
        .rate_per_second
        .map(|rate| 1_000_000_000 * sessions_count / rate.max(1));
    let start_ns = now_ns() + 100_000_000;
    let shared = Arc::new(Shared::new(start_ns));
    let mut threads = Vec::new();
    for index in 0..sessions_count {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let offset_ns = interval_ns.map_or(0, |interval| interval * index / sessions_count);
        let schedule = Schedule {
            start_ns: start_ns + offset_ns,
            end_ns: start_ns + offset_ns + options.duration.as_nanos() as u64,
            interval_ns,
        };
        let shared = Arc::clone(&shared);
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut conversation = Echo {
                sent: 0,
                received: 0,
            };
            let result = drive(&stream, &mut conversation, schedule, &shared);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            result
        }));
    }
    let mut outcome = Ok(());
    for thread in threads {
        let result = thread.join().expect("echo session panicked");
        if outcome.is_ok() {
            outcome = result;
        }
    }
    outcome?;
    let report = shared.report(start_ns);
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
    if !report.ack_latency.is_empty() {
        let ack = |q: f64| report.ack_latency.value_at_quantile(q) as f64 / 1_000.0;
        println!(
            "{name} ack latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}",
            ack(0.5),
            ack(0.9),
            ack(0.99),
            ack(0.999),
            ack(0.9999),
            report.ack_latency.max() as f64 / 1_000.0
        );
    }
    if let Some(dir) = &options.out_dir {
        if let Err(error) =
            crate::report::write_histogram_files(dir, name, &report.latency, &report.intervals)
        {
            eprintln!("loadgen: cannot write {}: {error}", dir.display());
        }
    }
}
