//! TLS to PostgreSQL: `sslmode=verify-full` against a server of the test's own that serves a
//! certificate of the test's CA for `localhost`. The service works over it (every connection
//! encrypted, as the server's pg_stat_ssl shows); a CA that did not sign the certificate, or a host
//! name the certificate does not carry, stops the service at start with a message naming
//! PostgreSQL and the TLS reason.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bb8_postgres::tokio_postgres;
use common::tls::TestCa;
use common::{OwnPostgres, Service, TestEnv};

/// Runs `its-analytics serve` with these settings and waits for it to exit (it must, at start);
/// its exit status and log.
fn serve_until_exit(env: &TestEnv, url: &str, ca_file: &std::path::Path) -> (std::process::ExitStatus, String) {
    let log = std::env::temp_dir().join(format!("{}-refused.log", env.name));
    let mut child = Command::new(common::binary())
        .arg("serve")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ITS__HTTP__BIND", format!("127.0.0.1:{}", common::free_port()))
        .env("ITS__POSTGRES__URL", url)
        .env("ITS__POSTGRES__CA_FILE", ca_file)
        .env("ITS__REDIS__URL", common::redis_url())
        .env("ITS__REDIS__KEY_PREFIX", env.key_prefix())
        .env("ITS__OUTBOX__PATH", env.outbox())
        .env("ITS__AUTH__TOKENS_FILE", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokens.toml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, std::fs::read_to_string(&log).unwrap_or_default());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the service kept running:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn the_service_talks_to_postgres_over_verified_tls_only() {
    let ca = TestCa::new();
    let mut pg = OwnPostgres::start().await;
    pg.enable_tls(&ca);
    pg.stop();
    pg.restart().await;
    let env = TestEnv::new().await;
    let url = format!("postgres://postgres@localhost:{}/its_tls?sslmode=verify-full", pg.port);
    let ca_file = ca.ca_pem().display().to_string();
    let svc = Service::start_with(&env, &[("ITS__POSTGRES__URL", &url), ("ITS__POSTGRES__CA_FILE", &ca_file)]).await;
    let client = common::client();
    common::overpass_until_a_few_events(&client, &svc).await;
    let camera: serde_json::Value =
        client.get(svc.url("/api/v1/cameras/overpass")).send().await.unwrap().json().await.unwrap();
    assert_eq!(camera["id"], "overpass", "{camera}");
    let listed = common::eventually("events stored over TLS", Duration::from_secs(60), || async {
        let page: serde_json::Value =
            client.get(svc.url("/api/v1/events?camera_id=overpass")).send().await.ok()?.json().await.ok()?;
        let n = page["events"].as_array()?.len();
        (n > 0).then_some(n)
    })
    .await;
    eprintln!("{listed} events listed back over TLS");

    // The server's view: every connection of the service's database is TLS.
    let (admin, connection) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl), min(s.version) FROM pg_stat_activity a
             JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'its_tls'",
            &[],
        )
        .await
        .unwrap();
    let (all, encrypted, version): (i64, i64, Option<String>) = (row.get(0), row.get(1), row.get(2));
    eprintln!("{all} connections, {encrypted} over TLS ({version:?})");
    assert!(all >= 2, "the pool and the LISTEN connection at least: {all}");
    assert_eq!(all, encrypted, "every connection of the service is encrypted");
    drop(svc);

    // A CA that did not sign the server's certificate.
    let stranger = TestCa::new();
    let (status, log) = serve_until_exit(&env, &url, &stranger.ca_pem());
    assert!(!status.success(), "{log}");
    assert!(log.contains("postgres") && log.contains("invalid peer certificate"), "{log}");
    // (The stranger's CA has the same name as the real one: the signature is what fails.)
    eprintln!("refused: {}", log.lines().find(|l| l.contains("invalid peer certificate")).unwrap_or_default());

    // The right CA, but a host name the certificate does not name.
    let by_address = format!("postgres://postgres@127.0.0.1:{}/its_tls?sslmode=verify-full", pg.port);
    let (status, log) = serve_until_exit(&env, &by_address, &ca.ca_pem());
    assert!(!status.success(), "{log}");
    assert!(log.contains("postgres") && log.contains("not valid for name"), "{log}");
    eprintln!("refused: {}", log.lines().find(|l| l.contains("not valid for name")).unwrap_or_default());
}

#[tokio::test]
async fn modes_that_could_fall_back_to_plain_text_are_refused() {
    let env = TestEnv::new().await;
    let url = "postgres://postgres:secret@localhost:1/its?sslmode=require";
    let (status, log) = serve_until_exit(&env, url, std::path::Path::new(""));
    assert!(!status.success(), "{log}");
    assert!(log.contains("postgres.url has sslmode=require") && log.contains("verify-full"), "{log}");
    assert!(!log.contains("secret"), "{log}");
}
