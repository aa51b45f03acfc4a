//! The append-only audit log, chained by MACs: each row's `hash` is an
//! HMAC-SHA256, under a key derived from the keyring, over the previous
//! row's hash and every field of the row. Altering, deleting, inserting or
//! reordering rows breaks the chain at that point, and someone who can only
//! write the table cannot compute a valid replacement.
//!
//! Rows written before the chain was keyed carry a plain SHA-256 instead.
//! Keying appends one marker row, [`CHAIN_KEYED_EVENT`], whose MAC covers the
//! last unkeyed hash, so the keyed part vouches for the whole prefix:
//!
//! ```text
//!  id 1 .. k-1   SHA-256(prev, fields)       written before keying (maybe none)
//!  id k          HMAC(key, prev, fields)     audit.chain_keyed, prev = hash of k-1
//!  id k+1 ..     HMAC(key, prev, fields)
//! ```
//!
//! Verification checks the prefix with SHA-256 and everything from the
//! first marker on with the key; a non-empty chain without a marker fails,
//! since its hashes could all have been recomputed. Deleting the newest rows
//! leaves a shorter valid chain: that is caught against a head (sequence,
//! hash) recorded earlier, see [`verify`]. The sequence is the row id.
//!
//! Appends are serialized (a Postgres advisory lock held to the end of the
//! transaction; SQLite has one writer), so concurrent events never fork the
//! chain. Events are appended inside the transaction of the change they
//! record: a committed change always has its audit row. A scoped
//! transaction on Postgres appends when it commits, after all its other
//! statements, so it holds the lock only for two messages: the lock with
//! the head's read, then the rows with the COMMIT (see
//! [`commit_appending`]); its values are written into that message as
//! literals, so they show in the server's log of a failed statement, as
//! the scope's settings do. Transactions that append take the lock after
//! their row locks, so the lock adds no deadlock (keying the chain updates
//! the keyring's row after it, a row no appending transaction locks).
//! Write transactions are READ COMMITTED whatever the database's default:
//! the head is read in a statement after the lock's, with a newer snapshot.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use entity::audit_events;
use hmac::Mac as _;
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter as _, QueryOrder,
    QuerySelect, Statement,
};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use super::StoreError;
use super::db::{Db, WriteTxn};

/// `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The marker row from which the chain is keyed.
pub const CHAIN_KEYED_EVENT: &str = "audit.chain_keyed";

/// Arbitrary constant naming the audit append lock.
const AUDIT_LOCK_KEY: i64 = 0x006c_6b61_7564_6974;

type HmacSha256 = hmac::Hmac<Sha256>;

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

/// The key of the chain's MACs.
#[derive(Clone, PartialEq, Eq)]
struct ChainKey([u8; 32]);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

/// What a database handle knows of its chain: the key once loaded, and
/// whether the marker is known to exist. Shared by every clone of a [`Db`].
#[derive(Debug, Default)]
pub struct ChainState {
    key: OnceLock<ChainKey>,
    keyed: AtomicBool,
    /// The hash of the last row this handle appended (after its commit):
    /// the next append on Postgres inserts on the condition that it is
    /// still the head, instead of reading the head first.
    head: std::sync::Mutex<Option<String>>,
}

impl ChainState {
    fn load(&self, key: ChainKey) -> Result<(), StoreError> {
        match self.key.set(key) {
            Ok(()) => Ok(()),
            Err(key) if self.key.get() == Some(&key) => Ok(()),
            Err(_) => Err(StoreError::Database("a different audit chain key is already loaded".into())),
        }
    }

    fn cached_head(&self) -> Option<String> {
        self.head.lock().ok().and_then(|h| h.clone())
    }

    /// After a commit: `hash` is the head that transaction appended.
    pub(super) fn committed(&self, hash: String) {
        if let Ok(mut head) = self.head.lock() {
            *head = Some(hash);
        }
    }

    fn key(&self) -> Result<&ChainKey, StoreError> {
        self.key.get().ok_or_else(|| StoreError::Database("the audit chain key is not loaded".into()))
    }
}

/// A point of the chain: a row's id and hash, written `SEQ:HASH`. The head
/// is the newest row's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub sequence: i64,
    pub hash: String,
}

