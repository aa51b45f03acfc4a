//! Encrypted logical backups: every table, read in one consistent snapshot,
//! as JSON lines, gzip-compressed and encrypted with a passphrase (`age`,
//! scrypt recipient). Sealed columns stay sealed: nothing is decrypted on
//! the way out, so a backup is useless without the master password too.
//!
//! Inside the encryption: a header line ([`Header`]: format, version,
//! migrations, each table's columns and row count), one line per row
//! (`{"k":"row","t":TABLE,"r":[values in column order]}`), tables parents
//! first, and an end line with the total. age authenticates every chunk and
//! the end of the stream, so a tampered or truncated file fails to decrypt;
//! the counts and the end line are checked as well.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::sea_query::{ColumnType, Value};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, IdenStatic, Iterable, ModelTrait,
    PaginatorTrait, PrimaryKeyToColumn, QueryOrder, QuerySelect,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::store::StoreError;
use crate::store::db::{Db, Scope, Task};

pub const FORMAT: &str = "latchkey-backup";
pub const VERSION: u32 = 1;

/// Rows read per query and written per INSERT.
const CHUNK: u64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot decrypt the backup: {0}")]
    Decrypt(String),
    #[error("the backup is damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Refused(String),
}

impl From<sea_orm::DbErr> for BackupError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Store(StoreError::from(e))
    }
}

/// The first line inside the encryption.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub created_at: DateTime<Utc>,
    /// The database it was taken from (`postgres`, `sqlite`).
    pub backend: String,
    /// Applied migrations: the schema the rows fit.
    pub migrations: Vec<String>,
    pub tables: Vec<TableInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "lowercase")]
enum Line {
    Row { t: String, r: Vec<Json> },
    End { rows: u64 },
}

/// Every table, parents before children (the restore order).
macro_rules! tables {
    ($m:ident) => {
        $m!(
            users,
            user_roles,
            opaque_credentials,
            totp_credentials,
            recovery_codes,
            devices,
            sessions,
            refresh_tokens,
            reset_tokens,
            audit_events,
            keyring,
            data_keys,
            server_setup,
            signing_keys,
            webauthn_credentials
        )
    };
}

macro_rules! table_names {
    ($($t:ident),*) => { &[$(stringify!($t)),*] };
}

/// The tables a backup holds, in restore order.
pub const TABLES: &[&str] = tables!(table_names);

fn columns<E: EntityTrait>() -> Vec<String> {
    E::Column::iter().map(|c| c.as_str().to_owned()).collect()
}

