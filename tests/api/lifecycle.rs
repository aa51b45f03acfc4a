//! The account lifecycle: auth_time and step-up, freshness for gateways, the
//! session cap, password change and reset, the user's security timeline.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::Session;
use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TestApp};

const PASSWORD: &str = "correct horse battery staple";

/// A step-up window short enough to outwait in a test.
const WINDOW: Duration = Duration::from_secs(2);

fn short_window(c: &mut latchkey::config::Config) {
    c.sessions.reauth_window = WINDOW;
}

async fn send(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn admin_session(app: &TestApp, name: &str) -> Session {
    app.register_and_login(name, PASSWORD).await;
    assert!(app.core.set_admin(name, true, chrono::Utc::now()).await.expect("grant"));
    app.login(name, PASSWORD, "admin-laptop").await
}

async fn auth_time_and_step_up(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, short_window).await;
    let s = app.register_and_login("stu", PASSWORD).await;
    let admin = admin_session(&app, "root").await;
    let target = app.register_and_login("tina", PASSWORD).await;
    let target_id = target.body["user_id"].as_str().expect("id").to_owned();
    let device = s.body["device_id"].as_str().expect("device").to_owned();
    let target_device = target.body["device_id"].as_str().expect("device").to_owned();

    // auth_time in the session answer, whoami and X-Auth-Time.
    let auth_time = s.body["auth_time"].as_str().expect("auth_time").to_owned();
    let who = app.whoami(&s.token).await;
    let header: i64 = who.headers()["x-auth-time"].to_str().expect("ascii").parse().expect("seconds");
    let who: Value = who.json().await.expect("json");
    assert_eq!(who["auth_time"], auth_time);
    let parsed = chrono::DateTime::parse_from_rfc3339(&auth_time).expect("rfc3339");
    assert_eq!(header, parsed.timestamp());

    tokio::time::sleep(WINDOW + Duration::from_millis(300)).await;
    // A refresh does not renew auth_time.
    let refreshed = app.refreshed(&s.refresh).await;
    assert_eq!(refreshed.body["auth_time"], auth_time);
    let stale = |code: (u16, Value)| {
        assert_eq!(code.0, 401, "{:?}", code.1);
        assert_eq!(code.1["code"], "reauthentication_required");
    };
    let t = refreshed.token.as_str();
    stale(send(&app, Method::POST, "/v1/totp/enroll", t, None).await);
    stale(send(&app, Method::POST, "/v1/totp/confirm", t, Some(json!({"code": "123456"}))).await);
    stale(send(&app, Method::PUT, &format!("/v1/devices/{device}/trust"), t, Some(json!({"trust": "trusted"}))).await);
    stale(send(&app, Method::DELETE, "/v1/account", t, None).await);
    stale(send(&app, Method::DELETE, &format!("/v1/devices/{device}"), t, None).await);
    stale(send(&app, Method::POST, "/v1/account/password/start", t, Some(json!({"registration_request": "x"}))).await);
    let a = admin.token.as_str();
    let admin_routes = [
        (Method::DELETE, format!("/v1/admin/users/{target_id}/sessions"), None),
        (Method::PUT, format!("/v1/admin/devices/{target_device}/trust"), Some(json!({"trust": "blocked"}))),
        (Method::POST, format!("/v1/admin/users/{target_id}/lock"), Some(json!({"reason": "test"}))),
        (Method::POST, format!("/v1/admin/users/{target_id}/unlock"), None),
        (Method::DELETE, format!("/v1/admin/users/{target_id}"), None),
        (Method::POST, format!("/v1/admin/users/{target_id}/reset"), None),
        (Method::DELETE, format!("/v1/admin/users/{target_id}/totp"), None),
        (Method::POST, "/v1/admin/keys/rotate".to_owned(), None),
    ];
    for (method, path, body) in &admin_routes {
        let answer = send(&app, method.clone(), path, a, body.clone()).await;
        assert_eq!((answer.0, &answer.1["code"]), (401, &json!("reauthentication_required")), "{method} {path}");
    }
    // Reading stays open to a stale session.
    assert_eq!(app.whoami(t).await.status(), 200);
    assert_eq!(send(&app, Method::GET, "/v1/admin/users", a, None).await.0, 200);

    // A fresh login passes.
    let fresh = app.login("stu", PASSWORD, "device-1").await;
    assert_eq!(send(&app, Method::POST, "/v1/totp/enroll", &fresh.token, None).await.0, 200);
    let admin = app.login("root", PASSWORD, "admin-laptop").await;
    let (status, _) = send(
        &app,
        Method::POST,
        &format!("/v1/admin/users/{target_id}/lock"),
        &admin.token,
        Some(json!({"reason": "test"})),
    )
    .await;
    assert_eq!(status, 204);
}
each_stack!(auth_time_and_step_up_on, auth_time_and_step_up);

