//! `latchkey backup`: create, verify, restore into a fresh database, then
//! log in as a user from before and use a session from before; tampered,
//! truncated and wrongly keyed files and non-empty targets are refused.

use std::path::Path;
use std::process::{Command, Output};

use crate::each_db;
use crate::helpers::{CacheKind, DbKind, TEST_MASTER_PASSWORD, TEST_PBKDF2_ITERATIONS, TestApp, TestDb};

const PASSWORD: &str = "correct horse battery staple";
const PASSPHRASE: &str = "backup passphrase, kept apart";

fn backup(db: &TestDb, passphrase: &str, args: &[&str]) -> Output {
    backup_at(&db.url, passphrase, args)
}

/// On another URL (the service's role), which migrates nothing.
fn backup_at(url: &str, passphrase: &str, args: &[&str]) -> Output {
    let data = tempfile::tempdir().expect("tempdir");
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("backup")
        .args(args)
        .env_clear()
        .env("LATCHKEY_DATABASE_URL", url)
        .env("LATCHKEY_DATA_DIR", data.path())
        .env("LATCHKEY_MASTER_PASSWORD", TEST_MASTER_PASSWORD)
        .env("LATCHKEY_KEYRING__PBKDF2_ITERATIONS", TEST_PBKDF2_ITERATIONS.to_string())
        .env("LATCHKEY_BACKUP_PASSPHRASE", passphrase)
        .env("LATCHKEY_MIGRATE_ON_START", if url.contains(crate::helpers::APP_LOGIN) { "false" } else { "true" })
        .output()
        .expect("run latchkey")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output, why: &str) -> String {
    assert!(!out.status.success(), "{why}: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

async fn backup_and_restore(kind: DbKind) {
    let source = TestDb::new(kind).await;
    let app = TestApp::spawn_on(&source, CacheKind::Memory, |_| {}).await;
    let session = app.register_and_login("ursula", PASSWORD).await;
    assert_eq!(app.whoami(&session.token).await.status(), 200);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("latchkey.backup");
    // Created as the service's role (row-level security in force on
    // Postgres: the backup task reads every row); restored as the owner.
    let service_url = source.app_url().await.unwrap_or_else(|| source.url.clone());
    let created = ok(&backup_at(&service_url, PASSPHRASE, &["create", p(&file)]));
    assert!(created.contains("1 users"), "{created}");
    let bytes = std::fs::read(&file).expect("read");
    assert!(bytes.starts_with(b"age-encryption.org/v1"), "an age file");
    assert!(!bytes.windows(7).any(|w| w == b"ursula\""), "nothing readable inside");
    let verified = ok(&backup(&source, PASSPHRASE, &["verify", p(&file)]));
    assert!(verified.contains("backup intact") && verified.contains("1 users"), "{verified}");
    assert!(refused(&backup(&source, PASSPHRASE, &["create", p(&file)]), "existing file").contains("exists"));

    // Wrong passphrase, a flipped byte, a cut-off file: all refused.
    let err = refused(&backup(&source, "not the passphrase", &["verify", p(&file)]), "wrong passphrase");
    assert!(err.contains("decrypt"), "{err}");
    let tampered = dir.path().join("tampered");
    let mut changed = bytes.clone();
    let middle = changed.len() / 2 + 10;
    changed[middle] ^= 1;
    std::fs::write(&tampered, &changed).expect("write");
    refused(&backup(&source, PASSPHRASE, &["verify", p(&tampered)]), "tampered");
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &bytes[..bytes.len() - 40]).expect("write");
    refused(&backup(&source, PASSPHRASE, &["verify", p(&truncated)]), "truncated");
    let target = TestDb::new(kind).await;
    refused(&backup(&target, PASSPHRASE, &["restore", p(&tampered)]), "tampered restore");

    // Restore into a fresh database; the same master password opens it.
    let restored = ok(&backup(&target, PASSPHRASE, &["restore", p(&file)]));
    assert!(restored.contains("restored"), "{restored}");
    let err = refused(&backup(&target, PASSPHRASE, &["restore", p(&file)]), "non-empty");
    assert!(err.contains("not empty"), "{err}");
    ok(&backup(&target, PASSPHRASE, &["restore", "--force", p(&file)]));

    let after = TestApp::spawn_on(&target, CacheKind::Memory, |_| {}).await;
    assert_eq!(after.whoami(&session.token).await.status(), 200, "a session from before");
    let again = after.login("ursula", PASSWORD, "device-2").await;
    assert_eq!(after.whoami(&again.token).await.status(), 200, "a login with a user from before");
    let (_, broken) = latchkey::store::audit::verify_chain(&after.app_db).await.expect("verify");
    assert_eq!(broken, None, "the audit chain came along whole");
}
each_db!(backup_and_restore_on, backup_and_restore);
