//! Sessions: whoami, refresh rotation and reuse, revocation, lifetimes,
//! cache loss, and no raw token at rest.

use std::time::Duration;

use latchkey::store::{Fast, FastStore as _};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::Session;
use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TestApp};

const PASSWORD: &str = "correct horse battery staple";

async fn session_list(app: &TestApp, token: &str) -> Vec<Value> {
    let res = app.get_auth("/v1/sessions", token).await;
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.expect("json")["sessions"].as_array().expect("array").clone()
}

async fn refresh_rotates_and_reuse_revokes(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let first = app.register_and_login("gina", PASSWORD).await;

    let second = app.refreshed(&first.refresh).await;
    assert_ne!(second.token, first.token);
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(second.body["session_id"], first.body["session_id"], "same session, new tokens");
    assert_eq!(app.whoami(&first.token).await.status(), 401, "the old session token is dead");
    assert_eq!(app.whoami(&second.token).await.status(), 200);

    // The rotated refresh token comes back: the whole session is revoked.
    let reuse = app.refresh(&first.refresh).await;
    assert_eq!(reuse.status(), 401);
    assert_eq!(app.whoami(&second.token).await.status(), 401, "reuse revoked the session");
    assert_eq!(app.refresh(&second.refresh).await.status(), 401, "and its current refresh token");
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e == "refresh_token.reuse"), "{events:?}");
    assert!(events.iter().any(|e| e == "session.refresh"), "{events:?}");
    assert!(events.iter().any(|e| e == "session.revoke"), "{events:?}");

    // Garbage tokens.
    for bad in ["", "lk_r_short", &first.token] {
        assert_eq!(app.refresh(bad).await.status(), 401, "{bad}");
    }
}
each_stack!(refresh_rotates_and_reuse_revokes_on, refresh_rotates_and_reuse_revokes);

async fn concurrent_refresh_gives_one_winner(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let s = app.register_and_login("hank", PASSWORD).await;
    let (a, b) = tokio::join!(app.refresh(&s.refresh), app.refresh(&s.refresh));
    let mut codes = [a.status().as_u16(), b.status().as_u16()];
    let mut winners = Vec::new();
    for res in [a, b] {
        if res.status() == 200 {
            winners.push(Session::from_json(res.json().await.expect("json")));
        }
    }
    codes.sort_unstable();
    // At most one wins; the other is a reuse, which revokes the whole
    // session. When the reuse is detected before the winner has answered,
    // the winner's new tokens are already revoked and it answers 401 too.
    assert!(codes == [200, 401] || codes == [401, 401], "never two uses of one refresh token: {codes:?}");
    let session_id = s.body["session_id"].as_str().expect("id").parse::<uuid::Uuid>().expect("uuid");
    let user_id = s.body["user_id"].as_str().expect("user id").parse::<uuid::Uuid>().expect("uuid");
    assert!(latchkey::store::sessions::is_revoked(&app.app_db, user_id, session_id).await.expect("query"));
    for winner in winners {
        assert_eq!(app.whoami(&winner.token).await.status(), 401, "the winner's new token died with the session");
    }
}
each_stack!(concurrent_refresh_on, concurrent_refresh_gives_one_winner);

