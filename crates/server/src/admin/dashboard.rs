//! The live dashboard: `GET /` serves one page (HTML, CSS and script embedded in the binary,
//! nothing fetched from elsewhere) that polls `GET /dashboard/state` and `GET /book/<id>`
//! twice a second.
//!
//! `/dashboard/state` carries what an operator watches: the stages, the rings, the journal,
//! snapshots, the Kafka output's lag, the cluster's role and each member's lag, the newest
//! trades, and per-stage latency percentiles over the last [`WINDOW_SECONDS`] seconds. The
//! window comes from a sampler on the admin runtime that once a second takes the difference
//! of each cumulative latency histogram since its previous look and keeps the last
//! [`WINDOW_SECONDS`] differences, sparse.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::Response;
use hdrhistogram::Histogram;
use ringmatch_gateway::GatewayMetrics;
use ringmatch_kafka::KafkaMetrics;
use ringmatch_pipeline::{new_histogram, Metrics, Stage};
use serde_json::{json, Value};

/// The page.
pub(crate) const PAGE: &str = include_str!("dashboard.html");

/// The latency window, in seconds (one sample a second).
pub(crate) const WINDOW_SECONDS: usize = 10;

/// Reads one cumulative latency histogram (nanoseconds).
type Source = Box<dyn Fn() -> Option<Histogram<u64>> + Send + Sync>;

struct Series {
    name: &'static str,
    source: Source,
    previous: Option<Histogram<u64>>,
    /// The last differences, oldest first: (value in ns, count) pairs.
    deltas: VecDeque<Vec<(u64, u64)>>,
}

/// Latency over the last seconds, per series.
pub(crate) struct Recent {
    series: Vec<Series>,
}

fn copy_of(shared: &Mutex<Histogram<u64>>) -> Option<Histogram<u64>> {
    shared.lock().ok().map(|histogram| histogram.clone())
}

impl Recent {
    /// The stages of `metrics`, the gateway's wire to wire and the Kafka commits, when there.
    pub(crate) fn new(
        metrics: &Arc<Metrics>,
        gateway: Option<&Arc<GatewayMetrics>>,
        kafka: Option<&Arc<KafkaMetrics>>,
    ) -> Recent {
        let mut series = Vec::new();
        for stage in Stage::ALL {
            let metrics = Arc::clone(metrics);
            series.push((
                stage.name(),
                Box::new(move || copy_of(&metrics.stage_latency[stage as usize])) as Source,
            ));
        }
        {
            let metrics = Arc::clone(metrics);
            series.push((
                "journal commit",
                Box::new(move || copy_of(&metrics.journal_sync)),
            ));
        }
        if let Some(gateway) = gateway {
            let gateway = Arc::clone(gateway);
            series.push((
                "wire to wire",
                Box::new(move || copy_of(&gateway.wire_to_wire)),
            ));
        }
        if let Some(kafka) = kafka {
            let kafka = Arc::clone(kafka);
            series.push((
                "kafka commit",
                Box::new(move || copy_of(&kafka.commit_latency)),
            ));
        }
        Recent {
            series: series
                .into_iter()
                .map(|(name, source)| Series {
                    name,
                    // The first look, taken here before the listeners open: everything
                    // recorded from now on is in some sample's difference.
                    previous: source(),
                    source,
                    deltas: VecDeque::with_capacity(WINDOW_SECONDS + 1),
                })
                .collect(),
        }
    }

    /// Takes one sample of every series (called once a second).
    pub(crate) fn sample(&mut self) {
        for series in &mut self.series {
            let Some(now) = (series.source)() else {
                continue;
            };
            let mut delta = Vec::new();
            // A histogram only grows, so the difference is per value.
            if let Some(previous) = &series.previous {
                for value in now.iter_recorded() {
                    let at = value.value_iterated_to();
                    let count = value.count_at_value().saturating_sub(previous.count_at(at));
                    if count > 0 {
                        delta.push((at, count));
                    }
                }
            }
            series.previous = Some(now);
            if series.deltas.len() == WINDOW_SECONDS {
                series.deltas.pop_front();
            }
            series.deltas.push_back(delta);
        }
    }

    /// `[{"name", "count", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"}]` over the
    /// window (null percentiles when nothing was recorded).
    pub(crate) fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .series
            .iter()
            .map(|series| {
                let mut window = new_histogram();
                for delta in &series.deltas {
                    for (value, count) in delta {
                        window.saturating_record_n(*value, *count);
                    }
                }
                let micros = |quantile: f64| -> Value {
                    if window.is_empty() {
                        Value::Null
                    } else {
                        json!(window.value_at_quantile(quantile) as f64 / 1e3)
                    }
                };
                json!({
                    "name": series.name,
                    "count": window.len(),
                    "p50_us": micros(0.5),
                    "p90_us": micros(0.9),
                    "p99_us": micros(0.99),
                    "p999_us": micros(0.999),
                    "max_us": micros(1.0),
                })
            })
            .collect();
        Value::Array(rows)
    }
}

/// The page's answer.
pub(crate) async fn page() -> Response {
    super::with_type(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_string())
}

/// The trades part of the state: the newest 20, newest first.
pub(crate) fn trades_json(market_data: &ringmatch_pipeline::MarketData) -> Value {
    let (trades, total) = market_data.recent_trades(20);
    json!({
        "total": total,
        "newest": trades.iter().map(|trade| json!({
            "seq": trade.seq,
            "timestamp_ns": trade.timestamp_ns,
            "instrument": trade.instrument,
            "taker_side": trade.taker_side.name(),
            "price": trade.price,
            "qty": trade.qty,
        })).collect::<Vec<_>>(),
    })
}

/// The Kafka output's lag: events handed over and not committed, and commands matched whose
/// events are not all committed.
pub(crate) fn kafka_lag_json(metrics: &Metrics, kafka: &KafkaMetrics) -> Value {
    let matched = metrics.stage_seq[Stage::Matched as usize].load(Ordering::Relaxed);
    let committed = kafka.committed_seq.load(Ordering::Relaxed);
    json!({
        "events_pending": kafka.events_pending.load(Ordering::Relaxed),
        "committed_seq": committed,
        "commands_behind": matched.saturating_sub(committed),
    })
}
