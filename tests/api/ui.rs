//! The browser pages as the service serves them: every file of `ui/dist/`
//! (embedded at compile time) with its content type and the security headers,
//! the redirect from `/ui`, 404 for unknown assets, revalidation, and built
//! files that load nothing from elsewhere.

use std::path::PathBuf;

use crate::helpers::{CacheKind, DbKind, TestApp};

fn dist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui").join("dist")
}

/// The files of ui/dist/, name and content.
fn built_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dist())
        .expect("ui/dist exists (npm run build --prefix ui)")
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect();
    files.sort();
    files
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// The headers every UI answer carries: a strict CSP, nosniff, no referrer.
fn assert_ui_headers(res: &reqwest::Response, what: &str) {
    let csp = res
        .headers()
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: a Content-Security-Policy"))
        .to_str()
        .expect("ascii");
    for directive in [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.split(';').any(|d| d.trim() == directive), "{what}: CSP lacks {directive:?}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("'unsafe-eval'"), "{what}: {csp}");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(res.headers()["referrer-policy"], "no-referrer", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_assets_are_served_with_a_strict_csp() {
    let app = TestApp::spawn(DbKind::Sqlite, CacheKind::Memory).await;
    let client = no_redirects();

    let files = built_files();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for page in ["index.html", "admin.html", "self.js", "admin.js", "style.css"] {
        assert!(names.contains(&page), "ui/dist/{page} is built");
    }
    for (name, content) in &files {
        let res = client.get(app.url(&format!("/ui/{name}"))).send().await.expect("request");
        assert_eq!(res.status(), 200, "/ui/{name}: every built file is embedded");
        assert_ui_headers(&res, name);
        let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("html") => "text/html; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            _ => panic!("ui/dist/{name}: a file type the service does not serve"),
        };
        assert_eq!(res.headers()["content-type"], content_type, "{name}");
        assert_eq!(&res.bytes().await.expect("body")[..], &content[..], "/ui/{name} is ui/dist/{name}");
    }

    for (path, file) in [("/ui/", "index.html"), ("/ui/admin", "admin.html")] {
        let res = client.get(app.url(path)).send().await.expect("request");
        assert_eq!(res.status(), 200, "{path}");
        assert_ui_headers(&res, path);
        assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8", "{path}");
        assert_eq!(res.headers()["cache-control"], "no-store", "{path}: pages are never stored");
        let expected = &files.iter().find(|(n, _)| n == file).expect("built").1;
        assert_eq!(&res.bytes().await.expect("body")[..], &expected[..], "{path} is {file}");
    }

    // /ui sends the browser to /ui/, keeping the query.
    let res = client.get(app.url("/ui")).send().await.expect("request");
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], "/ui/");
    let res = client.get(app.url("/ui?return_to=%2Fapp%2F")).send().await.expect("request");
    assert_eq!(res.headers()["location"], "/ui/?return_to=%2Fapp%2F");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_assets_are_404_and_scripts_revalidate() {
    let app = TestApp::spawn(DbKind::Sqlite, CacheKind::Memory).await;
    let client = no_redirects();

    for path in
        ["/ui/nothing.js", "/ui/index.htm", "/ui/admin/", "/ui/dist/self.js", "/ui/%2e%2e/Cargo.toml", "/ui/.env"]
    {
        let res = client.get(app.url(path)).send().await.expect("request");
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json", "{path}");
    }

    let res = client.get(app.url("/ui/self.js")).send().await.expect("request");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let etag = res.headers()["etag"].to_str().expect("etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "a strong ETag: {etag}");
    let again = client.get(app.url("/ui/self.js")).header("if-none-match", &etag).send().await.expect("request");
    assert_eq!(again.status(), 304);
    assert_ui_headers(&again, "304");
    assert!(again.bytes().await.expect("body").is_empty());
    let other = client.get(app.url("/ui/admin.js")).header("if-none-match", &etag).send().await.expect("request");
    assert_eq!(other.status(), 200, "another file's ETag does not match");
}

/// Nothing in the built files loads from another origin: no absolute or
/// protocol-relative URLs (the SVG namespace name is not a request), no
/// inline scripts, styles or event handlers, which the CSP would refuse.
#[test]
fn built_files_reference_nothing_outside() {
    const NAMESPACES: &[&str] = &["http://www.w3.org/2000/svg"];
    for (name, content) in built_files() {
        let text = String::from_utf8(content).unwrap_or_else(|_| panic!("ui/dist/{name} is UTF-8"));
        let mut rest = text.as_str();
        while let Some(at) = rest.find("http") {
            let tail = &rest[at..];
            if tail.starts_with("http://") || tail.starts_with("https://") {
                assert!(
                    NAMESPACES.iter().any(|ns| tail.starts_with(ns)),
                    "ui/dist/{name} names an outside URL: {}",
                    &tail[..tail.len().min(80)]
                );
            }
            rest = &tail[4..];
        }
        for pattern in ["src=\"//", "href=\"//", "url(//", "url(http", "@import"] {
            assert!(!text.contains(pattern), "ui/dist/{name} contains {pattern:?}");
        }
        if name.ends_with(".html") {
            let lower = text.to_ascii_lowercase();
            assert!(
                !lower.contains("<script>") && !lower.contains("<script type=\"module\">"),
                "{name}: inline script"
            );
            assert!(!lower.contains("<style"), "{name}: inline style element");
            assert!(!lower.contains(" style="), "{name}: style attribute");
            assert!(
                !lower.contains(" onclick=") && !lower.contains(" onload=") && !lower.contains(" onsubmit="),
                "{name}: inline handler"
            );
            assert!(lower.contains("<script type=\"module\" src="), "{name}: its script is a file");
        }
    }
}
