//! The Prometheus endpoint (`exporterConfig`): `GET <uriPrefix>` on TCP `port` answers the
//! process-wide [`obd_metrics::Metrics`] in the OpenMetrics text format.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use obd_image::config::global::ExporterConfig;
use tracing::{info, warn};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics() -> Response {
    (
        StatusCode::OK,
        [("content-type", CONTENT_TYPE)],
        obd_metrics::Metrics::global().encode(),
    )
        .into_response()
}

/// The exporter's router: `prefix` (e.g. `/metrics`) answers the metrics.
pub fn router(prefix: &str) -> Router {
    let path = if prefix.starts_with('/') {
        prefix.to_string()
    } else {
        format!("/{prefix}")
    };
    Router::new().route(&path, get(metrics))
}

/// Serve the metrics on `0.0.0.0:<port>` in the background. A port that cannot be bound
/// is logged and the daemon goes on without metrics.
pub async fn spawn_exporter(cfg: &ExporterConfig) {
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], cfg.port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!("metrics exporter: cannot listen on {addr}: {e}; metrics are off");
            return;
        }
    };
    let app = router(&cfg.uri_prefix);
    info!("metrics exporter on http://{addr}{}", cfg.uri_prefix);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!("metrics exporter stopped: {e}");
        }
    });
}
