//! Postgres connections for scoped transactions (row-level security, see
//! [`super::db::Scope`]).
//!
//! sqlx's pool sends a round trip of its own every time a connection comes
//! back (a `Sync` to test it and flush a queued `ROLLBACK`): with its test
//! on checkout, half of a login's messages to Postgres were those. A
//! scoped transaction here ends with its own `COMMIT` or `ROLLBACK` and the
//! connection goes back as it is.
//!
//! A connection is lent preferably to the thread that used it last: actix
//! runs one single-threaded runtime per worker, so a worker's connections
//! have their sockets on its own reactor and a reply never wakes another
//! thread first. At most `max` connections are open at once, lent or idle:
//! a thread that finds none of its own idle opens a new one while there is
//! room, else borrows another thread's idle one as it is (its replies then
//! pass through that thread's reactor, as every reply did with sqlx's
//! pool), else waits for one to come back. (Closing another thread's idle
//! connection to open one here instead made connections churn under load:
//! 83 logins/s instead of 400.)

use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use sea_orm::sqlx::{
    self, ConnectOptions as _, Connection as _, Executor as _, PgConnection, postgres::PgConnectOptions,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::StoreError;
use super::error::sqlx_connection_lost;

/// An idle connection unused this long is pinged before it is lent.
const PING_AFTER_IDLE: Duration = Duration::from_secs(10);
/// An idle connection unused this long is closed instead of lent.
const CLOSE_AFTER_IDLE: Duration = Duration::from_secs(600);
/// How long the `ROLLBACK` of a dropped transaction may take before its
/// connection is closed instead.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(5);

struct Idle {
    conn: PgConnection,
    thread: ThreadId,
    since: Instant,
    permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
pub struct ScopedPool {
    shared: Arc<Shared>,
}

struct Shared {
    options: PgConnectOptions,
    /// One permit per open connection, lent or idle.
    open: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// A connection came back to `idle`.
    returned: Notify,
    acquire_timeout: Duration,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedPool").finish_non_exhaustive()
    }
}

/// Where a connection for a new transaction comes from.
enum Source {
    /// An idle connection, this thread's if it has one.
    Idle(Idle),
    /// Room for a new one (its permit).
    Room(OwnedSemaphorePermit),
}

impl ScopedPool {
    pub fn new(options: PgConnectOptions, max: u32, acquire_timeout: Duration) -> Self {
        let max = usize::try_from(max.max(1)).unwrap_or(1);
        Self {
            shared: Arc::new(Shared {
                options,
                open: Arc::new(Semaphore::new(max)),
                idle: Mutex::new(Vec::new()),
                returned: Notify::new(),
                acquire_timeout,
            }),
        }
    }

    /// A connection on which `begin` (a `BEGIN`, with what travels with it)
    /// has run.
    pub async fn begin(&self, begin: &str) -> Result<Lease, StoreError> {
        let shared = &self.shared;
        let deadline = tokio::time::Instant::now() + shared.acquire_timeout;
        let timed_out = || unavailable("timed out waiting for a connection");
        loop {
            let (mut conn, permit, reused) =
                match tokio::time::timeout_at(deadline, shared.source()).await.map_err(|_| timed_out())?? {
                    Source::Idle(idle) => {
                        if idle.since.elapsed() >= PING_AFTER_IDLE {
                            let mut idle = idle;
                            match tokio::time::timeout_at(deadline, idle.conn.ping()).await {
                                Ok(Ok(())) => (idle.conn, idle.permit, true),
                                // Dead: its permit opens another.
                                Ok(Err(_)) => (shared.connect(deadline).await?, idle.permit, false),
                                Err(_) => return Err(timed_out()),
                            }
                        } else {
                            (idle.conn, idle.permit, true)
                        }
                    }
                    Source::Room(permit) => (shared.connect(deadline).await?, permit, false),
                };
            let sql = sqlx::raw_sql(sqlx::AssertSqlSafe(begin.to_owned()));
            match tokio::time::timeout_at(deadline, conn.execute(sql)).await {
                Ok(Ok(_)) => {
                    return Ok(Lease { conn: Some(conn), permit: Some(permit), shared: shared.clone(), open: true });
                }
                // A kept connection the server has ended (a restart within
                // the ping interval): so are the other idle ones; start
                // afresh.
                Ok(Err(e)) if reused && sqlx_connection_lost(&e) => {
                    drop((conn, permit));
                    shared.close_idle();
                }
                // The connection is not kept: a failed BEGIN may have left
                // an aborted transaction open (a failing `set_config`), or
                // the connection is broken (a 503, as `StoreError` sorts it).
                Ok(Err(e)) => {
                    return Err(StoreError::from(sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e.into()))));
                }
                Err(_) => return Err(timed_out()),
            }
        }
    }

    /// Lends no more connections; closes the idle ones.
    pub fn close(&self) {
        self.shared.open.close();
        self.shared.close_idle();
    }
}

