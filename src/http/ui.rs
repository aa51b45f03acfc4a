//! The browser pages: the self-service page at `/ui/` and the admin console
//! at `/ui/admin`. Their files are those of `ui/dist/` (built from `ui/src`
//! with `npm run build --prefix ui`), embedded in the binary at compile time,
//! so the service serves them with no Node and no file reads. Every answer
//! carries a strict Content-Security-Policy: scripts and styles from this
//! origin only (WebAssembly compilation allowed for the OPAQUE client),
//! requests to this origin only, no framing.

use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use sha2::{Digest, Sha256};

use super::error::Problem;

/// The Content-Security-Policy of every page and asset.
pub const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/", $name)),
        }
    };
}

/// Every file of `ui/dist/` (a test checks that none is left out).
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("admin.html", "text/html; charset=utf-8"),
    asset!("self.js", "text/javascript; charset=utf-8"),
    asset!("admin.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
];

/// A strong validator per asset, so browsers revalidate (304) instead of
/// downloading the scripts again on every page load.
static ETAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.body)[..16]))).collect());

/// The UI routes; `routes` in `http/mod.rs` adds them (they are not API routes,
/// so they stay out of the OpenAPI document).
pub fn services(cfg: &mut web::ServiceConfig) -> &mut web::ServiceConfig {
    cfg.route("/ui", web::get().to(to_index))
        .route("/ui/", web::get().to(index))
        .route("/ui/admin", web::get().to(admin))
        .route(r"/ui/{file:[A-Za-z0-9_-]+\.(?:html|js|css)}", web::get().to(file))
}

/// The headers every UI answer carries.
fn ui_headers(builder: &mut HttpResponseBuilder) -> &mut HttpResponseBuilder {
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
}

/// `/ui` to `/ui/`, keeping the query (`return_to`).
async fn to_index(req: HttpRequest) -> HttpResponse {
    let location = match req.query_string() {
        "" => "/ui/".to_owned(),
        query => format!("/ui/?{query}"),
    };
    ui_headers(&mut HttpResponse::build(StatusCode::PERMANENT_REDIRECT))
        .insert_header((header::LOCATION, location))
        .finish()
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html")
}

async fn admin(req: HttpRequest) -> HttpResponse {
    serve(&req, "admin.html")
}

async fn file(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    serve(&req, &name)
}

fn serve(req: &HttpRequest, name: &str) -> HttpResponse {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        let mut res = Problem::new(StatusCode::NOT_FOUND, "not_found", None).response();
        for (name, value) in [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ] {
            res.headers_mut().insert(name, HeaderValue::from_static(value));
        }
        return res;
    };
    let asset = &ASSETS[i];
    // Pages are never stored (the service's default); scripts and styles may
    // be kept but are revalidated on every use.
    let html = asset.content_type.starts_with("text/html");
    let mut builder = HttpResponse::Ok();
    ui_headers(&mut builder).content_type(asset.content_type);
    if html {
        return builder.body(asset.body);
    }
    let etag = &ETAGS[i];
    builder.insert_header((header::ETAG, etag.as_str())).insert_header((header::CACHE_CONTROL, "no-cache"));
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    if fresh {
        builder.status(StatusCode::NOT_MODIFIED);
        return builder.finish();
    }
    builder.body(asset.body)
}
