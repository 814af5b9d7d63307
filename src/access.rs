//! Who may call the control API, as configured: the ordered roles, the tokens (names, roles and
//! SHA-256 digests, never the tokens) with their checks, and the per-client rate limit. Settings
//! hold these; `http::auth` and `http::rate_limit` enforce them.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do. Ordered: each role can do everything the one before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: GET/HEAD under `/api/v1`, except the admin endpoints.
    Viewer,
    /// Viewer, plus registering/removing cameras, writing their geometry and re-capturing their
    /// drift reference.
    Operator,
    /// Everything, including `/api/v1/system` and `/api/v1/models/**`.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// For the CLI's `--role`.
impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected viewer, operator or admin"))
    }
}

/// Which of the configurable endpoints are open (from [`AuthConfig::open_endpoints`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenEndpoints {
    /// `/health/live` and `/health/ready`.
    pub health: bool,
    /// `/metrics`.
    pub metrics: bool,
}

/// `[auth]` in the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Off: every request passes as an anonymous admin.
    pub enabled: bool,
    /// TOML file of `[[tokens]]` tables (same fields as `[[auth.tokens]]`); "" = none.
    pub tokens_file: String,
    /// `/health/live` and `/health/ready` need no token.
    pub open_health: bool,
    /// `/metrics` needs no token (otherwise a viewer token: give the scraper its own).
    pub open_metrics: bool,
    /// Inline tokens, merged with those of `tokens_file`.
    pub tokens: Vec<TokenEntry>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { enabled: true, tokens_file: String::new(), open_health: true, open_metrics: true, tokens: Vec::new() }
    }
}

/// One token: who it is for, what it may do, and the SHA-256 of the token itself.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Shown in logs and used as the rate-limit key: `[A-Za-z0-9_.-]+`, unique.
    pub name: String,
    pub role: Role,
    /// 64 hex digits: `sha256(token)`, as printed by `its-analytics token`.
    pub sha256: String,
}

/// Never prints the digest.
impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("sha256", &"<redacted>")
            .finish()
    }
}

impl AuthConfig {
    /// Every problem with the inline settings, together. The tokens file is checked by
    /// [`TokenStore::load`], which re-checks the merged set.
    pub fn validate(&self) -> Vec<String> {
        let labelled: Vec<_> = self.tokens.iter().enumerate().map(|(i, t)| (format!("auth.tokens[{i}]"), t)).collect();
        // Whether any token exists at all is known only once the tokens file is read, at the
        // start of `serve` (`TokenStore::load`); the other commands need no tokens.
        check_tokens(&labelled)
    }

    pub fn open_endpoints(&self) -> OpenEndpoints {
        OpenEndpoints { health: self.open_health, metrics: self.open_metrics }
    }
}

/// Checks a set of entries, each labelled with where it came from (`auth.tokens[2]`,
/// `tokens.toml:14`). Messages name entries by label and name, never by digest.
pub(crate) fn check_tokens(entries: &[(String, &TokenEntry)]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut digests: HashMap<[u8; 32], (&str, &str)> = HashMap::new();
    for (label, entry) in entries {
        let name = entry.name.as_str();
        if name.is_empty() {
            errors.push(format!("{label}: token name must not be empty"));
        } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
            errors.push(format!("{label}: token name {name:?} may only contain A-Z, a-z, 0-9, '_', '.' and '-'"));
        } else if let Some(first) = names.insert(name, label) {
            errors.push(format!("{label}: duplicate token name {name:?} (also at {first})"));
        }
        match parse_digest(&entry.sha256) {
            None => errors.push(format!(
                "{label} ({name:?}): sha256 must be 64 hex digits, the SHA-256 of the token (see `its-analytics token`)"
            )),
            Some(digest) => {
                if let Some((first, first_name)) = digests.insert(digest, (label, name)) {
                    errors.push(format!(
                        "{label} ({name:?}): same sha256 as {first} ({first_name:?}); every client needs its own token"
                    ));
                }
            }
        }
    }
    errors
}

/// 64 hex digits (either case) to 32 bytes.
pub(crate) fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    fn nibble(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

pub(crate) fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Lowercase hex SHA-256 of `token`: the value for `sha256 = "..."`.
pub fn sha256_hex(token: &str) -> String {
    digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality of two digests in time independent of where they differ.
///
/// The inputs are SHA-256 digests, so an attacker cannot steer their bytes anyway; this keeps the
/// comparison from being the weak link if that ever changes. `black_box` stops the optimiser from
/// turning the fold back into an early-exit compare.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `[rate_limit]` in the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second per client.
    pub per_second: f64,
    /// Requests a client may make at once after being idle (the bucket's size).
    pub burst: u32,
    /// Most clients tracked at once (see the module docs for what happens beyond).
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { per_second: 20.0, burst: 40, max_clients: 10_000 }
    }
}

impl RateLimitConfig {
    /// Every problem, together.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        // At least one request in 1000 s, so a Retry-After always fits in a Duration.
        if !(self.per_second.is_finite() && self.per_second >= 0.001) {
            errors.push("rate_limit.per_second must be a number >= 0.001".into());
        }
        if self.burst == 0 {
            errors.push("rate_limit.burst must be at least 1".into());
        }
        if self.max_clients == 0 {
            errors.push("rate_limit.max_clients must be at least 1".into());
        }
        errors
    }
}
