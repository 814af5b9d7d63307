//! Fixtures for integration tests: a database and Redis key prefix of the test's own, the real
//! service binary on a free port, the real clips.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod otlp;
pub mod redis_cluster;
pub mod tls;

use bb8_postgres::tokio_postgres::{self, NoTls};
use bb8_redis::redis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn admin_postgres_url() -> String {
    std::env::var("ITS_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("ITS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn clip(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/assets/video").join(name);
    path.canonicalize().unwrap_or_else(|e| panic!("test clip {} missing: {e}", path.display()))
}

/// Tokens of `tests/fixtures/tokens.toml`, which every test service loads.
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const OPERATOR_TOKEN: &str = "test-operator-token";
pub const VIEWER_TOKEN: &str = "test-viewer-token";

/// An HTTP client that presents the admin token on every request.
pub fn client() -> reqwest::Client {
    client_with_token(ADMIN_TOKEN)
}

pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// The folder of the real clips, which test services accept file cameras from.
pub fn assets_dir() -> PathBuf {
    clip("overpass_video03.avi").parent().unwrap().parent().unwrap().to_path_buf()
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_its-analytics")
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A database and a Redis key prefix that belong to one test; both removed on drop.
pub struct TestEnv {
    pub name: String,
    pub postgres_url: String,
}

impl TestEnv {
    pub async fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "its_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
        );
        let admin = admin_client().await;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");
        let base = admin_postgres_url();
        let postgres_url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
        Self { name, postgres_url }
    }

    pub fn key_prefix(&self) -> &str {
        &self.name
    }

    /// The durable outbox of this test's service: a restarted service finds what it left.
    pub fn outbox(&self) -> PathBuf {
        std::env::temp_dir().join(format!("{}.outbox.redb", self.name))
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.postgres_url, NoTls).await.expect("connect test db");
        tokio::spawn(conn);
        client
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.expect("connect redis")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.outbox());
        let name = self.name.clone();
        // Drop runs outside any runtime; clean up on a thread of its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let admin = admin_client().await;
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                let mut redis =
                    redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
                let keys: Vec<String> =
                    redis::cmd("KEYS").arg(format!("{name}:*")).query_async(&mut redis).await.unwrap_or_default();
                if !keys.is_empty() {
                    let _: () = redis::cmd("DEL").arg(keys).query_async(&mut redis).await.unwrap();
                }
            });
        })
        .join()
        .unwrap();
    }
}

async fn admin_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&admin_postgres_url(), NoTls).await.expect("connect admin postgres");
    tokio::spawn(conn);
    client
}

