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
    let method = req.method().as_str().to_owned();
    let res = next.call(req).await?;
    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16().to_string();
    metrics::counter!("latchkey_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("latchkey_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    Ok(res)
}

/// Returns the request id (the one on every log line of the request) to the
/// client, so a problem report can be matched to the logs.
pub async fn request_id_header(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req.extensions().get::<RequestId>().copied();
    let mut res = next.call(req).await?;
    if let Some(id) = id {
        if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
            res.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
        }
    }
    Ok(res)
}

/// Query parameters that would carry a bearer token.
const TOKEN_PARAMS: &[&str] = &["token", "access_token", "session_token", "refresh_token", "mfa_token"];

/// Refuses any request with a token in its query string: URLs end up in
/// proxy logs, browser history and Referer headers.
pub async fn refuse_tokens_in_query(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let carries_token = req.query_string().split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        TOKEN_PARAMS.iter().any(|p| name.eq_ignore_ascii_case(p))
            || ["lk_s_", "lk_r_", "lk_m_"].iter().any(|prefix| value.starts_with(prefix))
    });
    if carries_token {
        let problem = Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("tokens are not accepted in query strings; use the Authorization header".into()),
        );
        return Ok(req.into_response(problem.response()).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
