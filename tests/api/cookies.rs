//! Browser sessions by cookie: the cookies' attributes, what a cross-site
//! page gets (CSRF), refresh and logout by cookie, the device cookie,
//! forward-auth by cookie, and the sign-in page's return allow-list.

use actix_web::cookie::{Cookie, SameSite};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

use crate::client::{b64, totp_code};
use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TestApp};

const PASSWORD: &str = "correct horse battery staple";
const SESSION: &str = "__Host-lk_session";
const REFRESH: &str = "__Host-lk_refresh";
const DEVICE: &str = "__Host-lk_device";

/// What latchkey's own pages send with a state-changing fetch.
pub const SAME_ORIGIN: [(&str, &str); 2] = [("x-latchkey-csrf", "1"), ("sec-fetch-site", "same-origin")];

/// The cookies a response sets, by name.
pub fn set_cookies(res: &reqwest::Response) -> Vec<Cookie<'static>> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| Cookie::parse(v.to_str().expect("ascii").to_owned()).expect("a cookie"))
        .collect()
}

fn find<'a>(cookies: &'a [Cookie<'static>], name: &str) -> Option<&'a Cookie<'static>> {
    cookies.iter().find(|c| c.name() == name)
}

/// A browser's cookie jar, as far as these tests need one.
#[derive(Default, Clone)]
pub struct Jar {
    pub session: Option<String>,
    pub refresh: Option<String>,
    pub device: Option<String>,
}

impl Jar {
    fn take(&mut self, cookies: &[Cookie<'static>]) {
        for c in cookies {
            let value = (!c.value().is_empty()).then(|| c.value().to_owned());
            match c.name() {
                SESSION => self.session = value,
                REFRESH => self.refresh = value,
                DEVICE => self.device = value,
                _ => {}
            }
        }
    }

    /// The Cookie header a browser sends (all are `Path=/`; `_path` keeps
    /// the call sites saying where the request goes).
    pub fn header(&self, _path: &str) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.session {
            parts.push(format!("{SESSION}={v}"));
        }
        if let Some(v) = &self.refresh {
            parts.push(format!("{REFRESH}={v}"));
        }
        if let Some(v) = &self.device {
            parts.push(format!("{DEVICE}={v}"));
        }
        parts.join("; ")
    }
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    jar: &Jar,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).header(COOKIE, jar.header(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.expect("request")
}

/// A browser login through the pages: OPAQUE, then login/finish with
/// `session_cookie`. Returns the finish response; the jar takes its cookies.
pub async fn browser_login(
    app: &TestApp,
    jar: &mut Jar,
    username: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let cookie = jar.header("/v1/login/start");
    let (login_id, ke3) = app
        .login_messages_with(username, PASSWORD, None, &[("cookie", &cookie)])
        .await
        .map_err(|e| format!("{e:?}"))
        .expect("login/start");
    let ke3 = ke3.expect("the right password");
    let body = json!({"login_id": login_id, "credential_finalization": b64(&ke3), "session_cookie": true});
    let res = send(app, reqwest::Method::POST, "/v1/login/finish", jar, headers, Some(body)).await;
    jar.take(&set_cookies(&res));
    res
}

async fn cookies_carry_the_session(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    assert_eq!(app.register("nora", PASSWORD).await.status(), StatusCode::CREATED);
    let mut jar = Jar::default();
    let res = browser_login(&app, &mut jar, "nora", &SAME_ORIGIN).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookies = set_cookies(&res);
    let body: Value = res.json().await.expect("json");
    for hidden in ["session_token", "refresh_token", "device_token"] {
        assert!(body.get(hidden).is_none(), "{hidden} must not reach page scripts: {body}");
    }
    assert_eq!(body["aal"], "aal1");
    assert_eq!(body["new_device"], true);

    let session = find(&cookies, SESSION).expect("session cookie");
    assert!(session.value().starts_with("lk_s_"));
    assert_eq!(session.path(), Some("/"), "__Host- needs Path=/");
    assert_eq!(session.domain(), None, "__Host- forbids Domain");
    assert_eq!((session.secure(), session.http_only()), (Some(true), Some(true)));
    assert_eq!(session.same_site(), Some(SameSite::Lax));
    let lifetime = session.max_age().expect("max-age").whole_seconds();
    assert!((12 * 3600 - 60..=12 * 3600).contains(&lifetime), "lasts as long as the session may: {lifetime}");

    let refresh = find(&cookies, REFRESH).expect("refresh cookie");
    assert!(refresh.value().starts_with("lk_r_"));
    assert_eq!((refresh.path(), refresh.domain()), (Some("/"), None), "a __Host- cookie no sibling can plant");
    assert_eq!((refresh.secure(), refresh.http_only()), (Some(true), Some(true)));
    assert_eq!(refresh.same_site(), Some(SameSite::Strict));

    let device = find(&cookies, DEVICE).expect("device cookie");
    assert!(device.value().starts_with("lk_d_"));
    assert_eq!((device.path(), device.secure(), device.http_only()), (Some("/"), Some(true), Some(true)));
    assert_eq!(device.same_site(), Some(SameSite::Strict));

    // whoami (and forward-auth) by cookie alone.
    let me = send(&app, reqwest::Method::GET, "/v1/sessions/current", &jar, &[], None).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert!(me.headers().get("x-user-id").is_some(), "forward-auth headers");
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["username"], "nora");

    // A bearer token wins over a cookie: a client that sends its own token
    // is not silently acting as the browser's user.
    let other = app.register_and_login("omar", PASSWORD).await;
    let res = app
        .client
        .get(app.url("/v1/sessions/current"))
        .bearer_auth(&other.token)
        .header(COOKIE, jar.header("/"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.json::<Value>().await.expect("json")["username"], "omar");

    // The next login from this browser presents the device cookie: a known
    // device, and no new credential.
    let mut again = Jar { device: jar.device.clone(), ..Jar::default() };
    let res = browser_login(&app, &mut again, "nora", &SAME_ORIGIN).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(find(&set_cookies(&res), DEVICE).is_none(), "no new device credential");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["new_device"], false);
}
each_stack!(cookies_carry_the_session, cookies_carry_the_session);

