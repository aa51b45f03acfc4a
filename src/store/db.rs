//! The relational store: one sea-orm connection pool on Postgres (the
//! source of truth in production) or SQLite (the embedded default), with one
//! set of migrations for both.
//!
//! On Postgres the per-user tables have row-level security (see the
//! migration `m20261206_000002_row_level_security`): a statement sees a
//! user's rows only under a transaction-local setting naming that user, a
//! token it presents, or a named cross-user scope. [`Scope`] is that
//! setting; [`Db::begin_write_as`] and [`Db::read_as`] put it in the
//! transaction's `BEGIN` (one simple-query message, so it costs no round
//! trip of its own). SQLite has no row-level security: there a scope is
//! only a statement of intent.

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use migration::m20261206_000002_row_level_security as rls;
use sea_orm::sqlx::{self, Postgres};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    ExecResult, QueryResult, RuntimeErr, Statement, TransactionTrait as _,
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use super::StoreError;
use super::audit::{ChainState, NewAuditEvent};
use super::scoped_pool::{Lease, ScopedPool};

/// A pooled connection idle this long is pinged before it is handed out.
const IDLE_PING_AFTER: Duration = Duration::from_secs(10);

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    conn: DatabaseConnection,
    /// SQLite allows one writer: write transactions queue here instead of
    /// failing with "database is locked" when two upgrade at once.
    sqlite_writer: Option<Arc<Mutex<()>>>,
    /// Postgres: the connections of scoped transactions.
    scoped: Option<Arc<ScopedPool>>,
    /// The audit chain's key, shared by every clone of this handle.
    pub(super) audit_chain: Arc<ChainState>,
}

/// Whose rows the statements of a transaction may see on Postgres (the
/// row-level security policies read these settings). Each names as little
/// as the work needs: a user once it is known, else the token presented,
/// else a named cross-user task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One user's rows (`latchkey.user_id`).
    User(Uuid),
    /// The session, refresh token or device credential whose hash this is,
    /// and the rows that hang off it (`latchkey.token_hash`): the lookups of
    /// whoami, refresh and introspection, before the user is known.
    Token(&'a str),
    /// The OPAQUE record of the user with this username (`latchkey.username`):
    /// login's first read, before the user id is known.
    Username(&'a str),
    /// The device with this id (`latchkey.device_id`): an admin names a
    /// device by id alone, before its user is known.
    Device(&'a str),
    /// login/start's reads: [`Self::Username`] and, when the client
    /// presented a device credential, [`Self::Token`] with its hash.
    Login { username: &'a str, token_hash: Option<&'a str> },
    /// A task that spans users (`latchkey.scope`).
    Task(Task),
}

/// The cross-user tasks, each allowed on the tables (and commands) it needs
/// only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Cleanup: reads and deletes dead sessions, refresh tokens and stale
    /// devices.
    Maintenance,
    /// Key rotation: reads OPAQUE and TOTP credentials (each is re-sealed
    /// under its user's scope).
    Reencrypt,
    /// The admin user list: whether each listed user has TOTP on.
    Directory,
    /// `backup create`: reads every row.
    Backup,
    /// `backup restore`: writes (and with --force deletes) every row.
    Restore,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Maintenance => rls::MAINTENANCE,
            Self::Reencrypt => rls::REENCRYPT,
            Self::Directory => rls::DIRECTORY,
            Self::Backup => rls::BACKUP,
            Self::Restore => rls::RESTORE,
        }
    }
}

impl Scope<'_> {
    /// `SELECT set_config(…)` for this scope, with its value as a literal
    /// that cannot end the string: plain token characters as they are,
    /// anything else hex-encoded.
    fn set_config(&self) -> String {
        let one = |name: &str, value: &str| format!("set_config('{name}', {}, true)", text_literal(value));
        let settings = match self {
            Self::User(id) => one(rls::USER_SETTING, &id.to_string()),
            Self::Token(hash) => one(rls::TOKEN_SETTING, hash),
            Self::Username(name) => one(rls::USERNAME_SETTING, name),
            Self::Device(id) => one(rls::DEVICE_SETTING, id),
            Self::Task(task) => one(rls::SCOPE_SETTING, task.as_str()),
            Self::Login { username, token_hash: None } => one(rls::USERNAME_SETTING, username),
            Self::Login { username, token_hash: Some(hash) } => {
                format!("{}, {}", one(rls::USERNAME_SETTING, username), one(rls::TOKEN_SETTING, hash))
            }
        };
        format!("SELECT {settings}")
    }
}