async fn list_logout_and_revoke(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let a = app.register_and_login("ivy", PASSWORD).await;
    let b = app.login("ivy", PASSWORD, "phone").await;
    let c = app.login("ivy", PASSWORD, "tablet").await;
    let other = app.register_and_login("jack", PASSWORD).await;

    let sessions = session_list(&app, &a.token).await;
    assert_eq!(sessions.len(), 3);
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["session_id"], a.body["session_id"]);
    assert!(sessions.iter().all(|s| s["ip"] == "127.0.0.1" && s.get("user_agent").is_some()));

    // Someone else's session is not found, and stays valid.
    let other_id = other.body["session_id"].as_str().expect("id");
    assert_eq!(app.delete_auth(&format!("/v1/sessions/{other_id}"), &a.token).await.status(), 404);
    assert_eq!(app.whoami(&other.token).await.status(), 200);
    assert_eq!(app.delete_auth("/v1/sessions/not-a-uuid", &a.token).await.status(), 404);

    let b_id = b.body["session_id"].as_str().expect("id");
    assert_eq!(app.delete_auth(&format!("/v1/sessions/{b_id}"), &a.token).await.status(), 204);
    assert_eq!(app.whoami(&b.token).await.status(), 401);
    assert_eq!(app.delete_auth(&format!("/v1/sessions/{b_id}"), &a.token).await.status(), 404, "already revoked");

    let res = app.delete_auth("/v1/sessions?scope=others", &a.token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.expect("json")["revoked"], 1);
    assert_eq!(app.whoami(&c.token).await.status(), 401);
    assert_eq!(app.delete_auth("/v1/sessions?scope=all", &a.token).await.status(), 400);

    assert_eq!(app.delete_auth("/v1/sessions/current", &a.token).await.status(), 204);
    assert_eq!(app.whoami(&a.token).await.status(), 401);
    assert_eq!(app.refresh(&a.refresh).await.status(), 401, "logout ends the refresh token too");
    assert_eq!(app.whoami(&other.token).await.status(), 200);
}
each_stack!(list_logout_and_revoke_on, list_logout_and_revoke);

async fn unauthorized_and_query_tokens(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let s = app.register_and_login("kate", PASSWORD).await;
    let res = app.get("/v1/sessions/current").await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.expect("json")["code"], "unauthorized");
    for header in
        ["Basic abc", "Bearer", "Bearer lk_s_nope", &format!("Token {}", s.token), &format!("Bearer {}", s.refresh)]
    {
        let res =
            app.client.get(app.url("/v1/sessions/current")).header("authorization", header).send().await.expect("req");
        assert_eq!(res.status(), 401, "{header}");
    }
    let encoded = s.token.replacen("lk_s_", "lk%5Fs_", 1);
    for query in [
        format!("?token={}", s.token),
        format!("?access_token={}", s.token),
        format!("?x={}", s.token),
        format!("?%74oken={}", s.token),
        format!("?x={encoded}"),
    ] {
        let res = app.get(&format!("/v1/sessions/current{query}")).await;
        assert_eq!(res.status(), 400, "{query}");
        assert_eq!(res.json::<Value>().await.expect("json")["code"], "invalid_request");
    }
    // Header-only still works.
    assert_eq!(app.whoami(&s.token).await.status(), 200);
}
each_stack!(unauthorized_and_query_tokens_on, unauthorized_and_query_tokens);

