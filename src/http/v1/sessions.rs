//! Session routes: whoami (forward-auth), list, refresh, revoke.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::SessionAnswer;
use crate::domain::Error;
use crate::domain::sessions::{CurrentSession, SessionSummary};
use crate::domain::states::Aal;
use crate::http::AppState;
use crate::http::error::problem;
use crate::http::extractors::{Authenticated, Client};

#[derive(Serialize, ToSchema)]
pub struct DeviceRef {
    pub device_id: String,
    #[schema(example = "Alice's iPhone")]
    pub name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    pub session_id: Uuid,
    pub user_id: Uuid,
    #[schema(example = "alice")]
    pub username: String,
    pub aal: Aal,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub session_expires_at: DateTime<Utc>,
    pub device: Option<DeviceRef>,
}

fn device_ref(id: Option<String>, name: Option<String>) -> Option<DeviceRef> {
    id.map(|device_id| DeviceRef { device_id, name })
}

impl From<CurrentSession> for WhoAmI {
    fn from(s: CurrentSession) -> Self {
        Self {
            session_id: s.session_id,
            user_id: s.user_id,
            username: s.username,
            aal: s.aal,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            session_expires_at: s.expires_at,
            device: device_ref(s.device_id, s.device_name),
        }
    }
}

/// The session of the bearer token. Also sets `X-User-Id`, `X-Session-Id`
/// and `X-Aal`, for nginx `auth_request` and Traefik ForwardAuth.
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, body = WhoAmI, headers(
            ("X-User-Id" = String, description = "User id"),
            ("X-Session-Id" = String, description = "Session id"),
            ("X-Aal" = String, description = "aal1 or aal2"),
        )),
        (status = 401, response = problem::Unauthorized),
    )
)]
#[get("/v1/sessions/current")]
pub async fn current(Authenticated(session): Authenticated) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    for (name, value) in [
        ("x-user-id", session.user_id.to_string()),
        ("x-session-id", session.session_id.to_string()),
        ("x-aal", session.aal.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.insert_header((HeaderName::from_static(name), value));
        }
    }
    response.json(WhoAmI::from(session))
}

#[derive(Serialize, ToSchema)]
pub struct SessionItem {
    pub session_id: Uuid,
    pub aal: Aal,
    pub device: Option<DeviceRef>,
    #[schema(example = "203.0.113.7")]
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub session_expires_at: DateTime<Utc>,
    /// This is the session making the request.
    pub current: bool,
}

impl From<SessionSummary> for SessionItem {
    fn from(s: SessionSummary) -> Self {
        let r = s.record;
        Self {
            session_id: r.id,
            aal: r.aal,
            device: device_ref(r.device_id, r.device_name),
            ip: r.ip,
            user_agent: r.user_agent,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            session_expires_at: r.expires_at,
            current: s.current,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionItem>,
}

/// The caller's active sessions.
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 401, response = problem::Unauthorized))
)]
#[get("/v1/sessions")]
pub async fn list(state: web::Data<AppState>, Authenticated(session): Authenticated) -> Result<HttpResponse, Error> {
    let sessions = state.core.list_sessions(&session, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(SessionList { sessions: sessions.into_iter().map(Into::into).collect() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(example = "lk_r_U2luZ2xlIHVzZQ…")]
    pub refresh_token: String,
}

/// Exchange a refresh token for new session and refresh tokens. Reusing a
/// rotated refresh token revokes the whole session.
#[utoipa::path(
    tag = "sessions",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = SessionAnswer),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::Unauthorized),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/sessions/refresh")]
pub async fn refresh(
    state: web::Data<AppState>,
    Client(client): Client,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, Error> {
    let issued = state.core.refresh(&body.refresh_token, &client, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(SessionAnswer::from(issued)))
}

/// Log out: revoke the current session.
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = [])),
    responses((status = 204), (status = 401, response = problem::Unauthorized))
)]
#[delete("/v1/sessions/current")]
pub async fn logout(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
) -> Result<HttpResponse, Error> {
    state.core.logout(&session, &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Revoke one of the caller's sessions.
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 204),
        (status = 401, response = problem::Unauthorized),
        (status = 404, response = problem::NotFound),
    )
)]
#[delete("/v1/sessions/{id}")]
pub async fn revoke_one(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Error> {
    state.core.revoke_session(&session, id.into_inner(), &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RevokeQuery {
    /// Only `others`: every session but the current one.
    #[param(example = "others")]
    pub scope: String,
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// Revoke every other session of the caller (`?scope=others`).
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = [])),
    params(RevokeQuery),
    responses(
        (status = 200, body = Revoked),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::Unauthorized),
    )
)]
#[delete("/v1/sessions")]
pub async fn revoke_others(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
    query: web::Query<RevokeQuery>,
) -> Result<HttpResponse, Error> {
    if query.scope != "others" {
        return Err(Error::InvalidRequest("scope must be \"others\"".into()));
    }
    let revoked = state.core.revoke_other_sessions(&session, &client, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(Revoked { revoked }))
}
