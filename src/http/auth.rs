//! Bearer-token authentication with three ordered roles, as an actix-web middleware.
//!
//! A client sends `Authorization: Bearer <token>`. The service never stores tokens: the
//! configuration holds each token's SHA-256 (hex) with a name and a role. Per request:
//!
//! 1. [`required_role`] maps method + path to [`Access::Open`] or the least [`Role`] allowed;
//! 2. an open endpoint passes untouched (a token on it is ignored, even a bad one);
//! 3. otherwise the token is hashed and compared, in constant time, with every configured digest;
//!    no match is `401`, a role below the required one is `403`;
//! 4. the [`Caller`] (token *name* and role) goes into the request extensions for handlers, logs
//!    and the rate limiter.
//!
//! Nothing here logs or echoes a token or a digest: logs and error bodies carry token names only.
//! With `enabled = false` every request passes as [`Caller::anonymous`], an admin.

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use super::caller::Caller;
use crate::access::{check_tokens, constant_time_eq, digest, parse_digest, sha256_hex};
use crate::access::{AuthConfig, OpenEndpoints, Role, TokenEntry};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use serde::Deserialize;

/// The challenge sent with every `401`.
pub const WWW_AUTHENTICATE_VALUE: &str = r#"Bearer realm="its-analytics""#;

/// Longest bearer token accepted; longer ones are rejected before hashing.
pub const MAX_TOKEN_BYTES: usize = 512;

const NO_TOKENS: &str = "auth is enabled but no tokens are configured: add [[auth.tokens]] or auth.tokens_file, \
                         or set auth.enabled = false";

// ---------------------------------------------------------------------------------------------
// Roles and the access table
// ---------------------------------------------------------------------------------------------

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Open,
    /// A token whose role is at least this one.
    Role(Role),
}

/// The one table of who may call what. Pure: method and path in, [`Access`] out.
///
/// `path` must be the path the router matches (`req.match_info().as_str()`, percent-decoded
/// except `%2F`, `%25` and `%2B`), not the raw `req.path()`: actix routes `/api/v1/%73ystem` to
/// `/api/v1/system`, so classifying the raw path would let a viewer reach an admin endpoint.
/// Empty segments are ignored (`//api/v1//system/` is classified as `/api/v1/system`), so a
/// path-normalising layer added later cannot turn a viewer path into an admin one either.
///
/// Unknown paths need a viewer for reads (an unauthenticated scan gets `401` before any `404`)
/// and an admin for anything else. A write endpoint added to the API must be added here, or only
/// admins can call it.
pub fn required_role(method: &Method, path: &str, open: OpenEndpoints) -> Access {
    let read = method == Method::GET || method == Method::HEAD;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let at_least = Access::Role;
    match segments.as_slice() {
        ["health", "live" | "ready"] if read => {
            if open.health {
                Access::Open
            } else {
                at_least(Role::Viewer)
            }
        }
        ["metrics"] if read => {
            if open.metrics {
                Access::Open
            } else {
                at_least(Role::Viewer)
            }
        }
        ["api", "v1", "openapi.json"] if read => Access::Open,
        // The console's page and files (`console`): the same for everyone, no data in them.
        [] | ["console", _] if read => Access::Open,
        ["api", "v1", "system" | "models" | "cluster", ..] => at_least(Role::Admin),
        ["api", "v1", "cameras"] if method == Method::POST => at_least(Role::Operator),
        ["api", "v1", "cameras", _id] if method == Method::DELETE => at_least(Role::Operator),
        ["api", "v1", "cameras", _id, "geometry"] if method == Method::PUT => at_least(Role::Operator),
        ["api", "v1", "cameras", _id, "drift", "reference"] if method == Method::POST => at_least(Role::Operator),
        _ if read => at_least(Role::Viewer),
        _ => at_least(Role::Admin),
    }
}

// ---------------------------------------------------------------------------------------------
// The token store
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The parser's message only (no source excerpt, which could show a digest).
    #[error("tokens file {path}:{line}: {message}")]
    Parse { path: String, line: usize, message: String },
    #[error("invalid auth configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// The tokens file: `[[tokens]]` tables, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<toml::Spanned<TokenEntry>>,
}

struct StoredToken {
    name: Arc<str>,
    role: Role,
    digest: [u8; 32],
}

/// The checked set of tokens plus the open-endpoint switches: everything a request needs to be
/// admitted. Build once at start-up and share it (`web::Data`).
pub struct TokenStore {
    enabled: bool,
    open: OpenEndpoints,
    tokens: Vec<StoredToken>,
}

