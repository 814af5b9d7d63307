//! PostgreSQL at scale: daily partitions and retention (`[retention]`), and the indexes of every
//! history query of the API, checked with EXPLAIN on ten million generated events.

mod common;

use std::time::{Duration, Instant};

use bb8_postgres::tokio_postgres;
use chrono::{DateTime, Days, NaiveDate, Utc};
use common::{OwnPostgres, Service, TestEnv};
use its_analytics::db::{Db, EventFilter, AGGREGATES_SQL, EVENTS_PAGE_SQL};
use its_analytics::events::EventRecord;
use its_analytics::settings::RetentionSettings;
use tokio_postgres::types::ToSql;

async fn today(sql: &tokio_postgres::Client) -> NaiveDate {
    sql.query_one("SELECT (now() AT TIME ZONE 'UTC')::date", &[]).await.unwrap().get(0)
}

fn noon(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(12, 0, 0).unwrap().and_utc()
}

fn event_json(id: &str, kind: &str, ts: DateTime<Utc>) -> String {
    let detail = if kind == "line_crossing" {
        r#""track_id": 1, "class": "car", "line_id": "l1", "direction": "in""#
    } else {
        r#""incident_id": "i-1", "zone_id": "z1", "class": "car""#
    };
    format!(
        r#"{{"event_id": "{id}", "camera_id": "cam-1", "type": "{kind}", "ts": "{}", "frame_seq": 1,
            "geometry_version": 1, {detail}}}"#,
        ts.to_rfc3339()
    )
}

async fn exists(sql: &tokio_postgres::Client, table: &str) -> bool {
    sql.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await.unwrap().get(0)
}

