//! OPAQUE registration and login over HTTP, on Postgres + Redis and on the
//! embedded default.

use opaque_ke::ClientRegistration;
use rand::rngs::OsRng;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::{b64, unb64};
use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TestApp};
use latchkey::domain::opaque::Suite;

const PASSWORD: &str = "correct horse battery staple";

async fn problem(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    (status, res.json().await.expect("problem json"))
}

async fn register_login_whoami(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let res = app.register("Alice", PASSWORD).await;
    assert_eq!(res.status(), 201);
    let user_id = res.json::<Value>().await.expect("json")["user_id"].as_str().expect("user_id").to_owned();

    // "Alice", "alice" and full-width "ａlice" are one account.
    let session = app.login("\u{ff41}lice", PASSWORD, "laptop").await;
    assert_eq!(session.body["user_id"], user_id.as_str());
    assert_eq!(session.body["aal"], "aal1");
    assert_eq!(session.body["new_device"], true);
    assert!(session.token.starts_with("lk_s_") && session.refresh.starts_with("lk_r_"));
    for field in ["session_id", "token_expires_at", "session_expires_at"] {
        assert!(session.body.get(field).is_some(), "{field}");
    }

    let me = app.whoami(&session.token).await;
    assert_eq!(me.status(), 200);
    assert_eq!(me.headers()["x-user-id"], user_id.as_str());
    assert_eq!(me.headers()["x-session-id"], session.body["session_id"].as_str().expect("id"));
    assert_eq!(me.headers()["x-aal"], "aal1");
    assert_eq!(me.headers()["cache-control"], "no-store");
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["device"]["name"], "test device");
    for field in ["created_at", "last_seen_at", "session_expires_at"] {
        assert!(me.get(field).is_some(), "{field}");
    }

    // A second registration of the same name, in any spelling, is a conflict.
    let again = app.register("ALICE", "another password").await;
    assert_eq!((again.status().as_u16(), again.body["code"].as_str()), (409, Some("conflict")));

    let events = app.audit_events().await;
    for expected in ["registration", "login.success", "session.create", "device.new"] {
        assert!(events.iter().any(|e| e == expected), "{expected} in {events:?}");
    }
    let (checked, broken) = latchkey::store::audit::verify_chain(&app.app_db).await.expect("verify");
    assert!(checked >= 4);
    assert_eq!(broken, None, "the audit chain is intact");
}
each_stack!(register_login_whoami_on, register_login_whoami);

async fn bad_usernames_and_messages_are_400(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let request = b64(&ClientRegistration::<Suite>::start(&mut OsRng, b"pw").expect("start").message.serialize());
    for username in ["", "bad\u{0}name", "tab\tname", &"a".repeat(65), "with space"] {
        let res = app
            .post_json("/v1/registration/start", &json!({"username": username, "registration_request": request}))
            .await;
        let (status, body) = problem(res).await;
        assert_eq!((status.as_u16(), body["code"].as_str()), (400, Some("invalid_request")), "{username:?}");
    }

    let padded = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE, unb64(&request));
    let invalid_point = b64(&[0xffu8; 32]);
    for bad in [padded.as_str(), "not base64!", &b64(&[1u8; 31]), invalid_point.as_str()] {
        let res =
            app.post_json("/v1/registration/start", &json!({"username": "bob", "registration_request": bad})).await;
        assert_eq!(res.status(), 400, "{bad:?}");
        let res = app.post_json("/v1/login/start", &json!({"username": "bob", "credential_request": bad})).await;
        assert_eq!(res.status(), 400, "{bad:?}");
    }
    let ke1_bad_point = b64(&[0xffu8; 96]);
    let res = app.post_json("/v1/login/start", &json!({"username": "bob", "credential_request": ke1_bad_point})).await;
    assert_eq!(res.status(), 400);

    // A finish without a start stores nothing.
    let record = b64(&[1u8; 192]);
    let res =
        app.post_json("/v1/registration/finish", &json!({"username": "carol", "registration_record": record})).await;
    let (status, body) = problem(res).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (400, Some("invalid_request")));
    let res = app
        .post_json("/v1/registration/finish", &json!({"username": "carol", "registration_record": b64(&[1u8; 100])}))
        .await;
    assert_eq!(res.status(), 400);
    use sea_orm::{EntityTrait as _, PaginatorTrait as _};
    assert_eq!(entity::users::Entity::find().count(app.app_db.conn()).await.expect("count"), 0);

    // Unknown fields and missing fields.
    let res =
        app.post_json("/v1/login/start", &json!({"username": "bob", "credential_request": "x", "pasword": "x"})).await;
    assert_eq!(res.status(), 400);
    let res = app.post_json("/v1/login/finish", &json!({"login_id": "x"})).await;
    assert_eq!(res.status(), 400);
    let res = app
        .post_json("/v1/login/finish", &json!({"login_id": "x", "credential_finalization": b64(&[0u8; 64]), "device": {"fingerprint": "f".repeat(257)}}))
        .await;
    assert_eq!(res.status(), 400, "fingerprints are at most 256 characters");
}
each_stack!(bad_usernames_and_messages_are_400_on, bad_usernames_and_messages_are_400);