/// `value` as an SQL literal that cannot end the string: plain token
/// characters as they are, anything else hex-encoded.
pub(super) fn text_literal(value: &str) -> String {
    if value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(&b)) {
        format!("'{value}'")
    } else {
        let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
        format!("convert_from(decode('{hex}', 'hex'), 'UTF8')")
    }
}

/// A transaction's connection: sea-orm's own, or on Postgres under a
/// [`Scope`] a sqlx transaction whose `BEGIN` carried the setting. Every
/// sea-orm query runs on either through [`ConnectionTrait`].
pub enum Txn {
    Orm(DatabaseTransaction),
    Scoped(Mutex<Lease>),
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Orm(_) => "Txn::Orm",
            Self::Scoped(_) => "Txn::Scoped",
        })
    }
}

impl Txn {
    pub async fn commit(self) -> Result<(), DbErr> {
        match self {
            Self::Orm(txn) => txn.commit().await,
            Self::Scoped(lease) => lease.into_inner().commit().await.map_err(exec_err),
        }
    }
}

fn exec_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(err.into()))
}

fn query_err(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(err.into()))
}

fn bound(stmt: &Statement) -> sqlx::query::Query<'_, Postgres, sea_query_sqlx::SqlxValues> {
    let values = stmt.values.clone().unwrap_or(sea_orm::sea_query::Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(stmt.sql.as_str()), sea_query_sqlx::SqlxValues(values))
}

#[async_trait::async_trait]
impl ConnectionTrait for Txn {
    fn get_database_backend(&self) -> DatabaseBackend {
        match self {
            Self::Orm(txn) => txn.get_database_backend(),
            Self::Scoped(_) => DatabaseBackend::Postgres,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Self::Orm(txn) => txn.execute_raw(stmt).await,
            Self::Scoped(txn) => {
                let mut txn = txn.lock().await;
                bound(&stmt).execute(txn.conn()).await.map(Into::into).map_err(exec_err)
            }
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Self::Orm(txn) => txn.execute_unprepared(sql).await,
            Self::Scoped(txn) => {
                let mut txn = txn.lock().await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(txn.conn()).await.map(Into::into).map_err(exec_err)
            }
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Orm(txn) => txn.query_one_raw(stmt).await,
            Self::Scoped(txn) => {
                let mut txn = txn.lock().await;
                bound(&stmt).fetch_optional(txn.conn()).await.map(|r| r.map(Into::into)).map_err(query_err)
            }
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Orm(txn) => txn.query_all_raw(stmt).await,
            Self::Scoped(txn) => {
                let mut txn = txn.lock().await;
                let rows = bound(&stmt).fetch_all(txn.conn()).await.map_err(query_err)?;
                Ok(rows.into_iter().map(Into::into).collect())
            }
        }
    }
}

/// A write transaction; on SQLite it also holds the writer slot.
pub struct WriteTxn {
    txn: Txn,
    _writer: Option<OwnedMutexGuard<()>>,
    pub(super) audit_chain: Arc<ChainState>,
    /// Postgres: this transaction holds the audit append lock already.
    pub(super) audit_locked: AtomicBool,
    /// The audit chain's head after this transaction's appends; the
    /// handle caches it once the commit succeeded.
    pub(super) pending_head: std::sync::Mutex<Option<String>>,
    /// Events of a scoped transaction (Postgres), appended at its commit
    /// (see `audit::commit_appending`).
    pub(super) deferred_audit: std::sync::Mutex<Vec<NewAuditEvent>>,
}

