//! Storage errors. Each carries whether it is transient (the backend did
//! not answer, may answer later) so callers choose fail-open or fail-closed
//! deliberately instead of treating every error alike.

use sea_orm::{DbErr, RuntimeErr, SqlErr};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer (connection refused, pool timeout).
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(String),
    /// The fast-path store (Redis) did not answer.
    #[error("fast store unavailable: {0}")]
    FastUnavailable(String),
    /// The fast-path store answered with an error.
    #[error("fast store error: {0}")]
    Fast(String),
    /// A uniqueness constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data is not in the shape this version expects.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying later may succeed: the backend was unreachable,
    /// rather than refusing the operation.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::DatabaseUnavailable(_) | Self::FastUnavailable(_))
    }
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if let Some(SqlErr::UniqueConstraintViolation(msg)) = err.sql_err() {
            return Self::Conflict(msg);
        }
        if connection_lost(&err) {
            return Self::DatabaseUnavailable(err.to_string());
        }
        match &err {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => Self::DatabaseUnavailable(err.to_string()),
            _ => {
                let text = err.to_string();
                // sqlx reports a dropped or refused connection as an I/O error
                // inside an Exec/Query error.
                if text.contains("os error") || text.contains("connection") && text.contains("closed") {
                    Self::DatabaseUnavailable(text)
                } else {
                    Self::Database(text)
                }
            }
        }
    }
}

/// Whether the server ended or refused the connection: I/O and protocol
/// errors, or SQLSTATE class 08 (connection exception) and 57P01-57P03
/// (shut down, crashed, not accepting connections yet). A pooled connection
/// held across a restart of the server answers its next statement so.
pub(super) fn connection_lost(err: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(e))
    | DbErr::Query(RuntimeErr::SqlxError(e))
    | DbErr::Conn(RuntimeErr::SqlxError(e))) = err
    else {
        return false;
    };
    sqlx_connection_lost(e)
}

pub(super) fn sqlx_connection_lost(err: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error;
    match err {
        Error::Io(_) | Error::Tls(_) | Error::Protocol(_) | Error::PoolTimedOut | Error::PoolClosed => true,
        Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(err: redis::RedisError) -> Self {
        if err.is_io_error() || err.is_connection_refusal() || err.is_timeout() || err.is_connection_dropped() {
            Self::FastUnavailable(err.to_string())
        } else {
            Self::Fast(err.to_string())
        }
    }
}

impl From<deadpool_redis::PoolError> for StoreError {
    fn from(err: deadpool_redis::PoolError) -> Self {
        Self::FastUnavailable(err.to_string())
    }
}
