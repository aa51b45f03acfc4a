//! nginx `auth_request` in front of two replicas, with the very snippet the
//! compose `scale` profile mounts (deploy/nginx.conf), against Debian's
//! nginx. Skipped, loudly, when nginx is not installed (.ci/run installs it).

use std::time::Duration;

use crate::helpers::{CacheKind, DbKind, TestApp, TestDb, redis_url, unique_prefix};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_with_whoami() {
    let Ok(nginx) = which("nginx") else {
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
    let a = TestApp::spawn_on_url(&db.url, CacheKind::Redis, tweak(prefix.clone())).await;
    let b = TestApp::spawn_on_url(&db.url, CacheKind::Redis, tweak(prefix)).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let snippet = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf"))
        .expect("deploy/nginx.conf")
        .replace("latchkey-1:8080", &a.address.replace("http://", ""))
        .replace("latchkey-2:8080", &b.address.replace("http://", ""))
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    let d = dir.path().display();
    std::fs::write(dir.path().join("site.conf"), snippet).expect("write");
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n access_log off;\n \
             client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fcgi;\n \
             uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n include {d}/site.conf;\n}}\n"
        ),
    )
    .expect("write");
    let mut child = std::process::Command::new(nginx)
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf"), "-g", "daemon off;"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nginx");
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "nginx did not start: {}", std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default());

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

    // SIGTERM: the master stops its workers before it exits.
    let _ = std::process::Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = std::path::Path::new(dir).join(program);
        if path.exists() {
            return Ok(path);
        }
    }
    Err(())
}
