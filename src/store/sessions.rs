//! Sessions and refresh tokens in the database, the source of truth. Every
//! change here commits before the caller answers; the Redis copy is only a
//! cache of what these rows say.

use chrono::{DateTime, Utc};
use entity::{refresh_tokens, sessions, users};
use sea_orm::sea_query::{
    Alias, CommonTableExpression, Expr, InsertStatement, LockType, Query, SubQueryStatement, WithClause,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, ExprTrait as _, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait as _,
};
use uuid::Uuid;

use super::StoreError;
use super::audit::{self, NewAuditEvent};
use super::db::{Db, Scope};
use super::devices::{self, DeviceSighting};
use crate::domain::states::{Aal, Trust};

type Result<T> = std::result::Result<T, StoreError>;

/// A session as whoami and the session list show it.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub aal: Aal,
    pub device_id: Option<String>,
    pub device_name: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    /// The last primary authentication.
    pub auth_time: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub token_expires_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub user_id: Uuid,
    pub aal: Aal,
    pub token_hash: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub token_expires_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub refresh_token_hash: String,
    pub device: Option<DeviceSighting>,
    /// The primary authentication this session stands on.
    pub auth_time: DateTime<Utc>,
    /// The run of failed attempts this login ends, reset in the same
    /// transaction.
    pub ends_failures: Option<FailureScope>,
}

/// Where a completed login ends a run of failures (see `lockout`).
#[derive(Debug, Clone)]
pub enum FailureScope {
    Account(Uuid),
    Device(String),
}

/// What a new session must still satisfy when it commits, read under row
/// locks in its transaction: an admin's lock or block that commits first is
/// seen here; one that commits later finds the session and revokes it.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    pub locked_until: Option<DateTime<Utc>>,
    pub lock_reason: Option<String>,
    /// Trust of the device the session is for, when it is a known one.
    pub device_trust: Option<Trust>,
    /// When the user's OPAQUE record was last replaced.
    pub credential_version: Option<DateTime<Utc>>,
}

/// Creates a session (recording the device sighting) and its first refresh
/// token, with audit events, in one transaction, if `admit` accepts the
/// account's and device's state read under row locks. At most `max_active`
/// sessions stay active: the oldest are revoked (`evicted`, with the
/// events `evicted_events` makes). `None` when refused (nothing written),
/// else the evicted sessions' (id, token hash).
pub async fn create(
    db: &Db,
    new: &NewSession,
    events: &[NewAuditEvent],
    admit: impl FnOnce(&Gate) -> bool,
    max_active: u32,
    evicted_events: impl FnOnce(&[Uuid]) -> Vec<NewAuditEvent>,
) -> Result<Option<Vec<(Uuid, String)>>> {
    let txn = db.begin_write_as(Scope::User(new.user_id)).await?;
    // SQLite has one writer at a time; Postgres takes the rows' locks.
    let postgres = db.backend() == sea_orm::DatabaseBackend::Postgres;
    let Some(gate) = read_gate(&txn, new, postgres).await? else { return Ok(None) };
    if !admit(&gate) {
        return Ok(None);
    }
    // The login's writes: the end of its run of failures, the device
    // sighting, the session and its refresh token.
    let mut writes: Vec<SubQueryStatement> = Vec::with_capacity(4);
    let device_ends_failures =
        |device: &DeviceSighting| matches!(&new.ends_failures, Some(FailureScope::Device(id)) if *id == device.id);
    match &new.ends_failures {
        Some(FailureScope::Account(id)) => writes.push(super::users::reset_failures_statement(*id).into()),
        Some(FailureScope::Device(_)) if new.device.as_ref().is_some_and(device_ends_failures) => {}
        Some(FailureScope::Device(id)) => writes.push(devices::reset_failures_statement(id).into()),
        None => {}
    }
    if let Some(device) = &new.device {
        writes.push(devices::upsert_statement(device, device_ends_failures(device)).into());
    }
    writes.push(insert_session_statement(new).into());
    writes.push(
        insert_refresh_statement((new.id, new.user_id), &new.refresh_token_hash, new.created_at, new.expires_at).into(),
    );
    // The eviction of the sessions beyond the cap (all active ones but the
    // newest `max_active - 1`), returning each with its current token hash
    // (a refresh that committed meanwhile changed it). The user's row is
    // locked (Postgres) or the writer slot held (SQLite), so concurrent
    // logins of one user count one after another.
    let over_cap = sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .filter(sessions::Column::UserId.eq(new.user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(new.created_at))
        .order_by_desc(sessions::Column::CreatedAt)
        .order_by_desc(sessions::Column::Id)
        // SQLite takes no OFFSET without a LIMIT.
        .limit(1 << 40)
        .offset(u64::from(max_active.saturating_sub(1)))
        .into_query();
    let eviction = sessions::Entity::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::val(new.created_at))
        .col_expr(sessions::Column::RevokedReason, Expr::val("evicted"))
        .filter(sessions::Column::Id.in_subquery(over_cap))
        .filter(sessions::Column::RevokedAt.is_null())
        .into_query()
        .returning(Query::returning().columns([sessions::Column::Id, sessions::Column::TokenHash]))
        .to_owned();
    let rows = if postgres {
        // One statement on Postgres: the writes and the eviction as CTEs.
        // The audit events below are appended at the commit. A login's
        // transaction spends 5 round trips instead of 12.
        let mut with = WithClause::new();
        for (i, write) in writes.into_iter().enumerate() {
            with.cte(CommonTableExpression::new().query(write).table_name(Alias::new(format!("w{i}"))).to_owned());
        }
        with.cte(CommonTableExpression::new().query(eviction).table_name(Alias::new("evicted")).to_owned());
        let mut evicted = Query::select();
        evicted.column(sessions::Column::Id).column(sessions::Column::TokenHash).from(Alias::new("evicted"));
        txn.query_all(&evicted.with(with)).await?
    } else {
        // SQLite, one statement after another: the eviction first, so the
        // new session is not counted against the cap.
        let rows = txn.query_all(&eviction).await?;
        for write in &writes {
            match write {
                SubQueryStatement::InsertStatement(insert) => txn.execute(insert).await?,
                SubQueryStatement::UpdateStatement(update) => txn.execute(update).await?,
                _ => return Err(StoreError::Database("unexpected statement in a login's writes".into())),
            };
        }
        rows
    };
    let evicted: Vec<(Uuid, String)> = rows
        .into_iter()
        .map(|row| Ok((row.try_get_by_index::<Uuid>(0)?, row.try_get_by_index::<String>(1)?)))
        .collect::<std::result::Result<_, sea_orm::DbErr>>()?;
    let ids: Vec<Uuid> = evicted.iter().map(|(id, _)| *id).collect();
    let mut all_events = if ids.is_empty() { Vec::new() } else { evicted_events(&ids) };
    all_events.extend_from_slice(events);
    audit::append_in(&txn, &all_events).await?;
    txn.commit().await?;
    Ok(Some(evicted))
}

