//! TOTP: RFC 6238 vectors, enrolment, the login step, replay protection,
//! recovery codes (keyed per user, legacy rows), the MFA token, disabling,
//! and key rotation.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use entity::recovery_codes;
use latchkey::domain::keyring::{Keyring, RotationPolicy, Subkey};
use latchkey::domain::totp::{Algorithm, SecondFactor, code_at};
use reqwest::StatusCode;
use sea_orm::{ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::{Session, secret_bytes, totp_code as code};
use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TEST_MASTER_PASSWORD, TEST_PBKDF2_ITERATIONS, TestApp};

const PASSWORD: &str = "correct horse battery staple";

#[test]
fn rfc6238_vectors_pass_through_our_code() {
    #[derive(serde::Deserialize)]
    struct Vector {
        algorithm: String,
        secret_ascii: String,
        time: u64,
        step: u64,
        t0: u64,
        digits: u8,
        expected: String,
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc6238_vectors.json");
    let vectors: Vec<Vector> = serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    assert_eq!(vectors.len(), 18);
    for v in vectors {
        let algorithm = match v.algorithm.as_str() {
            "SHA1" => Algorithm::SHA1,
            "SHA256" => Algorithm::SHA256,
            "SHA512" => Algorithm::SHA512,
            other => panic!("unknown algorithm {other}"),
        };
        assert_eq!(v.t0, 0);
        let code = code_at(algorithm, v.digits, v.step, v.secret_ascii.as_bytes(), v.time);
        assert_eq!(code, v.expected, "{} at {}", v.algorithm, v.time);
    }
}

fn step_of(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).expect("after 1970") / 30
}

