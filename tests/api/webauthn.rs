//! Passkeys (WebAuthn) over real HTTP with a software authenticator
//! (webauthn-authenticator-rs's `SoftToken`): enrolment, login with
//! password + passkey, replayed assertions, a cloned authenticator (its
//! counter goes back), failures counted for lockout, removal, step-up,
//! the admin view, and malformed input.

use std::time::Duration;

use latchkey::domain::webauthn::{CreationChallengeResponse, RequestChallengeResponse};
use reqwest::StatusCode;
use sea_orm::EntityTrait as _;
use serde_json::{Value, json};
use uuid::Uuid;
use webauthn_authenticator_rs::AuthenticatorBackend as _;
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::softtoken::SoftToken;

use crate::client::Session;
use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TestApp};

const PASSWORD: &str = "correct horse battery staple";
/// The default `webauthn.rp_origin`: what the browser would report.
const ORIGIN: &str = "http://localhost:8080";

/// A software authenticator (user verification on).
struct Authenticator(SoftToken);

impl Authenticator {
    fn new() -> Self {
        Self(SoftToken::new(true).expect("a soft token").0)
    }

    /// An exact copy, key and counter: a cloned authenticator.
    fn clone_token(&self) -> Self {
        Self(SoftToken::from_cbor(&self.0.to_cbor().expect("cbor")).expect("from cbor"))
    }

    fn origin() -> Url {
        Url::parse(ORIGIN).expect("origin")
    }

    /// Answers registration options (the server's `options`).
    fn create(&mut self, options: &Value) -> Value {
        let options: CreationChallengeResponse = serde_json::from_value(options.clone()).expect("creation options");
        let credential = self.0.perform_register(Self::origin(), options.public_key, 60_000).expect("registered");
        serde_json::to_value(credential).expect("json")
    }

    /// Answers assertion options.
    fn get(&mut self, options: &Value) -> Value {
        let options: RequestChallengeResponse = serde_json::from_value(options.clone()).expect("request options");
        let assertion = self.0.perform_auth(Self::origin(), options.public_key, 60_000).expect("asserted");
        serde_json::to_value(assertion).expect("json")
    }
}

impl TestApp {
    async fn post_auth(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(token).json(body).send().await.expect("request")
    }

    /// Registers a passkey named `name`; returns its id.
    async fn add_passkey(&self, session: &Session, authenticator: &mut Authenticator, name: &str) -> String {
        let res = self.post_auth("/v1/webauthn/register/start", &session.token, &json!({"name": name})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let start: Value = res.json().await.expect("json");
        let credential = authenticator.create(&start["options"]);
        let body = json!({"ceremony_id": start["ceremony_id"], "credential": credential});
        let res = self.post_auth("/v1/webauthn/register/finish", &session.token, &body).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap_or_default());
        let item: Value = res.json().await.expect("json");
        assert_eq!(item["name"], name);
        item["id"].as_str().expect("id").to_owned()
    }

    /// A password login that stops at the second factor; (mfa_token, methods).
    async fn mfa_step(&self, username: &str) -> (String, Value) {
        let res = self.login_response(username, PASSWORD, json!({"fingerprint": "laptop"})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["mfa_required"], true, "{body}");
        assert!(body.get("session_token").is_none());
        (body["mfa_token"].as_str().expect("mfa_token").to_owned(), body["methods"].clone())
    }

    async fn login_challenge(&self, mfa_token: &str) -> Value {
        let res = self.post_json("/v1/login/webauthn/start", &json!({"mfa_token": mfa_token})).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.expect("json")["options"].clone()
    }

    async fn login_assert(&self, mfa_token: &str, assertion: &Value) -> reqwest::Response {
        self.post_json("/v1/login/webauthn/finish", &json!({"mfa_token": mfa_token, "credential": assertion})).await
    }

    /// Password + passkey, all the way to a session.
    async fn login_with_passkey(&self, username: &str, authenticator: &mut Authenticator) -> Session {
        let (mfa, _) = self.mfa_step(username).await;
        let options = self.login_challenge(&mfa).await;
        let res = self.login_assert(&mfa, &authenticator.get(&options)).await;
        assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap_or_default());
        let session = Session::from_json(res.json().await.expect("json"));
        assert_eq!(session.body["aal"], "aal2");
        session
    }

    async fn failed_attempts(&self, user_id: &str) -> i32 {
        let id: Uuid = user_id.parse().expect("uuid");
        entity::users::Entity::find_by_id(id).one(self.app_db.conn()).await.expect("q").expect("user").failed_attempts
    }
}