/// The account's and device's state a new session must satisfy, read under
/// row locks in one query; `None` when the user is gone.
async fn read_gate(txn: &super::db::WriteTxn, new: &NewSession, postgres: bool) -> Result<Option<Gate>> {
    use entity::{devices as device_rows, opaque_credentials as credentials};
    let mut query = Query::select();
    query
        .column((users::Entity, users::Column::LockedUntil))
        .column((users::Entity, users::Column::LockReason))
        .column((credentials::Entity, credentials::Column::UpdatedAt))
        .from(users::Entity)
        .left_join(
            credentials::Entity,
            Expr::col((credentials::Entity, credentials::Column::UserId)).equals((users::Entity, users::Column::Id)),
        )
        .and_where(Expr::col((users::Entity, users::Column::Id)).eq(new.user_id));
    match new.device.as_ref().filter(|d| d.new_credential.is_none()) {
        Some(device) => {
            let mut trust = Query::select();
            trust
                .column(device_rows::Column::Trust)
                .from(device_rows::Entity)
                .and_where(Expr::col(device_rows::Column::Id).eq(device.id.clone()));
            if postgres {
                trust.lock(LockType::Update);
            }
            query.expr(Expr::SubQuery(None, Box::new(trust.into())));
        }
        None => {
            query.expr(Expr::cust("NULL"));
        }
    }
    if postgres {
        query.lock_with_tables(LockType::Update, [users::Entity]);
    }
    let Some(row) = txn.query_one(&query).await? else { return Ok(None) };
    let device_trust = match row.try_get_by_index::<Option<String>>(3)? {
        Some(trust) => Some(trust.parse().map_err(|e| StoreError::Corrupt(format!("device trust: {e}")))?),
        None => None,
    };
    Ok(Some(Gate {
        locked_until: row.try_get_by_index(0)?,
        lock_reason: row.try_get_by_index(1)?,
        device_trust,
        credential_version: row.try_get_by_index(2)?,
    }))
}