/// Names and roles only.
impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("enabled", &self.enabled)
            .field("open", &self.open)
            .field("tokens", &self.tokens.iter().map(|t| (&*t.name, t.role)).collect::<Vec<_>>())
            .finish()
    }
}

impl TokenStore {
    /// Inline tokens plus those of `tokens_file`, checked together (duplicates across the two
    /// count). With auth disabled nothing is read and every request is admitted.
    pub fn load(config: &AuthConfig) -> Result<Self, AuthError> {
        let open = config.open_endpoints();
        if !config.enabled {
            return Ok(Self { enabled: false, open, tokens: Vec::new() });
        }
        let mut entries: Vec<(String, TokenEntry)> =
            config.tokens.iter().enumerate().map(|(i, t)| (format!("auth.tokens[{i}]"), t.clone())).collect();
        if !config.tokens_file.is_empty() {
            entries.extend(read_tokens_file(&config.tokens_file)?);
        }
        let labelled: Vec<_> = entries.iter().map(|(label, t)| (label.clone(), t)).collect();
        let mut errors = check_tokens(&labelled);
        if entries.is_empty() {
            errors.push(NO_TOKENS.into());
        }
        if !errors.is_empty() {
            return Err(AuthError::Invalid(errors));
        }
        let tokens = entries
            .into_iter()
            .map(|(_, t)| StoredToken {
                name: t.name.into(),
                role: t.role,
                digest: parse_digest(&t.sha256).expect("checked above"),
            })
            .collect();
        Ok(Self { enabled: true, open, tokens })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Configured token names and roles (for an admin view; never the digests).
    pub fn names(&self) -> impl Iterator<Item = (&str, Role)> {
        self.tokens.iter().map(|t| (&*t.name, t.role))
    }

    /// The caller a token belongs to. Compares against every digest, without stopping early.
    pub fn lookup(&self, token: &str) -> Option<Caller> {
        let presented = digest(token.as_bytes());
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(&t.digest, &presented) {
                found = Some(t);
            }
        }
        found.map(|t| Caller { name: t.name.clone(), role: t.role })
    }

    /// The whole decision for one request, without actix: `Ok(Some(caller))` to pass with an
    /// identity, `Ok(None)` to pass an open endpoint, `Err` to reject.
    pub fn admit(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<Option<Caller>, Rejection> {
        if !self.enabled {
            return Ok(Some(Caller::anonymous()));
        }
        let Access::Role(required) = required_role(method, path, self.open) else {
            return Ok(None);
        };
        let token = bearer_token(headers)?;
        let caller = self.lookup(token).ok_or(Rejection::UnknownToken)?;
        if caller.role < required {
            return Err(Rejection::Forbidden {
                role: caller.role,
                required,
                method: method.clone(),
                path: path.to_owned(),
            });
        }
        Ok(Some(caller))
    }
}

fn read_tokens_file(path: &str) -> Result<Vec<(String, TokenEntry)>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read { path: path.into(), source })?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let file: TokensFile = toml::from_str(&text).map_err(|e| AuthError::Parse {
        path: path.into(),
        line: e.span().map_or(1, |s| line_of(s.start)),
        message: e.message().trim_end().to_owned(),
    })?;
    Ok(file.tokens.into_iter().map(|t| (format!("{path}:{}", line_of(t.span().start)), t.into_inner())).collect())
}

/// The token of a well-formed `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(AUTHORIZATION);
    let value = values.next().ok_or(Rejection::MissingToken)?;
    if values.next().is_some() {
        return Err(Rejection::Malformed("more than one Authorization header"));
    }
    // "Bearer " + token; checked before any other work on an oversized value.
    if value.len() > "Bearer ".len() + MAX_TOKEN_BYTES + 2 {
        return Err(Rejection::Malformed("bearer token longer than 512 bytes"));
    }
    let value = value.to_str().map_err(|_| Rejection::Malformed("Authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejection::Malformed("expected Authorization: Bearer <token>"));
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(Rejection::Malformed("empty bearer token"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::Malformed("bearer token longer than 512 bytes"));
    }
    // RFC 6750 token68: ALPHA DIGIT - . _ ~ + / then any '='.
    let body = token.trim_end_matches('=');
    if !body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')) {
        return Err(Rejection::Malformed("bearer token has characters outside the token68 set"));
    }
    Ok(token)
}

// ---------------------------------------------------------------------------------------------
// Caller, rejections, middleware
// ---------------------------------------------------------------------------------------------