fn to_json(value: Value) -> Result<Json, BackupError> {
    Ok(match value {
        Value::Uuid(v) => v.map_or(Json::Null, |u| Json::String(u.to_string())),
        Value::ChronoDateTimeUtc(v) => {
            v.map_or(Json::Null, |t| Json::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
        }
        Value::String(v) => v.map_or(Json::Null, |s| Json::String(s.to_string())),
        Value::Int(v) => v.map_or(Json::Null, Json::from),
        Value::BigInt(v) => v.map_or(Json::Null, Json::from),
        Value::SmallInt(v) => v.map_or(Json::Null, Json::from),
        Value::Bool(v) => v.map_or(Json::Null, Json::from),
        other => return Err(BackupError::Corrupt(format!("a column of an unsupported type: {other:?}"))),
    })
}

fn from_json(column: &str, kind: &ColumnType, json: &Json) -> Result<Value, BackupError> {
    let bad = || BackupError::Corrupt(format!("column {column}: unexpected value {json}"));
    let text = || json.as_str().ok_or_else(bad);
    let null = json.is_null();
    Ok(match kind {
        ColumnType::Uuid => {
            let v: Option<uuid::Uuid> = if null { None } else { Some(text()?.parse().map_err(|_| bad())?) };
            v.into()
        }
        ColumnType::TimestampWithTimeZone | ColumnType::Timestamp => {
            let v: Option<DateTime<Utc>> = if null {
                None
            } else {
                Some(DateTime::parse_from_rfc3339(text()?).map_err(|_| bad())?.with_timezone(&Utc))
            };
            v.into()
        }
        ColumnType::String(_) | ColumnType::Text | ColumnType::Char(_) => {
            let v: Option<String> = if null { None } else { Some(text()?.to_owned()) };
            v.into()
        }
        ColumnType::Integer => {
            let v: Option<i32> =
                if null { None } else { Some(json.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or_else(bad)?) };
            v.into()
        }
        ColumnType::BigInteger => {
            let v: Option<i64> = if null { None } else { Some(json.as_i64().ok_or_else(bad)?) };
            v.into()
        }
        ColumnType::SmallInteger => {
            let v: Option<i16> =
                if null { None } else { Some(json.as_i64().and_then(|n| i16::try_from(n).ok()).ok_or_else(bad)?) };
            v.into()
        }
        ColumnType::Boolean => {
            let v: Option<bool> = if null { None } else { Some(json.as_bool().ok_or_else(bad)?) };
            v.into()
        }
        other => return Err(BackupError::Corrupt(format!("column {column}: unsupported type {other:?}"))),
    })
}

async fn export_table<E, C>(conn: &C, out: &mut impl Write) -> Result<u64, BackupError>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let name = E::default().table_name().to_owned();
    let mut query = E::find();
    for key in E::PrimaryKey::iter() {
        query = query.order_by_asc(key.into_column());
    }
    let mut n = 0;
    loop {
        // Offsets are stable: one snapshot, ordered by the primary key.
        let models = query.clone().offset(n).limit(CHUNK).all(conn).await?;
        let last = (models.len() as u64) < CHUNK;
        for model in models {
            let row = E::Column::iter().map(|c| to_json(model.get(c))).collect::<Result<Vec<_>, _>>()?;
            serde_json::to_writer(&mut *out, &Line::Row { t: name.clone(), r: row })
                .map_err(|e| BackupError::Corrupt(e.to_string()))?;
            out.write_all(b"\n")?;
            n += 1;
        }
        if last {
            return Ok(n);
        }
    }
}

async fn insert_rows<E, C>(conn: &C, rows: &[Vec<Json>]) -> Result<(), BackupError>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let mut models = Vec::with_capacity(rows.len());
    for row in rows {
        let mut model = <E::ActiveModel as ActiveModelTrait>::default();
        for (column, json) in E::Column::iter().zip(row) {
            let value = from_json(column.as_str(), column.def().get_column_type(), json)?;
            model.try_set(column, value).map_err(|e| BackupError::Corrupt(e.to_string()))?;
        }
        models.push(model);
    }
    if !models.is_empty() {
        E::insert_many(models).exec_without_returning(conn).await?;
    }
    Ok(())
}

/// Writes a backup of `db` to `path` (created; an existing file is refused).
pub async fn create(db: &Db, path: &Path, passphrase: SecretString) -> Result<Header, BackupError> {
    let (applied, _) = db.migration_status().await?;
    // One snapshot: Postgres REPEATABLE READ (read only); SQLite's read
    // transaction sees one state of the file until it ends.
    // Row-level security: the backup task reads every row.
    let txn = db.snapshot_as(Scope::Task(Task::Backup)).await?;
    let mut tables = Vec::new();
    macro_rules! count {
        ($($t:ident),*) => {$(
            tables.push(TableInfo {
                name: stringify!($t).to_owned(),
                columns: columns::<entity::$t::Entity>(),
                rows: entity::$t::Entity::find().count(&txn).await?,
            });
        )*};
    }
    tables!(count);
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        created_at: Utc::now(),
        backend: match db.backend() {
            DatabaseBackend::Postgres => "postgres",
            _ => "sqlite",
        }
        .to_owned(),
        migrations: applied,
        tables,
    };

    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    let encrypted =
        age::Encryptor::with_user_passphrase(passphrase).wrap_output(BufWriter::new(file)).map_err(BackupError::Io)?;
    let mut out = flate2::write::GzEncoder::new(encrypted, flate2::Compression::default());
    serde_json::to_writer(&mut out, &header).map_err(|e| BackupError::Corrupt(e.to_string()))?;
    out.write_all(b"\n")?;
    let mut total = 0;
    macro_rules! export {
        ($($t:ident),*) => {$(
            total += export_table::<entity::$t::Entity, _>(&txn, &mut out).await?;
        )*};
    }
    tables!(export);
    txn.commit().await?;
    serde_json::to_writer(&mut out, &Line::End { rows: total }).map_err(|e| BackupError::Corrupt(e.to_string()))?;
    out.write_all(b"\n")?;
    let encrypted = out.finish()?;
    encrypted.finish()?.flush()?;
    Ok(header)
}

