//! The HTTP skeleton: health, readiness, metrics, the API document, problem
//! bodies and headers every response carries.

use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TestApp};

async fn health_and_readiness(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["cache-control"], "no-store");
    assert!(health.headers().contains_key("x-request-id"));

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    let expected_db = if db == DbKind::Postgres { "postgres" } else { "sqlite" };
    let expected_cache = if cache == CacheKind::Redis { "redis" } else { "memory" };
    assert_eq!(body["checks"]["database"]["backend"], expected_db);
    assert_eq!(body["checks"]["cache"]["backend"], expected_cache);
}
each_stack!(health_and_readiness_on, health_and_readiness);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_redis_when_it_is_down() {
    // Redis at a port nothing listens on: the service still starts (the pool
    // connects lazily) and readiness says what is missing.
    let app = TestApp::spawn_with(DbKind::Sqlite, CacheKind::Redis, |c| {
        c.redis_url = Some(secrecy::SecretString::from("redis://127.0.0.1:1"));
        c.redis.timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["code"], "unavailable");
    assert_eq!(body["down"], serde_json::json!(["redis"]));
    assert!(body["detail"].as_str().expect("detail").contains("redis"));
    assert_eq!(app.get("/healthz").await.status(), 200, "liveness does not depend on Redis");
}

async fn problems_metrics_and_openapi(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;

    let missing = app.get("/v1/nothing-here").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    assert_eq!(missing.headers()["cache-control"], "no-store");
    let body: serde_json::Value = missing.json().await.expect("json");
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["status"], 404);
    assert_eq!(body["type"], "urn:latchkey:problem:not_found");

    app.get("/healthz").await;
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("latchkey_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/healthz\""), "{text}");
    assert!(text.contains("latchkey_http_request_duration_seconds_bucket"), "{text}");

    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"), "{}", doc["openapi"]);
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    assert!(doc["components"]["schemas"].get("Problem").is_some());
}
each_stack!(problems_metrics_and_openapi_on, problems_metrics_and_openapi);
