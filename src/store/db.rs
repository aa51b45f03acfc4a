//! The relational store: one sea-orm connection pool on Postgres (the
//! source of truth in production) or SQLite (the embedded default), with one
//! set of migrations for both.

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use sea_orm::{
    ConnectOptions, Database, DatabaseBackend, DatabaseConnection, DatabaseTransaction, TransactionTrait as _,
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::StoreError;
use super::audit::ChainState;

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    conn: DatabaseConnection,
    /// SQLite allows one writer: write transactions queue here instead of
    /// failing with "database is locked" when two upgrade at once.
    sqlite_writer: Option<Arc<Mutex<()>>>,
    /// The audit chain's key, shared by every clone of this handle.
    pub(super) audit_chain: Arc<ChainState>,
}

/// A write transaction; on SQLite it also holds the writer slot.
pub struct WriteTxn {
    txn: DatabaseTransaction,
    _writer: Option<OwnedMutexGuard<()>>,
    pub(super) audit_chain: Arc<ChainState>,
    /// Postgres: the audit append lock is already held (taken by an earlier
    /// statement of this transaction, see `audit::lock_expr`).
    pub(super) audit_locked: AtomicBool,
    /// The audit chain's head after this transaction's appends; the
    /// handle caches it once the commit succeeded.
    pub(super) pending_head: std::sync::Mutex<Option<String>>,
}

impl WriteTxn {
    pub async fn commit(self) -> Result<(), StoreError> {
        let head = self.pending_head.lock().ok().and_then(|mut h| h.take());
        self.txn.commit().await.map_err(StoreError::from)?;
        if let Some(head) = head {
            self.audit_chain.committed(head);
        }
        Ok(())
    }
}

impl std::ops::Deref for WriteTxn {
    type Target = DatabaseTransaction;
    fn deref(&self) -> &Self::Target {
        &self.txn
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
            .sqlx_logging(options.log_statements);
        if url.starts_with("postgres") && !options.statement_timeout.is_zero() {
            opts.statement_timeout(options.statement_timeout);
        }
        let conn = Database::connect(opts).await.map_err(|e| StoreError::DatabaseUnavailable(e.to_string()))?;
        let sqlite_writer = (conn.get_database_backend() == DatabaseBackend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Ok(Self { conn, sqlite_writer, audit_chain: Arc::default() })
    }

    /// Begins a transaction that will write.
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
                self.conn.begin_with_options(options).await?
            }
            None => self.conn.begin().await?,
        };
        Ok(WriteTxn {
            txn,
            _writer: writer,
            audit_chain: self.audit_chain.clone(),
            audit_locked: AtomicBool::new(false),
            pending_head: std::sync::Mutex::default(),
        })
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

    /// Names of applied and pending migrations.
    pub async fn migration_status(&self) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let applied = migration::Migrator::get_applied_migrations(&self.conn).await?;
        let pending = migration::Migrator::get_pending_migrations(&self.conn).await?;
        Ok((
            applied.iter().map(|m| m.name().to_owned()).collect(),
            pending.iter().map(|m| m.name().to_owned()).collect(),
        ))
    }

    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}