impl std::fmt::Display for ChainHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.sequence, self.hash)
    }
}

impl std::str::FromStr for ChainHead {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (sequence, hash) = s.split_once(':').ok_or("expected SEQ:HASH")?;
        let sequence = sequence.parse().map_err(|_| format!("{sequence:?} is not a sequence number"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{hash:?} is not 64 hexadecimal digits"));
        }
        Ok(Self { sequence, hash: hash.to_ascii_lowercase() })
    }
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainFault {
    /// This row's `prev_hash` or `hash` does not match: it, or the row
    /// before it, was altered, removed, inserted or reordered.
    Broken { id: i64 },
    /// Rows from `first` on, but no marker: the chain was never keyed, or
    /// its keyed part was replaced by recomputed plain hashes.
    Unkeyed { first: i64 },
    /// No row has the head's sequence: the chain ends at `last`, so rows
    /// up to the head were deleted.
    HeadMissing { head: i64, last: Option<i64> },
    /// The row at the head's sequence has another hash.
    HeadMismatch { head: i64 },
    /// The marker row the keyring anchors (`anchor`, 0 when the anchor
    /// itself does not verify) is gone or altered.
    AnchorBroken { anchor: i64 },
}

impl std::fmt::Display for ChainFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Broken { id } => write!(f, "broken at event id {id}"),
            Self::Unkeyed { first } => write!(
                f,
                "not keyed: no {CHAIN_KEYED_EVENT} row, so the hashes from event id {first} on could have been recomputed \
                 (an older version's log is keyed when the service next starts)"
            ),
            Self::HeadMissing { head, last: Some(last) } => {
                write!(f, "head {head} is missing: the chain ends at event id {last}, newer rows were deleted")
            }
            Self::HeadMissing { head, last: None } => write!(f, "head {head} is missing: the chain is empty"),
            Self::HeadMismatch { head } => write!(f, "event id {head} does not have the head's hash"),
            Self::AnchorBroken { anchor: 0 } => write!(f, "the keyring's anchor of the chain does not verify"),
            Self::AnchorBroken { anchor } => write!(
                f,
                "the row that keyed the chain (event id {anchor}, anchored in the keyring) is gone or altered"
            ),
        }
    }
}

/// The outcome of a walk along the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Rows verified before the fault, if any.
    pub checked: u64,
    /// How many of them precede the marker (checked with plain SHA-256).
    pub unkeyed: u64,
    /// The marker's id.
    pub keyed_at: Option<i64>,
    /// The last row verified: the chain's head when it is intact.
    pub head: Option<ChainHead>,
    pub fault: Option<ChainFault>,
}

/// What keying did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keying {
    /// The chain had its marker already.
    AlreadyKeyed,
    /// The marker was appended after `unkeyed` verified rows; `broken_at`
    /// is the first older row that did not verify (the marker's outcome is
    /// then `failure`).
    Keyed { marker: ChainHead, unkeyed: u64, broken_at: Option<i64> },
    /// The keyring's anchor names a marker row that is gone or altered: the
    /// chain is not keyed anew (appends stay keyed), and verify fails.
    AnchorBroken { anchor: i64 },
}

/// The text a row's hash covers, in a fixed order.
fn canonical(prev: &str, row: &audit_events::Model) -> String {
    serde_json::json!([
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
    ])
    .to_string()
}