/// The decrypted, decompressed lines of a backup file.
fn open(path: &Path, passphrase: SecretString) -> Result<impl BufRead, BackupError> {
    let file = BufReader::new(std::fs::File::open(path)?);
    let decryptor = age::Decryptor::new_buffered(file).map_err(|e| BackupError::Decrypt(e.to_string()))?;
    if !decryptor.is_scrypt() {
        return Err(BackupError::Decrypt("not a passphrase-encrypted file".into()));
    }
    let identity = age::scrypt::Identity::new(passphrase);
    let reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| BackupError::Decrypt(e.to_string()))?;
    Ok(BufReader::new(flate2::read::GzDecoder::new(reader)))
}

/// Reads a backup line by line, checking its structure; calls `row` for
/// each row (table index, values).
async fn read<F, Fut>(path: &Path, passphrase: SecretString, mut row: F) -> Result<Header, BackupError>
where
    F: FnMut(&Header, usize, Vec<Json>) -> Fut,
    Fut: std::future::Future<Output = Result<(), BackupError>>,
{
    let mut lines = open(path, passphrase)?.lines();
    let next = |lines: &mut std::io::Lines<_>| -> Result<String, BackupError> {
        match lines.next() {
            Some(Ok(line)) => Ok(line),
            // age refuses a modified or cut-off stream here.
            Some(Err(e)) => Err(BackupError::Corrupt(e.to_string())),
            None => Err(BackupError::Corrupt("the file ends early".into())),
        }
    };
    let header: Header =
        serde_json::from_str(&next(&mut lines)?).map_err(|e| BackupError::Corrupt(format!("no backup header: {e}")))?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(BackupError::Corrupt(format!(
            "format {} version {} (this build reads {FORMAT} version {VERSION})",
            header.format, header.version
        )));
    }
    for (info, &name) in header.tables.iter().zip(TABLES) {
        if info.name != name {
            return Err(BackupError::Corrupt(format!("table {} where {name} belongs", info.name)));
        }
    }
    if header.tables.len() != TABLES.len() {
        return Err(BackupError::Corrupt("the table list differs from this build's".into()));
    }
    let mut seen = vec![0u64; TABLES.len()];
    let mut current = 0usize;
    let mut total = 0u64;
    loop {
        let line: Line = serde_json::from_str(&next(&mut lines)?).map_err(|e| BackupError::Corrupt(e.to_string()))?;
        match line {
            Line::Row { t, r } => {
                // Tables come in order, each once.
                while current < TABLES.len() && TABLES[current] != t {
                    current += 1;
                }
                let info = header
                    .tables
                    .get(current)
                    .ok_or_else(|| BackupError::Corrupt(format!("rows of table {t} out of order")))?;
                if r.len() != info.columns.len() {
                    return Err(BackupError::Corrupt(format!("a row of {t} with {} values", r.len())));
                }
                seen[current] += 1;
                total += 1;
                row(&header, current, r).await?;
            }
            Line::End { rows } => {
                if rows != total {
                    return Err(BackupError::Corrupt(format!("{total} rows where the end says {rows}")));
                }
                break;
            }
        }
    }
    if next(&mut lines).is_ok() {
        return Err(BackupError::Corrupt("data after the end".into()));
    }
    for (info, n) in header.tables.iter().zip(&seen) {
        if info.rows != *n {
            return Err(BackupError::Corrupt(format!("{}: {n} rows where the header says {}", info.name, info.rows)));
        }
    }
    Ok(header)
}

/// Decrypts and checks a backup without restoring it.
pub async fn verify(path: &Path, passphrase: SecretString) -> Result<Header, BackupError> {
    read(path, passphrase, |_, _, _| async { Ok(()) }).await
}

