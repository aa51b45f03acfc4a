//! Browser sessions by cookie, and their cross-site request forgery defence.
//!
//! A login (or the TOTP step, or a refresh) that asks for `session_cookie`
//! gets its tokens as cookies a page script cannot read:
//! - `__Host-lk_session`: the session token; `Path=/`, `SameSite=Lax`, so a
//!   top-level navigation from another site (a link to the protected app)
//!   still carries it to forward-auth;
//! - `__Host-lk_refresh`: the refresh token, `SameSite=Strict`. It is not
//!   scoped to the refresh route: a `__Host-` cookie must have `Path=/`, and
//!   a route-scoped `__Secure-` cookie could be planted by any sibling
//!   subdomain (`Domain=example.com`), logging the browser into the
//!   planter's session at its next refresh; the prefix is the stronger
//!   guarantee. Logout reads it too, to end a session whose token expired;
//! - `__Host-lk_device`: the device credential (SPEC §4, "device cookies"),
//!   read by login/start and login/finish when the body has none.
//!
//! All are `HttpOnly` and `Secure`. They are read by their exact, undecoded
//! names (a `%5F_Host-…` cookie, which a sibling or a man in the middle can
//! set, is another cookie), and a name sent twice is no session at all.
//! Browsers accept `Secure` cookies from
//! `http://localhost` (a secure context), so the pages work on loopback
//! without TLS; anywhere else they need HTTPS.
//!
//! CSRF (OWASP cheat sheet: custom request header plus Fetch Metadata): a
//! state-changing request authenticated by cookie must carry
//! `X-Latchkey-CSRF: 1`, which a cross-site form cannot send and a
//! cross-site script cannot send without a CORS preflight latchkey never
//! grants, and must come from the same origin by `Sec-Fetch-Site` (or, from
//! a browser without Fetch Metadata, by `Origin`). Requests with a bearer
//! token are not affected: no browser attaches that on its own.

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{Method, header};
use actix_web::{HttpRequest, HttpResponseBuilder};
use chrono::{DateTime, Utc};

use crate::domain::Error;
use crate::domain::sessions::IssuedSession;

pub const SESSION_COOKIE: &str = "__Host-lk_session";
pub const REFRESH_COOKIE: &str = "__Host-lk_refresh";
pub const DEVICE_COOKIE: &str = "__Host-lk_device";
/// The header latchkey's pages send with every request.
pub const CSRF_HEADER: &str = "x-latchkey-csrf";
pub const CSRF_DETAIL: &str = "a request authenticated by cookie must come from latchkey's own pages: send \
                               X-Latchkey-CSRF: 1 from the same origin";
/// How long a browser keeps the device credential: the longest lifetime
/// browsers honour (400 days).
const DEVICE_COOKIE_DAYS: i64 = 400;

/// The value of the request cookie named exactly `name` (not
/// percent-decoded), if present and not empty; 401 when the name occurs
/// more than once, which only a planted cookie explains.
pub fn read(req: &HttpRequest, name: &str) -> Result<Option<String>, Error> {
    let mut found = None;
    for header in req.headers().get_all(header::COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            let Some((key, value)) = pair.split_once('=') else { continue };
            if key.trim() == name {
                if found.is_some() {
                    return Err(Error::Unauthorized);
                }
                found = Some(value.trim().trim_matches('"').to_owned());
            }
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

fn cookie(name: &'static str, value: String, path: &'static str, same_site: SameSite) -> Cookie<'static> {
    Cookie::build(name, value).path(path).secure(true).http_only(true).same_site(same_site).finish()
}

fn max_age_until(until: DateTime<Utc>, now: DateTime<Utc>) -> CookieDuration {
    CookieDuration::seconds((until - now).num_seconds().max(0))
}

/// Sets the cookies of a new or rotated session, and of a newly issued
/// device credential. The cookies last as long as the session may; the
/// session token inside expires sooner, and the page refreshes it.
pub fn set_session(response: &mut HttpResponseBuilder, issued: &IssuedSession, now: DateTime<Utc>) {
    let max_age = max_age_until(issued.session_expires_at, now);
    let mut session = cookie(SESSION_COOKIE, issued.session_token.clone(), "/", SameSite::Lax);
    session.set_max_age(max_age);
    let mut refresh = cookie(REFRESH_COOKIE, issued.refresh_token.clone(), "/", SameSite::Strict);
    refresh.set_max_age(max_age);
    response.cookie(session).cookie(refresh);
    if let Some(token) = &issued.device_token {
        let mut device = cookie(DEVICE_COOKIE, token.clone(), "/", SameSite::Strict);
        device.set_max_age(CookieDuration::days(DEVICE_COOKIE_DAYS));
        response.cookie(device);
    }
}

/// Removes the session and refresh cookies (logout). The device credential
/// stays: it is what makes this browser a known device next time.
pub fn clear_session(response: &mut HttpResponseBuilder) {
    for (name, same_site) in [(SESSION_COOKIE, SameSite::Lax), (REFRESH_COOKIE, SameSite::Strict)] {
        let mut gone = cookie(name, String::new(), "/", same_site);
        gone.make_removal();
        response.cookie(gone);
    }
}

/// Refuses a state-changing request that rides on a cookie unless it shows
/// it came from latchkey's own pages (see the module comment). Safe methods
/// pass: they change nothing, and forward-auth uses GET.
pub fn check_csrf(req: &HttpRequest) -> Result<(), Error> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let headers = req.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if text(CSRF_HEADER) != Some("1") {
        return Err(Error::CsrfRejected);
    }
    let same_origin = match text("sec-fetch-site") {
        Some(site) => site == "same-origin",
        // A browser without Fetch Metadata: the Origin it sends must be
        // this service's own.
        None => match (text(header::ORIGIN.as_str()), text(header::HOST.as_str())) {
            (Some(origin), Some(host)) => {
                origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) == Some(host)
            }
            _ => false,
        },
    };
    if same_origin { Ok(()) } else { Err(Error::CsrfRejected) }
}

