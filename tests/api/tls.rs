//! TLS to Postgres, verified against a certificate authority made in the
//! test (rustls; `sslmode=verify-full` with `sslrootcert`).

use std::path::Path;

use crate::helpers::{CacheKind, PrivatePostgres, TestApp};

/// A throw-away CA and a server certificate for localhost / 127.0.0.1.
pub(crate) fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("write");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=latchkey test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    // A second, unrelated CA, to prove verification is real.
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
        "-days",
        "2",
        "-subj",
        "/CN=other CA",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_verified_tls() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certificates(certs.path());
    let pg = PrivatePostgres::start_tls(&certs.path().join("server.pem"), &certs.path().join("server.key")).await;
    let ca = certs.path().join("ca.pem");
    let url =
        format!("postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}", pg.port, ca.display());

    let app = TestApp::spawn_on_url(&url, CacheKind::Memory, |_| {}).await;
    let s = app.register_and_login("tls", "correct horse battery staple").await;
    assert_eq!(app.whoami(&s.token).await.status(), 200);
    use sea_orm::ConnectionTrait as _;
    let row = app
        .app_db
        .conn()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ))
        .await
        .expect("query")
        .expect("row");
    assert!(row.try_get::<bool>("", "ssl").expect("ssl column"), "the connection is encrypted");

    // The wrong authority is refused.
    let wrong = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port,
        certs.path().join("other.pem").display()
    );
    let options = latchkey::store::db::DbOptions {
        acquire_timeout: std::time::Duration::from_secs(2),
        ..crate::helpers::db_options()
    };
    assert!(latchkey::store::db::Db::connect(&wrong, &options).await.is_err(), "an unknown CA must fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_verified_tls() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certificates(certs.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let d = certs.path();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(d.join("server.pem"))
        .arg("--tls-key-file")
        .arg(d.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(d.join("ca.pem"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let url = format!("rediss://localhost:{port}");

    let ca = d.join("ca.pem");
    let app = TestApp::spawn_with(crate::helpers::DbKind::Sqlite, CacheKind::Redis, {
        let url = url.clone();
        move |c| {
            c.redis_url = Some(secrecy::SecretString::from(url));
            c.redis.ca_file = Some(ca);
        }
    })
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200, "Redis answers over TLS");
    let s = app.register_and_login("tlsr", "correct horse battery staple").await;
    let key = app.keys.session(&latchkey::domain::tokens::hash(&s.token));
    use latchkey::store::FastStore as _;
    assert!(app.fast.get(&key).await.expect("get").is_some(), "the session is cached in the TLS Redis");

    // An unknown authority is refused.
    let other = std::fs::read(d.join("other.pem")).expect("pem");
    let store =
        latchkey::store::fast::RedisStore::connect_with_ca(&url, 2, std::time::Duration::from_secs(2), Some(&other))
            .expect("pool");
    assert!(store.ping().await.is_err());
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certificates(certs.path());
    let (cert, key) = (certs.path().join("server.pem"), certs.path().join("server.key"));
    let app = TestApp::spawn_with(crate::helpers::DbKind::Sqlite, CacheKind::Memory, move |c| {
        c.tls_cert_file = Some(cert);
        c.tls_key_file = Some(key);
    })
    .await;
    let port = app.address.rsplit(':').next().expect("port").to_owned();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.path().join("ca.pem")).expect("pem")).expect("ca");
    let client = reqwest::Client::builder().add_root_certificate(ca).build().expect("client");
    let res = client.get(format!("https://localhost:{port}/healthz")).send().await.expect("https request");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    // Plain HTTP on the TLS port does not get an answer.
    assert!(reqwest::get(format!("http://localhost:{port}/healthz")).await.map_or(true, |r| r.status() != 200));
}
