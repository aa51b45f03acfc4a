//! HTTP: routes translate requests into domain calls and domain results into
//! responses. No business rule lives here.

pub mod cookies;
pub mod error;
pub mod extractors;
pub mod methods;
pub mod middleware;
pub mod ops;
pub mod return_to;
pub mod ui;
pub mod v1;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{App, web};
use metrics_exporter_prometheus::PrometheusHandle;
use tracing_actix_web::TracingLogger;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::config::Config;
use crate::domain::core::Core;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Everything handlers share; one per process, behind `web::Data`.
pub struct AppState {
    pub config: Arc<Config>,
    pub core: Arc<Core>,
    pub metrics: PrometheusHandle,
    /// SHA-256 of each configured service token.
    pub service_token_hashes: Vec<[u8; 32]>,
    /// Per-instance, per-IP pre-filter on the unauthenticated endpoints.
    pub prefilter: Arc<middleware::Prefilter>,
    /// The OpenAPI document, rendered once at start-up.
    pub openapi_json: web::Bytes,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "latchkey",
        description = "Authentication service: OPAQUE registration and login, TOTP and passkeys, sessions, devices, rate limits.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(error::Problem)),
    modifiers(&BearerAuth, &ProblemResponses),
    tags(
        (name = "registration", description = "OPAQUE registration (RFC 9807)"),
        (name = "login", description = "OPAQUE login"),
        (name = "sessions", description = "Session tokens: whoami / forward-auth, refresh, revocation"),
        (name = "totp", description = "TOTP second factor (RFC 6238) and recovery codes"),
        (name = "webauthn", description = "Passkeys (WebAuthn) as a second factor and for step-up"),
        (name = "devices", description = "Devices the user logs in from"),
        (name = "account", description = "The caller's own account"),
        (name = "admin", description = "Administration: needs the admin role (aal2 when the admin has TOTP)"),
        (name = "ratelimit", description = "Sliding-window rate-limit decisions for other services"),
        (name = "ui", description = "The browser pages"),
        (name = "operations", description = "Health, readiness, metrics, this document")
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the authenticated routes name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "service_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A configured service token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::http::cookies::SESSION_COOKIE,
                "A browser session (login with `session_cookie`); changes also need `X-Latchkey-CSRF: 1` from the \
                 same origin",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("A session token (lk_s_…)")).build(),
            ),
        );
    }
}

/// Registers the shared problem responses the routes reference
/// (`response = problem::NotFound`) under `#/components/responses`.
struct ProblemResponses;

impl utoipa::Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .responses
            .extend(error::problem::all().into_iter().map(|(name, response)| (name.to_owned(), response)));
    }
}

/// Registers every route. The same function feeds the running app and the
/// OpenAPI document, so a route cannot be served without being documented.
fn routes(cfg: &mut ServiceConfig) {
    // Routes match in registration order, and each pattern with a
    // parameter is a regex: the busiest routes come first (the profile of
    // rate-limit checks showed the router's regexes), `current` before
    // `{id}`.
    cfg.service(v1::ratelimit::check)
        .service(v1::sessions::current)
        .service(v1::auth::registration_start)
        .service(v1::auth::registration_finish)
        .service(v1::auth::login_start)
        .service(v1::auth::login_finish)
        .service(v1::auth::login_totp)
        .service(v1::totp::enroll)
        .service(v1::totp::confirm)
        .service(v1::totp::disable)
        .service(v1::webauthn::register_start)
        .service(v1::webauthn::register_finish)
        .service(v1::webauthn::list)
        .service(v1::webauthn::remove)
        .service(v1::webauthn::login_start)
        .service(v1::webauthn::login_finish)
        .service(v1::webauthn::reauth_start)
        .service(v1::webauthn::reauth_finish)
        .service(v1::sessions::logout)
        .service(v1::sessions::revoke_one)
        .service(v1::sessions::list)
        .service(v1::sessions::revoke_others)
        .service(v1::sessions::refresh)
        .service(v1::admin::list_users)
        .service(v1::admin::get_user)
        .service(v1::admin::user_sessions)
        .service(v1::admin::revoke_user_sessions)
        .service(v1::admin::user_devices)
        .service(v1::admin::device_trust)
        .service(v1::admin::lock)
        .service(v1::admin::unlock)
        .service(v1::admin::delete_user)
        .service(v1::admin::audit)
        .service(v1::admin::keys)
        .service(v1::admin::rotate_keys)
        .service(v1::admin::delete_account)
        .service(v1::admin::issue_reset)
        .service(v1::admin::remove_totp)
        .service(v1::admin::second_factors)
        .service(v1::admin::remove_webauthn)
        .service(v1::account::password_start)
        .service(v1::account::password_finish)
        .service(v1::account::reset_start)
        .service(v1::account::reset_finish)
        .service(v1::account::events)
        .service(v1::account::profile)
        .service(v1::tokens::jwt)
        .service(v1::tokens::jwks)
        .service(v1::tokens::introspect)
        .service(v1::devices::trust)
        .service(v1::devices::list)
        .service(v1::devices::remove)
        .service(return_to::follow)
        .service(return_to::signin)
        .service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(ops::openapi)
        // The browser pages: not API routes, so not in the OpenAPI document.
        .map(ui::services);
}

/// The OpenAPI 3.1 document of all routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = route_document();
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, mut item)| {
            let path = template(&path);
            only_template_parameters(&path, &mut item);
            (path, item)
        })
        .collect();
    doc
}

