//! Passkeys (WebAuthn credentials). The sealed credential and its counter
//! change together, by a compare-and-set on `sign_count`: of two
//! assertions with the same or a lower counter (a cloned authenticator,
//! or one assertion presented twice) only one is ever accepted, also
//! across replicas.

use chrono::{DateTime, Utc};
use entity::{sessions, webauthn_credentials};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use super::StoreError;
use super::audit::{self, NewAuditEvent};
use super::db::{Db, Scope};
use crate::domain::states::Aal;

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct CredentialRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub credential_id: String,
    pub name: String,
    pub key_id: Uuid,
    pub ciphertext: String,
    pub sign_count: i64,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<webauthn_credentials::Model> for CredentialRecord {
    fn from(m: webauthn_credentials::Model) -> Self {
        Self {
            id: m.id,
            user_id: m.user_id,
            credential_id: m.credential_id,
            name: m.name,
            key_id: m.key_id,
            ciphertext: m.ciphertext,
            sign_count: m.sign_count,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
        }
    }
}

/// A user's credentials, oldest first.
pub async fn list(db: &Db, user_id: Uuid) -> Result<Vec<CredentialRecord>> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    Ok(webauthn_credentials::Entity::find()
        .filter(webauthn_credentials::Column::UserId.eq(user_id))
        .order_by_asc(webauthn_credentials::Column::CreatedAt)
        .order_by_asc(webauthn_credentials::Column::Id)
        .all(&conn)
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

pub async fn count(db: &Db, user_id: Uuid) -> Result<u64> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    Ok(webauthn_credentials::Entity::find()
        .filter(webauthn_credentials::Column::UserId.eq(user_id))
        .count(&conn)
        .await?)
}

/// One of the user's credentials, by its WebAuthn credential id.
pub async fn find_by_credential_id(db: &Db, user_id: Uuid, credential_id: &str) -> Result<Option<CredentialRecord>> {
    let conn = db.read_as(Scope::User(user_id)).await?;
    Ok(webauthn_credentials::Entity::find()
        .filter(webauthn_credentials::Column::UserId.eq(user_id))
        .filter(webauthn_credentials::Column::CredentialId.eq(credential_id))
        .one(&conn)
        .await?
        .map(Into::into))
}

/// Stores a new credential, raises the enrolling session to aal2 and
/// appends `events`, in one transaction. [`StoreError::Conflict`] when the
/// credential id is registered already (to anyone).
pub async fn insert(db: &Db, record: &CredentialRecord, session_id: Uuid, events: &[NewAuditEvent]) -> Result<()> {
    let txn = db.begin_write_as(Scope::User(record.user_id)).await?;
    webauthn_credentials::Entity::insert(webauthn_credentials::ActiveModel {
        id: Set(record.id),
        user_id: Set(record.user_id),
        credential_id: Set(record.credential_id.clone()),
        name: Set(record.name.clone()),
        key_id: Set(record.key_id),
        ciphertext: Set(record.ciphertext.clone()),
        sign_count: Set(record.sign_count),
        created_at: Set(record.created_at),
        last_used_at: Set(None),
    })
    .exec_without_returning(&*txn)
    .await?;
    sessions::Entity::update_many()
        .col_expr(sessions::Column::Aal, Expr::val(Aal::Aal2.as_str()))
        .filter(sessions::Column::Id.eq(session_id))
        .exec(&*txn)
        .await?;
    audit::append_in(&txn, events).await?;
    txn.commit().await
}

/// Records a use: the new sealed credential and counter, only if the
/// stored row is still the one the assertion was checked against and, for
/// a counting authenticator, its counter is lower than `sign_count`.
/// `false` when that no longer holds (the assertion is then refused).
pub async fn record_use(
    db: &Db,
    checked: &CredentialRecord,
    sealed: (Uuid, String),
    sign_count: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut update = webauthn_credentials::Entity::update_many()
        .col_expr(webauthn_credentials::Column::KeyId, Expr::val(sealed.0))
        .col_expr(webauthn_credentials::Column::Ciphertext, Expr::val(sealed.1))
        .col_expr(webauthn_credentials::Column::SignCount, Expr::val(sign_count))
        .col_expr(webauthn_credentials::Column::LastUsedAt, Expr::val(now))
        .filter(webauthn_credentials::Column::Id.eq(checked.id))
        .filter(webauthn_credentials::Column::UserId.eq(checked.user_id));
    update = if sign_count > 0 {
        update.filter(webauthn_credentials::Column::SignCount.lt(sign_count))
    } else {
        // An authenticator without a counter (most synced passkeys) keeps 0.
        update.filter(webauthn_credentials::Column::SignCount.eq(0))
    };
    let txn = db.begin_write_as(Scope::User(checked.user_id)).await?;
    let recorded = update.exec(&*txn).await?.rows_affected == 1;
    txn.commit().await?;
    Ok(recorded)
}

/// Removes one of the user's credentials with `events`; `false` if it is
/// not theirs (or gone).
pub async fn remove(db: &Db, user_id: Uuid, id: Uuid, events: &[NewAuditEvent]) -> Result<bool> {
    let txn = db.begin_write_as(Scope::User(user_id)).await?;
    let removed = webauthn_credentials::Entity::delete_many()
        .filter(webauthn_credentials::Column::Id.eq(id))
        .filter(webauthn_credentials::Column::UserId.eq(user_id))
        .exec(&*txn)
        .await?;
    if removed.rows_affected != 1 {
        return Ok(false);
    }
    audit::append_in(&txn, events).await?;
    txn.commit().await?;
    Ok(true)
}
