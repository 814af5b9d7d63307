//! The service's Redis: one server through a bb8 pool (`redis.mode = "single"`), or a Redis
//! Cluster through one multiplexed cluster connection (`"cluster"`), plain or TLS (`rediss://`,
//! rustls with the ring provider, verified against `redis.ca_file` or the platform's roots).
//!
//! `RedisPool::get` hands out a connection that implements `redis::aio::ConnectionLike` in both
//! modes, so a caller sends the same commands, scripts and pipelines either way. What a caller
//! must do for a cluster is keep every key of one script call or pipeline in one hash slot.
//!
//! At start a server that answers TCP but refuses the TLS handshake (an unknown CA, a name the
//! certificate does not cover) is a configuration error and stops the start; a server that
//! cannot be reached at all is not (the outbox keeps events until it is back), as before.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::pools::PoolView;
use crate::settings::{RedisMode, RedisSettings};

/// Why Redis could not be set up or reached. Never names a URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum RedisConnError {
    #[error("redis: cannot read redis.ca_file: {0}")]
    CaFile(std::io::Error),
    #[error("redis: invalid client configuration: {0}")]
    Config(RedisError),
    #[error("redis: TLS connection to {server} failed: {reason}")]
    Tls { server: String, reason: String },
    #[error("redis: {0}")]
    Pool(#[from] bb8::RunError<RedisError>),
    #[error("redis: {0}")]
    Connect(RedisError),
    #[error("redis cluster: no seed node answered within {0:?}")]
    ClusterTimeout(Duration),
}

/// A connection manager for bb8 over a `redis::Client` (plain or built with TLS certificates):
/// a multiplexed connection with our timeouts, checked with PING on check-out.
pub struct Manager {
    client: redis::Client,
    config: AsyncConnectionConfig,
}

impl bb8::ManageConnection for Manager {
    type Connection = MultiplexedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        self.client.get_multiplexed_async_connection_with_config(&self.config).await
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query_async::<String>(conn).await.map(|_| ())
    }

    fn has_broken(&self, _: &mut Self::Connection) -> bool {
        false
    }
}

/// Redis as the service uses it; cheap to clone.
#[derive(Clone)]
pub struct RedisPool {
    inner: Inner,
    /// One client per configured server (the URL, or each seed), for pub/sub subscriptions.
    subscribers: Arc<Vec<Server>>,
    max_size: u32,
}

#[derive(Clone)]
struct Server {
    /// `rediss://`.
    tls: bool,
    host: String,
    port: u16,
    client: redis::Client,
}

#[derive(Clone)]
enum Inner {
    Single(bb8::Pool<Manager>),
    /// Connected on first use (so the service starts while the cluster is away), then shared:
    /// the connection is multiplexed and reconnects and follows slot moves on its own.
    Cluster(Arc<Cluster>),
}

struct Cluster {
    client: redis::cluster::ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
    timeout: Duration,
}