impl Shared {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The list stays consistent whatever panicked while holding it.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This thread's most recently used idle connection, else room for a
    /// new one, else another thread's most recently used idle connection,
    /// else the first of those once one comes back.
    async fn source(&self) -> Result<Source, StoreError> {
        let me = std::thread::current().id();
        loop {
            let returned = self.returned.notified();
            {
                let mut idle = self.lock_idle();
                // Connections idle too long are closed (their permits free).
                idle.retain(|entry| entry.since.elapsed() < CLOSE_AFTER_IDLE);
                if let Some(at) = idle.iter().rposition(|entry| entry.thread == me) {
                    return Ok(Source::Idle(idle.remove(at)));
                }
                match self.open.clone().try_acquire_owned() {
                    Ok(permit) => return Ok(Source::Room(permit)),
                    Err(tokio::sync::TryAcquireError::Closed) => return Err(unavailable("the pool is closed")),
                    Err(tokio::sync::TryAcquireError::NoPermits) => {}
                }
                if let Some(other) = idle.pop() {
                    return Ok(Source::Idle(other));
                }
            }
            tokio::select! {
                () = returned => {}
                permit = self.open.clone().acquire_owned() => {
                    return permit.map(Source::Room).map_err(|_| unavailable("the pool is closed"));
                }
            }
        }
    }

    async fn connect(&self, deadline: tokio::time::Instant) -> Result<PgConnection, StoreError> {
        tokio::time::timeout_at(deadline, self.options.connect())
            .await
            .map_err(|_| unavailable("timed out connecting"))?
            .map_err(|e| unavailable(&e.to_string()))
    }

    fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.lock_idle());
        for entry in idle {
            close_later(entry.conn);
        }
    }

    fn give_back(&self, conn: PgConnection, permit: OwnedSemaphorePermit) {
        if self.open.is_closed() {
            close_later(conn);
            return;
        }
        let entry = Idle { conn, thread: std::thread::current().id(), since: Instant::now(), permit };
        self.lock_idle().push(entry);
        self.returned.notify_one();
    }
}

fn unavailable(why: &str) -> StoreError {
    StoreError::DatabaseUnavailable(format!("postgres: {why}"))
}

fn close_later(conn: PgConnection) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _ = tokio::time::timeout(ROLLBACK_TIMEOUT, conn.close()).await;
        });
    }
}

/// A lent connection inside a transaction. Committing gives it back;
/// dropping it while the transaction is open rolls back in a task of its
/// own (off the caller's path) and then gives it back.
pub struct Lease {
    conn: Option<PgConnection>,
    permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
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

    /// Runs `sql` (statements with their values as literals) and commits,
    /// in one message: nothing waits on the client between them. When
    /// `sql` fails the COMMIT is skipped and dropping the lease rolls back.
    pub async fn commit_after(mut self, sql: &str) -> Result<(), sqlx::Error> {
        self.conn().execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{sql}; COMMIT")))).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (Some(mut conn), Some(permit)) = (self.conn.take(), self.permit.take()) else { return };
        if !self.open {
            self.shared.give_back(conn, permit);
            return;
        }
        // Without a runtime the connection is closed, which ends the
        // transaction on the server too.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            handle.spawn(async move {
                if let Ok(Ok(_)) = tokio::time::timeout(ROLLBACK_TIMEOUT, conn.execute("ROLLBACK")).await {
                    shared.give_back(conn, permit);
                }
            });
        }
    }
}
