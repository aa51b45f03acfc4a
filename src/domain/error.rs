//! The one error type of the domain. HTTP status codes and problem bodies
//! are assigned in exactly one place, `http::error`.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message is safe to show the client.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Login failed. Deliberately carries no cause: unknown user, wrong
    /// password and expired state must look the same.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("unauthorized")]
    Unauthorized,
    #[error("multi-factor authentication required")]
    MfaRequired,
    /// The session's last primary authentication is too old for this
    /// operation: log in again (step-up).
    #[error("reauthentication required")]
    ReauthenticationRequired,
    #[error("forbidden")]
    Forbidden,
    /// A state-changing request authenticated by a browser cookie did not
    /// show that it came from latchkey's own pages (cross-site request
    /// forgery defence).
    #[error("cross-site request refused")]
    CsrfRejected,
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("rate limited")]
    RateLimited { retry_after_ms: u64, limit: u64, remaining: u64, reset_ms: u64, window_secs: u64 },
    /// The name (in the caller's scope) is locked for this many more seconds.
    #[error("account locked")]
    AccountLocked { retry_after_secs: u64 },
    #[error("device blocked")]
    DeviceBlocked,
    /// A backend the operation needs is down; retrying later may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The master password does not open the stored keyring.
    #[error(
        "the master password does not open this keyring (wrong LATCHKEY_MASTER_PASSWORD, or a database from another deployment)"
    )]
    WrongMasterPassword,
    /// Stored ciphertext failed authentication or belongs to another row:
    /// tampering or corruption, never a user mistake.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(msg) => Self::Conflict(msg),
            e if e.is_transient() => Self::Unavailable(e.to_string()),
            StoreError::Corrupt(msg) => Self::Integrity(msg),
            e => Self::Internal(e.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
