//! Users and their OPAQUE credentials.

use chrono::{DateTime, Utc};
use entity::{opaque_credentials, totp_credentials, user_roles, users, webauthn_credentials};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use super::StoreError;
use super::attempts::{self, Columns, Counted, LockPlan};
use super::audit::{self, NewAuditEvent};
use super::db::{Db, Scope};
use super::devices::{self, DeviceRecord};

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: Uuid,
    pub username: String,
    pub created_at: DateTime<Utc>,
    pub locked_until: Option<DateTime<Utc>>,
    pub lock_reason: Option<String>,
    pub failed_attempts: i32,
}

/// `lock_reason` of a lock caused by failed attempts (not by an admin).
pub const AUTOMATIC_LOCK: &str = "failed_attempts";
/// `lock_reason` of the lock at the failure cap: only time or an admin
/// lifts it; a trusted device's own scope is not affected.
pub const HARD_LOCK: &str = "failed_attempts_cap";

impl From<users::Model> for UserRecord {
    fn from(m: users::Model) -> Self {
        Self {
            id: m.id,
            username: m.username,
            created_at: m.created_at,
            locked_until: m.locked_until,
            lock_reason: m.lock_reason,
            failed_attempts: m.failed_attempts,
        }
    }
}

pub async fn find_by_username(db: &Db, username: &str) -> Result<Option<UserRecord>> {
    Ok(users::Entity::find().filter(users::Column::Username.eq(username)).one(db.conn()).await?.map(Into::into))
}

/// The sealed OPAQUE record: (key id, ciphertext, version).
pub type SealedCredential = (Uuid, String, DateTime<Utc>);

/// login/start's reads, in one transaction: the user with its sealed
/// record, and the device whose credential hash the client presented when
/// it is one of this user's.
pub async fn find_for_login(
    db: &Db,
    username: &str,
    device_token_hash: Option<&str>,
) -> Result<Option<(UserRecord, Option<SealedCredential>, Option<DeviceRecord>)>> {
    // The user id is not known yet: the record is reached by username, the
    // device by its credential's hash.
    let conn = db.read_as(Scope::Login { username, token_hash: device_token_hash }).await?;
    let found = users::Entity::find()
        .filter(users::Column::Username.eq(username))
        .find_also_related(opaque_credentials::Entity)
        .one(&conn)
        .await?;
    // The device is looked up whether or not the name is an account's, so
    // the time taken does not tell; it counts only when it is this user's.
    let device = match device_token_hash {
        Some(hash) => devices::find_by_token_hash_in(&conn, hash).await?,
        None => None,
    };
    let Some((user, credential)) = found else { return Ok(None) };
    let device = device.filter(|d| d.user_id == user.id);
    Ok(Some((user.into(), credential.map(|c| (c.key_id, c.ciphertext, c.updated_at)), device)))
}

/// login/finish's reads, in one transaction: the user, whether TOTP is on
/// and whether it has a passkey, and its device: the one whose credential
/// hash the client presents now when it is this user's, else the one
/// recognized at login/start.
pub async fn find_for_finish(
    db: &Db,
    id: Uuid,
    device_token_hash: Option<&str>,
    start_device: Option<&str>,
) -> Result<Option<(UserRecord, bool, bool, Option<DeviceRecord>)>> {
    let conn = db.read_as(Scope::User(id)).await?;
    let presented = match device_token_hash {
        Some(hash) => devices::find_by_token_in(&conn, id, hash).await?,
        None => None,
    };
    let device = match (presented, start_device) {
        (Some(device), _) => Some(device),
        (None, Some(device_id)) => devices::find_in(&conn, id, device_id).await?,
        (None, None) => None,
    };
    Ok(factors_in(&conn, id).await?.map(|(user, totp, passkey)| (user, totp, passkey, device)))
}

async fn factors_in(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<(UserRecord, bool, bool)>> {
    let Some((user, totp)) =
        users::Entity::find_by_id(id).find_also_related(totp_credentials::Entity).one(conn).await?
    else {
        return Ok(None);
    };
    let passkey = webauthn_credentials::Entity::find()
        .select_only()
        .column(webauthn_credentials::Column::Id)
        .filter(webauthn_credentials::Column::UserId.eq(id))
        .into_tuple::<Uuid>()
        .one(conn)
        .await?;
    Ok(Some((user.into(), totp.is_some_and(|t| t.confirmed_at.is_some()), passkey.is_some())))
}

pub async fn find(db: &Db, id: Uuid) -> Result<Option<UserRecord>> {
    Ok(users::Entity::find_by_id(id).one(db.conn()).await?.map(Into::into))
}

pub async fn exists(db: &Db, username: &str) -> Result<bool> {
    Ok(users::Entity::find()
        .select_only()
        .column(users::Column::Id)
        .filter(users::Column::Username.eq(username))
        .into_tuple::<Uuid>()
        .one(db.conn())
        .await?
        .is_some())
}

/// The sealed OPAQUE registration record: (key id, ciphertext).
/// The sealed OPAQUE record (key id, ciphertext) and its version (when it
/// was last replaced).
pub async fn credential(db: &Db, user_id: Uuid) -> Result<Option<(Uuid, String, DateTime<Utc>)>> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    Ok(opaque_credentials::Entity::find_by_id(user_id)
        .one(&conn)
        .await?
        .map(|m| (m.key_id, m.ciphertext, m.updated_at)))
}