/// A connection checked out of `RedisPool`.
pub enum RedisConn<'a> {
    Single(bb8::PooledConnection<'a, Manager>),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => (**conn).req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => (**conn).req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => (**conn).get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Replies slower than this fail the call (a `WAIT` gets its own timeout on top).
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

impl RedisPool {
    /// Sets up the pool (single) or the cluster client (cluster). Connects once to check TLS:
    /// a reachable server whose TLS handshake fails is an error; an unreachable one is not.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, RedisConnError> {
        crate::tls::install_crypto_provider();
        let root_cert = match settings.ca_file.as_str() {
            "" => None,
            path => Some(std::fs::read(path).map_err(RedisConnError::CaFile)?),
        };
        let certs = || redis::TlsCertificates { client_tls: None, root_cert: root_cert.clone() };
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let response_timeout = RESPONSE_TIMEOUT + Duration::from_millis(settings.wait_timeout_ms);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        let mut subscribers = Vec::new();
        for url in settings.server_urls() {
            let client = match root_cert {
                Some(_) => redis::Client::build_with_tls(url, certs()),
                None => redis::Client::open(url),
            }
            .map_err(RedisConnError::Config)?;
            let (host, port) = host_port(url);
            subscribers.push(Server { tls: url.starts_with("rediss:"), host, port, client });
        }
        let inner = match settings.mode {
            RedisMode::Single => {
                let manager = Manager { client: subscribers[0].client.clone(), config: config.clone() };
                let pool = crate::pools::builder(settings.pool_size, connect_timeout)
                    .build(manager)
                    .await
                    .map_err(RedisConnError::Connect)?;
                Inner::Single(pool)
            }
            RedisMode::Cluster => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(settings.server_urls())
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout)
                    // The publisher retries through its breaker; a short retry here only rides
                    // out a slot move (MOVED / ASK) or a reconnect.
                    .retries(2);
                if root_cert.is_some() {
                    builder = builder.certs(certs());
                }
                let client = builder.build().map_err(RedisConnError::Config)?;
                // The seeds one after the other, each within the connect timeout, and some slack.
                let timeout = connect_timeout * (subscribers.len() as u32 + 1);
                Inner::Cluster(Arc::new(Cluster { client, conn: tokio::sync::OnceCell::new(), timeout }))
            }
        };
        let pool = Self { inner, subscribers: Arc::new(subscribers), max_size: settings.pool_size };
        pool.check_servers(&config, connect_timeout).await?;
        Ok(pool)
    }

    /// One connection for one call (or a few): a pooled connection, or the shared cluster one.
    pub async fn get(&self) -> Result<RedisConn<'_>, RedisConnError> {
        match &self.inner {
            Inner::Single(pool) => Ok(RedisConn::Single(pool.get().await?)),
            Inner::Cluster(cluster) => {
                let Cluster { client, conn, timeout } = &**cluster;
                let conn = conn
                    .get_or_try_init(|| async {
                        match tokio::time::timeout(*timeout, client.get_async_connection()).await {
                            Ok(result) => result.map_err(RedisConnError::Connect),
                            Err(_) => Err(RedisConnError::ClusterTimeout(*timeout)),
                        }
                    })
                    .await?;
                Ok(RedisConn::Cluster(conn.clone()))
            }
        }
    }

    /// A pub/sub connection: to the server in single mode; in cluster mode to the first seed that
    /// answers (a cluster propagates every PUBLISH to all its nodes, so any node hears them all).
    pub async fn subscriber(&self) -> Result<redis::aio::PubSub, RedisConnError> {
        let mut last = None;
        for server in self.subscribers.iter() {
            match server.client.get_async_pubsub().await {
                Ok(pubsub) => return Ok(pubsub),
                Err(e) => {
                    tracing::debug!(server = %server.name(), error = %e, "redis pub/sub: server did not answer");
                    last = Some(e);
                }
            }
        }
        Err(RedisConnError::Connect(last.expect("at least one server (validated)")))
    }

    /// The pool's statistics in single mode; `None` in cluster mode (one multiplexed connection
    /// per cluster node, no pool).
    pub fn pool_view(&self) -> Option<PoolView> {
        match &self.inner {
            Inner::Single(pool) => Some(PoolView::new("redis", self.max_size, pool.state())),
            Inner::Cluster(_) => None,
        }
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }

    /// Connects to the first configured server that accepts TCP and PINGs it. A TLS server that
    /// accepts TCP and then fails is an error (wrong CA, wrong name: never worth retrying); any
    /// other failure is logged and left to the publisher's retries.
    async fn check_servers(
        &self,
        config: &AsyncConnectionConfig,
        connect_timeout: Duration,
    ) -> Result<(), RedisConnError> {
        for server in self.subscribers.iter() {
            let tcp = tokio::time::timeout(
                connect_timeout,
                tokio::net::TcpStream::connect((server.host.trim_matches(['[', ']']), server.port)),
            )
            .await;
            if !matches!(tcp, Ok(Ok(_))) {
                tracing::warn!(server = %server.name(), "redis server unreachable at start; events wait in the outbox");
                continue;
            }
            let probe = async {
                let mut conn = server.client.get_multiplexed_async_connection_with_config(config).await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            return match probe.await {
                Ok(_) => Ok(()),
                Err(e) if server.tls => Err(RedisConnError::Tls { server: server.name(), reason: e.to_string() }),
                Err(e) => {
                    tracing::warn!(server = %server.name(), error = %e, "redis server did not answer PING at start");
                    Ok(())
                }
            };
        }
        Ok(())
    }
}

impl Server {
    /// `host:port`, without credentials.
    fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Host and port of a Redis URL (validated before), never its credentials.
fn host_port(url: &str) -> (String, u16) {
    match url::Url::parse(url) {
        Ok(u) => (u.host_str().unwrap_or("?").to_string(), u.port().unwrap_or(6379)),
        Err(_) => ("?".into(), 6379),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_never_carry_credentials() {
        assert_eq!(host_port("rediss://user:secret@cache.example:6380/0"), ("cache.example".into(), 6380));
        assert_eq!(host_port("redis://:secret@10.0.0.1"), ("10.0.0.1".into(), 6379));
        assert_eq!(host_port("redis://u:p@[::1]:7000"), ("[::1]".into(), 7000));
    }
}
