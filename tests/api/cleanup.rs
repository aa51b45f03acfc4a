//! Cleanup: rows past their retention go, rows within it stay, blocked
//! devices stay, the audit log is untouched, the session cache forgets what
//! was deleted, concurrent runs count each row once, and the CLI prints
//! the counts. Time is a parameter: no sleeps.

use std::time::Duration;

use chrono::{DateTime, Utc};
use latchkey::domain::cleanup::{CleanupReport, Retention};
use latchkey::store::FastStore as _;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
use uuid::Uuid;

use crate::client::Session;
use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TEST_MASTER_PASSWORD, TestApp, TestDb, latchkey};

const PASSWORD: &str = "correct horse battery staple";
const DAY: i64 = 86_400;

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n * DAY)
}

fn retention(batch: u64) -> Retention {
    Retention { sessions: Duration::from_secs(30 * 86_400), devices: Duration::from_secs(180 * 86_400), batch }
}

async fn session_row(app: &TestApp, s: &Session) -> entity::sessions::Model {
    let id: Uuid = s.body["session_id"].as_str().expect("session_id").parse().expect("uuid");
    entity::sessions::Entity::find_by_id(id).one(app.app_db.conn()).await.expect("query").expect("session row")
}

async fn set_session(app: &TestApp, s: &Session, column: entity::sessions::Column, at: DateTime<Utc>) {
    let row = session_row(app, s).await;
    entity::sessions::Entity::update_many()
        .col_expr(column, Expr::val(at))
        .filter(entity::sessions::Column::Id.eq(row.id))
        .exec(app.app_db.conn())
        .await
        .expect("update");
}

async fn device(app: &TestApp, id: &str, user_id: Uuid, trust: &str, last_seen: DateTime<Utc>) {
    entity::devices::Entity::insert(entity::devices::ActiveModel {
        id: Set(id.to_owned()),
        user_id: Set(user_id),
        name: Set(None),
        trust: Set(trust.to_owned()),
        first_seen_at: Set(last_seen),
        last_seen_at: Set(last_seen),
        last_ip: Set(None),
        user_agent: Set(None),
        token_hash: Set(None),
        fingerprint_hash: Set(None),
        failed_attempts: Set(0),
        last_failure_at: Set(None),
        locked_until: Set(None),
    })
    .exec_without_returning(app.app_db.conn())
    .await
    .expect("insert device");
}

async fn reset_token(app: &TestApp, user_id: Uuid, expires_at: DateTime<Utc>, used_at: Option<DateTime<Utc>>) -> Uuid {
    let id = Uuid::new_v4();
    entity::reset_tokens::Entity::insert(entity::reset_tokens::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        token_hash: Set(hex_id(id)),
        created_at: Set(expires_at - days(1)),
        expires_at: Set(expires_at),
        used_at: Set(used_at),
    })
    .exec_without_returning(app.app_db.conn())
    .await
    .expect("insert reset token");
    id
}

fn hex_id(id: Uuid) -> String {
    format!("{:0>64}", id.simple())
}

async fn device_exists(app: &TestApp, id: &str) -> bool {
    entity::devices::Entity::find_by_id(id.to_owned()).one(app.app_db.conn()).await.expect("query").is_some()
}

async fn audit_rows(app: &TestApp) -> u64 {
    entity::audit_events::Entity::find().count(app.app_db.conn()).await.expect("count")
}

