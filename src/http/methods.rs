//! Which methods each path serves, read from the route table that
//! [`super::routes`] registers (through the API document it also feeds), so
//! that a known path with another method is a 405 with `Allow` (RFC 9110
//! §15.5.6) rather than a 404, and HEAD is served wherever GET is (§9.3.2).

use std::sync::LazyLock;

use actix_web::body::MessageBody;
use actix_web::dev::{ResourceDef, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse};

use super::error::Problem;

/// One path pattern and the methods its routes serve.
struct Route {
    pattern: ResourceDef,
    /// No path parameter.
    concrete: bool,
    methods: Vec<Method>,
}

static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    super::route_document()
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let operations = [
                (Method::GET, &item.get),
                (Method::HEAD, &item.head),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
                (Method::OPTIONS, &item.options),
                (Method::TRACE, &item.trace),
            ];
            let methods = operations.into_iter().filter(|(_, op)| op.is_some()).map(|(m, _)| m).collect();
            Route { pattern: ResourceDef::new(path.as_str()), concrete: !path.contains('{'), methods }
        })
        .collect()
});

/// The routes whose pattern matches `path`: those without a parameter if
/// any matches, as OpenAPI matches concrete paths before templated ones
/// (`/v1/sessions/refresh` is not a session id).
fn matching(path: &str) -> impl Iterator<Item = &'static Route> {
    let concrete = ROUTES.iter().any(|r| r.concrete && r.pattern.is_match(path));
    ROUTES.iter().filter(move |r| (r.concrete || !concrete) && r.pattern.is_match(path))
}

/// The methods served at `path`, HEAD included where GET is; `None` for a
/// path no route knows. Several patterns can match one path
/// (`/v1/sessions/current` twice): their methods add up.
pub fn allowed(path: &str) -> Option<Vec<Method>> {
    let mut found: Option<Vec<Method>> = None;
    for route in matching(path) {
        let methods = found.get_or_insert_with(Vec::new);
        for method in &route.methods {
            if !methods.contains(method) {
                methods.push(method.clone());
            }
        }
    }
    let mut methods = found?;
    if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
        methods.push(Method::HEAD);
    }
    let order = [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    methods.sort_by_key(|m| order.iter().position(|o| o == m).unwrap_or(order.len()));
    Some(methods)
}

/// HEAD on a path that serves GET (and no HEAD route) is answered by the
/// GET route; the server sends the headers without the body.
pub async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.method() == Method::HEAD
        && allowed(req.path()).is_some_and(|m| m.contains(&Method::GET))
        && !matching(req.path()).any(|r| r.methods.contains(&Method::HEAD))
    {
        req.head_mut().method = Method::GET;
    }
    next.call(req).await
}

/// The answer when no route matched: 405 `method_not_allowed` with `Allow`
/// for a known path, else 404 `not_found`.
pub async fn unmatched(req: HttpRequest) -> HttpResponse {
    // A route serves this method at a path of this shape, but its parameter
    // did not match (`/v1/sessions/{id}` takes only a UUID): nothing here.
    let Some(methods) = allowed(req.path()).filter(|m| !m.contains(req.method())) else {
        return Problem::new(StatusCode::NOT_FOUND, "not_found", None).response();
    };
    let list = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
    let detail = format!("{} is not served at this path; it serves {list}", req.method());
    let mut response = Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", Some(detail)).response();
    if let Ok(value) = HeaderValue::from_str(&list) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates_drop_route_regexes() {
        assert_eq!(crate::http::template("/v1/sessions/{id:[0-9a-fA-F-]{36}}"), "/v1/sessions/{id}");
        assert_eq!(crate::http::template("/v1/admin/users/{id}/sessions"), "/v1/admin/users/{id}/sessions");
        assert_eq!(crate::http::template("/healthz"), "/healthz");
    }

    #[test]
    fn methods_come_from_the_route_table() {
        assert_eq!(allowed("/healthz"), Some(vec![Method::GET, Method::HEAD]));
        assert_eq!(allowed("/v1/sessions/current"), Some(vec![Method::GET, Method::HEAD, Method::DELETE]));
        assert_eq!(allowed("/v1/sessions/refresh"), Some(vec![Method::POST]), "not a session id");
        assert_eq!(allowed("/v1/sessions/not-a-uuid"), None, "not a session id either");
        assert_eq!(allowed("/v1/sessions/0192f1c4-7f4e-7a51-9f0e-3c1a2b3c4d5e"), Some(vec![Method::DELETE]));
        assert_eq!(allowed("/v1/sessions"), Some(vec![Method::GET, Method::HEAD, Method::DELETE]));
        assert_eq!(allowed("/v1/login/start"), Some(vec![Method::POST]));
        assert_eq!(allowed("/v1/nothing-here"), None);
        assert_eq!(allowed("/v1/sessions/a/b"), None);
    }
}
