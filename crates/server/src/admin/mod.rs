//! The admin HTTP listener: axum routes served by hyper on a small tokio runtime of its own
//! (one worker thread, never an engine thread, and not the gateway's, so that a scrape never
//! delays order entry).
//!
//! Every connection is served concurrently, with keep-alive. Limits: at most
//! [`CONNECTIONS_MAX`] connections at once (more are closed on accept), a request's headers
//! must arrive within [`HEADER_READ_TIMEOUT`], a body within [`BODY_READ_TIMEOUT`] and be at
//! most [`BODY_SIZE_MAX_BYTES`] (chunked bodies are read like any other). A slow or idle
//! client holds only its own connection. When a token is configured, every request must carry
//! it as `Authorization: Bearer <token>`, except `GET /`: the dashboard's page holds no data,
//! and its script sends the token it is given (`/#token=...`) with every request it makes.
//!
//! Browsers are kept from using the listener on a web page's behalf: a request whose `Origin`
//! is not the listener itself is refused (a page elsewhere cannot post commands to a listener
//! on loopback), and on a loopback listener the `Host` must be a loopback name (a DNS name
//! rebound to 127.0.0.1 is refused).

pub(crate) mod dashboard;
pub(crate) mod metrics;
pub(crate) mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};

use crate::log;

/// Connections served at once; one more is closed as soon as it is accepted.
pub(crate) const CONNECTIONS_MAX: usize = 256;
/// How long a request's headers may take to arrive (a connection idle between requests is
/// closed after this long too).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request's body may take to arrive.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body accepted.
pub(crate) const BODY_SIZE_MAX_BYTES: usize = 16 << 20;

/// A running admin listener.
pub(crate) struct AdminServer {
    runtime: tokio::runtime::Runtime,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl AdminServer {
    /// Binds `address` and serves `routes` (behind the token check when `token` is set).
    pub(crate) fn start(
        address: SocketAddr,
        token: Option<ringmatch_gateway::Credential>,
        routes: Router,
    ) -> anyhow::Result<AdminServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("admin")
            .enable_all()
            .build()?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .map_err(|error| {
                anyhow::anyhow!("cannot listen on {address} (admin.listen): {error}")
            })?;
        let local_addr = listener.local_addr()?;
        let routes = routes.layer(axum::middleware::from_fn_with_state(
            Arc::new(Guard {
                token,
                loopback: local_addr.ip().is_loopback(),
            }),
            authorize,
        ));
        let (stop, stopped) = watch::channel(false);
        runtime.spawn(accept_loop(listener, routes, stopped));
        Ok(AdminServer {
            runtime,
            local_addr,
            stop,
        })
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs `task` every `period` on the listener's runtime until it stops.
    pub(crate) fn every(&self, period: Duration, mut task: impl FnMut() + Send + 'static) {
        let mut stopped = self.stop.subscribe();
        self.runtime.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = ticks.tick() => task(),
                }
            }
        });
    }

    /// Stops accepting, lets requests in progress finish for a moment, and closes every
    /// connection.
    pub(crate) fn shutdown(self) {
        let _ = self.stop.send(true);
        self.runtime.shutdown_timeout(Duration::from_millis(500));
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    routes: Router,
    mut stopped: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    log!("admin: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            log!("admin: refused a connection from {peer}: {CONNECTIONS_MAX} are open");
            continue;
        };
        let service = TowerToHyperService::new(routes.clone());
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_millis(300), connection).await;
                }
            }
            drop(permit);
        });
    }
}

/// What every request is checked against.
struct Guard {
    token: Option<ringmatch_gateway::Credential>,
    /// The listener is on a loopback address.
    loopback: bool,
}

/// The host part of a `Host` header or of an origin's authority (`name:port`, `[v6]:port`).
fn host_of(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    }
}

/// Refuses a request a browser sent for another site, a loopback request under a name that
/// is not loopback, and a request without the admin token (when one is configured).
async fn authorize(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .and_then(|origin| origin.split_once("://"))
            .is_some_and(|(_, authority)| !host.is_empty() && authority == host);
        if !same {
            return error(
                StatusCode::FORBIDDEN,
                "cross-origin request refused: the admin listener serves its own page only",
            );
        }
    }
    if guard.loopback && !host.is_empty() {
        let name = host_of(host);
        let loopback_name = name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback());
        if !loopback_name {
            return error(
                StatusCode::FORBIDDEN,
                "the admin listener is on loopback: use a loopback address or localhost in the URL",
            );
        }
    }
    let page = request.method() == axum::http::Method::GET && request.uri().path() == "/";
    if let (Some(token), false) = (guard.token.as_ref(), page) {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if !given.is_some_and(|given| token.verify(given.trim().as_bytes())) {
            return error(StatusCode::UNAUTHORIZED, "admin token required");
        }
    }
    next.run(request).await
}

/// Reads a request body whole, within the size and time limits.
pub(crate) async fn read_body(body: Body) -> Result<Bytes, Response> {
    use http_body_util::BodyExt as _;
    // A declared length over the limit is refused before anything is read.
    if hyper::body::Body::size_hint(&body).lower() > BODY_SIZE_MAX_BYTES as u64 {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body over {BODY_SIZE_MAX_BYTES} bytes"),
        ));
    }
    let limited = http_body_util::Limited::new(body, BODY_SIZE_MAX_BYTES);
    match tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(problem)) => {
            if problem
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("body over {BODY_SIZE_MAX_BYTES} bytes"),
                ))
            } else {
                Err(error(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the body: {problem}"),
                ))
            }
        }
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let body = serde_json::to_string(value).expect("a JSON value always serializes");
    with_type(status, "application/json", body)
}

/// A JSON error response: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

/// A response with the given content type.
pub(crate) fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}