/// Rows in each table of `db`.
async fn counts<C: ConnectionTrait>(conn: &C) -> Result<Vec<u64>, BackupError> {
    let mut counts = Vec::new();
    macro_rules! count {
        ($($t:ident),*) => {$( counts.push(entity::$t::Entity::find().count(conn).await?); )*};
    }
    tables!(count);
    Ok(counts)
}

/// Restores a backup into `db` (migrated first). Refuses a database that
/// holds any row unless `force`, which deletes every row first. Verifies
/// the whole file before it writes anything, and writes in one transaction.
pub async fn restore(db: &Db, path: &Path, passphrase: SecretString, force: bool) -> Result<Header, BackupError> {
    let header = verify(path, passphrase.clone()).await?;
    db.migrate_up().await?;
    let (applied, _) = db.migration_status().await?;
    if applied != header.migrations {
        return Err(BackupError::Refused(format!(
            "the backup's schema ({} migrations, last {}) is not this build's ({} migrations, last {})",
            header.migrations.len(),
            header.migrations.last().map_or("none", String::as_str),
            applied.len(),
            applied.last().map_or("none", String::as_str),
        )));
    }
    for (info, &name) in header.tables.iter().zip(TABLES) {
        if info.columns != table_columns(name) {
            return Err(BackupError::Refused(format!("table {name}: the backup's columns differ from this build's")));
        }
    }
    let txn = db.begin_write_as(Scope::Task(Task::Restore)).await?;
    let existing: u64 = counts(&*txn).await?.iter().sum();
    if existing > 0 && !force {
        return Err(BackupError::Refused(format!(
            "the database is not empty ({existing} rows); restore into an empty one, or pass --force to replace everything"
        )));
    }
    if existing > 0 {
        macro_rules! wipe {
            ($($t:ident),*) => {
                let mut wipes: Vec<&str> = vec![$(stringify!($t)),*];
                wipes.reverse();
                for name in wipes {
                    txn.execute_unprepared(&format!("DELETE FROM {name}")).await?;
                }
            };
        }
        tables!(wipe);
    }

    let txn = std::sync::Arc::new(txn);
    let pending = std::sync::Arc::new(tokio::sync::Mutex::new((0usize, Vec::<Vec<Json>>::new())));
    {
        let txn = txn.clone();
        let pending = pending.clone();
        read(path, passphrase, move |_, table, row| {
            let txn = txn.clone();
            let pending = pending.clone();
            async move {
                let mut pending = pending.lock().await;
                if pending.0 != table || pending.1.len() as u64 >= CHUNK {
                    let (previous, rows) = (pending.0, std::mem::take(&mut pending.1));
                    insert_table(&**txn, previous, &rows).await?;
                    pending.0 = table;
                }
                pending.1.push(row);
                Ok(())
            }
        })
        .await?;
    }
    let (last, rows) = std::mem::take(&mut *pending.lock().await);
    insert_table(&**txn, last, &rows).await?;
    if db.backend() == DatabaseBackend::Postgres {
        // Ids were inserted as they were: the sequence continues after them.
        txn.execute_unprepared(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), COALESCE((SELECT max(id) FROM audit_events), 0) + 1, false)",
        )
        .await?;
    }
    let txn = std::sync::Arc::try_unwrap(txn).map_err(|_| BackupError::Refused("restore still in use".into()))?;
    txn.commit().await?;
    Ok(header)
}

fn table_columns(name: &str) -> Vec<String> {
    macro_rules! lookup {
        ($($t:ident),*) => {
            match name {
                $(stringify!($t) => columns::<entity::$t::Entity>(),)*
                _ => Vec::new(),
            }
        };
    }
    tables!(lookup)
}

async fn insert_table<C: ConnectionTrait>(conn: &C, table: usize, rows: &[Vec<Json>]) -> Result<(), BackupError> {
    if rows.is_empty() {
        return Ok(());
    }
    macro_rules! insert {
        ($($t:ident),*) => {
            match TABLES[table] {
                $(stringify!($t) => insert_rows::<entity::$t::Entity, _>(conn, rows).await,)*
                other => Err(BackupError::Corrupt(format!("unknown table {other}"))),
            }
        };
    }
    tables!(insert)
}
