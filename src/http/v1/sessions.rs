//! Session routes: whoami (forward-auth), list, refresh, revoke.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{SessionAnswer, session_response};
use crate::domain::Error;
use crate::domain::sessions::{CurrentSession, SessionSummary};
use crate::domain::states::Aal;
use crate::http::AppState;
use crate::http::cookies;
use crate::http::error::problem;
use crate::http::extractors::{Authenticated, Client};

#[derive(Serialize, ToSchema)]
pub struct DeviceRef {
    #[schema(example = "dv_3q2b7x9k")]
    pub device_id: String,
    #[schema(example = "Alice's iPhone")]
    pub name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub session_id: Uuid,
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub user_id: Uuid,
    #[schema(example = "alice")]
    pub username: String,
    pub aal: Aal,
    /// The last primary authentication (an OPAQUE login); a refresh keeps it.
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub auth_time: DateTime<Utc>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub created_at: DateTime<Utc>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub last_seen_at: DateTime<Utc>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub session_expires_at: DateTime<Utc>,
    pub device: Option<DeviceRef>,
}

/// What a gateway may require of the session (forward-auth).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Freshness {
    /// Seconds: refuse (401 `reauthentication_required`) a session whose
    /// last login is older.
    #[param(example = 300)]
    pub max_age: Option<u64>,
    /// `aal2`: refuse (401 `mfa_required`) a session without a second factor.
    pub aal: Option<Aal>,
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
            auth_time: s.auth_time,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            session_expires_at: s.expires_at,
            device: device_ref(s.device_id, s.device_name),
        }
    }
}

/// The session of the bearer token. Also sets `X-User-Id`, `X-Session-Id`,
/// `X-Aal` and `X-Auth-Time`, for nginx `auth_request` and Traefik
/// ForwardAuth; `max_age` and `aal` let a gateway require a recent login or
/// a second factor for a path.
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = []), ("session_cookie" = [])),
    params(Freshness),
    responses(
        (status = 200, body = WhoAmI, headers(
            ("X-User-Id" = String, description = "User id"),
            ("X-Session-Id" = String, description = "Session id"),
            ("X-Aal" = String, description = "aal1 or aal2"),
            ("X-Auth-Time" = i64, description = "Last primary authentication, unix seconds"),
        )),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::NotFresh),
        (status = 429, response = problem::RateLimited),
    )
)]
#[get("/v1/sessions/current")]
pub async fn current(
    state: web::Data<AppState>,
    req: HttpRequest,
    Authenticated(session): Authenticated,
    freshness: web::Query<Freshness>,
) -> Result<HttpResponse, Error> {
    if crate::http::extractors::bearer(&req).is_none() {
        cookies::check_forwarded(&req)?;
    }
    let max_age = freshness.max_age.map(std::time::Duration::from_secs);
    state.core.check_freshness(&session, max_age, freshness.aal, Utc::now())?;
    let mut response = HttpResponse::Ok();
    for (name, value) in [
        ("x-user-id", session.user_id.to_string()),
        ("x-session-id", session.session_id.to_string()),
        ("x-aal", session.aal.to_string()),
        ("x-auth-time", session.auth_time.timestamp().to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.insert_header((HeaderName::from_static(name), value));
        }
    }
    Ok(response.json(WhoAmI::from(session)))
}

#[derive(Serialize, ToSchema)]
pub struct SessionItem {
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
    /// This is the session making the request.
    #[schema(example = true)]
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
    operation_id = "list_sessions",
    tag = "sessions",
    security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = SessionList), (status = 400, response = problem::TokenInQuery), (status = 401, response = problem::Unauthorized))
)]
#[get("/v1/sessions")]
pub async fn list(state: web::Data<AppState>, Authenticated(session): Authenticated) -> Result<HttpResponse, Error> {
    let sessions = state.core.list_sessions(&session, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(SessionList { sessions: sessions.into_iter().map(Into::into).collect() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// Absent for a browser session: the `__Host-lk_refresh` cookie is
    /// used (with `X-Latchkey-CSRF: 1`) and the answer sets new cookies.
    #[schema(example = "lk_r_U2luZ2xlIHVzZQ…")]
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// Exchange a refresh token for new session and refresh tokens. Reusing a
/// rotated refresh token revokes the whole session. A browser session sends
/// `{}` and its refresh cookie, and gets new cookies.
#[utoipa::path(
    tag = "sessions",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = SessionAnswer),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::CsrfRejected),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/sessions/refresh")]
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    Client(client): Client,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, Error> {
    let (token, cookie) = match body.into_inner().refresh_token {
        Some(token) => (token, false),
        None => {
            let token = cookies::read(&req, cookies::REFRESH_COOKIE)?.ok_or(Error::Unauthorized)?;
            cookies::check_csrf(&req)?;
            (token, true)
        }
    };
    let issued = state.core.refresh(&token, &client, Utc::now()).await?;
    Ok(session_response(issued, cookie))
}

/// Log out: revoke the current session, and clear a browser's session
/// cookies. A browser whose session token expired is logged out by its
/// refresh cookie (which names the session).
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 204), (status = 400, response = problem::TokenInQuery), (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::CsrfRejected),)
)]
#[delete("/v1/sessions/current")]
pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: Result<Authenticated, Error>,
    Client(client): Client,
) -> Result<HttpResponse, Error> {
    let now = Utc::now();
    match session {
        Ok(Authenticated(session)) => state.core.logout(&session, &client, now).await?,
        Err(Error::Unauthorized) if crate::http::extractors::bearer(&req).is_none() => {
            let refresh_token = cookies::read(&req, cookies::REFRESH_COOKIE).ok().flatten();
            let session_token = cookies::read(&req, cookies::SESSION_COOKIE).ok().flatten();
            if refresh_token.is_none() && session_token.is_none() {
                return Err(Error::Unauthorized);
            }
            cookies::check_csrf(&req)?;
            if let Some(token) = refresh_token {
                state.core.logout_by_refresh(&token, &client, now).await?;
            }
        }
        Err(e) => return Err(e),
    }
    let mut response = HttpResponse::NoContent();
    cookies::clear_session(&mut response);
    Ok(response.finish())
}

/// Revoke one of the caller's sessions.
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 204),
        (status = 400, response = problem::TokenInQuery),
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::CsrfRejected),
        (status = 404, response = problem::NotFound),
    )
)]
// Only a UUID is a session id: `/v1/sessions/refresh` and `current` are
// other routes, and other methods there are 405, not this one.
#[delete("/v1/sessions/{id:[0-9a-fA-F-]{36}}")]
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
    #[schema(example = 3)]
    pub revoked: u64,
}

/// Revoke every other session of the caller (`?scope=others`).
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = []), ("session_cookie" = [])),
    params(RevokeQuery),
    responses(
        (status = 200, body = Revoked),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::CsrfRejected),
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