/// A row's hash: the MAC under `key`, or plain SHA-256 for rows before the
/// marker.
fn link(key: Option<&ChainKey>, prev: &str, row: &audit_events::Model) -> String {
    let text = canonical(prev, row);
    match key {
        Some(key) => {
            let mut mac = <HmacSha256 as hmac::Mac>::new_from_slice(&key.0).expect("HMAC takes keys of any length");
            mac.update(text.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        None => hex::encode(Sha256::digest(text.as_bytes())),
    }
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Loads the chain key into `db` for verification. Appending needs the
/// chain keyed as well: see [`key_chain`].
pub fn load_chain_key(db: &Db, key: [u8; 32]) -> Result<(), StoreError> {
    db.audit_chain.load(ChainKey(key))
}

/// Loads the chain key into `db` and, when the chain has no marker yet,
/// verifies the older rows with SHA-256 and appends the marker. Old rows
/// are never rewritten. Idempotent, and safe for replicas starting at once.
pub async fn key_chain(db: &Db, key: [u8; 32], now: DateTime<Utc>) -> Result<Keying, StoreError> {
    load_chain_key(db, key)?;
    let key = db.audit_chain.key()?;
    // Once anchored in the keyring, the chain is never keyed anew: a
    // missing marker then means rows were removed, not an older log.
    if let Some(anchor) = read_anchor(db.conn(), key).await? {
        db.audit_chain.keyed.store(true, Ordering::Release);
        return Ok(match anchor_holds(db.conn(), &anchor).await? {
            true => Keying::AlreadyKeyed,
            false => Keying::AnchorBroken { anchor: anchor.map_or(0, |h| h.sequence) },
        });
    }
    if let Some(marker) = first_marker(db.conn()).await? {
        // Keyed before anchors existed: anchor that marker now.
        write_anchor(db.conn(), key, &marker).await?;
        db.audit_chain.keyed.store(true, Ordering::Release);
        return Ok(Keying::AlreadyKeyed);
    }
    // Most of the old chain is verified without holding the append lock;
    // under it, only the rows appended meanwhile.
    let mut walk = Walk::new(key, None);
    walk.advance(db.conn()).await?;
    let txn = db.begin_write().await?;
    lock(&txn).await?;
    if marker_exists(&*txn).await? {
        db.audit_chain.keyed.store(true, Ordering::Release);
        return Ok(Keying::AlreadyKeyed);
    }
    walk.advance(&*txn).await?;
    let old = walk.finish();
    let broken_at = match old.fault {
        Some(ChainFault::Broken { id }) => Some(id),
        _ => None,
    };
    let marker = NewAuditEvent {
        occurred_at: now,
        event: CHAIN_KEYED_EVENT,
        user_id: None,
        session_id: None,
        device_id: None,
        ip: None,
        outcome: if broken_at.is_none() { "success" } else { "failure" },
        details: None,
    };
    let prev = last_hash(&*txn).await?;
    insert_rows(&txn, chain_rows(key, prev, &[marker]).0).await?;
    let marker = head(&*txn).await?.ok_or_else(|| StoreError::Database("the marker row is not there".into()))?;
    write_anchor(&*txn, key, &marker).await?;
    txn.commit().await?;
    db.audit_chain.keyed.store(true, Ordering::Release);
    Ok(Keying::Keyed { marker, unkeyed: old.checked, broken_at })
}

async fn lock(txn: &WriteTxn) -> Result<(), StoreError> {
    if txn.audit_locked.load(Ordering::Acquire) {
        return Ok(());
    }
    let conn: &super::db::Txn = txn;
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        conn.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [AUDIT_LOCK_KEY.into()],
        ))
        .await?;
        txn.audit_locked.store(true, Ordering::Release);
    }
    Ok(())
}

async fn marker_exists(conn: &impl ConnectionTrait) -> Result<bool, StoreError> {
    let found = audit_events::Entity::find()
        .filter(audit_events::Column::Event.eq(CHAIN_KEYED_EVENT))
        .select_only()
        .column(audit_events::Column::Id)
        .into_tuple::<i64>()
        .one(conn)
        .await?;
    Ok(found.is_some())
}

async fn last_hash(conn: &impl ConnectionTrait) -> Result<String, StoreError> {
    Ok(head(conn).await?.map_or_else(|| GENESIS_HASH.to_owned(), |h| h.hash))
}

async fn head(conn: &impl ConnectionTrait) -> Result<Option<ChainHead>, StoreError> {
    let last = audit_events::Entity::find()
        .order_by_desc(audit_events::Column::Id)
        .select_only()
        .columns([audit_events::Column::Id, audit_events::Column::Hash])
        .into_tuple::<(i64, String)>()
        .one(conn)
        .await?;
    Ok(last.map(|(sequence, hash)| ChainHead { sequence, hash }))
}

