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
use super::db::Db;
use super::sessions::{RevokeScope, revoke_in};

type Result<T> = std::result::Result<T, StoreError>;

/// A valid (unspent, unexpired) reset token: (token id, user id).
pub async fn find_reset(db: &Db, token_hash: &str, now: DateTime<Utc>) -> Result<Option<(Uuid, Uuid)>> {
    Ok(reset_tokens::Entity::find()
        .filter(reset_tokens::Column::TokenHash.eq(token_hash))
        .filter(reset_tokens::Column::UsedAt.is_null())
        .filter(reset_tokens::Column::ExpiresAt.gt(now))
        .one(db.conn())
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
    let txn = db.begin_write().await?;
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

/// Replaces the user's sealed OPAQUE record and revokes the sessions in
/// `scope`, spending `reset_token` first when given. `None` when that token
/// was spent or expired meanwhile (nothing written); else the revoked
/// sessions' (id, token hash).
#[allow(clippy::too_many_arguments)]
pub async fn replace_credential(
    db: &Db,
    user_id: Uuid,
    sealed_record: (Uuid, String),
    scope: &RevokeScope,
    reset_token: Option<Uuid>,
    reason: &str,
    now: DateTime<Utc>,
    make_events: impl FnOnce(&[Uuid]) -> Vec<NewAuditEvent>,
) -> Result<Option<Vec<(Uuid, String)>>> {
    let txn = db.begin_write().await?;
    if let Some(token) = reset_token {
        let spent = reset_tokens::Entity::update_many()
            .col_expr(reset_tokens::Column::UsedAt, Expr::val(now))
            .filter(reset_tokens::Column::Id.eq(token))
            .filter(reset_tokens::Column::UserId.eq(user_id))
            .filter(reset_tokens::Column::UsedAt.is_null())
            .filter(reset_tokens::Column::ExpiresAt.gt(now))
            .exec(&*txn)
            .await?;
        if spent.rows_affected != 1 {
            return Ok(None);
        }
    }
    let updated = opaque_credentials::Entity::update_many()
        .col_expr(opaque_credentials::Column::KeyId, Expr::val(sealed_record.0))
        .col_expr(opaque_credentials::Column::Ciphertext, Expr::val(sealed_record.1))
        .col_expr(opaque_credentials::Column::UpdatedAt, Expr::val(now))
        .filter(opaque_credentials::Column::UserId.eq(user_id))
        .exec(&*txn)
        .await?;
    if updated.rows_affected != 1 {
        return Ok(None);
    }
    let revoked = revoke_in(&txn, scope, reason, now).await?;
    let ids: Vec<Uuid> = revoked.iter().map(|(id, _)| *id).collect();
    audit::append_in(&txn, &make_events(&ids)).await?;
    txn.commit().await?;
    Ok(Some(revoked))
}