pub async fn roles(db: &Db, user_id: Uuid) -> Result<Vec<String>> {
    Ok(user_roles::Entity::find()
        .select_only()
        .column(user_roles::Column::Role)
        .filter(user_roles::Column::UserId.eq(user_id))
        .into_tuple::<String>()
        .all(db.conn())
        .await?)
}

/// Creates a user with its sealed credential, and audits it, atomically.
/// [`StoreError::Conflict`] if the username is taken.
pub async fn register(
    db: &Db,
    id: Uuid,
    username: &str,
    sealed_record: (Uuid, String),
    now: DateTime<Utc>,
    audit_event: NewAuditEvent,
) -> Result<()> {
    let txn = db.begin_write_as(Scope::User(id)).await?;
    users::Entity::insert(users::ActiveModel {
        id: Set(id),
        username: Set(username.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        locked_until: Set(None),
        lock_reason: Set(None),
        failed_attempts: Set(0),
        last_failure_at: Set(None),
    })
    .exec_without_returning(&*txn)
    .await?;
    opaque_credentials::Entity::insert(opaque_credentials::ActiveModel {
        user_id: Set(id),
        key_id: Set(sealed_record.0),
        ciphertext: Set(sealed_record.1),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(&*txn)
    .await?;
    audit::append_in(&txn, &[audit_event]).await?;
    txn.commit().await
}

/// Counts a failed authentication in the account's anonymous scope (one
/// statement with its lock; see `attempts`).
pub async fn count_failure(db: &Db, id: Uuid, plan: &LockPlan, only_if_unlocked: bool) -> Result<Counted> {
    let cols = Columns {
        id: users::Column::Id,
        failed_attempts: users::Column::FailedAttempts,
        last_failure_at: users::Column::LastFailureAt,
        locked_until: users::Column::LockedUntil,
        lock_reason: Some(users::Column::LockReason),
    };
    attempts::count::<users::Entity>(db, None, &cols, id.into(), plan, only_if_unlocked, |m| m.failed_attempts).await
}

/// Records a failure without the schedule (tests and tools that set up a
/// run of failures).
pub async fn record_failure(db: &Db, id: Uuid, now: DateTime<Utc>) -> Result<i32> {
    use sea_orm::ExprTrait as _;
    use sea_orm::sea_query::Expr;
    users::Entity::update_many()
        .col_expr(users::Column::FailedAttempts, Expr::col(users::Column::FailedAttempts).add(1))
        .col_expr(users::Column::LastFailureAt, Expr::val(now))
        .filter(users::Column::Id.eq(id))
        .exec(db.conn())
        .await?;
    Ok(find(db, id).await?.map_or(0, |u| u.failed_attempts))
}

/// A success ends the run of failures and lifts an automatic lock (never
/// an admin's).
pub async fn reset_failures(db: &Db, id: Uuid) -> Result<()> {
    reset_failures_in(db.conn(), id).await
}

/// [`reset_failures`] in a transaction: one statement (every SET reads the
/// row as it was, on both backends).
pub(crate) async fn reset_failures_in<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<()> {
    conn.execute(&reset_failures_statement(id)).await?;
    Ok(())
}

/// The statement of [`reset_failures_in`], for batching with others.
pub(crate) fn reset_failures_statement(id: Uuid) -> sea_orm::sea_query::UpdateStatement {
    use sea_orm::sea_query::{CaseStatement, Expr};
    use sea_orm::{Condition, QueryTrait as _};
    let automatic = || users::Column::LockReason.is_in([AUTOMATIC_LOCK, HARD_LOCK]);
    let locked_until: Expr = CaseStatement::new()
        .case(automatic(), Expr::val(Option::<DateTime<Utc>>::None))
        .finally(Expr::col(users::Column::LockedUntil))
        .into();
    let lock_reason: Expr = CaseStatement::new()
        .case(automatic(), Expr::val(Option::<String>::None))
        .finally(Expr::col(users::Column::LockReason))
        .into();
    users::Entity::update_many()
        .col_expr(users::Column::FailedAttempts, Expr::val(0))
        .col_expr(users::Column::LockedUntil, locked_until)
        .col_expr(users::Column::LockReason, lock_reason)
        .filter(users::Column::Id.eq(id))
        .filter(Condition::any().add(users::Column::FailedAttempts.ne(0)).add(automatic()))
        .into_query()
}

/// Locks the account until `until` (an admin's lock is never shortened by
/// an automatic one).
pub async fn lock(db: &Db, id: Uuid, until: DateTime<Utc>, reason: &str) -> Result<()> {
    use sea_orm::Condition;
    use sea_orm::sea_query::Expr;
    let mut query = users::Entity::update_many()
        .col_expr(users::Column::LockedUntil, Expr::val(until))
        .col_expr(users::Column::LockReason, Expr::val(reason))
        .filter(users::Column::Id.eq(id));
    if reason == AUTOMATIC_LOCK || reason == HARD_LOCK {
        query = query.filter(
            Condition::any()
                .add(users::Column::LockReason.is_null())
                .add(users::Column::LockReason.is_in([AUTOMATIC_LOCK, HARD_LOCK])),
        );
    }
    query.exec(db.conn()).await?;
    Ok(())
}
