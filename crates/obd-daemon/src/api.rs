//! The HTTP handlers of the control API (see [`crate::protocol`] for the routes).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::manager::Manager;
use obd_image::RegistrySource;

use crate::protocol::{ApiError, AttachRequest, CacheReply, DetachRequest, GcRequest, Health};

/// What the handlers share.
pub struct ApiState {
    /// Registry access (cache operations, layer status), when configured.
    pub remote: Option<Arc<RegistrySource>>,
    /// The attached devices.
    pub manager: Arc<Manager>,
    /// Daemon start time.
    pub started: Instant,
    /// The global config file in use, if any.
    pub service_config: Option<std::path::PathBuf>,
    /// Notified by `POST /v1/shutdown`.
    pub shutdown: Arc<Notify>,
}

/// The router of the control API.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/devices", get(devices))
        .route("/v1/attach", post(attach))
        .route("/v1/detach", post(detach))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/layers", get(layers))
        .route("/v1/cache", get(cache_list))
        .route("/v1/cache/gc", post(cache_gc))
        .route("/v1/cache/clear", post(cache_clear))
        .with_state(state)
}

fn json<T: Serialize>(code: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (code, [("content-type", "application/json")], body).into_response(),
        Err(e) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode reply: {e}"),
        ),
    }
}

fn fail(code: StatusCode, error: String) -> Response {
    let body = serde_json::to_vec(&ApiError { error }).unwrap_or_default();
    (code, [("content-type", "application/json")], body).into_response()
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = format!("invalid request body: {e}");
        Box::new(fail(StatusCode::BAD_REQUEST, msg))
    })
}

async fn health(State(s): State<Arc<ApiState>>) -> Response {
    json(
        StatusCode::OK,
        &Health {
            status: "ok".into(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: s.started.elapsed().as_secs(),
            devices: s.manager.len(),
            service_config: s.service_config.clone(),
        },
    )
}

async fn devices(State(s): State<Arc<ApiState>>) -> Response {
    json(StatusCode::OK, &s.manager.list())
}

async fn attach(State(s): State<Arc<ApiState>>, body: Bytes) -> Response {
    let req: AttachRequest = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let m = s.manager.clone();
    match tokio::task::spawn_blocking(move || m.attach(req)).await {
        Ok(Ok(entry)) => json(StatusCode::OK, &entry),
        Ok(Err(e)) => fail(StatusCode::BAD_REQUEST, format!("{e:#}")),
        Err(e) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("attach task failed: {e}"),
        ),
    }
}

async fn detach(State(s): State<Arc<ApiState>>, body: Bytes) -> Response {
    let req: DetachRequest = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let m = s.manager.clone();
    match tokio::task::spawn_blocking(move || m.detach(&req.target)).await {
        Ok(Ok(entry)) => json(StatusCode::OK, &entry),
        Ok(Err(e)) => {
            let msg = format!("{e:#}");
            let code = if msg.starts_with("no attached device") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::CONFLICT
            };
            fail(code, msg)
        }
        Err(e) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("detach task failed: {e}"),
        ),
    }
}

async fn shutdown(State(s): State<Arc<ApiState>>) -> Response {
    s.shutdown.notify_one();
    json(StatusCode::OK, &serde_json::json!({}))
}

async fn layers(State(s): State<Arc<ApiState>>) -> Response {
    json(StatusCode::OK, &s.manager.service().remote_status())
}

/// The shared cache, or the reply saying there is none.
fn cache_of(s: &ApiState) -> Result<Arc<obd_cache::BlobCache>, Box<Response>> {
    s.remote
        .as_ref()
        .and_then(|r| r.cache().cloned())
        .ok_or_else(|| {
            Box::new(fail(
                StatusCode::NOT_FOUND,
                "this daemon has no registry cache (registry access is off)".into(),
            ))
        })
}

async fn cache_list(State(s): State<Arc<ApiState>>) -> Response {
    let c = match cache_of(&s) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let reply = tokio::task::spawn_blocking(move || CacheReply {
        dir: c.dir().to_path_buf(),
        usage: serde_json::to_value(c.usage()).unwrap_or_default(),
        entries: serde_json::to_value(c.list()).unwrap_or_default(),
    })
    .await;
    match reply {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cache list failed: {e}"),
        ),
    }
}

async fn cache_gc(State(s): State<Arc<ApiState>>, body: Bytes) -> Response {
    let req: GcRequest = if body.is_empty() {
        GcRequest::default()
    } else {
        match parse(&body) {
            Ok(r) => r,
            Err(r) => return *r,
        }
    };
    let c = match cache_of(&s) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match tokio::task::spawn_blocking(move || c.gc(req.target)).await {
        Ok(Ok(report)) => json(StatusCode::OK, &report),
        Ok(Err(e)) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cache gc failed: {e}"),
        ),
    }
}

async fn cache_clear(State(s): State<Arc<ApiState>>) -> Response {
    let c = match cache_of(&s) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match tokio::task::spawn_blocking(move || c.clear()).await {
        Ok(Ok(freed)) => json(StatusCode::OK, &serde_json::json!({ "freedBytes": freed })),
        Ok(Err(e)) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cache clear failed: {e}"),
        ),
    }
}
