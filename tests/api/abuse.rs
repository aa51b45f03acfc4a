//! Abuse resistance: the sliding window, built-in limits and their headers,
//! client addresses behind proxies, the pre-filter, lockout, the rate-limit
//! API, and the fallback while Redis is down.

use std::sync::Arc;
use std::time::Duration;

use latchkey::domain::ratelimit::{EndpointLimits, Namespace, Rule};
use latchkey::store::fast::WindowRule;
use latchkey::store::{FastStore as _, Keys};
use opaque_ke::ClientLogin;
use rand::rngs::OsRng;
use serde_json::{Value, json};

use crate::client::b64;
use crate::helpers::{CacheKind, DbKind, PrivateRedis, TestApp, fast_store, unique_prefix};
use crate::{each_cache, each_stack};
use latchkey::domain::opaque::Suite;

const PASSWORD: &str = "correct horse battery staple";

async fn window_has_no_boundary_burst(kind: CacheKind) {
    let store = fast_store(kind);
    let key = Keys::new(unique_prefix()).tagged("rl", "boundary");
    let window = Duration::from_millis(1000);
    for i in 0..5 {
        let d = store.sliding_window(&key, 5, window, 1).await.expect("decide");
        assert!(d.allowed);
        assert_eq!(d.remaining, 4 - i);
    }
    let refused = store.sliding_window(&key, 5, window, 1).await.expect("decide");
    assert!(!refused.allowed);
    assert!(refused.retry_after_ms > 0 && refused.retry_after_ms <= 1000, "{refused:?}");
    // Well past where a fixed window would have reset, but inside the
    // sliding one: still refused.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!store.sliding_window(&key, 5, window, 1).await.expect("decide").allowed);
    // Once the first five have left the window, five fit again, not ten.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        assert!(store.sliding_window(&key, 5, window, 1).await.expect("decide").allowed);
    }
    assert!(!store.sliding_window(&key, 5, window, 1).await.expect("decide").allowed);
    // Costs.
    let costly = Keys::new(unique_prefix()).tagged("rl", "cost");
    assert!(store.sliding_window(&costly, 10, window, 7).await.expect("decide").allowed);
    let d = store.sliding_window(&costly, 10, window, 4).await.expect("decide");
    assert_eq!((d.allowed, d.remaining), (false, 3));
    assert!(store.sliding_window(&costly, 10, window, 3).await.expect("decide").allowed);
}
each_cache!(window_has_no_boundary_burst_on, window_has_no_boundary_burst);

/// Several rules in one call: decided in order, the first refusal ends the
/// call (the rules before it admitted the request; the ones after it are
/// untouched), and mixed costs keep their exact accounting.
async fn several_rules_in_one_call(kind: CacheKind) {
    let store = fast_store(kind);
    let keys = Keys::new(unique_prefix());
    let (a, b, c) = (keys.tagged("rl", "a"), keys.tagged("rl", "b"), keys.tagged("rl", "c"));
    let window = Duration::from_secs(60);
    let rules = |limit_b| {
        [
            WindowRule { key: &a, limit: 10, window },
            WindowRule { key: &b, limit: limit_b, window },
            WindowRule { key: &c, limit: 10, window },
        ]
    };
    let d = store.sliding_windows(&rules(2), 1).await.expect("decide");
    assert_eq!(d.iter().map(|d| (d.allowed, d.remaining)).collect::<Vec<_>>(), [(true, 9), (true, 1), (true, 9)]);
    assert!(store.sliding_windows(&rules(2), 1).await.expect("decide").iter().all(|d| d.allowed));
    let refused = store.sliding_windows(&rules(2), 1).await.expect("decide");
    assert_eq!(refused.len(), 2, "the refusal ends the call: {refused:?}");
    assert_eq!((refused[0].allowed, refused[0].remaining), (true, 7), "the rule before it counted");
    assert!(!refused[1].allowed && refused[1].retry_after_ms > 0 && refused[1].reset_ms > 0, "{refused:?}");
    // The third rule was not touched by the refused call.
    let single = store.sliding_window(&c, 10, window, 1).await.expect("decide");
    assert_eq!(single.remaining, 7);
    // Mixed costs on one log: 3 + 1 + 4 = 8 of 10 used.
    let costly = keys.tagged("rl", "mixed");
    for cost in [3, 1, 4] {
        assert!(store.sliding_window(&costly, 10, window, cost).await.expect("decide").allowed);
    }
    let d = store.sliding_window(&costly, 10, window, 3).await.expect("decide");
    assert_eq!((d.allowed, d.remaining), (false, 2));
    assert!(d.retry_after_ms > 0 && d.retry_after_ms <= 60_000, "{d:?}");
    let d = store.sliding_window(&costly, 10, window, 2).await.expect("decide");
    assert_eq!((d.allowed, d.remaining), (true, 0));
}
each_cache!(several_rules_in_one_call_on, several_rules_in_one_call);

