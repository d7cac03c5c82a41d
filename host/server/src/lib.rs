//! flowhost's HTTP API: NDJSON intake, the views, parked records, plugins, health probes and
//! Prometheus metrics, over the same store, registry and engine the CLI uses.
//!
//! Read routes are open; the admin routes (re-queue, rollback) need the bearer token when
//! one is configured, and a server on a non-loopback address must have one. Every refusal
//! is a JSON error naming what was wrong.

mod changes;
mod error;
mod health;
mod intake;
mod metrics;
mod openapi;
mod ops;
mod ui;
mod views;

pub use error::ApiError;
pub use metrics::Metrics;
pub use views::MAX_PAGE;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use error::ApiResult;
use flowhost_engine::Engine;
use flowhost_registry::Registry;
use flowhost_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How the server listens and what it accepts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Required as `Authorization: Bearer <token>` on the admin routes when set.
    pub admin_token: Option<String>,
    /// The largest request body, in bytes (413 above it).
    pub body_limit: usize,
    /// The longest NDJSON line, in bytes (the line is refused above it).
    pub max_line_bytes: usize,
    /// What one record may hold.
    pub intake: flowhost_core::intake::IntakeLimits,
    /// The most requests served at once; more get 503 with `retry-after`.
    pub max_concurrent_requests: usize,
    /// How long a request body may send nothing before the request ends (408).
    pub body_idle_timeout: std::time::Duration,
    /// How long a client may take to send a request's headers before its connection is
    /// closed.
    pub header_read_timeout: std::time::Duration,
    /// The longest a request may take in all; an intake past it stops reading and answers
    /// 408 with what it stored, anything else gets 503.
    pub request_timeout: std::time::Duration,
    /// The most open connections; more are closed at once.
    pub max_connections: usize,
    /// Group commit of HTTP intake: concurrent requests share transactions (`None`: each
    /// request appends in transactions of its own).
    pub group_commit: Option<flowhost_edges::group::GroupConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            body_limit: 64 << 20,
            max_line_bytes: 4 << 20,
            intake: flowhost_core::intake::IntakeLimits::default(),
            max_concurrent_requests: 256,
            body_idle_timeout: std::time::Duration::from_secs(30),
            header_read_timeout: std::time::Duration::from_secs(10),
            request_timeout: std::time::Duration::from_secs(300),
            max_connections: 1024,
            group_commit: Some(flowhost_edges::group::GroupConfig::default()),
        }
    }
}

impl ServerConfig {
    /// Refuses an open admin surface: on a non-loopback address the admin routes need a
    /// token.
    pub fn check(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && self.admin_token.as_deref().is_none_or(str::is_empty)
        {
            return Err(format!(
                "refusing to listen on {} without an admin token: the admin routes (re-queue, \
                 rollback) would be open to the network; set server.admin_token \
                 (FLOWHOST_ADMIN_TOKEN or --admin-token), or listen on a loopback address",
                self.listen
            ));
        }
        if self.body_limit == 0 || self.max_line_bytes == 0 {
            return Err("server.body_limit_bytes and server.max_line_bytes must be above 0".into());
        }
        Ok(())
    }
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    /// The group committer of HTTP intake, when `group_commit` is on.
    group: Option<flowhost_edges::group::GroupAppender>,
    registry: Registry,
    /// Places for requests served at once (`max_concurrent_requests`).
    places: Arc<tokio::sync::Semaphore>,
    config: ServerConfig,
    metrics: Option<Metrics>,
    shutdown: CancellationToken,
    /// The change feed's last number, watched by one task for every waiting request.
    last_change: std::sync::OnceLock<tokio::sync::watch::Receiver<i64>>,
    /// The NATS edge's status, when `serve` runs one.
    broker: std::sync::OnceLock<flowhost_edges::broker::BrokerStatus>,
}

