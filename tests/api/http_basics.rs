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
        // 405 is the answer of the methods an operation is not: no
        // operation lists it.
        if name == "MethodNotAllowed" {
            continue;
        }
        assert!(used.contains(&format!("#/components/responses/{name}")), "{name} is not used by any route");
    }
}

/// The shared response an operation documents for `status`, resolved.
fn documented<'a>(
    doc: &'a serde_json::Value,
    operation: &'a serde_json::Value,
    status: u16,
) -> Option<&'a serde_json::Value> {
    let response = operation["responses"].get(status.to_string())?;
    match response["$ref"].as_str() {
        Some(reference) => resolve(doc, reference),
        None => Some(response),
    }
}

/// The codes of a problem response's examples.
fn example_codes(response: &serde_json::Value) -> Vec<String> {
    let media = &response["content"]["application/problem+json"];
    let examples: Vec<&serde_json::Value> = match media.get("examples").and_then(|e| e.as_object()) {
        Some(named) => named.values().map(|e| &e["value"]).collect(),
        None => media.get("example").into_iter().collect(),
    };
    examples.iter().filter_map(|e| e["code"].as_str().map(str::to_owned)).collect()
}

/// Whether a body's schema shows an example: its own, or one on every
/// property (through `$ref`s, arrays, `allOf`s and `oneOf`s).
fn has_example(doc: &serde_json::Value, schema: &serde_json::Value, seen: &mut Vec<String>) -> bool {
    if schema.get("example").is_some() || schema.get("examples").is_some() || schema.get("enum").is_some() {
        return true;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        if seen.iter().any(|s| s == reference) {
            return true;
        }
        seen.push(reference.to_owned());
        return resolve(doc, reference).is_some_and(|target| has_example(doc, target, seen));
    }
    if let Some(variants) = schema["oneOf"].as_array().or(schema["allOf"].as_array()) {
        return variants.iter().all(|v| v["type"] == "null" || has_example(doc, v, seen));
    }
    if let Some(items) = schema.get("items") {
        return has_example(doc, items, seen);
    }
    match schema["properties"].as_object() {
        Some(properties) => properties.values().all(|p| has_example(doc, p, seen)),
        None => false,
    }
}

/// What a generator needs of every operation: each status the service can
/// answer, with the problem schema, and an example of every body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_answer_and_example() {
    let app = TestApp::spawn(DbKind::Sqlite, CacheKind::Memory).await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");

    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            operations += 1;
            let row = format!("{} {path}", method.to_uppercase());
            let needs = |status: u16, why: &str| {
                assert!(documented(&doc, operation, status).is_some(), "{row}: documents no {status} ({why})");
            };
            needs(400, "a token in the query string is refused on every route");
            if let Some(body) = operation.get("requestBody") {
                needs(400, "a body that does not parse");
                needs(413, "a body over 64 KiB");
                needs(415, "a body of another media type");
                for (media_type, media) in body["content"].as_object().expect("request content") {
                    let example = media.get("example").is_some() || media.get("examples").is_some();
                    assert!(
                        example || has_example(&doc, &media["schema"], &mut Vec::new()),
                        "{row}: {media_type} request has no example"
                    );
                }
            }
            let schemes: Vec<&str> = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|requirement| requirement.as_object())
                .flat_map(|requirement| requirement.keys().map(String::as_str))
                .collect();
            if !schemes.is_empty() {
                needs(401, "no valid credential");
            }
            if schemes.contains(&"session_cookie") && method != "get" {
                let forbidden = documented(&doc, operation, 403).unwrap_or_else(|| panic!("{row}: no 403 (CSRF)"));
                assert!(
                    example_codes(forbidden).iter().any(|c| c == "csrf_rejected"),
                    "{row}: 403 shows no csrf_rejected"
                );
            }
            if path.starts_with("/v1/login/") || path.starts_with("/v1/registration/") || path == "/v1/sessions/refresh"
            {
                needs(429, "the per-IP pre-filter");
            }
            for (status, response) in operation["responses"].as_object().expect("responses") {
                if !status.starts_with('2') {
                    continue;
                }
                for (media_type, media) in response["content"].as_object().into_iter().flatten() {
                    let example = media.get("example").is_some() || media.get("examples").is_some();
                    assert!(
                        example || has_example(&doc, &media["schema"], &mut Vec::new()),
                        "{row} {status}: {media_type} answer has no example"
                    );
                }
            }
        }
    }
    assert!(operations >= 40, "only {operations} operations: is the walk still finding the routes?");

    let method_not_allowed = &doc["components"]["responses"]["MethodNotAllowed"];
    assert!(method_not_allowed["headers"].get("Allow").is_some(), "405 documents Allow");
    assert_eq!(example_codes(method_not_allowed), ["method_not_allowed"]);
}

/// A known path with another method is 405 with `Allow` (RFC 9110
/// §15.5.6), HEAD is served wherever GET is, and unknown paths stay 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405_with_allow() {
    let app = TestApp::spawn(DbKind::Sqlite, CacheKind::Memory).await;
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/v1/sessions/current", "GET, HEAD, DELETE"),
        (reqwest::Method::POST, "/healthz", "GET, HEAD"),
        (reqwest::Method::GET, "/v1/login/start", "POST"),
        (reqwest::Method::DELETE, "/v1/sessions/refresh", "POST"),
        (reqwest::Method::PATCH, "/v1/admin/users/0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e", "GET, HEAD, DELETE"),
        (reqwest::Method::OPTIONS, "/v1/sessions", "GET, HEAD, DELETE"),
    ] {
        let row = format!("{method} {path}");
        let res = app.client.request(method, app.url(path)).send().await.expect("request");
        assert_eq!(res.status(), 405, "{row}");
        assert_eq!(res.headers()["allow"], allow, "{row}");
        assert_eq!(res.headers()["content-type"], "application/problem+json", "{row}");
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["code"], "method_not_allowed", "{row}");
        assert_eq!(body["status"], 405, "{row}");
    }

    let head = app.client.head(app.url("/healthz")).send().await.expect("request");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "application/json");
    assert!(head.bytes().await.expect("body").is_empty(), "HEAD has no body");
    let head = app.client.head(app.url("/v1/sessions")).send().await.expect("request");
    assert_eq!(head.status(), 401, "HEAD runs the GET route, authentication included");

    for (method, path) in [
        (reqwest::Method::GET, "/v1/nothing-here"),
        (reqwest::Method::DELETE, "/v1/sessions/not-a-session-id"),
        (reqwest::Method::POST, "/v1/login/start/more"),
    ] {
        let res = app.client.request(method.clone(), app.url(path)).send().await.expect("request");
        assert_eq!(res.status(), 404, "{method} {path}");
        assert!(res.headers().get("allow").is_none(), "{method} {path}");
    }
}