/// A heavier entry's whole cost leaves the window with it, and the reset
/// time is always the oldest counted entry's, heavy or not.
async fn heavy_costs_leave_with_their_entries(kind: CacheKind) {
    let store = fast_store(kind);
    let key = Keys::new(unique_prefix()).tagged("rl", "heavy");
    let window = Duration::from_millis(1500);
    let d = store.sliding_window(&key, 10, window, 4).await.expect("decide");
    assert_eq!((d.allowed, d.remaining, d.reset_ms), (true, 6, 1500), "{d:?}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let d = store.sliding_window(&key, 10, window, 1).await.expect("decide");
    assert_eq!((d.allowed, d.remaining), (true, 5), "{d:?}");
    assert!(d.reset_ms > 0 && d.reset_ms <= 800, "the heavy entry is the oldest: {d:?}");
    let d = store.sliding_window(&key, 10, window, 6).await.expect("decide");
    assert_eq!((d.allowed, d.remaining), (false, 5), "{d:?}");
    assert!(d.retry_after_ms > 0 && d.retry_after_ms <= 800, "the heavy entry frees enough: {d:?}");
    // The heavy entry has left; the one of cost 1 stays.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let d = store.sliding_window(&key, 10, window, 1).await.expect("decide");
    assert_eq!((d.allowed, d.remaining), (true, 8), "{d:?}");
    assert!(d.reset_ms > 0 && d.reset_ms <= 500, "the oldest is now the entry of cost 1: {d:?}");
    let d = store.sliding_window(&key, 10, window, 9).await.expect("decide");
    assert_eq!((d.allowed, d.remaining), (false, 8), "{d:?}");
    let d = store.sliding_window(&key, 10, window, 8).await.expect("decide");
    assert_eq!((d.allowed, d.remaining), (true, 0), "{d:?}");
    // Everything has left: the whole limit again.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let d = store.sliding_window(&key, 10, window, 10).await.expect("decide");
    assert_eq!((d.allowed, d.remaining), (true, 0), "{d:?}");
}
each_cache!(heavy_costs_leave_with_their_entries_on, heavy_costs_leave_with_their_entries);

async fn parallel_decisions_never_exceed_the_limit(kind: CacheKind) {
    let store = Arc::new(fast_store(kind));
    let key = Keys::new(unique_prefix()).tagged("rl", "parallel");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.sliding_window(&key, 30, Duration::from_secs(60), 1).await.expect("d") })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.expect("join").allowed);
    }
    assert_eq!(allowed, 30);
}
each_cache!(parallel_decisions_never_exceed_the_limit_on, parallel_decisions_never_exceed_the_limit);

fn ke1() -> String {
    b64(&ClientLogin::<Suite>::start(&mut OsRng, b"pw").expect("start").message.serialize())
}

async fn login_start(app: &TestApp, username: &str, xff: Option<&str>) -> reqwest::Response {
    let mut req =
        app.client.post(app.url("/v1/login/start")).json(&json!({"username": username, "credential_request": ke1()}));
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.expect("request")
}

