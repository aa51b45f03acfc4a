//! Row-level security on Postgres: the service runs as a role the policies
//! hold; a query that forgets its `WHERE user_id = …` sees no one else's
//! rows; each cross-user lookup sees only what its setting names; and the
//! policies add no sequential scan to the whoami-miss and login queries.

use entity::{devices, opaque_credentials, refresh_tokens, sessions, totp_credentials, users};
use latchkey::store::db::{Db, Scope, Task};
use migration::m20261206_000002_row_level_security::TABLES;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect, QueryTrait, Statement};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{CacheKind, DbKind, TestApp};

const PASSWORD: &str = "correct horse battery staple";

async fn scalar_i64<C: ConnectionTrait>(conn: &C, sql: &str) -> i64 {
    let row = conn
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("a count")
}

async fn user_id(app: &TestApp, name: &str) -> Uuid {
    users::Entity::find()
        .filter(users::Column::Username.eq(name))
        .one(app.app_db.conn())
        .await
        .expect("query")
        .expect("the user")
        .id
}

/// Two users with a row in every protected table (sessions, refresh
/// tokens, devices, OPAQUE and TOTP credentials, recovery codes, reset
/// tokens, passkeys).
async fn two_users(app: &TestApp) -> (Uuid, Uuid, Vec<crate::client::Session>) {
    let mut logins = Vec::new();
    for name in ["alice", "bob"] {
        let s = app.register_and_login(name, PASSWORD).await;
        app.enable_totp(&s.token).await;
        logins.push(s);
    }
    let (alice, bob) = (user_id(app, "alice").await, user_id(app, "bob").await);
    for (user, n) in [(alice, 1), (bob, 2)] {
        app.app_db
            .conn()
            .execute_unprepared(&format!(
                "INSERT INTO reset_tokens (id, user_id, token_hash, created_at, expires_at) \
                 VALUES ('{}', '{user}', '{}', now(), now() + interval '1 hour')",
                Uuid::now_v7(),
                format!("{n}").repeat(64)
            ))
            .await
            .expect("a reset token");
        // A passkey row (its sealed credential is not opened here).
        app.app_db
            .conn()
            .execute_unprepared(&format!(
                "INSERT INTO webauthn_credentials (id, user_id, credential_id, name, key_id, ciphertext, sign_count, created_at) \
                 VALUES ('{}', '{user}', 'credential-{n}', 'key {n}', '{}', 'sealed', 0, now())",
                Uuid::now_v7(),
                Uuid::now_v7(),
            ))
            .await
            .expect("a passkey");
    }
    for table in TABLES {
        for user in [alice, bob] {
            let n =
                scalar_i64(app.app_db.conn(), &format!("SELECT count(*) FROM {table} WHERE user_id = '{user}'")).await;
            assert!(n > 0, "{table} holds rows of {user}");
        }
    }
    (alice, bob, logins)
}

async fn count_as(db: &Db, scope: Scope<'_>, table: &str) -> i64 {
    let conn = db.read_as(scope).await.expect("scoped read");
    scalar_i64(&conn, &format!("SELECT count(*) FROM {table}")).await
}

/// The URL of the app's database for the service's login role.
async fn service_url(app: &TestApp) -> String {
    let name: String = app
        .app_db
        .conn()
        .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT current_database()::text"))
        .await
        .expect("query")
        .expect("row")
        .try_get_by_index(0)
        .expect("name");
    let admin = crate::helpers::postgres_admin_url();
    let (scheme, rest) = admin.split_once("//").expect("url");
    let host = rest.split_once('@').map_or(rest, |(_, h)| h).rsplit_once('/').map_or(rest, |(h, _)| h);
    format!("{scheme}//{}@{host}/{name}", crate::helpers::APP_LOGIN)
}

