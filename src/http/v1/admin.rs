//! Admin routes and account deletion.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, delete, get, post, put, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::devices::DeviceItem;
use super::sessions::DeviceRef;
use crate::domain::Error;
use crate::domain::admin::{AuditEntry, UserDetail};
use crate::domain::admin::{AuditFilter, UserSummary};
use crate::domain::keyring::KeyringStatus;
use crate::domain::sessions::CurrentSession;
use crate::domain::sessions::SessionRecord;
use crate::domain::states::Aal;
use crate::domain::states::Trust;
use crate::http::AppState;
use crate::http::error::problem;
use crate::http::extractors::{Authenticated, Client};

/// An admin's session: 401 without a session, 403 without the admin role
/// (or below aal2 for an admin with TOTP on).
pub struct Admin(pub CurrentSession);

impl FromRequest for Admin {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = Authenticated::from_request(req, payload);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let Authenticated(session) = session.await?;
            let state = state.ok_or_else(|| Error::Internal("application state missing".into()))?;
            state.core.require_admin(&session).await?;
            Ok(Admin(session))
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct AdminUser {
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub user_id: Uuid,
    #[schema(example = "alice")]
    pub username: String,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub created_at: DateTime<Utc>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub locked_until: Option<DateTime<Utc>>,
    #[schema(example = "suspected account takeover")]
    pub lock_reason: Option<String>,
    #[schema(example = 0)]
    pub failed_attempts: i32,
    #[schema(example = false)]
    pub totp_enabled: bool,
    #[schema(example = json!(["admin"]))]
    pub roles: Vec<String>,
}

impl From<UserSummary> for AdminUser {
    fn from(s: UserSummary) -> Self {
        Self {
            user_id: s.user.id,
            username: s.user.username,
            created_at: s.user.created_at,
            locked_until: s.user.locked_until,
            lock_reason: s.user.lock_reason,
            failed_attempts: s.user.failed_attempts,
            totp_enabled: s.totp_enabled,
            roles: s.roles,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub users: Vec<AdminUser>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 200 (default 50).
    pub limit: Option<u64>,
    /// Only usernames that start with this (normalized like usernames:
    /// `Al` finds "alice").
    #[param(example = "al")]
    pub q: Option<String>,
}

fn page_limit(limit: Option<u64>) -> Result<u64, Error> {
    match limit.unwrap_or(50) {
        n @ 1..=200 => Ok(n),
        _ => Err(Error::InvalidRequest("limit must be 1 to 200".into())),
    }
}

/// Users, in creation order, a page at a time.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(UserQuery), responses(
    (status = 200, body = UserPage),
    (status = 400, response = problem::BadRequest),
    (status = 401, response = problem::Unauthorized),
    (status = 403, response = problem::AdminRequired),
))]
#[get("/v1/admin/users")]
pub async fn list_users(
    state: web::Data<AppState>,
    _admin: Admin,
    query: web::Query<UserQuery>,
) -> Result<HttpResponse, Error> {
    let limit = page_limit(query.limit)?;
    let after = match &query.cursor {
        Some(c) => Some(c.parse::<Uuid>().map_err(|_| Error::InvalidRequest("cursor is not valid".into()))?),
        None => None,
    };
    let users = state.core.admin_list_users(after, limit, query.q.as_deref()).await?;
    let next_cursor = (users.len() as u64 == limit).then(|| users.last().map(|u| u.user.id.to_string())).flatten();
    Ok(HttpResponse::Ok().json(UserPage { users: users.into_iter().map(Into::into).collect(), next_cursor }))
}

#[derive(Serialize, ToSchema)]
pub struct AdminUserDetail {
    #[serde(flatten)]
    pub user: AdminUser,
    #[schema(example = 2)]
    pub active_sessions: u64,
    #[schema(example = 1)]
    pub devices: u64,
}

impl From<UserDetail> for AdminUserDetail {
    fn from(d: UserDetail) -> Self {
        Self { user: d.summary.into(), active_sessions: d.active_sessions, devices: d.devices }
    }
}

/// One user, with counts of sessions and devices.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = AdminUserDetail),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::Unauthorized),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
))]
#[get("/v1/admin/users/{id}")]
pub async fn get_user(state: web::Data<AppState>, _admin: Admin, id: web::Path<Uuid>) -> Result<HttpResponse, Error> {
    let detail = state.core.admin_get_user(id.into_inner(), Utc::now()).await?;
    Ok(HttpResponse::Ok().json(AdminUserDetail::from(detail)))
}

