//! Passkeys (WebAuthn): enrolment, listing and removal, the second step of
//! a login, and step-up. The `options` answers are what the browser's
//! `navigator.credentials.create` / `.get` take as `publicKey` (base64url
//! for binary members, as webauthn-rs writes them); the `credential`
//! bodies are the browser's answers in the same JSON shape
//! (`PublicKeyCredential.toJSON()`).

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::totp::SecondFactor;
use crate::domain::webauthn::{
    CreationChallengeResponse, CredentialInfo, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};
use crate::http::AppState;
use crate::http::cookies;
use crate::http::error::problem;
use crate::http::extractors::{Authenticated, Client};
use crate::http::v1::auth::{SessionAnswer, session_response};

/// A JSON object whose members WebAuthn defines (options, the browser's
/// answers): open, so generated clients take any member.
fn json_object() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .build()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterStart {
    /// What the user calls this authenticator (1 to 64 characters).
    #[schema(example = "YubiKey 5C")]
    pub name: String,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"ceremony_id": "q1w2e3r4t5y6u7i8o9p0aa", "options": {"publicKey": {"rp": {"id": "localhost", "name": "latchkey"}, "challenge": "base64url…"}}}))]
pub struct RegisterStartAnswer {
    /// Names this registration at finish; valid 5 minutes, once.
    #[schema(example = "q1w2e3r4t5y6u7i8o9p0aa")]
    pub ceremony_id: String,
    /// `CredentialCreationOptions`: pass `options.publicKey` to
    /// `navigator.credentials.create` (decoding the base64url members).
    #[schema(schema_with = json_object)]
    pub options: CreationChallengeResponse,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
// utoipa drops a property example beside `value_type = Object`: the
// whole body's example shows it.
#[schema(example = json!({"ceremony_id": "q1w2e3r4t5y6u7i8o9p0aa", "credential": {"id": "base64url…", "rawId": "base64url…", "type": "public-key", "response": {"attestationObject": "base64url…", "clientDataJSON": "base64url…"}}}))]
pub struct RegisterFinish {
    #[schema(example = "q1w2e3r4t5y6u7i8o9p0aa")]
    pub ceremony_id: String,
    /// The browser's `PublicKeyCredential` (attestation), as JSON.
    #[schema(schema_with = json_object)]
    pub credential: RegisterPublicKeyCredential,
}

#[derive(Serialize, ToSchema)]
pub struct CredentialItem {
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub id: Uuid,
    #[schema(example = "YubiKey 5C")]
    pub name: String,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub created_at: DateTime<Utc>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<CredentialInfo> for CredentialItem {
    fn from(c: CredentialInfo) -> Self {
        Self { id: c.id, name: c.name, created_at: c.created_at, last_used_at: c.last_used_at }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CredentialList {
    pub credentials: Vec<CredentialItem>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"options": {"publicKey": {"rpId": "localhost", "challenge": "base64url…", "allowCredentials": [{"type": "public-key", "id": "base64url…"}]}}}))]
pub struct AssertionOptions {
    /// `CredentialRequestOptions`: pass `options.publicKey` to
    /// `navigator.credentials.get` (decoding the base64url members).
    #[schema(schema_with = json_object)]
    pub options: RequestChallengeResponse,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginWebauthnStart {
    #[schema(example = "lk_m_T25lIG1vcmUgc3RlcA…")]
    pub mfa_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
// utoipa drops a property example beside `value_type = Object`: the
// whole body's example shows it.
#[schema(example = json!({"mfa_token": "lk_m_T25lIG1vcmUgc3RlcA…", "credential": {"id": "base64url…", "rawId": "base64url…", "type": "public-key", "response": {"authenticatorData": "base64url…", "clientDataJSON": "base64url…", "signature": "base64url…"}}, "session_cookie": false}))]
pub struct LoginWebauthnFinish {
    #[schema(example = "lk_m_T25lIG1vcmUgc3RlcA…")]
    pub mfa_token: String,
    /// The browser's `PublicKeyCredential` (assertion), as JSON.
    #[schema(schema_with = json_object)]
    pub credential: PublicKeyCredential,
    /// A browser session, as at login/finish.
    #[serde(default)]
    #[schema(example = false)]
    pub session_cookie: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
// utoipa drops a property example beside `value_type = Object`: the
// whole body's example shows it.
#[schema(example = json!({"credential": {"id": "base64url…", "rawId": "base64url…", "type": "public-key", "response": {"authenticatorData": "base64url…", "clientDataJSON": "base64url…", "signature": "base64url…"}}}))]
pub struct ReauthFinish {
    /// The browser's `PublicKeyCredential` (assertion), as JSON.
    #[schema(schema_with = json_object)]
    pub credential: PublicKeyCredential,
}

#[derive(Serialize, ToSchema)]
pub struct Reauthenticated {
    /// The session's new authentication time (now): the step-up window
    /// runs from here.
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub auth_time: DateTime<Utc>,
    /// `aal2`: password and passkey.
    pub aal: crate::domain::states::Aal,
}

/// Start registering a passkey (step-up): the options for
/// `navigator.credentials.create`.
#[utoipa::path(
    operation_id = "webauthn_register_start",
    tag = "webauthn",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body = RegisterStart,
    responses(
        (status = 200, body = RegisterStartAnswer),
        (status = 400, response = problem::InvalidPasskeyRequest),
        (status = 401, response = problem::UnauthorizedOrStepUp),
        (status = 403, response = problem::CsrfRejected),
        (status = 409, response = problem::PasskeyConflict),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
    )
)]
#[post("/v1/webauthn/register/start")]
pub async fn register_start(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    body: web::Json<RegisterStart>,
) -> Result<HttpResponse, Error> {
    let (ceremony_id, options) = state.core.webauthn_register_start(&session, &body.name, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(RegisterStartAnswer { ceremony_id, options }))
}

/// Finish registering a passkey with the authenticator's answer: it is
/// stored, and this session becomes aal2.
#[utoipa::path(
    operation_id = "webauthn_register_finish",
    tag = "webauthn",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body = RegisterFinish,
    responses(
        (status = 201, body = CredentialItem),
        (status = 400, response = problem::InvalidPasskeyRequest),
        (status = 401, response = problem::UnauthorizedOrStepUp),
        (status = 403, response = problem::CsrfRejected),
        (status = 409, response = problem::PasskeyConflict),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
    )
)]
#[post("/v1/webauthn/register/finish")]
pub async fn register_finish(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
    body: web::Json<RegisterFinish>,
) -> Result<HttpResponse, Error> {
    let info =
        state.core.webauthn_register_finish(&session, &body.ceremony_id, &body.credential, &client, Utc::now()).await?;
    Ok(HttpResponse::Created().json(CredentialItem::from(info)))
}

