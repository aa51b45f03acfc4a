//! Tokens for other services: a JWT for a session, the JWKS that verifies
//! it, and RFC 7662 introspection for gateways.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ratelimit::{is_service, is_service_token};
use crate::domain::Error;
use crate::domain::signing::Introspection;
use crate::domain::states::Aal;
use crate::http::AppState;
use crate::http::error::{Problem, payload_too_large, problem};
use crate::http::extractors::Authenticated;

#[derive(Serialize, ToSchema)]
pub struct JwtAnswer {
    /// Compact JWS, `alg` EdDSA with `kid`; claims `iss`, `aud`, `sub`, `sid`,
    /// `aal`, `auth_time`, `iat`, `exp`, `jti`.
    #[schema(example = "eyJhbGciOiJFZERTQSIsImtpZCI6Ii4uLiJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl")]
    pub token: String,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub expires_at: DateTime<Utc>,
}

/// A short-lived JWT for the caller's session, for services that verify
/// tokens offline against the JWKS (at most 60 per session per minute).
#[utoipa::path(
    tag = "tokens",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, body = JwtAnswer),
        (status = 400, response = problem::TokenInQuery),
        (status = 401, response = problem::Unauthorized),
        (status = 403, response = problem::CsrfRejected),
        (status = 429, response = problem::RateLimited),
        (status = 503, response = problem::NotReady),
    )
)]
#[post("/v1/tokens/jwt")]
pub async fn jwt(state: web::Data<AppState>, Authenticated(session): Authenticated) -> Result<HttpResponse, Error> {
    let (token, expires_at) = state.core.issue_jwt(&session, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(JwtAnswer { token, expires_at }))
}

#[derive(Serialize, ToSchema)]
pub struct Jwk {
    #[schema(example = "OKP")]
    pub kty: &'static str,
    #[schema(example = "Ed25519")]
    pub crv: &'static str,
    /// The public key, base64url.
    #[schema(example = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")]
    pub x: String,
    #[schema(example = "k_2026_05")]
    pub kid: String,
    #[schema(example = "EdDSA")]
    pub alg: &'static str,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub use_: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// How long verifiers may cache the JWKS: well under the time a rotated key
/// stays published (the longest JWT lifetime, 15 minutes).
const JWKS_MAX_AGE_SECS: u32 = 300;

/// The public signing keys (RFC 7517): the current one and any previous one
/// whose tokens may still be live. Cacheable for five minutes.
#[utoipa::path(
    tag = "tokens",
    responses((status = 200, body = JwkSet, headers(("Cache-Control" = String, description = "public, max-age=300"))), (status = 400, response = problem::TokenInQuery))
)]
#[get("/.well-known/jwks.json")]
pub async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let keys = state
        .core
        .jwks(Utc::now())
        .await?
        .into_iter()
        .map(|k| Jwk { kty: "OKP", crv: "Ed25519", x: k.x, kid: k.kid, alg: "EdDSA", use_: "sig" })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, format!("public, max-age={JWKS_MAX_AGE_SECS}")))
        .json(JwkSet { keys }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectRequest {
    /// A session token (`lk_s_`) or a latchkey JWT.
    #[schema(example = "lk_s_Q2hhbmdlIG1lIQ…")]
    pub token: String,
    /// Accepted and ignored (RFC 7662 §2.1).
    #[serde(default)]
    #[schema(example = "access_token")]
    pub token_type_hint: Option<String>,
}

/// RFC 7662 answer: `active`, and when active the token's subject and facts.
#[derive(Serialize, ToSchema)]
pub struct IntrospectAnswer {
    #[schema(example = true)]
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e")]
    pub sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aal: Option<Aal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 1777640400)]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 1777639500)]
    pub iat: Option<i64>,
    /// `session_token` or `jwt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "session_token")]
    pub token_type: Option<&'static str>,
}

impl From<Introspection> for IntrospectAnswer {
    fn from(i: Introspection) -> Self {
        Self {
            active: i.active,
            sub: i.sub.map(|s| s.to_string()),
            sid: i.sid.map(|s| s.to_string()),
            aal: i.aal,
            exp: i.exp,
            iat: i.iat,
            token_type: i.token_type,
        }
    }
}

/// HTTP Basic with a service token as the password (any user name): what
/// RFC 7662 clients in gateways send as `client_secret_basic`.
fn basic_service(state: &AppState, req: &HttpRequest) -> bool {
    use base64::Engine as _;
    let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some((scheme, encoded)) = value.split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let Ok(decoded) = String::from_utf8(decoded) else { return false };
    decoded.split_once(':').is_some_and(|(_, secret)| is_service_token(state, secret))
}

/// RFC 7662 token introspection for gateways: a service token as bearer
/// (or as the password of HTTP Basic, `client_secret_basic`);
/// the body `token=…` form-encoded (or JSON `{"token"}`). Expired, revoked,
/// made-up or malformed tokens are `{"active": false}`, never an error; a
/// JWT of a revoked session is inactive.
#[utoipa::path(
    tag = "tokens",
    security(("service_token" = [])),
    request_body(content = IntrospectRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = IntrospectAnswer),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::Unauthorized),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
    )
)]
#[post("/v1/tokens/introspect")]
pub async fn introspect(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, Error> {
    if !is_service(&state, &req) && !basic_service(&state, &req) {
        return Err(Error::Unauthorized);
    }
    // A body over the limit (or cut short) is a problem like any other, not
    // actix's plain-text answer.
    let body = match body {
        Ok(body) => body,
        Err(e) if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Ok(payload_too_large());
        }
        Err(_) => return Err(Error::InvalidRequest("unreadable request body".into())),
    };
    // The media type without parameters, case-insensitively (RFC 9110).
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let request: IntrospectRequest = if content_type == "application/json" {
        serde_json::from_slice(&body).map_err(|e| Error::InvalidRequest(e.to_string()))?
    } else if content_type == "application/x-www-form-urlencoded" {
        serde_urlencoded::from_bytes(&body).map_err(|e| Error::InvalidRequest(e.to_string()))?
    } else {
        let detail = "Content-Type must be application/x-www-form-urlencoded or application/json";
        return Ok(Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request", Some(detail.into())).response());
    };
    let answer = state.core.introspect(&request.token, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(IntrospectAnswer::from(answer)))
}