async fn owner_count(app: &TestApp, table: &str, user: Uuid) -> i64 {
    scalar_i64(app.app_db.conn(), &format!("SELECT count(*) FROM {table} WHERE user_id = '{user}'")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_with_row_level_security_in_force() {
    let app = TestApp::spawn(DbKind::Postgres, CacheKind::Memory).await;
    let conn = app.service_db.conn();
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT rolsuper, rolbypassrls, current_user::text FROM pg_roles WHERE rolname = current_user",
        ))
        .await
        .expect("query")
        .expect("row");
    let (superuser, bypass, name): (bool, bool, String) =
        (row.try_get_by_index(0).expect("a"), row.try_get_by_index(1).expect("b"), row.try_get_by_index(2).expect("c"));
    assert!(!superuser && !bypass, "the service's role {name} is held by the policies");
    assert_eq!(name, crate::helpers::APP_LOGIN);
    for table in TABLES {
        let row = conn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = '{table}'"),
            ))
            .await
            .expect("query")
            .expect("row");
        let (on, forced): (bool, bool) =
            (row.try_get_by_index(0).expect("on"), row.try_get_by_index(1).expect("forced"));
        assert!(on && forced, "{table}: enabled {on}, forced {forced}");
    }
    // The audit restrictions of the app role are still there.
    for sql in ["UPDATE audit_events SET outcome = 'x'", "DELETE FROM audit_events"] {
        let err = conn.execute_unprepared(sql).await.expect_err(sql);
        assert!(err.to_string().contains("permission denied"), "{sql}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_forgets_its_user_sees_no_foreign_rows() {
    let app = TestApp::spawn(DbKind::Postgres, CacheKind::Memory).await;
    let (alice, bob, logins) = two_users(&app).await;
    let db = &app.service_db;
    for table in TABLES {
        // No setting at all: nothing.
        assert_eq!(scalar_i64(db.conn(), &format!("SELECT count(*) FROM {table}")).await, 0, "{table} unscoped");
        // Alice's scope, no WHERE: exactly her rows.
        let conn = db.read_as(Scope::User(alice)).await.expect("scoped");
        let foreign = scalar_i64(&conn, &format!("SELECT count(*) FROM {table} WHERE user_id <> '{alice}'")).await;
        assert_eq!(foreign, 0, "{table}: another user's rows under alice's scope");
        let all = scalar_i64(&conn, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(all, owner_count(&app, table, alice).await, "{table}: all of alice's rows");
        drop(conn);
        // Writes without a WHERE reach only her rows, and cannot hand a row
        // to someone else.
        let txn = db.begin_write_as(Scope::User(alice)).await.expect("txn");
        let touched = txn
            .execute_unprepared(&format!("UPDATE {table} SET user_id = user_id"))
            .await
            .expect("update")
            .rows_affected();
        assert_eq!(i64::try_from(touched).expect("n"), all, "{table}: the update touched alice's rows only");
        let err = txn
            .execute_unprepared(&format!("UPDATE {table} SET user_id = '{bob}'"))
            .await
            .expect_err("moving rows to another user");
        assert!(err.to_string().contains("row-level security"), "{table}: {err}");
        drop(txn);
        let txn = db.begin_write_as(Scope::User(alice)).await.expect("txn");
        txn.execute_unprepared(&format!("DELETE FROM {table}")).await.expect("delete");
        drop(txn); // rolled back
        assert!(owner_count(&app, table, bob).await > 0, "{table}: bob's rows survive");
    }
    // The settings are transaction-local: on a pool of one connection, the
    // statement after a scoped transaction (dropped or committed) sees
    // nothing again.
    let url = service_url(&app).await;
    let options = latchkey::store::db::DbOptions { max_connections: 1, ..crate::helpers::db_options() };
    let one = Db::connect(&url, &options).await.expect("one connection");
    for commit in [false, true] {
        let txn = one.begin_write_as(Scope::User(alice)).await.expect("txn");
        assert!(scalar_i64(&*txn, "SELECT count(*) FROM sessions").await > 0);
        if commit {
            txn.commit().await.expect("commit");
        } else {
            drop(txn);
        }
        assert_eq!(scalar_i64(one.conn(), "SELECT count(*) FROM sessions").await, 0, "after commit={commit}");
        let conn = one.read_as(Scope::Token("0")).await.expect("scoped");
        assert_eq!(scalar_i64(&conn, "SELECT count(*) FROM sessions").await, 0, "a new scope replaces the old");
    }
    one.close().await;
    // Nothing was committed: both still refresh (a database read and write
    // under each one's own scope).
    for s in logins {
        let refreshed = app.refreshed(&s.refresh).await;
        assert_eq!(app.whoami(&refreshed.token).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cross_user_lookup_sees_only_what_its_setting_names() {
    let app = TestApp::spawn(DbKind::Postgres, CacheKind::Memory).await;
    let (alice, bob, _) = two_users(&app).await;
    let db = &app.service_db;
    let owner = app.app_db.conn();
    let session = sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(alice))
        .filter(sessions::Column::RevokedAt.is_null())
        .one(owner)
        .await
        .expect("query")
        .expect("alice's session");
    let refresh = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::UserId.eq(alice))
        .filter(refresh_tokens::Column::RotatedAt.is_null())
        .one(owner)
        .await
        .expect("query")
        .expect("alice's refresh token");
    let device = session.device_id.clone().expect("the session's device");
    let device_hash = entity::devices::Entity::find_by_id(device.clone())
        .one(owner)
        .await
        .expect("query")
        .expect("alice's device")
        .token_hash
        .expect("a device credential");
    let reset_hash = "1".repeat(64);

    // (scope, table, rows it must see): every other table shows nothing.
    let expectations: Vec<(Scope<'_>, Vec<(&str, i64)>)> = vec![
        (Scope::Token(&session.token_hash), vec![("sessions", 1), ("devices", 1)]),
        (Scope::Token(&refresh.token_hash), vec![("refresh_tokens", 1), ("sessions", 1), ("devices", 1)]),
        (Scope::Token(&reset_hash), vec![("reset_tokens", 1)]),
        (Scope::Username("alice"), vec![("opaque_credentials", 1)]),
        (Scope::Device(&device), vec![("devices", 1)]),
        // A device credential's hash names that device alone; login/start
        // reads by username and by that hash at once.
        (Scope::Token(&device_hash), vec![("devices", 1)]),
        (
            Scope::Login { username: "alice", token_hash: Some(&device_hash) },
            vec![("opaque_credentials", 1), ("devices", 1)],
        ),
        (Scope::Login { username: "alice", token_hash: None }, vec![("opaque_credentials", 1)]),
        (Scope::Task(Task::Directory), vec![("totp_credentials", 2)]),
        (
            Scope::Task(Task::Reencrypt),
            vec![("opaque_credentials", 2), ("totp_credentials", 2), ("webauthn_credentials", 2)],
        ),
    ];
    for (scope, visible) in expectations {
        for table in TABLES {
            let expected = visible.iter().find(|(t, _)| t == table).map_or(0, |(_, n)| *n);
            assert_eq!(count_as(db, scope, table).await, expected, "{scope:?} on {table}");
        }
    }
    // Lookups by token see alice's rows only.
    let conn = db.read_as(Scope::Token(&session.token_hash)).await.expect("scoped");
    let foreign = scalar_i64(&conn, &format!("SELECT count(*) FROM devices WHERE user_id <> '{alice}'")).await;
    assert_eq!(foreign, 0);
    drop(conn);
    // Maintenance sees every user's sessions, tokens and devices, and no
    // credential.
    for table in TABLES {
        let total = owner_count(&app, table, alice).await + owner_count(&app, table, bob).await;
        let expected = match *table {
            "sessions" | "refresh_tokens" | "reset_tokens" | "devices" => total,
            _ => 0,
        };
        assert_eq!(count_as(db, Scope::Task(Task::Maintenance), table).await, expected, "maintenance on {table}");
        assert_eq!(count_as(db, Scope::Task(Task::Backup), table).await, total, "backup on {table}");
    }
    // Read-only scopes write nothing.
    for (scope, table) in [
        (Scope::Task(Task::Reencrypt), "opaque_credentials"),
        (Scope::Task(Task::Directory), "totp_credentials"),
        (Scope::Task(Task::Backup), "sessions"),
        (Scope::Token(&session.token_hash), "sessions"),
        (Scope::Username("alice"), "opaque_credentials"),
        (Scope::Device(&device), "devices"),
    ] {
        let txn = db.begin_write_as(scope).await.expect("txn");
        let n = txn.execute_unprepared(&format!("DELETE FROM {table}")).await.expect("delete").rows_affected();
        assert_eq!(n, 0, "{scope:?} deleted from {table}");
    }
    // Maintenance deletes but never rewrites: no trust changed, no
    // session revived or handed to someone else.
    let txn = db.begin_write_as(Scope::Task(Task::Maintenance)).await.expect("txn");
    let n = txn.execute_unprepared("UPDATE devices SET trust = 'trusted'").await.expect("update").rows_affected();
    assert_eq!(n, 0, "maintenance updated devices");
    let n = txn.execute_unprepared("UPDATE sessions SET revoked_at = NULL").await.expect("update").rows_affected();
    assert_eq!(n, 0, "maintenance updated sessions");
    drop(txn);
    // A setting's value is data, never SQL: quotes and statements in it
    // find nothing and widen nothing.
    for hostile in
        ["x' OR true --", "alice'); SELECT set_config('latchkey.scope', 'backup', true); --", "alice\\', 'x'", "ålice"]
    {
        for scope in [Scope::Token(hostile), Scope::Username(hostile), Scope::Device(hostile)] {
            for table in TABLES {
                assert_eq!(count_as(db, scope, table).await, 0, "{scope:?} on {table}");
            }
        }
    }
}

/// Every plan node's type, subplans included.
fn node_types(plan: &Value, out: &mut Vec<String>) {
    if let Some(t) = plan.get("Node Type").and_then(Value::as_str) {
        out.push(t.to_owned());
    }
    for child in plan.get("Plans").and_then(Value::as_array).into_iter().flatten() {
        node_types(child, out);
    }
}

async fn plan_of<C: ConnectionTrait>(conn: &C, stmt: &Statement) -> Vec<String> {
    let explain = Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("EXPLAIN (FORMAT JSON) {}", stmt.sql),
        stmt.values.clone().map(|v| v.0).unwrap_or_default(),
    );
    let row = conn.query_one_raw(explain).await.expect("explain").expect("a plan");
    let json: Value = row.try_get_by_index(0).expect("json plan");
    let mut nodes = Vec::new();
    node_types(&json[0]["Plan"], &mut nodes);
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policies_add_no_sequential_scan_to_whoami_miss_and_login() {
    let app = TestApp::spawn(DbKind::Postgres, CacheKind::Memory).await;
    let (alice, _, _) = two_users(&app).await;
    // Enough users, sessions, devices and credentials that a scan would
    // show (the planner rightly scans a table of a few rows): 5,000 users
    // with two sessions each.
    app.app_db
        .conn()
        .execute_unprepared(
            "INSERT INTO users (id, username, created_at, updated_at, failed_attempts)
               SELECT gen_random_uuid(), 'u' || g, now(), now(), 0 FROM generate_series(1, 5000) g;
             INSERT INTO opaque_credentials (user_id, key_id, ciphertext, created_at, updated_at)
               SELECT id, gen_random_uuid(), 'x', now(), now() FROM users WHERE username LIKE 'u%';
             INSERT INTO totp_credentials (user_id, key_id, ciphertext, created_at, updated_at)
               SELECT id, gen_random_uuid(), 'x', now(), now() FROM users WHERE username LIKE 'u%';
             INSERT INTO devices (id, user_id, trust, first_seen_at, last_seen_at, failed_attempts)
               SELECT 'd' || id, id, 'unknown', now(), now(), 0 FROM users WHERE username LIKE 'u%';
             INSERT INTO sessions (id, user_id, device_id, token_hash, aal, created_at, last_seen_at, token_expires_at, expires_at)
               SELECT gen_random_uuid(), u.id, 'd' || u.id, md5(u.id::text || g) || md5(g || u.id::text), 'aal1',
                      now(), now(), now() + interval '15 minutes', now() + interval '30 days'
               FROM users u, generate_series(1, 2) g WHERE u.username LIKE 'u%';
             INSERT INTO refresh_tokens (id, session_id, user_id, token_hash, created_at, expires_at)
               SELECT gen_random_uuid(), s.id, s.user_id, md5(s.token_hash) || md5(s.id::text), now(), s.expires_at
               FROM sessions s;
             ANALYZE",
        )
        .await
        .expect("fill the tables");
    let owner = app.app_db.conn();
    let session = sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(alice))
        .one(owner)
        .await
        .expect("query")
        .expect("a session");
    let refresh = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::UserId.eq(alice))
        .one(owner)
        .await
        .expect("query")
        .expect("a refresh token");
    let pg = DbBackend::Postgres;
    let db = &app.service_db;

    // The detector sees a scan where one is due: a filter on a column with
    // no index, over tables this size, is planned as one.
    let conn = db.read_as(Scope::Task(Task::Maintenance)).await.expect("scoped");
    let unindexed = sessions::Entity::find().filter(sessions::Column::Ip.eq("192.0.2.1")).build(pg);
    assert!(plan_of(&conn, &unindexed).await.contains(&"Seq Scan".to_owned()), "the tables are big enough to scan");
    drop(conn);

    let hash = session.token_hash.as_str();
    let cases: Vec<(&str, Scope<'_>, Statement)> = vec![
        // whoami on a cache miss: the session by token, its user, its device.
        (
            "whoami: session",
            Scope::Token(hash),
            sessions::Entity::find().filter(sessions::Column::TokenHash.eq(hash)).build(pg),
        ),
        (
            "whoami: miss (unknown token)",
            Scope::Token("f00d"),
            sessions::Entity::find().filter(sessions::Column::TokenHash.eq("f00d")).build(pg),
        ),
        (
            "whoami: device name",
            Scope::Token(hash),
            devices::Entity::find()
                .select_only()
                .column(devices::Column::Id)
                .column(devices::Column::Name)
                .filter(devices::Column::Id.is_in(session.device_id.clone()))
                .build(pg),
        ),
        (
            "whoami: is current",
            Scope::Token(hash),
            sessions::Entity::find_by_id(session.id).filter(sessions::Column::TokenHash.eq(hash)).build(pg),
        ),
        // login/start: the user and credential by username.
        (
            "login: start",
            Scope::Username("alice"),
            users::Entity::find()
                .filter(users::Column::Username.eq("alice"))
                .find_also_related(opaque_credentials::Entity)
                .build(pg),
        ),
        // login/finish: the user and TOTP, then the session's transaction.
        (
            "login: finish",
            Scope::User(alice),
            users::Entity::find_by_id(alice).find_also_related(totp_credentials::Entity).build(pg),
        ),
        (
            "login: device",
            Scope::User(alice),
            devices::Entity::find_by_id(session.device_id.clone().expect("device")).build(pg),
        ),
        (
            "login: active sessions",
            Scope::User(alice),
            sessions::Entity::find()
                .select_only()
                .column(sessions::Column::Id)
                .filter(sessions::Column::UserId.eq(alice))
                .filter(sessions::Column::RevokedAt.is_null())
                .build(pg),
        ),
        (
            "refresh: token",
            Scope::Token(&refresh.token_hash),
            refresh_tokens::Entity::find()
                .filter(refresh_tokens::Column::TokenHash.eq(refresh.token_hash.clone()))
                .build(pg),
        ),
        (
            "refresh: session",
            Scope::User(alice),
            sessions::Entity::find_by_id(session.id).filter(sessions::Column::UserId.eq(alice)).build(pg),
        ),
        (
            "whoami: touch",
            Scope::User(alice),
            sessions::Entity::update_many()
                .col_expr(sessions::Column::LastSeenAt, Expr::val(chrono::Utc::now()))
                .filter(sessions::Column::Id.eq(session.id))
                .filter(sessions::Column::TokenHash.eq(hash))
                .build(pg),
        ),
    ];
    for (name, scope, stmt) in cases {
        let conn = db.read_as(scope).await.expect("scoped");
        let nodes = plan_of(&conn, &stmt).await;
        assert!(!nodes.iter().any(|n| n == "Seq Scan"), "{name}: {nodes:?}\n{}", stmt.sql);
    }
}

/// Scoped transactions run on connections of their own, kept per thread:
/// under concurrency from several threads they stay within the pool's
/// size (lent and idle together), every one ends its transaction (none is
/// left idle in one), and none waits forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scoped_connections_stay_within_the_pool_size() {
    let app = TestApp::spawn(DbKind::Postgres, CacheKind::Memory).await;
    let (alice, _, _) = two_users(&app).await;
    let tag = format!("lk_pool_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let url = format!("{}?application_name={tag}", service_url(&app).await);
    let options = latchkey::store::db::DbOptions { max_connections: 2, ..crate::helpers::db_options() };
    let db = Db::connect(&url, &options).await.expect("pool of two");
    let count = format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{tag}'");
    let in_transaction = format!("{count} AND state LIKE 'idle in transaction%'");

    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sampling, owner, count) = (sampling.clone(), app.app_db.clone(), count.clone());
        tokio::spawn(async move {
            let mut most = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(scalar_i64(owner.conn(), &count).await);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            most
        })
    };
    let mut tasks = Vec::new();
    for i in 0..48 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                // A write, committed.
                let txn = db.begin_write_as(Scope::User(alice)).await.expect("write");
                assert!(scalar_i64(&*txn, "SELECT count(*) FROM sessions").await > 0);
                txn.commit().await.expect("commit");
            } else {
                // A read, dropped (rolled back off the caller's path), some
                // held across a sleep.
                let conn = db.read_as(Scope::User(alice)).await.expect("read");
                assert!(scalar_i64(&conn, "SELECT count(*) FROM sessions").await > 0);
                if i % 3 == 1 {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("every transaction gets a connection");
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.await.expect("sampler");
    // Two scoped connections and the sea-orm pool's one (its minimum).
    assert!(most <= 3, "{most} connections open at once for a pool of two");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(scalar_i64(app.app_db.conn(), &in_transaction).await, 0, "a connection was left in a transaction");
    db.close().await;
}