async fn builtin_limits_answer_429_with_headers(db: DbKind, cache: CacheKind) {
    let app =
        TestApp::spawn_with(db, cache, |c| c.ratelimit.login_start.per_ip_username = Some(Rule::new(3, 60))).await;
    // "Alice" and "ALICE" are one bucket.
    for name in ["Alice", "ALICE", "alice"] {
        assert_eq!(login_start(&app, name, None).await.status(), 200);
    }
    let res = login_start(&app, "\u{ff41}lice", None).await;
    assert_eq!(res.status(), 429);
    let h = res.headers().clone();
    assert_eq!(h["ratelimit-limit"], "3");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(h["ratelimit-policy"], "3;w=60");
    let retry: u64 = h["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    let reset: u64 = h["ratelimit-reset"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry) && (1..=60).contains(&reset), "{retry} {reset}");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["code"], "rate_limited");
    // Another user from the same address is not affected by this bucket.
    assert_eq!(login_start(&app, "bob", None).await.status(), 200);
}
each_stack!(builtin_limits_answer_429_with_headers_on, builtin_limits_answer_429_with_headers);

async fn spoofed_forwarded_for_is_ignored(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, |c| {
        c.ratelimit.login_start = EndpointLimits { per_ip: Some(Rule::new(5, 60)), ..Default::default() };
    })
    .await;
    let mut allowed = 0;
    for i in 0..200 {
        let res = login_start(&app, &format!("user{i}"), Some(&format!("198.51.100.{}", i % 250))).await;
        allowed += usize::from(res.status() == 200);
    }
    assert_eq!(allowed, 5, "a client that is not a trusted proxy cannot choose its address");
}
each_stack!(spoofed_forwarded_for_is_ignored_on, spoofed_forwarded_for_is_ignored);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_a_trusted_proxy() {
    let app = TestApp::spawn_with(DbKind::Sqlite, CacheKind::Memory, |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
        c.ratelimit.login_start = EndpointLimits { per_ip: Some(Rule::new(2, 60)), ..Default::default() };
    })
    .await;
    for client in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..2 {
            assert_eq!(login_start(&app, "x", Some(&format!("6.6.6.6, {client}"))).await.status(), 200);
        }
        assert_eq!(login_start(&app, "x", Some(client)).await.status(), 429, "per real client");
    }
    assert_eq!(login_start(&app, "x", Some("not an address")).await.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefilter_refuses_floods_per_address() {
    let app = TestApp::spawn_with(DbKind::Sqlite, CacheKind::Memory, |c| {
        c.ratelimit.prefilter_per_second = 1;
        c.ratelimit.prefilter_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(login_start(&app, "flood", None).await.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // A percent-encoded path is the same route to the router, and to the
    // pre-filter.
    for path in ["/v1/%6Cogin/start", "/v1/%72egistration/start", "/v1/sessions/%72efresh"] {
        let res = app.post_json(path, &json!({})).await;
        assert_eq!(res.status(), 429, "{path}");
    }
    // Authenticated and operational routes are not pre-filtered.
    assert_eq!(app.get("/healthz").await.status(), 200);
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(metrics.contains("latchkey_prefilter_refused_total"), "{metrics}");
}

async fn user_of(app: &TestApp, username: &str) -> entity::users::Model {
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    entity::users::Entity::find()
        .filter(entity::users::Column::Username.eq(username))
        .one(app.app_db.conn())
        .await
        .expect("query")
        .expect("user")
}

/// A real client guessing: login/start, KE2 rejected, no finish. Waits out
/// the short locks of the schedule; returns the start statuses seen.
async fn guess(app: &TestApp, username: &str, device_token: Option<&str>) -> u16 {
    let mut device = json!({"fingerprint": "attacker"});
    if let Some(token) = device_token {
        device["device_token"] = json!(token);
    }
    app.guess_response(username, "guess", device).await.status().as_u16()
}

/// Lockout with threshold 2 and hard limit 3: the third guess hard-locks.
fn strict(c: &mut latchkey::config::Config) {
    c.ratelimit.lockout_threshold = 2;
    c.ratelimit.lockout_hard_limit = 3;
}

async fn hard_lock(app: &TestApp, username: &str, device_token: Option<&str>) {
    assert_eq!(guess(app, username, device_token).await, 401, "first guess tested (client-side 401)");
    assert_eq!(guess(app, username, device_token).await, 401, "second guess tested; now locked for 1 s");
    assert_eq!(guess(app, username, device_token).await, 423, "no guess is tested during the lock");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(guess(app, username, device_token).await, 401, "third guess tested; now hard-locked");
}

async fn guesses_are_counted_at_start(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, strict).await;
    assert_eq!(app.register("lou", PASSWORD).await.status(), 201);
    hard_lock(&app, "lou", None).await;
    // The right password is refused at start: no finish is ever reached.
    let res = app.login_response("lou", PASSWORD, json!({"fingerprint": "x"})).await;
    assert_eq!(res.status(), 423);
    let retry: u64 = res.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!(retry > 23 * 3600, "hard lock: {retry} s");
    let known: Value = res.json().await.expect("json");
    assert_eq!(known["code"], "account_locked");
    let user = user_of(&app, "lou").await;
    assert_eq!(user.failed_attempts, 3, "three guesses, none of them finished");

    // An unknown name guessed as often answers alike.
    hard_lock(&app, "nobody", None).await;
    let res = app.login_response("nobody", PASSWORD, json!({"fingerprint": "x"})).await;
    assert_eq!(res.status(), 423);
    let unknown_retry: u64 = res.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!(unknown_retry > 23 * 3600);
    let unknown: Value = res.json().await.expect("json");
    assert_eq!(unknown, known, "a lock says nothing about existence");
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e == "account.lock"), "{events:?}");
}
each_stack!(guesses_are_counted_at_start_on, guesses_are_counted_at_start);

/// login/start alone, as a guesser's burst sends it: the status.
async fn start_only(app: &TestApp, username: &str) -> u16 {
    let start = ClientLogin::<Suite>::start(&mut OsRng, b"guess").expect("client start");
    let body = json!({"username": username, "credential_request": b64(&start.message.serialize())});
    app.post_json("/v1/login/start", &body).await.status().as_u16()
}

async fn concurrent_guesses_neither_overshoot_nor_tell_names_apart(db: DbKind, cache: CacheKind) {
    let app = Arc::new(TestApp::spawn_with(db, cache, strict).await);
    assert_eq!(app.register("kim", PASSWORD).await.status(), 201);
    for name in ["kim", "nobody"] {
        let burst: Vec<_> = (0..10)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move { start_only(&app, name).await })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in burst {
            statuses.push(task.await.expect("join"));
        }
        statuses.sort_unstable();
        // Threshold 2: the second counted attempt locks; nothing passes
        // the lock, however many arrive at once.
        assert_eq!(statuses, [200, 200, 423, 423, 423, 423, 423, 423, 423, 423], "{name}: {statuses:?}");
    }
}
each_stack!(concurrent_guesses_are_exact_on, concurrent_guesses_neither_overshoot_nor_tell_names_apart);

