//! nginx `auth_request` in front of two replicas, with the very snippet the
//! compose `scale` profile mounts (deploy/nginx.conf), against Debian's
//! nginx. Skipped, loudly, when nginx is not installed (.ci/run installs it).

use std::time::Duration;

use serde_json::json;

use crate::cookies::{Jar, SAME_ORIGIN, browser_login};
use crate::helpers::{CacheKind, DbKind, TestApp, TestDb, Upstream, redis_url, unique_prefix};

const PASSWORD: &str = "correct horse battery staple";

/// The test's max_age in place of the config's 300 s.
const MAX_AGE_SECS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_with_whoami() {
    let Some(nginx) = which("nginx") else {
        eprintln!("SKIPPED: nginx is not installed (Debian: apt-get install nginx)");
        return;
    };
    let db = TestDb::new(DbKind::Postgres).await;
    let prefix = unique_prefix();
    let tweak = |prefix: String| {
        move |c: &mut latchkey::config::Config| {
            c.redis_url = Some(secrecy::SecretString::from(redis_url()));
            c.redis_prefix = prefix;
            c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
        }
    };
    let a = TestApp::spawn_on(&db, CacheKind::Redis, tweak(prefix.clone())).await;
    let b = TestApp::spawn_on(&db, CacheKind::Redis, tweak(prefix)).await;
    let proxy = Nginx::start(&nginx, [&a, &b], |config| config).await;
    let base = &proxy.base;

    let s = a.register_and_login("nina", PASSWORD).await;
    let user_id = s.body["user_id"].as_str().expect("id").to_owned();
    let client = reqwest::Client::new();
    let res = client.get(format!("{base}/app/dashboard")).send().await.expect("req");
    assert_eq!(res.status(), 401, "no token, no entry");
    for _ in 0..4 {
        // Both replicas answer the subrequest in turn.
        let res = client.get(format!("{base}/app/dashboard")).bearer_auth(&s.token).send().await.expect("req");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-user-id"], user_id.as_str());
        assert_eq!(res.headers()["x-aal"], "aal1");
    }
    // The API through the proxy; logout there ends access at once.
    let res = client.delete(format!("{base}/v1/sessions/current")).bearer_auth(&s.token).send().await.expect("req");
    assert_eq!(res.status(), 204);
    let res = client.get(format!("{base}/app/dashboard")).bearer_auth(&s.token).send().await.expect("req");
    assert_eq!(res.status(), 401);
}

