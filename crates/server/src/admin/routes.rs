//! The admin routes: what a node that runs the pipeline answers (a single node, or a cluster's
//! leader), and what a cluster's follower answers. Every body is JSON built with `serde_json`,
//! except `/metrics` (Prometheus text) and the dashboard.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use ringmatch_kafka::KafkaMetrics;
use ringmatch_pipeline::{now_ns, MarketData, Metrics, Stage, Submitter};
use ringmatch_proto::{Command, CommandType};
use ringmatch_replication::Replica;
use serde_json::{json, Value};

use super::dashboard::{self, Recent};
use super::{error, json, read_body};
use crate::script::parse_command;

/// How long `POST /commands` waits for its commands to become durable.
const DURABLE_WAIT: Duration = Duration::from_secs(10);

/// What a node running the pipeline shows and takes.
pub(crate) struct Leading {
    pub(crate) submitter: Mutex<Submitter>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) market_data: Arc<MarketData>,
    pub(crate) kafka: Option<Arc<KafkaMetrics>>,
    pub(crate) cluster: Option<Arc<Replica>>,
    pub(crate) prometheus: super::metrics::Exporter,
    pub(crate) recent: Arc<Mutex<Recent>>,
    /// Every instrument: (id, symbol).
    pub(crate) instruments: Vec<(u32, String)>,
}

/// The routes of a node running the pipeline.
pub(crate) fn leading(state: Leading) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard/state", get(dashboard_state))
        .route("/status", get(status))
        .route("/metrics", get(prometheus))
        .route("/book/{instrument}", get(book))
        .route("/snapshot", post(snapshot))
        .route("/commands", post(commands))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_such_path)
        .with_state(Arc::new(state))
}

/// What a cluster's follower shows.
pub(crate) struct Following {
    pub(crate) replica: Arc<Replica>,
    pub(crate) prometheus: super::metrics::Exporter,
}

/// The routes of a cluster's follower: the dashboard, `/status` and `/metrics`; everything
/// else is refused with the leader's id.
pub(crate) fn following(state: Following) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard/state", get(follower_dashboard_state))
        .route("/status", get(follower_status))
        .route("/metrics", get(follower_metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_the_leader)
        .with_state(Arc::new(state))
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

async fn no_such_path() -> Response {
    error(StatusCode::NOT_FOUND, "no such path")
}

async fn status(State(state): State<Arc<Leading>>) -> Response {
    json(
        StatusCode::OK,
        &status_json(
            &state.metrics,
            state.kafka.as_deref(),
            state.cluster.as_deref(),
        ),
    )
}

async fn dashboard_state(State(state): State<Arc<Leading>>) -> Response {
    let recent = state
        .recent
        .lock()
        .map(|recent| recent.json())
        .unwrap_or(Value::Null);
    let role = state
        .cluster
        .as_ref()
        .map_or("single node", |replica| replica.status().role.name());
    json(
        StatusCode::OK,
        &json!({
            "role": role,
            "instruments": state.instruments.iter().map(|(id, symbol)| json!({
                "id": id,
                "symbol": symbol,
            })).collect::<Vec<_>>(),
            "status": status_json(&state.metrics, state.kafka.as_deref(), state.cluster.as_deref()),
            "latency_window_s": dashboard::WINDOW_SECONDS,
            "latency": recent,
            "trades": dashboard::trades_json(&state.market_data),
            "snapshots_skipped": state.metrics.snapshots_skipped.load(Ordering::Relaxed),
            "kafka": state.kafka.as_deref().map(|kafka| dashboard::kafka_lag_json(&state.metrics, kafka)),
        }),
    )
}

async fn prometheus(State(state): State<Arc<Leading>>) -> Response {
    state.prometheus.response()
}

async fn follower_status(State(state): State<Arc<Following>>) -> Response {
    json(
        StatusCode::OK,
        &json!({ "cluster": crate::cluster::cluster_json(&state.replica) }),
    )
}

/// A follower's dashboard state: its part in the cluster only (the pipeline runs on the
/// leader).
async fn follower_dashboard_state(State(state): State<Arc<Following>>) -> Response {
    let cluster = crate::cluster::cluster_json(&state.replica);
    json(
        StatusCode::OK,
        &json!({
            "role": state.replica.status().role.name(),
            "following": true,
            "instruments": [],
            "status": { "cluster": cluster },
            "latency_window_s": dashboard::WINDOW_SECONDS,
            "latency": [],
            "trades": { "total": 0, "newest": [] },
            "snapshots_skipped": null,
            "kafka": null,
        }),
    )
}

async fn follower_metrics(State(state): State<Arc<Following>>) -> Response {
    state.prometheus.response()
}

async fn not_the_leader(State(state): State<Arc<Following>>) -> Response {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({
            "error": "not the leader",
            "leader_id": state.replica.status().leader_id,
        }),
    )
}

async fn snapshot(State(state): State<Arc<Leading>>) -> Response {
    let mut command = Command::empty(CommandType::Snapshot);
    command.timestamp_ns = now_ns();
    let submitted = state
        .submitter
        .lock()
        .expect("the submitter's lock is never poisoned: submitting does not panic")
        .try_submit(&command);
    match submitted {
        Ok(seq) => json(StatusCode::ACCEPTED, &json!({ "snapshot_after_seq": seq })),
        Err(busy) => error(StatusCode::SERVICE_UNAVAILABLE, &busy.to_string()),
    }
}

