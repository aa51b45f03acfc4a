//! The service's answers, as this client reads them (the service's OpenAPI
//! document, `GET /openapi.json`, is the reference).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A problem answer (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub status: u16,
    /// `unauthorized`, `invalid_credentials`, `reauthentication_required`,
    /// `mfa_required`, `rate_limited`, `account_locked`, `conflict`, …
    pub code: String,
    pub detail: Option<String>,
    /// Seconds to wait, from `Retry-After` (429, 423).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

/// What a login may tell about the device it comes from.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device credential (`lk_d_`) from an earlier session of this
    /// account on this device, if any.
    pub device_token: Option<String>,
    /// Descriptive only (at most 256 characters).
    pub fingerprint: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Debug for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceInfo")
            .field("device_token", &self.device_token.as_ref().map(|_| "<redacted>"))
            .field("fingerprint", &self.fingerprint)
            .field("name", &self.name)
            .finish()
    }
}

/// A login's result.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    Session(Session),
    /// TOTP is on: finish with [`crate::Client::login_totp`].
    MfaRequired(MfaStep),
}

#[derive(Clone, Deserialize)]
pub struct MfaStep {
    pub mfa_token: String,
    pub mfa_expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for MfaStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaStep").field("mfa_expires_at", &self.mfa_expires_at).finish_non_exhaustive()
    }
}

/// The second factor of a login.
#[derive(Clone)]
pub enum SecondFactor {
    /// The current 6-digit TOTP code.
    Code(String),
    /// One of the recovery codes (each works once).
    RecoveryCode(String),
}

impl std::fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecondFactor::Code(_) => "Code(<redacted>)",
            SecondFactor::RecoveryCode(_) => "RecoveryCode(<redacted>)",
        })
    }
}

/// A session's tokens and facts (serializable, to be kept between runs).
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub session_id: Uuid,
    pub user_id: Uuid,
    /// Bearer token for authenticated calls (15 minutes by default).
    pub session_token: String,
    /// Single-use; exchange it with [`crate::Client::refresh`].
    pub refresh_token: String,
    pub token_expires_at: DateTime<Utc>,
    pub session_expires_at: DateTime<Utc>,
    /// `aal1` (password) or `aal2` (and a second factor).
    pub aal: String,
    pub auth_time: DateTime<Utc>,
    pub device_id: Option<String>,
    pub new_device: bool,
    /// Only when a new device credential was issued: keep it and send it
    /// with the next logins ([`DeviceInfo::device_token`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("aal", &self.aal)
            .field("token_expires_at", &self.token_expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeviceRef {
    pub device_id: String,
    pub name: Option<String>,
}

/// `GET /v1/sessions/current`.
#[derive(Debug, Clone, Deserialize)]
pub struct WhoAmI {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub aal: String,
    pub auth_time: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub session_expires_at: DateTime<Utc>,
    pub device: Option<DeviceRef>,
}

/// One of the caller's sessions.
#[derive(Debug, Clone, Deserialize)]
pub struct SessionInfo {
    pub session_id: Uuid,
    pub aal: String,
    pub device: Option<DeviceRef>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub session_expires_at: DateTime<Utc>,
    /// The session making the request.
    pub current: bool,
}

#[derive(Deserialize)]
pub(crate) struct SessionList {
    pub sessions: Vec<SessionInfo>,
}

/// One of the caller's devices.
#[derive(Debug, Clone, Deserialize)]
pub struct Device {
    pub device_id: String,
    pub name: Option<String>,
    /// `unknown`, `trusted` or `blocked`.
    pub trust: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub last_ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct DeviceList {
    pub devices: Vec<Device>,
}

#[derive(Deserialize)]
pub(crate) struct Registered {
    pub user_id: Uuid,
}

/// A JWT for other services.
#[derive(Clone, Deserialize)]
pub struct Jwt {
    /// Compact JWS (EdDSA), verified against `/.well-known/jwks.json`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}
