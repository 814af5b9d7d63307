//! Who is calling: the identity the authentication middleware admits a request with, which
//! handlers, logs and the rate limiter read.

use std::sync::Arc;

use crate::access::Role;

/// Who is calling: the token's name (never the token) and its role. In the request extensions
/// of every admitted non-open request; handlers take it as `web::ReqData<Caller>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
    pub role: Role,
}

impl Caller {
    /// The name given to every request when auth is disabled. Not a valid token name, so it can
    /// never collide with a configured one.
    pub const ANONYMOUS: &'static str = "(anonymous)";

    pub fn anonymous() -> Self {
        Self { name: Self::ANONYMOUS.into(), role: Role::Admin }
    }

    /// True when auth is disabled: the name identifies no one (the rate limiter keys by IP then).
    pub fn is_anonymous(&self) -> bool {
        &*self.name == Self::ANONYMOUS
    }
}