async fn cross_site_pages_get_nothing(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    assert_eq!(app.register("pia", PASSWORD).await.status(), StatusCode::CREATED);
    let mut jar = Jar::default();

    // Login CSRF: another site cannot log the browser into an account.
    for headers in [&[][..], &[("x-latchkey-csrf", "1"), ("sec-fetch-site", "cross-site")][..]] {
        let res = browser_login(&app, &mut jar, "pia", headers).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(res.json::<Value>().await.expect("json")["code"], "csrf_rejected");
        assert!(jar.session.is_none(), "no cookie set");
    }
    assert_eq!(browser_login(&app, &mut jar, "pia", &SAME_ORIGIN).await.status(), StatusCode::OK);
    // A second session, so that a forged "revoke the others" would show.
    let other = app.login("pia", PASSWORD, "phone").await;

    // What a cross-site form or fetch can send: the cookie (SameSite=Lax
    // lets top-level navigations carry it), but not the custom header
    // without a preflight, and the browser says where it comes from.
    let forged: [&[(&str, &str)]; 4] = [
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        &[("x-latchkey-csrf", "1"), ("sec-fetch-site", "cross-site")],
        &[("origin", "https://evil.example"), ("x-latchkey-csrf", "1")],
    ];
    for headers in forged {
        let enroll = send(&app, reqwest::Method::POST, "/v1/totp/enroll", &jar, headers, None).await;
        assert_eq!(enroll.status(), StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(enroll.json::<Value>().await.expect("json")["code"], "csrf_rejected");
        let others = send(&app, reqwest::Method::DELETE, "/v1/sessions?scope=others", &jar, headers, None).await;
        assert_eq!(others.status(), StatusCode::FORBIDDEN, "{headers:?}");
        let logout = send(&app, reqwest::Method::DELETE, "/v1/sessions/current", &jar, headers, None).await;
        assert_eq!(logout.status(), StatusCode::FORBIDDEN, "{headers:?}");
        let refresh = send(&app, reqwest::Method::POST, "/v1/sessions/refresh", &jar, headers, Some(json!({}))).await;
        assert_eq!(refresh.status(), StatusCode::FORBIDDEN, "{headers:?}");
    }
    // Nothing happened: both sessions live, no revocation, no enrolment.
    let me = send(&app, reqwest::Method::GET, "/v1/sessions/current", &jar, &[], None).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(app.whoami(&other.token).await.status(), StatusCode::OK);
    let events = app.audit_events().await;
    assert!(!events.iter().any(|e| e == "session.revoke" || e == "session.refresh"), "{events:?}");
    let confirm = app
        .client
        .post(app.url("/v1/totp/confirm"))
        .bearer_auth(&other.token)
        .json(&json!({"code": "123456"}))
        .send()
        .await
        .expect("request");
    assert_eq!(confirm.status(), StatusCode::BAD_REQUEST, "no TOTP enrolment is pending");

    // The same requests from the pages work.
    let enroll = send(&app, reqwest::Method::POST, "/v1/totp/enroll", &jar, &SAME_ORIGIN, None).await;
    assert_eq!(enroll.status(), StatusCode::OK);
    // A browser without Fetch Metadata: its Origin must be latchkey's own.
    let host = app.address.trim_start_matches("http://").to_owned();
    let origin = format!("http://{host}");
    let old = [("x-latchkey-csrf", "1"), ("origin", origin.as_str())];
    let list = send(&app, reqwest::Method::DELETE, "/v1/sessions?scope=others", &jar, &old, None).await;
    assert_eq!(list.status(), StatusCode::OK);
    assert_eq!(list.json::<Value>().await.expect("json")["revoked"], 1);
}
each_stack!(cross_site_pages_get_nothing, cross_site_pages_get_nothing);

async fn refresh_and_logout_by_cookie(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    assert_eq!(app.register("quin", PASSWORD).await.status(), StatusCode::CREATED);
    let mut jar = Jar::default();
    assert_eq!(browser_login(&app, &mut jar, "quin", &SAME_ORIGIN).await.status(), StatusCode::OK);
    let before = jar.clone();

    // No refresh cookie: nothing to refresh.
    let bare = Jar { refresh: None, ..jar.clone() };
    let res = send(&app, reqwest::Method::POST, "/v1/sessions/refresh", &bare, &SAME_ORIGIN, Some(json!({}))).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let res = send(&app, reqwest::Method::POST, "/v1/sessions/refresh", &jar, &SAME_ORIGIN, Some(json!({}))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookies = set_cookies(&res);
    jar.take(&cookies);
    let body: Value = res.json().await.expect("json");
    assert!(body.get("session_token").is_none() && body.get("refresh_token").is_none(), "{body}");
    assert_ne!(jar.session, before.session, "rotated session token");
    assert_ne!(jar.refresh, before.refresh, "rotated refresh token");
    let old = send(&app, reqwest::Method::GET, "/v1/sessions/current", &before, &[], None).await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED, "the old cookie's token is dead");
    let now = send(&app, reqwest::Method::GET, "/v1/sessions/current", &jar, &[], None).await;
    assert_eq!(now.status(), StatusCode::OK);

    // Logout clears both session cookies and keeps the device cookie.
    let res = send(&app, reqwest::Method::DELETE, "/v1/sessions/current", &jar, &SAME_ORIGIN, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookies(&res);
    for name in [SESSION, REFRESH] {
        let c = find(&cleared, name).unwrap_or_else(|| panic!("{name} cleared"));
        assert_eq!(c.value(), "", "{name}");
        assert_eq!(c.max_age().map(|a| a.whole_seconds()), Some(0), "{name}");
        assert_eq!(c.path(), Some("/"), "a removal must name the cookie's own path");
        assert_eq!(c.secure(), Some(true), "browsers ignore a __Host- removal without Secure");
    }
    assert!(find(&cleared, DEVICE).is_none(), "the device cookie stays");
    let after = send(&app, reqwest::Method::GET, "/v1/sessions/current", &jar, &[], None).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED, "a kept copy of the cookie is dead too");
    let res = send(&app, reqwest::Method::POST, "/v1/sessions/refresh", &jar, &SAME_ORIGIN, Some(json!({}))).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "so is the refresh cookie");
}
each_stack!(refresh_and_logout_by_cookie, refresh_and_logout_by_cookie);

