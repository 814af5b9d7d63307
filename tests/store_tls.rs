//! TLS to Redis: a real `redis-server` that speaks TLS only, its certificate from a test CA and
//! valid for `localhost` only. The service publishes through `rediss://localhost` with
//! `redis.ca_file`; trusting another CA, or naming the server by an address its certificate does
//! not cover, stops the start with an error that names Redis and the TLS reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bb8_redis::redis;
use common::tls::TestCa;
use common::{Service, TestEnv};
use serde_json::json;

/// `redis-server` with TLS on a free port and no plain-text port; killed on drop.
struct TlsRedis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    async fn start(ca: &TestCa) -> Self {
        let port = common::free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--tls-cert-file")
            .arg(ca.server_cert())
            .arg("--tls-key-file")
            .arg(ca.server_key())
            .arg("--tls-ca-cert-file")
            .arg(ca.ca_pem())
            .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server with TLS");
        common::wait_listening("redis-server (TLS)", port).await;
        Self { port, child, _dir: dir }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn simulator() -> [(&'static str, &'static str); 2] {
    [("ITS__SIMULATOR__ENABLED", "true"), ("ITS__MODEL__PATH", "models/no-such-model.pt")]
}

#[tokio::test]
async fn the_service_publishes_over_tls_with_its_ca() {
    let ca = TestCa::new();
    let server = TlsRedis::start(&ca).await;
    let env = TestEnv::new().await;
    let url = format!("rediss://localhost:{}", server.port);
    let ca_file = ca.ca_pem().display().to_string();
    let mut settings = vec![("ITS__REDIS__URL", url.as_str()), ("ITS__REDIS__CA_FILE", ca_file.as_str())];
    settings.extend(simulator());
    let svc = Service::start_with(&env, &settings).await;
    let client = common::client();
    let body = json!({
        "id": "tls-cam", "url": "sim://tls-cam?crossings_per_min=120", "fps": 5.0,
        "geometry": { "lines": [{ "id": "l1", "a": [0, 180], "b": [640, 180] }] },
    });
    let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let db = env.db().await;
    common::eventually("a few events", Duration::from_secs(60), || async {
        let n: i64 = db.query_one("SELECT count(*) FROM events", &[]).await.ok()?.get(0);
        (n >= 5).then_some(())
    })
    .await;
    let r = client.get(svc.url("/api/v1/cameras/tls-cam/state")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "the cached state, read back over TLS");
    let (status, log) = svc.terminate();
    assert!(status.success(), "{log}");

    let mut rows: Vec<String> =
        db.query("SELECT event_id FROM events", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    rows.sort();
    its_analytics::tls::install_crypto_provider();
    let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(std::fs::read(ca.ca_pem()).unwrap()) };
    let mut conn = redis::Client::build_with_tls(url, certs).unwrap().get_multiplexed_async_connection().await.unwrap();
    assert_eq!(common::stream_event_ids(&mut conn, env.key_prefix()).await, rows, "every event once, over TLS");
}

/// Starts the binary against `url` trusting `ca_file`; it must exit on its own, non-zero.
async fn start_fails(env: &TestEnv, url: &str, ca_file: &Path) -> String {
    let mut command = Command::new(common::binary());
    command
        .arg("serve")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ITS__HTTP__BIND", format!("127.0.0.1:{}", common::free_port()))
        .env("ITS__POSTGRES__URL", &env.postgres_url)
        .env("ITS__REDIS__URL", url)
        .env("ITS__REDIS__CA_FILE", ca_file)
        .env("ITS__REDIS__KEY_PREFIX", env.key_prefix())
        .env("ITS__OUTBOX__PATH", env.outbox())
        .env("ITS__AUTH__TOKENS_FILE", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokens.toml"))
        .envs(simulator())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the service did not stop on a TLS failure");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{stderr}")).to_string();
    eprintln!("{error}");
    assert!(error.contains("redis: TLS connection to"), "{error}");
    error
}

#[tokio::test]
async fn another_ca_or_another_name_stops_the_start() {
    let ca = TestCa::new();
    let server = TlsRedis::start(&ca).await;
    let env = TestEnv::new().await;

    let stranger = TestCa::new();
    let error = start_fails(&env, &format!("rediss://localhost:{}", server.port), &stranger.ca_pem()).await;
    // Both CAs have the same name: rustls finds "the" issuer and its signature does not match.
    assert!(error.contains(&format!("localhost:{}", server.port)), "{error}");
    assert!(error.contains("invalid peer certificate"), "{error}");

    let error = start_fails(&env, &format!("rediss://127.0.0.1:{}", server.port), &ca.ca_pem()).await;
    assert!(error.contains("invalid peer certificate") && error.contains("not valid for name"), "{error}");
}
