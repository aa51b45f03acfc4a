//! Tokens for other services: JWTs verified offline against the JWKS (with
//! a standard JOSE library, not latchkey's code), RFC 7662 introspection,
//! revocation reaching JWTs, signing-key rotation.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::client::Session;
use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TestApp};

const PASSWORD: &str = "correct horse battery staple";
const SERVICE_TOKEN: &str = "svc-introspection-token-0123456789";

fn with_service(c: &mut latchkey::config::Config) {
    c.service_tokens = vec![secrecy::SecretString::from(SERVICE_TOKEN)];
}

async fn jwt(app: &TestApp, s: &Session) -> String {
    let res = app.client.post(app.url("/v1/tokens/jwt")).bearer_auth(&s.token).send().await.expect("req");
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_owned()
}

async fn jwks(app: &TestApp) -> Vec<Value> {
    let res = app.get("/.well-known/jwks.json").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=300");
    res.json::<Value>().await.expect("json")["keys"].as_array().expect("keys").clone()
}

/// Verifies as a service would: the JWKS key named by `kid`, EdDSA, iss/aud.
fn verify(token: &str, keys: &[Value]) -> Option<Value> {
    let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
    let jwk = keys.iter().find(|k| k["kid"] == kid.as_str())?;
    assert_eq!((&jwk["kty"], &jwk["crv"], &jwk["alg"]), (&json!("OKP"), &json!("Ed25519"), &json!("EdDSA")));
    let key = DecodingKey::from_ed_components(jwk["x"].as_str()?).ok()?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["latchkey"]);
    validation.set_audience(&["latchkey"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation).ok().map(|d| d.claims)
}

async fn introspect(app: &TestApp, body: reqwest::RequestBuilder) -> (u16, Value) {
    let _ = app;
    let res = body.send().await.expect("req");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn form(app: &TestApp, token: &str) -> reqwest::RequestBuilder {
    app.client.post(app.url("/v1/tokens/introspect")).bearer_auth(SERVICE_TOKEN).form(&[("token", token)])
}

async fn jwt_verifies_offline_and_introspects(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, with_service).await;
    let s = app.register_and_login("jo", PASSWORD).await;
    let token = jwt(&app, &s).await;
    let keys = jwks(&app).await;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("d").is_none(), "public keys only");
    let claims = verify(&token, &keys).expect("a standard library verifies it against the JWKS");
    assert_eq!(claims["sub"], s.body["user_id"]);
    assert_eq!(claims["sid"], s.body["session_id"]);
    assert_eq!(claims["aal"], "aal1");
    let auth_time = chrono::DateTime::parse_from_rfc3339(s.body["auth_time"].as_str().expect("at")).expect("time");
    assert_eq!(claims["auth_time"], auth_time.timestamp());
    assert_eq!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"), 300);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    // A tampered token verifies nowhere.
    let mut forged = token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert!(verify(&forged, &keys).is_none());

    // Introspection: form-encoded or JSON, session tokens and JWTs.
    let (status, answer) = introspect(&app, form(&app, &token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&answer["active"], &answer["token_type"], &answer["sid"]),
        (&json!(true), &json!("jwt"), &s.body["session_id"])
    );
    let json_body =
        app.client.post(app.url("/v1/tokens/introspect")).bearer_auth(SERVICE_TOKEN).json(&json!({"token": s.token}));
    let (_, answer) = introspect(&app, json_body).await;
    assert_eq!(
        (&answer["active"], &answer["token_type"], &answer["sub"]),
        (&json!(true), &json!("session_token"), &s.body["user_id"])
    );
    for bad in [forged.as_str(), "lk_s_nope", "", "a.b.c", &format!("lk_s_{}", "A".repeat(43))] {
        let (status, answer) = introspect(&app, form(&app, bad)).await;
        assert_eq!((status, answer), (200, json!({"active": false})), "{bad:?}");
    }
    // Only services may ask; bodies of another type are refused.
    let anonymous = app.client.post(app.url("/v1/tokens/introspect")).form(&[("token", token.as_str())]);
    assert_eq!(introspect(&app, anonymous).await.0, 401);
    let as_user =
        app.client.post(app.url("/v1/tokens/introspect")).bearer_auth(&s.token).form(&[("token", token.as_str())]);
    assert_eq!(introspect(&app, as_user).await.0, 401);
    // Gateways' RFC 7662 clients send the secret as HTTP Basic.
    let basic = app
        .client
        .post(app.url("/v1/tokens/introspect"))
        .basic_auth("gateway", Some(SERVICE_TOKEN))
        .form(&[("token", token.as_str())]);
    assert_eq!(introspect(&app, basic).await.1["active"], true);
    let wrong = app
        .client
        .post(app.url("/v1/tokens/introspect"))
        .basic_auth("gateway", Some("guess"))
        .form(&[("token", token.as_str())]);
    assert_eq!(introspect(&app, wrong).await.0, 401);
    let text = app.client.post(app.url("/v1/tokens/introspect")).bearer_auth(SERVICE_TOKEN).body(token.clone());
    assert_eq!(introspect(&app, text).await.0, 415);

    // Logout reaches the JWT.
    assert_eq!(app.delete_auth("/v1/sessions/current", &s.token).await.status(), 204);
    let (_, answer) = introspect(&app, form(&app, &token)).await;
    assert_eq!(answer, json!({"active": false}), "a revoked session's JWT is inactive");
    let (_, answer) = introspect(&app, form(&app, &s.token)).await;
    assert_eq!(answer, json!({"active": false}));
}
each_stack!(jwt_verifies_offline_and_introspects_on, jwt_verifies_offline_and_introspects);

