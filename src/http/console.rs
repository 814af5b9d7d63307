//! The operator console: a browser page at `/` with its scripts and style sheet under
//! `/console/`, embedded in the binary (it works offline: nothing is loaded from elsewhere). The
//! page signs in with a bearer token and then uses the API like any other client; these routes
//! hold no data and need no token.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles from this origin
//! only, pictures also from `blob:` URLs, requests to this origin only) and an `ETag`: the browser
//! revalidates (`no-cache`) and gets `304` until the binary changes.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;

/// What the console's pages may load and where they may connect.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; \
     script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// One embedded file of the console.
struct Asset {
    /// The name under `/console/` (the page itself is `index.html`, served at `/`).
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: [Asset; 7] = [
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_bytes!("console/index.html") },
    Asset { name: "style.css", content_type: "text/css; charset=utf-8", body: include_bytes!("console/style.css") },
    Asset { name: "app.js", content_type: JS, body: include_bytes!("console/app.js") },
    Asset { name: "api.js", content_type: JS, body: include_bytes!("console/api.js") },
    Asset { name: "camera.js", content_type: JS, body: include_bytes!("console/camera.js") },
    Asset { name: "editor.js", content_type: JS, body: include_bytes!("console/editor.js") },
    Asset { name: "system.js", content_type: JS, body: include_bytes!("console/system.js") },
];

/// The quoted strong `ETag` of each asset (the start of its SHA-256), in `ASSETS` order.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let hex: String = crate::access::digest(a.body)[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index)).route("/console/{file}", web::get().to(asset));
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, 0)
}

async fn asset(req: HttpRequest, file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    // The page itself lives at `/` only.
    let found = ASSETS.iter().position(|a| a.name == file.as_str() && a.name != "index.html");
    let at = found.ok_or_else(|| ApiError::NotFound("no such console file".into()))?;
    Ok(serve(&req, at))
}

/// The asset at `at` in `ASSETS`, or `304` when the browser holds this version already.
fn serve(req: &HttpRequest, at: usize) -> HttpResponse {
    let (asset, etag) = (&ASSETS[at], &ETAGS[at]);
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    let mut response = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    response
        .insert_header((header::ETAG, HeaderValue::from_str(etag).expect("hex")))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    if fresh {
        response.finish()
    } else {
        response.content_type(asset.content_type).body(asset.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;
    use actix_web::{test as actix_test, App};

    #[actix_web::test]
    async fn the_page_and_its_assets_are_served_with_their_types_and_policy() {
        let app = actix_test::init_service(App::new().configure(routes)).await;
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/console/app.js", JS),
            ("/console/editor.js", JS),
            ("/console/style.css", "text/css; charset=utf-8"),
        ] {
            let resp = actix_test::call_service(&app, actix_test::TestRequest::get().uri(path).to_request()).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_eq!(resp.headers().get(header::CONTENT_TYPE).unwrap(), content_type, "{path}");
            assert_eq!(resp.headers().get(header::CONTENT_SECURITY_POLICY).unwrap(), CONTENT_SECURITY_POLICY);
            assert_eq!(resp.headers().get(header::X_CONTENT_TYPE_OPTIONS).unwrap(), "nosniff");
            let etag = resp.headers().get(header::ETAG).unwrap().clone();
            // The same version again: 304 without a body.
            let again = actix_test::TestRequest::get().uri(path).insert_header((header::IF_NONE_MATCH, etag));
            let resp = actix_test::call_service(&app, again.to_request()).await;
            assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{path}");
            assert!(actix_test::read_body(resp).await.is_empty());
        }
        for path in ["/console/index.html", "/console/nothing.js", "/console/..%2Fconsole.rs"] {
            let resp = actix_test::call_service(&app, actix_test::TestRequest::get().uri(path).to_request()).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn every_script_the_page_imports_is_served() {
        let served: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for asset in &ASSETS {
            let text = std::str::from_utf8(asset.body).expect("text assets");
            // Nothing from another origin: the console works offline and under the policy.
            // (The SVG namespace is a name, not a place.)
            let outside = text.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !outside.contains("http://") && !outside.contains("https://"),
                "{} loads from elsewhere",
                asset.name
            );
            for (at, _) in text.match_indices("/console/").chain(text.match_indices("from './")) {
                let rest = &text[at..];
                let start = rest.find('/').map(|i| i + 1).unwrap_or(0);
                let rest = &rest[start..];
                let rest = rest.strip_prefix("console/").unwrap_or(rest);
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '.' || *c == '_').collect();
                if name.contains('.') {
                    assert!(served.contains(&name.as_str()), "{} refers to {name}, not served", asset.name);
                }
            }
        }
    }
}