fn user_id(session: &Session) -> String {
    session.body["user_id"].as_str().expect("user_id").to_owned()
}

/// Room for the failures these tests make on purpose (each login/start
/// counts until the login completes).
async fn spawn(db: DbKind, cache: CacheKind) -> TestApp {
    TestApp::spawn_with(db, cache, |c| c.ratelimit.lockout_threshold = 20).await
}

async fn enrolment_login_and_removal(db: DbKind, cache: CacheKind) {
    let app = spawn(db, cache).await;
    let session = app.register_and_login("pia", PASSWORD).await;
    // A session from before the enrolment stays aal1.
    let older = app.login("pia", PASSWORD, "tablet").await;
    let mut key = Authenticator::new();

    // Bad input is a 400 problem, never a 500.
    for body in [json!({}), json!({"name": ""}), json!({"name": "x".repeat(65)}), json!({"name": "a\u{0}b"})] {
        let res = app.post_auth("/v1/webauthn/register/start", &session.token, &body).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let res = app.post_auth("/v1/webauthn/register/start", &session.token, &json!({"name": "YubiKey"})).await;
    let start: Value = res.json().await.expect("json");
    assert_eq!(start["options"]["publicKey"]["rp"]["id"], "localhost");
    let credential = key.create(&start["options"]);
    for body in [
        json!({"ceremony_id": start["ceremony_id"], "credential": {"id": "AA", "rawId": "AA", "type": "public-key"}}),
        json!({"ceremony_id": start["ceremony_id"], "credential": "nonsense"}),
        json!({"ceremony_id": "made-up", "credential": credential}),
        json!({"ceremony_id": start["ceremony_id"], "credential": credential, "extra": 1}),
    ] {
        let res = app.post_auth("/v1/webauthn/register/finish", &session.token, &body).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let problem: Value = res.json().await.expect("json");
        assert_eq!(problem["code"], "invalid_request");
    }
    // Another user's session cannot finish pia's ceremony.
    let res = app.post_auth("/v1/webauthn/register/start", &session.token, &json!({"name": "YubiKey"})).await;
    let start: Value = res.json().await.expect("json");
    let credential = key.create(&start["options"]);
    let mallory = app.register_and_login("mallory", PASSWORD).await;
    let body = json!({"ceremony_id": start["ceremony_id"], "credential": credential});
    let res = app.post_auth("/v1/webauthn/register/finish", &mallory.token, &body).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // ... and that attempt used the ceremony up.
    let res = app.post_auth("/v1/webauthn/register/finish", &session.token, &body).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let id = app.add_passkey(&session, &mut key, "YubiKey").await;
    let whoami: Value = app.whoami(&session.token).await.json().await.expect("json");
    assert_eq!(whoami["aal"], "aal2", "the enrolling session proved a second factor");
    let list: Value = app.get_auth("/v1/webauthn/credentials", &session.token).await.json().await.expect("json");
    assert_eq!(list["credentials"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["credentials"][0]["id"], id.as_str());
    assert_eq!(list["credentials"][0]["last_used_at"], Value::Null);

    // Stored sealed: the public key and counter are not in the clear.
    let row = entity::webauthn_credentials::Entity::find().one(app.app_db.conn()).await.expect("q").expect("row");
    assert!(!row.ciphertext.contains("cred_id") && !row.ciphertext.contains("counter"));

    // Password, then passkey.
    let (mfa, methods) = app.mfa_step("pia").await;
    assert_eq!(methods, json!(["webauthn"]));
    let options = app.login_challenge(&mfa).await;
    let assertion = key.get(&options);
    let res = app.login_assert(&mfa, &assertion).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await.expect("json");
    assert_eq!(second["aal"], "aal2");
    // The same assertion again: the MFA token and its challenge are spent.
    assert_eq!(app.login_assert(&mfa, &assertion).await.status(), StatusCode::UNAUTHORIZED);
    // ... and against a new challenge it does not verify; the failure
    // counts for lockout like a bad TOTP code.
    let uid = user_id(&session);
    let (mfa, _) = app.mfa_step("pia").await;
    let _ = app.login_challenge(&mfa).await;
    let before = app.failed_attempts(&uid).await;
    assert_eq!(app.login_assert(&mfa, &assertion).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.failed_attempts(&uid).await, before + 1, "a failed assertion is a counted failure");
    // A finish with no start for this token fails (and counts) too.
    let (fresh, _) = app.mfa_step("pia").await;
    let before = app.failed_attempts(&uid).await;
    assert_eq!(app.login_assert(&fresh, &assertion).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.failed_attempts(&uid).await, before + 1);
    // Malformed assertions are 400s.
    for credential in [json!("nope"), json!({"id": 1})] {
        let res =
            app.post_json("/v1/login/webauthn/finish", &json!({"mfa_token": mfa, "credential": credential})).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
    let res = app.post_json("/v1/login/webauthn/start", &json!({"mfa_token": "lk_m_made-up"})).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e == "webauthn.register"), "{events:?}");
    assert!(events.iter().filter(|e| *e == "mfa.failure").count() >= 2, "{events:?}");
    // A success resets the run.
    let _ = app.login_with_passkey("pia", &mut key).await;
    assert_eq!(app.failed_attempts(&uid).await, 0);
    let list: Value = app.get_auth("/v1/webauthn/credentials", &session.token).await.json().await.expect("json");
    assert!(list["credentials"][0]["last_used_at"].is_string());

    // Removal: not someone else's, not from an aal1 session.
    let path = format!("/v1/webauthn/credentials/{id}");
    assert_eq!(app.delete_auth(&path, &mallory.token).await.status(), StatusCode::NOT_FOUND);
    let whoami: Value = app.whoami(&older.token).await.json().await.expect("json");
    assert_eq!(whoami["aal"], "aal1");
    assert_eq!(app.delete_auth(&path, &older.token).await.status(), StatusCode::FORBIDDEN);
    // Not an id at all: as unknown as any other.
    assert_eq!(app.delete_auth("/v1/webauthn/credentials/not-a-uuid", &session.token).await.status(), 404);
    assert_eq!(app.delete_auth(&path, &session.token).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.delete_auth(&path, &session.token).await.status(), StatusCode::NOT_FOUND);
    assert!(app.audit_events().await.iter().any(|e| e == "webauthn.remove"));
    // No second factor left: the password alone logs in again.
    let _ = app.login("pia", PASSWORD, "laptop").await;
}
each_stack!(enrolment_login_and_removal, enrolment_login_and_removal);

/// What a password thief holding an aal1 session (one from before the
/// victim turned on a second factor) tries: add a factor of their own, which
/// would make that session aal2 and let them through every later login, or
/// trade the victim's passkey for a weaker factor. Every such change needs
/// a session that proved an existing factor.
async fn an_aal1_session_cannot_add_or_trade_factors(db: DbKind, cache: CacheKind) {
    let app = spawn(db, cache).await;
    // The victim has TOTP; the thief's session predates it.
    let victim = app.register_and_login("val", PASSWORD).await;
    let thief = app.login("val", PASSWORD, "elsewhere").await;
    app.enable_totp(&victim.token).await;
    let res = app.post_auth("/v1/webauthn/register/start", &thief.token, &json!({"name": "mine"})).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "no passkey of the thief's own");
    let whoami: Value = app.whoami(&thief.token).await.json().await.expect("json");
    assert_eq!(whoami["aal"], "aal1");

    // The victim has passkeys; the thief's session predates them.
    let victim = app.register_and_login("wes", PASSWORD).await;
    let thief = app.login("wes", PASSWORD, "elsewhere").await;
    let mut key = Authenticator::new();
    let first = app.add_passkey(&victim, &mut key, "YubiKey").await;
    let _second = app.add_passkey(&victim, &mut Authenticator::new(), "Phone").await;
    let res = app.post_auth("/v1/webauthn/register/start", &thief.token, &json!({"name": "mine"})).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "no second passkey of the thief's own");
    let res = app.client.post(app.url("/v1/totp/enroll")).bearer_auth(&thief.token).send().await.expect("request");
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "no TOTP of the thief's own");
    let path = format!("/v1/webauthn/credentials/{first}");
    assert_eq!(app.delete_auth(&path, &thief.token).await.status(), StatusCode::FORBIDDEN, "one of two, still refused");
    let list: Value = app.get_auth("/v1/webauthn/credentials", &victim.token).await.json().await.expect("json");
    assert_eq!(list["credentials"].as_array().map(Vec::len), Some(2), "both passkeys are still there");
    // The victim's own aal2 session may.
    assert_eq!(app.delete_auth(&path, &victim.token).await.status(), StatusCode::NO_CONTENT);
}
each_stack!(an_aal1_session_cannot_add_or_trade_factors, an_aal1_session_cannot_add_or_trade_factors);