impl AppState {
    /// The state over a running engine and its registry; `shutdown` fires when the process
    /// starts to stop (readiness turns 503 at once).
    pub fn new(
        engine: Engine,
        registry: Registry,
        config: ServerConfig,
        metrics: Option<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let group = config
            .group_commit
            .map(|g| flowhost_edges::group::GroupAppender::spawn(engine.store().clone(), g));
        Self {
            inner: Arc::new(Inner {
                group,
                engine,
                registry,
                places: Arc::new(tokio::sync::Semaphore::new(
                    config.max_concurrent_requests.max(1),
                )),
                config,
                metrics,
                shutdown,
                last_change: std::sync::OnceLock::new(),
                broker: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The change feed's last number as one task sees it (started on first use): it looks
    /// after each projection of this process and every 250 ms (other hosts' projections),
    /// so waiting requests read the database only when there is something new, however
    /// many wait.
    pub(crate) fn last_change(&self) -> tokio::sync::watch::Receiver<i64> {
        self.inner
            .last_change
            .get_or_init(|| {
                let (tx, rx) = tokio::sync::watch::channel(0);
                let (engine, stop) = (self.inner.engine.clone(), self.inner.shutdown.clone());
                tokio::spawn(async move {
                    loop {
                        let projected = engine.projected();
                        match engine.store().last_change().await {
                            Ok(n) => {
                                tx.send_if_modified(|last| std::mem::replace(last, n) != n);
                            }
                            Err(e) => tracing::debug!("cannot read the change feed's end: {e}"),
                        }
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tx.closed() => break,
                            _ = projected => {}
                            _ = tokio::time::sleep(changes::LOOK_AGAIN) => {}
                        }
                    }
                });
                rx
            })
            .clone()
    }

    pub fn store(&self) -> &Store {
        self.inner.engine.store()
    }

    /// Shows a broker edge's status in `/health/ready` and `/metrics` (set once).
    pub fn set_broker(&self, status: flowhost_edges::broker::BrokerStatus) {
        let _ = self.inner.broker.set(status);
    }

    pub fn broker(&self) -> Option<&flowhost_edges::broker::BrokerStatus> {
        self.inner.broker.get()
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The group committer of HTTP intake, if on.
    fn group(&self) -> Option<&flowhost_edges::group::GroupAppender> {
        self.inner.group.as_ref()
    }

    fn metrics(&self) -> Option<&Metrics> {
        self.inner.metrics.as_ref()
    }

    fn shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }
}

/// Every route, and `GET /openapi.json` describing them (built by the same router, so the
/// two cannot differ).
pub fn router(state: AppState) -> Router {
    use utoipa::OpenApi;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let admin = OpenApiRouter::new()
        .routes(routes!(ops::requeue))
        .routes(routes!(ops::rollback))
        .routes(routes!(ops::reassociate))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let (routes, api) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(intake::post_records))
        .routes(routes!(ops::models))
        .routes(routes!(views::reference))
        .routes(routes!(views::view_page))
        .routes(routes!(ops::parked))
        .routes(routes!(ops::plugins))
        .routes(routes!(ops::shadow))
        .routes(routes!(ops::hosts))
        .routes(routes!(changes::changes))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(metrics::scrape))
        .merge(admin)
        .split_for_parts();
    let listing: Vec<String> = api
        .paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("DELETE", item.delete.is_some()),
            ]
            .into_iter()
            .filter(|(_, served)| *served)
            .map(move |(method, _)| format!("{method} {path}"))
        })
        .collect();
    let listing = Arc::new(listing.join(", "));
    let document = Arc::new(api.to_json().unwrap_or_else(|e| {
        format!(r#"{{"error":"the OpenAPI document could not be written: {e}"}}"#)
    }));
    routes
        .route("/", get(ui::index))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/app.css", get(ui::style))
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        (*document).clone(),
                    )
                }
            }),
        )
        .fallback(move |request: Request| not_found(request, listing.clone()))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(count_requests))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_concurrency,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `stop` fires, then stops accepting
