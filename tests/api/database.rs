//! Migrations on both relational backends.

use sea_orm::ConnectionTrait;

use crate::each_db;
use crate::helpers::{DbKind, TestDb, db_options};
use latchkey::store::db::Db;

const TABLES: &[&str] = &[
    "users",
    "user_roles",
    "opaque_credentials",
    "totp_credentials",
    "recovery_codes",
    "devices",
    "sessions",
    "refresh_tokens",
    "audit_events",
    "keyring",
    "data_keys",
    "server_setup",
    "webauthn_credentials",
];

async fn table_exists(db: &Db, table: &str) -> bool {
    // A query that works on both backends and fails only if the table is missing.
    db.conn().execute_unprepared(&format!("SELECT 1 FROM {table} WHERE 1 = 0")).await.is_ok()
}

async fn migrations_up_down_up(kind: DbKind) {
    let test_db = TestDb::new(kind).await;
    let db = Db::connect(&test_db.url, &db_options()).await.expect("connect");
    let (applied, pending) = db.migration_status().await.expect("status");
    assert!(applied.is_empty());
    assert!(!pending.is_empty());

    db.migrate_up().await.expect("up");
    for table in TABLES {
        assert!(table_exists(&db, table).await, "{table} exists after up");
    }
    let (applied, pending) = db.migration_status().await.expect("status");
    assert!(pending.is_empty() && !applied.is_empty());

    db.migrate_up().await.expect("up is idempotent");

    let steps = u32::try_from(applied.len()).expect("few migrations");
    db.migrate_down(steps).await.expect("down");
    for table in TABLES {
        assert!(!table_exists(&db, table).await, "{table} dropped after down");
    }
    db.migrate_up().await.expect("up again");
    assert!(table_exists(&db, "sessions").await);
    db.ping().await.expect("ping");
    assert_eq!(db.backend_name(), if kind == DbKind::Postgres { "postgres" } else { "sqlite" });
}
each_db!(migrations_up_down_up_on, migrations_up_down_up);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_together_take_turns() {
    let test_db = TestDb::new(DbKind::Postgres).await;
    let (a, b) = (
        Db::connect(&test_db.url, &db_options()).await.expect("connect"),
        Db::connect(&test_db.url, &db_options()).await.expect("connect"),
    );
    let (ra, rb) = tokio::join!(a.migrate_up(), b.migrate_up());
    ra.expect("first");
    rb.expect("second");
    assert!(a.migration_status().await.expect("status").1.is_empty());
}

#[tokio::test]
async fn unreachable_postgres_is_a_clear_transient_error() {
    let options = latchkey::store::db::DbOptions { acquire_timeout: std::time::Duration::from_secs(1), ..db_options() };
    let err = Db::connect("postgres://postgres@127.0.0.1:1/nothing", &options).await.expect_err("nothing listens");
    assert!(err.is_transient(), "{err}");
}