async fn a_refresh_keeps_the_sessions_jwts_active(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, with_service).await;
    let s = app.register_and_login("rio", PASSWORD).await;
    let before = jwt(&app, &s).await;
    let refreshed = app.refreshed(&s.refresh).await;
    let after = jwt(&app, &refreshed).await;
    for token in [&before, &after] {
        assert_eq!(introspect(&app, form(&app, token)).await.1["active"], true, "a refresh revokes nothing");
    }
    // Raising the session to aal2 neither.
    app.enable_totp(&refreshed.token).await;
    assert_eq!(introspect(&app, form(&app, &after)).await.1["active"], true);
}
each_stack!(refresh_keeps_jwts_active_on, a_refresh_keeps_the_sessions_jwts_active);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_jwts_after_a_redis_flush() {
    let app = TestApp::spawn_with(DbKind::Postgres, CacheKind::Redis, with_service).await;
    let s = app.register_and_login("flo", PASSWORD).await;
    let token = jwt(&app, &s).await;
    let other = app.login("flo", PASSWORD, "laptop").await;
    assert_eq!(
        app.delete_auth(&format!("/v1/sessions/{}", s.body["session_id"].as_str().expect("id")), &other.token)
            .await
            .status(),
        204
    );
    // The revocation put the session on the denylist...
    use latchkey::store::FastStore as _;
    let latchkey::store::Fast::Redis(redis) = &app.fast else { panic!("a Redis stack") };
    let denylisted: Vec<String> = redis
        .dump_prefix(app.keys.prefix())
        .await
        .expect("dump")
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| key.contains("revoked_sid"))
        .collect();
    assert_eq!(denylisted.len(), 1, "{denylisted:?}");
    // ...which a flush loses; the database still says revoked.
    for key in &denylisted {
        app.fast.del(key).await.expect("del");
    }
    let (_, answer) = introspect(&app, form(&app, &token)).await;
    assert_eq!(answer, json!({"active": false}));
}

async fn signing_keys_rotate_and_stay_published(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, with_service).await;
    let s = app.register_and_login("ray", PASSWORD).await;
    let before = jwt(&app, &s).await;
    let old_kid = jsonwebtoken::decode_header(&before).expect("header").kid.expect("kid");
    let now = chrono::Utc::now();
    let new_kid = app.core.rotate_signing_key("test", now).await.expect("rotate").to_string();
    assert_ne!(new_kid, old_kid);
    let keys = jwks(&app).await;
    assert_eq!(keys.len(), 2, "the previous key stays published");
    assert!(verify(&before, &keys).is_some(), "tokens signed before the rotation still verify");
    let after = jwt(&app, &s).await;
    assert_eq!(jsonwebtoken::decode_header(&after).expect("header").kid, Some(new_kid.clone()));
    assert_eq!(introspect(&app, form(&app, &before)).await.1["active"], true);
    // Once every token it signed has expired, the previous key is retired.
    app.core.signing_key_maintenance(now + chrono::Duration::minutes(16)).await.expect("maintenance");
    assert_eq!(jwks(&app).await.len(), 2, "still published while the others may reload and clocks differ");
    app.core.signing_key_maintenance(now + chrono::Duration::minutes(20)).await.expect("maintenance");
    let status = app.core.signing_keys_status().await.expect("status");
    let states: Vec<&str> = status.iter().map(|k| k.state.as_str()).collect();
    assert_eq!(states, ["active", "retired"]);
    assert_eq!(jwks(&app).await.len(), 1);
    // A key planted by someone who can write the table is never published:
    // public keys come from the sealed private halves.
    use sea_orm::ActiveValue::Set;
    let genuine = entity::signing_keys::Entity::find().one(app.app_db.conn()).await.expect("q").expect("row");
    entity::signing_keys::Entity::insert(entity::signing_keys::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        key_id: Set(genuine.key_id),
        ciphertext: Set(genuine.ciphertext.clone()),
        public_key: Set("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
        state: Set("previous".into()),
        created_at: Set(chrono::Utc::now()),
        retired_at: Set(Some(chrono::Utc::now())),
    })
    .exec_without_returning(app.app_db.conn())
    .await
    .expect("plant");
    app.core.rotate_signing_key("test", chrono::Utc::now()).await.expect("rotate reloads");
    let published: Vec<String> = jwks(&app).await.iter().map(|k| k["x"].as_str().expect("x").to_owned()).collect();
    assert!(!published.iter().any(|x| x.starts_with("AAAA")), "{published:?}");
    // The private halves are sealed at rest.
    use sea_orm::EntityTrait as _;
    for row in entity::signing_keys::Entity::find().all(app.app_db.conn()).await.expect("rows") {
        assert!(row.ciphertext.len() > 64, "sealed, not a raw 32-byte seed");
    }
}
each_stack!(signing_keys_rotate_on, signing_keys_rotate_and_stay_published);

