//! The keyed audit chain: what someone who can write the table (but has no
//! key) can and cannot get past `audit verify`, the published head, and a
//! log written before the chain was keyed.

use chrono::{DateTime, Utc};
use entity::audit_events;
use latchkey::domain::audit_chain::HeadPublisher;
use latchkey::store::audit::{self, CHAIN_KEYED_EVENT, ChainFault, ChainHead, GENESIS_HASH};
use latchkey::store::db::Db;
use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, ConnectionTrait as _, EntityTrait as _, QueryOrder as _};
use sha2::Digest as _;

use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TestApp, TestDb};

const PASSWORD: &str = "correct horse battery staple";

/// A row's hash the way the chain was built before it was keyed (and the
/// way anyone can compute it): SHA-256 over the previous hash and the
/// fields. Written out here rather than borrowed from the code under test.
fn plain_link(prev: &str, row: &audit_events::Model) -> String {
    let text = serde_json::json!([
        prev,
        row.occurred_at.timestamp_micros(),
        row.event,
        row.user_id,
        row.session_id,
        row.device_id,
        row.ip,
        row.outcome,
        row.details_key_id,
        row.details,
    ])
    .to_string();
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

async fn rows(db: &Db) -> Vec<audit_events::Model> {
    audit_events::Entity::find().order_by_asc(audit_events::Column::Id).all(db.conn()).await.expect("audit rows")
}

/// What a writer of the table can do: alter the row at `from`, then
/// recompute its hash and every later one with plain SHA-256, so that each
/// row links to the one before.
async fn reforge_plain(db: &Db, from: usize, alter: impl FnOnce(&mut audit_events::Model)) {
    let mut all = rows(db).await;
    alter(&mut all[from]);
    let mut prev = if from == 0 { GENESIS_HASH.to_owned() } else { all[from - 1].hash.clone() };
    for row in &mut all[from..] {
        row.prev_hash = prev.clone();
        row.hash = plain_link(&prev, row);
        prev = row.hash.clone();
        audit_events::ActiveModel {
            id: sea_orm::ActiveValue::Unchanged(row.id),
            event: Set(row.event.clone()),
            ip: Set(row.ip.clone()),
            outcome: Set(row.outcome.clone()),
            prev_hash: Set(row.prev_hash.clone()),
            hash: Set(row.hash.clone()),
            ..Default::default()
        }
        .update(db.conn())
        .await
        .expect("rewrite a row");
    }
}

/// Rows as a version before the keyed chain wrote them.
async fn insert_plain_rows(db: &Db, events: &[&str], now: DateTime<Utc>) {
    let occurred_at = DateTime::from_timestamp_micros(now.timestamp_micros()).expect("time");
    let mut prev = GENESIS_HASH.to_owned();
    for event in events {
        let mut row = audit_events::Model {
            id: 0,
            occurred_at,
            event: (*event).to_owned(),
            user_id: Some(uuid::Uuid::new_v4()),
            session_id: None,
            device_id: None,
            ip: Some("192.0.2.7".into()),
            outcome: "success".into(),
            details_key_id: None,
            details: None,
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        row.hash = plain_link(&prev, &row);
        prev = row.hash.clone();
        audit_events::Entity::insert(audit_events::ActiveModel {
            occurred_at: Set(row.occurred_at),
            event: Set(row.event),
            user_id: Set(row.user_id),
            ip: Set(row.ip),
            outcome: Set(row.outcome),
            prev_hash: Set(row.prev_hash),
            hash: Set(row.hash),
            ..Default::default()
        })
        .exec_without_returning(db.conn())
        .await
        .expect("insert an old row");
    }
}

async fn keyed_chain_cannot_be_reforged_by_a_table_writer(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let s = app.register_and_login("gus", PASSWORD).await;
    app.refreshed(&s.refresh).await;
    let report = audit::verify(&app.app_db, None).await.expect("verify");
    assert_eq!(report.fault, None);
    let all = rows(&app.app_db).await;
    assert_eq!(all[0].event, CHAIN_KEYED_EVENT, "a new log starts keyed");
    assert_eq!((report.keyed_at, report.unkeyed, report.checked), (Some(all[0].id), 0, all.len() as u64));
    for row in &all {
        assert_ne!(row.hash, plain_link(&row.prev_hash, row), "event {} carries a MAC, not a plain hash", row.id);
    }

    // Rewriting a login's address and recomputing the hashes the old way
    // is caught at that row.
    let target = all.iter().position(|r| r.event == "login.success").expect("a login");
    reforge_plain(&app.app_db, target, |row| row.ip = Some("203.0.113.9".into())).await;
    let report = audit::verify(&app.app_db, None).await.expect("verify");
    assert_eq!(report.fault, Some(ChainFault::Broken { id: all[target].id }));
    assert_eq!(report.checked, target as u64, "the rows before it verify");

    // So is a whole log recomputed the old way, marker renamed: nothing in
    // it can be trusted.
    reforge_plain(&app.app_db, 0, |row| row.event = "registration".into()).await;
    let report = audit::verify(&app.app_db, None).await.expect("verify");
    assert_eq!(report.fault, Some(ChainFault::Unkeyed { first: all[0].id }));
    assert_eq!(audit::verify_chain(&app.app_db).await.expect("verify").1, Some(all[0].id));
}
each_stack!(keyed_chain_cannot_be_reforged_on, keyed_chain_cannot_be_reforged_by_a_table_writer);

async fn a_forged_history_is_not_keyed_anew_after_a_restart(db: DbKind, cache: CacheKind) {
    let test_db = TestDb::new(db).await;
    let app = TestApp::spawn_on(&test_db, cache, |_| {}).await;
    app.register_and_login("ivy", PASSWORD).await;
    let marker = rows(&app.app_db).await[0].clone();
    assert_eq!(marker.event, CHAIN_KEYED_EVENT);

    // A writer of the table deletes everything, the marker with it, and
    // writes an invented history the old way (plain SHA-256 links).
    let owner = test_db.connect().await;
    owner.conn().execute_unprepared("DELETE FROM audit_events").await.expect("delete");
    insert_plain_rows(&owner, &["registration", "login.success"], Utc::now()).await;

    // At the next start the keyring's anchor says the chain was keyed at
    // the marker: nothing is keyed anew, and verify names the missing row.
    let restarted = TestApp::spawn_on(&test_db, cache, |_| {}).await;
    restarted.register_and_login("ned", PASSWORD).await;
    let markers = rows(&restarted.app_db).await.iter().filter(|r| r.event == CHAIN_KEYED_EVENT).count();
    assert_eq!(markers, 0, "no new marker vouches for the forged rows");
    let report = audit::verify(&restarted.app_db, None).await.expect("verify");
    assert!(report.fault.is_some(), "the forged log does not verify: {report:?}");

    // Even an empty table fails: the anchored row is gone.
    owner.conn().execute_unprepared("DELETE FROM audit_events").await.expect("delete");
    let report = audit::verify(&restarted.app_db, None).await.expect("verify");
    assert_eq!(report.fault, Some(ChainFault::AnchorBroken { anchor: marker.id }));
}
each_stack!(forged_history_not_keyed_anew_on, a_forged_history_is_not_keyed_anew_after_a_restart);

async fn head_catches_deleted_newest_rows(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    app.register_and_login("hal", PASSWORD).await;
    let mut publisher = HeadPublisher::default();
    let head = publisher.publish(&app.app_db).await.expect("publish").expect("a head");
    assert_eq!(Some(&head), audit::chain_head(&app.app_db).await.expect("head").as_ref());
    let published: ChainHead = head.to_string().parse().expect("SEQ:HASH");
    assert_eq!(published, head);

    // Later rows do not disturb an earlier head.
    app.register_and_login("ida", PASSWORD).await;
    let report = audit::verify(&app.app_db, Some(&head)).await.expect("verify");
    assert_eq!(report.fault, None);
    assert!(report.head.as_ref().expect("head").sequence > head.sequence);

    // Delete every row from the published head on: what remains still
    // chains, and only the head shows the loss.
    let before = rows(&app.app_db).await.iter().rev().find(|r| r.id < head.sequence).expect("an older row").id;
    app.app_db
        .conn()
        .execute_unprepared(&format!("DELETE FROM audit_events WHERE id >= {}", head.sequence))
        .await
        .expect("delete the newest rows");
    assert_eq!(audit::verify(&app.app_db, None).await.expect("verify").fault, None);
    let report = audit::verify(&app.app_db, Some(&head)).await.expect("verify");
    assert_eq!(report.fault, Some(ChainFault::HeadMissing { head: head.sequence, last: Some(before) }));

    // A head whose row is there with another hash fails too.
    let forged = ChainHead { sequence: before, hash: "ab".repeat(32) };
    let report = audit::verify(&app.app_db, Some(&forged)).await.expect("verify");
    assert_eq!(report.fault, Some(ChainFault::HeadMismatch { head: before }));

    // The next publication notices the head it published is gone.
    let now = publisher.publish(&app.app_db).await.expect("publish").expect("a head");
    assert_eq!(now.sequence, before);
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(metrics.contains("latchkey_audit_head_lost_total"), "{metrics}");
}
each_stack!(head_catches_deleted_newest_rows_on, head_catches_deleted_newest_rows);

async fn head_is_published(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    // The first publication runs as the service starts.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = app.get("/metrics").await.text().await.expect("text");
        if metrics.contains("latchkey_audit_head_sequence") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no latchkey_audit_head_sequence gauge: {metrics}");
}
each_stack!(head_is_published_on, head_is_published);

async fn an_unkeyed_log_is_verified_and_continued_keyed(db: DbKind, cache: CacheKind) {
    let test_db = TestDb::new(db).await;
    let owner = test_db.connect().await;
    insert_plain_rows(&owner, &["registration", "login.success", "session.create"], Utc::now()).await;
    let old = rows(&owner).await;

    let app = TestApp::spawn_on(&test_db, cache, |_| {}).await;
    app.register_and_login("jon", PASSWORD).await;
    let all = rows(&app.app_db).await;
    let marker = &all[3];
    assert_eq!(&all[..3], &old[..], "old rows are never rewritten");
    assert_eq!((marker.event.as_str(), marker.outcome.as_str()), (CHAIN_KEYED_EVENT, "success"));
    assert_eq!(marker.prev_hash, old[2].hash, "the marker continues the old chain");
    assert!(all.len() > 4, "and keyed rows follow it");
    let report = audit::verify(&app.app_db, None).await.expect("verify");
    assert_eq!(report.fault, None);
    assert_eq!((report.checked, report.unkeyed, report.keyed_at), (all.len() as u64, 3, Some(marker.id)));

    // Another start keys nothing again.
    let again = TestApp::spawn_on(&test_db, cache, |_| {}).await;
    again.register_and_login("kim", PASSWORD).await;
    let markers = rows(&app.app_db).await.iter().filter(|r| r.event == CHAIN_KEYED_EVENT).count();
    assert_eq!(markers, 1);
    assert_eq!(audit::verify(&app.app_db, None).await.expect("verify").fault, None);

    // The marker's MAC covers the old head: recomputing the old part after
    // altering it breaks the chain at the marker.
    let (owner_rows, marker_id) = (rows(&owner).await, marker.id);
    let old_part = owner_rows.iter().take_while(|r| r.id < marker_id).count();
    let mut altered = owner_rows[1].clone();
    altered.outcome = "failure".into();
    let mut prev = owner_rows[0].hash.clone();
    for (i, row) in owner_rows[1..old_part].iter().enumerate() {
        let mut row = if i == 0 { altered.clone() } else { row.clone() };
        row.prev_hash = prev.clone();
        row.hash = plain_link(&prev, &row);
        prev = row.hash.clone();
        audit_events::ActiveModel {
            id: sea_orm::ActiveValue::Unchanged(row.id),
            outcome: Set(row.outcome),
            prev_hash: Set(row.prev_hash),
            hash: Set(row.hash),
            ..Default::default()
        }
        .update(owner.conn())
        .await
        .expect("rewrite");
    }
    let report = audit::verify(&app.app_db, None).await.expect("verify");
    assert_eq!(report.fault, Some(ChainFault::Broken { id: marker_id }));
    assert_eq!(report.unkeyed, 3, "the recomputed old part verifies by itself");
}
each_stack!(unkeyed_log_continued_keyed_on, an_unkeyed_log_is_verified_and_continued_keyed);

async fn a_broken_unkeyed_log_is_keyed_with_a_failure_marker(db: DbKind, cache: CacheKind) {
    let test_db = TestDb::new(db).await;
    let owner = test_db.connect().await;
    insert_plain_rows(&owner, &["registration", "login.success", "session.create"], Utc::now()).await;
    let second = rows(&owner).await[1].id;
    owner
        .conn()
        .execute_unprepared(&format!("UPDATE audit_events SET ip = '198.51.100.1' WHERE id = {second}"))
        .await
        .expect("tamper");

    let app = TestApp::spawn_on(&test_db, cache, |_| {}).await;
    app.register_and_login("lee", PASSWORD).await;
    let all = rows(&app.app_db).await;
    assert_eq!((all[3].event.as_str(), all[3].outcome.as_str()), (CHAIN_KEYED_EVENT, "failure"));
    let report = audit::verify(&app.app_db, None).await.expect("verify");
    assert_eq!(report.fault, Some(ChainFault::Broken { id: second }), "keying does not hide the old break");
}
each_stack!(broken_unkeyed_log_on, a_broken_unkeyed_log_is_keyed_with_a_failure_marker);

#[tokio::test]
async fn cli_audit_verify_with_a_head() {
    let db = TestDb::new(DbKind::Sqlite).await;
    let data = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| crate::helpers::latchkey(&db, data.path(), crate::helpers::TEST_MASTER_PASSWORD, args);
    let stdout = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let data_dir = data.path().to_path_buf();
    let app = TestApp::spawn_on_url(&db.url, CacheKind::Memory, move |c| c.data_dir = data_dir).await;
    app.register_and_login("max", PASSWORD).await;
    let head = audit::chain_head(&app.app_db).await.expect("head").expect("a head").to_string();

    let out = run(&["audit", "verify", "--head", &head]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert!(text.contains("intact") && text.contains(&format!("head {head}")), "{text}");
    assert!(text.contains("reaches the published head"), "{text}");

    let sequence = head.split_once(':').expect("SEQ:HASH").0;
    app.app_db
        .conn()
        .execute_unprepared(&format!("DELETE FROM audit_events WHERE id = {sequence}"))
        .await
        .expect("delete the newest row");
    let out = run(&["audit", "verify"]);
    assert!(out.status.success(), "without the head, a shorter chain still verifies");
    let out = run(&["audit", "verify", "--head", &head]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains(&format!("head {sequence} is missing")), "{}", stdout(&out));

    let out = run(&["audit", "verify", "--head", "12:not-a-hash"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SEQ:HASH"), "clap names the expected form");
}

/// Two replicas on one database (Postgres: replicas share it) append in
/// turn and at once. Each remembers the head it appended last and appends
/// on the condition that it still is the head; when the other replica
/// appended meanwhile, it must read the head again, never fork the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_appending_in_turn_keep_one_chain() {
    let test_db = TestDb::new(DbKind::Postgres).await;
    let a = TestApp::spawn_on_url(&test_db.url, CacheKind::Redis, |_| {}).await;
    let b = TestApp::spawn_on_url(&test_db.url, CacheKind::Redis, |_| {}).await;
    a.register_and_login("rae", PASSWORD).await;
    for app in [&a, &b, &b, &a, &b, &a] {
        app.login("rae", PASSWORD, "laptop").await;
    }
    // At once: one user per login (logins in flight count as attempts).
    let names: Vec<String> = (0..6).map(|i| format!("ray{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        [&a, &b][i % 2].register(name, PASSWORD).await;
    }
    let logins = names.iter().enumerate().map(|(i, name)| [&a, &b][i % 2].login(name, PASSWORD, "phone"));
    assert_eq!(futures_util::future::join_all(logins).await.len(), 6);
    for app in [&a, &b] {
        let report = audit::verify(&app.app_db, None).await.expect("verify");
        assert_eq!(report.fault, None, "one chain, as either replica reads it");
    }
    let all = rows(&a.app_db).await;
    assert_eq!(all.iter().filter(|r| r.event == "login.success").count(), 1 + 6 + 6);
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "row {} links to the row before it", pair[1].id);
    }
}

/// Values a client can shape (an address, a device id, sealed details) are
/// stored exactly as given, quotes, backslashes and all, whichever way the
/// transaction appends (Postgres appends a scoped transaction's events at
/// its commit, with the values written into the statement), and the chain
/// stays whole.
async fn awkward_values_are_stored_as_given(db: DbKind, cache: CacheKind) {
    use latchkey::store::db::Scope;
    let app = TestApp::spawn(db, cache).await;
    app.register_and_login("ida", PASSWORD).await;
    let user = uuid::Uuid::new_v4();
    let awkward = ["x'); DELETE FROM audit_events; --", "back\\slash E'\\x41' \"quoted\"", "ünïcödé ✓ $$ $1 :name"];
    for (i, value) in awkward.iter().enumerate() {
        let event = audit::NewAuditEvent {
            occurred_at: Utc::now(),
            event: "device.renamed",
            user_id: Some(user),
            session_id: Some(uuid::Uuid::new_v4()),
            device_id: Some((*value).to_owned()),
            ip: Some(format!("{value}{i}")),
            outcome: "success",
            details: Some((uuid::Uuid::new_v4(), (*value).repeat(3))),
        };
        let txn = app.app_db.begin_write_as(Scope::User(user)).await.expect("begin");
        audit::append_in(&txn, &[event.clone(), event.clone()]).await.expect("append");
        txn.commit().await.expect("commit");
        let all = rows(&app.app_db).await;
        for row in &all[all.len() - 2..] {
            assert_eq!(row.device_id.as_deref(), Some(*value));
            assert_eq!(row.ip, event.ip);
            assert_eq!(
                (row.details_key_id, row.details.clone()),
                (Some(event.details.as_ref().unwrap().0), Some(value.repeat(3)))
            );
            assert_eq!(row.session_id, event.session_id);
            assert_eq!(row.occurred_at.timestamp_micros(), event.occurred_at.timestamp_micros());
        }
    }
    assert!(rows(&app.app_db).await.iter().any(|r| r.event == "login.success"), "nothing was deleted");
    let report = audit::verify(&app.app_db, None).await.expect("verify");
    assert_eq!(report.fault, None);
}
each_stack!(awkward_values_are_stored_as_given_on, awkward_values_are_stored_as_given);

/// Two handles on one Postgres database commit scoped transactions in turn
/// (their events are appended at the commit, after the head read under the
/// lock): one chain, every event in it once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_after_another_handle_appended_keep_one_chain() {
    use latchkey::store::db::Scope;
    let test_db = TestDb::new(DbKind::Postgres).await;
    let a = TestApp::spawn_on_url(&test_db.url, CacheKind::Redis, |_| {}).await;
    let b = TestApp::spawn_on_url(&test_db.url, CacheKind::Redis, |_| {}).await;
    let before = rows(&a.app_db).await.len();
    let order = [&a, &a, &b, &a, &b, &b, &a, &a];
    for (i, app) in order.iter().enumerate() {
        let user = uuid::Uuid::new_v4();
        let event = audit::NewAuditEvent {
            occurred_at: Utc::now(),
            event: "account.deleted",
            user_id: Some(user),
            session_id: None,
            device_id: Some(format!("turn-{i}")),
            ip: None,
            outcome: "success",
            details: None,
        };
        let txn = app.app_db.begin_write_as(Scope::User(user)).await.expect("begin");
        audit::append_in(&txn, &[event]).await.expect("append");
        txn.commit().await.expect("commit");
    }
    let all = rows(&a.app_db).await;
    let turns: Vec<_> = all[before..].iter().map(|r| r.device_id.clone().unwrap_or_default()).collect();
    assert_eq!(turns, (0..order.len()).map(|i| format!("turn-{i}")).collect::<Vec<_>>(), "each event once, in order");
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "row {} links to the row before it", pair[1].id);
    }
    for app in [&a, &b] {
        assert_eq!(audit::verify(&app.app_db, None).await.expect("verify").fault, None);
    }
}