#[derive(Serialize, ToSchema)]
pub struct AdminSession {
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub session_id: Uuid,
    pub aal: Aal,
    pub device: Option<DeviceRef>,
    #[schema(example = "203.0.113.7")]
    pub ip: Option<String>,
    #[schema(example = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0")]
    pub user_agent: Option<String>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub created_at: DateTime<Utc>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub last_seen_at: DateTime<Utc>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub session_expires_at: DateTime<Utc>,
}

impl From<SessionRecord> for AdminSession {
    fn from(r: SessionRecord) -> Self {
        Self {
            session_id: r.id,
            aal: r.aal,
            device: r.device_id.map(|device_id| DeviceRef { device_id, name: r.device_name }),
            ip: r.ip,
            user_agent: r.user_agent,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            session_expires_at: r.expires_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AdminSessionList {
    pub sessions: Vec<AdminSession>,
}

/// A user's active sessions.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = AdminSessionList),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::Unauthorized),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
))]
#[get("/v1/admin/users/{id}/sessions")]
pub async fn user_sessions(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Error> {
    let sessions = state.core.admin_user_sessions(id.into_inner(), Utc::now()).await?;
    Ok(HttpResponse::Ok().json(AdminSessionList { sessions: sessions.into_iter().map(Into::into).collect() }))
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    #[schema(example = 3)]
    pub revoked: u64,
}

/// Revoke every session of a user.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = Revoked),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::UnauthorizedOrStepUp),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
))]
#[delete("/v1/admin/users/{id}/sessions")]
pub async fn revoke_user_sessions(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    Client(client): Client,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Error> {
    let revoked = state.core.admin_revoke_sessions(&admin, id.into_inner(), &client, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(Revoked { revoked }))
}

#[derive(Serialize, ToSchema)]
pub struct AdminDeviceList {
    pub devices: Vec<DeviceItem>,
}

/// A user's devices, with trust and last seen.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = AdminDeviceList),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::Unauthorized),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
))]
#[get("/v1/admin/users/{id}/devices")]
pub async fn user_devices(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Error> {
    let devices = state.core.admin_user_devices(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(AdminDeviceList { devices: devices.into_iter().map(Into::into).collect() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustBody {
    pub trust: Trust,
}

/// Set a device's trust. Blocking revokes its sessions at once and refuses
/// its logins (403 `device_blocked`, after a correct password).
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = String, Path)), request_body = TrustBody, responses(
    (status = 204),
    (status = 400, response = problem::BadRequest),
    (status = 401, response = problem::UnauthorizedOrStepUp),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
    (status = 413, response = problem::PayloadTooLarge),
    (status = 415, response = problem::UnsupportedMediaType),
))]
#[put("/v1/admin/devices/{id}/trust")]
pub async fn device_trust(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    Client(client): Client,
    id: web::Path<String>,
    body: web::Json<TrustBody>,
) -> Result<HttpResponse, Error> {
    state.core.admin_set_device_trust(&admin, &id, body.trust, &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockBody {
    #[schema(example = "suspected account takeover")]
    pub reason: String,
    /// Until when; absent: until an admin unlocks.
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub until: Option<DateTime<Utc>>,
}

/// Lock an account (all devices) and end its sessions.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = Uuid, Path)), request_body = LockBody, responses(
    (status = 204),
    (status = 400, response = problem::BadRequest),
    (status = 401, response = problem::UnauthorizedOrStepUp),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
    (status = 413, response = problem::PayloadTooLarge),
    (status = 415, response = problem::UnsupportedMediaType),
))]
#[post("/v1/admin/users/{id}/lock")]
pub async fn lock(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    Client(client): Client,
    id: web::Path<Uuid>,
    body: web::Json<LockBody>,
) -> Result<HttpResponse, Error> {
    state.core.admin_lock(&admin, id.into_inner(), &body.reason, body.until, &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Lift any lock and reset the failure count.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = Uuid, Path)), responses(
    (status = 204),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::UnauthorizedOrStepUp),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
))]
#[post("/v1/admin/users/{id}/unlock")]
pub async fn unlock(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    Client(client): Client,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Error> {
    state.core.admin_unlock(&admin, id.into_inner(), &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Delete a user and all their data (audit rows keep a pseudonymous id).
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = Uuid, Path)), responses(
    (status = 204),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::UnauthorizedOrStepUp),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
))]
#[delete("/v1/admin/users/{id}")]
pub async fn delete_user(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    Client(client): Client,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Error> {
    state.core.admin_delete_user(&admin, id.into_inner(), &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A password-reset token for the user to redeem at /v1/account/reset.
#[derive(Serialize, ToSchema)]
pub struct ResetIssued {
    /// Single use; hand it to the user out of band.
    #[schema(example = "lk_t_UmVzZXQgbWUgcGxlYXNl…")]
    pub reset_token: String,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub expires_at: DateTime<Utc>,
}

/// Issue a single-use password-reset token for a user who forgot the
/// password (no email involved: hand the token over out of band).
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = Uuid, Path)), responses(
    (status = 201, body = ResetIssued),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::UnauthorizedOrStepUp),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
))]
#[post("/v1/admin/users/{id}/reset")]
pub async fn issue_reset(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    Client(client): Client,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Error> {
    let (reset_token, expires_at) = state.core.admin_issue_reset(&admin, id.into_inner(), &client, Utc::now()).await?;
    Ok(HttpResponse::Created().json(ResetIssued { reset_token, expires_at }))
}

/// Remove a user's lost second factor (TOTP and its recovery codes).
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = Uuid, Path)), responses(
    (status = 204),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::UnauthorizedOrStepUp),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
))]
#[delete("/v1/admin/users/{id}/totp")]
pub async fn remove_totp(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    Client(client): Client,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Error> {
    state.core.admin_remove_totp(&admin, id.into_inner(), &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, ToSchema)]
pub struct SecondFactorItem {
    pub kind: crate::domain::webauthn::FactorKind,
    /// The passkey's id, for removal (none for TOTP).
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub id: Option<Uuid>,
    /// The passkey's name (none for TOTP).
    #[schema(example = "YubiKey 5C")]
    pub name: Option<String>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub created_at: DateTime<Utc>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct SecondFactorList {
    pub factors: Vec<SecondFactorItem>,
}

/// A user's second factors: TOTP and passkeys, with names and last use.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = SecondFactorList),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::Unauthorized),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
))]
#[get("/v1/admin/users/{id}/factors")]
pub async fn second_factors(
    state: web::Data<AppState>,
    Admin(_admin): Admin,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Error> {
    let factors = state.core.admin_second_factors(id.into_inner()).await?;
    let factors = factors
        .into_iter()
        .map(|f| SecondFactorItem {
            kind: f.kind,
            id: f.id,
            name: f.name,
            created_at: f.created_at,
            last_used_at: f.last_used_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(SecondFactorList { factors }))
}

/// Remove one of a user's passkeys (a lost authenticator; audited).
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(("id" = Uuid, Path), ("credential" = Uuid, Path)), responses(
    (status = 204),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::UnauthorizedOrStepUp),
    (status = 403, response = problem::AdminRequired),
    (status = 404, response = problem::NotFound),
))]
#[delete("/v1/admin/users/{id}/webauthn/{credential}")]
pub async fn remove_webauthn(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    Client(client): Client,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, Error> {
    let (user_id, credential) = path.into_inner();
    state.core.admin_remove_webauthn(&admin, user_id, credential, &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// A user id (rows carry its pseudonym; this is matched against it).
    pub user_id: Option<Uuid>,
    #[param(example = "login.failure")]
    pub event: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub cursor: Option<i64>,
    pub limit: Option<u64>,
}

// utoipa drops a property example beside `value_type = Object`: the whole
// item's example carries `details`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": 1042,
    "occurred_at": "2026-05-01T12:00:00Z",
    "event": "login.failure",
    "user_ref": "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e",
    "session_id": null,
    "device_id": "dv_3q2b7x9k",
    "ip": "203.0.113.7",
    "outcome": "failure",
    "details": {"reason": "wrong password"},
}))]
pub struct AuditItem {
    #[schema(example = 1042)]
    pub id: i64,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub occurred_at: DateTime<Utc>,
    #[schema(example = "login.success")]
    pub event: String,
    /// The user's pseudonymous id.
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub user_ref: Option<Uuid>,
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub session_id: Option<Uuid>,
    #[schema(example = "dv_3q2b7x9k")]
    pub device_id: Option<String>,
    #[schema(example = "203.0.113.7")]
    pub ip: Option<String>,
    #[schema(example = "success")]
    pub outcome: String,
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl From<AuditEntry> for AuditItem {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            occurred_at: e.occurred_at,
            event: e.event,
            user_ref: e.user_ref,
            session_id: e.session_id,
            device_id: e.device_id,
            ip: e.ip,
            outcome: e.outcome,
            details: e.details,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditItem>,
    #[schema(example = 1041)]
    pub next_cursor: Option<i64>,
}

/// Audit events, newest first.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(AuditQuery), responses(
    (status = 200, body = AuditPage),
    (status = 400, response = problem::BadRequest),
    (status = 401, response = problem::Unauthorized),
    (status = 403, response = problem::AdminRequired),
))]
#[get("/v1/admin/audit")]
pub async fn audit(
    state: web::Data<AppState>,
    _admin: Admin,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, Error> {
    let q = query.into_inner();
    let limit = page_limit(q.limit)?;
    let filter = AuditFilter { user_ref: None, event: q.event, since: q.since, until: q.until, before_id: q.cursor };
    let events = state.core.admin_audit(q.user_id, filter, limit).await?;
    let next_cursor = (events.len() as u64 == limit).then(|| events.last().map(|e| e.id)).flatten();
    Ok(HttpResponse::Ok().json(AuditPage { events: events.into_iter().map(Into::into).collect(), next_cursor }))
}

/// Keyring status: active key, age, use count, rows per key; and the JWT
/// signing keys (`signing_keys`: kid, state, created_at, retired_at).
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), responses(
    (status = 200, body = Object, example = json!({
        "active_key_id": "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e",
        "keys": [{"id": "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e", "state": "active", "created_at": "2026-05-01T12:00:00Z", "uses": 42, "rows": 17}],
        "signing_keys": [{"kid": "k_2026_05", "state": "active", "created_at": "2026-05-01T12:00:00Z", "retired_at": null}],
    })),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::Unauthorized),
    (status = 403, response = problem::AdminRequired),
))]
#[get("/v1/admin/keys")]
pub async fn keys(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, Error> {
    let status: KeyringStatus = state.core.admin_keys(Utc::now()).await?;
    let mut body = serde_json::to_value(&status).map_err(|e| Error::Internal(e.to_string()))?;
    body["signing_keys"] =
        serde_json::to_value(state.core.signing_keys_status().await?).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Serialize, ToSchema)]
