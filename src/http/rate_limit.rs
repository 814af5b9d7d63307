//! Per-client token-bucket rate limiting, as an actix-web middleware.
//!
//! Each client has a bucket of at most `burst` tokens that refills at `per_second`; a request
//! takes one token or is answered `429 Too Many Requests` with `Retry-After` (whole seconds,
//! rounded up) and `{"error":"rate limit exceeded"}`.
//!
//! The client is the authenticated caller's token name when there is one (so this middleware must
//! run *after* [`super::auth::authenticate`]), else the peer IP address: IPv6 addresses by their /64
//! prefix, since one host usually holds a whole /64. `X-Forwarded-For` is never trusted. Requests
//! without a peer address (e.g. a Unix socket) share one bucket.
//!
//! `/health/live`, `/health/ready` and `/metrics` are never limited: probes and Prometheus scrapes
//! must not be throttled.
//!
//! Memory is bounded by `max_clients` buckets. When a new client arrives at a full table:
//! 1. every *full* bucket is dropped: a full bucket behaves exactly like no bucket (a new client
//!    starts full), so this loses nothing, and idle clients go first;
//! 2. if every bucket is still in use, the tenth of them closest to full is dropped (at least
//!    one); those clients start again with a full bucket on their next request, i.e. gain at
//!    most `burst` tokens each.
//!
//! Making room costs a pass over the table, only when a new client finds it full, and then
//! leaves room for many: a spray of new addresses cannot make every request pay a pass. The bound
//! may be passed by a few entries while several workers insert new clients at the same instant.
//!
//! Time comes from a [`Clock`], so tests drive the buckets with `ManualClock` and never sleep.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::RETRY_AFTER;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use dashmap::DashMap;

use super::caller::Caller;
use crate::access::RateLimitConfig;
use crate::supervision::Clock;

/// Whose bucket a request draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An authenticated token, by name.
    Caller(Arc<str>),
    /// An unauthenticated client (open endpoint, or auth disabled), by address.
    Ip(IpAddr),
    /// No peer address known.
    Unknown,
}

impl ClientKey {
    /// The caller set by the auth middleware, else the peer address.
    pub fn of(req: &ServiceRequest) -> Self {
        if let Some(caller) = req.extensions().get::<Caller>() {
            if !caller.is_anonymous() {
                return ClientKey::Caller(caller.name.clone());
            }
        }
        Self::address_of(req)
    }

    /// The peer address alone, whoever the caller is.
    fn address_of(req: &ServiceRequest) -> Self {
        match req.peer_addr() {
            Some(addr) => ClientKey::Ip(client_ip(addr.ip())),
            None => ClientKey::Unknown,
        }
    }
}

/// IPv4 (also when seen as IPv4-mapped IPv6) as is; IPv6 cut to its /64.
fn client_ip(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Endpoints never limited.
pub fn is_exempt(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && matches!(path, "/health/live" | "/health/ready" | "/metrics")
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Allow,
    /// Over the limit; one token is back after `retry_after`.
    Deny {
        retry_after: Duration,
    },
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(config: &RateLimitConfig, now: Instant) -> Self {
        Self { tokens: f64::from(config.burst), updated: now }
    }

    /// Tokens at `now`, without changing the bucket.
    fn level(&self, config: &RateLimitConfig, now: Instant) -> f64 {
        let idle = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + idle * config.per_second).min(f64::from(config.burst))
    }

    fn take(&mut self, config: &RateLimitConfig, now: Instant) -> Decision {
        self.tokens = self.level(config, now);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Decision::Allow
        } else {
            Decision::Deny { retry_after: Duration::from_secs_f64((1.0 - self.tokens) / config.per_second) }
        }
    }
}

/// The buckets of all clients. Build once and share it between workers (`web::Data`): a limiter
/// per worker would multiply the limit by the number of workers.
pub struct RateLimiter {
    config: RateLimitConfig,
    clock: Arc<dyn Clock>,
    buckets: DashMap<ClientKey, Bucket>,
}

