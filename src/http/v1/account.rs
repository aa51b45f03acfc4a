//! The account lifecycle: password change, reset with an admin-issued
//! token, the user's security timeline.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::RegistrationStartAnswer;
use crate::domain::Error;
use crate::domain::account::AccountEvent;
use crate::http::AppState;
use crate::http::error::problem;
use crate::http::extractors::{Authenticated, Client};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordStart {
    /// OPAQUE RegistrationRequest for the new password, base64url (32 bytes).
    #[schema(example = "base64url…")]
    pub registration_request: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordFinish {
    /// OPAQUE RegistrationUpload for the new password, base64url (192 bytes).
    #[schema(example = "base64url…")]
    pub registration_record: String,
}

/// Start a password change: the OPAQUE registration flow again, by a
/// session whose login is recent (step-up) and aal2 when TOTP is on.
#[utoipa::path(
    tag = "account",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body = PasswordStart,
    responses(
        (status = 200, body = RegistrationStartAnswer),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::UnauthorizedOrStepUp),
        (status = 403, response = problem::Aal2Required),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/account/password/start")]
pub async fn password_start(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
    body: web::Json<PasswordStart>,
) -> Result<HttpResponse, Error> {
    let registration_response =
        state.core.password_change_start(&session, &body.registration_request, &client, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(RegistrationStartAnswer { registration_response }))
}

/// Finish a password change: the new record replaces the old one, and every
/// other session of the user is revoked (this one stays).
#[utoipa::path(
    tag = "account",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body = PasswordFinish,
    responses(
        (status = 204),
        (status = 400, response = problem::InvalidRegistrationRecord),
        (status = 401, response = problem::UnauthorizedOrStepUp),
        (status = 403, response = problem::Aal2Required),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
    )
)]
#[post("/v1/account/password/finish")]
pub async fn password_finish(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
    body: web::Json<PasswordFinish>,
) -> Result<HttpResponse, Error> {
    state.core.password_change_finish(&session, &body.registration_record, &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetStart {
    /// The `lk_t_` token an admin issued.
    #[schema(example = "lk_t_UmVzZXQgbWUgcGxlYXNl…")]
    pub reset_token: String,
    #[schema(example = "base64url…")]
    pub registration_request: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetFinish {
    #[schema(example = "lk_t_UmVzZXQgbWUgcGxlYXNl…")]
    pub reset_token: String,
    #[schema(example = "base64url…")]
    pub registration_record: String,
}

/// Start a password reset with an admin-issued token (no session needed).
/// A bad, spent or expired token is one 401 `invalid_credentials`.
#[utoipa::path(
    tag = "account",
    request_body = ResetStart,
    responses(
        (status = 200, body = RegistrationStartAnswer),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::InvalidCredentials),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/account/reset/start")]
pub async fn reset_start(
    state: web::Data<AppState>,
    Client(client): Client,
    body: web::Json<ResetStart>,
) -> Result<HttpResponse, Error> {
    let registration_response =
        state.core.reset_start(&body.reset_token, &body.registration_request, &client, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(RegistrationStartAnswer { registration_response }))
}

/// Finish a password reset: the token is spent, the new record replaces the
/// old one, and every session of the user is revoked.
#[utoipa::path(
    tag = "account",
    request_body = ResetFinish,
    responses(
        (status = 204),
        (status = 400, response = problem::InvalidRegistrationRecord),
        (status = 401, response = problem::InvalidCredentials),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/account/reset/finish")]
pub async fn reset_finish(
    state: web::Data<AppState>,
    Client(client): Client,
    body: web::Json<ResetFinish>,
) -> Result<HttpResponse, Error> {
    state.core.reset_finish(&body.reset_token, &body.registration_record, &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// At most 100; default 50.
    pub limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct EventItem {
    #[schema(example = "login.success")]
    pub event: String,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub at: DateTime<Utc>,
    #[schema(example = "203.0.113.7")]
    pub ip: Option<String>,
    #[schema(example = "dv_3q2b7x9k")]
    pub device_id: Option<String>,
    #[schema(example = "success")]
    pub outcome: String,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[schema(example = 1041)]
    pub next_cursor: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Profile {
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub user_id: uuid::Uuid,
    #[schema(example = "alice")]
    pub username: String,
    #[schema(example = json!(["admin"]))]
    pub roles: Vec<String>,
    /// TOTP is on (logins need a second factor).
    #[schema(example = false)]
    pub totp_enabled: bool,
    #[schema(example = "2026-12-01T09:30:00Z")]
    pub created_at: DateTime<Utc>,
}

/// The caller's own account: name, roles, whether TOTP is on.
#[utoipa::path(
    tag = "account",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, body = Profile),
        (status = 400, response = problem::TokenInQuery),
        (status = 401, response = problem::Unauthorized),
    )
)]
#[get("/v1/account")]
pub async fn profile(state: web::Data<AppState>, Authenticated(session): Authenticated) -> Result<HttpResponse, Error> {
    let summary = state.core.account_profile(&session).await?;
    Ok(HttpResponse::Ok().json(Profile {
        user_id: summary.user.id,
        username: summary.user.username,
        roles: summary.roles,
        totp_enabled: summary.totp_enabled,
        created_at: summary.user.created_at,
    }))
}

/// The caller's own security timeline, newest first: logins and failures,
/// new devices, sessions revoked, password and TOTP changes.
#[utoipa::path(
    tag = "account",
    security(("bearer" = []), ("session_cookie" = [])),
    params(EventsQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::Unauthorized),
    )
)]
#[get("/v1/account/events")]
pub async fn events(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, Error> {
    let limit = query.limit.unwrap_or(50);
    let page: Vec<AccountEvent> = state.core.account_events(&session, query.cursor, limit).await?;
    let next_cursor = (page.len() as u64 == limit.clamp(1, 100)).then(|| page.last().map(|e| e.id)).flatten();
    let events = page
        .into_iter()
        .map(|e| EventItem { event: e.event, at: e.at, ip: e.ip, device_id: e.device_id, outcome: e.outcome })
        .collect();
    Ok(HttpResponse::Ok().json(EventPage { events, next_cursor }))
}
