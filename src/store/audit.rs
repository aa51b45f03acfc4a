//! The append-only audit log, hash-chained: each row's `hash` covers the
//! previous row's hash and every field of the row, so altering, deleting or
//! reordering rows breaks the chain at that point.
//!
//! Appends are serialized (a Postgres advisory lock held to the end of the
//! transaction; SQLite has one writer), so concurrent events never fork the
//! chain. Events are appended inside the transaction of the change they
//! record: a committed change always has its audit row.

use chrono::{DateTime, Utc};
use entity::audit_events;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseBackend, EntityTrait, QueryOrder, QuerySelect, Statement};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::StoreError;
use super::db::{Db, WriteTxn};

/// `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Arbitrary constant naming the audit append lock.
const AUDIT_LOCK_KEY: i64 = 0x6c6b_6175_6469_74;

#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub occurred_at: DateTime<Utc>,
    pub event: &'static str,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub device_id: Option<String>,
    pub ip: Option<String>,
    pub outcome: &'static str,
    /// Sealed details: (key id, ciphertext).
    pub details: Option<(Uuid, String)>,
}

/// The bytes a row's hash covers, in a fixed order.
fn chain_hash(prev: &str, row: &audit_events::Model) -> String {
    let canonical = serde_json::json!([
        prev,
        row.occurred_at.timestamp_micros(),
        row.event,
        row.user_id,
        row.session_id,
        row.device_id,
        row.ip,
        row.outcome,
        row.details_key_id,
        row.details,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Appends events inside `txn`, after the change they record.
pub async fn append_in(txn: &WriteTxn, events: &[NewAuditEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let conn: &sea_orm::DatabaseTransaction = txn;
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        conn.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [AUDIT_LOCK_KEY.into()],
        ))
        .await?;
    }
    let last = audit_events::Entity::find()
        .order_by_desc(audit_events::Column::Id)
        .select_only()
        .column(audit_events::Column::Hash)
        .into_tuple::<String>()
        .one(conn)
        .await?;
    let mut prev = last.unwrap_or_else(|| GENESIS_HASH.to_owned());
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        // Postgres keeps microseconds: hash what will be read back.
        let occurred_at = DateTime::from_timestamp_micros(event.occurred_at.timestamp_micros()).unwrap_or_default();
        let mut row = audit_events::Model {
            id: 0,
            occurred_at,
            event: event.event.to_owned(),
            user_id: event.user_id,
            session_id: event.session_id,
            device_id: event.device_id.clone(),
            ip: event.ip.clone(),
            outcome: event.outcome.to_owned(),
            details_key_id: event.details.as_ref().map(|d| d.0),
            details: event.details.as_ref().map(|d| d.1.clone()),
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        row.hash = chain_hash(&prev, &row);
        prev = row.hash.clone();
        rows.push(audit_events::ActiveModel {
            occurred_at: Set(row.occurred_at),
            event: Set(row.event),
            user_id: Set(row.user_id),
            session_id: Set(row.session_id),
            device_id: Set(row.device_id),
            ip: Set(row.ip),
            outcome: Set(row.outcome),
            details_key_id: Set(row.details_key_id),
            details: Set(row.details),
            prev_hash: Set(row.prev_hash),
            hash: Set(row.hash),
            ..Default::default()
        });
    }
    // One statement for all of them: ids follow the order of the rows.
    audit_events::Entity::insert_many(rows).exec_without_returning(conn).await?;
    Ok(())
}

/// Appends events in their own transaction.
pub async fn append(db: &Db, events: &[NewAuditEvent]) -> Result<(), StoreError> {
    let txn = db.begin_write().await?;
    append_in(&txn, events).await?;
    txn.commit().await
}

/// Walks the chain in id order; returns the id of the first row whose
/// `prev_hash` or `hash` does not match, or `None` when the chain is intact.
pub async fn verify_chain(db: &Db) -> Result<(u64, Option<i64>), StoreError> {
    const PAGE: u64 = 1000;
    let mut prev = GENESIS_HASH.to_owned();
    let mut after = i64::MIN;
    let mut checked = 0u64;
    loop {
        let rows = audit_events::Entity::find()
            .filter_by_id_after(after)
            .order_by_asc(audit_events::Column::Id)
            .limit(PAGE)
            .all(db.conn())
            .await?;
        let Some(last) = rows.last() else { return Ok((checked, None)) };
        after = last.id;
        for row in rows {
            if row.prev_hash != prev || chain_hash(&prev, &row) != row.hash {
                return Ok((checked, Some(row.id)));
            }
            checked += 1;
            prev = row.hash;
        }
    }
}

trait AfterId {
    fn filter_by_id_after(self, id: i64) -> Self;
}

impl AfterId for sea_orm::Select<audit_events::Entity> {
    fn filter_by_id_after(self, id: i64) -> Self {
        use sea_orm::{ColumnTrait as _, QueryFilter as _};
        self.filter(audit_events::Column::Id.gt(id))
    }
}
