//! The disaster-recovery drills of docs/OPERATIONS.md, with real PostgreSQL servers of the test's
//! own and the real binary counting `sim://` cameras (the detector is not what is tested here):
//!
//! - Restore: a base backup plus the WAL archive replace a primary that is destroyed while events
//!   flow; the service, pointed at the same address, delivers what it buffered meanwhile.
//! - Second region: the primary's side (its PostgreSQL and one node) is lost, the streaming
//!   standby is promoted and the surviving node restarted against it.
//!
//! Each drill prints its recovery time and the data lost (the restore drill then puts the lost
//! events back from the Redis stream with `backfill-events`), which the closing note and
//! docs/OPERATIONS.md report against the brief's targets (4 minutes, 1 minute of data).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use bb8_postgres::tokio_postgres::{self, NoTls};
use common::{OwnPostgres, Service, TestEnv};
use serde_json::json;

const CAMERAS: usize = 4;
/// What the drills configure, as docs/OPERATIONS.md recommends: a WAL segment is archived at
/// least this often, which bounds the data a restore loses.
const ARCHIVE_TIMEOUT_S: u64 = 30;

fn camera_ids() -> Vec<String> {
    (0..CAMERAS).map(|i| format!("dr-{i}")).collect()
}

async fn register_cameras(client: &reqwest::Client, svc: &Service) {
    for id in camera_ids() {
        let body = json!({
            "id": id,
            "url": format!("sim://{id}?crossings_per_min=300"),
            "fps": 5,
            "geometry": { "lines": [{ "id": "l1", "a": [0, 180], "b": [640, 180] }] },
        });
        let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    }
}

/// The settings every drill node runs with: the simulator instead of the model, and breakers
/// that try again after a second.
fn node_settings<'a>(postgres_url: &'a str, node: &'a str, outbox: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("ITS__POSTGRES__URL", postgres_url),
        ("ITS__NODE__ID", node),
        ("ITS__OUTBOX__PATH", outbox),
        ("ITS__SIMULATOR__ENABLED", "true"),
        ("ITS__MODEL__PATH", "models/no-such-model.pt"),
        ("ITS__BREAKERS__OPEN_FOR_MS", "1000"),
    ]
}

fn outbox_path(env: &TestEnv, node: &str) -> String {
    std::env::temp_dir().join(format!("{}-{node}.outbox.redb", env.name)).display().to_string()
}

/// Connects, retrying while the server is starting or recovering.
async fn connect(url: &str) -> tokio_postgres::Client {
    common::eventually("PostgreSQL to accept the test's connection", Duration::from_secs(60), || async {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.ok()?;
        tokio::spawn(connection);
        Some(client)
    })
    .await
}

/// Waits until every camera has `events` events from frames after `since`.
async fn until_events_since(db: &tokio_postgres::Client, since: SystemTime, events: i64) {
    common::eventually("events from every camera", Duration::from_secs(180), || async {
        let row = db
            .query_one(
                "SELECT count(*) FROM (SELECT camera_id FROM events WHERE ts > $1 GROUP BY camera_id
                 HAVING count(*) >= $2) AS counting",
                &[&since, &events],
            )
            .await
            .ok()?;
        (row.get::<_, i64>(0) as usize == CAMERAS).then_some(())
    })
    .await;
}

/// Waits until every camera has an event from a frame after `since`: the cameras count again.
async fn until_counting_since(db: &tokio_postgres::Client, since: SystemTime) {
    until_events_since(db, since, 1).await;
}

