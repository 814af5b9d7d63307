//! SIGTERM stops the service in order: cameras first, then every event already emitted is
//! delivered to Redis and PostgreSQL before the process exits.

mod common;

use bb8_redis::redis;
use common::{Service, TestEnv};

#[tokio::test]
async fn sigterm_delivers_every_emitted_event_before_exit() {
    let env = TestEnv::new().await;
    let svc = Service::start(&env).await;
    let http = common::client();
    // Stop mid-clip, while events are still being emitted.
    common::overpass_until_a_few_events(&http, &svc).await;

    let (status, log) = tokio::task::spawn_blocking(move || svc.terminate()).await.unwrap();
    assert!(status.success(), "exit {status:?}:\n{log}");
    let line = log.lines().find(|l| l.contains("shutdown: every event delivered")).unwrap_or_else(|| panic!("{log}"));
    let field = |name: &str| -> u64 {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[start..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let accepted = field("accepted");
    assert_eq!(accepted, field("delivered"));
    assert!(accepted >= 3);

    let rows: i64 = env.db().await.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert_eq!(rows as u64, accepted, "postgres rows");
    let mut redis = env.redis().await;
    let stream_len: u64 =
        redis::cmd("XLEN").arg(format!("{}:events", env.key_prefix())).query_async(&mut redis).await.unwrap();
    assert_eq!(stream_len, accepted, "redis stream entries");
}
