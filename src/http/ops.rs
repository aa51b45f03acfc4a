//! Operational endpoints: liveness, readiness, metrics, the API document.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{Problem, problem};
use crate::domain::health;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(tag = "operations", responses((status = 200, body = Health), (status = 400, response = problem::TokenInQuery)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

// utoipa drops a property example beside `value_type = Object`: the whole
// answer's example carries `checks`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "status": "ready",
    "checks": {"database": {"backend": "postgres", "ok": true}, "cache": {"backend": "redis", "ok": true}},
}))]
pub struct Ready {
    #[schema(example = "ready")]
    status: &'static str,
    #[schema(value_type = Object)]
    checks: health::Readiness,
}

/// Readiness: 200 only when the database and the cache (Redis) answer; 503
/// names what is down.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, body = Ready),
        (status = 400, response = problem::TokenInQuery),
        (status = 503, response = problem::NotReady)
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let checks = state.core.readiness().await;
    if checks.ready() {
        return HttpResponse::Ok().json(Ready { status: "ready", checks });
    }
    let down = checks.down();
    let mut problem = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        Some(format!("not answering: {}", down.join(", "))),
    );
    let mut extra = serde_json::Map::new();
    extra.insert("down".into(), serde_json::json!(down));
    extra.insert("checks".into(), serde_json::to_value(&checks).unwrap_or_default());
    problem.extra = Some(extra);
    problem.response()
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(tag = "operations", responses((status = 200, content_type = "text/plain", body = String, example = "# TYPE latchkey_http_requests_total counter\nlatchkey_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1\n"), (status = 400, response = problem::TokenInQuery)))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// This document: OpenAPI 3.1 of every route.
#[utoipa::path(tag = "operations", responses((status = 200, content_type = "application/json", body = Object, example = json!({"openapi": "3.1.0", "info": {"title": "latchkey", "version": "0.1.0"}, "paths": {}})), (status = 400, response = problem::TokenInQuery)))]
#[get("/openapi.json")]
pub async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(state.openapi_json.clone())
}
