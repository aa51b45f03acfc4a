//! Keyring rows (KDF parameters, canary, wrapped data keys) and the
//! registry of every encrypted column, which the re-encryption job walks.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{data_keys, keyring};
use sea_orm::sea_query::{Expr, Func, Order, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait, QueryFilter, QueryOrder, Value};
use uuid::Uuid;

use super::StoreError;
use super::db::{Db, Scope, Task};

type Result<T> = std::result::Result<T, StoreError>;

const KEYRING_ROW: i32 = 1;

#[derive(Debug, Clone)]
pub struct KeyringMeta {
    pub kdf: String,
    /// Base64 of the random salt.
    pub kdf_salt: String,
    pub kdf_iterations: u32,
    /// Fernet token of a known plaintext under the KEK.
    pub canary: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    DecryptOnly,
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::DecryptOnly => "decrypt_only",
            Self::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(Self::Active),
            "decrypt_only" => Ok(Self::DecryptOnly),
            "retired" => Ok(Self::Retired),
            other => Err(StoreError::Corrupt(format!("unknown data key state {other:?}"))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DataKey {
    pub id: Uuid,
    /// The data key, encrypted under the KEK.
    pub wrapped_key: String,
    pub state: KeyState,
    pub use_count: u64,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

impl TryFrom<data_keys::Model> for DataKey {
    type Error = StoreError;
    fn try_from(m: data_keys::Model) -> Result<Self> {
        Ok(Self {
            id: m.id,
            wrapped_key: m.wrapped_key,
            state: KeyState::parse(&m.state)?,
            use_count: u64::try_from(m.use_count).unwrap_or(0),
            created_at: m.created_at,
            retired_at: m.retired_at,
        })
    }
}

/// Who a sealed value belongs to; bound into the plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    User(Uuid),
    /// Rows that belong to no user (server setup, system audit events).
    System,
}

impl Owner {
    pub fn binding(self) -> Vec<u8> {
        match self {
            Self::User(id) => id.as_bytes().to_vec(),
            Self::System => b"system".to_vec(),
        }
    }
}

/// Every encrypted column. Adding an encrypted column means adding it here,
/// so the re-encryption job and key usage counts cover it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealedColumn {
    OpaqueRecord,
    TotpSecret,
    AuditDetails,
    ServerSetup,
    SigningKey,
    WebauthnCredential,
}

#[derive(Clone, Copy)]
enum PkKind {
    Uuid,
    BigInt,
    Int,
}

struct ColumnSpec {
    table: &'static str,
    pk: &'static str,
    pk_kind: PkKind,
    /// Column holding the owning user id; `None` means the system owns it.
    owner: Option<&'static str>,
    key_id: &'static str,
    ciphertext: &'static str,
}

impl SealedColumn {
    pub const ALL: [Self; 6] = [
        Self::OpaqueRecord,
        Self::TotpSecret,
        Self::AuditDetails,
        Self::ServerSetup,
        Self::SigningKey,
        Self::WebauthnCredential,
    ];

    /// The columns re-encryption moves. Audit details stay on the key they
    /// were written under: rewriting them would change rows the hash chain
    /// covers (and the application role may not UPDATE audit rows), so a key
    /// that audit rows use stays decrypt-only instead of being retired.
    pub const REENCRYPTED: [Self; 5] =
        [Self::OpaqueRecord, Self::TotpSecret, Self::ServerSetup, Self::SigningKey, Self::WebauthnCredential];

    /// Bound into the plaintext, so a value cannot move between columns.
    pub fn purpose(self) -> &'static str {
        match self {
            Self::OpaqueRecord => "opaque_credentials.ciphertext",
            Self::TotpSecret => "totp_credentials.ciphertext",
            Self::AuditDetails => "audit_events.details",
            Self::ServerSetup => "server_setup.ciphertext",
            Self::SigningKey => "signing_keys.ciphertext",
            Self::WebauthnCredential => "webauthn_credentials.ciphertext",
        }
    }

    pub fn table(self) -> &'static str {
        self.spec().table
    }

    fn spec(self) -> ColumnSpec {
        match self {
            Self::OpaqueRecord => ColumnSpec {
                table: "opaque_credentials",
                pk: "user_id",
                pk_kind: PkKind::Uuid,
                owner: Some("user_id"),
                key_id: "key_id",
                ciphertext: "ciphertext",
            },
            Self::TotpSecret => ColumnSpec {
                table: "totp_credentials",
                pk: "user_id",
                pk_kind: PkKind::Uuid,
                owner: Some("user_id"),
                key_id: "key_id",
                ciphertext: "ciphertext",
            },
            Self::AuditDetails => ColumnSpec {
                table: "audit_events",
                pk: "id",
                pk_kind: PkKind::BigInt,
                owner: Some("user_id"),
                key_id: "details_key_id",
                ciphertext: "details",
            },
            Self::ServerSetup => ColumnSpec {
                table: "server_setup",
                pk: "id",
                pk_kind: PkKind::Int,
                owner: None,
                key_id: "key_id",
                ciphertext: "ciphertext",
            },
            Self::SigningKey => ColumnSpec {
                table: "signing_keys",
                pk: "id",
                pk_kind: PkKind::Uuid,
                owner: None,
                key_id: "key_id",
                ciphertext: "ciphertext",
            },
            Self::WebauthnCredential => ColumnSpec {
                table: "webauthn_credentials",
                pk: "id",
                pk_kind: PkKind::Uuid,
                owner: Some("user_id"),
                key_id: "key_id",
                ciphertext: "ciphertext",
            },
        }
    }
}

