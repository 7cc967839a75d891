//! HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, the JSON API
//! ([`crate::api`]) and an index page.

use std::{future::Future, path::Path, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::{
    api,
    exposition::{self, Exporter},
};

pub struct AppState {
    pub registry: Registry,
    pub exporter: Arc<Exporter>,
    /// When the agent started: the API's monotonic clock.
    pub started: Instant,
    /// [`api::bucket_bounds_seconds`], computed once.
    pub bounds: Vec<f64>,
}

impl AppState {
    pub fn new(registry: Registry, exporter: Arc<Exporter>) -> Self {
        Self {
            registry,
            exporter,
            started: Instant::now(),
            bounds: api::bucket_bounds_seconds(),
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(api::CONTAINERS_PATH, get(containers))
        .with_state(state)
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>stallwatch</title></head><body><h1>stallwatch</h1>\
         <ul><li><a href=\"/metrics\">/metrics</a></li><li><a href=\"/readyz\">/readyz</a></li>\
         <li><a href=\"/healthz\">/healthz</a></li>\
         <li><a href=\"/api/v1/containers\">/api/v1/containers</a> (JSON, for agent top)</li></ul></body></html>\n",
    )
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let openmetrics = exposition::wants_openmetrics(accept);
    let rendered =
        tokio::task::spawn_blocking(move || exposition::render(&state.registry, openmetrics)).await;
    match rendered {
        Ok(Ok(body)) => {
            let content_type = if openmetrics {
                exposition::OPENMETRICS_CONTENT_TYPE
            } else {
                exposition::PROMETHEUS_CONTENT_TYPE
            };
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(Err(_)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
        Err(e) => {
            tracing::error!("the scrape task failed: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the scrape failed; see the agent's log\n",
            )
                .into_response()
        }
    }
}

async fn containers(State(state): State<Arc<AppState>>) -> Response {
    let encoded = tokio::task::spawn_blocking(move || {
        let (node, errors) = crate::node::read(Path::new("/proc"));
        for e in errors {
            tracing::debug!("node totals: {e}");
        }
        let uptime = state.started.elapsed().as_secs_f64();
        state.exporter.with_collector(|collector| {
            let view = collector.collect();
            serde_json::to_vec(&api::snapshot(&view, &node, uptime, &state.bounds))
        })
    })
    .await;
    match encoded {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(e)) => {
            tracing::error!("encoding {}: {e}", api::CONTAINERS_PATH);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the document failed\n",
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!("the {} task failed: {e}", api::CONTAINERS_PATH);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "collecting failed; see the agent's log\n",
            )
                .into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.exporter.with_collector(|c| c.readiness()) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(missing) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{missing}\n"),
        )
            .into_response(),
    }
}