async fn lockout_grows_and_resets(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, |c| c.ratelimit.lockout_threshold = 2).await;
    assert_eq!(app.register("lea", PASSWORD).await.status(), 201);
    assert_eq!(guess(&app, "lea", None).await, 401);
    assert_eq!(guess(&app, "lea", None).await, 401);
    let user = user_of(&app, "lea").await;
    let first_lock = user.locked_until.expect("locked") - user.last_failure_at.expect("failure");
    assert_eq!(first_lock.num_seconds(), 1);
    let res = app.login_response("lea", PASSWORD, json!({"fingerprint": "x"})).await;
    assert_eq!(res.status(), 423, "the right password during the lock");
    assert_eq!(res.headers()["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.login("lea", PASSWORD, "x").await;
    let user = user_of(&app, "lea").await;
    assert_eq!((user.failed_attempts, user.locked_until), (0, None), "a completed login resets");
}
each_stack!(lockout_grows_and_resets_on, lockout_grows_and_resets);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_one_hundred_failures_then_a_hard_lock() {
    let app = TestApp::spawn(DbKind::Postgres, CacheKind::Redis).await;
    let s = app.register_and_login("max", PASSWORD).await;
    let id = user_of(&app, "max").await.id;
    // 99 failures recorded as the login path records them...
    for _ in 0..99 {
        latchkey::store::users::record_failure(&app.app_db, id, chrono::Utc::now()).await.expect("record");
    }
    // ...and the hundredth through a real guess.
    assert_eq!(guess(&app, "max", None).await, 401);
    let user = user_of(&app, "max").await;
    assert_eq!(user.failed_attempts, 100);
    let hard = user.locked_until.expect("locked") - chrono::Utc::now();
    assert!(hard > chrono::Duration::hours(23), "hard lock: {hard}");
    assert_eq!(app.login_response("max", PASSWORD, json!({"fingerprint": "device-1"})).await.status(), 423);
    // The user's own device credential is an unknown device until trusted:
    // it does not pass either.
    let token = s.device_token.expect("a new device gets a credential");
    let with_token = json!({"fingerprint": "device-1", "device_token": token});
    assert_eq!(app.login_response("max", PASSWORD, with_token).await.status(), 423);
}

async fn trust(app: &TestApp, token: &str, device_id: &str, trust: &str) -> u16 {
    app.client
        .put(app.url(&format!("/v1/devices/{device_id}/trust")))
        .bearer_auth(token)
        .json(&json!({"trust": trust}))
        .send()
        .await
        .expect("req")
        .status()
        .as_u16()
}

async fn trusted_device_is_not_locked_out(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, strict).await;
    let s = app.register_and_login("tess", PASSWORD).await;
    let device_id = s.body["device_id"].as_str().expect("device_id").to_owned();
    let token = s.device_token.clone().expect("a new device gets a credential");
    assert!(token.starts_with("lk_d_"));
    assert_eq!(s.body["new_device"], true);
    assert_eq!(trust(&app, &s.token, &device_id, "trusted").await, 204);
    assert_eq!(trust(&app, &s.token, &device_id, "blocked").await, 400, "only an admin blocks");

    // Someone else guesses from elsewhere and hard-locks the account.
    hard_lock(&app, "tess", None).await;
    // The same fingerprint without the credential is just another caller.
    assert_eq!(app.login_response("tess", PASSWORD, json!({"fingerprint": "device-1"})).await.status(), 423);
    // A made-up credential is no credential.
    let made_up = json!({"fingerprint": "device-1", "device_token": format!("lk_d_{}", "A".repeat(43))});
    assert_eq!(app.login_response("tess", PASSWORD, made_up).await.status(), 423);
    // The trusted device with its credential gets in, as the same device.
    let res = app.login_response("tess", PASSWORD, json!({"fingerprint": "device-1", "device_token": token})).await;
    assert_eq!(res.status(), 200, "{}", res.body);
    let body: Value = res.json().await.expect("json");
    assert_eq!((body["device_id"].as_str(), &body["new_device"]), (Some(device_id.as_str()), &json!(false)));
    assert!(body.get("device_token").is_none(), "no new credential for a known device");

    // Its own guesses lock only it.
    hard_lock(&app, "tess", Some(&token)).await;
    let res = app.login_response("tess", PASSWORD, json!({"fingerprint": "device-1", "device_token": token})).await;
    assert_eq!(res.status(), 423);
}
each_stack!(trusted_device_is_not_locked_out_on, trusted_device_is_not_locked_out);