/// Primary key of a sealed row, whatever its SQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowKey {
    Uuid(Uuid),
    Int(i64),
}

impl RowKey {
    fn value(&self, kind: PkKind) -> Value {
        match (self, kind) {
            (Self::Uuid(u), _) => (*u).into(),
            (Self::Int(i), PkKind::Int) => i32::try_from(*i).unwrap_or(i32::MAX).into(),
            (Self::Int(i), _) => (*i).into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SealedRow {
    pub column: SealedColumn,
    pub pk: RowKey,
    pub owner: Owner,
    pub key_id: Uuid,
    pub ciphertext: String,
}

pub async fn load_meta(db: &Db) -> Result<Option<KeyringMeta>> {
    let row = keyring::Entity::find_by_id(KEYRING_ROW).one(db.conn()).await?;
    row.map(|m| {
        Ok(KeyringMeta {
            kdf: m.kdf,
            kdf_salt: m.kdf_salt,
            kdf_iterations: u32::try_from(m.kdf_iterations)
                .map_err(|_| StoreError::Corrupt("negative KDF iteration count".into()))?,
            canary: m.canary,
            created_at: m.created_at,
        })
    })
    .transpose()
}

/// Creates the keyring and its first data key in one transaction.
/// [`StoreError::Conflict`] when a keyring already exists.
pub async fn initialize(db: &Db, meta: &KeyringMeta, first: &DataKey) -> Result<()> {
    let txn = db.begin_write().await?;
    keyring::Entity::insert(keyring::ActiveModel {
        id: Set(KEYRING_ROW),
        kdf: Set(meta.kdf.clone()),
        kdf_salt: Set(meta.kdf_salt.clone()),
        kdf_iterations: Set(i32::try_from(meta.kdf_iterations).unwrap_or(i32::MAX)),
        canary: Set(meta.canary.clone()),
        created_at: Set(meta.created_at),
        audit_chain_mark: Set(None),
    })
    .exec_without_returning(&*txn)
    .await?;
    insert_key(&*txn, first).await?;
    txn.commit().await?;
    Ok(())
}

async fn insert_key<C: ConnectionTrait>(conn: &C, key: &DataKey) -> Result<()> {
    data_keys::Entity::insert(data_keys::ActiveModel {
        id: Set(key.id),
        wrapped_key: Set(key.wrapped_key.clone()),
        state: Set(key.state.as_str().to_owned()),
        use_count: Set(i64::try_from(key.use_count).unwrap_or(i64::MAX)),
        created_at: Set(key.created_at),
        retired_at: Set(key.retired_at),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

pub async fn keys(db: &Db) -> Result<Vec<DataKey>> {
    data_keys::Entity::find()
        .order_by_asc(data_keys::Column::CreatedAt)
        .all(db.conn())
        .await?
        .into_iter()
        .map(DataKey::try_from)
        .collect()
}

pub async fn key(db: &Db, id: Uuid) -> Result<Option<DataKey>> {
    data_keys::Entity::find_by_id(id).one(db.conn()).await?.map(DataKey::try_from).transpose()
}

pub async fn active_key(db: &Db) -> Result<Option<DataKey>> {
    data_keys::Entity::find()
        .filter(data_keys::Column::State.eq(KeyState::Active.as_str()))
        .one(db.conn())
        .await?
        .map(DataKey::try_from)
        .transpose()
}

pub async fn add_uses(db: &Db, id: Uuid, n: u64) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    data_keys::Entity::update_many()
        .col_expr(
            data_keys::Column::UseCount,
            Expr::col(data_keys::Column::UseCount).add(i64::try_from(n).unwrap_or(i64::MAX)),
        )
        .filter(data_keys::Column::Id.eq(id))
        .exec(db.conn())
        .await?;
    Ok(())
}

/// Demotes `old` to decrypt-only and inserts `new` as active, only if `old`
/// is still the active key (compare-and-set). `false` if another writer
/// rotated first.
pub async fn rotate(db: &Db, old: Uuid, new: &DataKey) -> Result<bool> {
    let txn = db.begin_write().await?;
    let demoted = data_keys::Entity::update_many()
        .col_expr(data_keys::Column::State, Expr::val(KeyState::DecryptOnly.as_str()))
        .filter(data_keys::Column::Id.eq(old))
        .filter(data_keys::Column::State.eq(KeyState::Active.as_str()))
        .exec(&*txn)
        .await?;
    if demoted.rows_affected != 1 {
        return Ok(false); // dropping the transaction rolls it back
    }
    insert_key(&*txn, new).await?;
    txn.commit().await?;
    Ok(true)
}

/// Retires a decrypt-only key.
pub async fn retire(db: &Db, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
    let result = data_keys::Entity::update_many()
        .col_expr(data_keys::Column::State, Expr::val(KeyState::Retired.as_str()))
        .col_expr(data_keys::Column::RetiredAt, Expr::val(now))
        .filter(data_keys::Column::Id.eq(id))
        .filter(data_keys::Column::State.eq(KeyState::DecryptOnly.as_str()))
        .exec(db.conn())
        .await?;
    Ok(result.rows_affected == 1)
}

/// How many sealed rows, over all columns, each key encrypts.
pub async fn rows_per_key(db: &Db) -> Result<HashMap<Uuid, u64>> {
    // Spans users: the re-encryption task may read the sealed credentials.
    let conn = db.read_as(Scope::Task(Task::Reencrypt)).await?;
    let mut usage = HashMap::new();
    for column in SealedColumn::ALL {
        let spec = column.spec();
        let stmt = Query::select()
            .column(spec.key_id)
            .expr_as(Func::count(Expr::col(spec.pk)), "n")
            .from(spec.table)
            .and_where(Expr::col(spec.key_id).is_not_null())
            .group_by_col(spec.key_id)
            .to_owned();
        for row in conn.query_all(&stmt).await? {
            let key: Uuid = row.try_get("", spec.key_id)?;
            let n: i64 = row.try_get("", "n")?;
            *usage.entry(key).or_insert(0) += u64::try_from(n).unwrap_or(0);
        }
    }
    Ok(usage)
}

/// Up to `limit` rows of `column` not sealed under `exclude_key`, after
/// `after` in primary-key order (so a skipped row is never fetched again).
pub async fn sealed_batch(
    db: &Db,
    column: SealedColumn,
    exclude_key: Uuid,
    after: Option<&RowKey>,
    limit: u64,
) -> Result<Vec<SealedRow>> {
    let spec = column.spec();
    let mut stmt = Query::select();
    stmt.column(spec.pk)
        .column(spec.key_id)
        .column(spec.ciphertext)
        .from(spec.table)
        .and_where(Expr::col(spec.key_id).is_not_null())
        .and_where(Expr::col(spec.key_id).ne(exclude_key))
        .order_by(spec.pk, Order::Asc)
        .limit(limit);
    if let Some(owner) = spec.owner {
        stmt.expr_as(Expr::col(owner), "owner_id");
    }
    if let Some(after) = after {
        stmt.and_where(Expr::col(spec.pk).gt(after.value(spec.pk_kind)));
    }
    let rows = db.read_as(Scope::Task(Task::Reencrypt)).await?.query_all(&stmt).await?;
    rows.into_iter()
        .map(|row| {
            let pk = match spec.pk_kind {
                PkKind::Uuid => RowKey::Uuid(row.try_get("", spec.pk)?),
                PkKind::BigInt => RowKey::Int(row.try_get::<i64>("", spec.pk)?),
                PkKind::Int => RowKey::Int(i64::from(row.try_get::<i32>("", spec.pk)?)),
            };
            let owner = match spec.owner {
                Some(_) => row.try_get::<Option<Uuid>>("", "owner_id")?.map_or(Owner::System, Owner::User),
                None => Owner::System,
            };
            Ok(SealedRow {
                column,
                pk,
                owner,
                key_id: row.try_get("", spec.key_id)?,
                ciphertext: row.try_get("", spec.ciphertext)?,
            })
        })
        .collect()
}

/// Replaces a row's ciphertext if it is still under the key it was read
/// with (compare-and-set against concurrent writers).
pub async fn reseal(db: &Db, row: &SealedRow, new_key: Uuid, ciphertext: &str) -> Result<bool> {
    let spec = row.column.spec();
    let stmt = Query::update()
        .table(spec.table)
        .value(spec.key_id, new_key)
        .value(spec.ciphertext, ciphertext)
        .and_where(Expr::col(spec.pk).eq(row.pk.value(spec.pk_kind)))
        .and_where(Expr::col(spec.key_id).eq(row.key_id))
        // Unchanged since it was read: a concurrent write (a new TOTP
        // enrolment, say) is never overwritten with older data.
        .and_where(Expr::col(spec.ciphertext).eq(row.ciphertext.as_str()))
        .to_owned();
    // Written as its owner (row-level security), not as the task.
    let txn = match row.owner {
        Owner::User(id) => db.begin_write_as(Scope::User(id)).await?,
        Owner::System => db.begin_write().await?,
    };
    let result = txn.execute(&stmt).await?;
    txn.commit().await?;
    Ok(result.rows_affected() == 1)
}