/// A session's row, as inserted.
fn insert_session_statement(new: &NewSession) -> InsertStatement {
    sessions::Entity::insert(sessions::ActiveModel {
        id: Set(new.id),
        user_id: Set(new.user_id),
        device_id: Set(new.device.as_ref().map(|d| d.id.clone())),
        token_hash: Set(new.token_hash.clone()),
        aal: Set(new.aal.as_str().to_owned()),
        ip: Set(new.ip.clone()),
        user_agent: Set(new.user_agent.clone()),
        created_at: Set(new.created_at),
        // Microseconds, as Postgres keeps them (SQLite would keep more).
        auth_time: Set(Some(chrono::SubsecRound::trunc_subsecs(new.auth_time, 6))),
        last_seen_at: Set(new.created_at),
        token_expires_at: Set(new.token_expires_at),
        expires_at: Set(new.expires_at),
        revoked_at: Set(None),
        revoked_reason: Set(None),
    })
    .into_query()
}

fn insert_refresh_statement(
    (session_id, user_id): (Uuid, Uuid),
    hash: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> InsertStatement {
    refresh_tokens::Entity::insert(refresh_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        session_id: Set(session_id),
        user_id: Set(user_id),
        token_hash: Set(hash.to_owned()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        rotated_at: Set(None),
    })
    .into_query()
}

async fn insert_refresh(
    txn: &super::db::WriteTxn,
    (session_id, user_id): (Uuid, Uuid),
    hash: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    txn.execute(&insert_refresh_statement((session_id, user_id), hash, now, expires_at)).await?;
    Ok(())
}

/// The records of `rows`, read on `conn` (the scope the rows were read in
/// also shows their devices).
async fn to_records<C: ConnectionTrait>(conn: &C, rows: Vec<sessions::Model>) -> Result<Vec<SessionRecord>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let user_ids: Vec<Uuid> = rows.iter().map(|r| r.user_id).collect();
    let names: std::collections::HashMap<Uuid, String> = users::Entity::find()
        .select_only()
        .column(users::Column::Id)
        .column(users::Column::Username)
        .filter(users::Column::Id.is_in(user_ids))
        .into_tuple::<(Uuid, String)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    let device_ids: Vec<String> = rows.iter().filter_map(|r| r.device_id.clone()).collect();
    let device_names: std::collections::HashMap<String, Option<String>> =
        if device_ids.is_empty() { Default::default() } else { devices::list_names(conn, device_ids).await? };
    rows.into_iter()
        .map(|r| {
            let aal = r.aal.parse().map_err(|e| StoreError::Corrupt(format!("session {}: {e}", r.id)))?;
            Ok(SessionRecord {
                username: names.get(&r.user_id).cloned().unwrap_or_default(),
                device_name: r.device_id.as_ref().and_then(|d| device_names.get(d).cloned().flatten()),
                id: r.id,
                user_id: r.user_id,
                aal,
                device_id: r.device_id,
                ip: r.ip,
                user_agent: r.user_agent,
                token_hash: r.token_hash,
                created_at: r.created_at,
                auth_time: r.auth_time.unwrap_or(r.created_at),
                last_seen_at: r.last_seen_at,
                token_expires_at: r.token_expires_at,
                expires_at: r.expires_at,
                revoked_at: r.revoked_at,
            })
        })
        .collect()
}

/// The session whose current token has this hash, revoked or not (read
/// under that token's scope: the user is not known yet).
pub async fn find_by_token_hash(db: &Db, token_hash: &str) -> Result<Option<SessionRecord>> {
    let conn = db.read_as(Scope::Token(token_hash)).await?;
    let row = sessions::Entity::find().filter(sessions::Column::TokenHash.eq(token_hash)).one(&conn).await?;
    Ok(to_records(&conn, row.into_iter().collect()).await?.pop())
}

/// A session of `user_id`.
pub async fn find(db: &Db, user_id: Uuid, id: Uuid) -> Result<Option<SessionRecord>> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    let row = sessions::Entity::find_by_id(id).filter(sessions::Column::UserId.eq(user_id)).one(&conn).await?;
    Ok(to_records(&conn, row.into_iter().collect()).await?.pop())
}

/// Whether a session of `user_id` is revoked (or gone).
pub async fn is_revoked(db: &Db, user_id: Uuid, id: Uuid) -> Result<bool> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    let revoked = sessions::Entity::find_by_id(id)
        .select_only()
        .column(sessions::Column::RevokedAt)
        .filter(sessions::Column::UserId.eq(user_id))
        .into_tuple::<Option<DateTime<Utc>>>()
        .one(&conn)
        .await?;
    // A deleted session is as good as revoked.
    Ok(revoked.is_none_or(|r| r.is_some()))
}