async fn lifetimes_are_enforced(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, |c| {
        c.sessions.token_lifetime = Duration::from_secs(1);
        c.sessions.absolute_lifetime = Duration::from_secs(3);
    })
    .await;
    let s = app.register_and_login("liam", PASSWORD).await;
    assert_eq!(app.whoami(&s.token).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(app.whoami(&s.token).await.status(), 401, "token lifetime over");
    let s2 = app.refreshed(&s.refresh).await;
    assert_eq!(app.whoami(&s2.token).await.status(), 200, "a refresh gives a new token");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(app.refresh(&s2.refresh).await.status(), 401, "absolute lifetime over");

    let idle = TestApp::spawn_with(db, cache, |c| c.sessions.idle_timeout = Duration::from_secs(1)).await;
    let s = idle.register_and_login("mia", PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(idle.whoami(&s.token).await.status(), 401, "idle timeout over");
    assert_eq!(idle.refresh(&s.refresh).await.status(), 401, "an idle session cannot be refreshed");
}
each_stack!(lifetimes_are_enforced_on, lifetimes_are_enforced);

/// Drops every cache entry of this app, as FLUSHALL would (scoped to the
/// test's key prefix so parallel tests are not disturbed).
async fn flush_cache(app: &TestApp) {
    match &app.fast {
        Fast::Redis(redis) => {
            redis.delete_prefix(app.keys.prefix()).await.expect("flush");
        }
        Fast::Memory(memory) => memory.clear(),
    }
}

async fn cache_loss_loses_nothing(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let active = app.register_and_login("noah", PASSWORD).await;
    let revoked = app.login("noah", PASSWORD, "other").await;
    let revoked_id = revoked.body["session_id"].as_str().expect("id");
    assert_eq!(app.delete_auth(&format!("/v1/sessions/{revoked_id}"), &active.token).await.status(), 204);

    flush_cache(&app).await;
    assert_eq!(app.whoami(&active.token).await.status(), 200, "refilled from the database");
    assert_eq!(app.whoami(&revoked.token).await.status(), 401, "revoked stays revoked");
    let key = app.keys.session(&latchkey::domain::tokens::hash(&active.token));
    assert!(app.fast.get(&key).await.expect("get").is_some(), "the cache was refilled");
    assert!(
        app.fast.get(&app.keys.session(&latchkey::domain::tokens::hash(&revoked.token))).await.expect("get").is_none(),
        "a revoked session is never cached"
    );
    // Refresh and logout still work after the flush.
    let next = app.refreshed(&active.refresh).await;
    flush_cache(&app).await;
    assert_eq!(app.whoami(&next.token).await.status(), 200);
    assert_eq!(app.delete_auth("/v1/sessions/current", &next.token).await.status(), 204);
    flush_cache(&app).await;
    assert_eq!(app.whoami(&next.token).await.status(), 401);
}
each_stack!(cache_loss_loses_nothing_on, cache_loss_loses_nothing);

async fn devices_are_registered_at_login(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let first = app.register_and_login("olga", PASSWORD).await;
    assert_eq!(first.body["new_device"], true);
    let token = first.device_token.clone().expect("a new device gets a credential");
    // The same fingerprint without the credential is another device.
    let ua_session = app.login("olga", PASSWORD, "device-1").await;
    assert_eq!(ua_session.body["new_device"], true, "a fingerprint identifies nothing");
    // With the credential it is the same device, whatever it claims.
    let res = app.login_response("olga", PASSWORD, json!({"fingerprint": "elsewhere", "device_token": token})).await;
    let again = Session::from_json(res.json().await.expect("json"));
    assert_eq!(again.body["new_device"], false, "same credential, same device");
    assert_eq!(again.body["device_id"], first.body["device_id"]);
    assert!(again.device_token.is_none(), "a known device gets no new credential");

    let res = app.get_auth("/v1/devices", &first.token).await;
    assert_eq!(res.status(), 200);
    let devices = res.json::<Value>().await.expect("json")["devices"].as_array().expect("array").clone();
    assert_eq!(devices.len(), 2);
    for d in &devices {
        assert_eq!(d["trust"], "unknown");
        assert_eq!(d["last_ip"], "127.0.0.1");
        for field in ["first_seen_at", "last_seen_at", "name", "user_agent"] {
            assert!(d.get(field).is_some(), "{field}");
        }
    }
    // Raw fingerprints are never stored.
    use sea_orm::EntityTrait as _;
    let rows = entity::devices::Entity::find().all(app.app_db.conn()).await.expect("rows");
    assert!(rows.iter().all(|r| !r.id.contains("device-1")));
    let events = app.audit_events().await;
    assert_eq!(events.iter().filter(|e| *e == "device.new").count(), 2, "{events:?}");
    assert!(events.iter().any(|e| e == "device.mismatch"), "a credential used with another fingerprint: {events:?}");

    // Another user with the same fingerprint gets a different device id.
    let other = app.register_and_login("pete", PASSWORD).await;
    let other_devices: Value = app.get_auth("/v1/devices", &other.token).await.json().await.expect("json");
    let device_1 = devices.iter().find(|d| d["name"] == "test device").expect("device-1")["device_id"].clone();
    assert_ne!(other_devices["devices"][0]["device_id"], device_1);

    // Removing a device revokes its sessions, and only those.
    let id = device_1.as_str().expect("id");
    assert_eq!(app.delete_auth(&format!("/v1/devices/{id}"), &ua_session.token).await.status(), 204);
    assert_eq!(app.whoami(&first.token).await.status(), 401);
    assert_eq!(app.whoami(&again.token).await.status(), 401);
    assert_eq!(app.whoami(&ua_session.token).await.status(), 200);
    assert_eq!(app.delete_auth(&format!("/v1/devices/{id}"), &ua_session.token).await.status(), 404);
    let other_id = other_devices["devices"][0]["device_id"].as_str().expect("id").to_owned();
    assert_eq!(
        app.delete_auth(&format!("/v1/devices/{other_id}"), &ua_session.token).await.status(),
        404,
        "not theirs"
    );
    assert_eq!(app.whoami(&other.token).await.status(), 200);
}
each_stack!(devices_are_registered_at_login_on, devices_are_registered_at_login);

/// After a full flow, no raw token appears anywhere in the database or the
/// cache: only hashes are stored.
async fn no_raw_token_at_rest(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let a = app.register_and_login("quinn", PASSWORD).await;
    let b = app.refreshed(&a.refresh).await;
    let c = app.login("quinn", PASSWORD, "second").await;
    app.whoami(&c.token).await;
    let mut tokens: Vec<String> = [&a, &b, &c].iter().flat_map(|s| [s.token.clone(), s.refresh.clone()]).collect();
    // The random part alone must not appear either.
    tokens.extend(tokens.clone().iter().map(|t| t[5..].to_owned()));

    let mut stored = crate::helpers::dump_database(&app.app_db).await;
    stored.push_str(&crate::helpers::dump_cache(&app.fast, app.keys.prefix()).await);
    assert!(stored.contains(&latchkey::domain::tokens::hash(&c.token)), "the dump sees the stored hashes");
    for token in &tokens {
        assert!(!stored.contains(token.as_str()), "a raw token is stored somewhere");
    }
}
each_stack!(no_raw_token_at_rest_on, no_raw_token_at_rest);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_serves_from_the_cache_without_the_database() {
    // With Redis, a cached session answers even when its database row is
    // unreadable; here the row is deleted behind the cache's back to prove
    // the hit path never reads Postgres.
    let app = TestApp::spawn(DbKind::Postgres, CacheKind::Redis).await;
    let s = app.register_and_login("rita", PASSWORD).await;
    use sea_orm::{ConnectionTrait as _, EntityTrait as _};
    app.app_db.conn().execute_unprepared("ALTER TABLE sessions RENAME TO sessions_away").await.expect("rename");
    assert_eq!(app.whoami(&s.token).await.status(), StatusCode::OK);
    app.app_db.conn().execute_unprepared("ALTER TABLE sessions_away RENAME TO sessions").await.expect("rename back");
    assert!(entity::sessions::Entity::find().all(app.app_db.conn()).await.expect("rows").len() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushall_loses_no_session_and_resurrects_no_revocation() {
    let redis = crate::helpers::PrivateRedis::start().await;
    let url = redis.url();
    let app = TestApp::spawn_with(DbKind::Postgres, CacheKind::Redis, |c| {
        c.redis_url = Some(secrecy::SecretString::from(url));
    })
    .await;
    let active = app.register_and_login("sara", PASSWORD).await;
    let revoked = app.login("sara", PASSWORD, "other").await;
    let revoked_id = revoked.body["session_id"].as_str().expect("id");
    assert_eq!(app.delete_auth(&format!("/v1/sessions/{revoked_id}"), &active.token).await.status(), 204);

    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.expect("FLUSHALL");

    assert_eq!(app.whoami(&active.token).await.status(), 200, "refilled from Postgres");
    assert_eq!(app.whoami(&revoked.token).await.status(), 401, "revoked stays revoked");
    let next = app.refreshed(&active.refresh).await;
    assert_eq!(app.whoami(&next.token).await.status(), 200);
}
