//! TOTP enrolment and removal.

use actix_web::{HttpResponse, delete, post, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::Error;
use crate::http::AppState;
use crate::http::error::problem;
use crate::http::extractors::{Authenticated, Client};

#[derive(Serialize, ToSchema)]
pub struct Enrollment {
    /// The secret, base32, for manual entry.
    #[schema(example = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")]
    pub secret: String,
    #[schema(example = "otpauth://totp/latchkey:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=latchkey")]
    pub otpauth_uri: String,
    /// The otpauth URI as a QR code: a PNG, base64.
    #[schema(example = "iVBORw0KGgoAAAANSUhEUgAA…")]
    pub qr_png: String,
}

/// Start TOTP enrolment: a new secret, pending until confirmed; replaces an
/// unconfirmed enrolment.
#[utoipa::path(
    tag = "totp",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, body = Enrollment),
        (status = 400, response = problem::TokenInQuery),
        (status = 401, response = problem::UnauthorizedOrStepUp),
        (status = 403, response = problem::CsrfRejected),
        (status = 409, response = problem::TotpAlreadyOn),
    )
)]
#[post("/v1/totp/enroll")]
pub async fn enroll(state: web::Data<AppState>, Authenticated(session): Authenticated) -> Result<HttpResponse, Error> {
    let e = state.core.totp_enroll(&session, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(Enrollment {
        secret: e.secret_base32,
        otpauth_uri: e.otpauth_uri,
        qr_png: e.qr_png_base64,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    #[schema(example = "123456")]
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes, shown only now.
    #[schema(example = json!(["abcde-fghij", "kmnpq-rstuv"]))]
    pub recovery_codes: Vec<String>,
}

/// Confirm enrolment with a first code: TOTP is on, this session becomes
/// aal2, and the recovery codes are returned once.
#[utoipa::path(
    tag = "totp",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body = CodeBody,
    responses(
        (status = 200, body = RecoveryCodes),
        (status = 400, response = problem::InvalidTotpConfirmation),
        (status = 401, response = problem::UnauthorizedOrStepUp),
        (status = 403, response = problem::CsrfRejected),
        (status = 409, response = problem::TotpAlreadyOn),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
    )
)]
#[post("/v1/totp/confirm")]
pub async fn confirm(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
    body: web::Json<CodeBody>,
) -> Result<HttpResponse, Error> {
    let recovery_codes = state.core.totp_confirm(&session, &body.code, &client, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(RecoveryCodes { recovery_codes }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableBody {
    #[schema(example = "123456")]
    pub code: String,
    /// Also end every other session.
    #[serde(default)]
    #[schema(example = false)]
    pub revoke_other_sessions: bool,
}

/// Turn TOTP off (needs an aal2 session and a current code).
#[utoipa::path(
    tag = "totp",
    security(("bearer" = []), ("session_cookie" = [])),
    request_body = DisableBody,
    responses(
        (status = 204),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::StepUpOrWrongCode),
        (status = 403, response = problem::Aal2Required),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
    )
)]
#[delete("/v1/totp")]
pub async fn disable(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
    body: web::Json<DisableBody>,
) -> Result<HttpResponse, Error> {
    state.core.totp_disable(&session, &body.code, body.revoke_other_sessions, &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}