impl RateLimiter {
    /// `config` must have passed [`RateLimitConfig::validate`].
    pub fn new(config: RateLimitConfig, clock: Arc<dyn Clock>) -> Self {
        Self { config, clock, buckets: DashMap::new() }
    }

    /// Takes a token from `key`'s bucket, or says how long until there is one.
    pub fn check(&self, key: ClientKey) -> Decision {
        let now = self.clock.now();
        if let Some(mut bucket) = self.buckets.get_mut(&key) {
            return bucket.take(&self.config, now);
        }
        if self.buckets.len() >= self.config.max_clients {
            self.make_room(now);
        }
        // Another worker may have inserted the same key meanwhile: `entry` then finds it.
        let mut bucket = self.buckets.entry(key).or_insert_with(|| Bucket::full(&self.config, now));
        bucket.take(&self.config, now)
    }

    /// Clients currently tracked.
    pub fn clients(&self) -> usize {
        self.buckets.len()
    }

    /// The eviction policy of the module docs. Holds no entry of the map while it runs.
    fn make_room(&self, now: Instant) {
        let burst = f64::from(self.config.burst);
        self.buckets.retain(|_, bucket| bucket.level(&self.config, now) < burst);
        if self.buckets.len() < self.config.max_clients {
            return;
        }
        let mut by_level: Vec<(f64, ClientKey)> =
            self.buckets.iter().map(|entry| (entry.level(&self.config, now), entry.key().clone())).collect();
        let count = (self.config.max_clients / 10).clamp(1, by_level.len());
        by_level.select_nth_unstable_by(count - 1, |a, b| b.0.total_cmp(&a.0));
        for (_, key) in by_level.into_iter().take(count) {
            self.buckets.remove(&key);
        }
    }
}

fn too_many_requests(retry_after: Duration) -> HttpResponse {
    // Whole seconds, rounded up, at least 1: a client that retries at once is refused again.
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    HttpResponse::TooManyRequests()
        .insert_header((RETRY_AFTER, secs.max(1).to_string()))
        .json(serde_json::json!({ "error": "rate limit exceeded" }))
}

/// For a request that authentication refuses (401, 403): it still costs its address a token, so
/// guessing tokens or hammering forbidden paths is limited like anything else. `Some(429)` once
/// the address's bucket is empty; `None` to answer the refusal itself.
pub fn limit_refused(req: &ServiceRequest) -> Option<HttpResponse> {
    let limiter = req.app_data::<web::Data<RateLimiter>>()?;
    match limiter.check(ClientKey::address_of(req)) {
        Decision::Allow => None,
        Decision::Deny { retry_after } => Some(too_many_requests(retry_after)),
    }
}