async fn blocked_device_is_refused_at_start(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let s = app.register_and_login("bo", PASSWORD).await;
    let token = s.device_token.clone().expect("credential");
    let device_id = s.body["device_id"].as_str().expect("device_id").to_owned();
    let admin = app.register_and_login("root", PASSWORD).await;
    assert!(app.core.set_admin("root", true, chrono::Utc::now()).await.expect("grant"));
    let res = app
        .client
        .put(app.url(&format!("/v1/admin/devices/{device_id}/trust")))
        .bearer_auth(&admin.token)
        .json(&json!({"trust": "blocked"}))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 204);
    assert_eq!(app.whoami(&s.token).await.status(), 401, "blocking revoked its session");
    let start = ClientLogin::<Suite>::start(&mut OsRng, PASSWORD.as_bytes()).expect("client start");
    let body = json!({"username": "bo", "credential_request": b64(&start.message.serialize()), "device_token": token});
    let res = app.post_json("/v1/login/start", &body).await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.expect("json")["code"], "device_blocked");
    // Without the credential the user logs in as a new device.
    let fresh = app.login("bo", PASSWORD, "device-1").await;
    assert_ne!(fresh.body["device_id"].as_str(), Some(device_id.as_str()));
}
each_stack!(blocked_device_is_refused_at_start_on, blocked_device_is_refused_at_start);