/// Waits until the current 30 s step has at least 12 s left, and returns it:
/// tests that use the real clock then have codes for step-1..=step+1 that
/// stay inside the accepted window while they run.
async fn steady_step() -> u64 {
    loop {
        let now = Utc::now();
        if now.timestamp() % 30 < 18 {
            return step_of(now);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Registers, logs in, enrolls and confirms (with the previous step's
/// code). Returns (aal2 session, base32 secret, recovery codes, step).
async fn user_with_totp(app: &TestApp, username: &str) -> (Session, String, Vec<String>, u64) {
    let session = app.register_and_login(username, PASSWORD).await;
    let res = app.client.post(app.url("/v1/totp/enroll")).bearer_auth(&session.token).send().await.expect("req");
    assert_eq!(res.status(), 200);
    let enrolment: Value = res.json().await.expect("json");
    let secret = enrolment["secret"].as_str().expect("secret").to_owned();
    let step = steady_step().await;
    let res = app
        .client
        .post(app.url("/v1/totp/confirm"))
        .bearer_auth(&session.token)
        .json(&json!({"code": code(&secret, step - 1)}))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    let codes: Vec<String> =
        serde_json::from_value(res.json::<Value>().await.expect("json")["recovery_codes"].clone()).expect("codes");
    (session, secret, codes, step)
}

async fn mfa_token(app: &TestApp, username: &str) -> String {
    let res = app.login_response(username, PASSWORD, json!({"fingerprint": "phone"})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["mfa_required"], true, "{body}");
    assert!(body.get("session_token").is_none(), "no session before the second factor");
    let token = body["mfa_token"].as_str().expect("mfa_token").to_owned();
    assert!(token.starts_with("lk_m_"));
    token
}

async fn login_totp(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_json("/v1/login/totp", &body).await
}

async fn enrolment_confirm_and_login(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let session = app.register_and_login("tina", PASSWORD).await;
    let res = app.client.post(app.url("/v1/totp/enroll")).bearer_auth(&session.token).send().await.expect("req");
    assert_eq!(res.status(), 200);
    let first: Value = res.json().await.expect("json");
    // Re-enrolling before confirmation replaces the secret.
    let res = app.client.post(app.url("/v1/totp/enroll")).bearer_auth(&session.token).send().await.expect("req");
    let enrolment: Value = res.json().await.expect("json");
    assert_ne!(first["secret"], enrolment["secret"]);
    let secret = enrolment["secret"].as_str().expect("secret").to_owned();
    assert!(secret_bytes(&secret).len() * 8 >= 160, "at least 160 bits");
    let uri = enrolment["otpauth_uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/latchkey:tina?"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")) && uri.contains("issuer=latchkey"), "{uri}");
    let png =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, enrolment["qr_png"].as_str().expect("png"))
            .expect("base64");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG image");
    // The secret is stored sealed, never in the clear.
    let stored = crate::helpers::dump_database(&app.app_db).await;
    assert!(!stored.contains(&secret));

    let step = steady_step().await;
    let confirm = |code: String| {
        app.client.post(app.url("/v1/totp/confirm")).bearer_auth(&session.token).json(&json!({"code": code})).send()
    };
    assert_eq!(
        confirm(code(first["secret"].as_str().expect("s"), step)).await.expect("req").status(),
        400,
        "the replaced secret is dead"
    );
    assert_eq!(confirm("12345".into()).await.expect("req").status(), 400);
    let res = confirm(code(&secret, step - 1)).await.expect("req");
    assert_eq!(res.status(), 200);
    let codes = res.json::<Value>().await.expect("json")["recovery_codes"].as_array().expect("codes").len();
    assert_eq!(codes, 10);
    assert_eq!(
        app.whoami(&session.token).await.json::<Value>().await.expect("json")["aal"],
        "aal2",
        "confirming raised the session"
    );
    assert_eq!(confirm(code(&secret, step)).await.expect("req").status(), 409);
    let res = app.client.post(app.url("/v1/totp/enroll")).bearer_auth(&session.token).send().await.expect("req");
    assert_eq!(res.status(), 409, "enrolment again needs disabling first");

    // Login now asks for the second factor.
    let mfa = mfa_token(&app, "tina").await;
    // The confirming code's step is consumed; so is anything older.
    let res = login_totp(&app, json!({"mfa_token": mfa, "code": code(&secret, step - 1)})).await;
    assert_eq!(res.status(), 401, "replay of the confirming code");
    let res = login_totp(&app, json!({"mfa_token": mfa, "code": code(&secret, step)})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    let s2 = Session::from_json(res.json().await.expect("json"));
    assert_eq!(s2.body["aal"], "aal2");
    assert_ne!(s2.token, mfa, "a new session token, not the MFA token upgraded");
    let me = app.whoami(&s2.token).await;
    assert_eq!(me.headers()["x-aal"], "aal2");
    // The MFA token was single-use.
    let res = login_totp(&app, json!({"mfa_token": mfa, "code": code(&secret, step + 1)})).await;
    assert_eq!(res.status(), 401);

    let events = app.audit_events().await;
    for e in ["totp.enroll", "mfa.success", "mfa.failure"] {
        assert!(events.iter().any(|x| x == e), "{e} in {events:?}");
    }
}
each_stack!(enrolment_confirm_and_login_on, enrolment_confirm_and_login);

async fn replay_skew_and_concurrency(db: DbKind, cache: CacheKind) {
    // Many logins of one user in a row (each an attempt until its second
    // factor completes): above the lockout threshold this test is not about.
    let app = TestApp::spawn_with(db, cache, |c| c.ratelimit.lockout_threshold = 50).await;
    let (_, secret, _, _) = user_with_totp(&app, "uma").await;
    let core = app.core.clone();
    let client = latchkey::domain::core::ClientInfo::default();
    // Drive the domain at chosen instants ahead of the confirmation, inside
    // the MFA tokens' five minutes.
    let t0: DateTime<Utc> = Utc::now() + chrono::Duration::seconds(60);
    let s = step_of(t0);

    let mfa = mfa_token(&app, "uma").await;
    core.login_totp(&mfa, SecondFactor::Code(code(&secret, s)), &client, t0).await.expect("current step accepted");
    let mfa = mfa_token(&app, "uma").await;
    let replay = core.login_totp(&mfa, SecondFactor::Code(code(&secret, s)), &client, t0).await;
    assert!(replay.is_err(), "the same step twice, sequentially");
    let older = core.login_totp(&mfa, SecondFactor::Code(code(&secret, s - 1)), &client, t0).await;
    assert!(older.is_err(), "a step older than the last accepted one");
    core.login_totp(&mfa, SecondFactor::Code(code(&secret, s + 1)), &client, t0).await.expect("one step of skew ahead");
    let mfa = mfa_token(&app, "uma").await;
    let too_far = core.login_totp(&mfa, SecondFactor::Code(code(&secret, s + 3)), &client, t0).await;
    assert!(too_far.is_err(), "two steps ahead is outside the window");
    let t1 = t0 + chrono::Duration::seconds(90);
    core.login_totp(&mfa, SecondFactor::Code(code(&secret, s + 2)), &client, t1).await.expect("one step behind, later");

    // 50 concurrent submissions of one code: exactly one success. Five MFA
    // tokens from five logins, ten requests each.
    let t2 = t0 + chrono::Duration::seconds(180);
    let winning_code = code(&secret, step_of(t2));
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(mfa_token(&app, "uma").await);
    }
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (core, token, code, client) =
                (core.clone(), tokens[i % 5].clone(), winning_code.clone(), client.clone());
            tokio::spawn(async move { core.login_totp(&token, SecondFactor::Code(code), &client, t2).await.is_ok() })
        })
        .collect();
    let mut successes = 0;
    for task in tasks {
        successes += usize::from(task.await.expect("join"));
    }
    assert_eq!(successes, 1, "one code, one success");

    // And over HTTP with the real clock: concurrent requests on one MFA token.
    let mfa = mfa_token(&app, "uma").await;
    let now_code = code(&secret, steady_step().await);
    let requests = (0..20).map(|_| login_totp(&app, json!({"mfa_token": mfa, "code": now_code})));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(requests).await.iter().map(|r| r.status()).collect();
    // The real-clock step is older than the driven ones, so every request
    // is refused: a step older than the last accepted never passes.
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
}
each_stack!(replay_skew_and_concurrency_on, replay_skew_and_concurrency);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_step_consumption_has_one_winner_in_the_database() {
    for kind in [DbKind::Postgres, DbKind::Sqlite] {
        let app = TestApp::spawn(kind, CacheKind::Memory).await;
        let (session, _, _, _) = user_with_totp(&app, "vera").await;
        let user_id: uuid::Uuid = session.body["user_id"].as_str().expect("id").parse().expect("uuid");
        let db = Arc::new(app.app_db.clone());
        let step = i64::try_from(step_of(Utc::now()) + 1_000).expect("fits");
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    latchkey::store::totp::consume_step(&db, user_id, step, Utc::now()).await.expect("cas")
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.expect("join"));
        }
        assert_eq!(wins, 1, "{kind:?}");
    }
}