async fn cloned_authenticator_is_refused(db: DbKind, cache: CacheKind) {
    let app = spawn(db, cache).await;
    let session = app.register_and_login("quinn", PASSWORD).await;
    let mut key = Authenticator::new();
    app.add_passkey(&session, &mut key, "phone").await;
    let _ = app.enable_totp(&session.token).await;
    let mut clone = key.clone_token();
    // The genuine authenticator moves its counter on ...
    let _ = app.login_with_passkey("quinn", &mut key).await;
    // ... so the copy's next assertion carries a counter already seen.
    let (mfa, methods) = app.mfa_step("quinn").await;
    assert_eq!(methods, json!(["totp", "webauthn"]));
    let options = app.login_challenge(&mfa).await;
    let before = app.failed_attempts(&user_id(&session)).await;
    let res = app.login_assert(&mfa, &clone.get(&options)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e == "webauthn.counter_regression"), "{events:?}");
    assert_eq!(app.failed_attempts(&user_id(&session)).await, before + 1);
    // The genuine one still works.
    let _ = app.login_with_passkey("quinn", &mut key).await;

    // A race: two challenges made while the stored counter is the same;
    // the copy and the original answer with one counter value. webauthn-rs
    // passes both (each beats the counter its challenge saw); the store's
    // compare-and-set lets only the first through.
    let mut clone = key.clone_token();
    let (first, _) = app.mfa_step("quinn").await;
    let (second, _) = app.mfa_step("quinn").await;
    let first_options = app.login_challenge(&first).await;
    let second_options = app.login_challenge(&second).await;
    let regressions = |events: &[String]| events.iter().filter(|e| *e == "webauthn.counter_regression").count();
    let seen = regressions(&app.audit_events().await);
    assert_eq!(app.login_assert(&first, &key.get(&first_options)).await.status(), StatusCode::OK);
    assert_eq!(app.login_assert(&second, &clone.get(&second_options)).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(regressions(&app.audit_events().await), seen + 1, "the lost race is audited");
}
each_stack!(cloned_authenticator_is_refused, cloned_authenticator_is_refused);