/// Appends events inside `txn`, after the change they record. Fails when
/// the chain key is not loaded or the chain not keyed: a row is never
/// written with a plain hash.
pub async fn append_in(txn: &WriteTxn, events: &[NewAuditEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let key = txn.audit_chain.key()?;
    let scoped = matches!(&**txn, super::db::Txn::Scoped(_));
    if !scoped {
        lock(txn).await?;
    }
    if !txn.audit_chain.keyed.load(Ordering::Acquire) {
        if !marker_exists(&**txn).await? {
            return Err(StoreError::Database("the audit chain is not keyed yet".into()));
        }
        txn.audit_chain.keyed.store(true, Ordering::Release);
    }
    if scoped {
        txn.deferred_audit.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(events);
        return Ok(());
    }
    // Under the lock, the head this handle appended last is usually still
    // the head: insert on that condition, and read the head only when it
    // is not (another replica appended, or nothing is cached).
    let postgres = txn.get_database_backend() == DatabaseBackend::Postgres;
    let cached = txn.pending_head.lock().ok().and_then(|h| h.clone()).or_else(|| txn.audit_chain.cached_head());
    if let Some(prev) = cached.filter(|_| postgres) {
        let (rows, head) = chain_rows(key, prev.clone(), events);
        if insert_if_head(txn, &prev, &rows).await? {
            return set_pending(txn, head);
        }
    }
    let prev = last_hash(&**txn).await?;
    let (rows, head) = chain_rows(key, prev, events);
    insert_rows(txn, rows).await?;
    set_pending(txn, head)
}

/// Commits a scoped transaction with its audit `events` (Postgres), in two
/// messages under the append lock: the lock and the head's read (a
/// statement of its own, whose snapshot sees every append committed before
/// the lock was granted), then the chained rows and the COMMIT. Returns the
/// new head.
pub(super) async fn commit_appending(
    mut lease: super::scoped_pool::Lease,
    chain: &ChainState,
    events: &[NewAuditEvent],
) -> Result<String, StoreError> {
    use sea_orm::sqlx::{self, Row as _};
    let query_err = |e: sqlx::Error| StoreError::from(sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(e.into())));
    let key = chain.key()?;
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_xact_lock({AUDIT_LOCK_KEY})::text AS locked; \
         SELECT hash AS head FROM audit_events ORDER BY id DESC LIMIT 1"
    )))
    .fetch_all(lease.conn())
    .await
    .map_err(query_err)?;
    let mut prev = GENESIS_HASH.to_owned();
    for row in &rows {
        if row.columns().first().is_some_and(|c| sqlx::Column::name(c) == "head") {
            prev = row.try_get::<String, _>(0).map_err(|e| StoreError::Database(e.to_string()))?;
        }
    }
    let (rows, head) = chain_rows(key, prev, events);
    lease.commit_after(&insert_literal(&rows)).await.map_err(query_err)?;
    Ok(head)
}

/// The INSERT of chained rows with their values as literals (for a message
/// that also commits). Strings go through `text_literal`; timestamps and
/// ids are written from their types.
fn insert_literal(rows: &[audit_events::Model]) -> String {
    use super::db::text_literal;
    let text = |v: Option<&str>| v.map_or_else(|| "NULL".to_owned(), text_literal);
    let uuid = |v: Option<Uuid>| v.map_or_else(|| "NULL".to_owned(), |id| format!("'{id}'::uuid"));
    let values: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "('{}'::timestamptz, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                row.occurred_at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
                text_literal(&row.event),
                uuid(row.user_id),
                uuid(row.session_id),
                text(row.device_id.as_deref()),
                text(row.ip.as_deref()),
                text_literal(&row.outcome),
                uuid(row.details_key_id),
                text(row.details.as_deref()),
                text_literal(&row.prev_hash),
                text_literal(&row.hash),
            )
        })
        .collect();
    format!(
        "INSERT INTO audit_events (occurred_at, event, user_id, session_id, device_id, ip, outcome, details_key_id, \
         details, prev_hash, hash) VALUES {}",
        values.join(", ")
    )
}

fn set_pending(txn: &WriteTxn, head: String) -> Result<(), StoreError> {
    if let Ok(mut pending) = txn.pending_head.lock() {
        *pending = Some(head);
    }
    Ok(())
}