/// Whether the session is unrevoked and its current token has this hash.
pub async fn is_current(db: &Db, id: Uuid, token_hash: &str) -> Result<bool> {
    let conn = db.read_as(Scope::Token(token_hash)).await?;
    let found = sessions::Entity::find_by_id(id)
        .select_only()
        .column(sessions::Column::Id)
        .filter(sessions::Column::TokenHash.eq(token_hash))
        .filter(sessions::Column::RevokedAt.is_null())
        .into_tuple::<Uuid>()
        .one(&conn)
        .await?;
    Ok(found.is_some())
}

/// Active (not revoked, not expired) sessions of a user, newest first.
pub async fn list_active(db: &Db, user_id: Uuid, now: DateTime<Utc>) -> Result<Vec<SessionRecord>> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    let rows = sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(now))
        .order_by_desc(sessions::Column::CreatedAt)
        .all(&conn)
        .await?;
    to_records(&conn, rows).await
}

/// Records activity (throttled by the caller).
/// `false` when the session was revoked or its token rotated meanwhile.
pub async fn touch(db: &Db, user_id: Uuid, id: Uuid, token_hash: &str, now: DateTime<Utc>) -> Result<bool> {
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    let result = sessions::Entity::update_many()
        .col_expr(sessions::Column::LastSeenAt, Expr::val(now))
        .filter(sessions::Column::Id.eq(id))
        .filter(sessions::Column::TokenHash.eq(token_hash))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(result.rows_affected == 1)
}

/// A step-up: the session's `auth_time` moves to `auth_time` and its
/// assurance to `aal`, with `events`, if it is still live. `false` when it
/// was revoked meanwhile.
pub async fn reauthenticated(
    db: &Db,
    user_id: Uuid,
    id: Uuid,
    auth_time: DateTime<Utc>,
    aal: Aal,
    events: &[NewAuditEvent],
) -> Result<bool> {
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    let result = sessions::Entity::update_many()
        .col_expr(sessions::Column::AuthTime, Expr::val(chrono::SubsecRound::trunc_subsecs(auth_time, 6)))
        .col_expr(sessions::Column::Aal, Expr::val(aal.as_str()))
        .filter(sessions::Column::Id.eq(id))
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(&*txn)
        .await?;
    if result.rows_affected != 1 {
        return Ok(false);
    }
    audit::append_in(&txn, events).await?;
    txn.commit().await?;
    Ok(true)
}

/// Which sessions a revocation covers.
#[derive(Debug, Clone)]
pub enum RevokeScope {
    One { user_id: Uuid, session_id: Uuid },
    AllExcept { user_id: Uuid, keep: Uuid },
    All { user_id: Uuid },
    Device { user_id: Uuid, device_id: String },
}

impl RevokeScope {
    /// Whose sessions these are.
    pub fn user_id(&self) -> Uuid {
        match self {
            Self::One { user_id, .. }
            | Self::AllExcept { user_id, .. }
            | Self::All { user_id }
            | Self::Device { user_id, .. } => *user_id,
        }
    }

    /// The device, when the scope is one device's sessions.
    pub fn device_id(&self) -> Option<&str> {
        match self {
            Self::Device { device_id, .. } => Some(device_id),
            _ => None,
        }
    }
}

/// Revokes the sessions in scope and returns (id, current token hash) of
/// each one revoked, read after the update inside the transaction, so a
/// concurrent refresh cannot slip a new token hash past the caller's cache
/// eviction. `make_events` builds the audit events from the revoked ids.
pub async fn revoke(
    db: &Db,
    scope: &RevokeScope,
    reason: &str,
    now: DateTime<Utc>,
    make_events: impl FnOnce(&[Uuid]) -> Vec<NewAuditEvent>,
) -> Result<Vec<(Uuid, String)>> {
    let txn = db.begin_write_as(Scope::User(scope.user_id())).await?;
    let revoked = revoke_in(&txn, scope, reason, now).await?;
    let ids: Vec<Uuid> = revoked.iter().map(|(id, _)| *id).collect();
    let events = make_events(&ids);
    if revoked.is_empty() && events.is_empty() {
        return Ok(revoked);
    }
    audit::append_in(&txn, &events).await?;
    txn.commit().await?;
    Ok(revoked)
}

