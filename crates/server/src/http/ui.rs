//! The management web UI's assets (`crates/server/ui/`: HTML, CSS and JavaScript modules),
//! embedded in the binary and served from the management listener: `/` is the page, the
//! rest is under `/ui/`, a prefix that cannot meet `/api` or `/metrics`.
//!
//! Assets need no login (they hold no data: the page asks the API for everything, with
//! the credentials the user types in). Every answer carries the strict
//! Content-Security-Policy and the other security headers, so a queue name or a message
//! body shown by the page can never run as script, and the page cannot be framed.
//! Caching: the ETag is the content's SHA-256 (computed when the binary was built) and
//! `Cache-Control: no-cache`, so a browser revalidates each load and gets 304 while the
//! binary is the same, and the new assets right after an upgrade.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use rust_embed::RustEmbed;

/// The UI's files, in the binary (release and debug builds alike: `debug-embed`).
#[derive(RustEmbed)]
#[folder = "ui/"]
#[exclude = "README.md"]
struct Assets;

/// The Content-Security-Policy of every UI answer: scripts, styles and requests from this
/// origin only, nothing inline, no forms posted anywhere, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'none'; \
frame-ancestors 'none'; base-uri 'none'";

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/", web::head().to(index))
        .route("/ui/{path:.*}", web::get().to(asset))
        .route("/ui/{path:.*}", web::head().to(asset));
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html")
}

async fn asset(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    serve(&req, &path)
}

/// The security headers every UI answer carries, 404s included.
fn secure(r: &mut actix_web::HttpResponseBuilder) -> &mut actix_web::HttpResponseBuilder {
    r.insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
}

/// One asset: 404 when unknown (or `index.html` asked under `/ui/`, which is served as
/// `/` only), 304 when the browser's copy is current, else the bytes.
fn serve(req: &HttpRequest, path: &str) -> HttpResponse {
    let Some(file) = Assets::get(path) else {
        return secure(&mut HttpResponse::NotFound())
            .content_type("text/plain; charset=utf-8")
            .body("Not Found");
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()));
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    secure(&mut r)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, etag));
    if fresh {
        return r.finish();
    }
    r.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(mime(path))))
        .body(file.data.into_owned())
}

/// The content type by extension, for the kinds of files `ui/` holds.
fn mime(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_module_of_the_route_table_is_embedded() {
        let routes = Assets::get("js/routes.js").map(|f| f.data.into_owned());
        let text = String::from_utf8(routes.unwrap_or_default()).unwrap_or_default();
        let mut seen = 0;
        for part in text.split("'pages/").skip(1) {
            let name = part.split('\'').next().unwrap_or_default();
            assert!(
                Assets::get(&format!("js/pages/{name}")).is_some(),
                "js/pages/{name} is named in routes.js but not embedded"
            );
            seen += 1;
        }
        assert!(seen > 10, "routes.js names {seen} page modules");
    }

    #[test]
    fn index_and_modules_are_embedded_and_readme_is_not() {
        assert!(Assets::get("index.html").is_some());
        assert!(Assets::get("js/app.js").is_some());
        assert!(Assets::get("README.md").is_none());
        assert_eq!(mime("js/app.js"), "text/javascript; charset=utf-8");
    }
}