async fn event_ids(sql: &tokio_postgres::Client) -> Vec<String> {
    let rows = sql.query("SELECT event_id FROM events ORDER BY event_id", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn retention_drops_old_partitions_and_keeps_incidents_as_long_as_asked() {
    let env = TestEnv::new().await;
    let db = Db::connect(&env.postgres_url, 2, Duration::from_secs(5)).await.unwrap();
    let sql = env.db().await;
    let today = today(&sql).await;
    let ago = |days: u64| today - Days::new(days);
    // The migration made today's partitions and a week ahead; days gone by had theirs made then.
    for (table, key) in its_analytics::db::partitions::PARTITIONED {
        for days in [40, 20, 3] {
            let made: bool = sql
                .query_one("SELECT its_ensure_day_partition($1, $2, $3)", &[&table, &key, &ago(days)])
                .await
                .unwrap()
                .get(0);
            assert!(made);
        }
    }
    let events = [
        ("crossing-40", "line_crossing", 40),
        ("incident-40", "incident_opened", 40),
        ("crossing-20", "line_crossing", 20),
        ("incident-20", "incident_closed", 20),
        ("crossing-3", "line_crossing", 3),
        // No partition for that day (a replay long after): the default partition takes it.
        ("crossing-100", "line_crossing", 100),
    ];
    let json: Vec<String> = events.iter().map(|(id, kind, days)| event_json(id, kind, noon(ago(*days)))).collect();
    let records: Vec<EventRecord> = json.iter().map(|j| EventRecord::parse(j.as_bytes()).unwrap()).collect();
    assert_eq!(db.insert_events(&records).await.unwrap(), 6);
    assert_eq!(db.insert_events(&records).await.unwrap(), 0, "a replay writes nothing twice");
    let in_default: i64 = sql.query_one("SELECT count(*) FROM events_default", &[]).await.unwrap().get(0);
    assert_eq!(in_default, 1);
    for days in [40, 3] {
        sql.execute("INSERT INTO analytics_1m VALUES ('cam-1', $1, 1, 'l1', 0, 'line', '{}')", &[&noon(ago(days))])
            .await
            .unwrap();
    }

    // Another node doing the round: this one skips it.
    let other = env.db().await;
    other.execute("SELECT pg_advisory_lock($1)", &[&0x17_5a_11_7d_i64]).await.unwrap();
    let retention = RetentionSettings { events_days: 30, minute_rows_days: 30, incidents_days: 60 };
    assert_eq!(db.maintain(&retention).await.unwrap(), None);
    other.execute("SELECT pg_advisory_unlock($1)", &[&0x17_5a_11_7d_i64]).await.unwrap();

    let started = Instant::now();
    let done = db.maintain(&retention).await.unwrap().expect("the lock is free");
    eprintln!("maintenance round: {:?}, {done:?}", started.elapsed());
    let day = |table: &str, days: u64| format!("{table}_p{}", ago(days).format("%Y%m%d"));
    assert_eq!(done.dropped, vec![day("events", 40), day("analytics_1m", 40)]);
    assert_eq!((done.incidents_kept, done.incidents_deleted, done.default_rows_deleted), (1, 0, 1));
    assert!(done.created.is_empty(), "the migration made them: {:?}", done.created);
    for table in ["events", "analytics_1m"] {
        assert!(!exists(&sql, &day(table, 40)).await);
        assert!(exists(&sql, &day(table, 20)).await);
        let week_ahead = format!("{table}_p{}", (today + Days::new(7)).format("%Y%m%d"));
        assert!(exists(&sql, &week_ahead).await, "{week_ahead}");
    }
    assert_eq!(event_ids(&sql).await, ["crossing-20", "crossing-3", "incident-20", "incident-40"]);
    let minute_rows: i64 = sql.query_one("SELECT count(*) FROM analytics_1m", &[]).await.unwrap().get(0);
    assert_eq!(minute_rows, 1);
    // The API still lists the kept incident, in time order with the rest.
    let page = db.events(&EventFilter { limit: 10, ..Default::default() }).await.unwrap();
    let ids: Vec<&str> = page.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["incident-40", "crossing-20", "incident-20", "crossing-3"]);

    // Shorter incident retention: they go, in batches, wherever they are.
    let retention = RetentionSettings { incidents_days: 10, ..retention };
    let done = db.maintain(&retention).await.unwrap().unwrap();
    assert_eq!((done.dropped.len(), done.incidents_deleted), (0, 2), "{done:?}");
    assert_eq!(event_ids(&sql).await, ["crossing-20", "crossing-3"]);

    // Keeping for ever (the defaults) drops nothing.
    let forever = RetentionSettings { events_days: 0, minute_rows_days: 0, incidents_days: 0 };
    let done = db.maintain(&forever).await.unwrap().unwrap();
    assert_eq!(done, Default::default());
}

/// Ten million events over 60 days and 1,000 cameras (and minute rows of 1,000 cameras for three
/// days): every statement the API runs is EXPLAINed with the parameters a client would send, and
/// must read the daily partitions through an index.
#[tokio::test]
async fn every_api_query_uses_an_index_on_ten_million_events() {
    const DAYS: u64 = 60;
    const PER_DAY: i64 = 10_000_000 / DAYS as i64;
    let env = TestEnv::new().await;
    let db = Db::connect(&env.postgres_url, 2, Duration::from_secs(5)).await.unwrap();
    let sql = env.db().await;
    let today = today(&sql).await;
    sql.batch_execute("SET maintenance_work_mem = '256MB'; SET synchronous_commit = off").await.unwrap();
    let started = Instant::now();
    // Each day's partition filled while detached and unlogged (no WAL, no index maintenance per
    // row), then attached: attaching builds its indexes in one sort each.
    for day in 1..=DAYS {
        let day = today - Days::new(day);
        let name = format!("events_p{}", day.format("%Y%m%d"));
        let lo = format!("{} 00:00:00+00", day.format("%Y-%m-%d"));
        let hi = format!("{} 00:00:00+00", (day + Days::new(1)).format("%Y-%m-%d"));
        sql.batch_execute(&format!(
            "CREATE UNLOGGED TABLE {name} (LIKE events INCLUDING DEFAULTS);
             INSERT INTO {name} (event_id, camera_id, type, ts, frame_seq, payload)
             SELECT '{name}-' || i, 'cam-' || (i % 1000),
                    CASE WHEN i % 500 = 7 THEN 'incident_opened' ELSE 'line_crossing' END,
                    '{lo}'::timestamptz + (i - 1) * interval '1 second' * (86400.0 / {PER_DAY}), i, '{{}}'
             FROM generate_series(1, {PER_DAY}) AS i;
             ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}');"
        ))
        .await
        .unwrap();
    }
    let generated = started.elapsed();
    for day in 1..=3 {
        let day = today - Days::new(day);
        sql.execute("SELECT its_ensure_day_partition('analytics_1m', 'interval_start', $1)", &[&day]).await.unwrap();
    }
    sql.batch_execute(
        "INSERT INTO analytics_1m (camera_id, interval_start, geometry_version, element_id, stream_epoch_ms,
                                   element_kind, measures)
         SELECT 'cam-' || c, date_trunc('minute', now()) - m * interval '1 minute', 1, 'l1', 0, 'line', '{}'
         FROM generate_series(0, 999) AS c, generate_series(0, 3 * 1440 - 1) AS m;
         ANALYZE events; ANALYZE analytics_1m;",
    )
    .await
    .unwrap();
    let count: i64 = sql.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert_eq!(count, PER_DAY * DAYS as i64);
    eprintln!("generated {count} events in {generated:?}; minute rows and ANALYZE after {:?}", started.elapsed());

    let none_text: Option<String> = None;
    let none_ts: Option<DateTime<Utc>> = None;
    let camera = Some("cam-7".to_string());
    let incidents = Some("incident_opened".to_string());
    let (from, to) = (Some(noon(today - Days::new(30))), Some(noon(today - Days::new(29))));
    let after_ts = Some(noon(today - Days::new(45)));
    let after_id = Some(format!("events_p{}-5", (today - Days::new(45)).format("%Y%m%d")));
    let limit = 100_i64;
    type Params<'a> = [&'a (dyn ToSql + Sync); 7];
    let pages: [(&str, Params); 7] = [
        ("first page", [&none_text, &none_text, &none_ts, &none_ts, &none_ts, &none_text, &limit]),
        ("one camera", [&camera, &none_text, &none_ts, &none_ts, &none_ts, &none_text, &limit]),
        ("one type (incidents)", [&none_text, &incidents, &none_ts, &none_ts, &none_ts, &none_text, &limit]),
        ("camera and type", [&camera, &incidents, &none_ts, &none_ts, &none_ts, &none_text, &limit]),
        ("a day", [&none_text, &none_text, &from, &to, &none_ts, &none_text, &limit]),
        ("a camera's day", [&camera, &none_text, &from, &to, &none_ts, &none_text, &limit]),
        ("next page (cursor)", [&none_text, &none_text, &none_ts, &none_ts, &after_ts, &after_id, &limit]),
    ];
    let explain = |query: &'static str| format!("EXPLAIN (ANALYZE, BUFFERS) {query}");
    let mut failures = Vec::new();
    // The partitions that hold rows (those of today and ahead are empty: any scan of them is free).
    let full = |table: &str, days: std::ops::RangeInclusive<u64>| -> Vec<String> {
        days.map(|d| format!("{table}_p{} ", (today - Days::new(d)).format("%Y%m%d"))).collect()
    };
    let event_partitions = full("events", 1..=DAYS);
    for (what, params) in &pages {
        let plan = plan_text(&sql, &explain(EVENTS_PAGE_SQL), params).await;
        check(what, &plan, &event_partitions, &mut failures);
    }
    let (day_from, day_to) = (noon(today - Days::new(2)), noon(today - Days::new(1)));
    let plan = plan_text(&sql, &explain(AGGREGATES_SQL), &[&"cam-7", &day_from, &day_to]).await;
    let minute_partitions = full("analytics_1m", 0..=3);
    check("analytics history (a camera's day of minute rows)", &plan, &minute_partitions, &mut failures);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    drop(db);
}

