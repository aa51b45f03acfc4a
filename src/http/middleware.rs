//! Cross-cutting middleware: request metrics and the request id header.

use std::time::Instant;

use actix_web::HttpMessage as _;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing_actix_web::RequestId;

use super::error::Problem;

/// Counts requests and records their latency per route pattern (never the
/// raw path, which would carry ids and explode label cardinality).
pub async fn metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    // A method outside HTTP's own is one label, not one per spelling.
    let method = match req.method().as_str() {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "TRACE" | "CONNECT" => req.method().clone(),
        _ => actix_web::http::Method::from_bytes(b"OTHER").unwrap_or_default(),
    };
    let res = next.call(req).await?;
    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let (requests, duration) = request_metrics(method, route, res.status());
    requests.increment(1);
    duration.record(start.elapsed().as_secs_f64());
    Ok(res)
}

/// Handles kept per thread beyond this many (method, route, status)
/// triples are not kept (the registry still counts them).
const MAX_KEPT_HANDLES: usize = 1024;

type RequestMetrics = (metrics::Counter, metrics::Histogram);

thread_local! {
    /// The metric handles of each (method, route, status) this thread has
    /// seen: registering them anew built their label sets and looked them up
    /// on every request.
    static HANDLES: std::cell::RefCell<std::collections::HashMap<(actix_web::http::Method, String, StatusCode), RequestMetrics>> =
        std::cell::RefCell::default();
}

fn request_metrics(method: actix_web::http::Method, route: String, status: StatusCode) -> RequestMetrics {
    let key = (method, route, status);
    if let Some(found) = HANDLES.with_borrow(|handles| handles.get(&key).cloned()) {
        return found;
    }
    let (method, route, status) = key;
    let handles = (
        metrics::counter!("latchkey_http_requests_total", "method" => method.as_str().to_owned(), "route" => route.clone(), "status" => status.as_u16().to_string()),
        metrics::histogram!("latchkey_http_request_duration_seconds", "method" => method.as_str().to_owned(), "route" => route.clone()),
    );
    HANDLES.with_borrow_mut(|kept| {
        if kept.len() < MAX_KEPT_HANDLES {
            kept.insert((method, route, status), handles.clone());
        }
    });
    handles
}

/// Returns the request id (the one on every log line of the request) to the
/// client, so a problem report can be matched to the logs.
pub async fn request_id_header(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req.extensions().get::<RequestId>().copied();
    let mut res = next.call(req).await?;
    if let Some(id) = id
        && let Ok(value) = HeaderValue::from_str(&id.to_string())
    {
        res.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

/// The per-IP pre-filter: a GCRA limiter in this process, in front of the
/// unauthenticated endpoints, so a flood from one address is refused
/// before it costs a Redis round trip or any cryptography.
pub type Prefilter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

pub fn new_prefilter(per_second: u32, burst: u32) -> Prefilter {
    let per_second = std::num::NonZeroU32::new(per_second).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN);
    governor::RateLimiter::keyed(governor::Quota::per_second(per_second).allow_burst(burst))
}

/// Paths the pre-filter guards.
fn prefiltered(path: &str) -> bool {
    path.starts_with("/v1/login/") || path.starts_with("/v1/registration/") || path == "/v1/sessions/refresh"
}

pub async fn prefilter(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    // The decoded path, as the router matches it: `/v1/%6Cogin/start` is
    // login/start too.
    if prefiltered(req.match_info().as_str())
        && let Some(state) = req.app_data::<actix_web::web::Data<super::AppState>>()
    {
        let ip =
            super::extractors::client_ip(req.peer_addr().map(|a| a.ip()), req.headers(), &state.config.trusted_proxies)
                .ok()
                .flatten();
        if let Some(ip) = ip
            && let Err(not_until) = state.prefilter.check_key(&crate::domain::ratelimit::rate_subject(ip).addr())
        {
            use governor::clock::Clock as _;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            metrics::counter!("latchkey_prefilter_refused_total").increment(1);
            let err = crate::domain::Error::RateLimited {
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
                limit: u64::from(state.config.ratelimit.prefilter_burst),
                remaining: 0,
                reset_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                window_secs: 1,
            };
            let response = actix_web::ResponseError::error_response(&err);
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Query parameters that would carry a bearer token.
const TOKEN_PARAMS: &[&str] =
    &["token", "access_token", "session_token", "refresh_token", "mfa_token", "device_token", "reset_token"];

/// Refuses any request with a token in its query string: URLs end up in
/// proxy logs, browser history and Referer headers.
pub async fn refuse_tokens_in_query(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    // Decoded, as a handler would read them: `?%74oken=` is `?token=`.
    let carries_token = url::form_urlencoded::parse(req.query_string().as_bytes()).any(|(name, value)| {
        TOKEN_PARAMS.iter().any(|p| name.eq_ignore_ascii_case(p))
            || ["lk_s_", "lk_r_", "lk_m_", "lk_d_", "lk_t_"].iter().any(|prefix| value.starts_with(prefix))
    });
    if carries_token {
        let problem =
            Problem::new(StatusCode::BAD_REQUEST, "invalid_request", Some(super::error::TOKENS_IN_QUERY.into()));
        return Ok(req.into_response(problem.response()).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
