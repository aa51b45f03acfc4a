//! Queries and changes behind the admin API and account deletion.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use entity::{audit_events, devices, sessions, totp_credentials, user_roles, users};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::StoreError;
use super::audit::{self, NewAuditEvent};
use super::db::{Db, Scope, Task};
use super::users::UserRecord;

type Result<T> = std::result::Result<T, StoreError>;

/// A user as the admin list shows it.
#[derive(Debug, Clone)]
pub struct UserSummary {
    pub user: UserRecord,
    pub roles: Vec<String>,
    pub totp_enabled: bool,
}

/// A page of users in id order (ids are time-ordered), after `after`; with
/// `prefix`, only usernames (normalized) that start with it.
pub async fn users_page(db: &Db, after: Option<Uuid>, limit: u64, prefix: Option<&str>) -> Result<Vec<UserSummary>> {
    let mut query = users::Entity::find().order_by_asc(users::Column::Id).limit(limit);
    if let Some(after) = after {
        query = query.filter(users::Column::Id.gt(after));
    }
    if let Some(prefix) = prefix {
        // LIKE with the wildcards of the prefix escaped: `a_b` finds "a_b…"
        // only.
        let escaped = prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let pattern = sea_orm::sea_query::LikeExpr::new(format!("{escaped}%")).escape('\\');
        query = query.filter(sea_orm::sea_query::ExprTrait::like(
            sea_orm::sea_query::Expr::col(users::Column::Username),
            pattern,
        ));
    }
    let page: Vec<UserRecord> = query.all(db.conn()).await?.into_iter().map(Into::into).collect();
    summarize(db, page).await
}

pub async fn summarize(db: &Db, page: Vec<UserRecord>) -> Result<Vec<UserSummary>> {
    let ids: Vec<Uuid> = page.iter().map(|u| u.id).collect();
    let mut roles: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (id, role) in user_roles::Entity::find()
        .select_only()
        .column(user_roles::Column::UserId)
        .column(user_roles::Column::Role)
        .filter(user_roles::Column::UserId.is_in(ids.clone()))
        .into_tuple::<(Uuid, String)>()
        .all(db.conn())
        .await?
    {
        roles.entry(id).or_default().push(role);
    }
    // Spans the listed users: the directory task reads TOTP rows only.
    let conn = db.read_as(Scope::Task(Task::Directory)).await?;
    let totp: HashSet<Uuid> = totp_credentials::Entity::find()
        .select_only()
        .column(totp_credentials::Column::UserId)
        .filter(totp_credentials::Column::UserId.is_in(ids))
        .filter(totp_credentials::Column::ConfirmedAt.is_not_null())
        .into_tuple::<Uuid>()
        .all(&conn)
        .await?
        .into_iter()
        .collect();
    Ok(page
        .into_iter()
        .map(|user| UserSummary {
            roles: roles.remove(&user.id).unwrap_or_default(),
            totp_enabled: totp.contains(&user.id),
            user,
        })
        .collect())
}

/// (active sessions, devices) of a user.
pub async fn counts(db: &Db, user_id: Uuid, now: DateTime<Utc>) -> Result<(u64, u64)> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    let sessions = sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(now))
        .count(&conn)
        .await?;
    let devices = devices::Entity::find().filter(devices::Column::UserId.eq(user_id)).count(&conn).await?;
    Ok((sessions, devices))
}

/// Grants (`true`) or revokes a role, with its audit event. Returns whether
/// anything changed.
pub async fn set_role(db: &Db, user_id: Uuid, role: &str, grant: bool, events: &[NewAuditEvent]) -> Result<bool> {
    let txn = db.begin_write().await?;
    let exists = user_roles::Entity::find_by_id((user_id, role.to_owned())).one(&*txn).await?.is_some();
    if exists == grant {
        return Ok(false);
    }
    if grant {
        user_roles::Entity::insert(user_roles::ActiveModel { user_id: Set(user_id), role: Set(role.to_owned()) })
            .exec_without_returning(&*txn)
            .await?;
    } else {
        user_roles::Entity::delete_by_id((user_id, role.to_owned())).exec(&*txn).await?;
    }
    audit::append_in(&txn, events).await?;
    txn.commit().await?;
    Ok(true)
}

/// Clears any lock and the failure count, with its audit event.
pub async fn unlock(db: &Db, user_id: Uuid, events: &[NewAuditEvent]) -> Result<()> {
    let txn = db.begin_write().await?;
    users::Entity::update_many()
        .col_expr(users::Column::LockedUntil, Expr::val(Option::<DateTime<Utc>>::None))
        .col_expr(users::Column::LockReason, Expr::val(Option::<String>::None))
        .col_expr(users::Column::FailedAttempts, Expr::val(0))
        .filter(users::Column::Id.eq(user_id))
        .exec(&*txn)
        .await?;
    audit::append_in(&txn, events).await?;
    txn.commit().await
}

/// Deletes a user and, by cascade, every row of theirs (credentials, TOTP,
/// recovery codes, roles, devices, sessions, refresh tokens). Audit rows
/// stay: they name the user only by pseudonym. Returns the token hashes of
/// the sessions that were live, for cache eviction.
pub async fn delete_user(db: &Db, user_id: Uuid, events: &[NewAuditEvent]) -> Result<Option<Vec<(Uuid, String)>>> {
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    let sessions: Vec<(Uuid, String)> = sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .column(sessions::Column::TokenHash)
        .filter(sessions::Column::UserId.eq(user_id))
        .into_tuple()
        .all(&*txn)
        .await?;
    let deleted = users::Entity::delete_by_id(user_id).exec(&*txn).await?;
    if deleted.rows_affected == 0 {
        return Ok(None);
    }
    audit::append_in(&txn, events).await?;
    txn.commit().await?;
    Ok(Some(sessions))
}

/// Audit query filters.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// The pseudonymous user id.
    pub user_ref: Option<Uuid>,
    pub event: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only rows older than this id (the cursor of the previous page).
    pub before_id: Option<i64>,
}

/// Audit rows, newest first.
pub async fn audit_page(db: &Db, filter: &AuditFilter, limit: u64) -> Result<Vec<audit_events::Model>> {
    let mut query = audit_events::Entity::find().order_by_desc(audit_events::Column::Id).limit(limit);
    if let Some(user) = filter.user_ref {
        query = query.filter(audit_events::Column::UserId.eq(user));
    }
    if let Some(event) = &filter.event {
        query = query.filter(audit_events::Column::Event.eq(event.clone()));
    }
    if let Some(since) = filter.since {
        query = query.filter(audit_events::Column::OccurredAt.gte(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(audit_events::Column::OccurredAt.lt(until));
    }
    if let Some(before) = filter.before_id {
        query = query.filter(audit_events::Column::Id.lt(before));
    }
    Ok(query.all(db.conn()).await?)
}