/// The middleware, for `actix_web::middleware::from_fn(rate_limit::limit)`, wrapped *inside* the
/// auth middleware. Needs the [`RateLimiter`] as app data (`App::app_data(web::Data::from(limiter))`).
pub async fn limit<B: MessageBody>(
    limiter: web::Data<RateLimiter>,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    if is_exempt(req.method(), req.match_info().as_str()) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let key = ClientKey::of(&req);
    match limiter.check(key.clone()) {
        Decision::Allow => Ok(next.call(req).await?.map_into_left_body()),
        Decision::Deny { retry_after } => {
            tracing::debug!(client = ?key, ?retry_after, "rate limit exceeded");
            Ok(req.into_response(too_many_requests(retry_after)).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{sha256_hex, AuthConfig, Role, TokenEntry};
    use crate::http::auth::{self, TokenStore};
    use crate::supervision::ManualClock;
    use actix_web::http::header::AUTHORIZATION;
    use actix_web::http::StatusCode;
    use actix_web::test as actix_test;
    use actix_web::{middleware::from_fn, App};

    fn limiter(per_second: f64, burst: u32, max_clients: usize) -> (Arc<ManualClock>, RateLimiter) {
        let clock = Arc::new(ManualClock::new());
        let config = RateLimitConfig { per_second, burst, max_clients };
        assert!(config.validate().is_empty());
        (clock.clone(), RateLimiter::new(config, clock))
    }

    fn ip(s: &str) -> ClientKey {
        ClientKey::Ip(s.parse().unwrap())
    }

    fn name(s: &str) -> ClientKey {
        ClientKey::Caller(s.into())
    }

    #[test]
    fn defaults_and_validation() {
        let config: RateLimitConfig = toml::from_str("").unwrap();
        assert_eq!(config, RateLimitConfig { per_second: 20.0, burst: 40, max_clients: 10_000 });
        assert!(config.validate().is_empty());
        assert!(toml::from_str::<RateLimitConfig>("per_sec = 1.0").is_err(), "unknown keys are rejected");
        let bad = RateLimitConfig { per_second: 0.0, burst: 0, max_clients: 0 };
        assert_eq!(bad.validate().len(), 3);
        for per_second in [-1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(RateLimitConfig { per_second, ..config.clone() }.validate().len(), 1, "{per_second}");
        }
    }

    #[test]
    fn burst_then_deny_with_the_time_to_the_next_token() {
        let (_clock, limiter) = limiter(2.0, 3, 100);
        for _ in 0..3 {
            assert_eq!(limiter.check(ip("10.0.0.1")), Decision::Allow);
        }
        assert_eq!(limiter.check(ip("10.0.0.1")), Decision::Deny { retry_after: Duration::from_millis(500) });
    }

    #[test]
    fn buckets_refill_with_time_up_to_the_burst() {
        let (clock, limiter) = limiter(2.0, 3, 100);
        let key = || ip("10.0.0.1");
        for _ in 0..3 {
            limiter.check(key());
        }
        assert!(matches!(limiter.check(key()), Decision::Deny { .. }));
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.check(key()), Decision::Allow);
        assert!(matches!(limiter.check(key()), Decision::Deny { .. }));
        // A long idle period refills to the burst, not beyond.
        clock.advance(Duration::from_secs(3600));
        for _ in 0..3 {
            assert_eq!(limiter.check(key()), Decision::Allow);
        }
        assert!(matches!(limiter.check(key()), Decision::Deny { .. }));
    }

    #[test]
    fn denied_requests_do_not_push_the_retry_further() {
        let (clock, limiter) = limiter(1.0, 1, 100);
        limiter.check(name("a"));
        for _ in 0..10 {
            assert_eq!(limiter.check(name("a")), Decision::Deny { retry_after: Duration::from_secs(1) });
        }
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.check(name("a")), Decision::Allow);
    }

    #[test]
    fn clients_have_separate_buckets() {
        let (_clock, limiter) = limiter(1.0, 2, 100);
        for key in [name("a"), name("b"), ip("10.0.0.1"), ip("10.0.0.2")] {
            assert_eq!(limiter.check(key.clone()), Decision::Allow);
            assert_eq!(limiter.check(key.clone()), Decision::Allow);
            assert!(matches!(limiter.check(key), Decision::Deny { .. }));
        }
        assert_eq!(limiter.clients(), 4);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| client_ip(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(key("192.0.2.7").to_string(), "192.0.2.7");
    }

    #[test]
    fn idle_clients_are_evicted_first_and_the_table_stays_bounded() {
        let (clock, limiter) = limiter(1.0, 2, 3);
        // "busy" drains its bucket; "idle-1" and "idle-2" take one token each.
        limiter.check(name("busy"));
        limiter.check(name("busy"));
        limiter.check(name("idle-1"));
        limiter.check(name("idle-2"));
        assert_eq!(limiter.clients(), 3);
        // One second later the idle buckets are full again, "busy" is not.
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.check(name("new")), Decision::Allow);
        assert_eq!(limiter.clients(), 2, "both full buckets dropped");
        assert!(matches!(limiter.check(name("busy")), Decision::Allow));
        assert!(matches!(limiter.check(name("busy")), Decision::Deny { .. }), "busy kept its state");

        // Many more clients than the bound: never more than max_clients buckets.
        for i in 0..1000 {
            limiter.check(ip(&format!("10.1.{}.{}", i / 256, i % 256)));
            assert!(limiter.clients() <= 3);
        }
    }

    #[test]
    fn with_no_idle_bucket_the_fullest_tenth_goes() {
        let (_clock, limiter) = limiter(1.0, 3, 2);
        limiter.check(name("drained"));
        limiter.check(name("drained"));
        limiter.check(name("drained"));
        limiter.check(name("used-once"));
        assert_eq!(limiter.check(name("third")), Decision::Allow);
        assert_eq!(limiter.clients(), 2);
        // "drained" survived with its empty bucket; "used-once" was dropped.
        assert!(matches!(limiter.check(name("drained")), Decision::Deny { .. }));
    }

    #[test]
    fn a_full_table_makes_room_for_more_than_one() {
        // A full table of 20 busy clients: the two fullest go at once, leaving room for two.
        let (_clock, busy) = limiter(1.0, 30, 20);
        for i in 0..20 {
            for _ in 0..=i {
                busy.check(name(&format!("c{i}")));
            }
        }
        assert_eq!(busy.check(name("new-1")), Decision::Allow);
        assert_eq!(busy.clients(), 19, "c0 and c1, the fullest, dropped; new-1 added");
        assert_eq!(busy.check(name("new-2")), Decision::Allow);
        assert_eq!(busy.clients(), 20, "no second pass needed");
        // c19 kept its bucket: 10 tokens left, not a fresh 30.
        for _ in 0..10 {
            assert_eq!(busy.check(name("c19")), Decision::Allow);
        }
        assert!(matches!(busy.check(name("c19")), Decision::Deny { .. }));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let header =
            |d: Duration| too_many_requests(d).headers().get(RETRY_AFTER).unwrap().to_str().unwrap().to_owned();
        assert_eq!(header(Duration::from_millis(1)), "1");
        assert_eq!(header(Duration::from_millis(1000)), "1");
        assert_eq!(header(Duration::from_millis(1001)), "2");
        assert_eq!(header(Duration::ZERO), "1");
        assert_eq!(header(Duration::from_secs(60)), "60");
    }

    #[test]
    fn only_probes_and_scrapes_are_exempt() {
        assert!(is_exempt(&Method::GET, "/health/live"));
        assert!(is_exempt(&Method::GET, "/health/ready"));
        assert!(is_exempt(&Method::HEAD, "/metrics"));
        assert!(!is_exempt(&Method::POST, "/metrics"));
        assert!(!is_exempt(&Method::GET, "/api/v1/openapi.json"));
        assert!(!is_exempt(&Method::GET, "/api/v1/cameras"));
    }

    // --- the whole stack: auth, then rate limit --------------------------------------------------

    fn auth_config() -> AuthConfig {
        let entry = |name: &str, role, token: &str| TokenEntry { name: name.into(), role, sha256: sha256_hex(token) };
        AuthConfig {
            tokens: vec![entry("dash", Role::Viewer, "viewer-token"), entry("ops", Role::Operator, "operator-token")],
            ..AuthConfig::default()
        }
    }

    macro_rules! stack {
        ($auth:expr, $clock:expr, $per_second:expr, $burst:expr) => {{
            let limiter =
                RateLimiter::new(RateLimitConfig { per_second: $per_second, burst: $burst, max_clients: 100 }, $clock);
            actix_test::init_service(
                App::new()
                    .app_data(web::Data::new(TokenStore::load(&$auth).unwrap()))
                    .app_data(web::Data::new(limiter))
                    // Registered last = runs first: auth, then the limiter, then the route.
                    .wrap(from_fn(limit))
                    .wrap(from_fn(auth::authenticate))
                    .default_service(web::to(|| async { HttpResponse::Ok().finish() })),
            )
            .await
        }};
    }

    fn get(uri: &str, token: Option<&str>, peer: &str) -> actix_test::TestRequest {
        let req = actix_test::TestRequest::get().uri(uri).peer_addr(peer.parse().unwrap());
        match token {
            Some(t) => req.insert_header((AUTHORIZATION, format!("Bearer {t}"))),
            None => req,
        }
    }

    #[actix_web::test]
    async fn burst_then_429_with_retry_after_then_refill() {
        let clock = Arc::new(ManualClock::new());
        let app = stack!(auth_config(), clock.clone(), 1.0, 2);
        for _ in 0..2 {
            let resp = actix_test::call_service(
                &app,
                get("/api/v1/cameras", Some("viewer-token"), "10.0.0.1:1000").to_request(),
            )
            .await;
            assert_eq!(resp.status(), StatusCode::OK);
        }
        let resp =
            actix_test::call_service(&app, get("/api/v1/cameras", Some("viewer-token"), "10.0.0.1:1000").to_request())
                .await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers().get(RETRY_AFTER).unwrap(), "1");
        assert_eq!(actix_test::read_body(resp).await, r#"{"error":"rate limit exceeded"}"#);

        clock.advance(Duration::from_secs(1));
        let resp =
            actix_test::call_service(&app, get("/api/v1/cameras", Some("viewer-token"), "10.0.0.1:1000").to_request())
                .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn callers_are_limited_by_name_not_address() {
        let clock = Arc::new(ManualClock::new());
        let app = stack!(auth_config(), clock, 1.0, 1);
        // Same address, different tokens: separate buckets.
        let resp =
            actix_test::call_service(&app, get("/api/v1/cameras", Some("viewer-token"), "10.0.0.1:1").to_request())
                .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let resp =
            actix_test::call_service(&app, get("/api/v1/cameras", Some("operator-token"), "10.0.0.1:1").to_request())
                .await;
        assert_eq!(resp.status(), StatusCode::OK);
        // Same token, another address: the same bucket.
        let resp =
            actix_test::call_service(&app, get("/api/v1/cameras", Some("viewer-token"), "10.9.9.9:1").to_request())
                .await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[actix_web::test]
    async fn probes_and_scrapes_are_never_limited() {
        let clock = Arc::new(ManualClock::new());
        let app = stack!(auth_config(), clock, 1.0, 1);
        for _ in 0..20 {
            for path in ["/health/live", "/health/ready", "/metrics"] {
                let resp = actix_test::call_service(&app, get(path, None, "10.0.0.1:1").to_request()).await;
                assert_eq!(resp.status(), StatusCode::OK, "{path}");
            }
        }
        // Open but not exempt: limited by address.
        let resp = actix_test::call_service(&app, get("/api/v1/openapi.json", None, "10.0.0.1:1").to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = actix_test::call_service(&app, get("/api/v1/openapi.json", None, "10.0.0.1:1").to_request()).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[actix_web::test]
    async fn refused_requests_are_limited_by_address() {
        let clock = Arc::new(ManualClock::new());
        let app = stack!(auth_config(), clock.clone(), 1.0, 1);
        let resp = actix_test::call_service(&app, get("/api/v1/cameras", None, "10.0.0.1:1").to_request()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        for token in [None, Some("wrong-token")] {
            let resp = actix_test::call_service(&app, get("/api/v1/cameras", token, "10.0.0.1:1").to_request()).await;
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "token guessing is limited too");
        }
        // Another address is not affected, and a valid token has its own bucket.
        let resp = actix_test::call_service(&app, get("/api/v1/cameras", None, "10.0.0.2:1").to_request()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let resp =
            actix_test::call_service(&app, get("/api/v1/cameras", Some("viewer-token"), "10.0.0.1:1").to_request())
                .await;
        assert_eq!(resp.status(), StatusCode::OK);
        clock.advance(Duration::from_secs(1));
        let resp = actix_test::call_service(&app, get("/api/v1/cameras", None, "10.0.0.1:1").to_request()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "refilled");
    }

    #[actix_web::test]
    async fn with_auth_disabled_clients_are_limited_by_address() {
        let clock = Arc::new(ManualClock::new());
        let app = stack!(AuthConfig { enabled: false, ..AuthConfig::default() }, clock, 1.0, 1);
        let resp = actix_test::call_service(&app, get("/api/v1/cameras", None, "10.0.0.1:1").to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = actix_test::call_service(&app, get("/api/v1/cameras", None, "10.0.0.2:1").to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK, "not one shared anonymous bucket");
        let resp = actix_test::call_service(&app, get("/api/v1/cameras", None, "10.0.0.1:1").to_request()).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
