//! Faults injected into the real dependencies while a real camera runs: every event still
//! reaches PostgreSQL and the Redis stream exactly once, and the circuit breakers show the
//! outage in readiness and metrics while it lasts.

mod common;

use std::time::Duration;

use bb8_postgres::tokio_postgres;
use bb8_redis::redis;
use common::{OwnPostgres, OwnRedis, Service, TestEnv};
use serde_json::Value;

/// After an outage of `breaker`'s dependency: the clip ends, every event it emitted is delivered
/// and the breaker closes again. Returns the events emitted.
async fn recovered(client: &reqwest::Client, svc: &Service, breaker: &str) -> u64 {
    let counts = common::counts_when_ended(client, svc, "overpass").await;
    let emitted = counts["status"]["events"].as_u64().unwrap();
    assert!((26..=28).contains(&emitted), "{counts}");
    let closed = format!("its_breaker_state{{breaker=\"{breaker}\"}} 0");
    common::eventually("every event delivered and the breaker closed", Duration::from_secs(60), || async {
        let page = client.get(svc.url("/metrics")).send().await.ok()?.text().await.ok()?;
        let delivered = common::metric(&page, "its_events_published_total")? as u64 == emitted;
        (delivered && page.contains(&closed)).then_some(())
    })
    .await;
    emitted
}

/// Exactly once in PostgreSQL and in the Redis stream, the same ids in both.
async fn assert_delivered_once(
    db: &tokio_postgres::Client,
    redis: &mut redis::aio::MultiplexedConnection,
    key_prefix: &str,
    emitted: u64,
) {
    let mut rows: Vec<String> = db.query("SELECT event_id FROM events", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    rows.sort();
    assert_eq!(rows.len() as u64, emitted, "postgres rows");
    assert_eq!(common::stream_event_ids(redis, key_prefix).await, rows, "redis stream entries");
}

#[tokio::test]
async fn redis_stopped_for_thirty_seconds_mid_stream_loses_nothing() {
    let env = TestEnv::new().await;
    let mut own = OwnRedis::start().await;
    let url = own.url();
    let svc = Service::start_with(&env, &[("ITS__REDIS__URL", url.as_str()), ("ITS__BREAKERS__OPEN_FOR_MS", "1000")]).await;
    let client = common::client();
    common::overpass_until_a_few_events(&client, &svc).await;

    own.stop();
    let ready: Value = common::eventually("the redis breaker to open", Duration::from_secs(30), || async {
        let r = client.get(svc.url("/health/ready")).send().await.ok()?;
        let body: Value = r.json().await.ok()?;
        let redis = body["checks"]["breakers"]["breakers"].as_array()?.iter().find(|b| b["name"] == "redis")?.clone();
        (redis["state"] == "open").then_some(body)
    })
    .await;
    assert_eq!(ready["status"], "not_ready", "{ready}");
    let page = client.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("its_breaker_opens_total{breaker=\"redis\"} "), "{page}");
    assert!(!page.contains("its_breaker_state{breaker=\"redis\"} 0"), "{page}");
    // The camera goes on while Redis is away; what it emits waits, in order.
    tokio::time::sleep(Duration::from_secs(30)).await;
    own.restart().await;

    let emitted = recovered(&client, &svc, "redis").await;
    let ready = client.get(svc.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let log = svc.stop();
    assert!(log.contains("circuit breaker opened"), "{log}");

    let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    assert_delivered_once(&env.db().await, &mut conn, env.key_prefix(), emitted).await;
}

#[tokio::test]
async fn postgres_stopped_for_thirty_seconds_mid_stream_loses_nothing() {
    let env = TestEnv::new().await;
    let mut own = OwnPostgres::start().await;
    let url = own.url("its");
    let svc = Service::start_with(&env, &[("ITS__POSTGRES__URL", url.as_str()), ("ITS__BREAKERS__OPEN_FOR_MS", "1000")]).await;
    let client = common::client();
    common::overpass_until_a_few_events(&client, &svc).await;

    own.stop();
    common::eventually("the postgres breaker to open", Duration::from_secs(60), || async {
        let body: Value = client.get(svc.url("/api/v1/system")).send().await.ok()?.json().await.ok()?;
        let pg = body["breakers"].as_array()?.iter().find(|b| b["name"] == "postgres")?.clone();
        (pg["state"] == "open").then_some(())
    })
    .await;
    let ready = client.get(svc.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    tokio::time::sleep(Duration::from_secs(30)).await;
    own.restart().await;

    let emitted = recovered(&client, &svc, "postgres").await;
    let log = svc.stop();
    assert!(log.contains("circuit breaker opened"), "{log}");

    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    assert_delivered_once(&db, &mut env.redis().await, env.key_prefix(), emitted).await;
}

/// A file camera plays again from its start when the service starts again: the same events under
/// the same ids, and neither PostgreSQL nor the Redis stream takes any of them twice.
#[tokio::test]
async fn a_replay_after_a_restart_adds_no_event_twice() {
    let env = TestEnv::new().await;
    let client = common::client();
    let svc = Service::start(&env).await;
    common::overpass_until_a_few_events(&client, &svc).await;
    let emitted = recovered(&client, &svc, "redis").await;
    let (status, log) = svc.terminate();
    assert!(status.success(), "{log}");

    let svc = Service::start(&env).await;
    let again = recovered(&client, &svc, "redis").await;
    assert_eq!(again, emitted, "the replay emits the same events");
    assert_delivered_once(&env.db().await, &mut env.redis().await, env.key_prefix(), emitted).await;
}