async fn wrong_password_and_unknown_user_fail_alike(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    assert_eq!(app.register("dave", PASSWORD).await.status(), 201);

    // A real client learns from KE2 alone that it cannot log in, for a wrong
    // password and an unknown name alike, and sends no finish.
    let wrong = app.login_response("dave", "not the password", json!({"fingerprint": "x"})).await;
    let unknown = app.login_response("nobody", PASSWORD, json!({"fingerprint": "x"})).await;
    assert_eq!((wrong.status(), unknown.status()), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    assert_eq!(wrong.body, unknown.body);
    assert!(wrong.body.contains("client_rejected_ke2"), "{}", wrong.body);
    // A client that sends a made-up KE3 anyway gets one body for every cause.
    let mut bodies = Vec::new();
    for name in ["dave", "nobody"] {
        let (login_id, _) = app.login_messages(name, "not the password", None).await.expect("start");
        let finish = json!({"login_id": login_id, "credential_finalization": b64(&[7u8; 64])});
        bodies.push(problem(app.post_json("/v1/login/finish", &finish).await).await);
    }
    let (s1, b1) = bodies[0].clone();
    assert_eq!(s1, 401);
    assert_eq!(bodies[0], bodies[1], "one body for every cause");
    assert_eq!(b1["code"], "invalid_credentials");

    // The login state is single-use.
    let (login_id, ke3) = app.login_ke3("dave", PASSWORD).await;
    let finish = json!({"login_id": login_id, "credential_finalization": b64(&ke3)});
    assert_eq!(app.post_json("/v1/login/finish", &finish).await.status(), 200);
    let (status, body) = problem(app.post_json("/v1/login/finish", &finish).await).await;
    assert_eq!((status.as_u16(), body), (401, b1.clone()));
    // A made-up login id.
    let made_up = json!({"login_id": "AAAAAAAAAAAAAAAAAAAAAA", "credential_finalization": b64(&ke3)});
    assert_eq!(problem(app.post_json("/v1/login/finish", &made_up).await).await.1, b1);

    let events = app.audit_events().await;
    assert_eq!(events.iter().filter(|e| *e == "login.failure").count(), 2, "{events:?}");
}
each_stack!(wrong_password_and_unknown_user_fail_alike_on, wrong_password_and_unknown_user_fail_alike);

async fn tampered_credential_is_an_integrity_error_not_a_wrong_password(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    assert_eq!(app.register("erin", PASSWORD).await.status(), 201);
    assert_eq!(app.register("frank", PASSWORD).await.status(), 201);
    use entity::{opaque_credentials as oc, users};
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    let erin = users::Entity::find()
        .filter(users::Column::Username.eq("erin"))
        .one(app.app_db.conn())
        .await
        .expect("q")
        .expect("erin");
    let frank = users::Entity::find()
        .filter(users::Column::Username.eq("frank"))
        .one(app.app_db.conn())
        .await
        .expect("q")
        .expect("frank");
    let erins = oc::Entity::find_by_id(erin.id).one(app.app_db.conn()).await.expect("q").expect("row");
    // Frank's row gets Erin's ciphertext: it must not open under Frank.
    oc::Entity::update_many()
        .col_expr(oc::Column::Ciphertext, sea_orm::sea_query::Expr::val(erins.ciphertext.clone()))
        .filter(oc::Column::UserId.eq(frank.id))
        .exec(app.app_db.conn())
        .await
        .expect("tamper");
    let res = app
        .post_json(
            "/v1/login/start",
            &json!({"username": "frank", "credential_request": b64(&opaque_ke::ClientLogin::<Suite>::start(&mut OsRng, b"pw").expect("start").message.serialize())}),
        )
        .await;
    let (status, body) = problem(res).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (500, Some("internal")));
    assert!(body.get("detail").is_none(), "no internal detail leaks: {body}");
    // Counted for alerting.
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(metrics.contains("latchkey_integrity_errors_total"), "{metrics}");
    // The service keeps serving, and the row is untouched.
    app.login("erin", PASSWORD, "d").await;
    let franks = oc::Entity::find_by_id(frank.id).one(app.app_db.conn()).await.expect("q").expect("row");
    assert_eq!(franks.ciphertext, erins.ciphertext);
}
each_stack!(tampered_credential_on, tampered_credential_is_an_integrity_error_not_a_wrong_password);

