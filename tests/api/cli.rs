//! The `latchkey` binary: start-up refusals and the operator commands.

use std::process::Command;

use crate::helpers::{DbKind, TEST_MASTER_PASSWORD, TestDb, latchkey};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn keys_commands_and_wrong_master_password() {
    let db = TestDb::new(DbKind::Sqlite).await;
    let data = tempfile::tempdir().expect("tempdir");

    let status = latchkey(&db, data.path(), TEST_MASTER_PASSWORD, &["keys", "status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let out = text(&status.stdout);
    assert!(out.contains("pbkdf2-hmac-sha256") && out.contains("active"), "{out}");

    let rotate = latchkey(&db, data.path(), TEST_MASTER_PASSWORD, &["keys", "rotate"]);
    assert!(rotate.status.success(), "{}", text(&rotate.stderr));
    let out = text(&rotate.stdout);
    assert!(out.contains("new active key") && out.contains("decrypt_only"), "{out}");

    let reencrypt = latchkey(&db, data.path(), TEST_MASTER_PASSWORD, &["keys", "reencrypt"]);
    assert!(reencrypt.status.success(), "{}", text(&reencrypt.stderr));
    let out = text(&reencrypt.stdout);
    assert!(out.contains("moved 1 rows") && out.contains("retired 0 keys"), "{out}");

    // Both are in the audit log.
    let conn = latchkey::store::db::Db::connect(&db.url, &crate::helpers::db_options()).await.expect("connect");
    use sea_orm::{EntityTrait as _, QueryOrder as _};
    let events: Vec<String> = entity::audit_events::Entity::find()
        .order_by_asc(entity::audit_events::Column::Id)
        .all(conn.conn())
        .await
        .expect("rows")
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["audit.chain_keyed", "key.rotate", "key.reencrypt"], "the first start keyed the chain");
    conn.close().await;

    // A wrong master password stops `serve` before it listens.
    let serve = latchkey(&db, data.path(), "a different master password", &["serve"]);
    assert!(!serve.status.success());
    let err = text(&serve.stderr);
    assert!(err.contains("master password"), "{err}");
    assert!(!err.contains("a different master password"), "the password itself is never printed");
    let after = latchkey(&db, data.path(), TEST_MASTER_PASSWORD, &["keys", "status"]);
    assert_eq!(text(&after.stdout).matches("active").count(), 1);
}

#[tokio::test]
async fn migrate_and_openapi_commands() {
    let db = TestDb::new(DbKind::Postgres).await;
    let data = tempfile::tempdir().expect("tempdir");
    let status = latchkey(&db, data.path(), TEST_MASTER_PASSWORD, &["migrate", "status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains("pending"), "{}", text(&status.stdout));
    let up = latchkey(&db, data.path(), TEST_MASTER_PASSWORD, &["migrate", "up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let out = text(&up.stdout);
    assert!(out.contains("applied") && !out.contains("pending"), "{out}");

    let openapi = latchkey(&db, data.path(), TEST_MASTER_PASSWORD, &["openapi"]);
    let doc: serde_json::Value = serde_json::from_slice(&openapi.stdout).expect("json document");
    assert!(doc["paths"].get("/readyz").is_some());
}

#[tokio::test]
async fn production_refuses_to_start_without_a_strong_master_password() {
    let out = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .env_clear()
        .env("LATCHKEY_ENV", "production")
        .env("LATCHKEY_MASTER_PASSWORD", "short")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("at least 16 characters"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn embedded_default_generates_a_master_password_file() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["keys", "status"])
        .env_clear()
        .env("LATCHKEY_DATA_DIR", data.path())
        .env("LATCHKEY_KEYRING__PBKDF2_ITERATIONS", "1000")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = data.path().join("master_password");
    let meta = std::fs::metadata(&file).expect("generated file");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(data.path().join("latchkey.db").is_file(), "SQLite lives in the data directory");
    // The second run reads the same file and opens the same keyring.
    let again = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["keys", "status"])
        .env_clear()
        .env("LATCHKEY_DATA_DIR", data.path())
        .output()
        .expect("run");
    assert!(again.status.success(), "{}", text(&again.stderr));
}

/// The command-line client, as a shell user runs it: register, log in with
/// `--password-stdin`, whoami, sessions, a refresh when the token expired,
/// passwd, logout; the session file is the user's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_round_trip() {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;

    let app = crate::helpers::TestApp::spawn_with(DbKind::Sqlite, crate::helpers::CacheKind::Memory, |c| {
        c.sessions.token_lifetime = std::time::Duration::from_secs(2);
    })
    .await;
    let home = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(args)
            .env_clear()
            .env("XDG_CONFIG_HOME", home.path())
            .env("HOME", home.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run latchkey");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("wait");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let url = app.address.clone();
    let ok = |(success, text): (bool, String), what: &str| {
        assert!(success, "{what}: {text}");
        text
    };

    ok(run(&["register", "cleo", "--url", &url, "--password-stdin"], "first password 123\n"), "register");
    let (success, text) = run(&["login", "cleo", "--password-stdin"], "wrong password\n");
    assert!(!success && text.contains("invalid credentials"), "{text}");
    let text = ok(run(&["login", "cleo", "--password-stdin"], "first password 123\n"), "login");
    assert!(text.contains("logged in as cleo"), "{text}");

    let file = home.path().join("latchkey").join("credentials.json");
    let mode = std::fs::metadata(&file).expect("credentials file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the user reads the session");
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    let first_token = stored["session"]["session_token"].as_str().expect("token").to_owned();
    assert!(
        stored["devices"]
            .as_object()
            .is_some_and(|d| d.values().any(|v| v.as_str().unwrap_or("").starts_with("lk_d_")))
    );

    let text = ok(run(&["whoami"], ""), "whoami");
    assert!(text.starts_with("cleo ("), "{text}");
    assert!(ok(run(&["sessions"], ""), "sessions").contains("(this one)"));

    // The token expires; the next command refreshes it and goes on.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(ok(run(&["whoami"], ""), "whoami after expiry").starts_with("cleo ("));
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    assert_ne!(stored["session"]["session_token"], first_token.as_str(), "refreshed and rewritten");

    // Two commands meet the expired token at once: they take turns (a lock
    // on the credentials file), so one refreshes and the other uses the
    // new token; a second use of the refresh token would end the session.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| run(&["whoami"], ""));
        let b = scope.spawn(|| run(&["whoami"], ""));
        (a.join().expect("a"), b.join().expect("b"))
    });
    assert!(a.0 && b.0, "both succeed: {} / {}", a.1, b.1);
    let events = app.audit_events().await;
    assert!(!events.iter().any(|e| e == "refresh_token.reuse"), "{events:?}");

    // Plain http is for loopback only: the password's messages would be
    // safe, the tokens and a new registration record would not.
    let (success, text) = run(&["login", "cleo", "--url", "http://192.0.2.1:8080", "--password-stdin"], "x\n");
    assert!(!success && text.contains("refusing plain http"), "{text}");

    let text = ok(run(&["passwd", "--password-stdin"], "first password 123\nsecond password 456\n"), "passwd");
    assert!(text.contains("password changed"), "{text}");
    assert!(ok(run(&["whoami"], ""), "whoami after passwd").starts_with("cleo ("));
    assert!(ok(run(&["logout"], ""), "logout").contains("logged out"));
    let (success, text) = run(&["whoami"], "");
    assert!(!success && text.contains("not logged in"), "{text}");
    assert_eq!(app.whoami(&first_token).await.status(), 401);

    let (success, _) = run(&["login", "cleo", "--password-stdin"], "first password 123\n");
    assert!(!success, "the old password is gone");
    ok(run(&["login", "cleo", "--password-stdin"], "second password 456\n"), "login with the new password");
    let text = ok(run(&["logout"], ""), "logout");
    assert!(text.contains("logged out"), "{text}");
}
