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

const TOO_LARGE: &str = "request body is larger than 64 KiB";
const NOT_JSON: &str = "Content-Type must be application/json";
pub(crate) const TOKENS_IN_QUERY: &str = "tokens are not accepted in query strings; use the Authorization header";

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
        Error::ReauthenticationRequired => (StatusCode::UNAUTHORIZED, "reauthentication_required"),
        Error::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
        Error::CsrfRejected => (StatusCode::FORBIDDEN, "csrf_rejected"),
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
            Error::CsrfRejected => Some(crate::http::cookies::CSRF_DETAIL.to_owned()),
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
        J::Overflow { .. } | J::OverflowKnownLength { .. } => {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", Some(TOO_LARGE.into()))
        }
        J::ContentType => Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request", Some(NOT_JSON.into())),
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
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", Some(TOO_LARGE.into())).response()
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

/// The problem answers of the API document, one type per meaning. Routes
/// name them in their annotations, `(status = 404, response =
/// problem::NotFound)`, so the content type, the schema and an example live
/// here once; [`problem::all`] registers them as `#/components/responses`.
pub mod problem {
    use actix_web::http::StatusCode;
    use utoipa::ToResponse;
    use utoipa::openapi::example::ExampleBuilder;
    use utoipa::openapi::{ContentBuilder, HeaderBuilder, Object, Ref, RefOr, Response, ResponseBuilder, Type};

    use super::{NOT_JSON, PROBLEM_JSON, Problem, TOKENS_IN_QUERY, TOO_LARGE};

    /// One `application/problem+json` response: the [`Problem`] schema, an
    /// example per code it can carry, and the headers it sets.
    fn response(description: String, examples: Vec<Problem>, headers: &[(&str, Type, &str)]) -> RefOr<Response> {
        let schema = Ref::from_schema_name(<Problem as utoipa::ToSchema>::name());
        let value = |p: &Problem| serde_json::to_value(p).ok();
        let content = match examples.as_slice() {
            [one] => ContentBuilder::new().example(value(one)),
            many => ContentBuilder::new().examples_from_iter(
                many.iter().map(|p| (p.code, ExampleBuilder::new().summary(p.code).value(value(p)).build())),
            ),
        };
        let content = content.schema(Some(schema));
        let mut response = ResponseBuilder::new().description(description).content(PROBLEM_JSON, content.build());
        for (name, kind, description) in headers {
            let header =
                HeaderBuilder::new().schema(Some(Object::with_type(kind.clone()))).description(Some(*description));
            response = response.header(*name, header.build());
        }
        response.build().into()
    }

