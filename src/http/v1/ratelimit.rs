//! Rate-limit decisions for other services.

use actix_web::{HttpRequest, HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use utoipa::ToSchema;

use crate::domain::Error;
use crate::http::AppState;
use crate::http::error::{problem, rate_limit_headers};
use crate::http::extractors::bearer;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// A namespace from the configuration file.
    #[schema(example = "api")]
    pub namespace: String,
    /// What is limited: a user id, an API key, an IP (1 to 256 characters).
    #[schema(example = "user:42")]
    pub key: String,
    /// Units this request costs (1 to the namespace's limit).
    #[serde(default = "one")]
    #[schema(example = 1)]
    pub cost: u64,
}

fn one() -> u64 {
    1
}

#[derive(Serialize, ToSchema)]
pub struct Decision {
    #[schema(example = true)]
    pub allowed: bool,
    #[schema(example = 100)]
    pub limit: u64,
    #[schema(example = 99)]
    pub remaining: u64,
    /// Until the oldest counted request leaves the window.
    #[schema(example = 59000)]
    pub reset_ms: u64,
    /// When refused: until this request would be allowed; 0 when allowed.
    #[schema(example = 0)]
    pub retry_after_ms: u64,
}

/// Whether the bearer token is one of the configured service tokens
/// (compared as SHA-256 hashes, in constant time, against every one).
pub(crate) fn is_service(state: &AppState, req: &HttpRequest) -> bool {
    bearer(req).is_some_and(|token| is_service_token(state, token))
}

/// Whether `token` is one of the configured service tokens.
pub(crate) fn is_service_token(state: &AppState, token: &str) -> bool {
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    state.service_token_hashes.iter().fold(false, |found, known| found | bool::from(known.ct_eq(&presented)))
}

/// One sliding-window decision: is `key` allowed `cost` more units in
/// `namespace` now? A refusal is still a 200 with `allowed: false`.
#[utoipa::path(
    tag = "ratelimit",
    security(("service_token" = [])),
    request_body = CheckRequest,
    responses(
        (status = 200, body = Decision),
        (status = 400, response = problem::InvalidRateLimitCheck),
        (status = 401, response = problem::Unauthorized),
        (status = 404, response = problem::UnknownNamespace),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
    )
)]
#[post("/v1/ratelimit/check")]
pub async fn check(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<CheckRequest>,
) -> Result<HttpResponse, Error> {
    if !is_service(&state, &req) {
        return Err(Error::Unauthorized);
    }
    let (d, rule) = state.core.ratelimit_check(&body.namespace, &body.key, body.cost).await?;
    let mut response = HttpResponse::Ok();
    for header in rate_limit_headers(d.limit, d.remaining, d.reset_ms, rule.window.as_secs().max(1)) {
        response.insert_header(header);
    }
    Ok(response.json(Decision {
        allowed: d.allowed,
        limit: d.limit,
        remaining: d.remaining,
        reset_ms: d.reset_ms,
        retry_after_ms: d.retry_after_ms,
    }))
}