pub struct Rotated {
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub active_key_id: Uuid,
}

/// Which key a rotation makes anew.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RotateQuery {
    /// `data` (default): a new keyring data key; `signing`: a new JWT
    /// signing key (the previous one stays published until its tokens expire).
    #[param(example = "signing")]
    pub kind: Option<String>,
}

/// Make a new active data key (rows move to it in the background), or with
/// `?kind=signing` a new JWT signing key.
#[utoipa::path(tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(RotateQuery), responses(
    (status = 200, body = Rotated),
    (status = 400, response = problem::BadRequest),
    (status = 401, response = problem::UnauthorizedOrStepUp),
    (status = 403, response = problem::AdminRequired),
))]
#[post("/v1/admin/keys/rotate")]
pub async fn rotate_keys(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    Client(client): Client,
    query: web::Query<RotateQuery>,
) -> Result<HttpResponse, Error> {
    let active_key_id = match query.kind.as_deref() {
        None | Some("data") => state.core.admin_rotate_keys(&admin, &client, Utc::now()).await?,
        Some("signing") => state.core.admin_rotate_signing_key(&admin, &client, Utc::now()).await?,
        Some(_) => return Err(Error::InvalidRequest("kind must be \"data\" or \"signing\"".into())),
    };
    Ok(HttpResponse::Ok().json(Rotated { active_key_id }))
}

/// Delete the caller's own account and all its data (aal2 when TOTP is on).
#[utoipa::path(tag = "account", security(("bearer" = []), ("session_cookie" = [])), responses(
    (status = 204),
    (status = 400, response = problem::TokenInQuery),
    (status = 401, response = problem::UnauthorizedOrStepUp),
    (status = 403, response = problem::Aal2Required),
))]
#[delete("/v1/account")]
pub async fn delete_account(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
) -> Result<HttpResponse, Error> {
    state.core.delete_own_account(&session, &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}
