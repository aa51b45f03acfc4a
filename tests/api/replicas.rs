//! Two latchkey instances on one Postgres and one Redis (standalone and
//! cluster), and Redis dying under a running instance.

use std::time::Duration;

use latchkey::domain::ratelimit::Namespace;
use serde_json::{Value, json};

use crate::client::b64;
use crate::helpers::{CacheKind, DbKind, PrivateCluster, PrivateRedis, TestApp, TestDb, redis_url, unique_prefix};

const PASSWORD: &str = "correct horse battery staple";
const TOKEN: &str = "replica-service-token";

/// Two instances sharing the database and the Redis key space.
async fn pair(redis: String) -> (TestApp, TestApp, TestDb) {
    let db = TestDb::new(DbKind::Postgres).await;
    let prefix = unique_prefix();
    let configure = |redis: String, prefix: String| {
        move |c: &mut latchkey::config::Config| {
            c.redis_url = Some(secrecy::SecretString::from(redis));
            c.redis_prefix = prefix;
            c.service_tokens = vec![secrecy::SecretString::from(TOKEN)];
            c.ratelimit.namespaces = vec![Namespace { name: "api".into(), limit: 10, window: Duration::from_secs(60) }];
        }
    };
    // Migrated by the owner; both serve as the app role.
    let a = TestApp::spawn_on(&db, CacheKind::Redis, configure(redis.clone(), prefix.clone())).await;
    let b = TestApp::spawn_on(&db, CacheKind::Redis, configure(redis, prefix)).await;
    (a, b, db)
}