/// Why a request was refused. The messages are the `{"error": ...}` bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing bearer token")]
    MissingToken,
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    #[error("invalid bearer token")]
    UnknownToken,
    #[error("role {role} may not {method} {path} ({required} required)")]
    Forbidden { role: Role, required: Role, method: Method, path: String },
}

impl ResponseError for Rejection {
    fn status_code(&self) -> StatusCode {
        match self {
            Rejection::Forbidden { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if self.status_code() == StatusCode::UNAUTHORIZED {
            response.insert_header((WWW_AUTHENTICATE, WWW_AUTHENTICATE_VALUE));
        }
        response.json(serde_json::json!({ "error": self.to_string() }))
    }
}

/// The middleware, for `actix_web::middleware::from_fn(auth::authenticate)`. Needs the
/// [`TokenStore`] as app data (`App::app_data(web::Data::new(store))`); without it every request
/// fails with 500, never passes.
pub async fn authenticate<B: MessageBody>(
    store: web::Data<TokenStore>,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    match store.admit(req.method(), req.match_info().as_str(), req.headers()) {
        Ok(caller) => {
            if let Some(caller) = caller {
                req.extensions_mut().insert(caller);
            }
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(rejection) => {
            if let Some(limited) = super::rate_limit::limit_refused(&req) {
                return Ok(req.into_response(limited).map_into_right_body());
            }
            let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
            match &rejection {
                Rejection::Forbidden { .. } => tracing::info!(%peer, reason = %rejection, "request forbidden"),
                _ => {
                    let (method, path) = (req.method(), req.path());
                    tracing::debug!(%peer, %method, path, reason = %rejection, "request unauthenticated")
                }
            }
            let response = rejection.error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// New tokens (CLI)
// ---------------------------------------------------------------------------------------------

/// A new random token and its SHA-256 hex: hand the token to the client once, put the hash in the
/// configuration. 32 bytes from `/dev/urandom`, base64url without padding (43 characters, so it
/// cannot be mistaken for the 64-digit hash).
pub fn new_token() -> std::io::Result<(String, String)> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = base64url(&bytes);
    let hash = sha256_hex(&token);
    Ok((token, hash))
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;
    use actix_web::test as actix_test;
    use actix_web::{middleware::from_fn, App, HttpRequest};

    const OPEN: OpenEndpoints = OpenEndpoints { health: true, metrics: true };
    const CLOSED: OpenEndpoints = OpenEndpoints { health: false, metrics: false };

    fn entry(name: &str, role: Role, token: &str) -> TokenEntry {
        TokenEntry { name: name.into(), role, sha256: sha256_hex(token) }
    }

    fn config(tokens: Vec<TokenEntry>) -> AuthConfig {
        AuthConfig { tokens, ..AuthConfig::default() }
    }

    fn three_roles() -> AuthConfig {
        config(vec![
            entry("dash", Role::Viewer, "viewer-token"),
            entry("ops", Role::Operator, "operator-token"),
            entry("root", Role::Admin, "admin-token"),
        ])
    }

    /// A file in the temp dir, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(contents: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!("its-auth-test-{}-{}.toml", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }

        fn path(&self) -> String {
            self.0.to_str().unwrap().to_owned()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    // --- required_role -----------------------------------------------------------------------

    #[test]
    fn every_route_of_the_api_has_the_documented_role() {
        use Access::Open;
        let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
        let viewer = Access::Role(Role::Viewer);
        let operator = Access::Role(Role::Operator);
        let admin = Access::Role(Role::Admin);
        let table = [
            // health.rs
            (&get, "/health/live", Open),
            (&get, "/health/ready", Open),
            (&get, "/metrics", Open),
            // cameras.rs
            (&post, "/api/v1/cameras", operator),
            (&get, "/api/v1/cameras", viewer),
            (&get, "/api/v1/cameras/cam-1", viewer),
            (&delete, "/api/v1/cameras/cam-1", operator),
            (&get, "/api/v1/cameras/cam-1/counts", viewer),
            (&put, "/api/v1/cameras/cam-1/geometry", operator),
            (&get, "/api/v1/cameras/cam-1/geometry", viewer),
            (&get, "/api/v1/cameras/cam-1/state", viewer),
            // pictures.rs
            (&get, "/api/v1/cameras/cam-1/snapshot.jpg", viewer),
            (&get, "/api/v1/cameras/cam-1/live.mjpeg", viewer),
            (&get, "/api/v1/cameras/cam-1/tracks", viewer),
            // drift.rs
            (&get, "/api/v1/cameras/cam-1/drift", viewer),
            (&post, "/api/v1/cameras/cam-1/drift/reference", operator),
            // analytics.rs
            (&get, "/api/v1/cameras/cam-1/analytics", viewer),
            // events.rs
            (&get, "/api/v1/events", viewer),
            (&get, "/api/v1/events/stream", viewer),
            // system.rs
            (&get, "/api/v1/system", admin),
            // me.rs
            (&get, "/api/v1/me", viewer),
            // console.rs
            (&get, "/", Open),
            (&get, "/console/app.js", Open),
            (&get, "/console/style.css", Open),
            // not routed yet, but fixed by the policy
            (&get, "/api/v1/openapi.json", Open),
            (&get, "/api/v1/models", admin),
            (&get, "/api/v1/models/yolox/info", admin),
            (&post, "/api/v1/models/reload", admin),
        ];
        for (method, path, expected) in table {
            assert_eq!(required_role(method, path, OPEN), expected, "{method} {path}");
        }
    }

    #[test]
    fn head_is_a_read() {
        assert_eq!(required_role(&Method::HEAD, "/api/v1/cameras", OPEN), Access::Role(Role::Viewer));
        assert_eq!(required_role(&Method::HEAD, "/health/live", OPEN), Access::Open);
        assert_eq!(required_role(&Method::HEAD, "/api/v1/system", OPEN), Access::Role(Role::Admin));
    }

    #[test]
    fn health_and_metrics_are_protected_when_configured() {
        for path in ["/health/live", "/health/ready", "/metrics"] {
            assert_eq!(required_role(&Method::GET, path, CLOSED), Access::Role(Role::Viewer), "{path}");
        }
        let metrics_only_closed = OpenEndpoints { health: true, metrics: false };
        assert_eq!(required_role(&Method::GET, "/health/live", metrics_only_closed), Access::Open);
        assert_eq!(required_role(&Method::GET, "/metrics", metrics_only_closed), Access::Role(Role::Viewer));
        // openapi.json stays open whatever the switches say.
        assert_eq!(required_role(&Method::GET, "/api/v1/openapi.json", CLOSED), Access::Open);
    }

    #[test]
    fn unknown_paths_need_a_viewer_to_read_and_an_admin_to_write() {
        for path in
            ["/admin", "/console", "/console/a/b", "/api/v2/cameras", "/api/v1/nothing", "/api/v1/cameras/a/b/c/d"]
        {
            assert_eq!(required_role(&Method::GET, path, OPEN), Access::Role(Role::Viewer), "GET {path}");
            for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
                assert_eq!(required_role(&method, path, OPEN), Access::Role(Role::Admin), "{method} {path}");
            }
        }
    }

    #[test]
    fn the_console_is_open_to_read_only() {
        for path in ["/", "/console/app.js"] {
            for method in [Method::POST, Method::PUT, Method::DELETE] {
                assert_eq!(required_role(&method, path, CLOSED), Access::Role(Role::Admin), "{method} {path}");
            }
            assert_eq!(required_role(&Method::HEAD, path, CLOSED), Access::Open, "{path}");
        }
    }

    #[test]
    fn writes_other_than_the_listed_ones_need_an_admin() {
        let admin = Access::Role(Role::Admin);
        assert_eq!(required_role(&Method::PUT, "/api/v1/cameras", OPEN), admin);
        assert_eq!(required_role(&Method::DELETE, "/api/v1/cameras", OPEN), admin);
        assert_eq!(required_role(&Method::POST, "/api/v1/cameras/cam-1", OPEN), admin);
        assert_eq!(required_role(&Method::PATCH, "/api/v1/cameras/cam-1/geometry", OPEN), admin);
        assert_eq!(required_role(&Method::PUT, "/api/v1/cameras/cam-1/drift/reference", OPEN), admin);
        assert_eq!(required_role(&Method::POST, "/api/v1/cameras/cam-1/drift", OPEN), admin);
        assert_eq!(required_role(&Method::POST, "/health/live", OPEN), admin);
        assert_eq!(required_role(&Method::POST, "/metrics", OPEN), admin);
        assert_eq!(required_role(&Method::POST, "/api/v1/openapi.json", OPEN), admin);
    }

    #[test]
    fn empty_segments_cannot_dodge_the_admin_table() {
        let admin = Access::Role(Role::Admin);
        for path in ["//api/v1/system", "/api//v1/system/", "/api/v1/system//", "/api/v1//models/x"] {
            assert_eq!(required_role(&Method::GET, path, OPEN), admin, "{path}");
        }
        assert_eq!(
            required_role(&Method::GET, "/API/V1/SYSTEM", OPEN),
            Access::Role(Role::Viewer),
            "routes are case-sensitive: 404"
        );
    }

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
        assert_eq!(toml::from_str::<TokenEntry>("name='a'\nrole='admin'\nsha256='x'").unwrap().role, Role::Admin);
    }

    // --- configuration -----------------------------------------------------------------------

    #[test]
    fn defaults_are_enabled_open_and_need_tokens_to_serve() {
        let config: AuthConfig = toml::from_str("").unwrap();
        assert_eq!(config, AuthConfig::default());
        assert!(config.enabled && config.open_health && config.open_metrics);
        assert!(config.validate().is_empty(), "the settings load; serving needs tokens");
        match TokenStore::load(&config) {
            Err(AuthError::Invalid(errors)) => assert_eq!(errors, vec![NO_TOKENS.to_owned()]),
            other => panic!("{other:?}"),
        }
        assert!(TokenStore::load(&AuthConfig { enabled: false, ..config }).is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<AuthConfig>("enable = false").is_err());
        assert!(toml::from_str::<AuthConfig>("[[tokens]]\nname='a'\nrole='admin'\nsha256='x'\ntoken='oops'").is_err());
    }

    #[test]
    fn validate_reports_every_problem_at_once() {
        let good = sha256_hex("t1");
        let config = config(vec![
            TokenEntry { name: "ok".into(), role: Role::Viewer, sha256: good.clone() },
            TokenEntry { name: "".into(), role: Role::Viewer, sha256: sha256_hex("t2") },
            TokenEntry { name: "bad name!".into(), role: Role::Viewer, sha256: sha256_hex("t3") },
            TokenEntry { name: "ok".into(), role: Role::Admin, sha256: sha256_hex("t4") },
            TokenEntry { name: "short".into(), role: Role::Viewer, sha256: "abc123".into() },
            TokenEntry { name: "nothex".into(), role: Role::Viewer, sha256: "g".repeat(64) },
            TokenEntry { name: "upper".into(), role: Role::Viewer, sha256: good.to_uppercase() },
        ]);
        let errors = config.validate();
        assert_eq!(errors.len(), 6, "{errors:#?}");
        let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
        assert!(has("auth.tokens[1]: token name must not be empty"));
        assert!(has("auth.tokens[2]: token name \"bad name!\" may only contain"));
        assert!(has("auth.tokens[3]: duplicate token name \"ok\" (also at auth.tokens[0])"));
        assert!(has("auth.tokens[4] (\"short\"): sha256 must be 64 hex digits"));
        assert!(has("auth.tokens[5] (\"nothex\"): sha256 must be 64 hex digits"));
        // Hex case does not make a different digest.
        assert!(has("auth.tokens[6] (\"upper\"): same sha256 as auth.tokens[0] (\"ok\")"));
        assert!(!errors.iter().any(|e| e.contains(&good) || e.contains("abc123")), "no digest in messages");
    }

    #[test]
    fn token_entry_debug_hides_the_digest() {
        let e = entry("a", Role::Viewer, "secret");
        let shown = format!("{e:?} {:?}", config(vec![e.clone()]));
        assert!(!shown.contains(&e.sha256), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    // --- TokenStore ----------------------------------------------------------------------------

    #[test]
    fn inline_tokens_are_looked_up_by_token() {
        let store = TokenStore::load(&three_roles()).unwrap();
        assert_eq!(store.lookup("viewer-token"), Some(Caller { name: "dash".into(), role: Role::Viewer }));
        assert_eq!(store.lookup("admin-token").unwrap().role, Role::Admin);
        assert_eq!(store.lookup("nope"), None);
        assert_eq!(store.lookup(""), None);
        assert_eq!(store.names().count(), 3);
        assert!(!format!("{store:?}").contains(&sha256_hex("viewer-token")));
    }

    #[test]
    fn file_tokens_merge_with_inline_ones() {
        let file = TempFile::new(&format!(
            "# scraper and CI\n[[tokens]]\nname = \"prometheus\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\n\
             [[tokens]]\nname = \"ci\"\nrole = \"operator\"\nsha256 = \"{}\"\n",
            sha256_hex("scrape"),
            sha256_hex("deploy")
        ));
        let config = AuthConfig { tokens_file: file.path(), ..config(vec![entry("root", Role::Admin, "admin-token")]) };
        assert!(config.validate().is_empty());
        let store = TokenStore::load(&config).unwrap();
        assert_eq!(store.lookup("scrape").unwrap().name.as_ref(), "prometheus");
        assert_eq!(store.lookup("deploy").unwrap().role, Role::Operator);
        assert_eq!(store.lookup("admin-token").unwrap().name.as_ref(), "root");
    }

    #[test]
    fn a_file_alone_is_enough_but_an_empty_one_is_not() {
        let file = TempFile::new(&format!("[[tokens]]\nname='ci'\nrole='admin'\nsha256='{}'\n", sha256_hex("x")));
        let store = TokenStore::load(&AuthConfig { tokens_file: file.path(), ..AuthConfig::default() }).unwrap();
        assert_eq!(store.lookup("x").unwrap().name.as_ref(), "ci");

        let empty = TempFile::new("# no tokens yet\n");
        match TokenStore::load(&AuthConfig { tokens_file: empty.path(), ..AuthConfig::default() }) {
            Err(AuthError::Invalid(errors)) => assert_eq!(errors, vec![NO_TOKENS.to_owned()]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicates_across_inline_and_file_name_both_places() {
        let hash = sha256_hex("shared");
        let file = TempFile::new(&format!("\n\n[[tokens]]\nname = \"root\"\nrole = \"viewer\"\nsha256 = \"{hash}\"\n"));
        let config = AuthConfig { tokens_file: file.path(), ..config(vec![entry("root", Role::Admin, "shared")]) };
        let Err(AuthError::Invalid(errors)) = TokenStore::load(&config) else { panic!("accepted duplicates") };
        let at = format!("{}:3", file.path());
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].starts_with(&format!("{at}: duplicate token name \"root\" (also at auth.tokens[0])")),
            "{errors:#?}"
        );
        assert!(errors[1].starts_with(&format!("{at} (\"root\"): same sha256 as auth.tokens[0]")), "{errors:#?}");
        assert!(!errors.iter().any(|e| e.contains(&hash)));
    }

    #[test]
    fn bad_files_name_the_file_and_line_but_no_secret() {
        let missing = AuthConfig { tokens_file: "/nonexistent/its-tokens.toml".into(), ..AuthConfig::default() };
        let err = TokenStore::load(&missing).unwrap_err();
        assert!(matches!(err, AuthError::Read { .. }));
        assert!(err.to_string().starts_with("cannot read tokens file /nonexistent/its-tokens.toml: "), "{err}");

        let secret = "zq8J3kAq-secret-token-pasted-by-mistake";
        let cases = [
            // unknown key (the token pasted under its own key) on line 4
            (format!("[[tokens]]\nname = \"a\"\nrole = \"admin\"\ntoken = \"{secret}\"\n"), 4, "unknown field `token`"),
            // TOML syntax error on line 3
            (format!("[[tokens]]\nname = \"a\"\nsha256 = \"{secret}\n"), 3, ""),
            // missing field: the table's line
            ("[[tokens]]\nname = \"a\"\nrole = \"admin\"\n".into(), 1, "missing field `sha256`"),
            // not a [[tokens]] file
            (
                format!("[[auth.tokens]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"{secret}\"\n"),
                1,
                "unknown field `auth`",
            ),
        ];
        for (text, line, message) in cases {
            let file = TempFile::new(&text);
            let err = TokenStore::load(&AuthConfig { tokens_file: file.path(), ..AuthConfig::default() }).unwrap_err();
            let shown = err.to_string();
            let AuthError::Parse { line: got, .. } = &err else { panic!("{err:?}") };
            assert!(shown.starts_with(&format!("tokens file {}:", file.path())), "{shown}");
            assert!(shown.contains(message), "{shown}");
            assert!(!shown.contains(secret), "secret in {shown}");
            assert_eq!(*got, line, "{shown}");
        }

        // A token pasted where its hash belongs: caught, not echoed.
        let file = TempFile::new(&format!("[[tokens]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"{secret}\"\n"));
        let err = TokenStore::load(&AuthConfig { tokens_file: file.path(), ..AuthConfig::default() })
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{}:1 (\"a\"): sha256 must be 64 hex digits", file.path())), "{err}");
        assert!(!err.contains(secret));
    }

    #[test]
    fn disabled_auth_reads_nothing_and_admits_everyone() {
        let config = AuthConfig { enabled: false, tokens_file: "/nonexistent".into(), ..AuthConfig::default() };
        let store = TokenStore::load(&config).unwrap();
        assert!(!store.enabled());
        let caller = store.admit(&Method::DELETE, "/api/v1/models/x", &HeaderMap::new()).unwrap().unwrap();
        assert!(caller.is_anonymous());
        assert_eq!(caller.role, Role::Admin);
    }

    #[test]
    fn constant_time_eq_compares_whole_digests() {
        let a = digest(b"a");
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!constant_time_eq(&a, &b));
        assert!(!constant_time_eq(&a, &digest(b"b")));
    }

    #[test]
    fn sha256_hex_matches_a_known_vector() {
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn new_tokens_are_random_base64url_with_matching_hashes() {
        let (t1, h1) = new_token().unwrap();
        let (t2, _) = new_token().unwrap();
        assert_ne!(t1, t2);
        assert_eq!(t1.len(), 43);
        assert!(t1.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(h1, sha256_hex(&t1));
        assert_eq!(parse_digest(&h1).map(|_| ()), Some(()));
        // And the store accepts what it printed.
        let store =
            TokenStore::load(&config(vec![TokenEntry { name: "cli".into(), role: Role::Viewer, sha256: h1 }])).unwrap();
        assert!(store.lookup(&t1).is_some());
    }

    #[test]
    fn base64url_encodes_known_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    // --- header parsing and admission ----------------------------------------------------------

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["BEARER  abc=="])), Ok("abc=="));
        assert_eq!(bearer_token(&headers(&[])), Err(Rejection::MissingToken));
        for bad in
            ["Bearer", "Bearer ", "Bearer    ", "Basic YTpi", "Bearerabc", "Bearer a b", "Bearer a\"b", "Bearer =abc"]
        {
            assert!(matches!(bearer_token(&headers(&[bad])), Err(Rejection::Malformed(_))), "{bad:?}");
        }
        assert!(matches!(bearer_token(&headers(&["Bearer a", "Bearer b"])), Err(Rejection::Malformed(_))));
        let max = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES));
        assert_eq!(bearer_token(&headers(&[&max])).map(str::len), Ok(MAX_TOKEN_BYTES));
        let over = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(bearer_token(&headers(&[&over])), Err(Rejection::Malformed("bearer token longer than 512 bytes")));
        let huge = format!("Bearer {}", "a".repeat(8 * MAX_TOKEN_BYTES));
        assert!(matches!(bearer_token(&headers(&[&huge])), Err(Rejection::Malformed(_))));
    }