/// A browser at a web app behind nginx (the config's /web/, its upstream
/// here an echo of what it receives): with latchkey's session cookie it
/// gets through, the app learns the user and never sees latchkey's
/// cookies; a cross-site form post on the cookie is refused; the API
/// locations (/app/) ignore cookies; a browser without a session is sent to
/// the sign-in page with the whole address it asked for, and the way back
/// follows only paths on this host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_forward_auth_by_cookie() {
    let Some(nginx) = which("nginx") else {
        eprintln!("SKIPPED: nginx is not installed (Debian: apt-get install nginx)");
        return;
    };
    let app = TestApp::spawn_with(DbKind::Sqlite, CacheKind::Memory, |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let upstream = Upstream::start().await;
    let web_app = upstream.address.clone();
    let proxy = Nginx::start(&nginx, [&app, &app], move |config| {
        let at = config.find("location /web/ {").expect("the /web/ location");
        let (head, tail) = config.split_at(at);
        let stand_in = "rewrite ^ /healthz break;\n        proxy_pass http://latchkey;";
        assert!(tail.contains(stand_in), "the /web/ stand-in upstream");
        format!("{head}{}", tail.replacen(stand_in, &format!("proxy_pass {web_app};"), 1))
    })
    .await;
    let base = &proxy.base;
    assert_eq!(app.register("nils", PASSWORD).await.status(), 201);
    let mut jar = Jar::default();
    let res = browser_login(&app, &mut jar, "nils", &SAME_ORIGIN).await;
    assert_eq!(res.status(), 200);
    let login: serde_json::Value = res.json().await.expect("json");
    let user_id = login["user_id"].as_str().expect("id").to_owned();
    let cookies = format!("theme=dark; {}", jar.header("/"));

    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let page = format!("{base}/web/reports?year=2026&q=a%20b");

    // No session: to the sign-in page, with the whole address encoded.
    let res = client.get(&page).send().await.expect("req");
    assert_eq!(res.status(), 302, "a browser without a session goes to sign in");
    let signin = res.headers()["location"].to_str().expect("ascii").to_owned();
    assert_eq!(signin, format!("{base}/ui/signin/web/reports?year=2026&q=a%20b"));
    let res = client.get(&signin).send().await.expect("req");
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/ui/?return_to=%2Fweb%2Freports%3Fyear%3D2026%26q%3Da%2520b");
    assert_eq!(upstream.hits(), 0);

    // With the cookie: through, and the app learns who, from latchkey only.
    let res = client
        .get(&page)
        .header("cookie", &cookies)
        .header("x-auth-time", "4102444800")
        .header("x-user-id", "someone-else")
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200, "the session cookie lets the browser through");
    let seen: serde_json::Value = res.json().await.expect("echo");
    let headers = &seen["headers"];
    assert_eq!(seen["target"], "/web/reports?year=2026&q=a%20b");
    assert_eq!(headers["x-user-id"], user_id.as_str());
    assert_eq!(headers["x-session-id"], login["session_id"]);
    let auth_time =
        chrono::DateTime::parse_from_rfc3339(login["auth_time"].as_str().expect("auth_time")).expect("time");
    assert_eq!(headers["x-auth-time"], auth_time.timestamp().to_string().as_str(), "not the client's claim");
    let cookie = headers["cookie"].as_str().unwrap_or_default();
    assert!(cookie.starts_with("theme=dark"), "the app's own cookies pass: {cookie}");
    assert!(!cookie.contains("lk_"), "latchkey's cookies never reach the app: {cookie}");

    // A state change on the cookie needs the browser's word that it comes
    // from this origin: a cross-site (or sibling-site) form post is refused.
    for site in ["cross-site", "same-site"] {
        let res = client
            .post(format!("{base}/web/transfer"))
            .header("cookie", &cookies)
            .header("sec-fetch-site", site)
            .form(&[("to", "mallory")])
            .send()
            .await
            .expect("req");
        assert_eq!(res.status(), 403, "{site}");
    }
    let res = client
        .post(format!("{base}/web/transfer"))
        .header("cookie", &cookies)
        .header("sec-fetch-site", "same-origin")
        .form(&[("to", "friend")])
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200, "the app's own form");

    // The API locations take bearer tokens only.
    let res = client.get(format!("{base}/app/dashboard")).header("cookie", &cookies).send().await.expect("req");
    assert_eq!(res.status(), 401, "a cookie does not authorize /app/");

    // The sign-in page's way back, through the proxy.
    let back = |to: &str| client.get(format!("{base}/ui/return")).query(&[("to", to)]).send();
    let res = back("/web/reports?year=2026").await.expect("req");
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/web/reports?year=2026");
    let res = back("https://evil.example/phish").await.expect("req");
    assert_eq!(res.headers()["location"], "/ui/", "no open redirect");

    // Logout through the proxy clears the cookie; a kept copy is dead too.
    let res = client
        .delete(format!("{base}/v1/sessions/current"))
        .header("cookie", &cookies)
        .header("x-latchkey-csrf", "1")
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 204);
    assert!(crate::cookies::set_cookies(&res).iter().any(|c| c.name() == "__Host-lk_session" && c.value().is_empty()));
    let res = client.get(&page).header("cookie", &cookies).send().await.expect("req");
    assert_eq!(res.status(), 302);
}

