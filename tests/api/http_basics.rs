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

/// The JSON value a local `$ref` (`#/components/...`) points at.
fn resolve<'a>(doc: &'a serde_json::Value, reference: &str) -> Option<&'a serde_json::Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn collect_refs<'a>(value: &'a serde_json::Value, refs: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(|r| r.as_str()) {
                refs.push(reference);
            }
            map.values().for_each(|v| collect_refs(v, refs));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

/// Every error answer a route documents is one of the shared problem
/// responses: `application/problem+json` with the Problem schema, examples
/// whose `status` is the route's and whose `type` matches their `code`;
/// every shared response is used, and no `$ref` in the document dangles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_problem_responses_are_shared_and_resolve() {
    let app = TestApp::spawn(DbKind::Sqlite, CacheKind::Memory).await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");

    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        assert!(resolve(&doc, reference).is_some(), "dangling $ref {reference}");
    }

    let mut used = std::collections::BTreeSet::new();
    let mut problem_rows = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let Some(responses) = operation.get("responses").and_then(|r| r.as_object()) else { continue };
            for (status, response) in responses {
                let row = format!("{} {path} {status}", method.to_uppercase());
                let status: u64 = status.parse().unwrap_or_else(|_| panic!("{row}: status is a number"));
                if status < 400 {
                    continue;
                }
                problem_rows += 1;
                let reference = response["$ref"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{row}: not a shared response (use one of http::error::problem)"));
                assert!(reference.starts_with("#/components/responses/"), "{row}: {reference}");
                used.insert(reference.to_owned());
                let shared = resolve(&doc, reference).unwrap_or_else(|| panic!("{row}: {reference} dangles"));
                assert!(
                    !shared["description"].as_str().unwrap_or_default().is_empty(),
                    "{row}: {reference} has no description"
                );
                let content = shared["content"].as_object().unwrap_or_else(|| panic!("{row}: {reference} has no body"));
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    ["application/problem+json"],
                    "{row}: {reference} content types"
                );
                let media = &content["application/problem+json"];
                assert_eq!(media["schema"]["$ref"], "#/components/schemas/Problem", "{row}: {reference} schema");
                let examples: Vec<&serde_json::Value> = match media.get("examples").and_then(|e| e.as_object()) {
                    Some(named) => named.values().map(|e| &e["value"]).collect(),
                    None => media.get("example").into_iter().collect(),
                };
                assert!(!examples.is_empty(), "{row}: {reference} has no example");
                for example in examples {
                    assert_eq!(example["status"], status, "{row}: {reference} example {example}");
                    let code = example["code"].as_str().unwrap_or_else(|| panic!("{row}: example without code"));
                    assert_eq!(example["type"], format!("urn:latchkey:problem:{code}"), "{row}: {reference}");
                }
                if status == 429 {
                    for header in ["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"] {
                        assert!(shared["headers"].get(header).is_some(), "{row}: {reference} documents {header}");
                    }
                }
            }
        }
    }
    assert!(problem_rows >= 50, "only {problem_rows} problem rows: is the walk still finding the routes?");
    for name in doc["components"]["responses"].as_object().expect("shared responses").keys() {
        assert!(used.contains(&format!("#/components/responses/{name}")), "{name} is not used by any route");
    }
}
