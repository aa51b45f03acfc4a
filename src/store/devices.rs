//! Devices users log in from, each known by the hash of its device
//! credential (`lk_d_`); the fingerprint a client claims is kept only as a
//! keyed hash, to notice a credential used from elsewhere.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::devices;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::StoreError;
use super::attempts::{self, Columns, Counted, LockPlan};
use super::db::{Db, Scope};
use crate::domain::states::Trust;

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub id: String,
    pub user_id: Uuid,
    pub name: Option<String>,
    pub trust: Trust,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub last_ip: Option<String>,
    pub user_agent: Option<String>,
    pub fingerprint_hash: Option<String>,
    /// Consecutive failed logins in this device's own scope.
    pub failed_attempts: i32,
    pub locked_until: Option<DateTime<Utc>>,
}

impl TryFrom<devices::Model> for DeviceRecord {
    type Error = StoreError;

    fn try_from(m: devices::Model) -> Result<Self> {
        let trust = m.trust.parse().map_err(|e| StoreError::Corrupt(format!("device {}: {e}", m.id)))?;
        Ok(Self {
            id: m.id,
            user_id: m.user_id,
            name: m.name,
            trust,
            first_seen_at: m.first_seen_at,
            last_seen_at: m.last_seen_at,
            last_ip: m.last_ip,
            user_agent: m.user_agent,
            fingerprint_hash: m.fingerprint_hash,
            failed_attempts: m.failed_attempts,
            locked_until: m.locked_until,
        })
    }
}

/// A sighting of a device at login.
#[derive(Debug, Clone)]
pub struct DeviceSighting {
    pub id: String,
    pub user_id: Uuid,
    pub name: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub at: DateTime<Utc>,
    /// Set for a device seen for the first time: its credential's hash and
    /// the fingerprint it claimed (keyed hash).
    pub new_credential: Option<(String, Option<String>)>,
}

/// A device of `user_id`.
pub async fn find(db: &Db, user_id: Uuid, id: &str) -> Result<Option<DeviceRecord>> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    find_in(&conn, user_id, id).await
}

/// [`find`] on a connection the caller holds (under a scope that sees it).
pub(super) async fn find_in(conn: &impl ConnectionTrait, user_id: Uuid, id: &str) -> Result<Option<DeviceRecord>> {
    devices::Entity::find_by_id(id.to_owned())
        .filter(devices::Column::UserId.eq(user_id))
        .one(conn)
        .await?
        .map(TryInto::try_into)
        .transpose()
}

/// A device whoever's it is (an admin names it by id alone).
pub async fn find_any(db: &Db, id: &str) -> Result<Option<DeviceRecord>> {
    // No stored text holds a NUL (Postgres text cannot), and the setting
    // could not carry one.
    if id.contains('\0') {
        return Ok(None);
    }
    let conn = db.read_as(Scope::Device(id)).await?;
    devices::Entity::find_by_id(id.to_owned()).one(&conn).await?.map(TryInto::try_into).transpose()
}

pub async fn list(db: &Db, user_id: Uuid) -> Result<Vec<DeviceRecord>> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    devices::Entity::find()
        .filter(devices::Column::UserId.eq(user_id))
        .order_by_desc(devices::Column::LastSeenAt)
        .all(&conn)
        .await?
        .into_iter()
        .map(TryInto::try_into)
        .collect()
}

/// Names of the given devices.
pub(crate) async fn list_names<C: ConnectionTrait>(
    conn: &C,
    ids: Vec<String>,
) -> Result<HashMap<String, Option<String>>> {
    Ok(devices::Entity::find()
        .select_only()
        .column(devices::Column::Id)
        .column(devices::Column::Name)
        .filter(devices::Column::Id.is_in(ids))
        .into_tuple::<(String, Option<String>)>()
        .all(conn)
        .await?
        .into_iter()
        .collect())
}

/// Inserts the device, or refreshes its last-seen data (trust untouched).
/// `ends_failures`: a success on this device also ends its run of failures
/// and its lock (in this statement: one statement may change a row once).
pub(crate) fn upsert_statement(s: &DeviceSighting, ends_failures: bool) -> sea_orm::sea_query::InsertStatement {
    use sea_orm::QueryTrait as _;
    let mut update = vec![devices::Column::LastSeenAt, devices::Column::LastIp, devices::Column::UserAgent];
    if s.name.is_some() {
        update.push(devices::Column::Name);
    }
    if ends_failures {
        // The inserted row's values: 0 and NULL.
        update.extend([devices::Column::FailedAttempts, devices::Column::LockedUntil]);
    }
    devices::Entity::insert(devices::ActiveModel {
        id: Set(s.id.clone()),
        user_id: Set(s.user_id),
        name: Set(s.name.clone()),
        trust: Set(Trust::Unknown.as_str().to_owned()),
        first_seen_at: Set(s.at),
        last_seen_at: Set(s.at),
        last_ip: Set(s.ip.clone()),
        user_agent: Set(s.user_agent.clone()),
        token_hash: Set(s.new_credential.as_ref().map(|(token, _)| token.clone())),
        fingerprint_hash: Set(s.new_credential.as_ref().and_then(|(_, fp)| fp.clone())),
        failed_attempts: Set(0),
        last_failure_at: Set(None),
        locked_until: Set(None),
    })
    .on_conflict(OnConflict::column(devices::Column::Id).update_columns(update).to_owned())
    .into_query()
}