async fn freshness_for_gateways(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let s = app.register_and_login("gail", PASSWORD).await;
    assert_eq!(send(&app, Method::GET, "/v1/sessions/current?max_age=3600", &s.token, None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = send(&app, Method::GET, "/v1/sessions/current?max_age=1", &s.token, None).await;
    assert_eq!((status, &body["code"]), (401, &json!("reauthentication_required")));
    let (status, body) = send(&app, Method::GET, "/v1/sessions/current?aal=aal2", &s.token, None).await;
    assert_eq!((status, &body["code"]), (401, &json!("mfa_required")), "an aal1 session where aal2 is asked");
    assert_eq!(send(&app, Method::GET, "/v1/sessions/current?aal=aal1", &s.token, None).await.0, 200);
    assert_eq!(send(&app, Method::GET, "/v1/sessions/current?max_age=x", &s.token, None).await.0, 400);
    assert_eq!(send(&app, Method::GET, "/v1/sessions/current?aal=aal9", &s.token, None).await.0, 400);
}
each_stack!(freshness_for_gateways_on, freshness_for_gateways);

async fn session_cap_evicts_the_oldest(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, |c| c.sessions.max_per_user = 3).await;
    let first = app.register_and_login("cap", PASSWORD).await;
    let mut sessions = vec![first];
    for i in 0..3 {
        sessions.push(app.login("cap", PASSWORD, &format!("device-{i}")).await);
    }
    assert_eq!(app.whoami(&sessions[0].token).await.status(), 401, "the oldest was evicted");
    for s in &sessions[1..] {
        assert_eq!(app.whoami(&s.token).await.status(), 200);
    }
    let listed: Value = app.get_auth("/v1/sessions", &sessions[3].token).await.json().await.expect("json");
    assert_eq!(listed["sessions"].as_array().expect("array").len(), 3);
    let events = app.audit_events().await;
    assert_eq!(events.iter().filter(|e| *e == "session.evicted").count(), 1, "{events:?}");
}
each_stack!(session_cap_evicts_the_oldest_on, session_cap_evicts_the_oldest);

/// A login at the cap evicts the oldest session while that session is
/// being refreshed: the two transactions touch the same session row and the
/// audit append lock, and must not wait on each other in a cycle (a
/// deadlock would abort one with a 500). Every answer is a success or a
/// plain 401 for the evicted session, and the cap holds.
async fn eviction_racing_a_refresh_never_deadlocks(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, |c| {
        c.sessions.max_per_user = 2;
        c.ratelimit.lockout_threshold = 50;
    })
    .await;
    let mut oldest = app.register_and_login("race", PASSWORD).await;
    let mut newer = app.login("race", PASSWORD, "device-a").await;
    for round in 0..8 {
        let refresh = app.refresh(&oldest.refresh);
        let login = app.login_response("race", PASSWORD, json!({"fingerprint": format!("device-{round}")}));
        let (refreshed, logged_in) = tokio::join!(refresh, login);
        assert!(matches!(refreshed.status().as_u16(), 200 | 401), "refresh: {}", refreshed.status());
        assert_eq!(logged_in.status(), 200, "login at the cap");
        let body: Value = logged_in.json().await.expect("json");
        let latest = Session::from_json(body);
        let listed: Value = app.get_auth("/v1/sessions", &latest.token).await.json().await.expect("json");
        assert_eq!(listed["sessions"].as_array().expect("array").len(), 2, "the cap holds");
        oldest = newer;
        newer = latest;
    }
}
each_stack!(eviction_racing_a_refresh_never_deadlocks_on, eviction_racing_a_refresh_never_deadlocks);