async fn revocation_by_every_path_reaches_jwts(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, |c| {
        with_service(c);
        c.tokens.jwt_lifetime = std::time::Duration::from_secs(1);
    })
    .await;
    // Expired: a one-second JWT, a little later.
    let s = app.register_and_login("val", PASSWORD).await;
    let short = jwt(&app, &s).await;
    assert_eq!(introspect(&app, form(&app, &short)).await.1["active"], true);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(introspect(&app, form(&app, &short)).await.1, json!({"active": false}), "expired");

    // An admin revoking the user's sessions.
    let app = TestApp::spawn_with(db, cache, with_service).await;
    let s = app.register_and_login("val", PASSWORD).await;
    let token = jwt(&app, &s).await;
    app.register_and_login("root", PASSWORD).await;
    assert!(app.core.set_admin("root", true, chrono::Utc::now()).await.expect("grant"));
    let admin = app.login("root", PASSWORD, "admin-laptop").await;
    let user_id = s.body["user_id"].as_str().expect("id");
    let res = app
        .client
        .delete(app.url(&format!("/v1/admin/users/{user_id}/sessions")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200);
    assert_eq!(introspect(&app, form(&app, &token)).await.1, json!({"active": false}), "admin revoke");

    // A password change from another session.
    let first = app.login("val", PASSWORD, "phone").await;
    let token = jwt(&app, &first).await;
    let second = app.login("val", PASSWORD, "laptop").await;
    let res = crate::lifecycle::change_password(&app, &second.token, "another long passphrase").await;
    assert_eq!(res, 204);
    assert_eq!(introspect(&app, form(&app, &token)).await.1, json!({"active": false}), "password change");
    assert_eq!(introspect(&app, form(&app, &jwt(&app, &second).await)).await.1["active"], true, "the caller's stays");
}
each_stack!(revocation_by_every_path_on, revocation_by_every_path_reaches_jwts);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_issue_and_verify_each_others_jwts() {
    let db = crate::helpers::TestDb::new(DbKind::Postgres).await;
    let prefix = crate::helpers::unique_prefix();
    let configure = |prefix: String| {
        move |c: &mut latchkey::config::Config| {
            with_service(c);
            c.redis_prefix = prefix;
        }
    };
    let a = TestApp::spawn_on(&db, CacheKind::Redis, configure(prefix.clone())).await;
    let b = TestApp::spawn_on(&db, CacheKind::Redis, configure(prefix)).await;
    let s = a.register_and_login("rhea", PASSWORD).await;
    let from_a = jwt(&a, &s).await;
    let from_b = jwt(&b, &s).await;
    let keys = jwks(&b).await;
    assert_eq!(keys, jwks(&a).await, "one key set for every replica");
    assert!(verify(&from_a, &keys).is_some() && verify(&from_b, &keys).is_some());
    assert_eq!(introspect(&b, form(&b, &from_a)).await.1["active"], true);
    assert_eq!(introspect(&a, form(&a, &from_b)).await.1["active"], true);
    // A rotation on A: B verifies A's new tokens at once (an unknown kid reloads).
    a.core.rotate_signing_key("test", chrono::Utc::now()).await.expect("rotate");
    let rotated = jwt(&a, &s).await;
    assert_eq!(introspect(&b, form(&b, &rotated)).await.1["active"], true);
    // Revocation on A reaches B.
    assert_eq!(a.delete_auth("/v1/sessions/current", &s.token).await.status(), 204);
    assert_eq!(introspect(&b, form(&b, &from_b)).await.1, json!({"active": false}));
}
