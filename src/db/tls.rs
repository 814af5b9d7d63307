//! Where and how to reach a PostgreSQL server: its parsed URL and the one TLS connector type every
//! connection uses (the pools, the cluster's LISTEN connection, the admin connection that creates
//! the database).
//!
//! `sslmode=verify-full` (split off before tokio-postgres parses the URL, which knows no such mode)
//! means TLS is required and rustls verifies the chain against `postgres.ca_file` (or the
//! platform's roots) and the URL's host name against the certificate. Absent or `disable`: plain
//! TCP, the connector is never asked to do anything.

use std::path::Path;
use std::sync::Arc;

use bb8_postgres::tokio_postgres::config::SslMode;
use bb8_postgres::tokio_postgres::{self, Client, Connection, Socket};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::DbError;
use crate::settings::{read_pem_certs, split_sslmode, PgTlsMode};

/// The connector of every PostgreSQL connection of the process.
pub type PgTls = MakeRustlsConnect;
/// A connection's stream: plain or TLS, as the mode says.
pub type PgStream = <PgTls as MakeTlsConnect<Socket>>::Stream;

/// A server to connect to: the parsed URL (its `sslmode` applied) and the connector.
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: PgTls,
    pub mode: PgTlsMode,
}

impl PgTarget {
    /// Parses `url` (`key` names it in errors, which never echo it) and builds its connector:
    /// for `verify-full`, trust roots from `ca_file` or else the platform's store.
    pub fn new(key: &str, url: &str, ca_file: Option<&Path>) -> Result<Self, DbError> {
        let (url, mode) = split_sslmode(key, url).map_err(DbError::Config)?;
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| DbError::Config(format!("{key} is not a valid PostgreSQL URL: {e}")))?;
        config.ssl_mode(match mode {
            PgTlsMode::Disable => SslMode::Disable,
            PgTlsMode::VerifyFull => SslMode::Require,
        });
        Ok(Self { config, tls: connector(mode, ca_file)?, mode })
    }

    /// One connection outside the pools; the caller polls (spawns) the connection.
    pub async fn connect(&self) -> Result<(Client, Connection<Socket, PgStream>), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// The rustls connector. With TLS off it is still built (one type for every connection) but has no
/// roots and is never used: tokio-postgres does not start TLS when the mode is `disable`.
fn connector(mode: PgTlsMode, ca_file: Option<&Path>) -> Result<PgTls, DbError> {
    crate::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    if mode == PgTlsMode::VerifyFull {
        match ca_file {
            Some(path) => {
                for cert in read_pem_certs(path).map_err(|e| DbError::Tls(format!("postgres.ca_file {e}")))? {
                    roots.add(cert).map_err(|e| DbError::Tls(format!("postgres.ca_file: {e}")))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err(DbError::Tls(
                        "the platform's trust store has no certificate: set postgres.ca_file".into(),
                    ));
                }
            }
        }
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
