//! Postgres connections for scoped transactions (row-level security, see
//! [`super::db::Scope`]), kept per thread.
//!
//! sqlx's pool sends a round trip of its own every time a connection comes
//! back (a `Sync` to test it and flush a queued `ROLLBACK`): half of a
//! login's messages to Postgres were those. A scoped transaction here ends
//! with its own `COMMIT` or `ROLLBACK` and the connection goes back as it
//! is. Idle connections are kept on the thread that used them last: actix
//! runs one single-threaded runtime per worker, so a worker's connections
//! have their sockets on its own reactor and a reply never wakes another
//! thread first. At most `max` connections are lent at once (one
//! semaphore for all threads); each thread keeps at most `max / 2` idle.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sea_orm::sqlx::{
    self, ConnectOptions as _, Connection as _, Executor as _, PgConnection, postgres::PgConnectOptions,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::StoreError;
use super::error::sqlx_connection_lost;

/// An idle connection unused this long is pinged before it is lent.
const PING_AFTER_IDLE: Duration = Duration::from_secs(10);
/// An idle connection unused this long is closed instead of lent.
const CLOSE_AFTER_IDLE: Duration = Duration::from_secs(600);

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IDLE: RefCell<HashMap<u64, Vec<(PgConnection, Instant)>>> = RefCell::new(HashMap::new());
}

#[derive(Debug)]
pub struct ScopedPool {
    id: u64,
    options: PgConnectOptions,
    permits: Arc<Semaphore>,
    acquire_timeout: Duration,
    idle_per_thread: usize,
}

impl ScopedPool {
    pub fn new(options: PgConnectOptions, max: u32, acquire_timeout: Duration) -> Self {
        let max = usize::try_from(max.max(1)).unwrap_or(1);
        Self {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            options,
            permits: Arc::new(Semaphore::new(max)),
            acquire_timeout,
            idle_per_thread: max,
        }
    }

    /// A connection on which `begin` (a `BEGIN`, with what travels with it)
    /// has run.
    pub async fn begin(&self, begin: &str) -> Result<Lease, StoreError> {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        let permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| unavailable("timed out waiting for a connection"))?
            .map_err(|_| unavailable("the pool is closed"))?;
        loop {
            let (mut conn, reused) = match self.take_idle().await {
                Some(conn) => (conn, true),
                None => (
                    tokio::time::timeout_at(deadline, self.options.connect())
                        .await
                        .map_err(|_| unavailable("timed out connecting"))?
                        .map_err(|e| unavailable(&e.to_string()))?,
                    false,
                ),
            };
            match conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(begin.to_owned()))).await {
                Ok(_) => {
                    return Ok(Lease {
                        conn: Some(conn),
                        pool_id: self.id,
                        idle_max: self.idle_per_thread,
                        permit: Some(permit),
                        open: true,
                    });
                }
                // A kept connection the server has ended (a restart within
                // the ping interval): so are this thread's others; start
                // afresh.
                Err(e) if reused && sqlx_connection_lost(&e) => {
                    drop(conn);
                    self.close_idle_here();
                }
                // A failed BEGIN leaves nothing open; the connection may be
                // broken, so it is not kept.
                Err(e) if sqlx_connection_lost(&e) => return Err(unavailable(&e.to_string())),
                Err(e) => return Err(StoreError::from(sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e.into())))),
            }
        }
    }

    /// This thread's most recently used idle connection, tested when it has
    /// been idle a while.
    async fn take_idle(&self) -> Option<PgConnection> {
        loop {
            let (mut conn, since) = IDLE.with_borrow_mut(|idle| idle.get_mut(&self.id).and_then(Vec::pop))?;
            let idle_for = since.elapsed();
            if idle_for >= CLOSE_AFTER_IDLE {
                close_later(conn);
                continue;
            }
            if idle_for < PING_AFTER_IDLE || conn.ping().await.is_ok() {
                return Some(conn);
            }
        }
    }

    /// Lends no more connections; closes this thread's idle ones (the
    /// others close with their thread).
    pub fn close(&self) {
        self.permits.close();
        self.close_idle_here();
    }

    fn close_idle_here(&self) {
        let conns = IDLE.with_borrow_mut(|idle| idle.remove(&self.id)).unwrap_or_default();
        for (conn, _) in conns {
            close_later(conn);
        }
    }
}

fn unavailable(why: &str) -> StoreError {
    StoreError::DatabaseUnavailable(format!("postgres: {why}"))
}

fn close_later(conn: PgConnection) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _ = conn.close().await;
        });
    }
}

/// A lent connection inside a transaction. Committing or rolling back
/// gives it back; dropping it while the transaction is open rolls back in
/// a task of its own (off the caller's path).
pub struct Lease {
    conn: Option<PgConnection>,
    pool_id: u64,
    idle_max: usize,
    permit: Option<OwnedSemaphorePermit>,
    /// The transaction has not ended.
    open: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("open", &self.open).finish_non_exhaustive()
    }
}

impl Lease {
    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a lease holds its connection until dropped")
    }

    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.conn().execute("COMMIT").await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let (pool_id, idle_max, permit) = (self.pool_id, self.idle_max, self.permit.take());
        if !self.open {
            give_back(pool_id, idle_max, conn);
            drop(permit);
            return;
        }
        // Without a runtime the connection is closed, which ends the
        // transaction on the server too.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if conn.execute("ROLLBACK").await.is_ok() {
                    give_back(pool_id, idle_max, conn);
                }
                drop(permit);
            });
        }
    }
}

fn give_back(pool_id: u64, idle_max: usize, conn: PgConnection) {
    let surplus = IDLE.with_borrow_mut(|idle| {
        let list = idle.entry(pool_id).or_default();
        if list.len() < idle_max {
            list.push((conn, Instant::now()));
            None
        } else {
            Some(conn)
        }
    });
    if let Some(conn) = surplus {
        close_later(conn);
    }
}