async fn replicas_share_everything(redis: String) {
    let (a, b, _db) = pair(redis).await;

    // One OPAQUE server setup: a login started on A finishes on B.
    assert_eq!(a.register("rhea", PASSWORD).await.status(), 201);
    let (login_id, ke3) = a.login_ke3("rhea", PASSWORD).await;
    let res =
        b.post_json("/v1/login/finish", &json!({"login_id": login_id, "credential_finalization": b64(&ke3)})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    let on_b = crate::client::Session::from_json(res.json().await.expect("json"));

    // A session made on one is valid, listed and revocable on the other.
    let on_a = a.login("rhea", PASSWORD, "laptop").await;
    assert_eq!(b.whoami(&on_a.token).await.status(), 200);
    assert_eq!(a.whoami(&on_b.token).await.status(), 200);
    let listed: Value = b.get_auth("/v1/sessions", &on_a.token).await.json().await.expect("json");
    assert_eq!(listed["sessions"].as_array().expect("list").len(), 2);
    let id = on_b.body["session_id"].as_str().expect("id");
    assert_eq!(b.delete_auth(&format!("/v1/sessions/{id}"), &on_a.token).await.status(), 204);
    assert_eq!(a.whoami(&on_b.token).await.status(), 401, "revoked on B, refused on A");
    let next = b.refreshed(&on_a.refresh).await;
    assert_eq!(a.whoami(&next.token).await.status(), 200, "refreshed on B, valid on A");

    // One limit across both: 10 allowed in total, not 10 each.
    let checks = (0..40).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.client
            .post(app.url("/v1/ratelimit/check"))
            .bearer_auth(TOKEN)
            .json(&json!({"namespace": "api", "key": "k"}))
            .send()
    });
    let mut allowed = 0;
    for res in futures_util::future::join_all(checks).await {
        allowed += usize::from(res.expect("request").json::<Value>().await.expect("json")["allowed"] == true);
    }
    assert_eq!(allowed, 10);

    // One keyring: a rotation on A is used by B at once, without restart.
    let now = chrono::Utc::now();
    let rotated = a.core.rotate_keys("test", now).await.expect("rotate");
    assert_eq!(b.core.keys_status(now).await.expect("status").active_key_id, Some(rotated));
    assert_eq!(b.register("theo", PASSWORD).await.status(), 201, "B seals under A's new key");
    a.login("theo", PASSWORD, "x").await;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    let theo = entity::users::Entity::find()
        .filter(entity::users::Column::Username.eq("theo"))
        .one(a.app_db.conn())
        .await
        .expect("q")
        .expect("theo");
    let record =
        entity::opaque_credentials::Entity::find_by_id(theo.id).one(a.app_db.conn()).await.expect("q").expect("row");
    assert_eq!(record.key_id, rotated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_standalone_redis() {
    replicas_share_everything(redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_a_redis_cluster() {
    let cluster = PrivateCluster::start().await;
    replicas_share_everything(cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty() {
    let mut redis = PrivateRedis::start().await;
    let (url, port) = (redis.url(), redis.port);
    let app = TestApp::spawn_with(DbKind::Postgres, CacheKind::Redis, move |c| {
        c.redis_url = Some(secrecy::SecretString::from(url));
        c.redis.timeout = Duration::from_millis(500);
    })
    .await;
    let active = app.register_and_login("ulla", PASSWORD).await;
    let revoked = app.login("ulla", PASSWORD, "other").await;
    let revoked_id = revoked.body["session_id"].as_str().expect("id");
    assert_eq!(app.delete_auth(&format!("/v1/sessions/{revoked_id}"), &active.token).await.status(), 204);
    let (in_flight, ke3) = app.login_ke3("ulla", PASSWORD).await;

    redis.kill();
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert_eq!(app.whoami(&active.token).await.status(), 200, "whoami falls back to Postgres");
    assert_eq!(app.whoami(&revoked.token).await.status(), 401, "and revocations hold");

    let _redis = PrivateRedis::start_on(port).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.get("/readyz").await.status(), 200, "readiness recovers by itself");
    let res =
        app.post_json("/v1/login/finish", &json!({"login_id": in_flight, "credential_finalization": b64(&ke3)})).await;
    assert_eq!(res.status(), 401, "the login whose state was lost fails, alone");
    assert_eq!(app.whoami(&active.token).await.status(), 200, "refilled from Postgres");
    assert_eq!(app.whoami(&revoked.token).await.status(), 401, "no revoked session comes back");
    app.login("ulla", PASSWORD, "again").await;
}

/// A latchkey process of its own, on the given database and key prefix.
struct Process {
    child: std::process::Child,
    address: String,
}

impl Process {
    async fn start(database_url: &str, prefix: &str, data_dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .arg("serve")
            .env_clear()
            .env("LATCHKEY_BIND", format!("127.0.0.1:{port}"))
            .env("LATCHKEY_DATABASE_URL", database_url)
            .env("LATCHKEY_REDIS_URL", redis_url())
            .env("LATCHKEY_REDIS_PREFIX", prefix)
            .env("LATCHKEY_DATA_DIR", data_dir)
            .env("LATCHKEY_MASTER_PASSWORD", crate::helpers::TEST_MASTER_PASSWORD)
            .env("LATCHKEY_KEYRING__PBKDF2_ITERATIONS", "1000")
            .env("LATCHKEY_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn latchkey");
        // Owned from here on, so even a failed start is killed and reaped.
        let process = Self { child, address: format!("http://127.0.0.1:{port}") };
        for _ in 0..200 {
            if reqwest::get(format!("{}/healthz", process.address)).await.is_ok_and(|r| r.status() == 200) {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("latchkey did not start");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -s {signal}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_committed_and_sigterm_drains() {
    // Users and sessions come from an in-process instance on the same
    // database and key space; the process under test serves them.
    let db = TestDb::new(DbKind::Postgres).await;
    let prefix = unique_prefix();
    let shared = prefix.clone();
    let app = TestApp::spawn_on_url(&db.url, CacheKind::Redis, move |c| c.redis_prefix = shared).await;
    let s = app.register_and_login("vic", PASSWORD).await;
    let data = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    let whoami = |address: String, token: String| {
        let client = client.clone();
        async move {
            client
                .get(format!("{address}/v1/sessions/current"))
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };

    let mut process = Process::start(&db.url, &prefix, data.path()).await;
    // A refresh committed by the process, then SIGKILL in the middle of load.
    let res = client
        .post(format!("{}/v1/sessions/refresh", process.address))
        .json(&json!({"refresh_token": s.refresh}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(res.status(), 200);
    let refreshed = crate::client::Session::from_json(res.json().await.expect("json"));
    let load: Vec<_> =
        (0..200).map(|_| tokio::spawn(whoami(process.address.clone(), refreshed.token.clone()))).collect();
    process.signal("KILL");
    for task in load {
        // Each request either answered 200 or lost its connection: never a wrong answer.
        if let Ok(status) = task.await.expect("join") {
            assert_eq!(status, 200);
        }
    }
    let _ = process.child.wait();

    let process = Process::start(&db.url, &prefix, data.path()).await;
    assert_eq!(
        whoami(process.address.clone(), refreshed.token.clone()).await.expect("whoami"),
        200,
        "the committed refresh survived"
    );
    assert_eq!(
        whoami(process.address.clone(), s.token.clone()).await.expect("whoami"),
        401,
        "the old token stays dead"
    );
    let reuse = client
        .post(format!("{}/v1/sessions/refresh", process.address))
        .json(&json!({"refresh_token": s.refresh}))
        .send()
        .await
        .expect("req");
    assert_eq!(reuse.status(), 401);

    // SIGTERM: requests in flight are answered, then the process exits cleanly.
    let mut process = process;
    let s2 = app.login("vic", PASSWORD, "second").await;
    let load: Vec<_> = (0..100).map(|_| tokio::spawn(whoami(process.address.clone(), s2.token.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    process.signal("TERM");
    let mut answered = 0;
    for task in load {
        if let Ok(status) = task.await.expect("join") {
            assert_eq!(status, 200);
            answered += 1;
        }
    }
    assert!(answered > 0);
    let status = tokio::task::spawn_blocking(move || {
        let status = process.child.wait();
        (status, process)
    })
    .await
    .expect("join")
    .0
    .expect("wait");
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_answers_503_and_recovers() {
    let pg = crate::helpers::PrivatePostgres::start().await;
    let app = TestApp::spawn_on_url(&pg.url(), CacheKind::Redis, |c| {
        c.database.acquire_timeout = Duration::from_secs(1);
    })
    .await;
    let s = app.register_and_login("wren", PASSWORD).await;
    use sea_orm::{EntityTrait as _, PaginatorTrait as _};
    let users_before = entity::users::Entity::find().count(app.app_db.conn()).await.expect("count");

    pg.stop();
    assert_eq!(app.get("/readyz").await.status(), 503);
    let ready: Value = app.get("/readyz").await.json().await.expect("json");
    assert_eq!(ready["down"], json!(["postgres"]));
    // Whoami on a cached session keeps working within the token's life.
    assert_eq!(app.whoami(&s.token).await.status(), 200);
    // Login, registration and refresh answer 503 `unavailable`.
    let start = app
        .post_json("/v1/login/start", &json!({"username": "wren", "credential_request": b64(&opaque_ke::ClientLogin::<latchkey::domain::opaque::Suite>::start(&mut rand::rngs::OsRng, b"pw").expect("start").message.serialize())}))
        .await;
    assert_eq!(start.status(), 503);
    assert_eq!(start.json::<Value>().await.expect("json")["code"], "unavailable");
    let refresh = app.refresh(&s.refresh).await;
    assert_eq!(refresh.status(), 503);
    // Registration/start reads the database too (a taken name is evaluated
    // under a decoy), so it answers 503 at once.
    let request =
        opaque_ke::ClientRegistration::<latchkey::domain::opaque::Suite>::start(&mut rand::rngs::OsRng, b"pw")
            .expect("start")
            .message
            .serialize();
    let registration = app
        .post_json("/v1/registration/start", &json!({"username": "yves", "registration_request": b64(&request)}))
        .await;
    assert_eq!(registration.status(), 503);

    pg.restart();
    let mut ready = false;
    for _ in 0..50 {
        if app.get("/readyz").await.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ready, "recovers without a restart of latchkey");
    assert_eq!(
        entity::users::Entity::find().count(app.app_db.conn()).await.expect("count"),
        users_before,
        "nothing half-written"
    );
    assert_eq!(app.register("yves", PASSWORD).await.status(), 201);
    app.refreshed(&s.refresh).await;
    app.login("wren", PASSWORD, "after").await;
}
