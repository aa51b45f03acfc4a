//! Apache httpd with mod_auth_openidc as an OAuth 2.0 resource server:
//! the very snippet operators copy (deploy/apache-introspection.conf), run
//! against Debian's apache2, introspecting latchkey's tokens over verified
//! TLS in front of a small upstream that echoes what it receives. Skipped,
//! loudly, when apache2 or the module is not installed (.ci/run installs
//! them).

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{CacheKind, DbKind, TestApp, Upstream};

const PASSWORD: &str = "correct horse battery staple";
const SERVICE_TOKEN: &str = "svc-apache-gateway-token-0123456789";
const MODULE: &str = "/usr/lib/apache2/modules/mod_auth_openidc.so";

/// The test's introspection interval in place of the config's 10 s.
const INTERVAL_SECS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_mod_auth_openidc_introspection() {
    let Some(apache) = which("apache2") else {
        eprintln!("SKIPPED: apache2 is not installed (Debian: apt-get install apache2 libapache2-mod-auth-openidc)");
        return;
    };
    if !std::path::Path::new(MODULE).exists() {
        eprintln!("SKIPPED: mod_auth_openidc is not installed (Debian: apt-get install libapache2-mod-auth-openidc)");
        return;
    }
    // mod_auth_openidc takes only an https introspection endpoint: latchkey
    // serves TLS with a certificate from a CA made here, which Apache trusts.
    let certs = tempfile::tempdir().expect("tempdir");
    crate::tls::make_certificates(certs.path());
    let (cert, key) = (certs.path().join("server.pem"), certs.path().join("server.key"));
    let mut app = TestApp::spawn_with(DbKind::Sqlite, CacheKind::Memory, move |c| {
        c.tls_cert_file = Some(cert);
        c.tls_key_file = Some(key);
        c.service_tokens = vec![secrecy::SecretString::from(SERVICE_TOKEN)];
    })
    .await;
    let port = app.address.rsplit(':').next().expect("port").to_owned();
    app.address = format!("https://localhost:{port}");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.path().join("ca.pem")).expect("pem")).expect("ca");
    app.client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    let upstream = Upstream::start().await;
    let gateway = Apache::start(&apache, &app.address, &upstream.address, &certs.path().join("ca.pem"), |config| {
        let interval = "OIDCOAuthTokenIntrospectionInterval 10\n";
        assert_eq!(config.matches(interval).count(), 2, "deploy/apache-introspection.conf re-introspects every 10 s");
        config.replace(interval, &format!("OIDCOAuthTokenIntrospectionInterval {INTERVAL_SECS}\n"))
    })
    .await;
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let request = client.get(format!("{}{path}", gateway.base));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { request.send().await.expect("req") }
    };

    // Refused by Apache, never reaching the upstream.
    let res = get("/app/dashboard", None).await;
    assert_eq!(res.status(), 401, "no token");
    assert!(res.headers()["www-authenticate"].to_str().expect("ascii").starts_with("Bearer"));
    assert_eq!(get("/app/dashboard", Some("lk_s_made-up-token")).await.status(), 401, "a made-up token");
    assert_eq!(get("/app/dashboard", Some("not even a token")).await.status(), 401, "garbage");
    let basic = client.get(format!("{}/app/dashboard", gateway.base)).basic_auth("nina", Some(PASSWORD));
    assert_eq!(basic.send().await.expect("req").status(), 401, "a password is not a token");
    assert_eq!(upstream.hits(), 0, "the upstream saw none of the refusals");

    // A session token: the upstream learns the user, and what the client
    // claims about itself in the same headers is dropped.
    let s = app.register_and_login("nina", PASSWORD).await;
    let user_id = s.body["user_id"].as_str().expect("id").to_owned();
    let session_id = s.body["session_id"].as_str().expect("id").to_owned();
    let res = client
        .get(format!("{}/app/dashboard?x=1", gateway.base))
        .bearer_auth(&s.token)
        .header("X-Remote-User", "someone-else")
        .header("OIDC_CLAIM_sub", "someone-else")
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200);
    let seen: Value = res.json().await.expect("the upstream's echo");
    let headers = &seen["headers"];
    assert_eq!(seen["target"], "/dashboard?x=1");
    assert_eq!(headers["x-remote-user"], user_id.as_str(), "REMOTE_USER is the user id: {seen}");
    assert_eq!(headers["oidc_claim_sub"], user_id.as_str());
    assert_eq!(headers["oidc_claim_sid"], session_id.as_str());
    assert_eq!(headers["oidc_claim_aal"], "aal1");
    assert_eq!(headers["oidc_claim_token_type"], "session_token");
    assert!(headers.get("authorization").is_none(), "the upstream does not get the token: {seen}");
    assert!(headers.get("oidc_access_token").is_none(), "nor under another name: {seen}");

    // A JWT of the same session passes the same way (introspected too).
    let res = app.client.post(app.url("/v1/tokens/jwt")).bearer_auth(&s.token).send().await.expect("req");
    assert_eq!(res.status(), 200);
    let jwt = res.json::<Value>().await.expect("json")["token"].as_str().expect("jwt").to_owned();
    let res = get("/app/reports", Some(&jwt)).await;
    assert_eq!(res.status(), 200);
    let seen: Value = res.json().await.expect("echo");
    assert_eq!(seen["headers"]["x-remote-user"], user_id.as_str());
    assert_eq!(seen["headers"]["oidc_claim_token_type"], "jwt");
    assert_eq!(seen["headers"]["oidc_claim_sid"], session_id.as_str());

    // /app/admin/ wants aal2: an aal1 session is refused there, one with a
    // second factor passes.
    let hits = upstream.hits();
    assert_eq!(get("/app/admin/users", Some(&s.token)).await.status(), 401, "aal1 on the aal2 path");
    assert_eq!(upstream.hits(), hits, "refused before the upstream");
    let mfa = app.register_and_login("ada", PASSWORD).await;
    app.enable_totp(&mfa.token).await;
    let res = get("/app/admin/users", Some(&mfa.token)).await;
    assert_eq!(res.status(), 200, "aal2 on the aal2 path");
    let seen: Value = res.json().await.expect("echo");
    assert_eq!(seen["target"], "/admin/users");
    assert_eq!(seen["headers"]["oidc_claim_aal"], "aal2");
    assert_eq!(seen["headers"]["x-remote-user"], mfa.body["user_id"]);

    // Logout. Apache reuses an active answer for the introspection
    // interval, so the token works there a little longer (the documented
    // latency); past the interval it and the session's JWT are refused.
    // (First past the interval once, so the next request asks afresh and
    // the answer it caches is the newest.)
    tokio::time::sleep(Duration::from_millis(INTERVAL_SECS * 1000 + 1500)).await;
    assert_eq!(get("/app/dashboard", Some(&s.token)).await.status(), 200);
    let res = app.delete_auth("/v1/sessions/current", &s.token).await;
    assert_eq!(res.status(), 204);
    assert_eq!(app.whoami(&s.token).await.status(), 401, "latchkey itself refuses at once");
    assert_eq!(get("/app/dashboard", Some(&s.token)).await.status(), 200, "Apache's cached answer");
    tokio::time::sleep(Duration::from_millis(INTERVAL_SECS * 1000 + 1500)).await;
    let hits = upstream.hits();
    assert_eq!(get("/app/dashboard", Some(&s.token)).await.status(), 401, "after logout, past the interval");
    assert_eq!(get("/app/reports", Some(&jwt)).await.status(), 401, "the logged-out session's JWT");
    assert_eq!(upstream.hits(), hits);
    assert_eq!(get("/app/admin/users", Some(&mfa.token)).await.status(), 200, "other sessions are untouched");
}