/// [`revoke`] inside a caller's transaction, without audit events.
pub(crate) async fn revoke_in(
    txn: &super::db::WriteTxn,
    scope: &RevokeScope,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, String)>> {
    let filter = match scope {
        RevokeScope::One { user_id, session_id } => {
            Condition::all().add(sessions::Column::UserId.eq(*user_id)).add(sessions::Column::Id.eq(*session_id))
        }
        RevokeScope::AllExcept { user_id, keep } => {
            Condition::all().add(sessions::Column::UserId.eq(*user_id)).add(sessions::Column::Id.ne(*keep))
        }
        RevokeScope::All { user_id } => Condition::all().add(sessions::Column::UserId.eq(*user_id)),
        RevokeScope::Device { user_id, device_id } => Condition::all()
            .add(sessions::Column::UserId.eq(*user_id))
            .add(sessions::Column::DeviceId.eq(device_id.clone())),
    };
    let targets: Vec<Uuid> = sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .filter(filter.clone())
        .filter(sessions::Column::RevokedAt.is_null())
        .into_tuple::<Uuid>()
        .all(&**txn)
        .await?;
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    sessions::Entity::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::val(now))
        .col_expr(sessions::Column::RevokedReason, Expr::val(reason))
        .filter(sessions::Column::Id.is_in(targets.clone()))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(&**txn)
        .await?;
    Ok(sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .column(sessions::Column::TokenHash)
        .filter(sessions::Column::Id.is_in(targets))
        .into_tuple()
        .all(&**txn)
        .await?)
}

#[derive(Debug, Clone)]
pub struct RefreshRecord {
    pub id: Uuid,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
}

/// The refresh token with this hash (read under its scope: the user is not
/// known yet).
pub async fn find_refresh(db: &Db, token_hash: &str) -> Result<Option<RefreshRecord>> {
    let conn = db.read_as(Scope::Token(token_hash)).await?;
    Ok(refresh_tokens::Entity::find().filter(refresh_tokens::Column::TokenHash.eq(token_hash)).one(&conn).await?.map(
        |m| RefreshRecord {
            id: m.id,
            session_id: m.session_id,
            user_id: m.user_id,
            expires_at: m.expires_at,
            rotated_at: m.rotated_at,
        },
    ))
}

/// The outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Both tokens replaced.
    Rotated,
    /// The token had been used already (now or concurrently).
    Reused,
    /// The session is revoked or expired.
    SessionGone,
}

/// Rotates a refresh token and the session token together (compare-and-set
/// on the refresh token, so of two concurrent uses one wins and the other
/// is a reuse).
pub async fn rotate(
    db: &Db,
    refresh: &RefreshRecord,
    new_token_hash: &str,
    new_token_expires_at: DateTime<Utc>,
    new_refresh_hash: &str,
    now: DateTime<Utc>,
    events: &[NewAuditEvent],
) -> Result<Rotation> {
    let txn = db.begin_write_as(Scope::User(refresh.user_id)).await?;
    let used = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RotatedAt, Expr::val(now))
        .filter(refresh_tokens::Column::Id.eq(refresh.id))
        .filter(refresh_tokens::Column::RotatedAt.is_null())
        .exec(&*txn)
        .await?;
    if used.rows_affected != 1 {
        return Ok(Rotation::Reused);
    }
    let session = sessions::Entity::find_by_id(refresh.session_id).one(&*txn).await?;
    let Some(session) = session.filter(|s| s.revoked_at.is_none() && s.expires_at > now) else {
        return Ok(Rotation::SessionGone);
    };
    let updated = sessions::Entity::update_many()
        .col_expr(sessions::Column::TokenHash, Expr::val(new_token_hash))
        .col_expr(sessions::Column::TokenExpiresAt, Expr::val(new_token_expires_at))
        .col_expr(sessions::Column::LastSeenAt, Expr::val(now))
        .filter(sessions::Column::Id.eq(session.id))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(&*txn)
        .await?;
    if updated.rows_affected != 1 {
        return Ok(Rotation::SessionGone);
    }
    insert_refresh(&txn, (session.id, session.user_id), new_refresh_hash, now, session.expires_at).await?;
    audit::append_in(&txn, events).await?;
    txn.commit().await?;
    Ok(Rotation::Rotated)
}

/// Deletes a device and revokes its sessions; a blocked device keeps its row
/// (deleting it would lift the block on the next login).
pub async fn remove_device(
    db: &Db,
    user_id: Uuid,
    device_id: &str,
    now: DateTime<Utc>,
    make_events: impl FnOnce(&[Uuid]) -> Vec<NewAuditEvent>,
) -> Result<Option<Vec<(Uuid, String)>>> {
    if devices::find(db, user_id, device_id).await?.is_none() {
        return Ok(None);
    }
    let revoked = revoke(
        db,
        &RevokeScope::Device { user_id, device_id: device_id.to_owned() },
        "device_removed",
        now,
        make_events,
    )
    .await?;
    // The statement itself keeps a blocked row, so a block landing after
    // the read above is not deleted with it.
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    devices::delete_unless_blocked(&*txn, user_id, device_id).await?;
    txn.commit().await?;
    Ok(Some(revoked))
}
