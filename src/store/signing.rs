//! JWT signing keys: rows of `signing_keys` (the private half sealed by the
//! keyring). One `active` key signs; `previous` keys stay published until
//! the tokens they signed have expired; then they are `retired`.

use chrono::{DateTime, Utc};
use entity::signing_keys;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use super::StoreError;
use super::db::Db;

type Result<T> = std::result::Result<T, StoreError>;

pub const ACTIVE: &str = "active";
pub const PREVIOUS: &str = "previous";
pub const RETIRED: &str = "retired";

#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    pub id: Uuid,
    pub key_id: Uuid,
    pub ciphertext: String,
    pub public_key: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
    /// When it stopped signing (for `previous` and `retired` keys).
    pub retired_at: Option<DateTime<Utc>>,
}

impl From<signing_keys::Model> for SigningKeyRow {
    fn from(m: signing_keys::Model) -> Self {
        Self {
            id: m.id,
            key_id: m.key_id,
            ciphertext: m.ciphertext,
            public_key: m.public_key,
            state: m.state,
            created_at: m.created_at,
            retired_at: m.retired_at,
        }
    }
}

/// Every key, newest first.
pub async fn all(db: &Db) -> Result<Vec<SigningKeyRow>> {
    Ok(signing_keys::Entity::find()
        .order_by_desc(signing_keys::Column::CreatedAt)
        .all(db.conn())
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// Makes `new` the active key. The key that was active (`expected`, as the
/// caller read it) becomes previous; `false` when another replica rotated
/// first (nothing written).
pub async fn rotate(db: &Db, expected: Option<Uuid>, new: &SigningKeyRow, now: DateTime<Utc>) -> Result<bool> {
    let txn = db.begin_write().await?;
    let actives = signing_keys::Entity::find()
        .filter(signing_keys::Column::State.eq(ACTIVE))
        .order_by_desc(signing_keys::Column::CreatedAt)
        .all(&*txn)
        .await?
        .into_iter()
        .map(|k| k.id)
        .collect::<Vec<_>>();
    // Another replica rotated first: the key the caller saw is not the
    // newest active one any more.
    match expected {
        Some(old) if actives.first() != Some(&old) => return Ok(false),
        None if !actives.is_empty() => return Ok(false),
        _ => {}
    }
    // Every active key is demoted, so two replicas that both created a
    // first key at once end with one active key at the next rotation.
    let demoted = signing_keys::Entity::update_many()
        .col_expr(signing_keys::Column::State, Expr::val(PREVIOUS))
        .col_expr(signing_keys::Column::RetiredAt, Expr::val(now))
        .filter(signing_keys::Column::State.eq(ACTIVE))
        .exec(&*txn)
        .await?;
    if demoted.rows_affected != actives.len() as u64 {
        return Ok(false);
    }
    signing_keys::Entity::insert(signing_keys::ActiveModel {
        id: Set(new.id),
        key_id: Set(new.key_id),
        ciphertext: Set(new.ciphertext.clone()),
        public_key: Set(new.public_key.clone()),
        state: Set(ACTIVE.to_owned()),
        created_at: Set(new.created_at),
        retired_at: Set(None),
    })
    .exec_without_returning(&*txn)
    .await?;
    txn.commit().await?;
    Ok(true)
}

/// Retires previous keys that stopped signing before `before` (every token
/// they signed has expired). Returns how many.
pub async fn retire_previous(db: &Db, before: DateTime<Utc>) -> Result<u64> {
    Ok(signing_keys::Entity::update_many()
        .col_expr(signing_keys::Column::State, Expr::val(RETIRED))
        .filter(signing_keys::Column::State.eq(PREVIOUS))
        .filter(signing_keys::Column::RetiredAt.lt(before))
        .exec(db.conn())
        .await?
        .rows_affected)
}

/// Whether a key with this id is active or previous.
pub async fn is_published(db: &Db, id: Uuid) -> Result<bool> {
    Ok(signing_keys::Entity::find_by_id(id)
        .filter(signing_keys::Column::State.ne(RETIRED))
        .one(db.conn())
        .await?
        .is_some())
}