    #[test]
    fn admission_decisions() {
        let store = TokenStore::load(&three_roles()).unwrap();
        let (get, post) = (Method::GET, Method::POST);
        let auth = |t: &str| headers(&[&format!("Bearer {t}")]);
        assert_eq!(store.admit(&get, "/health/live", &HeaderMap::new()), Ok(None));
        assert_eq!(store.admit(&get, "/health/live", &auth("garbage")), Ok(None), "open ignores tokens");
        assert_eq!(store.admit(&get, "/api/v1/cameras", &HeaderMap::new()), Err(Rejection::MissingToken));
        assert_eq!(store.admit(&get, "/api/v1/cameras", &auth("garbage")), Err(Rejection::UnknownToken));
        assert_eq!(store.admit(&get, "/api/v1/cameras", &auth("viewer-token")).unwrap().unwrap().name.as_ref(), "dash");
        assert_eq!(
            store.admit(&post, "/api/v1/cameras", &auth("viewer-token")),
            Err(Rejection::Forbidden {
                role: Role::Viewer,
                required: Role::Operator,
                method: post.clone(),
                path: "/api/v1/cameras".into()
            })
        );
        assert!(store.admit(&post, "/api/v1/cameras", &auth("operator-token")).is_ok());
        assert!(store.admit(&get, "/api/v1/system", &auth("operator-token")).is_err());
        assert!(store.admit(&get, "/api/v1/system", &auth("admin-token")).is_ok());
    }