impl WriteTxn {
    fn new(txn: Txn, writer: Option<OwnedMutexGuard<()>>, audit_chain: Arc<ChainState>) -> Self {
        Self {
            txn,
            _writer: writer,
            audit_chain,
            audit_locked: AtomicBool::new(false),
            pending_head: std::sync::Mutex::default(),
            deferred_audit: std::sync::Mutex::default(),
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        // A poisoned lock still holds the events: they are never dropped.
        let deferred =
            std::mem::take(&mut *self.deferred_audit.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let head = match self.txn {
            Txn::Scoped(lease) if !deferred.is_empty() => {
                Some(super::audit::commit_appending(lease.into_inner(), &self.audit_chain, &deferred).await?)
            }
            txn => {
                let head = self.pending_head.lock().ok().and_then(|mut h| h.take());
                txn.commit().await.map_err(StoreError::from)?;
                head
            }
        };
        if let Some(head) = head {
            self.audit_chain.committed(head);
        }
        Ok(())
    }
}

impl std::ops::Deref for WriteTxn {
    type Target = Txn;
    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}

/// Reads under a [`Scope`]: on Postgres a transaction that is never
/// committed (dropping it sends the ROLLBACK from a task of its own, off
/// the caller's path); elsewhere the pool.
pub enum ReadConn<'a> {
    Pool(&'a DatabaseConnection),
    Scoped(Txn),
}

#[async_trait::async_trait]
impl ConnectionTrait for ReadConn<'_> {
    fn get_database_backend(&self) -> DatabaseBackend {
        match self {
            Self::Pool(conn) => conn.get_database_backend(),
            Self::Scoped(txn) => txn.get_database_backend(),
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Self::Pool(conn) => conn.execute_raw(stmt).await,
            Self::Scoped(txn) => txn.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Self::Pool(conn) => conn.execute_unprepared(sql).await,
            Self::Scoped(txn) => txn.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Pool(conn) => conn.query_one_raw(stmt).await,
            Self::Scoped(txn) => txn.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Pool(conn) => conn.query_all_raw(stmt).await,
            Self::Scoped(txn) => txn.query_all_raw(stmt).await,
        }
    }
}

/// Connection settings independent of the config file format.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    pub log_statements: bool,
    /// Postgres only; zero means none.
    pub statement_timeout: Duration,
}