async fn cleanup_respects_retention(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let now = Utc::now();

    // Three sessions revoked 40 days ago (past retention, more than one batch).
    let mut old = Vec::new();
    for i in 0..3 {
        let s = app.register_and_login(&format!("old{i}"), PASSWORD).await;
        set_session(&app, &s, entity::sessions::Column::RevokedAt, now - days(40)).await;
        old.push(s);
    }
    // Revoked 20 days ago: within retention.
    let recent = app.register_and_login("recent", PASSWORD).await;
    set_session(&app, &recent, entity::sessions::Column::RevokedAt, now - days(20)).await;
    // Live, with an old expired refresh token beside its current one.
    let live = app.register_and_login("live", PASSWORD).await;
    let live_row = session_row(&app, &live).await;
    entity::refresh_tokens::Entity::insert(entity::refresh_tokens::ActiveModel {
        id: Set(Uuid::new_v4()),
        session_id: Set(live_row.id),
        user_id: Set(live_row.user_id),
        token_hash: Set(hex_id(Uuid::new_v4())),
        created_at: Set(now - days(41)),
        expires_at: Set(now - days(40)),
        rotated_at: Set(Some(now - days(40))),
    })
    .exec_without_returning(app.app_db.conn())
    .await
    .expect("insert refresh token");
    // Cached (whoami), then found expired 40 days ago in the database: the
    // cache entry must not outlive the row.
    let cached = app.register_and_login("cached", PASSWORD).await;
    assert_eq!(app.whoami(&cached.token).await.status(), 200);
    let cached_key = app.keys.session(&session_row(&app, &cached).await.token_hash);
    assert!(app.fast.get(&cached_key).await.expect("fast").is_some(), "whoami cached the session");
    set_session(&app, &cached, entity::sessions::Column::ExpiresAt, now - days(40)).await;

    // Devices: old ones without a session go (trusted too: stale trust
    // lapses), blocked ones and recent ones stay, one with a session stays.
    let user = live_row.user_id;
    device(&app, "old-unknown", user, "unknown", now - days(200)).await;
    device(&app, "old-trusted", user, "trusted", now - days(200)).await;
    device(&app, "old-blocked", user, "blocked", now - days(200)).await;
    device(&app, "recent", user, "unknown", now - days(100)).await;
    device(&app, "old-in-use", user, "unknown", now - days(200)).await;
    entity::sessions::Entity::update_many()
        .col_expr(entity::sessions::Column::DeviceId, Expr::val("old-in-use"))
        .filter(entity::sessions::Column::Id.eq(live_row.id))
        .exec(app.app_db.conn())
        .await
        .expect("update");

    // Reset tokens: expired or spent 31+ days ago go; the others stay.
    let expired_long_ago = reset_token(&app, user, now - days(40), None).await;
    let spent_long_ago = reset_token(&app, user, now - days(29), Some(now - days(31))).await;
    let expired_recently = reset_token(&app, user, now - days(10), None).await;
    let valid = reset_token(&app, user, now + days(1), None).await;

    let audit_before = audit_rows(&app).await;
    let (verified_before, broken) = latchkey::store::audit::verify_chain(&app.app_db).await.expect("verify");
    assert_eq!(broken, None);

    // Nothing is past its retention 29 days before the first cutoff.
    let early = app.core.cleanup(&retention(2), now - days(20)).await.expect("cleanup");
    assert_eq!(early, CleanupReport::default(), "everything is within retention then");

    // Two replicas at once: each row is deleted (and counted) once.
    let two = retention(2);
    let (a, b) = tokio::join!(app.core.cleanup(&two, now), app.core.cleanup(&two, now));
    let (a, b) = (a.expect("cleanup a"), b.expect("cleanup b"));
    let total = CleanupReport {
        sessions: a.sessions + b.sessions,
        refresh_tokens: a.refresh_tokens + b.refresh_tokens,
        reset_tokens: a.reset_tokens + b.reset_tokens,
        devices: a.devices + b.devices,
    };
    // 4 sessions (3 revoked, 1 expired), their 4 refresh tokens and the old
    // one of the live session; 2 reset tokens; 2 devices. The devices of
    // the deleted sessions were seen just now: they stay.
    assert_eq!(total, CleanupReport { sessions: 4, refresh_tokens: 5, reset_tokens: 2, devices: 2 }, "{a:?} {b:?}");

    for s in &old {
        let id: Uuid = s.body["session_id"].as_str().expect("id").parse().expect("uuid");
        assert!(entity::sessions::Entity::find_by_id(id).one(app.app_db.conn()).await.expect("q").is_none());
        assert_eq!(app.refresh(&s.refresh).await.status(), 401);
    }
    session_row(&app, &recent).await;
    assert_eq!(app.whoami(&live.token).await.status(), 200, "a live session is untouched");
    assert_eq!(app.refreshed(&live.refresh).await.body["session_id"], live.body["session_id"]);
    assert!(app.fast.get(&cached_key).await.expect("fast").is_none(), "the cache forgot the deleted session");
    assert_eq!(app.whoami(&cached.token).await.status(), 401);

    assert!(!device_exists(&app, "old-unknown").await);
    assert!(!device_exists(&app, "old-trusted").await);
    assert!(device_exists(&app, "old-blocked").await, "a block is never forgotten");
    assert!(device_exists(&app, "recent").await);
    assert!(device_exists(&app, "old-in-use").await);

    let left: Vec<Uuid> = entity::reset_tokens::Entity::find()
        .all(app.app_db.conn())
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(!left.contains(&expired_long_ago) && !left.contains(&spent_long_ago));
    assert!(left.contains(&expired_recently) && left.contains(&valid));

    // The audit log: not one row less, and the chain still verifies.
    assert!(audit_rows(&app).await >= audit_before);
    let (verified, broken) = latchkey::store::audit::verify_chain(&app.app_db).await.expect("verify");
    assert_eq!(broken, None);
    assert!(verified >= verified_before);

    // A second run finds nothing; the metric counts by kind.
    assert_eq!(app.core.cleanup(&retention(2), now).await.expect("again"), CleanupReport::default());
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(metrics.contains("latchkey_cleanup_deleted_total{kind=\"sessions\"}"), "{metrics}");

    // Much later, the recent session and the idle live one go too.
    let later = app.core.cleanup(&retention(1000), now + days(40)).await.expect("later");
    assert_eq!(later.sessions, 2, "{later:?}");
}
each_stack!(cleanup_respects_retention_on, cleanup_respects_retention);

#[tokio::test]
async fn maintenance_run_prints_the_counts() {
    let db = TestDb::new(DbKind::Postgres).await;
    let app = TestApp::spawn_on(&db, CacheKind::Memory, |_| {}).await;
    let gone = app.register_and_login("gone", PASSWORD).await;
    let kept = app.register_and_login("kept", PASSWORD).await;
    set_session(&app, &gone, entity::sessions::Column::RevokedAt, Utc::now() - days(31)).await;

    let data = tempfile::tempdir().expect("tempdir");
    let out = latchkey(&db, data.path(), TEST_MASTER_PASSWORD, &["maintenance", "run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("deleted        1 sessions"), "{stdout}");
    assert!(stdout.contains("deleted        1 refresh_tokens"), "{stdout}");
    assert!(stdout.contains("deleted        0 devices"), "{stdout}");
    assert_eq!(app.whoami(&kept.token).await.status(), 200);

    let again = latchkey(&db, data.path(), TEST_MASTER_PASSWORD, &["maintenance", "run"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("deleted        0 sessions"));
}