/// The client half of OPAQUE registration against `start`/`finish`, with
/// `extra` fields (a reset token) and an optional bearer session. Returns
/// the start status and, when it was 200, the finish status and body.
async fn reregister(
    app: &TestApp,
    bearer: Option<&str>,
    (start, finish): (&str, &str),
    extra: Value,
    password: &str,
) -> (u16, Option<(u16, Value)>) {
    use latchkey::domain::opaque::Suite;
    use opaque_ke::{ClientRegistration, ClientRegistrationFinishParameters, RegistrationResponse};
    let client_start = ClientRegistration::<Suite>::start(&mut rand::rngs::OsRng, password.as_bytes()).expect("start");
    let mut body = extra.clone();
    body["registration_request"] = json!(crate::client::b64(&client_start.message.serialize()));
    let post = |path: &str, body: Value| {
        let mut req = app.client.post(app.url(path)).json(&body);
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let res = post(start, body).await.expect("start");
    let status = res.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let answer: Value = res.json().await.expect("json");
    let response = crate::client::unb64(answer["registration_response"].as_str().expect("response"));
    let response = RegistrationResponse::<Suite>::deserialize(&response).expect("response parses");
    let password = password.to_owned();
    let record = tokio::task::spawn_blocking(move || {
        client_start
            .state
            .finish(
                &mut rand::rngs::OsRng,
                password.as_bytes(),
                response,
                ClientRegistrationFinishParameters::default(),
            )
            .expect("client finish")
            .message
            .serialize()
            .to_vec()
    })
    .await
    .expect("join");
    let mut body = extra;
    body["registration_record"] = json!(crate::client::b64(&record));
    let res = post(finish, body).await.expect("finish");
    let status = res.status().as_u16();
    (200, Some((status, res.json().await.unwrap_or(Value::Null))))
}

const CHANGE: (&str, &str) = ("/v1/account/password/start", "/v1/account/password/finish");
const RESET: (&str, &str) = ("/v1/account/reset/start", "/v1/account/reset/finish");
const NEW_PASSWORD: &str = "a new and longer passphrase";

async fn password_change(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let here = app.register_and_login("pam", PASSWORD).await;
    let elsewhere = app.login("pam", PASSWORD, "laptop").await;
    let (start, finish) = reregister(&app, Some(&here.token), CHANGE, json!({}), NEW_PASSWORD).await;
    assert_eq!((start, finish.map(|f| f.0)), (200, Some(204)));
    // The old password stops working, the new one works.
    assert_eq!(app.login_response("pam", PASSWORD, json!({})).await.status(), 401, "the client rejects the KE2");
    app.login("pam", NEW_PASSWORD, "device-1").await;
    // The calling session stays; every other one is revoked.
    assert_eq!(app.whoami(&here.token).await.status(), 200);
    assert_eq!(app.whoami(&elsewhere.token).await.status(), 401);
    assert_eq!(app.refresh(&elsewhere.refresh).await.status(), 401);
    // A finish without a start in this session is refused.
    let (status, _) = send(
        &app,
        Method::POST,
        CHANGE.1,
        &here.token,
        Some(json!({"registration_record": crate::client::b64(&[1u8; 192])})),
    )
    .await;
    assert_eq!(status, 400);
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e == "password.change"), "{events:?}");
}
each_stack!(password_change_on, password_change);

async fn password_change_needs_aal2_with_totp(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let s = app.register_and_login("tom", PASSWORD).await;
    // A second session from before TOTP was on stays aal1.
    let aal1 = app.login("tom", PASSWORD, "laptop").await;
    app.enable_totp(&s.token).await;
    let (start, _) = reregister(&app, Some(&aal1.token), CHANGE, json!({}), NEW_PASSWORD).await;
    assert_eq!(start, 403, "aal2 is needed once TOTP is on");
    // The confirming session became aal2 and passes.
    let (start, finish) = reregister(&app, Some(&s.token), CHANGE, json!({}), NEW_PASSWORD).await;
    assert_eq!((start, finish.map(|f| f.0)), (200, Some(204)));
}
each_stack!(password_change_with_totp_on, password_change_needs_aal2_with_totp);

