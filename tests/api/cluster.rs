//! Redis Cluster: a real 3-master cluster started for the test; the
//! fast-path contract, sessions, TOTP replay protection and shared rate
//! limits run on it.

use std::time::Duration;

use latchkey::domain::ratelimit::Namespace;
use latchkey::store::fast::RedisStore;
use latchkey::store::{Fast, FastStore as _, Keys};
use serde_json::{Value, json};

use crate::helpers::{CacheKind, DbKind, PrivateCluster, TestApp, unique_prefix};

const PASSWORD: &str = "correct horse battery staple";
const TOKEN: &str = "cluster-service-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_runs_on_a_redis_cluster() {
    let cluster = PrivateCluster::start().await;

    // The store contract, with keys spread over the three masters.
    let store = Fast::Redis(RedisStore::connect(&cluster.url(), 8, Duration::from_secs(5)).expect("cluster pool"));
    let keys = Keys::new(unique_prefix());
    let mut slots = std::collections::HashSet::new();
    for i in 0..30 {
        let key = keys.tagged("t", &format!("k{i}"));
        slots.insert(latchkey::store::fast::keys::hash_slot(&key) / 5462);
        store.set(&key, b"v", Duration::from_secs(30)).await.expect("set");
        assert_eq!(store.get_del(&key).await.expect("getdel").as_deref(), Some(&b"v"[..]));
    }
    assert_eq!(slots.len(), 3, "keys landed on all three masters");
    assert_eq!(store.incr(&keys.counter("c", "s"), 2, Duration::from_secs(30)).await.expect("incr"), 2);
    let window_key = keys.tagged("rl", "cluster-window");
    for _ in 0..3 {
        assert!(store.sliding_window(&window_key, 3, Duration::from_secs(30), 1).await.expect("window").allowed);
    }
    assert!(!store.sliding_window(&window_key, 3, Duration::from_secs(30), 1).await.expect("window").allowed);

    // The service on the cluster.
    let url = cluster.url();
    let app = TestApp::spawn_with(DbKind::Postgres, CacheKind::Redis, move |c| {
        c.redis_url = Some(secrecy::SecretString::from(url));
        c.service_tokens = vec![secrecy::SecretString::from(TOKEN)];
        c.ratelimit.namespaces = vec![Namespace { name: "api".into(), limit: 10, window: Duration::from_secs(60) }];
    })
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    // Sessions: login, whoami from the cluster cache, refresh, revoke.
    let s = app.register_and_login("cluster-user", PASSWORD).await;
    assert_eq!(app.whoami(&s.token).await.status(), 200);
    let next = app.refreshed(&s.refresh).await;
    assert_eq!(app.whoami(&s.token).await.status(), 401);
    assert_eq!(app.whoami(&next.token).await.status(), 200);
    assert_eq!(app.refresh(&s.refresh).await.status(), 401, "reuse");
    assert_eq!(app.whoami(&next.token).await.status(), 401, "reuse revoked the session");

    // Shared, exact rate limits: 100 parallel checks, 10 allowed.
    let checks = (0..100).map(|_| {
        app.client
            .post(app.url("/v1/ratelimit/check"))
            .bearer_auth(TOKEN)
            .json(&json!({"namespace": "api", "key": "k"}))
            .send()
    });
    let mut allowed = 0;
    for res in futures_util::future::join_all(checks).await {
        let body: Value = res.expect("request").json().await.expect("json");
        allowed += usize::from(body["allowed"] == true);
    }
    assert_eq!(allowed, 10);
    assert!(!app.core.limits_falling_back(), "decisions came from the cluster");

    // TOTP replay protection with the MFA state on the cluster.
    let user = app.register_and_login("cluster-totp", PASSWORD).await;
    let secret = app.enroll_totp(&user.token).await;
    let code_at = |step: u64| crate::client::totp_code(&secret, step);
    let step = loop {
        let now = chrono::Utc::now().timestamp();
        if now % 30 < 18 {
            break u64::try_from(now).expect("time") / 30;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let res = app
        .client
        .post(app.url("/v1/totp/confirm"))
        .bearer_auth(&user.token)
        .json(&json!({"code": code_at(step - 1)}))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200);
    let token = mfa(&app).await;
    let ok = app.post_json("/v1/login/totp", &json!({"mfa_token": token, "code": code_at(step)})).await;
    assert_eq!(ok.status(), 200);
    let token = mfa(&app).await;
    let replay = app.post_json("/v1/login/totp", &json!({"mfa_token": token, "code": code_at(step)})).await;
    assert_eq!(replay.status(), 401, "a step is accepted once");
}

async fn mfa(app: &TestApp) -> String {
    let body: Value =
        app.login_response("cluster-totp", PASSWORD, json!({"fingerprint": "x"})).await.json().await.expect("json");
    body["mfa_token"].as_str().expect("mfa").to_owned()
}
