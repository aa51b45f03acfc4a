//! Registration and login routes.

use actix_web::{HttpRequest, HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::login::{DeviceInput, LoginOutcome};
use crate::domain::sessions::IssuedSession;
use crate::domain::states::Aal;
use crate::domain::totp::SecondFactor;
use crate::domain::webauthn::FactorKind;
use crate::http::AppState;
use crate::http::cookies;
use crate::http::error::problem;
use crate::http::extractors::Client;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationStart {
    #[schema(example = "alice")]
    pub username: String,
    /// OPAQUE RegistrationRequest, base64url without padding (32 bytes).
    #[schema(example = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")]
    pub registration_request: String,
}

#[derive(Serialize, ToSchema)]
pub struct RegistrationStartAnswer {
    /// OPAQUE RegistrationResponse, base64url (64 bytes).
    #[schema(example = "base64url…")]
    pub registration_response: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationFinish {
    #[schema(example = "alice")]
    pub username: String,
    /// OPAQUE RegistrationUpload (the record), base64url (192 bytes).
    #[schema(example = "base64url…")]
    pub registration_record: String,
}

#[derive(Serialize, ToSchema)]
pub struct Registered {
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub user_id: Uuid,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginStart {
    #[schema(example = "alice")]
    pub username: String,
    /// OPAQUE CredentialRequest (KE1), base64url (96 bytes).
    #[schema(example = "base64url…")]
    pub credential_request: String,
    /// The device credential this client holds for the account, if any
    /// (`lk_d_`, from an earlier session answer). A browser's
    /// `__Host-lk_device` cookie serves when this is absent.
    #[schema(example = "lk_d_RGV2aWNlIGNyZWRlbnRpYWw…")]
    #[serde(default)]
    pub device_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LoginStartAnswer {
    /// Names this login attempt at finish; valid 60 s, once.
    #[schema(example = "q1w2e3r4t5y6u7i8o9p0aa")]
    pub login_id: String,
    /// OPAQUE CredentialResponse (KE2), base64url (320 bytes).
    #[schema(example = "base64url…")]
    pub credential_response: String,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// A client-chosen description of the device (at most 256 characters;
    /// without it, the User-Agent). Descriptive only: devices are known by
    /// their `device_token`.
    #[schema(example = "ios-7f3a9c")]
    pub fingerprint: Option<String>,
    #[schema(example = "Alice's iPhone")]
    pub name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginFinish {
    #[schema(example = "q1w2e3r4t5y6u7i8o9p0aa")]
    pub login_id: String,
    /// OPAQUE CredentialFinalization (KE3), base64url (64 bytes).
    #[schema(example = "base64url…")]
    pub credential_finalization: String,
    #[serde(default)]
    pub device: Option<Device>,
    /// The device credential, as at login/start.
    #[schema(example = "lk_d_RGV2aWNlIGNyZWRlbnRpYWw…")]
    #[serde(default)]
    pub device_token: Option<String>,
    /// A browser session: the tokens go into `HttpOnly` cookies instead of
    /// the answer (README, "In the browser"); the request must then carry
    /// `X-Latchkey-CSRF: 1` from the same origin. With TOTP on, ask again
    /// at /v1/login/totp.
    #[serde(default)]
    #[schema(example = false)]
    pub session_cookie: bool,
}

/// A new session.
#[derive(Serialize, ToSchema)]
pub struct SessionAnswer {
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub session_id: Uuid,
    /// Bearer token for authenticated calls; absent for a cookie session
    /// (`session_cookie`), whose token is in the `__Host-lk_session` cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "lk_s_Q2hhbmdlIG1lIQ…")]
    pub session_token: Option<String>,
    /// Single-use; exchange at /v1/sessions/refresh. Absent for a cookie
    /// session, whose refresh token is in the `__Host-lk_refresh` cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "lk_r_U2luZ2xlIHVzZQ…")]
    pub refresh_token: Option<String>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub token_expires_at: chrono::DateTime<chrono::Utc>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub session_expires_at: chrono::DateTime<chrono::Utc>,
    /// `aal1` (password) or `aal2` (password and second factor).
    pub aal: Aal,
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub user_id: Uuid,
    /// When the user last proved the password (this login).
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub auth_time: chrono::DateTime<chrono::Utc>,
    #[schema(example = "dv_3q2b7x9k")]
    pub device_id: Option<String>,
    /// True the first time this device logs in to this account.
    #[schema(example = false)]
    pub new_device: bool,
    /// Only when a device credential was issued with this session: keep it
    /// and send it as `device_token` in later logins. A cookie session gets
    /// it as the `__Host-lk_device` cookie instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "lk_d_RGV2aWNlIGNyZWRlbnRpYWw…")]
    pub device_token: Option<String>,
}

impl From<IssuedSession> for SessionAnswer {
    fn from(s: IssuedSession) -> Self {
        Self {
            session_id: s.session_id,
            session_token: Some(s.session_token),
            refresh_token: Some(s.refresh_token),
            token_expires_at: s.token_expires_at,
            session_expires_at: s.session_expires_at,
            aal: s.aal,
            user_id: s.user_id,
            auth_time: s.auth_time,
            device_id: s.device_id,
            new_device: s.new_device,
            device_token: s.device_token,
        }
    }
}

/// The password was right and a second factor is on: finish at
/// /v1/login/totp or /v1/login/webauthn/start|finish.
#[derive(Serialize, ToSchema)]
pub struct MfaRequired {
    #[schema(example = true)]
    pub mfa_required: bool,
    /// Accepted only by /v1/login/totp and /v1/login/webauthn/*; 5
    /// minutes; burned after 5 failed attempts.
    #[schema(example = "lk_m_T25lIG1vcmUgc3RlcA…")]
    pub mfa_token: String,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub mfa_expires_at: chrono::DateTime<chrono::Utc>,
    /// The second factors this user can finish with.
    #[schema(example = json!(["totp", "webauthn"]))]
    pub methods: Vec<FactorKind>,
}

/// What login/finish answers: a session, or, with TOTP on, the MFA step.
// Only the document uses this type; the handler writes either answer.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum LoginFinishAnswer {
    Session(SessionAnswer),
    MfaRequired(MfaRequired),
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginTotp {
    #[schema(example = "lk_m_T25lIG1vcmUgc3RlcA…")]
    pub mfa_token: String,
    /// The current 6-digit code; or give `recovery_code` instead.
    #[schema(example = "123456")]
    pub code: Option<String>,
    #[schema(example = "abcde-fghij")]
    pub recovery_code: Option<String>,
    /// A browser session, as at login/finish.
    #[serde(default)]
    #[schema(example = false)]
    pub session_cookie: bool,
}

/// The answer for a new session: tokens in the body, or, for a browser that
/// asked for `session_cookie`, in cookies (after the CSRF check, done by the
/// caller before the session was made).
pub fn session_response(issued: IssuedSession, cookie: bool) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    if !cookie {
        return response.json(SessionAnswer::from(issued));
    }
    cookies::set_session(&mut response, &issued, chrono::Utc::now());
    let answer = SessionAnswer { session_token: None, refresh_token: None, device_token: None, ..issued.into() };
    response.json(answer)
}

/// The device credential of the body, else of the browser's device cookie.
fn device_token(req: &HttpRequest, body: Option<String>) -> Option<String> {
    body.or_else(|| cookies::read(req, cookies::DEVICE_COOKIE).ok().flatten())
}

/// Start an OPAQUE registration.
#[utoipa::path(
    tag = "registration",
    request_body = RegistrationStart,
    responses(
        (status = 200, body = RegistrationStartAnswer),
        (status = 400, response = problem::BadRequest),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/registration/start")]
pub async fn registration_start(
    state: web::Data<AppState>,
    Client(client): Client,
    body: web::Json<RegistrationStart>,
) -> Result<HttpResponse, Error> {
    let response =
        state.core.registration_start(&body.username, &body.registration_request, &client, chrono::Utc::now()).await?;
    Ok(HttpResponse::Ok().json(RegistrationStartAnswer { registration_response: response }))
}

/// Finish an OPAQUE registration: stores the record and creates the user.
#[utoipa::path(
    tag = "registration",
    request_body = RegistrationFinish,
    responses(
        (status = 201, body = Registered),
        (status = 400, response = problem::InvalidRegistrationRecord),
        (status = 409, response = problem::UsernameTaken),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/registration/finish")]
pub async fn registration_finish(
    state: web::Data<AppState>,
    Client(client): Client,
    body: web::Json<RegistrationFinish>,
) -> Result<HttpResponse, Error> {
    let user_id =
        state.core.registration_finish(&body.username, &body.registration_record, &client, chrono::Utc::now()).await?;
    Ok(HttpResponse::Created().json(Registered { user_id }))
}

/// Start an OPAQUE login. Unknown usernames get an answer of the same shape.
#[utoipa::path(
    tag = "login",
    request_body = LoginStart,
    responses(
        (status = 200, body = LoginStartAnswer),
        (status = 400, response = problem::BadRequest),
        (status = 403, response = problem::DeviceBlocked),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 423, response = problem::AccountLocked),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/login/start")]
pub async fn login_start(
    state: web::Data<AppState>,
    req: HttpRequest,
    Client(client): Client,
    body: web::Json<LoginStart>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    let device_token = device_token(&req, body.device_token);
    let (login_id, response) = state
        .core
        .login_start(&body.username, &body.credential_request, device_token.as_deref(), &client, chrono::Utc::now())
        .await?;
    Ok(HttpResponse::Ok().json(LoginStartAnswer { login_id, credential_response: response }))
}

/// Finish an OPAQUE login and open a session.
#[utoipa::path(
    tag = "login",
    request_body = LoginFinish,
    responses(
        (status = 200, description = "A session, or `mfa_required` when a second factor is on", body = LoginFinishAnswer),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::InvalidCredentials),
        (status = 403, response = problem::DeviceBlocked),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 423, response = problem::AccountLocked),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/login/finish")]
pub async fn login_finish(
    state: web::Data<AppState>,
    req: HttpRequest,
    Client(client): Client,
    body: web::Json<LoginFinish>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    if body.session_cookie {
        cookies::check_csrf(&req)?;
    }
    let device_token = device_token(&req, body.device_token);
    let device = body.device.unwrap_or_default();
    let device = DeviceInput { fingerprint: device.fingerprint, name: device.name };
    let outcome = state
        .core
        .login_finish(
            &body.login_id,
            &body.credential_finalization,
            device,
            device_token.as_deref(),
            &client,
            chrono::Utc::now(),
        )
        .await?;
    match outcome {
        LoginOutcome::Session(session) => Ok(session_response(session, body.session_cookie)),
        LoginOutcome::MfaRequired { mfa_token, expires_at, methods } => Ok(HttpResponse::Ok().json(MfaRequired {
            mfa_required: true,
            mfa_token,
            mfa_expires_at: expires_at,
            methods,
        })),
    }
}

/// Second step of a login with TOTP on: a code or a recovery code for the
/// MFA token gives a new aal2 session.
#[utoipa::path(
    tag = "login",
    request_body = LoginTotp,
    responses(
        (status = 200, body = SessionAnswer),
        (status = 400, response = problem::InvalidSecondFactorRequest),
        (status = 401, response = problem::InvalidSecondFactor),
        (status = 403, response = problem::DeviceBlocked),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 423, response = problem::AccountLocked),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/login/totp")]
pub async fn login_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    Client(client): Client,
    body: web::Json<LoginTotp>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    if body.session_cookie {
        cookies::check_csrf(&req)?;
    }
    let factor = match (body.code, body.recovery_code) {
        (Some(code), None) => SecondFactor::Code(code),
        (None, Some(code)) => SecondFactor::RecoveryCode(code),
        _ => return Err(Error::InvalidRequest("give exactly one of code and recovery_code".into())),
    };
    let session = state.core.login_totp(&body.mfa_token, factor, &client, chrono::Utc::now()).await?;
    Ok(session_response(session, body.session_cookie))
}
