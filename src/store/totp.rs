//! TOTP credentials and recovery codes. The step a code was accepted at is
//! recorded with a compare-and-set (`last_used_step < step`), so a code is
//! accepted at most once per user, and never one older than the last
//! accepted, even under concurrent requests and across replicas.

use chrono::{DateTime, Utc};
use entity::{recovery_codes, sessions, totp_credentials};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter};
use uuid::Uuid;

use super::StoreError;
use super::audit::{self, NewAuditEvent};
use super::db::{Db, Scope};
use crate::domain::states::Aal;

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct TotpRecord {
    pub key_id: Uuid,
    pub ciphertext: String,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub last_used_step: Option<i64>,
}

pub async fn find(db: &Db, user_id: Uuid) -> Result<Option<TotpRecord>> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    Ok(totp_credentials::Entity::find_by_id(user_id).one(&conn).await?.map(|m| TotpRecord {
        key_id: m.key_id,
        ciphertext: m.ciphertext,
        confirmed_at: m.confirmed_at,
        last_used_step: m.last_used_step,
    }))
}

pub async fn is_enabled(db: &Db, user_id: Uuid) -> Result<bool> {
    Ok(find(db, user_id).await?.is_some_and(|t| t.confirmed_at.is_some()))
}

/// Stores a new unconfirmed secret, replacing an earlier unconfirmed one.
/// `false` (nothing written) when TOTP is already on.
pub async fn put_pending(db: &Db, user_id: Uuid, sealed: (Uuid, String), now: DateTime<Utc>) -> Result<bool> {
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    let existing = totp_credentials::Entity::find_by_id(user_id).one(&*txn).await?;
    if existing.as_ref().is_some_and(|t| t.confirmed_at.is_some()) {
        return Ok(false);
    }
    if existing.is_some() {
        totp_credentials::Entity::delete_by_id(user_id).exec(&*txn).await?;
    }
    totp_credentials::Entity::insert(totp_credentials::ActiveModel {
        user_id: Set(user_id),
        key_id: Set(sealed.0),
        ciphertext: Set(sealed.1),
        confirmed_at: Set(None),
        last_used_step: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(&*txn)
    .await?;
    txn.commit().await?;
    Ok(true)
}

fn step_is_fresh(step: i64) -> Condition {
    Condition::any()
        .add(totp_credentials::Column::LastUsedStep.is_null())
        .add(totp_credentials::Column::LastUsedStep.lt(step))
}

/// Consumes `step` for a confirmed credential; `false` if it (or a later
/// step) was used already.
pub async fn consume_step(db: &Db, user_id: Uuid, step: i64, now: DateTime<Utc>) -> Result<bool> {
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    let result = totp_credentials::Entity::update_many()
        .col_expr(totp_credentials::Column::LastUsedStep, Expr::val(step))
        .col_expr(totp_credentials::Column::UpdatedAt, Expr::val(now))
        .filter(totp_credentials::Column::UserId.eq(user_id))
        .filter(totp_credentials::Column::ConfirmedAt.is_not_null())
        .filter(step_is_fresh(step))
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(result.rows_affected == 1)
}

/// Turns TOTP on: consumes the confirming step, replaces the recovery
/// codes, raises the confirming session to aal2, all in one transaction.
/// `false` when there is nothing pending or the step was used.
#[allow(clippy::too_many_arguments)]
pub async fn confirm(
    db: &Db,
    user_id: Uuid,
    checked: &TotpRecord,
    step: i64,
    recovery_code_hashes: &[String],
    session_id: Uuid,
    now: DateTime<Utc>,
    events: &[NewAuditEvent],
) -> Result<bool> {
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    let confirmed = totp_credentials::Entity::update_many()
        .col_expr(totp_credentials::Column::ConfirmedAt, Expr::val(now))
        .col_expr(totp_credentials::Column::LastUsedStep, Expr::val(step))
        .col_expr(totp_credentials::Column::UpdatedAt, Expr::val(now))
        .filter(totp_credentials::Column::UserId.eq(user_id))
        .filter(totp_credentials::Column::ConfirmedAt.is_null())
        // The very secret the code was checked against (not one a
        // concurrent re-enrolment put there since).
        .filter(totp_credentials::Column::KeyId.eq(checked.key_id))
        .filter(totp_credentials::Column::Ciphertext.eq(checked.ciphertext.clone()))
        .filter(step_is_fresh(step))
        .exec(&*txn)
        .await?;
    if confirmed.rows_affected != 1 {
        return Ok(false);
    }
    recovery_codes::Entity::delete_many().filter(recovery_codes::Column::UserId.eq(user_id)).exec(&*txn).await?;
    recovery_codes::Entity::insert_many(recovery_code_hashes.iter().map(|hash| recovery_codes::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        code_hash: Set(hash.clone()),
        used_at: Set(None),
        created_at: Set(now),
    }))
    .exec_without_returning(&*txn)
    .await?;
    set_aal(&txn, session_id, Aal::Aal2).await?;
    audit::append_in(&txn, events).await?;
    txn.commit().await?;
    Ok(true)
}

async fn set_aal(txn: &super::db::WriteTxn, session_id: Uuid, aal: Aal) -> Result<()> {
    sessions::Entity::update_many()
        .col_expr(sessions::Column::Aal, Expr::val(aal.as_str()))
        .filter(sessions::Column::Id.eq(session_id))
        .exec(&**txn)
        .await?;
    Ok(())
}

/// Uses a recovery code once; `false` if unknown or used. A row holding
/// `legacy_hash` (the form before `code_hash`) matches too, and is rewritten
/// to `code_hash` as it is spent, in the same statement.
pub async fn use_recovery_code(
    db: &Db,
    user_id: Uuid,
    code_hash: &str,
    legacy_hash: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    let result = recovery_codes::Entity::update_many()
        .col_expr(recovery_codes::Column::UsedAt, Expr::val(now))
        .col_expr(recovery_codes::Column::CodeHash, Expr::val(code_hash))
        .filter(recovery_codes::Column::UserId.eq(user_id))
        .filter(recovery_codes::Column::CodeHash.is_in([code_hash, legacy_hash]))
        .filter(recovery_codes::Column::UsedAt.is_null())
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(result.rows_affected == 1)
}

pub async fn recovery_codes_left(db: &Db, user_id: Uuid) -> Result<u64> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    Ok(recovery_codes::Entity::find()
        .filter(recovery_codes::Column::UserId.eq(user_id))
        .filter(recovery_codes::Column::UsedAt.is_null())
        .count(&conn)
        .await?)
}

/// Removes the secret and the recovery codes.
pub async fn disable(db: &Db, user_id: Uuid, events: &[NewAuditEvent]) -> Result<()> {
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    totp_credentials::Entity::delete_by_id(user_id).exec(&*txn).await?;
    recovery_codes::Entity::delete_many().filter(recovery_codes::Column::UserId.eq(user_id)).exec(&*txn).await?;
    audit::append_in(&txn, events).await?;
    txn.commit().await
}
