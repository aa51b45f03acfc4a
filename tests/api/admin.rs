//! Admin API, device trust, locks, deletion, the audit log and its chain,
//! and the least-privilege Postgres role.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::Session;
use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TestApp, TestDb, dump_cache, dump_database};

const PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    async fn make_admin(&self, username: &str) {
        assert!(self.core.set_admin(username, true, chrono::Utc::now()).await.expect("grant"));
    }

    async fn admin_get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let res = self.get_auth(path, token).await;
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn admin_send(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> StatusCode {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request").status()
    }
}

fn id(s: &Session) -> String {
    s.body["user_id"].as_str().expect("user_id").to_owned()
}

async fn admin_endpoints(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let admin = app.register_and_login("root", PASSWORD).await;
    app.make_admin("root").await;
    let alice = app.register_and_login("alice", PASSWORD).await;
    let alice_phone = app.login("alice", PASSWORD, "phone").await;
    let alice_id = id(&alice);
    use reqwest::Method;

    // Non-admins and anonymous callers.
    assert_eq!(app.admin_get("/v1/admin/users", &alice.token).await.0, 403);
    assert_eq!(app.get("/v1/admin/users").await.status(), 401);
    for path in [format!("/v1/admin/users/{alice_id}"), "/v1/admin/audit".into(), "/v1/admin/keys".into()] {
        assert_eq!(app.admin_get(&path, &alice.token).await.0, 403, "{path}");
    }
    assert_eq!(app.admin_send(Method::DELETE, &format!("/v1/admin/users/{alice_id}"), &alice.token, None).await, 403);

    // Users, a page at a time.
    for name in ["bob", "carol"] {
        assert_eq!(app.register(name, PASSWORD).await.status(), 201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/users?limit=2&cursor={c}"),
            None => "/v1/admin/users?limit=2".into(),
        };
        let (status, page) = app.admin_get(&path, &admin.token).await;
        assert_eq!(status, 200, "{page}");
        for u in page["users"].as_array().expect("users") {
            seen.push(u["username"].as_str().expect("name").to_owned());
            for field in ["user_id", "created_at", "locked_until", "totp_enabled", "roles"] {
                assert!(u.get(field).is_some(), "{field}");
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["root", "alice", "bob", "carol"]);
    assert_eq!(app.admin_get("/v1/admin/users?limit=0", &admin.token).await.0, 400);
    assert_eq!(app.admin_get("/v1/admin/users?cursor=nope", &admin.token).await.0, 400);
    let (_, root) = app.admin_get("/v1/admin/users?limit=1", &admin.token).await;
    assert_eq!(root["users"][0]["roles"], json!(["admin"]));

    let (status, detail) = app.admin_get(&format!("/v1/admin/users/{alice_id}"), &admin.token).await;
    assert_eq!(status, 200);
    assert_eq!((detail["active_sessions"].as_u64(), detail["devices"].as_u64()), (Some(2), Some(2)));
    assert_eq!(app.admin_get(&format!("/v1/admin/users/{}", uuid::Uuid::new_v4()), &admin.token).await.0, 404);
    let (_, sessions) = app.admin_get(&format!("/v1/admin/users/{alice_id}/sessions"), &admin.token).await;
    assert_eq!(sessions["sessions"].as_array().expect("list").len(), 2);
    let (_, devices) = app.admin_get(&format!("/v1/admin/users/{alice_id}/devices"), &admin.token).await;
    let devices = devices["devices"].as_array().expect("list").clone();
    assert_eq!(devices.len(), 2);
    let phone_device = {
        let me: Value = app.whoami(&alice_phone.token).await.json().await.expect("json");
        me["device"]["device_id"].as_str().expect("device").to_owned()
    };
    let trust = |trust: &str| json!({"trust": trust});
    assert_eq!(
        app.admin_send(
            Method::PUT,
            &format!("/v1/admin/devices/{phone_device}/trust"),
            &admin.token,
            Some(trust("sideways"))
        )
        .await,
        400
    );
    assert_eq!(
        app.admin_send(Method::PUT, "/v1/admin/devices/nope/trust", &admin.token, Some(trust("blocked"))).await,
        404
    );
    // A NUL or other odd bytes in the id: not found either, never a 500.
    for odd in ["a%00b", "%C3%A5", "%FF"] {
        let path = format!("/v1/admin/devices/{odd}/trust");
        let status = app.admin_send(Method::PUT, &path, &admin.token, Some(trust("blocked"))).await;
        assert!(matches!(status.as_u16(), 400 | 404), "{odd}: {status}");
    }
    assert_eq!(
        app.admin_send(
            Method::PUT,
            &format!("/v1/admin/devices/{phone_device}/trust"),
            &admin.token,
            Some(trust("blocked"))
        )
        .await,
        204
    );
    assert_eq!(app.whoami(&alice_phone.token).await.status(), 401, "blocking revoked the device's session");
    assert_eq!(app.whoami(&alice.token).await.status(), 200, "other devices are untouched");
    let phone_token = alice_phone.device_token.clone().expect("credential");
    let res = app.login_response("alice", PASSWORD, json!({"fingerprint": "phone", "device_token": phone_token})).await;
    assert_eq!(res.status(), 403, "a blocked device's credential is refused at start");
    assert_eq!(res.json::<Value>().await.expect("json")["code"], "device_blocked");

    // Lock: every device, even a trusted one, and the sessions end.
    let lock = json!({"reason": "suspected takeover"});
    assert_eq!(
        app.admin_send(
            Method::POST,
            &format!("/v1/admin/users/{alice_id}/lock"),
            &admin.token,
            Some(json!({"reason": ""}))
        )
        .await,
        400
    );
    assert_eq!(
        app.admin_send(Method::POST, &format!("/v1/admin/users/{alice_id}/lock"), &admin.token, Some(lock)).await,
        204
    );
    assert_eq!(app.whoami(&alice.token).await.status(), 401);
    let res = app.login_response("alice", PASSWORD, json!({"fingerprint": "device-1"})).await;
    assert_eq!(res.status(), 423);
    let (_, detail) = app.admin_get(&format!("/v1/admin/users/{alice_id}"), &admin.token).await;
    assert!(detail["locked_until"].is_string() && detail["lock_reason"].as_str().expect("reason").contains("takeover"));
    assert_eq!(
        app.admin_send(Method::POST, &format!("/v1/admin/users/{alice_id}/unlock"), &admin.token, None).await,
        204
    );
    let alice = app.login("alice", PASSWORD, "device-1").await;

    // Revoke all of a user's sessions.
    let res = app
        .client
        .delete(app.url(&format!("/v1/admin/users/{alice_id}/sessions")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.expect("json")["revoked"], 1);
    assert_eq!(app.whoami(&alice.token).await.status(), 401);

    // The audit log: filters and pagination, newest first.
    let (status, page) =
        app.admin_get(&format!("/v1/admin/audit?user_id={alice_id}&event=login.success"), &admin.token).await;
    assert_eq!(status, 200);
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 3, "{page}");
    assert!(events.iter().all(|e| e["event"] == "login.success"));
    assert!(events[0]["id"].as_i64() > events[1]["id"].as_i64(), "newest first");
    assert_ne!(events[0]["user_ref"].as_str(), Some(alice_id.as_str()), "rows carry a pseudonym, not the id");
    let (_, first) = app.admin_get(&format!("/v1/admin/audit?user_id={alice_id}&limit=2"), &admin.token).await;
    let cursor = first["next_cursor"].as_i64().expect("more pages");
    let (_, second) =
        app.admin_get(&format!("/v1/admin/audit?user_id={alice_id}&limit=2&cursor={cursor}"), &admin.token).await;
    assert!(second["events"][0]["id"].as_i64().expect("id") < cursor);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, none) = app.admin_get(&format!("/v1/admin/audit?since={future}"), &admin.token).await;
    assert_eq!(none["events"].as_array().expect("events").len(), 0);
    let (_, locks) = app.admin_get("/v1/admin/audit?event=account.lock", &admin.token).await;
    assert_eq!(locks["events"][0]["details"]["reason"], "suspected takeover", "details are opened for admins");
    let (_, trust_events) = app.admin_get("/v1/admin/audit?event=device.trust", &admin.token).await;
    assert_eq!(trust_events["events"][0]["details"]["to"], "blocked");

    // Keys.
    let (status, keys) = app.admin_get("/v1/admin/keys", &admin.token).await;
    assert_eq!(status, 200);
    let before = keys["active_key_id"].clone();
    let res = app.client.post(app.url("/v1/admin/keys/rotate")).bearer_auth(&admin.token).send().await.expect("req");
    assert_eq!(res.status(), 200);
    let rotated: Value = res.json().await.expect("json");
    assert_ne!(rotated["active_key_id"], before);
    let (_, keys) = app.admin_get("/v1/admin/keys", &admin.token).await;
    assert_eq!(keys["active_key_id"], rotated["active_key_id"]);
    assert!(
        keys["keys"].as_array().expect("keys").iter().all(|k| k.get("rows").is_some() && k.get("use_count").is_some())
    );

    // Delete: nothing of alice is left anywhere, and the name is free again.
    assert_eq!(app.admin_send(Method::DELETE, &format!("/v1/admin/users/{alice_id}"), &admin.token, None).await, 204);
    assert_eq!(app.admin_send(Method::DELETE, &format!("/v1/admin/users/{alice_id}"), &admin.token, None).await, 404);
    let stored = dump_database(&app.app_db).await + &dump_cache(&app.fast, app.keys.prefix()).await;
    assert!(!stored.contains(&alice_id), "alice's id is gone");
    assert!(!stored.contains("\"alice\""), "alice's name is gone");
    assert_eq!(app.register("alice", "a new password").await.status(), 201);
    let events = app.audit_events().await;
    for e in [
        "device.trust",
        "account.lock",
        "account.unlock",
        "admin.revoke_sessions",
        "key.rotate",
        "account.delete",
        "admin.grant",
    ] {
        assert!(events.iter().any(|x| x == e), "{e} in {events:?}");
    }
}
each_stack!(admin_endpoints_on, admin_endpoints);

/// The admin's user search (a username prefix, normalized like usernames,
/// wildcards literal) and everyone's own profile.
async fn user_search_and_profile(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let admin = app.register_and_login("root", PASSWORD).await;
    app.make_admin("root").await;
    for name in ["alma", "alba", "bert", "al_x", "alpxy"] {
        assert_eq!(app.register(name, PASSWORD).await.status(), 201);
    }
    let names = |body: &Value| -> Vec<String> {
        let mut v: Vec<String> = body["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u["username"].as_str().expect("name").into())
            .collect();
        v.sort();
        v
    };
    let (status, body) = app.admin_get("/v1/admin/users?q=AL", &admin.token).await;
    assert_eq!(status, 200);
    assert_eq!(names(&body), ["al_x", "alba", "alma", "alpxy"], "case-folded prefix");
    let (_, body) = app.admin_get("/v1/admin/users?q=al_", &admin.token).await;
    assert_eq!(names(&body), ["al_x"], "an underscore is a character, not a wildcard");
    let (_, body) = app.admin_get("/v1/admin/users?q=al%25", &admin.token).await;
    assert_eq!(names(&body), Vec::<String>::new(), "nor is a percent sign");
    let (_, body) = app.admin_get("/v1/admin/users?q=al&limit=2", &admin.token).await;
    let first = names(&body);
    let cursor = body["next_cursor"].as_str().expect("a next page").to_owned();
    let (_, body) = app.admin_get(&format!("/v1/admin/users?q=al&limit=2&cursor={cursor}"), &admin.token).await;
    assert_eq!(first.len() + names(&body).len(), 4, "pages of a search");
    assert_eq!(app.admin_get("/v1/admin/users?q=%20", &admin.token).await.0, 400, "not a username");

    let (status, me) = app.admin_get("/v1/account", &admin.token).await;
    assert_eq!(status, 200);
    assert_eq!(
        (me["username"].as_str(), me["roles"].clone(), me["totp_enabled"].as_bool()),
        (Some("root"), json!(["admin"]), Some(false))
    );
    assert_eq!(me["user_id"], admin.body["user_id"]);
    let bert = app.login("bert", PASSWORD, "laptop").await;
    app.enable_totp(&bert.token).await;
    let (_, me) = app.admin_get("/v1/account", &bert.token).await;
    assert_eq!((me["roles"].clone(), me["totp_enabled"].as_bool()), (json!([]), Some(true)));
    assert_eq!(app.get("/v1/account").await.status(), 401);
}
each_stack!(user_search_and_profile_on, user_search_and_profile);

async fn admin_with_totp_needs_aal2(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let first = app.register_and_login("boss", PASSWORD).await;
    let aal1 = app.login("boss", PASSWORD, "laptop").await;
    app.make_admin("boss").await;
    assert_eq!(app.admin_get("/v1/admin/users", &aal1.token).await.0, 200, "no TOTP: aal1 is enough");
    // Turn TOTP on with the first session (which becomes aal2).
    let secret = app.enroll_totp(&first.token).await;
    let code = crate::client::totp_code(&secret, u64::try_from(chrono::Utc::now().timestamp()).expect("time") / 30);
    let res = app
        .client
        .post(app.url("/v1/totp/confirm"))
        .bearer_auth(&first.token)
        .json(&json!({"code": code}))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200);
    assert_eq!(app.admin_get("/v1/admin/users", &aal1.token).await.0, 403, "an aal1 admin with TOTP");
    assert_eq!(app.admin_get("/v1/admin/users", &first.token).await.0, 200, "aal2");
    // Deleting one's own account also needs aal2 then.
    assert_eq!(app.delete_auth("/v1/account", &aal1.token).await.status(), 403);
    assert_eq!(app.delete_auth("/v1/account", &first.token).await.status(), 204);
    assert_eq!(app.whoami(&first.token).await.status(), 401);
    assert_eq!(app.register("boss", PASSWORD).await.status(), 201, "the name is free again");
}
each_stack!(admin_with_totp_needs_aal2_on, admin_with_totp_needs_aal2);

async fn audit_chain_verifies_and_detects_tampering(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let s = app.register_and_login("dora", PASSWORD).await;
    app.refreshed(&s.refresh).await;
    let _ = app.login_response("dora", "wrong", json!({})).await;
    let (checked, broken) = latchkey::store::audit::verify_chain(&app.app_db).await.expect("verify");
    assert!(checked >= 6, "{checked}");
    assert_eq!(broken, None);

    // Concurrent appends never fork the chain.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let core = app.core.clone();
            tokio::spawn(async move {
                core.set_admin("dora", true, chrono::Utc::now()).await.ok();
                core.set_admin("dora", false, chrono::Utc::now()).await.ok();
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join");
    }
    assert_eq!(latchkey::store::audit::verify_chain(&app.app_db).await.expect("verify").1, None);

    use sea_orm::{ConnectionTrait as _, EntityTrait as _, QueryOrder as _};
    let rows = entity::audit_events::Entity::find()
        .order_by_asc(entity::audit_events::Column::Id)
        .all(app.app_db.conn())
        .await
        .expect("rows");
    let target = rows[2].id;
    app.app_db
        .conn()
        .execute_unprepared(&format!("UPDATE audit_events SET outcome = 'success' WHERE id = {target} AND outcome <> 'success'; UPDATE audit_events SET ip = '10.9.9.9' WHERE id = {target}"))
        .await
        .expect("tamper");
    let (_, broken) = latchkey::store::audit::verify_chain(&app.app_db).await.expect("verify");
    assert_eq!(broken, Some(target), "the first altered row is reported");
}
each_stack!(audit_chain_on, audit_chain_verifies_and_detects_tampering);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_role_cannot_alter_audit_rows_and_runs_the_service() {
    use sea_orm::{ConnectionTrait as _, Database};
    let owner_db = TestDb::new(DbKind::Postgres).await;
    owner_db.connect().await; // migrated by the owner
    let role = crate::helpers::dated_name("lk_test_app");
    let admin = Database::connect(crate::helpers::postgres_admin_url()).await.expect("connect");
    admin.execute_unprepared(&format!("CREATE ROLE {role} LOGIN IN ROLE latchkey_app")).await.expect("create role");

    // The service runs as the app role, with migrations already applied.
    let app_url = owner_db.url.replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    let app = TestApp::spawn_on_url(&app_url, CacheKind::Redis, |c| c.migrate_on_start = Some(false)).await;
    let s = app.register_and_login("erik", PASSWORD).await;
    assert_eq!(app.delete_auth("/v1/sessions/current", &s.token).await.status(), 204);

    let as_app = Database::connect(&app_url).await.expect("connect as app role");
    as_app.execute_unprepared("SELECT count(*) FROM audit_events").await.expect("the app role reads audit rows");
    for sql in ["UPDATE audit_events SET outcome = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"] {
        let err = as_app.execute_unprepared(sql).await.expect_err(sql);
        assert!(err.to_string().contains("permission denied"), "{sql}: {err}");
    }
    as_app.close().await.expect("close");
    drop(app);
    admin.execute_unprepared(&format!("DROP OWNED BY {role}")).await.ok();
    // The role may still own connections of the stopped app for a moment.
    let _ = admin.execute_unprepared(&format!("DROP ROLE IF EXISTS {role}")).await;
}

#[tokio::test]
async fn cli_admin_grant_and_audit_verify() {
    let db = TestDb::new(DbKind::Sqlite).await;
    let data = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| crate::helpers::latchkey(&db, data.path(), crate::helpers::TEST_MASTER_PASSWORD, args);
    let out = run(&["admin", "grant", "nobody"]);
    assert!(!out.status.success(), "granting to an unknown user fails");
    // Register a user through a running app on the same database.
    let data_dir = data.path().to_path_buf();
    let app = TestApp::spawn_on_url(&db.url, CacheKind::Memory, move |c| c.data_dir = data_dir).await;
    assert_eq!(app.register("Fay", PASSWORD).await.status(), 201);
    let out = run(&["admin", "grant", "FAY"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("granted to FAY"));
    let s = app.login("fay", PASSWORD, "d").await;
    assert_eq!(app.get_auth("/v1/admin/users", &s.token).await.status(), 200);
    let out = run(&["admin", "revoke", "fay"]);
    assert!(out.status.success());
    assert_eq!(app.get_auth("/v1/admin/users", &s.token).await.status(), 403);

    let out = run(&["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));
    use sea_orm::ConnectionTrait as _;
    app.app_db
        .conn()
        .execute_unprepared("UPDATE audit_events SET event = 'forged' WHERE id = 1")
        .await
        .expect("tamper");
    let out = run(&["audit", "verify"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("BROKEN at event id 1"));
}