/// Forward-auth by cookie: a gateway that names the guarded request's method
/// (`X-Forwarded-Method`, as Traefik sends and deploy/nginx.conf sets) gets
/// a state-changing request through only when the browser says it comes
/// from the same origin (`Sec-Fetch-Site`), so a cookie alone never
/// authorizes a cross-site form post to a guarded app.
pub fn check_forwarded(req: &HttpRequest) -> Result<(), Error> {
    let headers = req.headers();
    let Some(method) = headers.get("x-forwarded-method").and_then(|v| v.to_str().ok()) else { return Ok(()) };
    if ["GET", "HEAD", "OPTIONS"].iter().any(|safe| method.eq_ignore_ascii_case(safe)) {
        return Ok(());
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin") => Ok(()),
        _ => Err(Error::CsrfRejected),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn post() -> TestRequest {
        TestRequest::post().uri("/v1/sessions").insert_header(("host", "auth.example.com"))
    }

    #[test]
    fn csrf_needs_the_header_and_the_same_origin() {
        assert!(check_csrf(&TestRequest::get().to_http_request()).is_ok(), "safe methods pass");
        let ok = post().insert_header((CSRF_HEADER, "1")).insert_header(("sec-fetch-site", "same-origin"));
        assert!(check_csrf(&ok.to_http_request()).is_ok());
        for site in ["cross-site", "same-site", "none"] {
            let req = post().insert_header((CSRF_HEADER, "1")).insert_header(("sec-fetch-site", site));
            assert!(check_csrf(&req.to_http_request()).is_err(), "{site}");
        }
        let no_header = post().insert_header(("sec-fetch-site", "same-origin"));
        assert!(check_csrf(&no_header.to_http_request()).is_err(), "no custom header");
        let old_browser =
            post().insert_header((CSRF_HEADER, "1")).insert_header(("origin", "https://auth.example.com"));
        assert!(check_csrf(&old_browser.to_http_request()).is_ok(), "Origin fallback");
        let foreign = post().insert_header((CSRF_HEADER, "1")).insert_header(("origin", "https://evil.example"));
        assert!(check_csrf(&foreign.to_http_request()).is_err(), "foreign Origin");
        let lookalike =
            post().insert_header((CSRF_HEADER, "1")).insert_header(("origin", "https://auth.example.com.evil.example"));
        assert!(check_csrf(&lookalike.to_http_request()).is_err(), "look-alike Origin");
        let neither = post().insert_header((CSRF_HEADER, "1"));
        assert!(check_csrf(&neither.to_http_request()).is_err(), "no Fetch Metadata and no Origin");
    }

    #[test]
    fn cookies_are_read_by_their_exact_name_once() {
        let read_from = |header: &str| {
            read(&TestRequest::get().insert_header(("cookie", header)).to_http_request(), SESSION_COOKIE)
        };
        assert_eq!(read_from("a=1; __Host-lk_session=lk_s_x; b=2").ok().flatten().as_deref(), Some("lk_s_x"));
        assert_eq!(
            read_from("%5F_Host-lk_session=lk_s_planted").ok().flatten(),
            None,
            "an encoded name is another cookie"
        );
        assert_eq!(read_from("__host-lk_session=lk_s_x").ok().flatten(), None, "names are case-sensitive");
        assert!(read_from("__Host-lk_session=lk_s_a; __Host-lk_session=lk_s_b").is_err(), "twice: refused");
        assert_eq!(read_from("__Host-lk_session=").ok().flatten(), None);
    }

    #[test]
    fn forwarded_changes_need_the_same_origin() {
        let get = |headers: &[(&str, &str)]| {
            let mut req = TestRequest::get();
            for h in headers {
                req = req.insert_header(*h);
            }
            check_forwarded(&req.to_http_request())
        };
        assert!(get(&[]).is_ok(), "no gateway method: whoami itself");
        assert!(get(&[("x-forwarded-method", "GET"), ("sec-fetch-site", "cross-site")]).is_ok(), "navigation");
        assert!(get(&[("x-forwarded-method", "POST"), ("sec-fetch-site", "same-origin")]).is_ok());
        assert!(get(&[("x-forwarded-method", "POST"), ("sec-fetch-site", "same-site")]).is_err());
        assert!(get(&[("x-forwarded-method", "DELETE")]).is_err());
    }
}