async fn plan_text(sql: &tokio_postgres::Client, query: &str, params: &[&(dyn ToSql + Sync)]) -> String {
    let rows = sql.query(query, params).await.unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

/// Prints the query's time; a sequential scan of a partition that holds rows is a failure.
fn check(what: &str, plan: &str, partitions: &[String], failures: &mut Vec<String>) {
    let time = plan.lines().find(|l| l.contains("Execution Time")).unwrap_or("no execution time").trim();
    eprintln!("{what}: {time}");
    let seq_scan = partitions.iter().any(|p| plan.contains(&format!("Seq Scan on {p}")));
    if seq_scan || !plan.contains("Index") {
        failures.push(format!("{what} does not use an index:\n{plan}"));
    }
}

/// The API's history reads come from the read replica: with its replay paused, an event written to
/// the primary stays out of the API's list until replay resumes; writes (a camera registration)
/// and the cameras' reads stay on the primary and work throughout.
#[tokio::test]
async fn api_history_reads_come_from_the_read_replica() {
    let primary = OwnPostgres::start().await;
    let replica = OwnPostgres::standby_of(&primary).await;
    let env = TestEnv::new().await;
    let svc = Service::start_with(
        &env,
        &[
            ("ITS__POSTGRES__URL", &primary.url("its_replica")),
            ("ITS__POSTGRES__READ_URL", &replica.url("its_replica")),
        ],
    )
    .await;
    let connect = |url: String| async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    let (on_primary, on_replica) =
        (connect(primary.url("its_replica")).await, connect(replica.url("its_replica")).await);
    let client = common::client();
    let listed = |camera: &'static str| {
        let (client, url) = (client.clone(), svc.url(&format!("/api/v1/events?camera_id={camera}")));
        async move {
            let page: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
            Some(page["events"].as_array()?.iter().filter_map(|e| e["event_id"].as_str().map(String::from)).collect())
        }
    };
    let insert = |id: &'static str| {
        let json = event_json(id, "line_crossing", Utc::now());
        let on_primary = &on_primary;
        async move {
            on_primary
                .execute(
                    "INSERT INTO events (event_id, camera_id, type, ts, frame_seq, payload)
                     VALUES ($1, 'cam-1', 'line_crossing', now(), 1, $2::text::jsonb)",
                    &[&id, &json],
                )
                .await
                .unwrap();
        }
    };

    insert("before-pause").await;
    let started = Instant::now();
    common::eventually("the replica to show the first event", Duration::from_secs(20), || async {
        let ids: Vec<String> = listed("cam-1").await?;
        (ids == ["before-pause"]).then_some(())
    })
    .await;
    eprintln!("an event reached the API through the replica in {:?}", started.elapsed());

    on_replica.execute("SELECT pg_wal_replay_pause()", &[]).await.unwrap();
    common::eventually("replay to pause", Duration::from_secs(20), || async {
        let state: String = on_replica.query_one("SELECT pg_get_wal_replay_pause_state()", &[]).await.ok()?.get(0);
        (state == "paused").then_some(())
    })
    .await;
    insert("while-paused").await;
    let on_primary_now: i64 = on_primary.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert_eq!(on_primary_now, 2);
    let ids: Vec<String> = listed("cam-1").await.unwrap();
    assert_eq!(ids, ["before-pause"], "the API reads the (paused) replica");
    // Writes and camera reads go to the primary meanwhile.
    let body = serde_json::json!({
        "id": "overpass",
        "url": format!("file://{}", common::clip("overpass_video03.avi").display()),
        "replay": { "realtime": false }
    });
    assert_eq!(client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap().status().as_u16(), 201);
    let camera = client.get(svc.url("/api/v1/cameras/overpass")).send().await.unwrap();
    assert_eq!(camera.status().as_u16(), 200);

    on_replica.execute("SELECT pg_wal_replay_resume()", &[]).await.unwrap();
    common::eventually("the replica to catch up", Duration::from_secs(20), || async {
        let ids: Vec<String> = listed("cam-1").await?;
        (ids == ["before-pause", "while-paused"]).then_some(())
    })
    .await;
    let metrics = client.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pool=\"postgres_read\""), "the replica's pool is reported");
}