async fn admin_reset(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let user = app.register_and_login("rex", PASSWORD).await;
    let user_id = user.body["user_id"].as_str().expect("id").to_owned();
    let admin = admin_session(&app, "root").await;
    let res = app
        .client
        .post(app.url(&format!("/v1/admin/users/{user_id}/reset")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 201);
    let issued: Value = res.json().await.expect("json");
    let token = issued["reset_token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("lk_t_"));
    let expires: chrono::DateTime<chrono::Utc> = issued["expires_at"].as_str().expect("at").parse().expect("time");
    assert!(expires > chrono::Utc::now() + chrono::Duration::hours(23));

    // Bad tokens: one answer for every cause.
    let mut answers = Vec::new();
    for bad in ["lk_t_short".to_owned(), format!("lk_t_{}", "A".repeat(43)), "junk".to_owned()] {
        let (status, _) = reregister(&app, None, RESET, json!({"reset_token": bad}), NEW_PASSWORD).await;
        answers.push(status);
    }
    assert_eq!(answers, [401, 401, 401]);

    let (start, finish) = reregister(&app, None, RESET, json!({"reset_token": token}), NEW_PASSWORD).await;
    assert_eq!((start, finish.map(|f| f.0)), (200, Some(204)));
    // Every session revoked; the old password gone, the new one works.
    assert_eq!(app.whoami(&user.token).await.status(), 401);
    assert_eq!(app.login_response("rex", PASSWORD, json!({})).await.status(), 401);
    app.login("rex", NEW_PASSWORD, "device-1").await;
    // Spent: the same token again is the same 401.
    let (status, _) = reregister(&app, None, RESET, json!({"reset_token": token}), "third password").await;
    assert_eq!(status, 401);
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e == "password.reset"), "{events:?}");
    assert!(events.iter().any(|e| e == "password.reset_issued"), "{events:?}");
}
each_stack!(admin_reset_on, admin_reset);

async fn reset_tokens_expire(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn_with(db, cache, |c| c.account.reset_token_lifetime = Duration::from_secs(1)).await;
    app.register_and_login("eve", PASSWORD).await;
    let (token, _) = app.core.issue_reset_for("eve", chrono::Utc::now()).await.expect("issue");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _) = reregister(&app, None, RESET, json!({"reset_token": token}), NEW_PASSWORD).await;
    assert_eq!(status, 401, "an expired token is refused like any bad one");
    app.login("eve", PASSWORD, "device-1").await;
}
each_stack!(reset_tokens_expire_on, reset_tokens_expire);

async fn admin_removes_a_lost_second_factor(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let s = app.register_and_login("lou", PASSWORD).await;
    let user_id = s.body["user_id"].as_str().expect("id").to_owned();
    app.enable_totp(&s.token).await;
    let body: Value = app.login_response("lou", PASSWORD, json!({})).await.json().await.expect("json");
    assert_eq!(body["mfa_required"], true);
    let admin = admin_session(&app, "root").await;
    let (status, _) = send(&app, Method::DELETE, &format!("/v1/admin/users/{user_id}/totp"), &admin.token, None).await;
    assert_eq!(status, 204);
    let body: Value = app.login_response("lou", PASSWORD, json!({})).await.json().await.expect("json");
    assert!(body.get("session_token").is_some(), "a password login gives a session again: {body}");
    let (status, _) = send(&app, Method::DELETE, &format!("/v1/admin/users/{user_id}/totp"), &admin.token, None).await;
    assert_eq!(status, 404, "nothing left to remove");
    assert!(app.audit_events().await.iter().any(|e| e == "totp.removed_by_admin"));
}
each_stack!(admin_removes_totp_on, admin_removes_a_lost_second_factor);

async fn security_timeline(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let s = app.register_and_login("tess", PASSWORD).await;
    let _ = app.login_response("tess", "wrong", json!({})).await;
    let other = app.login("tess", PASSWORD, "laptop").await;
    assert_eq!(
        app.delete_auth(&format!("/v1/sessions/{}", other.body["session_id"].as_str().expect("id")), &s.token)
            .await
            .status(),
        204
    );
    let stranger = app.register_and_login("zed", PASSWORD).await;
    let _ = stranger;

    let (status, page) = send(&app, Method::GET, "/v1/account/events?limit=3", &s.token, None).await;
    assert_eq!(status, 200);
    let first: Vec<Value> = page["events"].as_array().expect("events").clone();
    assert_eq!(first.len(), 3);
    let cursor = page["next_cursor"].as_i64().expect("a next page");
    let (_, rest) =
        send(&app, Method::GET, &format!("/v1/account/events?limit=100&cursor={cursor}"), &s.token, None).await;
    let mut all = first.clone();
    all.extend(rest["events"].as_array().expect("events").iter().cloned());
    let names: Vec<&str> = all.iter().map(|e| e["event"].as_str().expect("event")).collect();
    // Newest first: the revocation, then the second login...
    assert_eq!(names[0], "session.revoke", "{names:?}");
    for wanted in ["registration", "login.success", "device.new", "session.create"] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    let times: Vec<&str> = all.iter().map(|e| e["at"].as_str().expect("at")).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    for e in &all {
        for field in ["event", "at", "ip", "device_id", "outcome"] {
            assert!(e.get(field).is_some(), "{field} in {e}");
        }
    }
    // Only the caller's own rows: zed's registration is not among them.
    let registrations = names.iter().filter(|n| **n == "registration").count();
    assert_eq!(registrations, 1, "{names:?}");
    let (status, _) = send(&app, Method::GET, "/v1/account/events?cursor=x", &s.token, None).await;
    assert_eq!(status, 400);
}
each_stack!(security_timeline_on, security_timeline);