/// The real `its-analytics serve` process, configured for one test.
pub struct Service {
    child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Service {
    pub async fn start(env: &TestEnv) -> Self {
        Self::start_with(env, &[]).await
    }

    pub async fn start_with(env: &TestEnv, extra: &[(&str, &str)]) -> Self {
        let service = Self::spawn_with(env, extra);
        service.wait_ready().await;
        service
    }

    /// Starts the process without waiting for it to be ready (a start that is meant to fail).
    pub fn spawn_with(env: &TestEnv, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}-{port}.log", env.name));
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("ITS__HTTP__BIND", format!("127.0.0.1:{port}"))
            .env("ITS__POSTGRES__URL", &env.postgres_url)
            .env("ITS__REDIS__URL", redis_url())
            .env("ITS__REDIS__KEY_PREFIX", env.key_prefix())
            .env("ITS__OUTBOX__PATH", env.outbox())
            .env("ITS__CAMERAS__MEDIA_DIR", assets_dir())
            .env("ITS__AUTH__TOKENS_FILE", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokens.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("start its-analytics");
        Self { child, base: format!("http://127.0.0.1:{port}"), log }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/health/ready", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("service not ready in 60 s; log:\n{}", self.log_text());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit on its own; returns its log.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log_text());
            }
            assert!(Instant::now() < deadline, "service did not exit after SIGTERM:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown of any kind; returns the log.
    pub fn kill(mut self) -> String {
        self.child.kill().expect("SIGKILL the service");
        let _ = self.child.wait();
        self.log_text()
    }

    /// Waits until the process exits on its own (a crash loop stops it); its status and log.
    pub fn wait_exit(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log_text());
            }
            assert!(Instant::now() < deadline, "the service did not exit in {timeout:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log_text()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `timeout`. For
/// watching an external process over its API, where there is nothing to await.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until something accepts TCP connections on a loopback port (a server a test started).
pub async fn wait_listening(what: &str, port: u16) {
    eventually(what, Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
    })
    .await;
}

/// The value of an unlabelled metric in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// A model directory of the test's own: the real ONNX model as `yolox_nano.onnx` (to configure as
/// `model.path`) and `candidate.onnx`, the same network with another SHA-256 (a `doc_string`
/// field appended to the protobuf: the last one wins, the weights are untouched).
pub fn model_dir_with_candidate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/yolox_nano.onnx")).unwrap();
    std::fs::write(dir.path().join("yolox_nano.onnx"), &real).unwrap();
    let doc = b"candidate";
    let mut candidate = real;
    candidate.extend_from_slice(&[0x32, doc.len() as u8]);
    candidate.extend_from_slice(doc);
    std::fs::write(dir.path().join("candidate.onnx"), candidate).unwrap();
    dir
}

/// The worked example geometry of the overpass clip (lanes, calibration).
pub fn overpass_geometry() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/geometry/overpass_video03.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Registers the overpass clip as camera `overpass` (offline: as fast as the device takes
/// frames, none dropped) counted across y=150, and waits until it has emitted a few events.
pub async fn overpass_until_a_few_events(client: &reqwest::Client, svc: &Service) {
    let body = serde_json::json!({
        "id": "overpass",
        "url": format!("file://{}", clip("overpass_video03.avi").display()),
        "geometry": { "lines": [{ "id": "y150", "a": [0, 150], "b": [320, 150] }] },
        "replay": { "realtime": false }
    });
    let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    until_a_few_events(client, svc, "overpass").await;
}

/// Waits until camera `id` has emitted a few events.
pub async fn until_a_few_events(client: &reqwest::Client, svc: &Service, id: &str) {
    let path = format!("/api/v1/cameras/{id}");
    eventually("a few events", Duration::from_secs(120), || async {
        let c: serde_json::Value = client.get(svc.url(&path)).send().await.ok()?.json().await.ok()?;
        (c["status"]["events"].as_u64()? >= 3).then_some(())
    })
    .await;
}

/// A `redis-server` of the test's own on a free port, with an append-only file, so the test can
/// stop it and start it again without losing the stream.
pub struct OwnRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    pub async fn start() -> Self {
        let mut redis = Self { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        eventually("own redis-server to answer", Duration::from_secs(20), || async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
        })
        .await;
    }

    /// Stops the server the way an operator or an orchestrator would (SIGTERM).
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        child.wait().unwrap();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A PostgreSQL server of the test's own (`initdb` into a temporary directory, run as the
/// `postgres` user when the test runs as root), so the test can stop it and start it again.
pub struct OwnPostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    running: bool,
}

impl OwnPostgres {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// A new server with `conf` (postgresql.conf lines) added to its configuration.
    pub async fn start_with(conf: &str) -> Self {
        let mut pg = Self::new_dir();
        let status =
            pg.command("initdb").args(["-U", "postgres", "--auth=trust", "-D"]).arg(pg.data()).status().unwrap();
        assert!(status.success(), "initdb failed");
        pg.append_conf(conf);
        pg.restart().await;
        pg
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started and following it. The
    /// primary must allow replication connections, which `initdb`'s defaults do on loopback.
    pub async fn standby_of(primary: &OwnPostgres) -> Self {
        let mut pg = Self::new_dir();
        let status = pg
            .command("pg_basebackup")
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres", "-c", "fast", "-X", "stream"])
            .args(["-R", "-D"])
            .arg(pg.data())
            .status()
            .unwrap();
        assert!(status.success(), "pg_basebackup failed");
        pg.restart().await;
        pg
    }

    /// A base backup of this server (`pg_basebackup`, plain format, with the WAL it needs) in a
    /// new folder owned by the server's user.
    pub fn base_backup(&self) -> tempfile::TempDir {
        let backup = postgres_owned_dir();
        let status = self
            .command("pg_basebackup")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-c", "fast", "-X", "stream"])
            .arg("-D")
            .arg(backup.path().join("data"))
            .status()
            .unwrap();
        assert!(status.success(), "pg_basebackup failed");
        backup
    }

    /// A lost server's replacement at its address (`port`): `base_backup` (from
    /// [`OwnPostgres::base_backup`]) restored, every segment of the WAL `archive` replayed, then
    /// promoted. It accepts connections only once recovery is over (`hot_standby = off`), so no
    /// client writes to it while it is read-only.
    pub async fn restored(port: u16, base_backup: &std::path::Path, archive: &std::path::Path) -> Self {
        let mut pg = Self::new_dir();
        pg.port = port;
        let status = Command::new("cp").arg("-a").arg(base_backup.join("data")).arg(pg.data()).status().unwrap();
        assert!(status.success(), "copy the base backup");
        std::fs::write(pg.data().join("recovery.signal"), "").unwrap();
        pg.as_postgres_owner();
        pg.append_conf(&format!("restore_command = 'cp {}/%f %p'\nhot_standby = off", archive.display()));
        pg.restart().await;
        pg
    }

    fn new_dir() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb");
        let pg = Self { port: free_port(), dir: tempfile::tempdir().unwrap(), bin, running: false };
        pg.as_postgres_owner();
        pg
    }