/// Deletes a device row, unless it is blocked (deleting it would lift the
/// block).
pub(crate) async fn delete_unless_blocked<C: ConnectionTrait>(conn: &C, user_id: Uuid, id: &str) -> Result<bool> {
    let result = devices::Entity::delete_many()
        .filter(devices::Column::Id.eq(id))
        .filter(devices::Column::UserId.eq(user_id))
        .filter(devices::Column::Trust.ne(Trust::Blocked.as_str()))
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Sets a device's trust, with its audit event, atomically.
/// `unless_blocked`: the user's own change, which never lifts a block (an
/// admin's block landing concurrently wins). `false` when nothing changed.
pub async fn set_trust(
    db: &Db,
    user_id: Uuid,
    id: &str,
    trust: Trust,
    unless_blocked: bool,
    events: &[super::audit::NewAuditEvent],
) -> Result<bool> {
    use sea_orm::sea_query::Expr;
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    let mut update = devices::Entity::update_many()
        .col_expr(devices::Column::Trust, Expr::val(trust.as_str()))
        .filter(devices::Column::Id.eq(id))
        .filter(devices::Column::UserId.eq(user_id));
    if unless_blocked {
        update = update.filter(devices::Column::Trust.ne(Trust::Blocked.as_str()));
    }
    if update.exec(&*txn).await?.rows_affected == 0 {
        return Ok(false);
    }
    super::audit::append_in(&txn, events).await?;
    txn.commit().await?;
    Ok(true)
}

/// The device whose credential hash this is, whoever's it is, on a
/// connection the caller holds (under a scope that sees it).
pub(super) async fn find_by_token_hash_in(
    conn: &impl ConnectionTrait,
    token_hash: &str,
) -> Result<Option<DeviceRecord>> {
    devices::Entity::find()
        .filter(devices::Column::TokenHash.eq(token_hash))
        .one(conn)
        .await?
        .map(TryInto::try_into)
        .transpose()
}

/// The device of `user_id` whose credential hash this is, on a connection
/// the caller holds (under a scope that sees it).
pub(super) async fn find_by_token_in(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    token_hash: &str,
) -> Result<Option<DeviceRecord>> {
    devices::Entity::find()
        .filter(devices::Column::TokenHash.eq(token_hash))
        .filter(devices::Column::UserId.eq(user_id))
        .one(conn)
        .await?
        .map(TryInto::try_into)
        .transpose()
}

/// Counts a failed login in the device's own scope (one statement with its
/// lock; see `attempts`).
pub async fn count_failure(
    db: &Db,
    user_id: Uuid,
    id: &str,
    plan: &LockPlan,
    only_if_unlocked: bool,
) -> Result<Counted> {
    let cols = Columns {
        id: devices::Column::Id,
        failed_attempts: devices::Column::FailedAttempts,
        last_failure_at: devices::Column::LastFailureAt,
        locked_until: devices::Column::LockedUntil,
        lock_reason: None,
    };
    let scope = Some(Scope::User(user_id));
    attempts::count::<devices::Entity>(db, scope, &cols, id.into(), plan, only_if_unlocked, |m| m.failed_attempts).await
}

/// A success from the device ends its run of failures and its lock.
pub async fn reset_failures(db: &Db, user_id: Uuid, id: &str) -> Result<()> {
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    reset_failures_in(&*txn, id).await?;
    txn.commit().await
}

/// [`reset_failures`] in a transaction.
pub(crate) async fn reset_failures_in<C: ConnectionTrait>(conn: &C, id: &str) -> Result<()> {
    conn.execute(&reset_failures_statement(id)).await?;
    Ok(())
}

/// The statement of [`reset_failures_in`], for batching with others.
pub(crate) fn reset_failures_statement(id: &str) -> sea_orm::sea_query::UpdateStatement {
    use sea_orm::QueryTrait as _;
    use sea_orm::sea_query::Expr;
    devices::Entity::update_many()
        .col_expr(devices::Column::FailedAttempts, Expr::val(0))
        .col_expr(devices::Column::LockedUntil, Expr::val(Option::<DateTime<Utc>>::None))
        .filter(devices::Column::Id.eq(id))
        .filter(devices::Column::FailedAttempts.ne(0))
        .into_query()
}
