//! TLS for the service's clients (PostgreSQL, Redis): rustls with one process-wide crypto
//! provider, ring (pure Rust and assembly, no cmake). rustls 0.23.4x deprecates ring's provider
//! only because its post-quantum key exchange is aws-lc-rs's.

/// Installs ring as the process's default provider. Idempotent, and harmless when another part
/// of the process installed one first.
#[allow(deprecated)]
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