impl Db {
    pub async fn connect(url: &str, options: &DbOptions) -> Result<Self, StoreError> {
        if let Some(path) = sqlite_path(url)
            && let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::DatabaseUnavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.max_connections(options.max_connections)
            .min_connections(options.min_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_timeout(options.acquire_timeout)
            // A ping on every checkout was a round trip per query: ping only
            // a connection idle long enough to have been dropped.
            .test_before_acquire_if_idle_for(IDLE_PING_AFTER)
            .sqlx_logging(options.log_statements);
        if url.starts_with("postgres") && !options.statement_timeout.is_zero() {
            opts.statement_timeout(options.statement_timeout);
        }
        let conn = Database::connect(opts).await.map_err(|e| StoreError::DatabaseUnavailable(e.to_string()))?;
        let sqlite_writer = (conn.get_database_backend() == DatabaseBackend::Sqlite).then(|| Arc::new(Mutex::new(())));
        let scoped = (conn.get_database_backend() == DatabaseBackend::Postgres).then(|| {
            let pool = conn.get_postgres_connection_pool();
            Arc::new(ScopedPool::new(
                (*pool.connect_options()).clone(),
                options.max_connections,
                options.acquire_timeout,
            ))
        });
        Ok(Self { conn, sqlite_writer, scoped, audit_chain: Arc::default() })
    }

    /// Another pool on `url` (another role, say) sharing this handle's audit
    /// chain state.
    pub async fn connect_alongside(&self, url: &str, options: &DbOptions) -> Result<Self, StoreError> {
        let other = Self::connect(url, options).await?;
        Ok(Self { audit_chain: self.audit_chain.clone(), ..other })
    }

    /// Begins a transaction on Postgres whose `BEGIN` (`begin`, with its
    /// options) also sets `scope`, in one message.
    async fn begin_scoped(&self, begin: &str, scope: Scope<'_>) -> Result<Txn, StoreError> {
        let pool = self.scoped.as_ref().ok_or_else(|| StoreError::DatabaseUnavailable("not Postgres".into()))?;
        let lease = pool.begin(&format!("{begin}; {}", scope.set_config())).await?;
        Ok(Txn::Scoped(Mutex::new(lease)))
    }

    /// Begins a transaction that will write, under `scope` (see [`Scope`]).
    pub async fn begin_write_as(&self, scope: Scope<'_>) -> Result<WriteTxn, StoreError> {
        if self.backend() != DatabaseBackend::Postgres {
            return self.begin_write().await;
        }
        // READ COMMITTED whatever the database's default: the audit append
        // reads the chain's head in a statement after the lock's, whose
        // snapshot must be newer than the lock (see `audit::commit_appending`).
        let txn = self.begin_scoped("BEGIN ISOLATION LEVEL READ COMMITTED", scope).await?;
        Ok(WriteTxn::new(txn, None, self.audit_chain.clone()))
    }

    /// A connection for reads under `scope`: on Postgres one transaction
    /// for all of them (so a group of reads pays for the setting once).
    pub async fn read_as(&self, scope: Scope<'_>) -> Result<ReadConn<'_>, StoreError> {
        self.read_with("BEGIN", scope).await
    }

    /// [`Self::read_as`] with another `BEGIN` (an isolation level).
    pub async fn read_with(&self, begin: &str, scope: Scope<'_>) -> Result<ReadConn<'_>, StoreError> {
        if self.backend() != DatabaseBackend::Postgres {
            return Ok(ReadConn::Pool(&self.conn));
        }
        Ok(ReadConn::Scoped(self.begin_scoped(begin, scope).await?))
    }

    /// A read-only snapshot under `scope`: Postgres REPEATABLE READ; SQLite's
    /// read transaction sees one state of the file until it ends.
    pub async fn snapshot_as(&self, scope: Scope<'_>) -> Result<Txn, StoreError> {
        if self.backend() != DatabaseBackend::Postgres {
            return Ok(Txn::Orm(self.conn.begin().await?));
        }
        self.begin_scoped("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", scope).await
    }

    /// Begins a transaction that will write, with no scope: it sees no
    /// per-user row on Postgres (only tables without row-level security).
    pub async fn begin_write(&self) -> Result<WriteTxn, StoreError> {
        let writer = match &self.sqlite_writer {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        };
        // SQLite: take the write lock at BEGIN, so a transaction that reads
        // first never has to upgrade (an upgrade that meets another writer
        // fails at once with "database is locked", whatever the busy
        // timeout).
        let txn = match writer {
            Some(_) => {
                use sea_orm::TransactionTrait as _;
                let options = sea_orm::TransactionOptions {
                    sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                    ..Default::default()
                };
                Txn::Orm(self.conn.begin_with_options(options).await?)
            }
            // READ COMMITTED whatever the database's default, as above.
            None => {
                use sea_orm::TransactionTrait as _;
                let options = sea_orm::TransactionOptions {
                    isolation_level: Some(sea_orm::IsolationLevel::ReadCommitted),
                    ..Default::default()
                };
                Txn::Orm(self.conn.begin_with_options(options).await?)
            }
        };
        Ok(WriteTxn::new(txn, writer, self.audit_chain.clone()))
    }

    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.conn.get_database_backend()
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend() {
            DatabaseBackend::Postgres => "postgres",
            DatabaseBackend::Sqlite => "sqlite",
            _ => "database",
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.conn.ping().await.map_err(|e| StoreError::DatabaseUnavailable(e.to_string()))
    }

    /// Applies pending migrations. On Postgres, replicas starting together
    /// take turns: a transaction holds an advisory lock while the
    /// migrations run, and the next one finds nothing left to do.
    pub async fn migrate_up(&self) -> Result<(), StoreError> {
        if self.backend() != DatabaseBackend::Postgres {
            return migration::Migrator::up(&self.conn, None).await.map_err(StoreError::from);
        }
        use sea_orm::ConnectionTrait as _;
        let lock = self.conn.begin().await?;
        lock.execute_raw(sea_orm::Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock(7236016404233859437)",
        ))
        .await?;
        let result = migration::Migrator::up(&self.conn, None).await.map_err(StoreError::from);
        lock.commit().await?;
        result
    }

    /// Reverts the last `steps` migrations.
    pub async fn migrate_down(&self, steps: u32) -> Result<(), StoreError> {
        migration::Migrator::down(&self.conn, Some(steps)).await.map_err(StoreError::from)
    }

    /// Names of applied and pending migrations. Read from the migrations
    /// table directly: sea-orm-migration's own status first creates that
    /// table if missing, which the application role may not do.
    pub async fn migration_status(&self) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let exists = match self.backend() {
            DatabaseBackend::Postgres => {
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'seaql_migrations'"
            }
            _ => "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'seaql_migrations'",
        };
        let found = !self.conn.query_all_raw(Statement::from_string(self.backend(), exists)).await?.is_empty();
        let mut applied: Vec<String> = Vec::new();
        if found {
            let rows = self
                .conn
                .query_all_raw(Statement::from_string(
                    self.backend(),
                    "SELECT version FROM seaql_migrations ORDER BY version",
                ))
                .await?;
            for row in rows {
                applied.push(row.try_get::<String>("", "version")?);
            }
        }
        let pending = migration::Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .filter(|name| !applied.contains(name))
            .collect();
        Ok((applied, pending))
    }

    pub async fn close(self) {
        if let Some(scoped) = &self.scoped {
            scoped.close();
        }
        let _ = self.conn.close().await;
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}
