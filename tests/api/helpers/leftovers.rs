//! Test databases and roles left on the shared Postgres. A test's database
//! outlives the test (its app may still hold connections), so the first
//! Postgres test of each test process drops, in the background, those an
//! earlier run left. Test processes of this run and of concurrent runs share
//! the server (nextest starts one process per test), hence: names carry their
//! creation time and only old ones go; DROP without FORCE leaves a database
//! still in use; and an advisory lock lets one process clean at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DbErr, Statement};
use uuid::Uuid;

/// Longer than any test runs.
const LEFTOVER_AGE_SECS: u64 = 10 * 60;

/// The advisory lock key of the cleanup ("lktest" in ASCII).
const CLEANUP_LOCK: i64 = 0x6c6b_7465_7374;

/// A fresh name `PREFIX_<unix seconds>_<random hex>`, dropped once it is old.
pub fn dated_name(prefix: &str) -> String {
    format!("{prefix}_{}_{}", now_secs(), Uuid::new_v4().simple())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The creation time of a dated name; None for any other name.
fn created(name: &str) -> Option<u64> {
    name.rsplit('_').nth(1)?.parse().ok()
}

/// Starts the cleanup on its own thread, once per process; a test does not
/// wait for it, and what the process does not finish a later one does.
pub fn drop_leftovers_once(admin_url: &str) {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let url = admin_url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        // A failure only leaves the leftovers to a later run.
        let _ = runtime.block_on(drop_leftovers(url));
    });
}

async fn drop_leftovers(url: String) -> Result<(), DbErr> {
    let mut options = ConnectOptions::new(url);
    options.max_connections(1); // the advisory lock belongs to one session
    let admin = Database::connect(options).await?;
    let sql = |s: &str| Statement::from_string(DatabaseBackend::Postgres, s);
    let lock = admin.query_one_raw(sql(&format!("SELECT pg_try_advisory_lock({CLEANUP_LOCK}) AS locked"))).await?;
    if !lock.and_then(|row| row.try_get::<bool>("", "locked").ok()).unwrap_or(false) {
        return Ok(()); // another process is cleaning
    }
    let cutoff = now_secs().saturating_sub(LEFTOVER_AGE_SECS);
    for (kind, list) in [
        ("DATABASE", r"SELECT datname AS name FROM pg_database WHERE datname LIKE 'lk\_test\_%'"),
        ("ROLE", r"SELECT rolname AS name FROM pg_roles WHERE rolname LIKE 'lk\_test\_%'"),
    ] {
        for row in admin.query_all_raw(sql(list)).await? {
            let name: String = row.try_get("", "name")?;
            if created(&name).is_some_and(|t| t < cutoff) {
                let quoted = name.replace('"', "\"\"");
                let _ = admin.execute_unprepared(&format!("DROP {kind} IF EXISTS \"{quoted}\"")).await;
            }
        }
    }
    Ok(())
}