async fn flipped_ciphertext_byte_is_an_integrity_error(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    assert_eq!(app.register("gus", PASSWORD).await.status(), 201);
    use entity::{opaque_credentials as oc, users};
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    let gus = users::Entity::find()
        .filter(users::Column::Username.eq("gus"))
        .one(app.app_db.conn())
        .await
        .expect("q")
        .expect("gus");
    let row = oc::Entity::find_by_id(gus.id).one(app.app_db.conn()).await.expect("q").expect("row");
    let mut bytes = row.ciphertext.clone().into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(bytes).expect("ascii");
    oc::Entity::update_many()
        .col_expr(oc::Column::Ciphertext, sea_orm::sea_query::Expr::val(flipped.clone()))
        .filter(oc::Column::UserId.eq(gus.id))
        .exec(app.app_db.conn())
        .await
        .expect("tamper");
    let request = b64(&opaque_ke::ClientLogin::<Suite>::start(&mut OsRng, b"pw").expect("start").message.serialize());
    let res = app.post_json("/v1/login/start", &json!({"username": "gus", "credential_request": request})).await;
    let (status, body) = problem(res).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (500, Some("internal")), "never a wrong password");
    let after = oc::Entity::find_by_id(gus.id).one(app.app_db.conn()).await.expect("q").expect("row");
    assert_eq!(after.ciphertext, flipped, "the row is left as it is");
    assert_eq!(app.get("/healthz").await.status(), 200);
}
each_stack!(flipped_ciphertext_on, flipped_ciphertext_byte_is_an_integrity_error);

async fn registration_start_is_no_password_oracle_for_taken_names(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    assert_eq!(app.register("zoe", PASSWORD).await.status(), 201);
    // An attacker sends the same blinded element to login/start and to
    // registration/start: were the OPRF keys the same, the evaluations
    // would match and one KE2 would let every guess be tested offline
    // through registration/start, outside the lockout.
    let start = opaque_ke::ClientLogin::<latchkey::domain::opaque::Suite>::start(&mut OsRng, b"guess").expect("start");
    let ke1 = start.message.serialize();
    let login = app
        .post_json("/v1/login/start", &json!({"username": "zoe", "credential_request": b64(&ke1)}))
        .await
        .json::<Value>()
        .await
        .expect("json");
    let ke2 = unb64(login["credential_response"].as_str().expect("ke2"));
    let blinded = b64(&ke1[..32]);
    let mut evaluations = Vec::new();
    for _ in 0..2 {
        let res =
            app.post_json("/v1/registration/start", &json!({"username": "zoe", "registration_request": blinded})).await;
        assert_eq!(res.status(), 200, "a taken name answers like a free one");
        let body: Value = res.json().await.expect("json");
        evaluations.push(unb64(body["registration_response"].as_str().expect("response"))[..32].to_vec());
    }
    assert_ne!(evaluations[0], ke2[..32].to_vec(), "registration never evaluates under a taken name's login key");
    assert_eq!(evaluations[0], evaluations[1], "deterministic, so repeating a request shows nothing");
    // A free name is evaluated under its own key, as login will.
    let start = opaque_ke::ClientLogin::<latchkey::domain::opaque::Suite>::start(&mut OsRng, b"x").expect("start");
    let ke1 = start.message.serialize();
    let res = app
        .post_json("/v1/registration/start", &json!({"username": "yann", "registration_request": b64(&ke1[..32])}))
        .await;
    let reg: Value = res.json().await.expect("json");
    let login: Value = app
        .post_json("/v1/login/start", &json!({"username": "yann", "credential_request": b64(&ke1)}))
        .await
        .json()
        .await
        .expect("json");
    let reg = unb64(reg["registration_response"].as_str().expect("response"));
    let ke2 = unb64(login["credential_response"].as_str().expect("ke2"));
    assert_eq!(reg[..32], ke2[..32], "a free name: one OPRF key for registration and login");
}
each_stack!(registration_start_is_no_password_oracle_on, registration_start_is_no_password_oracle_for_taken_names);