async fn totp_step_by_cookie(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let bearer = app.register_and_login("rhea", PASSWORD).await;
    let secret = app.enable_totp(&bearer.token).await;
    let mut jar = Jar::default();
    let res = browser_login(&app, &mut jar, "rhea", &SAME_ORIGIN).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_cookies(&res).is_empty(), "no cookie before the second factor");
    let mfa: Value = res.json().await.expect("json");
    let mfa_token = mfa["mfa_token"].as_str().expect("mfa_required");
    // The next step's code: the current one was used by enable_totp.
    let step = u64::try_from(chrono::Utc::now().timestamp()).expect("time") / 30 + 1;
    let body = json!({"mfa_token": mfa_token, "code": totp_code(&secret, step), "session_cookie": true});
    let forged = [("x-latchkey-csrf", "1"), ("sec-fetch-site", "cross-site")];
    let res = send(&app, reqwest::Method::POST, "/v1/login/totp", &jar, &forged, Some(body.clone())).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "no cross-site second step");
    let res = send(&app, reqwest::Method::POST, "/v1/login/totp", &jar, &SAME_ORIGIN, Some(body)).await;
    assert_eq!(res.status(), StatusCode::OK);
    jar.take(&set_cookies(&res));
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["aal"], "aal2");
    assert!(body.get("session_token").is_none(), "{body}");
    let me = send(&app, reqwest::Method::GET, "/v1/sessions/current?aal=aal2", &jar, &[], None).await;
    assert_eq!(me.status(), StatusCode::OK);
}
each_stack!(totp_step_by_cookie, totp_step_by_cookie);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_addresses_are_allow_listed() {
    let app = TestApp::spawn_with(DbKind::Sqlite, CacheKind::Memory, |c| {
        c.ui.return_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let location = |res: &reqwest::Response| {
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        res.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned).expect("Location")
    };
    let go = |to: &str| app.client.get(app.url("/ui/return")).query(&[("to", to)]).send();
    for allowed in ["/app/page?x=1", "https://app.example.com/inbox"] {
        assert_eq!(location(&go(allowed).await.expect("request")), allowed);
    }
    for refused in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "https://app.example.com.evil.example/",
        "https://app.example.com@evil.example/",
        "javascript:alert(document.cookie)",
        "http://app.example.com/",
    ] {
        assert_eq!(location(&go(refused).await.expect("request")), "/ui/", "{refused}");
    }
    assert_eq!(location(&app.get("/ui/return").await), "/ui/");
}