async fn step_up_by_passkey(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, |c| c.sessions.reauth_window = Duration::from_secs(2)).await;
    let session = app.register_and_login("rosa", PASSWORD).await;
    // Without a passkey there is nothing to step up with.
    let res = app.post_auth("/v1/account/reauth/webauthn/start", &session.token, &json!({})).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let mut key = Authenticator::new();
    app.add_passkey(&session, &mut key, "laptop").await;
    let session = app.login_with_passkey("rosa", &mut key).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let res = app.post_auth("/v1/webauthn/register/start", &session.token, &json!({"name": "second"})).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = res.json().await.expect("json");
    assert_eq!(problem["code"], "reauthentication_required");

    let res = app.client.post(app.url("/v1/account/reauth/webauthn/start")).bearer_auth(&session.token).send();
    let options = res.await.expect("req").json::<Value>().await.expect("json")["options"].clone();
    let assertion = key.get(&options);
    let res =
        app.post_auth("/v1/account/reauth/webauthn/finish", &session.token, &json!({"credential": assertion})).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap_or_default());
    let answer: Value = res.json().await.expect("json");
    let whoami: Value = app.whoami(&session.token).await.json().await.expect("json");
    assert_eq!(whoami["auth_time"], answer["auth_time"], "whoami sees the new auth_time");
    // Fresh again: the sensitive operation goes through.
    let res = app.post_auth("/v1/webauthn/register/start", &session.token, &json!({"name": "second"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The same assertion cannot step up again, and counts as a failure.
    let before = app.failed_attempts(&user_id(&session)).await;
    let res =
        app.post_auth("/v1/account/reauth/webauthn/finish", &session.token, &json!({"credential": assertion})).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(app.audit_events().await.iter().any(|e| e == "session.reauth"));
    assert_eq!(app.failed_attempts(&user_id(&session)).await, before + 1);
    // Without a session: 401.
    let res = app.post_json("/v1/account/reauth/webauthn/finish", &json!({"credential": assertion})).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
each_stack!(step_up_by_passkey, step_up_by_passkey);

async fn admin_lists_and_removes_second_factors(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let admin = app.register_and_login("root", PASSWORD).await;
    assert!(app.core.set_admin("root", true, chrono::Utc::now()).await.expect("grant"));
    let sam = app.register_and_login("sam", PASSWORD).await;
    let mut key = Authenticator::new();
    let passkey = app.add_passkey(&sam, &mut key, "Sam's key").await;
    let _ = app.enable_totp(&sam.token).await;
    let sam_id = user_id(&sam);

    let path = format!("/v1/admin/users/{sam_id}/factors");
    assert_eq!(app.get_auth(&path, &sam.token).await.status(), StatusCode::FORBIDDEN);
    let res = app.get_auth(&path, &admin.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let factors: Value = res.json().await.expect("json");
    let factors = factors["factors"].as_array().expect("factors").clone();
    assert_eq!(factors.len(), 2, "{factors:?}");
    assert_eq!(factors[0]["kind"], "totp");
    assert_eq!(factors[1]["kind"], "webauthn");
    assert_eq!(factors[1]["name"], "Sam's key");
    assert_eq!(factors[1]["id"], passkey.as_str());
    let unknown = Uuid::now_v7();
    assert_eq!(app.get_auth(&format!("/v1/admin/users/{unknown}/factors"), &admin.token).await.status(), 404);

    let remove = format!("/v1/admin/users/{sam_id}/webauthn/{passkey}");
    assert_eq!(app.delete_auth(&remove, &sam.token).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.delete_auth(&format!("/v1/admin/users/{sam_id}/webauthn/{unknown}"), &admin.token).await.status(),
        404
    );
    assert_eq!(app.delete_auth(&remove, &admin.token).await.status(), StatusCode::NO_CONTENT);
    assert!(app.audit_events().await.iter().any(|e| e == "webauthn.removed_by_admin"));
    let factors: Value = app.get_auth(&path, &admin.token).await.json().await.expect("json");
    assert_eq!(factors["factors"].as_array().map(Vec::len), Some(1));
    // Only TOTP is offered now.
    let (_, methods) = app.mfa_step("sam").await;
    assert_eq!(methods, json!(["totp"]));

    // Deleting the account deletes its passkeys.
    app.add_passkey(&sam, &mut Authenticator::new(), "spare").await;
    let count = || async {
        use sea_orm::PaginatorTrait as _;
        entity::webauthn_credentials::Entity::find().count(app.app_db.conn()).await.expect("count")
    };
    assert_eq!(count().await, 1);
    assert_eq!(app.delete_auth(&format!("/v1/admin/users/{sam_id}"), &admin.token).await.status(), 204);
    assert_eq!(count().await, 0);
}
each_stack!(admin_lists_and_removes_second_factors, admin_lists_and_removes_second_factors);

async fn passkeys_move_with_key_rotation_and_stay_bound_to_their_owner(db: DbKind, cache: CacheKind) {
    use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, IntoActiveModel as _};
    let app = spawn(db, cache).await;
    let tess = app.register_and_login("tess", PASSWORD).await;
    let mut key = Authenticator::new();
    let tess_key = app.add_passkey(&tess, &mut key, "key").await;
    let db = &app.app_db;
    let row = |id: String| async move {
        let id: Uuid = id.parse().expect("uuid");
        entity::webauthn_credentials::Entity::find_by_id(id).one(db.conn()).await.expect("q").expect("row")
    };
    let before = row(tess_key.clone()).await;

    // Rotation, then re-encryption: the row moves to the new key and works.
    let now = chrono::Utc::now();
    let new_key = app.core.rotate_keys("test", now).await.expect("rotate");
    let report = app.core.reencrypt_keys(100, "test", now).await.expect("reencrypt");
    assert!(report.moved >= 1 && report.failed == 0, "{report:?}");
    let after = row(tess_key.clone()).await;
    assert_eq!(after.key_id, new_key);
    assert_ne!(after.ciphertext, before.ciphertext);
    let _ = app.login_with_passkey("tess", &mut key).await;

    // tess's sealed credential copied into uma's row opens for nobody: the
    // ciphertext is bound to its owner, so uma's login is refused (an
    // integrity error, not a login with tess's key).
    let uma = app.register_and_login("uma", PASSWORD).await;
    let mut uma_key = Authenticator::new();
    let uma_passkey = app.add_passkey(&uma, &mut uma_key, "key").await;
    let copied = row(tess_key).await;
    let mut target = row(uma_passkey).await.into_active_model();
    target.key_id = Set(copied.key_id);
    target.ciphertext = Set(copied.ciphertext);
    target.update(app.app_db.conn()).await.expect("update");
    let (mfa, _) = app.mfa_step("uma").await;
    let res = app.post_json("/v1/login/webauthn/start", &json!({"mfa_token": mfa})).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let problem: Value = res.json().await.expect("json");
    assert_eq!(problem["code"], "internal");
    assert!(!problem.to_string().contains("webauthn_credentials"), "no storage detail reaches the client: {problem}");
}
each_stack!(
    passkeys_move_with_key_rotation_and_stay_bound_to_their_owner,
    passkeys_move_with_key_rotation_and_stay_bound_to_their_owner
);