async fn a_login_in_flight_does_not_survive_a_reset(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    app.register_and_login("fay", PASSWORD).await;
    // Someone who knows the old password has a login in flight...
    let (login_id, ke3) = app.login_ke3("fay", PASSWORD).await;
    // ...when the password is reset.
    let (token, _) = app.core.issue_reset_for("fay", chrono::Utc::now()).await.expect("issue");
    let (start, finish) = reregister(&app, None, RESET, json!({"reset_token": token}), NEW_PASSWORD).await;
    assert_eq!((start, finish.map(|f| f.0)), (200, Some(204)));
    let finish = json!({"login_id": login_id, "credential_finalization": crate::client::b64(&ke3)});
    let res = app.post_json("/v1/login/finish", &finish).await;
    assert_eq!(res.status(), 401, "a login checked against the old record gets no session");
    app.login("fay", NEW_PASSWORD, "device-1").await;
}
each_stack!(login_in_flight_vs_reset_on, a_login_in_flight_does_not_survive_a_reset);

async fn a_change_from_a_revoked_session_is_refused(db: DbKind, cache: CacheKind) {
    use latchkey::domain::opaque::Suite;
    use opaque_ke::{ClientRegistration, ClientRegistrationFinishParameters, RegistrationResponse};
    let app = TestApp::spawn(db, cache).await;
    let stolen = app.register_and_login("gus", PASSWORD).await;
    let owner = app.login("gus", PASSWORD, "laptop").await;
    // The thief starts a change and holds the finish back...
    let client_start = ClientRegistration::<Suite>::start(&mut rand::rngs::OsRng, b"thief's password").expect("start");
    let (status, answer) = send(
        &app,
        Method::POST,
        CHANGE.0,
        &stolen.token,
        Some(json!({"registration_request": crate::client::b64(&client_start.message.serialize())})),
    )
    .await;
    assert_eq!(status, 200);
    let thief = app
        .core
        .authenticate(&stolen.token, &Default::default(), chrono::Utc::now())
        .await
        .expect("the stolen session as the route saw it");
    // ...while the owner changes the password, which revokes the thief's session.
    let (start, finish) = reregister(&app, Some(&owner.token), CHANGE, json!({}), NEW_PASSWORD).await;
    assert_eq!((start, finish.map(|f| f.0)), (200, Some(204)));
    let response = crate::client::unb64(answer["registration_response"].as_str().expect("response"));
    let response = RegistrationResponse::<Suite>::deserialize(&response).expect("parses");
    let record = client_start
        .state
        .finish(&mut rand::rngs::OsRng, b"thief's password", response, ClientRegistrationFinishParameters::default())
        .expect("finish")
        .message
        .serialize();
    let late = app
        .core
        .password_change_finish(&thief, &crate::client::b64(&record), &Default::default(), chrono::Utc::now())
        .await;
    assert!(matches!(late, Err(latchkey::domain::Error::ReauthenticationRequired)), "{late:?}");
    app.login("gus", NEW_PASSWORD, "device-1").await;
    assert_eq!(app.whoami(&owner.token).await.status(), 200, "the owner's session stays");
}
each_stack!(change_from_revoked_session_on, a_change_from_a_revoked_session_is_refused);

async fn a_reset_token_starts_a_few_times_only(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    app.register_and_login("ike", PASSWORD).await;
    let (token, _) = app.core.issue_reset_for("ike", chrono::Utc::now()).await.expect("issue");
    let request = opaque_ke::ClientRegistration::<latchkey::domain::opaque::Suite>::start(&mut rand::rngs::OsRng, b"x")
        .expect("start")
        .message
        .serialize();
    let body = json!({"reset_token": token, "registration_request": crate::client::b64(&request)});
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.post_json(RESET.0, &body).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 401], "a leaked token is no lasting password oracle");
}
each_stack!(reset_token_start_cap_on, a_reset_token_starts_a_few_times_only);

/// A password change by `token` (the OPAQUE client side): the finish status.
pub async fn change_password(app: &TestApp, token: &str, new_password: &str) -> u16 {
    let (start, finish) = reregister(app, Some(token), CHANGE, json!({}), new_password).await;
    assert_eq!(start, 200);
    finish.map_or(0, |f| f.0)
}