async fn recovery_codes_burning_and_scope(db: DbKind, cache: CacheKind) {
    // Six failures below: keep them under the lockout threshold here (the
    // lockout has its own tests).
    let app = TestApp::spawn_with(db, cache, |c| c.ratelimit.lockout_threshold = 10).await;
    let (session, secret, codes, step) = user_with_totp(&app, "walt").await;

    // A recovery code works once.
    let mfa = mfa_token(&app, "walt").await;
    let res = login_totp(&app, json!({"mfa_token": mfa, "recovery_code": codes[0].to_uppercase()})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    let mfa = mfa_token(&app, "walt").await;
    assert_eq!(login_totp(&app, json!({"mfa_token": mfa, "recovery_code": codes[0]})).await.status(), 401);
    assert!(app.audit_events().await.iter().any(|e| e == "recovery_code.used"));

    // Neither or both factors: 400, and the token is not spent.
    assert_eq!(login_totp(&app, json!({"mfa_token": mfa})).await.status(), 400);
    assert_eq!(
        login_totp(&app, json!({"mfa_token": mfa, "code": "123456", "recovery_code": codes[1]})).await.status(),
        400
    );

    // The MFA token is useless anywhere else.
    assert_eq!(app.whoami(&mfa).await.status(), 401);
    assert_eq!(app.refresh(&mfa).await.status(), 401);
    assert_eq!(app.get_auth("/v1/sessions", &mfa).await.status(), 401);

    // Five wrong codes burn a token; the right code afterwards is refused.
    let mfa = mfa_token(&app, "walt").await;
    let wrong = if code(&secret, step) == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        assert_eq!(login_totp(&app, json!({"mfa_token": mfa, "code": wrong})).await.status(), 401);
    }
    assert_eq!(login_totp(&app, json!({"mfa_token": mfa, "code": code(&secret, step)})).await.status(), 401, "burned");
    use sea_orm::EntityTrait as _;
    let user_id: uuid::Uuid = session.body["user_id"].as_str().expect("id").parse().expect("uuid");
    let user = entity::users::Entity::find_by_id(user_id).one(app.app_db.conn()).await.expect("q").expect("user");
    assert!(user.failed_attempts >= 6, "TOTP failures count toward lockout: {}", user.failed_attempts);

    // A fresh token still works with a fresh code, and resets the counter.
    let mfa = mfa_token(&app, "walt").await;
    assert_eq!(login_totp(&app, json!({"mfa_token": mfa, "code": code(&secret, step)})).await.status(), 200);
    let user = entity::users::Entity::find_by_id(user_id).one(app.app_db.conn()).await.expect("q").expect("user");
    assert_eq!(user.failed_attempts, 0);
}
each_stack!(recovery_codes_burning_and_scope_on, recovery_codes_burning_and_scope);