    /// Declares each response: a unit type whose doc comment is also the
    /// description in the document, its examples as `(STATUS, code, detail)`
    /// (plus extra members, if any), and its headers.
    macro_rules! problem_responses {
        ($(
            $(#[doc = $doc:literal])+
            $name:ident [$(($status:ident, $code:literal, $detail:expr $(, $extra:expr)?)),+]
            $(headers [$($header:expr),+ $(,)?])?;
        )+) => {
            $(
                $(#[doc = $doc])+
                pub struct $name;

                impl<'r> ToResponse<'r> for $name {
                    fn response() -> (&'r str, RefOr<Response>) {
                        let description = [$($doc),+].map(str::trim).join(" ");
                        let examples = vec![$({
                            let example = Problem::new(StatusCode::$status, $code, $detail.map(str::to_owned));
                            $(let example = Problem { extra: Some($extra), ..example };)?
                            example
                        }),+];
                        (stringify!($name), response(description, examples, &[$($($header),+)?]))
                    }
                }
            )+

            /// Every problem response, named as the routes reference it.
            pub fn all() -> Vec<(&'static str, RefOr<Response>)> {
                vec![$(<$name as ToResponse>::response()),+]
            }
        };
    }

    fn not_ready_members() -> serde_json::Map<String, serde_json::Value> {
        let members = serde_json::json!({
            "down": ["redis"],
            "checks": {"database": {"backend": "postgres", "ok": true}, "cache": {"backend": "redis", "ok": false}},
        });
        members.as_object().cloned().unwrap_or_default()
    }

    problem_responses! {
        /// The request is malformed (`invalid_request`): unreadable JSON, an
        /// unknown or missing field, a value that is not valid, or a token in
        /// the query string; `detail` says which.
        BadRequest [(BAD_REQUEST, "invalid_request", Some("Json deserialize error: missing field `username` at line 1 column 2"))];

        /// A token in the query string (`invalid_request`): tokens go in the
        /// `Authorization` header, never in a URL. Any route answers this.
        TokenInQuery [(BAD_REQUEST, "invalid_request", Some(TOKENS_IN_QUERY))];

        /// A malformed registration record, or no registration was started
        /// for this username, or it expired (`invalid_request`).
        InvalidRegistrationRecord [(BAD_REQUEST, "invalid_request", Some("no registration was started for this username (or it expired)"))];

        /// Not exactly one of `code` and `recovery_code`, or a code that is
        /// not 6 digits (`invalid_request`).
        InvalidSecondFactorRequest [(BAD_REQUEST, "invalid_request", Some("give exactly one of code and recovery_code"))];

        /// No TOTP enrolment is pending, or the code does not match it or
        /// was used already (`invalid_request`).
        InvalidTotpConfirmation [(BAD_REQUEST, "invalid_request", Some("the code does not match the enrolled secret"))];

        /// A passkey ceremony that cannot finish (`invalid_request`): no
        /// ceremony was started with this id, it expired or was used, the
        /// authenticator's answer was refused, the name is not 1 to 64
        /// printable characters, or the account has no passkey.
        InvalidPasskeyRequest [(BAD_REQUEST, "invalid_request", Some("the authenticator's answer was refused"))];

        /// The authenticator is registered already, or the account has the
        /// most passkeys it may hold (`conflict`).
        PasskeyConflict [(CONFLICT, "conflict", Some("the resource already exists"))];

        /// No valid session (`unauthorized`), or the passkey's assertion
        /// failed (`invalid_credentials`): a wrong or replayed answer, a
        /// challenge that expired or was used, a counter that went back.
        UnauthorizedOrBadAssertion [(UNAUTHORIZED, "unauthorized", None), (UNAUTHORIZED, "invalid_credentials", None)];

        /// `cost` is not between 1 and the namespace's limit, or `key` is not
        /// 1 to 256 characters (`invalid_request`).
        InvalidRateLimitCheck [(BAD_REQUEST, "invalid_request", Some("cost must be between 1 and the namespace limit (100)"))];

        /// No valid token (`unauthorized`): missing, malformed, unknown,
        /// expired or revoked.
        Unauthorized [(UNAUTHORIZED, "unauthorized", None)];

        /// The login failed (`invalid_credentials`), with one answer for
        /// every cause: unknown user, wrong password, expired login.
        InvalidCredentials [(UNAUTHORIZED, "invalid_credentials", None)];

        /// A wrong code or recovery code, or an unknown, expired or burned
        /// MFA token (`invalid_credentials`).
        InvalidSecondFactor [(UNAUTHORIZED, "invalid_credentials", None)];

        /// No valid session (`unauthorized`), or its last login is older than
        /// the step-up window (`reauthentication_required`): log in again.
        UnauthorizedOrStepUp [(UNAUTHORIZED, "unauthorized", None), (UNAUTHORIZED, "reauthentication_required", None)];

        /// No valid session (`unauthorized`), a step-up needed
        /// (`reauthentication_required`), or a wrong TOTP code
        /// (`invalid_credentials`).
        StepUpOrWrongCode [
            (UNAUTHORIZED, "unauthorized", None),
            (UNAUTHORIZED, "reauthentication_required", None),
            (UNAUTHORIZED, "invalid_credentials", None)
        ];

        /// No valid session (`unauthorized`), a login older than `max_age`
        /// (`reauthentication_required`), or no second factor when `aal=aal2`
        /// was asked (`mfa_required`).
        NotFresh [
            (UNAUTHORIZED, "unauthorized", None),
            (UNAUTHORIZED, "reauthentication_required", None),
            (UNAUTHORIZED, "mfa_required", None)
        ];

        /// The caller is not an admin, or is an admin with TOTP on whose
        /// session is not aal2 (`forbidden`); or a change by session cookie
        /// failed the CSRF check (`csrf_rejected`).
        AdminRequired [(FORBIDDEN, "forbidden", None), (FORBIDDEN, "csrf_rejected", Some(crate::http::cookies::CSRF_DETAIL))];

        /// The session is not aal2: log in with the second factor, then
        /// retry (`forbidden`); or a change by session cookie failed the
        /// CSRF check (`csrf_rejected`).
        Aal2Required [(FORBIDDEN, "forbidden", None), (FORBIDDEN, "csrf_rejected", Some(crate::http::cookies::CSRF_DETAIL))];

        /// A change by session cookie that did not come from latchkey's own
        /// pages: `X-Latchkey-CSRF: 1` missing, or not same-origin by
        /// `Sec-Fetch-Site`/`Origin` (`csrf_rejected`).
        CsrfRejected [(FORBIDDEN, "csrf_rejected", Some(crate::http::cookies::CSRF_DETAIL))];

        /// An admin blocked the device this login comes from
        /// (`device_blocked`); said only after a correct password or code.
        /// A `session_cookie` login that failed the CSRF check
        /// (`csrf_rejected`).
        DeviceBlocked [(FORBIDDEN, "device_blocked", None), (FORBIDDEN, "csrf_rejected", Some(crate::http::cookies::CSRF_DETAIL))];

        /// The device is blocked: only an admin can change its trust
        /// (`forbidden`).
        /// A change by session cookie that failed the CSRF check
        /// (`csrf_rejected`).
        DeviceTrustAdminOnly [(FORBIDDEN, "forbidden", None), (FORBIDDEN, "csrf_rejected", Some(crate::http::cookies::CSRF_DETAIL))];

        /// Nothing by this id that the caller can see: unknown, someone
        /// else's, or gone (`not_found`).
        NotFound [(NOT_FOUND, "not_found", None)];

        /// No namespace of this name in the configuration (`not_found`).
        UnknownNamespace [(NOT_FOUND, "not_found", None)];

        /// The username is taken (`conflict`).
        UsernameTaken [(CONFLICT, "conflict", Some("the resource already exists"))];

        /// TOTP is already on; turn it off first (`conflict`).
        TotpAlreadyOn [(CONFLICT, "conflict", Some("the resource already exists"))];

        /// The path exists but does not serve this method
        /// (`method_not_allowed`); `Allow` lists the methods it does serve
        /// (RFC 9110 §15.5.6). Any path of this document answers it for a
        /// method it does not list; HEAD is served wherever GET is.
        MethodNotAllowed [(METHOD_NOT_ALLOWED, "method_not_allowed", Some("PUT is not served at this path; it serves GET, HEAD, DELETE"))] headers [
            ("Allow", Type::String, "The methods this path serves, e.g. `GET, HEAD, DELETE`"),
        ];

        /// The request body is larger than 64 KiB (`invalid_request`).
        PayloadTooLarge [(PAYLOAD_TOO_LARGE, "invalid_request", Some(TOO_LARGE))];

        /// The body is not `Content-Type: application/json` (`invalid_request`).
        UnsupportedMediaType [(UNSUPPORTED_MEDIA_TYPE, "invalid_request", Some(NOT_JSON))];

        /// The name is locked for this caller's scope (`account_locked`),
        /// decided at login/start so no guess is tested during a lock; an
        /// unknown name locks alike. Retry after `Retry-After` seconds, or
        /// when an admin unlocks the account.
        AccountLocked [(LOCKED, "account_locked", None)] headers [
            ("Retry-After", Type::Integer, "Seconds until the lock ends"),
        ];

        /// Too many requests (`rate_limited`): retry after `Retry-After`
        /// seconds.
        RateLimited [(TOO_MANY_REQUESTS, "rate_limited", None)] headers [
            ("Retry-After", Type::Integer, "Seconds until a retry can be allowed"),
            ("RateLimit-Limit", Type::Integer, "Requests allowed in the window"),
            ("RateLimit-Remaining", Type::Integer, "Requests left in the window"),
            ("RateLimit-Reset", Type::Integer, "Seconds until the oldest counted request leaves the window"),
            ("RateLimit-Policy", Type::String, "`<limit>;w=<window seconds>`"),
        ];

        /// A backend is down (`unavailable`): `down` names it, `checks` has
        /// the state of each.
        NotReady [(SERVICE_UNAVAILABLE, "unavailable", Some("not answering: redis"), not_ready_members())];
    }
}