    // --- the middleware ------------------------------------------------------------------------

    /// Echoes the caller it finds, like a handler that logs the token name.
    async fn whoami(req: HttpRequest) -> HttpResponse {
        let name = req.extensions().get::<Caller>().map(|c| c.name.to_string());
        HttpResponse::Ok().json(serde_json::json!({ "caller": name }))
    }

    macro_rules! app {
        ($config:expr) => {
            actix_test::init_service(
                App::new()
                    .app_data(web::Data::new(TokenStore::load(&$config).unwrap()))
                    .wrap(from_fn(authenticate))
                    .route("/api/v1/system", web::get().to(|| async { HttpResponse::Ok().body("system") }))
                    .default_service(web::to(whoami)),
            )
            .await
        };
    }

    fn request(method: Method, uri: &str, token: Option<&str>) -> actix_web::test::TestRequest {
        let req = actix_test::TestRequest::default().method(method).uri(uri);
        match token {
            Some(t) => req.insert_header((AUTHORIZATION, format!("Bearer {t}"))),
            None => req,
        }
    }

    async fn error_of(resp: ServiceResponse<impl MessageBody>) -> String {
        let body: serde_json::Value = actix_test::read_body_json(resp).await;
        body["error"].as_str().unwrap().to_owned()
    }

    #[actix_web::test]
    async fn no_token_is_401_with_a_challenge() {
        let app = app!(three_roles());
        let resp = actix_test::call_service(&app, request(Method::GET, "/api/v1/cameras", None).to_request()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers().get(WWW_AUTHENTICATE).unwrap(), WWW_AUTHENTICATE_VALUE);
        assert_eq!(error_of(resp).await, "missing bearer token");
        // Unknown paths too: a scan learns nothing.
        let resp = actix_test::call_service(&app, request(Method::GET, "/secret/admin.php", None).to_request()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }

    #[actix_web::test]
    async fn bad_token_is_401_and_not_echoed() {
        let app = app!(three_roles());
        let resp =
            actix_test::call_service(&app, request(Method::GET, "/api/v1/cameras", Some("wrong-token")).to_request())
                .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers().get(WWW_AUTHENTICATE).unwrap(), WWW_AUTHENTICATE_VALUE);
        let body = actix_test::read_body(resp).await;
        assert_eq!(body, r#"{"error":"invalid bearer token"}"#);
    }

    #[actix_web::test]
    async fn roles_gate_writes_and_admin_endpoints() {
        let app = app!(three_roles());
        let resp =
            actix_test::call_service(&app, request(Method::POST, "/api/v1/cameras", Some("viewer-token")).to_request())
                .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers().get(WWW_AUTHENTICATE).is_none());
        assert_eq!(error_of(resp).await, "role viewer may not POST /api/v1/cameras (operator required)");

        let resp = actix_test::call_service(
            &app,
            request(Method::POST, "/api/v1/cameras", Some("operator-token")).to_request(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: serde_json::Value = actix_test::read_body_json(resp).await;
        assert_eq!(body["caller"], "ops", "the handler sees the token name");

        let resp =
            actix_test::call_service(&app, request(Method::GET, "/api/v1/system", Some("viewer-token")).to_request())
                .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let resp =
            actix_test::call_service(&app, request(Method::GET, "/api/v1/system", Some("admin-token")).to_request())
                .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn percent_encoding_cannot_reach_admin_routes() {
        let app = app!(three_roles());
        // The router decodes %73 to 's', so this IS /api/v1/system ...
        let resp =
            actix_test::call_service(&app, request(Method::GET, "/api/v1/%73ystem", Some("admin-token")).to_request())
                .await;
        assert_eq!(actix_test::read_body(resp).await, "system");
        // ... and a viewer must not get there.
        let resp =
            actix_test::call_service(&app, request(Method::GET, "/api/v1/%73ystem", Some("viewer-token")).to_request())
                .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }

    #[actix_web::test]
    async fn health_is_open_and_metrics_follows_the_config() {
        let app = app!(three_roles());
        for path in ["/health/live", "/health/ready", "/metrics"] {
            let resp = actix_test::call_service(&app, request(Method::GET, path, None).to_request()).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
        }
        let app = app!(AuthConfig { open_metrics: false, ..three_roles() });
        let resp = actix_test::call_service(&app, request(Method::GET, "/health/live", None).to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = actix_test::call_service(&app, request(Method::GET, "/metrics", None).to_request()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let resp =
            actix_test::call_service(&app, request(Method::GET, "/metrics", Some("viewer-token")).to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn disabled_auth_passes_everything_as_anonymous() {
        let app = app!(AuthConfig { enabled: false, ..AuthConfig::default() });
        for (method, path) in [
            (Method::GET, "/api/v1/system"),
            (Method::POST, "/api/v1/models/reload"),
            (Method::DELETE, "/api/v1/cameras/x"),
        ] {
            let resp = actix_test::call_service(&app, request(method, path, None).to_request()).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
        }
        let resp =
            actix_test::call_service(&app, request(Method::GET, "/api/v1/cameras", Some("anything")).to_request())
                .await;
        let body: serde_json::Value = actix_test::read_body_json(resp).await;
        assert_eq!(body["caller"], Caller::ANONYMOUS);
    }

    #[actix_web::test]
    async fn a_missing_store_fails_closed() {
        let app =
            actix_test::init_service(App::new().wrap(from_fn(authenticate)).default_service(web::to(whoami))).await;
        let result =
            actix_test::try_call_service(&app, request(Method::GET, "/api/v1/cameras", None).to_request()).await;
        let status = match result {
            Ok(resp) => resp.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