/// Inserts the chained rows only if the chain's head is `prev` (one
/// statement, after the lock: its snapshot sees every committed append).
async fn insert_if_head(txn: &WriteTxn, prev: &str, rows: &[audit_events::Model]) -> Result<bool, StoreError> {
    use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, Func, Order, Query};
    let expected = rows.len();
    let columns = [
        audit_events::Column::OccurredAt,
        audit_events::Column::Event,
        audit_events::Column::UserId,
        audit_events::Column::SessionId,
        audit_events::Column::DeviceId,
        audit_events::Column::Ip,
        audit_events::Column::Outcome,
        audit_events::Column::DetailsKeyId,
        audit_events::Column::Details,
        audit_events::Column::PrevHash,
        audit_events::Column::Hash,
    ];
    let tuples = rows.iter().map(|row| {
        sea_orm::sea_query::ValueTuple::Many(vec![
            row.occurred_at.into(),
            row.event.clone().into(),
            row.user_id.into(),
            row.session_id.into(),
            row.device_id.clone().into(),
            row.ip.clone().into(),
            row.outcome.clone().into(),
            row.details_key_id.into(),
            row.details.clone().into(),
            row.prev_hash.clone().into(),
            row.hash.clone().into(),
        ])
    });
    let head = Query::select()
        .column(audit_events::Column::Hash)
        .from(audit_events::Entity)
        .order_by(audit_events::Column::Id, Order::Desc)
        .limit(1)
        .to_owned();
    let mut select = Query::select();
    // The columns of a VALUES list are named column1, column2, ... .
    select
        .columns((1..=columns.len()).map(|i| Alias::new(format!("column{i}"))))
        .from_values(tuples, Alias::new("v"))
        .and_where(
            Expr::expr(Func::coalesce([Expr::SubQuery(None, Box::new(head.into())), Expr::val(GENESIS_HASH)])).eq(prev),
        );
    let insert = Query::insert()
        .into_table(audit_events::Entity)
        .columns(columns)
        .select_from(select)
        .map_err(|e| StoreError::Database(e.to_string()))?
        .to_owned();
    let done = txn.execute(&insert).await?;
    Ok(usize::try_from(done.rows_affected()).is_ok_and(|n| n == expected))
}

/// `events` as rows chained after `prev`, and the new head.
fn chain_rows(key: &ChainKey, mut prev: String, events: &[NewAuditEvent]) -> (Vec<audit_events::Model>, String) {
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
        row.hash = link(Some(key), &prev, &row);
        prev = row.hash.clone();
        rows.push(row);
    }
    (rows, prev)
}