/// Event id -> frame time of every event in PostgreSQL.
async fn stored_events(db: &tokio_postgres::Client) -> std::collections::BTreeMap<String, SystemTime> {
    let rows = db.query("SELECT event_id, ts FROM events", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The events the Redis stream holds but PostgreSQL lost, with their frame times (from the
/// stream entries' JSON). Also checks that PostgreSQL holds nothing the stream does not.
async fn lost_events(env: &TestEnv, stored: &std::collections::BTreeMap<String, SystemTime>) -> Vec<SystemTime> {
    let mut redis = env.redis().await;
    let published: BTreeSet<String> =
        common::stream_event_ids(&mut redis, env.key_prefix()).await.into_iter().collect();
    let unpublished: Vec<_> = stored.keys().filter(|id| !published.contains(*id)).collect();
    assert!(unpublished.is_empty(), "events in PostgreSQL that never reached the stream: {unpublished:?}");
    let entries: Vec<(String, Vec<(String, String)>)> = bb8_redis::redis::cmd("XRANGE")
        .arg(format!("{}:events", env.key_prefix()))
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut lost = Vec::new();
    for (_, fields) in entries {
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
        if stored.contains_key(&field("event_id")) {
            continue;
        }
        let event: serde_json::Value = serde_json::from_str(&field("data")).unwrap();
        let ts = chrono::DateTime::parse_from_rfc3339(event["ts"].as_str().unwrap()).unwrap();
        lost.push(SystemTime::from(ts));
    }
    lost.sort();
    lost
}

/// Runs `its-analytics backfill-events --since SINCE` against the test's stores; its JSON report.
fn backfill_events(env: &TestEnv, postgres_url: &str, since: &str) -> serde_json::Value {
    let output = std::process::Command::new(common::binary())
        .args(["backfill-events", "--since", since])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ITS__POSTGRES__URL", postgres_url)
        .env("ITS__REDIS__URL", common::redis_url())
        .env("ITS__REDIS__KEY_PREFIX", env.key_prefix())
        .output()
        .expect("run backfill-events");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "backfill-events failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("backfill-events report: {e}; {stderr}"))
}

fn seconds_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map(|d| d.as_secs_f64()).unwrap_or_else(|e| -e.duration().as_secs_f64())
}

/// Base backup, events flowing, the primary destroyed (its data directory deleted, so the WAL
/// not yet archived is gone), a new server restored from the backup and the archive at the same
/// address. The service buffers what it emits meanwhile in its outbox and delivers it; what is
/// lost is what the old primary had acknowledged after its last archived segment.
#[tokio::test]
async fn restore_drill_replaces_a_destroyed_primary_from_base_backup_and_wal_archive() {
    let env = TestEnv::new().await;
    let archive = common::postgres_owned_dir();
    let a = archive.path().display();
    let archiving = format!("archive_mode = on\narchive_command = 'test ! -f {a}/%f && cp %p {a}/%f'");
    let mut primary = OwnPostgres::start_with(&format!("{archiving}\narchive_timeout = '{ARCHIVE_TIMEOUT_S}s'")).await;
    let url = primary.url("its");
    let outbox = outbox_path(&env, "node-a");
    let svc = Service::start_with(&env, &node_settings(&url, "node-a", &outbox)).await;
    let client = common::client();
    register_cameras(&client, &svc).await;
    let db = connect(&url).await;
    until_counting_since(&db, SystemTime::UNIX_EPOCH).await;

    let backup = primary.base_backup();
    let backup_done = SystemTime::now();
    // Events go on; wait until a segment written after the backup is archived (archive_timeout
    // at the latest), so the restore must replay the archive to have them.
    let segments = |dir: &std::path::Path| {
        std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().len() == 24).count()
    };
    let archived_at_backup = segments(archive.path());
    common::eventually("a segment archived after the backup", Duration::from_secs(2 * ARCHIVE_TIMEOUT_S), || async {
        (segments(archive.path()) > archived_at_backup).then_some(())
    })
    .await;
    // Then more events, which only the primary's own WAL holds until the next segment switch.
    let stored_then = stored_events(&db).await.len();
    common::eventually("more events after the archived segment", Duration::from_secs(60), || async {
        (stored_events(&db).await.len() >= stored_then + 100).then_some(())
    })
    .await;
    drop(db);

    let crashed_at = SystemTime::now();
    let started = Instant::now();
    primary.crash();
    std::fs::remove_dir_all(primary.data()).unwrap();
    let restored = OwnPostgres::restored(primary.port, &backup.path().join(""), archive.path()).await;
    let restore_time = started.elapsed();
    let db = connect(&url).await;
    until_counting_since(&db, crashed_at).await;
    let recovery_time = started.elapsed();

    // A graceful stop delivers everything the outbox still holds.
    let (status, log) = svc.terminate();
    assert!(status.success(), "{log}");
    let stored = stored_events(&db).await;
    let lost = lost_events(&env, &stored).await;
    let replayed = stored.values().filter(|ts| **ts > backup_done && **ts < crashed_at).count();
    assert!(replayed > 0, "the restore replayed no archived WAL past the base backup");
    let buffered = stored.values().filter(|ts| **ts >= crashed_at).count();
    assert!(buffered > 0, "nothing emitted during the outage reached the restored server");
    let lost_window = lost.first().map_or(0.0, |first| seconds_between(*first, crashed_at));
    assert!(lost.iter().all(|ts| *ts < crashed_at), "an event emitted after the crash was lost");
    assert!(
        lost_window <= (ARCHIVE_TIMEOUT_S + 15) as f64,
        "lost {} events over {lost_window:.1} s, more than archive_timeout allows",
        lost.len()
    );
    eprintln!(
        "restore drill: restored server up {:.1} s after the crash, every camera counting into it after {:.1} s; \
         lost {} of {} events, the last {lost_window:.1} s before the crash (archive_timeout {ARCHIVE_TIMEOUT_S} s); \
         {replayed} events replayed from the archive past the base backup, {buffered} buffered by the outbox",
        restore_time.as_secs_f64(),
        recovery_time.as_secs_f64(),
        lost.len(),
        stored.len() + lost.len(),
    );

    // The events lost are still in the Redis stream: the backfill puts them back, once.
    let since = chrono::DateTime::<chrono::Utc>::from(backup_done).to_rfc3339();
    for (run, expected) in [(1, lost.len() as u64), (2, 0)] {
        let report = backfill_events(&env, &url, &since);
        assert_eq!(report["inserted"], expected, "backfill run {run}: {report}");
        assert_eq!(report["unreadable"], 0, "{report}");
    }
    let stored = stored_events(&db).await;
    assert!(lost_events(&env, &stored).await.is_empty(), "events still missing after the backfill");
    eprintln!("restore drill: backfill-events put the {} lost events back; none missing", lost.len());
    drop(restored);
}

/// Two regions: region A holds the primary PostgreSQL and node A, region B the streaming standby
/// and node B; both nodes share the cameras (one cluster, writing to the primary). Region A is
/// lost at once (node A killed, its PostgreSQL crashed); the standby is promoted and node B
/// restarted against it with the same outbox. Node B counts every camera again, and delivers what
/// it buffered; what is lost is what the primary acknowledged and had not yet streamed.
#[tokio::test]
async fn region_drill_promotes_the_standby_and_the_surviving_node_counts_every_camera_again() {
    let env = TestEnv::new().await;
    let mut primary = OwnPostgres::start().await;
    let primary_url = primary.url("its");
    let (outbox_a, outbox_b) = (outbox_path(&env, "node-a"), outbox_path(&env, "node-b"));
    let node_a = Service::start_with(&env, &node_settings(&primary_url, "node-a", &outbox_a)).await;
    // The standby after the service created its database: the base backup holds it.
    let standby = OwnPostgres::standby_of(&primary).await;
    let standby_url = standby.url("its");
    let node_b = Service::start_with(&env, &node_settings(&primary_url, "node-b", &outbox_b)).await;
    let client = common::client();
    register_cameras(&client, &node_a).await;
    let db = connect(&primary_url).await;
    // Both nodes count for a while (20 crossings a camera, about 4 s), streaming to the standby.
    until_events_since(&db, SystemTime::UNIX_EPOCH, 20).await;
    drop(db);

    let lost_at = SystemTime::now();
    let started = Instant::now();
    let _ = node_a.kill();
    primary.crash();
    standby.promote();
    let promoted = started.elapsed();
    let _ = node_b.kill();
    let node_b = Service::start_with(&env, &node_settings(&standby_url, "node-b", &outbox_b)).await;
    let switched = started.elapsed();
    let db = connect(&standby_url).await;
    until_counting_since(&db, lost_at).await;
    let counting = started.elapsed();

    let (status, log) = node_b.terminate();
    assert!(status.success(), "{log}");
    let stored = stored_events(&db).await;
    let lost = lost_events(&env, &stored).await;
    let lost_window = lost.first().map_or(0.0, |first| seconds_between(*first, lost_at));
    assert!(lost.iter().all(|ts| *ts < lost_at), "an event emitted after the loss was lost");
    assert!(lost_window < 60.0, "lost {} events over {lost_window:.1} s", lost.len());
    // Node A's outbox survived on its volume here: started again against the new primary, it
    // delivers what it had not (these were late, not lost).
    let before_loss =
        |events: &std::collections::BTreeMap<String, SystemTime>| events.values().filter(|ts| **ts < lost_at).count();
    let node_a = Service::start_with(&env, &node_settings(&standby_url, "node-a", &outbox_a)).await;
    let (status, log) = node_a.terminate();
    assert!(status.success(), "{log}");
    let late = before_loss(&stored_events(&db).await) - before_loss(&stored);
    eprintln!(
        "region drill: standby promoted {:.1} s after the loss, node B restarted against it at {:.1} s, every camera \
         counting on node B at {:.1} s; lost {} of {} events (the last {lost_window:.1} s before the loss); \
         node A's outbox, brought back, delivered {late} more",
        promoted.as_secs_f64(),
        switched.as_secs_f64(),
        counting.as_secs_f64(),
        lost.len(),
        stored.len() + lost.len(),
    );
}