/// A private Apache in the foreground (`-X`, one process) serving
/// deploy/apache-introspection.conf on a free loopback port, loading only
/// the modules it needs; `edit` adjusts the snippet. Stopped (SIGTERM, then
/// reaped) on drop, a failed assertion included.
struct Apache {
    base: String,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Apache {
    async fn start(
        apache: &std::path::Path,
        latchkey: &str,
        upstream: &str,
        ca: &std::path::Path,
        edit: impl FnOnce(String) -> String,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let snippet = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/apache-introspection.conf"))
            .expect("deploy/apache-introspection.conf");
        for placeholder in ["https://latchkey.internal:8443", "http://app.internal:8080", "${LATCHKEY_SERVICE_TOKEN}"] {
            assert!(snippet.contains(placeholder), "the snippet has {placeholder}");
        }
        let snippet =
            snippet.replace("https://latchkey.internal:8443", latchkey).replace("http://app.internal:8080", upstream);
        let d = dir.path().display();
        std::fs::write(dir.path().join("site.conf"), edit(snippet)).expect("write");
        let modules = [
            ("mpm_event", "mod_mpm_event"),
            ("authn_core", "mod_authn_core"),
            ("authz_core", "mod_authz_core"),
            ("authz_user", "mod_authz_user"),
            ("headers", "mod_headers"),
            ("proxy", "mod_proxy"),
            ("proxy_http", "mod_proxy_http"),
            ("auth_openidc", "mod_auth_openidc"),
        ]
        .map(|(name, file)| format!("LoadModule {name}_module /usr/lib/apache2/modules/{file}.so\n"))
        .concat();
        // As root, Apache's worker drops to an unprivileged user.
        let user = if is_root() { "User nobody\nGroup nogroup\n" } else { "" };
        std::fs::write(
            dir.path().join("httpd.conf"),
            format!(
                "ServerRoot {d}\nDefaultRuntimeDir {d}\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\n\
                 LogLevel warn\nListen 127.0.0.1:{port}\nServerName localhost\n{user}{modules}\
                 OIDCCABundlePath {ca}\nInclude {d}/site.conf\n",
                ca = ca.display()
            ),
        )
        .expect("write");
        let child = std::process::Command::new(apache)
            .args(["-X", "-f", &format!("{d}/httpd.conf")])
            // The snippet reads the credential from Apache's environment.
            .env("LATCHKEY_SERVICE_TOKEN", SERVICE_TOKEN)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start apache2");
        let mut apache = Self { base: format!("http://127.0.0.1:{port}"), child, dir };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return apache;
            }
            if let Ok(Some(_)) = apache.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = apache.child.stderr.take() {
            use std::io::Read as _;
            let _ = apache.child.kill();
            let _ = pipe.read_to_string(&mut stderr);
        }
        let log = std::fs::read_to_string(apache.dir.path().join("error.log")).unwrap_or_default();
        panic!("apache2 did not start: {stderr}{log}");
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .into_iter()
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.exists())
}
