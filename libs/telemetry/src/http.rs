//! Operational HTTP endpoints (metrics, liveness, readiness) and request metrics.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::{metrics, render_metrics};

/// Upper bound on one readiness check, so a hung dependency makes the probe fail instead of
/// piling up requests that never answer.
const READINESS_TIMEOUT: Duration = Duration::from_secs(5);

/// Route label of requests that matched no route: raw paths would explode the label cardinality.
const UNMATCHED_ROUTE: &str = "unmatched";

/// Router with `GET /metrics`, `GET /health/live` and `GET /health/ready` (runs `ready`).
///
/// Readiness answers 200 `ok`, or 503 with the reason as text when `ready` fails or takes longer
/// than five seconds.
pub fn ops_router<F, Fut>(ready: F) -> Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health/live", get(|| async { "ok" }))
        .route(
            "/health/ready",
            get(move || {
                let check = ready();
                async move { readiness(check).await }
            }),
        )
}

/// Serves [`render_metrics`] with the content type Prometheus expects.
async fn metrics_handler() -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        render_metrics(),
    )
        .into_response()
}

/// Runs one readiness check and maps its outcome to the probe's answer.
async fn readiness(check: impl Future<Output = Result<(), String>>) -> Response {
    let reason = match tokio::time::timeout(READINESS_TIMEOUT, check).await {
        Ok(Ok(())) => return (StatusCode::OK, "ok").into_response(),
        Ok(Err(reason)) => reason,
        Err(_elapsed) => format!(
            "readiness check did not answer within {} s",
            READINESS_TIMEOUT.as_secs()
        ),
    };
    tracing::warn!(reason = %reason, "service is not ready");
    (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
}

/// Middleware recording `cuttle_http_request_duration_seconds` by method, route template and
/// status; add it with `Router::layer(axum::middleware::from_fn(track_http))` so that the
/// matched route is known when it runs.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics()
        .http_requests
        .with_label_values(&[
            method,
            route.as_deref().unwrap_or(UNMATCHED_ROUTE),
            response.status().as_str(),
        ])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Method label; extension methods are folded into `OTHER` because clients choose them freely.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request as HttpRequest;
    use tower::ServiceExt as _;

    async fn get_text(router: Router, uri: &str) -> (StatusCode, String) {
        let request = HttpRequest::get(uri).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn always_ready() -> Router {
        ops_router(|| async { Ok(()) })
    }

    #[tokio::test]
    async fn liveness_answers_ok() {
        assert_eq!(
            get_text(always_ready(), "/health/live").await,
            (StatusCode::OK, "ok".to_owned())
        );
    }

    #[tokio::test]
    async fn readiness_answers_ok_when_the_check_passes() {
        assert_eq!(
            get_text(always_ready(), "/health/ready").await,
            (StatusCode::OK, "ok".to_owned())
        );
    }

    #[tokio::test]
    async fn readiness_answers_503_with_the_reason_when_the_check_fails() {
        let router = ops_router(|| async { Err("database unreachable".to_owned()) });
        assert_eq!(
            get_text(router, "/health/ready").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "database unreachable".to_owned()
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_answers_503_when_the_check_hangs() {
        // With the clock paused, Tokio advances time as soon as every task waits.
        let router = ops_router(std::future::pending::<Result<(), String>>);
        let (status, body) = get_text(router, "/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("did not answer"), "{body}");
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_text_format() {
        metrics().tasks_queued.set(0);
        let request = HttpRequest::get("/metrics").body(Body::empty()).unwrap();
        let response = always_ready().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            prometheus::TEXT_FORMAT
        );
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("cuttle_tasks_queued"));
    }

    #[tokio::test]
    async fn requests_are_recorded_by_route_template_not_raw_path() {
        let router = Router::new()
            .route(
                "/test-only/projects/{id}",
                get(|| async { StatusCode::NO_CONTENT }),
            )
            .layer(axum::middleware::from_fn(track_http));
        let (status, _) = get_text(router.clone(), "/test-only/projects/Projects-42").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = get_text(router, "/test-only/nowhere/Projects-42").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let rendered = render_metrics();
        assert!(
            rendered.contains(r#"method="GET",route="/test-only/projects/{id}",status="204""#),
            "{rendered}"
        );
        assert!(rendered.contains(r#"method="GET",route="unmatched",status="404""#));
        assert!(!rendered.contains("Projects-42"));
    }
}