/// `POST /commands`: parses every line first (a bad line rejects the whole request, nothing
/// submitted), stamps each command with its ingress time, submits them in order, and answers
/// once they are durable under the journal's policy.
async fn commands(State(state): State<Arc<Leading>>, body: Body) -> Response {
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return json(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "body is not UTF-8", "submitted": 0 }),
        );
    };
    let mut parsed = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_command(line) {
            Ok(command) => parsed.push(command),
            Err(message) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &json!({ "error": message, "line": index + 1, "submitted": 0 }),
                )
            }
        }
    }
    let mut first_seq = None;
    let mut last_seq = None;
    let mut submitted = 0usize;
    let mut busy = None;
    {
        let mut submitter = state
            .submitter
            .lock()
            .expect("the submitter's lock is never poisoned: submitting does not panic");
        for command in &mut parsed {
            command.timestamp_ns = now_ns();
            match submitter.try_submit(command) {
                Ok(seq) => {
                    first_seq.get_or_insert(seq);
                    last_seq = Some(seq);
                    submitted += 1;
                }
                Err(refusal) => {
                    busy = Some(refusal);
                    break;
                }
            }
        }
    }
    // A reply that names sequences is a promise: it goes out only once those commands are
    // durable under the journal's policy. What was taken before a `busy` is waited for too.
    let durable = match last_seq {
        None => true,
        Some(last) => {
            let deadline = Instant::now() + DURABLE_WAIT;
            loop {
                if state.metrics.journal.durable_seq.load(Ordering::Acquire) >= last {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let mut reply = json!({ "submitted": submitted, "durable": durable });
    if durable {
        reply["first_seq"] = json!(first_seq);
        reply["last_seq"] = json!(last_seq);
    }
    match busy {
        Some(busy) => {
            reply["error"] = json!(busy.to_string());
            json(StatusCode::SERVICE_UNAVAILABLE, &reply)
        }
        None if durable => json(StatusCode::OK, &reply),
        None => {
            reply["error"] = json!(format!(
                "the commands were taken but not durable within {} s: they may or may not be \
                 in the journal",
                DURABLE_WAIT.as_secs()
            ));
            json(StatusCode::GATEWAY_TIMEOUT, &reply)
        }
    }
}

/// `GET /book/<instrument>[?levels=N]`: L2 depth, best first (20 levels unless asked).
async fn book(
    State(state): State<Arc<Leading>>,
    Path(instrument): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let levels = match query.as_deref() {
        None | Some("") => Some(20),
        Some(query) => query
            .strip_prefix("levels=")
            .and_then(|value| value.parse::<usize>().ok()),
    };
    let (Ok(instrument), Some(levels)) = (instrument.parse::<u32>(), levels) else {
        return error(
            StatusCode::BAD_REQUEST,
            "use /book/<instrument id>[?levels=N]",
        );
    };
    match book_json(&state.market_data, instrument, levels) {
        Some(book) => json(StatusCode::OK, &book),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("unknown instrument {instrument}"),
        ),
    }
}

/// An instrument's L2 depth: `{"instrument", "bids": [[price, qty]...], "asks": [...]}`.
pub(crate) fn book_json(market_data: &MarketData, instrument: u32, levels: usize) -> Option<Value> {
    let book = market_data.book(instrument)?;
    let (bids, asks) = book.top(levels);
    Some(json!({ "instrument": instrument, "bids": bids, "asks": asks }))
}

fn status_json(
    metrics: &Metrics,
    kafka: Option<&KafkaMetrics>,
    cluster: Option<&Replica>,
) -> Value {
    let stage = |stage: Stage| metrics.stage_seq[stage as usize].load(Ordering::Relaxed);
    let journal = &metrics.journal;
    let last_snapshot = metrics
        .last_snapshot
        .lock()
        .ok()
        .and_then(|last| last.clone())
        .map(|(seq, path, size)| json!({ "seq": seq, "path": path, "size_bytes": size }));
    json!({
        "stages": {
            "published_input": metrics.input_published_seq.load(Ordering::Relaxed),
            "journaled": stage(Stage::Journaled),
            "replicated": stage(Stage::Replicated),
            "matched": stage(Stage::Matched),
            "published": stage(Stage::Published),
        },
        "input_ring": {
            "slots": metrics.input_ring_slots_count,
            "occupancy": metrics.input_ring_occupancy(),
            "busy_rejections": metrics.busy_count.load(Ordering::Relaxed),
        },
        "journal": {
            "next_seq": journal.next_seq.load(Ordering::Relaxed),
            "durable_seq": journal.durable_seq.load(Ordering::Relaxed),
            "bytes_written": journal.bytes_written.load(Ordering::Relaxed),
            "records_written": journal.records_written.load(Ordering::Relaxed),
            "syncs": journal.syncs_count.load(Ordering::Relaxed),
        },
        "events": { "written": metrics.events_written.load(Ordering::Relaxed) },
        "last_snapshot": last_snapshot,
        "kafka": kafka.map(|kafka| json!({
            "committed_seq": kafka.committed_seq.load(Ordering::Relaxed),
            "events_committed": kafka.events_committed.load(Ordering::Relaxed),
            "events_pending": kafka.events_pending.load(Ordering::Relaxed),
            "commits": kafka.commits.load(Ordering::Relaxed),
        })),
        "cluster": cluster.map(crate::cluster::cluster_json),
    })
}