/// The `recovery-code` subkey of the app's keyring, opened as the app did.
async fn recovery_key(app: &TestApp) -> Subkey {
    let policy = RotationPolicy { max_age: std::time::Duration::from_secs(86400), max_uses: 1_000_000 };
    let password = secrecy::SecretString::from(TEST_MASTER_PASSWORD);
    let keyring = Keyring::open(app.app_db.clone(), &password, TEST_PBKDF2_ITERATIONS, policy, Utc::now())
        .await
        .expect("the keyring opens");
    keyring.subkey("recovery-code")
}

fn normalized(code: &str) -> String {
    code.chars().filter(|c| !matches!(c, '-' | ' ')).flat_map(char::to_lowercase).collect()
}

/// The documented form of a stored recovery code: hex HMAC-SHA256 under the
/// `recovery-code` subkey of (user id bytes, normalized code).
fn code_mac(key: &[u8], user_id: Uuid, code: &str) -> String {
    use hmac::Mac as _;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key).expect("any key length");
    mac.update(user_id.as_bytes());
    mac.update(normalized(code).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The unkeyed form rows held before.
fn legacy_hash(code: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(normalized(code).as_bytes()))
}

fn user_id_of(session: &Session) -> Uuid {
    session.body["user_id"].as_str().expect("id").parse().expect("uuid")
}

async fn stored_codes(app: &TestApp, user_id: Uuid) -> Vec<recovery_codes::Model> {
    recovery_codes::Entity::find()
        .filter(recovery_codes::Column::UserId.eq(user_id))
        .all(app.app_db.conn())
        .await
        .expect("rows")
}

async fn insert_code(app: &TestApp, user_id: Uuid, code_hash: String) {
    recovery_codes::Entity::insert(recovery_codes::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        code_hash: Set(code_hash),
        used_at: Set(None),
        created_at: Set(Utc::now()),
    })
    .exec_without_returning(app.app_db.conn())
    .await
    .expect("insert a recovery code row");
}

async fn recover(app: &TestApp, username: &str, code: &str) -> StatusCode {
    let mfa = mfa_token(app, username).await;
    login_totp(app, json!({"mfa_token": mfa, "recovery_code": code})).await.status()
}

async fn recovery_codes_are_keyed_per_user(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let (uma, _, uma_codes, _) = user_with_totp(&app, "uma").await;
    let (vic, _, _, _) = user_with_totp(&app, "vic").await;
    let (uma_id, vic_id) = (user_id_of(&uma), user_id_of(&vic));
    let key = recovery_key(&app).await;

    // Each row is the keyed HMAC of (user, code), never the plain SHA-256.
    let stored: Vec<String> = stored_codes(&app, uma_id).await.into_iter().map(|r| r.code_hash).collect();
    let mut expected: Vec<String> = uma_codes.iter().map(|c| code_mac(&key, uma_id, c)).collect();
    let mut sorted = stored.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected);
    for code in &uma_codes {
        assert!(!stored.contains(&legacy_hash(code)), "a plain SHA-256 of a code is stored");
    }

    // The same code for two users is stored as two different values (and
    // the unique index on the column accepts the second).
    let shared = &uma_codes[0];
    let for_vic = code_mac(&key, vic_id, shared);
    assert_ne!(for_vic, code_mac(&key, uma_id, shared));
    insert_code(&app, vic_id, for_vic).await;
    assert_eq!(recover(&app, "vic", &shared.to_uppercase()).await, StatusCode::OK, "vic's copy works for vic");
    assert_eq!(recover(&app, "uma", shared).await, StatusCode::OK, "and uma's still works for uma");
    assert_eq!(recover(&app, "vic", shared).await, StatusCode::UNAUTHORIZED, "each is spent once");

    // A row moved to another user matches nothing there.
    let moved = code_mac(&key, uma_id, &uma_codes[1]);
    let moved_rows = recovery_codes::Entity::update_many()
        .col_expr(recovery_codes::Column::UserId, sea_orm::sea_query::Expr::val(vic_id))
        .filter(recovery_codes::Column::CodeHash.eq(moved))
        .exec(app.app_db.conn())
        .await
        .expect("move the row");
    assert_eq!(moved_rows.rows_affected, 1);
    assert_eq!(recover(&app, "vic", &uma_codes[1]).await, StatusCode::UNAUTHORIZED);
}
each_stack!(recovery_codes_are_keyed_per_user_on, recovery_codes_are_keyed_per_user);