/// The caller's passkeys.
#[utoipa::path(
    operation_id = "list_webauthn_credentials",
    tag = "webauthn",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, body = CredentialList),
        (status = 400, response = problem::TokenInQuery),
        (status = 401, response = problem::Unauthorized),
    )
)]
#[get("/v1/webauthn/credentials")]
pub async fn list(state: web::Data<AppState>, Authenticated(session): Authenticated) -> Result<HttpResponse, Error> {
    let credentials = state.core.webauthn_credentials(&session).await?;
    Ok(HttpResponse::Ok().json(CredentialList { credentials: credentials.into_iter().map(Into::into).collect() }))
}

/// Remove one of the caller's passkeys (step-up; the last second factor
/// only from an aal2 session).
#[utoipa::path(
    operation_id = "remove_webauthn_credential",
    tag = "webauthn",
    security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204),
        (status = 400, response = problem::TokenInQuery),
        (status = 401, response = problem::UnauthorizedOrStepUp),
        (status = 403, response = problem::Aal2Required),
        (status = 404, response = problem::NotFound),
    )
)]
#[delete("/v1/webauthn/credentials/{id}")]
pub async fn remove(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Error> {
    state.core.webauthn_remove(&session, id.into_inner(), &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Second step of a login, by passkey: a challenge for the MFA token's
/// user. Each start replaces the previous challenge of this token.
#[utoipa::path(
    operation_id = "login_webauthn_start",
    tag = "login",
    request_body = LoginWebauthnStart,
    responses(
        (status = 200, body = AssertionOptions),
        (status = 400, response = problem::InvalidPasskeyRequest),
        (status = 401, response = problem::InvalidSecondFactor),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 423, response = problem::AccountLocked),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/login/webauthn/start")]
pub async fn login_start(
    state: web::Data<AppState>,
    Client(client): Client,
    body: web::Json<LoginWebauthnStart>,
) -> Result<HttpResponse, Error> {
    let options = state.core.login_webauthn_start(&body.mfa_token, &client, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(AssertionOptions { options }))
}

/// Second step of a login, by passkey: the assertion for the challenge of
/// `/v1/login/webauthn/start` gives a new aal2 session. A failed assertion
/// counts as a failed login; 5 failures burn the MFA token.
#[utoipa::path(
    operation_id = "login_webauthn_finish",
    tag = "login",
    request_body = LoginWebauthnFinish,
    responses(
        (status = 200, body = SessionAnswer),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::InvalidSecondFactor),
        (status = 403, response = problem::DeviceBlocked),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 423, response = problem::AccountLocked),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/login/webauthn/finish")]
pub async fn login_finish(
    state: web::Data<AppState>,
    req: HttpRequest,
    Client(client): Client,
    body: web::Json<LoginWebauthnFinish>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    if body.session_cookie {
        cookies::check_csrf(&req)?;
    }
    let factor = SecondFactor::Webauthn(Box::new(body.credential));
    let session = state.core.login_totp(&body.mfa_token, factor, &client, Utc::now()).await?;
    Ok(session_response(session, body.session_cookie))
}

/// Step-up by passkey, first half: a challenge for the caller's passkeys.
#[utoipa::path(
    operation_id = "reauth_webauthn_start",
    tag = "account",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, body = AssertionOptions),
        (status = 400, response = problem::InvalidPasskeyRequest),
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::CsrfRejected),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/account/reauth/webauthn/start")]
pub async fn reauth_start(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
) -> Result<HttpResponse, Error> {
    let options = state.core.reauth_webauthn_start(&session, &client, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(AssertionOptions { options }))
}

/// Step-up by passkey, second half: a valid assertion renews this
/// session's `auth_time` (as a password login would), so sensitive
/// operations are allowed for the step-up window, and makes it aal2. A
/// failed assertion counts as a failed login.
#[utoipa::path(
    operation_id = "reauth_webauthn_finish",
    tag = "account",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body = ReauthFinish,
    responses(
        (status = 200, body = Reauthenticated),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::UnauthorizedOrBadAssertion),
        (status = 403, response = problem::CsrfRejected),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
        (status = 423, response = problem::AccountLocked),
        (status = 429, response = problem::RateLimited),
    )
)]
#[post("/v1/account/reauth/webauthn/finish")]
pub async fn reauth_finish(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
    body: web::Json<ReauthFinish>,
) -> Result<HttpResponse, Error> {
    let auth_time = state.core.reauth_webauthn_finish(&session, &body.credential, &client, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(Reauthenticated { auth_time, aal: crate::domain::states::Aal::Aal2 }))
}