async fn registration_finish_without_start_is_no_oracle(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    assert_eq!(app.register("taken", PASSWORD).await.status(), 201);
    let record = b64(&[1u8; 192]);
    let mut answers = Vec::new();
    for name in ["taken", "free"] {
        let res =
            app.post_json("/v1/registration/finish", &json!({"username": name, "registration_record": record})).await;
        answers.push((res.status(), res.text().await.expect("body")));
    }
    assert_eq!(answers[0].0, 400);
    assert_eq!(answers[0], answers[1], "the same answer whether or not the name exists");
}
each_stack!(registration_finish_without_start_is_no_oracle_on, registration_finish_without_start_is_no_oracle);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_login_state_from_redis_logs_nobody_in() {
    use sha2::Digest as _;
    let app = TestApp::spawn(DbKind::Postgres, CacheKind::Redis).await;
    assert_eq!(app.register("alice", PASSWORD).await.status(), 201);
    // The attacker starts a login with any password and reads the state.
    let (login_id, _) = app.login_messages("alice", "any password", None).await.expect("start");
    let key = app.keys.login_state(&hex::encode(sha2::Sha256::digest(login_id.as_bytes())));
    let raw = app.fast.get(&key).await.expect("redis").expect("state stored");
    assert!(!raw.windows(5).any(|w| w == b"alice"), "no plaintext in the state");
    assert!(serde_json::from_slice::<Value>(&raw).is_err(), "not readable JSON");
    // The server's expected MAC would be a KE3 that completes the login:
    // sealed, the bytes where it would sit are no such thing.
    let candidate = &raw[raw.len() - 128..raw.len() - 64];
    let finish = json!({"login_id": login_id, "credential_finalization": b64(candidate)});
    assert_eq!(app.post_json("/v1/login/finish", &finish).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_session_cache_entry_is_ignored() {
    use sha2::Digest as _;
    let app = TestApp::spawn(DbKind::Postgres, CacheKind::Redis).await;
    let s = app.register_and_login("cora", PASSWORD).await;
    let key = app.keys.session(&hex::encode(sha2::Sha256::digest(s.token.as_bytes())));
    let raw = app.fast.get(&key).await.expect("redis").expect("cached");
    // A Redis writer raises the session to aal2 and keeps the old tag.
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(text.contains("\"aal1\""), "the entry is readable: {text}");
    let forged = text.replace("\"aal1\"", "\"aal2\"").into_bytes();
    app.fast.set(&key, &forged, Duration::from_secs(600)).await.expect("write");
    let who: Value = app.whoami(&s.token).await.json().await.expect("json");
    assert_eq!(who["aal"], "aal1", "the forged entry is ignored; the database decides");
    // A made-up session under a made-up token is no session either.
    let fake = format!("lk_s_{}", "B".repeat(43));
    let fake_key = app.keys.session(&hex::encode(sha2::Sha256::digest(fake.as_bytes())));
    app.fast.set(&fake_key, &forged, Duration::from_secs(600)).await.expect("write");
    assert_eq!(app.whoami(&fake).await.status(), 401);
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(metrics.contains("latchkey_session_cache_rejected_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_outlives_a_concurrent_admin_lock() {
    // Eight logins in flight at once are eight attempts: above the lockout
    // threshold this test is not about.
    let app = TestApp::spawn_with(DbKind::Postgres, CacheKind::Redis, |c| c.ratelimit.lockout_threshold = 50).await;
    let admin = app.register_and_login("boss", PASSWORD).await;
    assert!(app.core.set_admin("boss", true, chrono::Utc::now()).await.expect("grant"));
    assert_eq!(app.register("vic", PASSWORD).await.status(), 201);
    let user = user_of(&app, "vic").await;
    // Logins in flight (KE3 ready) race the admin's lock.
    let mut pending = Vec::new();
    for _ in 0..8 {
        pending.push(app.login_ke3("vic", PASSWORD).await);
    }
    let app = Arc::new(app);
    let finishes: Vec<_> = pending
        .into_iter()
        .map(|(login_id, ke3)| {
            let app = app.clone();
            tokio::spawn(async move {
                let body = json!({"login_id": login_id, "credential_finalization": b64(&ke3)});
                app.post_json("/v1/login/finish", &body).await.status().as_u16()
            })
        })
        .collect();
    let lock = app
        .client
        .post(app.url(&format!("/v1/admin/users/{}/lock", user.id)))
        .bearer_auth(&admin.token)
        .json(&json!({"reason": "incident"}))
        .send()
        .await
        .expect("req");
    assert_eq!(lock.status(), 204);
    for f in finishes {
        let status = f.await.expect("join");
        assert!(status == 200 || status == 423, "{status}");
    }
    // Whatever interleaving happened, no session of the user is active.
    let active = latchkey::store::sessions::list_active(&app.app_db, user.id, chrono::Utc::now()).await.expect("list");
    assert!(active.is_empty(), "{} sessions survived the lock", active.len());
}

async fn random_tokens_are_refused_before_the_database(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, |c| {
        c.ratelimit.bad_tokens = Rule { limit: 5, window: Duration::from_secs(60) };
    })
    .await;
    let s = app.register_and_login("rita", PASSWORD).await;
    // A flood of made-up tokens, well-formed (each a cache miss) and not.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let token = if i % 2 == 0 { format!("lk_s_{:0>43}", i) } else { format!("junk{i}") };
        statuses.push(app.whoami(&token).await.status().as_u16());
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert_eq!(statuses[5..], [429; 3], "over the budget: 429, before any lookup: {statuses:?}");
    let res = app.whoami(&format!("lk_s_{:0>43}", 99)).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // A valid, cached session is not slowed by its address's flood.
    assert_eq!(app.whoami(&s.token).await.status(), 200);
}
each_stack!(random_tokens_are_refused_before_the_database_on, random_tokens_are_refused_before_the_database);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_floods_are_refused_while_redis_is_down() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let app = TestApp::spawn_with(DbKind::Postgres, CacheKind::Redis, |c| {
        c.redis_url = Some(secrecy::SecretString::from(url));
        c.redis.timeout = Duration::from_millis(500);
        c.ratelimit.bad_tokens = Rule { limit: 3, window: Duration::from_secs(60) };
    })
    .await;
    redis.kill();
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(app.whoami(&format!("lk_s_{:0>43}", i)).await.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429], "this instance keeps the budget: {statuses:?}");
}

const SERVICE_TOKEN: &str = "svc-test-token-0123456789";

async fn check(app: &TestApp, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = app.client.post(app.url("/v1/ratelimit/check")).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("request")
}

fn with_namespace(c: &mut latchkey::config::Config) {
    c.service_tokens = vec![secrecy::SecretString::from(SERVICE_TOKEN)];
    c.ratelimit.namespaces = vec![Namespace { name: "api".into(), limit: 5, window: Duration::from_secs(2) }];
}

async fn ratelimit_api(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, with_namespace).await;
    let ok = json!({"namespace": "api", "key": "user:1"});
    assert_eq!(check(&app, None, ok.clone()).await.status(), 401);
    assert_eq!(check(&app, Some("wrong-token"), ok.clone()).await.status(), 401);
    let session = app.register_and_login("svc", PASSWORD).await;
    assert_eq!(check(&app, Some(&session.token), ok.clone()).await.status(), 401, "a user session is no service token");
    assert_eq!(check(&app, Some(SERVICE_TOKEN), json!({"namespace": "nope", "key": "k"})).await.status(), 404);
    for cost in [0, 6] {
        assert_eq!(
            check(&app, Some(SERVICE_TOKEN), json!({"namespace": "api", "key": "k", "cost": cost})).await.status(),
            400
        );
    }
    assert_eq!(check(&app, Some(SERVICE_TOKEN), json!({"namespace": "api", "key": ""})).await.status(), 400);
    assert_eq!(
        check(&app, Some(SERVICE_TOKEN), json!({"namespace": "api", "key": "k".repeat(257)})).await.status(),
        400
    );

    for expected_remaining in (0..5).rev() {
        let res = check(&app, Some(SERVICE_TOKEN), ok.clone()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["ratelimit-remaining"], expected_remaining.to_string().as_str());
        let d: Value = res.json().await.expect("json");
        assert_eq!(
            (d["allowed"].as_bool(), d["limit"].as_u64(), d["remaining"].as_u64()),
            (Some(true), Some(5), Some(expected_remaining))
        );
        assert_eq!(d["retry_after_ms"], 0);
    }
    let d: Value = check(&app, Some(SERVICE_TOKEN), ok.clone()).await.json().await.expect("json");
    assert_eq!(d["allowed"], false);
    let retry = d["retry_after_ms"].as_u64().expect("retry");
    assert!(retry > 0 && retry <= 2000, "{d}");
    assert!(d["reset_ms"].as_u64().expect("reset") <= 2000);
    // Another key has its own window; costs count in units.
    let d: Value = check(&app, Some(SERVICE_TOKEN), json!({"namespace": "api", "key": "user:2", "cost": 5}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!((d["allowed"].as_bool(), d["remaining"].as_u64()), (Some(true), Some(0)));
    // After the window the first key is allowed again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let d: Value = check(&app, Some(SERVICE_TOKEN), ok).await.json().await.expect("json");
    assert_eq!(d["allowed"], true);
}
each_stack!(ratelimit_api_on, ratelimit_api);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_locally_and_recovers() {
    let mut redis = PrivateRedis::start().await;
    let (url, port) = (redis.url(), redis.port);
    let app = TestApp::spawn_with(DbKind::Postgres, CacheKind::Redis, |c| {
        with_namespace(c);
        c.redis_url = Some(secrecy::SecretString::from(url));
        c.redis.timeout = Duration::from_millis(500);
    })
    .await;
    let body = json!({"namespace": "api", "key": "k"});
    let d: Value = check(&app, Some(SERVICE_TOKEN), body.clone()).await.json().await.expect("json");
    assert_eq!(d["allowed"], true);

    redis.kill();
    // Decisions keep coming, from this instance, and are still limits.
    let mut allowed = 0;
    for _ in 0..8 {
        let res = check(&app, Some(SERVICE_TOKEN), body.clone()).await;
        assert_eq!(res.status(), 200);
        allowed += usize::from(res.json::<Value>().await.expect("json")["allowed"] == true);
    }
    assert_eq!(allowed, 5, "the local window applies the same limit");
    assert!(app.core.limits_falling_back());
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(metrics.contains("latchkey_ratelimit_fallback_total"), "{metrics}");
    assert_eq!(app.get("/readyz").await.status(), 503);

    // Redis comes back (empty): decisions are shared again by themselves.
    let _redis = PrivateRedis::start_on(port).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let res = check(&app, Some(SERVICE_TOKEN), json!({"namespace": "api", "key": "after"})).await;
    assert_eq!(res.json::<Value>().await.expect("json")["allowed"], true);
    assert!(!app.core.limits_falling_back(), "recovered");
    assert_eq!(app.get("/readyz").await.status(), 200);
}