    /// Adds lines to postgresql.conf; they apply at the next (re)start.
    pub fn append_conf(&self, conf: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(self.data().join("postgresql.conf")).unwrap();
        writeln!(file, "\n{conf}").unwrap();
    }

    /// Serves TLS with `ca`'s server certificate from the next (re)start.
    pub fn enable_tls(&self, ca: &tls::TestCa) {
        let (cert, key) = ca.install_server_files(&self.data());
        self.as_postgres_owner();
        self.append_conf(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'",
            cert.display(),
            key.display()
        ));
    }

    /// Promotes a standby to a primary and waits until it accepts writes.
    pub fn promote(&self) {
        let status = self.command("pg_ctl").arg("-D").arg(self.data()).args(["-w", "promote"]).status().unwrap();
        assert!(status.success(), "pg_ctl promote failed");
    }

    /// The test's own folder (the data directory is `data` in it), owned by `postgres` when the
    /// test runs as root.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A server tool (`psql`, `pg_basebackup`...) run as the server's owner, output discarded.
    pub fn tool(&self, tool: &str) -> Command {
        self.command(tool)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn is_root() -> bool {
        Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
    }

    /// PostgreSQL refuses to run as root: the directory goes to the `postgres` user.
    fn as_postgres_owner(&self) {
        if Self::is_root() {
            let status = Command::new("chown").args(["-R", "postgres:"]).arg(self.dir.path()).status().unwrap();
            assert!(status.success());
        }
    }

    fn command(&self, tool: &str) -> Command {
        let mut command = if Self::is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        };
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    pub async fn restart(&mut self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-o", &options, "start"])
            .status()
            .unwrap();
        // Even a start that timed out may have left a server running: Drop must stop it.
        self.running = true;
        assert!(status.success(), "pg_ctl start failed");
    }

    /// The server dies at once (SIGQUIT to every process), as in a lost machine: no checkpoint.
    pub fn crash(&mut self) {
        let status =
            self.command("pg_ctl").arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]).status().unwrap();
        assert!(status.success(), "pg_ctl stop -m immediate failed");
        self.running = false;
    }

    /// A fast shutdown, as an operator's restart or a failover would do it.
    pub fn stop(&mut self) {
        let status =
            self.command("pg_ctl").arg("-D").arg(self.data()).args(["-m", "fast", "-w", "stop"]).status().unwrap();
        assert!(status.success(), "pg_ctl stop failed");
        self.running = false;
    }
}

impl Drop for OwnPostgres {
    /// Never asserts (it may run while a failed test unwinds): an immediate stop, result ignored.
    fn drop(&mut self) {
        if self.running {
            let _ = self.command("pg_ctl").arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]).status();
        }
    }
}

/// An empty folder that the PostgreSQL server's user owns (a WAL archive, a base backup).
pub fn postgres_owned_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if OwnPostgres::is_root() {
        let status = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).status().unwrap();
        assert!(status.success());
    }
    dir
}

/// Waits until a camera's stream has ended; returns its counts view.
pub async fn counts_when_ended(client: &reqwest::Client, svc: &Service, camera_id: &str) -> serde_json::Value {
    let path = format!("/api/v1/cameras/{camera_id}/counts");
    eventually("the clip to end", Duration::from_secs(300), || async {
        let c: serde_json::Value = client.get(svc.url(&path)).send().await.ok()?.json().await.ok()?;
        (c["status"]["state"] == "ended").then_some(c)
    })
    .await
}

/// The `event_id` of every entry of the test's Redis events stream, sorted.
pub async fn stream_event_ids(conn: &mut impl redis::aio::ConnectionLike, key_prefix: &str) -> Vec<String> {
    // XRANGE: [[id, [field, value, ...]], ...]
    let entries: Vec<(String, Vec<String>)> =
        redis::cmd("XRANGE").arg(format!("{key_prefix}:events")).arg("-").arg("+").query_async(conn).await.unwrap();
    let mut ids: Vec<String> = entries
        .iter()
        .map(|(_, fields)| fields.chunks(2).find(|kv| kv[0] == "event_id").expect("an event_id field")[1].clone())
        .collect();
    ids.sort();
    ids
}

/// A tiny HTTP camera: serves the clip to a request that presents `user:password` by Basic auth,
/// 401 otherwise. Returns its port and how many authorised requests it served.
pub async fn camera_with_password(clip: Vec<u8>, basic: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let clip = clip.clone();
            let basic = basic.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 8192];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&request[..n]).to_ascii_lowercase();
                if head.contains(&format!("authorization: basic {}", basic.to_ascii_lowercase())) {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: video/x-msvideo\r\nContent-Length: {}\r\n\r\n",
                        clip.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.write_all(&clip).await;
                } else {
                    let reply = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\
                                 Content-Length: 0\r\n\r\n";
                    let _ = socket.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    (port, served)
}