#[test]
fn return_origins_must_be_origins() {
    for bad in ["https://app.example.com/path", "app.example.com", "ftp://files.example.com", "https://u:p@a.example"] {
        let config = latchkey::config::Config {
            ui: latchkey::config::UiConfig { return_origins: vec![bad.into()] },
            ..Default::default()
        };
        assert!(config.validate().is_err(), "{bad}");
    }
    let config = latchkey::config::Config {
        ui: latchkey::config::UiConfig { return_origins: vec!["https://app.example.com:8443".into()] },
        ..Default::default()
    };
    assert!(config.validate().is_ok());
}

/// Cookie tossing: a sibling subdomain (or a man in the middle on plain
/// http) can set cookies whose names only decode to latchkey's, or, without
/// the `__Host-` prefix, duplicates. Neither is read as a session.
async fn planted_cookies_are_no_session(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    assert_eq!(app.register("sven", PASSWORD).await.status(), StatusCode::CREATED);
    let mut victim = Jar::default();
    assert_eq!(browser_login(&app, &mut victim, "sven", &SAME_ORIGIN).await.status(), StatusCode::OK);
    let attacker = app.register_and_login("mallory", PASSWORD).await;
    let victim_session = victim.session.clone().expect("session cookie");

    let who = |cookie: String| app.client.get(app.url("/v1/sessions/current")).header(COOKIE, cookie).send();
    // An encoded name is another cookie: the victim stays the victim.
    let res = who(format!("%5F_Host-lk_session={}; {SESSION}={victim_session}", attacker.token)).await.expect("req");
    assert_eq!(res.json::<Value>().await.expect("json")["username"], "sven");
    let res = who(format!("%5F_Host-lk_session={}", attacker.token)).await.expect("req");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "never the planted session");
    // The same name twice: no session at all, rather than a guess.
    let res = who(format!("{SESSION}={}; {SESSION}={victim_session}", attacker.token)).await.expect("req");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // A planted refresh cookie next to the victim's: no refresh.
    let both = Jar { refresh: None, ..victim.clone() };
    let cookie = format!(
        "{}; {REFRESH}={}; {REFRESH}={}",
        both.header("/"),
        attacker.refresh,
        victim.refresh.clone().expect("r")
    );
    let res = app
        .client
        .post(app.url("/v1/sessions/refresh"))
        .header(COOKIE, cookie)
        .header("x-latchkey-csrf", "1")
        .header("sec-fetch-site", "same-origin")
        .json(&json!({}))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookies(&res).is_empty(), "no session cookie set for anyone");
}
each_stack!(planted_cookies_are_no_session, planted_cookies_are_no_session);

/// Logout after the session token expired (the page was left open): the
/// refresh cookie names the session, which ends, and the cookies go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_after_the_token_expired() {
    let app = TestApp::spawn_with(DbKind::Sqlite, CacheKind::Memory, |c| {
        c.sessions.token_lifetime = std::time::Duration::from_secs(1);
    })
    .await;
    assert_eq!(app.register("tess", PASSWORD).await.status(), StatusCode::CREATED);
    let mut jar = Jar::default();
    assert_eq!(browser_login(&app, &mut jar, "tess", &SAME_ORIGIN).await.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let me = send(&app, reqwest::Method::GET, "/v1/sessions/current", &jar, &[], None).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED, "the token expired");

    let forged =
        send(&app, reqwest::Method::DELETE, "/v1/sessions/current", &jar, &[("sec-fetch-site", "cross-site")], None)
            .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN, "a cross-site page cannot log the browser out either");
    let res = send(&app, reqwest::Method::DELETE, "/v1/sessions/current", &jar, &SAME_ORIGIN, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookies(&res);
    assert!(find(&cleared, SESSION).is_some_and(|c| c.value().is_empty()));
    assert!(find(&cleared, REFRESH).is_some_and(|c| c.value().is_empty()));
    let res = send(&app, reqwest::Method::POST, "/v1/sessions/refresh", &jar, &SAME_ORIGIN, Some(json!({}))).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "the session ended: the kept refresh cookie is dead");
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e == "session.revoke"), "{events:?}");

    // Without any latchkey cookie and without a token: 401, as before.
    let res = app.client.delete(app.url("/v1/sessions/current")).send().await.expect("req");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
