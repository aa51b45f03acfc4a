//! Where the sign-in page sends a browser after a login: back to the page a
//! gateway turned it away from, if that is on the allow-list, and never to
//! a place an attacker named (no open redirect).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::config::web_origin;
use crate::http::AppState;
use crate::http::error::problem;

/// Where a refused return address goes instead.
pub const HOME: &str = "/ui/";
/// Longest return address followed.
const MAX_LEN: usize = 2048;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReturnQuery {
    /// A path on this origin (`/app/page?x=1`), or an absolute URL whose
    /// origin is in `ui.return_origins`.
    #[param(example = "/app/")]
    pub to: Option<String>,
}

/// The address to send the browser to: `to` itself when it is a path on
/// this origin or a URL on an allowed origin, else [`HOME`].
pub fn target<'a>(to: &'a str, allowed_origins: &[String]) -> &'a str {
    // Browsers send addresses percent-encoded: raw non-ASCII is refused
    // (it could not be a Location header either).
    if to.is_empty() || to.len() > MAX_LEN || !to.is_ascii() || to.chars().any(|c| c.is_control() || c == '\\') {
        return HOME;
    }
    // `//host` and `/\host` are other hosts to a browser; backslashes are
    // refused above.
    if to.starts_with('/') && !to.starts_with("//") {
        return to;
    }
    match web_origin(to) {
        Some(origin) if allowed_origins.iter().any(|allowed| allowed.trim_end_matches('/') == origin) => to,
        _ => HOME,
    }
}

/// After a login, go back to `to` if it is allowed, else to the sign-in
/// page's home (303 either way).
#[utoipa::path(
    tag = "ui",
    params(ReturnQuery),
    responses((status = 303, description = "To the return address, or to /ui/ when it is not allowed",
        headers(("Location" = String, description = "Where to go"))), (status = 400, response = problem::TokenInQuery))
)]
#[get("/ui/return")]
pub async fn follow(state: web::Data<AppState>, query: web::Query<ReturnQuery>) -> HttpResponse {
    let to = query.to.as_deref().map_or(HOME, |to| target(to, &state.config.ui.return_origins));
    HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish()
}

/// A gateway's sign-in redirect: `/ui/signin` followed by the address the
/// browser asked for (nginx: `return 302 /ui/signin$request_uri;`) goes to
/// the sign-in page with that address, percent-encoded, as `return_to`: a
/// gateway cannot encode it itself, and a raw address would lose its query.
#[utoipa::path(
    tag = "ui",
    params(("tail" = String, Path, description = "The address asked for, path and query as the browser sent them")),
    responses((status = 303, description = "To /ui/?return_to=<the address>",
        headers(("Location" = String, description = "The sign-in page"))),
        (status = 400, response = problem::TokenInQuery))
)]
#[get("/ui/signin/{tail:.*}")]
pub async fn signin(req: HttpRequest) -> HttpResponse {
    let path = req.path().strip_prefix("/ui/signin").filter(|p| p.starts_with('/')).unwrap_or("/");
    let address = match req.query_string() {
        "" => path.to_owned(),
        query => format!("{path}?{query}"),
    };
    let encoded: String = url::form_urlencoded::byte_serialize(address.as_bytes()).collect();
    HttpResponse::SeeOther().insert_header((header::LOCATION, format!("{HOME}?return_to={encoded}"))).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_paths_and_allowed_origins() {
        let allowed = vec!["https://app.example.com".to_owned()];
        for ok in ["/app/", "/app/page?x=1#top", "/", "https://app.example.com/x?y=1", "https://app.example.com"] {
            assert_eq!(target(ok, &allowed), ok, "{ok}");
        }
        for refused in [
            "//evil.example/x",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example/",
            "https://app.example.com.evil.example/",
            "https://app.example.com@evil.example/",
            "https://user:pw@app.example.com/",
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "app.example.com",
            "/app\n/",
            "/caf\u{e9}",
            "",
        ] {
            assert_eq!(target(refused, &allowed), HOME, "{refused:?}");
        }
        assert_eq!(target(&format!("/{}", "a".repeat(MAX_LEN)), &allowed), HOME, "too long");
    }
}