async fn legacy_recovery_code_rows_migrate_on_use(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let (wes, _, _, _) = user_with_totp(&app, "wes").await;
    let wes_id = user_id_of(&wes);
    // A row as written before recovery codes were keyed.
    let code = "k7m2p-q9r4s";
    insert_code(&app, wes_id, legacy_hash(code)).await;
    let left = stored_codes(&app, wes_id).await.iter().filter(|r| r.used_at.is_none()).count();

    assert_eq!(recover(&app, "wes", "K7M2P Q9R4S").await, StatusCode::OK, "a legacy code still works");
    assert_eq!(recover(&app, "wes", code).await, StatusCode::UNAUTHORIZED, "once");

    // Spent, and rewritten to the keyed form: no plain SHA-256 remains.
    let rows = stored_codes(&app, wes_id).await;
    assert!(rows.iter().all(|r| r.code_hash != legacy_hash(code)));
    let key = recovery_key(&app).await;
    let spent = rows.iter().find(|r| r.code_hash == code_mac(&key, wes_id, code)).expect("the migrated row");
    assert!(spent.used_at.is_some());
    assert_eq!(rows.iter().filter(|r| r.used_at.is_none()).count(), left - 1);
    assert!(app.audit_events().await.iter().any(|e| e == "recovery_code.used"));
}
each_stack!(legacy_recovery_code_rows_migrate_on_use_on, legacy_recovery_code_rows_migrate_on_use);

async fn disable_needs_aal2_and_a_code(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let (aal2, secret, _, step) = user_with_totp(&app, "xena").await;
    // An aal1 session (via a recovery-free path: a refresh keeps aal2, so make one
    // by logging in on another user without TOTP) cannot disable; here the
    // aal1 case is a session of a user whose TOTP is being set up.
    let other = app.register_and_login("yuri", PASSWORD).await;
    let res = app
        .client
        .delete(app.url("/v1/totp"))
        .bearer_auth(&other.token)
        .json(&json!({"code": "123456"}))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 403, "aal1 sessions cannot disable TOTP");

    let second = {
        let mfa = mfa_token(&app, "xena").await;
        let res = login_totp(&app, json!({"mfa_token": mfa, "code": code(&secret, step)})).await;
        Session::from_json(res.json().await.expect("json"))
    };
    let disable = |token: String, code: String| {
        app.client
            .delete(app.url("/v1/totp"))
            .bearer_auth(token)
            .json(&json!({"code": code, "revoke_other_sessions": true}))
            .send()
    };
    assert_eq!(disable(aal2.token.clone(), "000001".into()).await.expect("req").status(), 401, "wrong code");
    assert_eq!(disable(aal2.token.clone(), code(&secret, step)).await.expect("req").status(), 401, "used step");
    assert_eq!(disable(aal2.token.clone(), code(&secret, step + 1)).await.expect("req").status(), 204);
    assert_eq!(app.whoami(&second.token).await.status(), 401, "other sessions revoked");
    assert_eq!(app.whoami(&aal2.token).await.status(), 200);
    assert!(app.audit_events().await.iter().any(|e| e == "totp.disable"));

    // TOTP is gone: a password login gives a session directly.
    let s = app.login("xena", PASSWORD, "laptop").await;
    assert_eq!(s.body["aal"], "aal1");
    use sea_orm::{EntityTrait as _, PaginatorTrait as _};
    assert_eq!(entity::recovery_codes::Entity::find().count(app.app_db.conn()).await.expect("count"), 0);
    assert_eq!(entity::totp_credentials::Entity::find().count(app.app_db.conn()).await.expect("count"), 0);
}
each_stack!(disable_needs_aal2_and_a_code_on, disable_needs_aal2_and_a_code);

async fn totp_survives_key_rotation_and_reencryption(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let (_, secret, _, step) = user_with_totp(&app, "zack").await;
    let now = Utc::now();
    let old = app.core.keys_status(now).await.expect("status").active_key_id.expect("active");
    let new = app.core.rotate_keys("test", now).await.expect("rotate");
    let report = app.core.reencrypt_keys(100, "test", now).await.expect("reencrypt");
    assert!(report.moved >= 2, "{report:?}");
    let _ = old;
    let (_, broken) = latchkey::store::audit::verify_chain(&app.app_db).await.expect("verify");
    assert_eq!(broken, None, "re-encryption leaves the audit chain intact");
    use sea_orm::EntityTrait as _;
    let row = entity::totp_credentials::Entity::find().one(app.app_db.conn()).await.expect("q").expect("row");
    assert_eq!(row.key_id, new, "the TOTP secret moved to the new key");
    let mfa = mfa_token(&app, "zack").await;
    let res = login_totp(&app, json!({"mfa_token": mfa, "code": code(&secret, step)})).await;
    assert_eq!(res.status(), 200, "TOTP still verifies after rotation and re-encryption");
}
each_stack!(totp_survives_key_rotation_on, totp_survives_key_rotation_and_reencryption);