/// The config's per-path requirements: /app/account/ asks whoami for
/// `max_age` (here 2 s instead of 300 s), /app/admin/ for `aal=aal2`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_freshness_and_aal2_per_path() {
    let Some(nginx) = which("nginx") else {
        eprintln!("SKIPPED: nginx is not installed (Debian: apt-get install nginx)");
        return;
    };
    let app = TestApp::spawn_with(DbKind::Sqlite, CacheKind::Memory, |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let proxy = Nginx::start(&nginx, [&app, &app], |config| {
        assert!(config.contains("?max_age=300;"), "deploy/nginx.conf asks for max_age=300");
        config.replace("?max_age=300;", &format!("?max_age={MAX_AGE_SECS};"))
    })
    .await;
    let base = &proxy.base;
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let request = client.get(format!("{base}{path}"));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { request.send().await.expect("req") }
    };

    // A session with a second factor passes the aal2 path.
    let mfa = app.register_and_login("ada", PASSWORD).await;
    let secret = app.enroll_totp(&mfa.token).await;
    let step = u64::try_from(chrono::Utc::now().timestamp()).expect("time") / 30;
    let res = app
        .client
        .post(app.url("/v1/totp/confirm"))
        .bearer_auth(&mfa.token)
        .json(&json!({"code": crate::client::totp_code(&secret, step)}))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200, "confirm: {}", res.text().await.unwrap_or_default());
    let res = get("/app/admin/users", Some(&mfa.token)).await;
    assert_eq!(res.status(), 200, "aal2 session on the aal2 path");
    assert_eq!(res.headers()["x-aal"], "aal2");

    // A fresh aal1 session: the plain and the max_age paths let it through,
    // the aal2 path does not.
    let s = app.register_and_login("nina", PASSWORD).await;
    let user_id = s.body["user_id"].as_str().expect("id").to_owned();
    let res = get("/app/account/password", Some(&s.token)).await;
    assert_eq!(res.status(), 200, "a fresh login on the max_age path");
    assert_eq!(res.headers()["x-user-id"], user_id.as_str());
    let auth_time: i64 = res.headers()["x-auth-time"].to_str().expect("ascii").parse().expect("unix seconds");
    assert!((chrono::Utc::now().timestamp() - auth_time).abs() <= 5, "X-Auth-Time {auth_time} is the login");
    assert_eq!(get("/app/dashboard", Some(&s.token)).await.status(), 200);
    let res = get("/app/admin/users", Some(&s.token)).await;
    assert_eq!(res.status(), 401, "an aal1 session on the aal2 path");
    assert!(res.headers().get("x-user-id").is_none(), "no identity on a refusal");
    for path in ["/app/account/password", "/app/admin/users"] {
        assert_eq!(get(path, None).await.status(), 401, "{path} without a token");
    }
    // The request's own query string does not reach whoami.
    let res = get("/app/admin/users?aal=aal1&max_age=100000", Some(&s.token)).await;
    assert_eq!(res.status(), 401, "a client cannot lower the requirement");

    // Past max_age: only the max_age path refuses. A refresh keeps the
    // login time, so it does not help; a new login does.
    tokio::time::sleep(Duration::from_millis(MAX_AGE_SECS * 1000 + 500)).await;
    assert_eq!(get("/app/account/password", Some(&s.token)).await.status(), 401, "a stale login");
    assert_eq!(get("/app/dashboard", Some(&s.token)).await.status(), 200, "the plain path asks no freshness");
    let refreshed = app.refreshed(&s.refresh).await;
    assert_eq!(get("/app/account/password", Some(&refreshed.token)).await.status(), 401, "refreshed, still stale");
    assert_eq!(get("/app/dashboard", Some(&refreshed.token)).await.status(), 200);
    let again = app.login("nina", PASSWORD, "device-1").await;
    assert_eq!(get("/app/account/password", Some(&again.token)).await.status(), 200, "a new login is fresh");
    assert_eq!(get("/app/admin/users", Some(&mfa.token)).await.status(), 200, "the aal2 path asks no freshness");
}

/// Debian's nginx serving deploy/nginx.conf on a free loopback port, both
/// upstream servers pointed at test apps; `edit` adjusts the config text.
/// Stopped (SIGTERM, then reaped) on drop, a failed assertion included.
struct Nginx {
    base: String,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(nginx: &std::path::Path, upstreams: [&TestApp; 2], edit: impl FnOnce(String) -> String) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let snippet = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf"))
            .expect("deploy/nginx.conf")
            .replace("latchkey-1:8080", &upstreams[0].address.replace("http://", ""))
            .replace("latchkey-2:8080", &upstreams[1].address.replace("http://", ""))
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
        let d = dir.path().display();
        std::fs::write(dir.path().join("site.conf"), edit(snippet)).expect("write");
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n access_log off;\n \
                 client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fcgi;\n \
                 uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n include {d}/site.conf;\n}}\n"
            ),
        )
        .expect("write");
        let child = std::process::Command::new(nginx)
            .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf"), "-g", "daemon off;"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let proxy = Self { base: format!("http://127.0.0.1:{port}"), child, dir };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return proxy;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(proxy.dir.path().join("error.log")).unwrap_or_default();
        panic!("nginx did not start: {log}");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers before it exits.
        let _ = std::process::Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .into_iter()
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.exists())
}
