//! The one place where domain errors become HTTP answers: RFC 9457
//! `application/problem+json` bodies with a stable machine `code`.
//!
//! Bodies never carry internal detail (database text, which check failed on
//! a credential): that goes to the log, under the request id the client also
//! gets in `X-Request-Id`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Error;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// URI naming the problem type: `urn:latchkey:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(example = "urn:latchkey:problem:invalid_request")]
    pub problem_type: String,
    #[schema(example = "Bad Request")]
    pub title: &'static str,
    #[schema(example = 400)]
    pub status: u16,
    /// Stable machine-readable code.
    #[schema(example = "invalid_request")]
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "unknown field `pasword`")]
    pub detail: Option<String>,
    /// Extra members (readiness checks, for instance).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: Option<String>) -> Self {
        Self {
            problem_type: format!("urn:latchkey:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            code,
            detail,
            extra: None,
        }
    }

    pub fn response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpResponse::build(status).content_type(PROBLEM_JSON).json(self)
    }
}

/// Status and code of each domain error.
fn classify(err: &Error) -> (StatusCode, &'static str) {
    match err {
        Error::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        Error::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
        Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
        Error::MfaRequired => (StatusCode::UNAUTHORIZED, "mfa_required"),
        Error::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
        Error::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        Error::AccountLocked { .. } => (StatusCode::LOCKED, "account_locked"),
        Error::DeviceBlocked => (StatusCode::FORBIDDEN, "device_blocked"),
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        Error::WrongMasterPassword | Error::Integrity(_) | Error::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        classify(self).0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = classify(self);
        let detail = match self {
            Error::InvalidRequest(msg) => Some(msg.clone()),
            Error::Conflict(_) => Some("the resource already exists".to_owned()),
            Error::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "answering 503");
                Some("a backend is unavailable; retry later".to_owned())
            }
            Error::Integrity(cause) => {
                tracing::error!(cause = %cause, "integrity error");
                metrics::counter!("latchkey_integrity_errors_total", "table" => "request").increment(1);
                None
            }
            Error::Internal(_) | Error::WrongMasterPassword => {
                tracing::error!(error = %self, "internal error");
                None
            }
            _ => None,
        };
        let mut response = Problem::new(status, code, detail).response();
        if let Error::RateLimited { retry_after_ms, limit, remaining, reset_ms, window_secs } = self {
            let headers = response.headers_mut();
            for (name, value) in rate_limit_headers(*limit, *remaining, *reset_ms, *window_secs) {
                headers.insert(name, value);
            }
            if let Ok(v) = HeaderValue::from_str(&retry_after_ms.div_ceil(1000).max(1).to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        if let Error::AccountLocked { retry_after_secs } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(&1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// Maps JSON extractor failures (syntax, unknown fields, size) to problems.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let problem = match &err {
        J::Overflow { .. } | J::OverflowKnownLength { .. } => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            Some("request body is larger than 64 KiB".into()),
        ),
        J::ContentType => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            Some("Content-Type must be application/json".into()),
        ),
        J::Deserialize(e) => Problem::new(StatusCode::BAD_REQUEST, "invalid_request", Some(e.to_string())),
        _ => Problem::new(StatusCode::BAD_REQUEST, "invalid_request", Some("unreadable request body".into())),
    };
    actix_web::error::InternalError::from_response(err, problem.response()).into()
}

/// Query-string and path extractor failures.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let problem = Problem::new(StatusCode::BAD_REQUEST, "invalid_request", Some(err.to_string()));
    actix_web::error::InternalError::from_response(err, problem.response()).into()
}

pub fn path_error(err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    let problem = Problem::new(StatusCode::NOT_FOUND, "not_found", None);
    actix_web::error::InternalError::from_response(err, problem.response()).into()
}

/// Raw payload limit (bodies read without the JSON extractor).
pub fn payload_too_large() -> HttpResponse {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", Some("request body is larger than 64 KiB".into()))
        .response()
}

pub async fn not_found() -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, "not_found", None).response()
}

/// `RateLimit-Limit`, `-Remaining`, `-Reset` (seconds, rounded up) and
/// `-Policy` (`<limit>;w=<window seconds>`).
pub fn rate_limit_headers(
    limit: u64,
    remaining: u64,
    reset_ms: u64,
    window_secs: u64,
) -> Vec<(header::HeaderName, HeaderValue)> {
    let pairs = [
        ("ratelimit-limit", limit.to_string()),
        ("ratelimit-remaining", remaining.to_string()),
        ("ratelimit-reset", reset_ms.div_ceil(1000).to_string()),
        ("ratelimit-policy", format!("{limit};w={window_secs}")),
    ];
    pairs
        .into_iter()
        .filter_map(|(name, value)| Some((header::HeaderName::from_static(name), HeaderValue::from_str(&value).ok()?)))
        .collect()
}
