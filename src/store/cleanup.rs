//! Deleting rows that no longer mean anything: dead sessions (with their
//! refresh tokens), spent or expired reset tokens, and devices unseen for
//! long. Each call deletes at most `batch` rows in one short transaction;
//! the caller loops. Every DELETE repeats its condition, so rows picked by
//! two replicas at once are deleted once (the second finds nothing), and a
//! row that came back to life between the pick and the delete (a device
//! seen again) stays. The audit log is never touched.

use chrono::{DateTime, Utc};
use entity::{devices, refresh_tokens, reset_tokens, sessions};
use sea_orm::sea_query::{Expr, ExprTrait as _, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait as _, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::StoreError;
use super::db::{Db, Scope, Task, WriteTxn};
use crate::domain::states::Trust;

type Result<T> = std::result::Result<T, StoreError>;

const MAINTENANCE: Scope<'static> = Scope::Task(Task::Maintenance);

/// A batch's transaction. On Postgres, replicas cleaning at once take
/// turns per batch (a transaction-scoped advisory lock): their deletes
/// would otherwise wait on each other's row locks in any order. SQLite has
/// one writer anyway. Cleanup spans users: it runs as the maintenance task
/// (row-level security lets it read and delete these tables only).
async fn begin_batch(db: &Db) -> Result<WriteTxn> {
    let txn = db.begin_write_as(MAINTENANCE).await?;
    if db.backend() == DatabaseBackend::Postgres {
        txn.execute_raw(sea_orm::Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock(7236016404233859438)",
        ))
        .await?;
    }
    Ok(txn)
}

/// Sessions that ended before `cutoff`: revoked, past their absolute
/// expiry, or idle (last seen before `idle_cutoff`, which is `cutoff` less
/// the idle timeout).
fn dead_sessions(cutoff: DateTime<Utc>, idle_cutoff: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(sessions::Column::RevokedAt.lt(cutoff))
        .add(sessions::Column::ExpiresAt.lt(cutoff))
        .add(sessions::Column::LastSeenAt.lt(idle_cutoff))
}

/// Deletes up to `batch` dead sessions and their refresh tokens. Returns
/// (sessions deleted, refresh tokens deleted, token hashes of the deleted
/// sessions, for the cache to forget).
pub async fn delete_dead_sessions(
    db: &Db,
    cutoff: DateTime<Utc>,
    idle_cutoff: DateTime<Utc>,
    batch: u64,
) -> Result<(u64, u64, Vec<String>)> {
    let conn = db.read_as(MAINTENANCE).await?;
    let picked: Vec<(Uuid, String)> = sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .column(sessions::Column::TokenHash)
        .filter(dead_sessions(cutoff, idle_cutoff))
        .order_by_asc(sessions::Column::Id)
        .limit(batch)
        .into_tuple()
        .all(&conn)
        .await?;
    drop(conn);
    if picked.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let ids: Vec<Uuid> = picked.iter().map(|(id, _)| *id).collect();
    let txn = begin_batch(db).await?;
    // The foreign key cascades too; deleting them first keeps the count.
    let tokens = refresh_tokens::Entity::delete_many()
        .filter(refresh_tokens::Column::SessionId.is_in(ids.clone()))
        .exec(&*txn)
        .await?;
    let deleted = sessions::Entity::delete_many()
        .filter(sessions::Column::Id.is_in(ids))
        .filter(dead_sessions(cutoff, idle_cutoff))
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok((deleted.rows_affected, tokens.rows_affected, picked.into_iter().map(|(_, hash)| hash).collect()))
}

/// Deletes up to `batch` refresh tokens of sessions that live on, which
/// expired before `cutoff` (rotated ones stay until then: a rotated token
/// coming back revokes its session).
pub async fn delete_expired_refresh_tokens(db: &Db, cutoff: DateTime<Utc>, batch: u64) -> Result<u64> {
    let expired = Condition::all().add(refresh_tokens::Column::ExpiresAt.lt(cutoff));
    delete_where::<refresh_tokens::Entity, Uuid>(db, refresh_tokens::Column::Id, expired, batch).await
}

fn spent_reset_tokens(cutoff: DateTime<Utc>) -> Condition {
    Condition::any().add(reset_tokens::Column::UsedAt.lt(cutoff)).add(reset_tokens::Column::ExpiresAt.lt(cutoff))
}

/// Deletes up to `batch` reset tokens spent or expired before `cutoff`.
pub async fn delete_spent_reset_tokens(db: &Db, cutoff: DateTime<Utc>, batch: u64) -> Result<u64> {
    delete_where::<reset_tokens::Entity, Uuid>(db, reset_tokens::Column::Id, spent_reset_tokens(cutoff), batch).await
}

/// Devices last seen before `cutoff`, with no session row, and not blocked
/// (a deleted block would be lifted).
fn stale_devices(cutoff: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(devices::Column::LastSeenAt.lt(cutoff))
        .add(devices::Column::Trust.ne(Trust::Blocked.as_str()))
        .add(
            devices::Column::Id.not_in_subquery(
                Query::select()
                    .column(sessions::Column::DeviceId)
                    .from(sessions::Entity)
                    .and_where(Expr::col(sessions::Column::DeviceId).is_not_null())
                    .to_owned(),
            ),
        )
}

/// Deletes up to `batch` stale devices.
pub async fn delete_stale_devices(db: &Db, cutoff: DateTime<Utc>, batch: u64) -> Result<u64> {
    delete_where::<devices::Entity, String>(db, devices::Column::Id, stale_devices(cutoff), batch).await
}

/// Picks up to `batch` ids of rows matching `condition`, then deletes those
/// of them that still match (a concurrent run may have taken some), in one
/// batch transaction.
async fn delete_where<E, Id>(db: &Db, id: E::Column, condition: Condition, batch: u64) -> Result<u64>
where
    E: EntityTrait,
    Id: sea_orm::TryGetableMany + Into<sea_orm::Value>,
{
    let conn = db.read_as(MAINTENANCE).await?;
    let ids: Vec<Id> = E::find()
        .select_only()
        .column(id)
        .filter(condition.clone())
        .order_by_asc(id)
        .limit(batch)
        .into_tuple()
        .all(&conn)
        .await?;
    drop(conn);
    if ids.is_empty() {
        return Ok(0);
    }
    let txn = begin_batch(db).await?;
    let deleted = E::delete_many().filter(id.is_in(ids)).filter(condition).exec(&*txn).await?;
    txn.commit().await?;
    Ok(deleted.rows_affected)
}