/// connections and waits for the requests in flight (their records are then durable).
///
/// HTTP/1.1 over hyper, with what a service facing slow or many clients needs: a client
/// must send its headers within `header_read_timeout` (else the connection closes), and at
/// most `max_connections` connections are open (more are closed at once, logged). Bodies
/// and whole requests are bounded by the routes (idle-body timeout, request deadline).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let config = state.config().clone();
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let mut refused_since_log = 0u64;
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                    }
                    continue;
                }
            },
        };
        let Ok(place) = open.clone().try_acquire_owned() else {
            refused_since_log += 1;
            if refused_since_log.is_power_of_two() {
                tracing::warn!(
                    refused = refused_since_log,
                    "{} connections are open (server.max_connections); closing new ones",
                    config.max_connections
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(place);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Fails with 404 naming the known models when `model` is not one.
pub(crate) async fn known_model(store: &Store, model: &str) -> ApiResult<()> {
    match flowhost_edges::models::unknown_model(store, model).await? {
        None => Ok(()),
        Some(message) => Err(ApiError::not_found(message)),
    }
}

/// An NDJSON answer; `next` (the cursor of the next page) goes in `x-next-after`.
pub(crate) fn ndjson(body: String, next: Option<String>) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert("x-next-after", next);
    }
    response
}

/// Serves at most `max_concurrent_requests` requests at once; the next ones are told at
/// once to come back (503 with `retry-after`) rather than queued without bound. Health
/// probes always get through, so an overloaded host is not taken for a dead one.
async fn limit_concurrency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let deadline = state.config().request_timeout;
    if request.uri().path().starts_with("/health/") {
        return within_deadline(deadline, next.run(request)).await;
    }
    let Ok(_place) = state.inner.places.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the service is serving {} requests at once (server.max_concurrent_requests); \
                 retry in a moment",
                state.config().max_concurrent_requests
            ),
        )
        .into_response();
    };
    // Intake watches the deadline itself (to answer with what it stored); this is the
    // backstop for every route, a little later.
    within_deadline(
        deadline + std::time::Duration::from_secs(10),
        next.run(request),
    )
    .await
}

/// A request's work, ended with 503 past `deadline`.
async fn within_deadline(
    deadline: std::time::Duration,
    work: impl std::future::Future<Output = Response>,
) -> Response {
    match tokio::time::timeout(deadline, work).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                deadline_s = deadline.as_secs_f64(),
                "a request ran past its deadline and was stopped"
            );
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than {} s (server.request_timeout_s) and was stopped",
                    deadline.as_secs_f64()
                ),
            )
            .into_response()
        }
    }
}

/// Why a request that a browser sent from another site's page is refused: its `Origin` is
/// not this host (as the request's `Host` names it). Requests without `Origin` (curl,
/// scripts, the CLI) pass.
fn foreign_origin(headers: &axum::http::HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let own = |scheme: &str| format!("{scheme}://{host}");
    if !host.is_empty() && (origin == own("http") || origin == own("https")) {
        return None;
    }
    Some(format!(
        "cross-site request refused: admin actions are not taken for a page from origin \
         {:?}; send them without an Origin header (curl, scripts) or from this host's own page",
        origin.chars().take(100).collect::<String>()
    ))
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(refusal) = foreign_origin(request.headers()) {
        return ApiError::new(StatusCode::FORBIDDEN, refusal).into_response();
    }
    let Some(token) = state
        .config()
        .admin_token
        .as_deref()
        .filter(|t| !t.is_empty())
    else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same_secret(given.trim().as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "the admin token is wrong").into_response()
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this is an admin route: send the admin token as `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}

async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    ::metrics::counter!(
        "flowhost_http_requests_total",
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

/// A path no route serves: the answer lists the routes (from the OpenAPI document).
async fn not_found(request: Request, routes: Arc<String>) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}; the API: {routes} (described in GET /openapi.json)",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the server failed on this request (a bug: please report it with the request)",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn an_open_admin_surface_is_refused() {
        let mut c = ServerConfig {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..ServerConfig::default()
        };
        assert!(c.check().unwrap_err().contains("admin token"));
        c.admin_token = Some("s3cret".into());
        assert!(c.check().is_ok());
        c.admin_token = None;
        c.listen = "[::1]:8080".parse().unwrap();
        assert!(c.check().is_ok());
    }
}