/// Inserts chained rows (one statement: ids follow the order of the rows).
async fn insert_rows(conn: &super::db::Txn, rows: Vec<audit_events::Model>) -> Result<(), StoreError> {
    let rows = rows.into_iter().map(|row| audit_events::ActiveModel {
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
    audit_events::Entity::insert_many(rows).exec_without_returning(conn).await?;
    Ok(())
}

/// Appends events in their own transaction.
pub async fn append(db: &Db, events: &[NewAuditEvent]) -> Result<(), StoreError> {
    let txn = db.begin_write().await?;
    append_in(&txn, events).await?;
    txn.commit().await
}

/// The newest row's id and hash.
pub async fn chain_head(db: &Db) -> Result<Option<ChainHead>, StoreError> {
    head(db.conn()).await
}

/// The hash of the row with id `sequence`, if there is one.
pub async fn hash_at(db: &Db, sequence: i64) -> Result<Option<String>, StoreError> {
    Ok(audit_events::Entity::find_by_id(sequence)
        .select_only()
        .column(audit_events::Column::Hash)
        .into_tuple::<String>()
        .one(db.conn())
        .await?)
}

/// Walks the whole chain in id order with the loaded key, stopping at the
/// first fault. With `head` (recorded earlier), the row with its sequence
/// must still be there with its hash: deleting the newest rows leaves a
/// valid but shorter chain, which only a head recorded elsewhere reveals.
pub async fn verify(db: &Db, head: Option<&ChainHead>) -> Result<ChainReport, StoreError> {
    let key = db.audit_chain.key()?;
    let mut walk = Walk::new(key, head);
    walk.advance(db.conn()).await?;
    let mut report = walk.finish();
    if report.fault.is_none()
        && let Some(anchor) = read_anchor(db.conn(), key).await?
        && !anchor_holds(db.conn(), &anchor).await?
    {
        report.fault = Some(ChainFault::AnchorBroken { anchor: anchor.as_ref().map_or(0, |h| h.sequence) });
    }
    Ok(report)
}

/// The keyring's anchor: the marker row's id and hash under a MAC. `None`
/// when there is none; `Some(None)` when it does not verify.
async fn read_anchor(conn: &impl ConnectionTrait, key: &ChainKey) -> Result<Option<Option<ChainHead>>, StoreError> {
    let mark = entity::keyring::Entity::find_by_id(1)
        .select_only()
        .column(entity::keyring::Column::AuditChainMark)
        .into_tuple::<Option<String>>()
        .one(conn)
        .await?
        .flatten();
    let Some(mark) = mark else { return Ok(None) };
    let parsed = mark.rsplit_once(':').and_then(|(head, mac)| {
        let (id, hash) = head.split_once(':')?;
        let head = ChainHead { sequence: id.parse().ok()?, hash: hash.to_owned() };
        same(&anchor_mac(key, &head), mac).then_some(head)
    });
    Ok(Some(parsed))
}

fn anchor_mac(key: &ChainKey, head: &ChainHead) -> String {
    let mut mac = <HmacSha256 as hmac::Mac>::new_from_slice(&key.0).expect("HMAC takes keys of any length");
    mac.update(b"latchkey audit chain anchor\0");
    mac.update(format!("{}:{}", head.sequence, head.hash).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether the anchored marker row is there, unaltered.
async fn anchor_holds(conn: &impl ConnectionTrait, anchor: &Option<ChainHead>) -> Result<bool, StoreError> {
    let Some(anchor) = anchor else { return Ok(false) };
    let row = audit_events::Entity::find_by_id(anchor.sequence).one(conn).await?;
    Ok(row.is_some_and(|r| r.event == CHAIN_KEYED_EVENT && same(&r.hash, &anchor.hash)))
}

async fn write_anchor(conn: &impl ConnectionTrait, key: &ChainKey, marker: &ChainHead) -> Result<(), StoreError> {
    use sea_orm::sea_query::Expr;
    let mark = format!("{}:{}:{}", marker.sequence, marker.hash, anchor_mac(key, marker));
    entity::keyring::Entity::update_many()
        .col_expr(entity::keyring::Column::AuditChainMark, Expr::val(mark))
        .filter(entity::keyring::Column::Id.eq(1))
        .exec(conn)
        .await?;
    Ok(())
}

/// The first marker row.
async fn first_marker(conn: &impl ConnectionTrait) -> Result<Option<ChainHead>, StoreError> {
    let row = audit_events::Entity::find()
        .filter(audit_events::Column::Event.eq(CHAIN_KEYED_EVENT))
        .order_by_asc(audit_events::Column::Id)
        .one(conn)
        .await?;
    Ok(row.map(|r| ChainHead { sequence: r.id, hash: r.hash }))
}

/// [`verify`] without a head: the number of rows verified, and the id of
/// the first row that does not verify.
pub async fn verify_chain(db: &Db) -> Result<(u64, Option<i64>), StoreError> {
    let report = verify(db, None).await?;
    let broken = match report.fault {
        None => None,
        Some(ChainFault::Broken { id }) => Some(id),
        Some(ChainFault::Unkeyed { first }) => Some(first),
        Some(ChainFault::AnchorBroken { anchor }) => Some(anchor),
        Some(ChainFault::HeadMissing { .. } | ChainFault::HeadMismatch { .. }) => None,
    };
    Ok((report.checked, broken))
}

/// A walk along the chain in id order that can be resumed where it stopped.
struct Walk<'a> {
    key: &'a ChainKey,
    head: Option<&'a ChainHead>,
    prev: String,
    after: i64,
    first: Option<i64>,
    checked: u64,
    unkeyed: u64,
    keyed_at: Option<i64>,
    last: Option<ChainHead>,
    head_seen: bool,
    fault: Option<ChainFault>,
}

impl<'a> Walk<'a> {
    fn new(key: &'a ChainKey, head: Option<&'a ChainHead>) -> Self {
        Self {
            key,
            head,
            prev: GENESIS_HASH.to_owned(),
            after: i64::MIN,
            first: None,
            checked: 0,
            unkeyed: 0,
            keyed_at: None,
            last: None,
            head_seen: false,
            fault: None,
        }
    }

    /// Checks the rows after the last one seen, up to the end or a fault.
    async fn advance(&mut self, conn: &impl ConnectionTrait) -> Result<(), StoreError> {
        const PAGE: u64 = 1000;
        while self.fault.is_none() {
            let rows = audit_events::Entity::find()
                .filter(audit_events::Column::Id.gt(self.after))
                .order_by_asc(audit_events::Column::Id)
                .limit(PAGE)
                .all(conn)
                .await?;
            let Some(last) = rows.last() else { return Ok(()) };
            self.after = last.id;
            for row in rows {
                self.step(row);
                if self.fault.is_some() {
                    break;
                }
            }
        }
        Ok(())
    }

    fn step(&mut self, row: audit_events::Model) {
        self.first.get_or_insert(row.id);
        if self.keyed_at.is_none() && row.event == CHAIN_KEYED_EVENT {
            self.keyed_at = Some(row.id);
        }
        let key = self.keyed_at.is_some().then_some(self.key);
        if row.prev_hash != self.prev || !same(&link(key, &self.prev, &row), &row.hash) {
            self.fault = Some(ChainFault::Broken { id: row.id });
            return;
        }
        if let Some(head) = self.head
            && head.sequence == row.id
        {
            if !same(&head.hash, &row.hash) {
                self.fault = Some(ChainFault::HeadMismatch { head: head.sequence });
                return;
            }
            self.head_seen = true;
        }
        self.checked += 1;
        if key.is_none() {
            self.unkeyed += 1;
        }
        self.prev = row.hash.clone();
        self.last = Some(ChainHead { sequence: row.id, hash: row.hash });
    }

    fn finish(mut self) -> ChainReport {
        if self.fault.is_none() {
            if let Some(first) = self.first
                && self.keyed_at.is_none()
            {
                self.fault = Some(ChainFault::Unkeyed { first });
            } else if let Some(head) = self.head
                && !self.head_seen
            {
                self.fault =
                    Some(ChainFault::HeadMissing { head: head.sequence, last: self.last.as_ref().map(|l| l.sequence) });
            }
        }
        ChainReport {
            checked: self.checked,
            unkeyed: self.unkeyed,
            keyed_at: self.keyed_at,
            head: self.last,
            fault: self.fault,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_and_print_as_seq_colon_hash() {
        let hash = "AB".repeat(32);
        let head: ChainHead = format!("42:{hash}").parse().expect("parses");
        assert_eq!(head, ChainHead { sequence: 42, hash: hash.to_ascii_lowercase() });
        assert_eq!(head.to_string(), format!("42:{}", hash.to_ascii_lowercase()));
        for bad in [
            String::new(),
            "42".into(),
            format!("x:{hash}"),
            format!("42:{}", &hash[1..]),
            format!("42:{}g", &hash[1..]),
        ] {
            assert!(bad.parse::<ChainHead>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keyed_and_plain_links_differ_and_depend_on_the_key() {
        let row = audit_events::Model {
            id: 1,
            occurred_at: DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap_or_default(),
            event: "login.success".into(),
            user_id: None,
            session_id: None,
            device_id: None,
            ip: Some("192.0.2.1".into()),
            outcome: "success".into(),
            details_key_id: None,
            details: None,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        let plain = link(None, GENESIS_HASH, &row);
        let keyed = link(Some(&ChainKey([1; 32])), GENESIS_HASH, &row);
        assert_eq!(plain.len(), 64);
        assert_eq!(keyed.len(), 64);
        assert_ne!(plain, keyed);
        assert_ne!(keyed, link(Some(&ChainKey([2; 32])), GENESIS_HASH, &row));
    }
}
