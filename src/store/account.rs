//! Password change and reset: the new OPAQUE record replaces the old one,
//! the sessions it ends are revoked, and a reset token is spent, in one
//! transaction with their audit events.

use chrono::{DateTime, Utc};
use entity::{opaque_credentials, reset_tokens};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::StoreError;
use super::audit::{self, NewAuditEvent};
use super::db::{Db, Scope};
use super::sessions::{RevokeScope, revoke_in};

type Result<T> = std::result::Result<T, StoreError>;

/// A valid (unspent, unexpired) reset token: (token id, user id).
pub async fn find_reset(db: &Db, token_hash: &str, now: DateTime<Utc>) -> Result<Option<(Uuid, Uuid)>> {
    let conn = db.read_as(Scope::Token(token_hash)).await?;
    Ok(reset_tokens::Entity::find()
        .filter(reset_tokens::Column::TokenHash.eq(token_hash))
        .filter(reset_tokens::Column::UsedAt.is_null())
        .filter(reset_tokens::Column::ExpiresAt.gt(now))
        .one(&conn)
        .await?
        .map(|t| (t.id, t.user_id)))
}

/// Issues a reset token; any earlier unspent token of the user stops
/// working (only the newest one an admin handed out is valid).
pub async fn issue_reset(
    db: &Db,
    user_id: Uuid,
    token_hash: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    events: &[NewAuditEvent],
) -> Result<()> {
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    reset_tokens::Entity::delete_many()
        .filter(reset_tokens::Column::UserId.eq(user_id))
        .filter(reset_tokens::Column::UsedAt.is_null())
        .exec(&*txn)
        .await?;
    reset_tokens::Entity::insert(reset_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        token_hash: Set(token_hash.to_owned()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
    })
    .exec_without_returning(&*txn)
    .await?;
    audit::append_in(&txn, events).await?;
    txn.commit().await
}

/// A new OPAQUE record for a user, and what it ends.
pub struct Replacement<'a> {
    pub user_id: Uuid,
    /// (key id, ciphertext) of the sealed record.
    pub sealed_record: (Uuid, String),
    /// The sessions it revokes.
    pub scope: &'a RevokeScope,
    /// A reset: the token to spend.
    pub reset_token: Option<Uuid>,
    /// A change: the calling session, which must still be current and its
    /// login at least this recent when the change commits.
    pub caller: Option<(Uuid, DateTime<Utc>)>,
    pub reason: &'a str,
}

/// Replaces the user's sealed OPAQUE record and revokes the sessions in
/// scope, under the user's row lock (a login committing at the same time
/// waits, then sees the new record's version). `None` when refused: the
/// reset token was spent or expired, or the calling session was revoked or
/// is no longer fresh (nothing written). Else the revoked sessions'
/// (id, token hash).
pub async fn replace_credential(
    db: &Db,
    change: &Replacement<'_>,
    now: DateTime<Utc>,
    make_events: impl FnOnce(&[Uuid]) -> Vec<NewAuditEvent>,
) -> Result<Option<Vec<(Uuid, String)>>> {
    use sea_orm::QuerySelect as _;
    let txn = db.begin_write_as(Scope::User(change.user_id)).await?;
    let mut user = entity::users::Entity::find_by_id(change.user_id);
    if db.backend() == sea_orm::DatabaseBackend::Postgres {
        user = user.lock_exclusive();
    }
    if user.one(&*txn).await?.is_none() {
        return Ok(None);
    }
    if let Some((session_id, fresh_after)) = change.caller {
        let current = entity::sessions::Entity::find_by_id(session_id)
            .filter(entity::sessions::Column::UserId.eq(change.user_id))
            .filter(entity::sessions::Column::RevokedAt.is_null())
            .filter(entity::sessions::Column::ExpiresAt.gt(now))
            .one(&*txn)
            .await?;
        if current.is_none_or(|s| s.auth_time.unwrap_or(s.created_at) < fresh_after) {
            return Ok(None);
        }
    }
    if let Some(token) = change.reset_token {
        let spent = reset_tokens::Entity::update_many()
            .col_expr(reset_tokens::Column::UsedAt, Expr::val(now))
            .filter(reset_tokens::Column::Id.eq(token))
            .filter(reset_tokens::Column::UserId.eq(change.user_id))
            .filter(reset_tokens::Column::UsedAt.is_null())
            .filter(reset_tokens::Column::ExpiresAt.gt(now))
            .exec(&*txn)
            .await?;
        if spent.rows_affected != 1 {
            return Ok(None);
        }
    }
    let updated = opaque_credentials::Entity::update_many()
        .col_expr(opaque_credentials::Column::KeyId, Expr::val(change.sealed_record.0))
        .col_expr(opaque_credentials::Column::Ciphertext, Expr::val(change.sealed_record.1.clone()))
        .col_expr(opaque_credentials::Column::UpdatedAt, Expr::val(now))
        .filter(opaque_credentials::Column::UserId.eq(change.user_id))
        .exec(&*txn)
        .await?;
    if updated.rows_affected != 1 {
        return Ok(None);
    }
    // Any other reset token of the user is void once the password changed.
    reset_tokens::Entity::delete_many()
        .filter(reset_tokens::Column::UserId.eq(change.user_id))
        .filter(reset_tokens::Column::UsedAt.is_null())
        .exec(&*txn)
        .await?;
    let revoked = revoke_in(&txn, change.scope, change.reason, now).await?;
    let ids: Vec<Uuid> = revoked.iter().map(|(id, _)| *id).collect();
    audit::append_in(&txn, &make_events(&ids)).await?;
    txn.commit().await?;
    Ok(Some(revoked))
}
