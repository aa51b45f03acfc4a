//! Storage errors. Each carries whether it is transient (the backend did
//! not answer, may answer later) so callers choose fail-open or fail-closed
//! deliberately instead of treating every error alike.

use sea_orm::{DbErr, SqlErr};

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