/// Drops path parameters the template does not name: the route macros read
/// a regex's repetition (`{36}` in `{id:[0-9a-fA-F-]{36}}`) as one more.
fn only_template_parameters(path: &str, item: &mut utoipa::openapi::PathItem) {
    use utoipa::openapi::{
        RefOr,
        path::{Parameter, ParameterIn},
    };
    let keep = |p: &RefOr<Parameter>| match p {
        RefOr::T(p) => !matches!(p.parameter_in, ParameterIn::Path) || path.contains(&format!("{{{}}}", p.name)),
        RefOr::Ref(_) => true,
    };
    let operations = [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ];
    for operation in operations.into_iter().flatten() {
        if let Some(parameters) = operation.parameters.as_mut() {
            parameters.retain(keep);
        }
    }
    if let Some(parameters) = item.parameters.as_mut() {
        parameters.retain(keep);
    }
}

/// The document with the paths as actix patterns (regexes kept): the
/// route table that [`methods`] reads.
fn route_document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = App::new().into_utoipa_app().openapi(ApiDoc::openapi()).configure(routes).split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// An actix path pattern as an OpenAPI path template: `{id:regex}` becomes
/// `{id}` (the regex narrows what the route matches; the parameter's schema
/// says what it takes).
fn template(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let (mut depth, mut in_regex) = (0usize, false);
    for c in pattern.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    out.push(c);
                }
            }
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    in_regex = false;
                    out.push(c);
                }
            }
            ':' if depth == 1 => in_regex = true,
            _ if depth == 0 || !in_regex => out.push(c),
            _ => {}
        }
    }
    out
}

/// JSON bodies: at most [`BODY_LIMIT`], errors as problems. Request types
/// use `#[serde(deny_unknown_fields)]`, so a misspelt field is a 400, not a
/// silently ignored value.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(BODY_LIMIT).error_handler(error::json_error)
}

/// The application with all middleware, for `HttpServer::new`.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(json_config())
        .app_data(web::PayloadConfig::new(BODY_LIMIT))
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .into_utoipa_app()
        .configure(routes)
        .default_service(web::to(methods::unmatched))
        .into_app()
        // Innermost first: metrics see the final status; the request id is
        // set by TracingLogger (outermost) before anything logs.
        .wrap(from_fn(methods::head_as_get))
        .wrap(from_fn(middleware::prefilter))
        .wrap(from_fn(middleware::refuse_tokens_in_query))
        .wrap(from_fn(middleware::metrics))
        .wrap(DefaultHeaders::new().add(("Cache-Control", "no-store")))
        .wrap(from_fn(middleware::request_id_header))
        .wrap(TracingLogger::default())
}

#[cfg(test)]
mod tests {
    use actix_web::{App, HttpResponse, test, web};
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
    }

    async fn echo(_: web::Json<Body>) -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    #[actix_web::test]
    async fn json_limits_and_unknown_fields_are_problems() {
        let app = test::init_service(App::new().app_data(super::json_config()).route("/", web::post().to(echo))).await;

        let ok = test::TestRequest::post().uri("/").set_json(serde_json::json!({"name": "a"})).to_request();
        assert_eq!(test::call_service(&app, ok).await.status(), 200);

        let unknown =
            test::TestRequest::post().uri("/").set_json(serde_json::json!({"name": "a", "nmae": "b"})).to_request();
        let res = test::call_service(&app, unknown).await;
        assert_eq!(res.status(), 400);
        assert_eq!(res.headers().get("content-type").map(|v| v.as_bytes()), Some(&b"application/problem+json"[..]));
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["code"], "invalid_request");
        assert!(body["detail"].as_str().unwrap_or_default().contains("nmae"), "{body}");

        let big = "x".repeat(super::BODY_LIMIT + 1);
        let large = test::TestRequest::post().uri("/").set_json(serde_json::json!({ "name": big })).to_request();
        let res = test::call_service(&app, large).await;
        assert_eq!(res.status(), 413);
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["code"], "invalid_request");

        let malformed = test::TestRequest::post()
            .uri("/")
            .insert_header(("content-type", "application/json"))
            .set_payload("{not json")
            .to_request();
        assert_eq!(test::call_service(&app, malformed).await.status(), 400);

        let not_json = test::TestRequest::post()
            .uri("/")
            .insert_header(("content-type", "text/plain"))
            .set_payload("{}")
            .to_request();
        let res = test::call_service(&app, not_json).await;
        assert_eq!(res.status(), 415);
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["code"], "invalid_request");
    }
}

#[cfg(test)]
mod document_tests {
    #[test]
    fn operation_ids_are_unique() {
        let doc = serde_json::to_value(super::openapi()).expect("the document serializes");
        let mut seen = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                let id = operation["operationId"].as_str().expect("an operationId");
                assert!(seen.insert(id.to_owned()), "{method} {path}: operationId {id} is used twice");
            }
        }
    }

    #[test]
    fn every_path_parameter_is_named_by_its_template() {
        let doc = serde_json::to_value(super::openapi()).expect("the document serializes");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["in"] == "path" {
                        let name = parameter["name"].as_str().expect("a parameter name");
                        assert!(path.contains(&format!("{{{name}}}")), "{method} {path}: path parameter {name}");
                    }
                }
            }
        }
    }
}
