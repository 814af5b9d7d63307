//! `/api/v1/events`: event history from PostgreSQL with cursor paging, and the live stream of
//! events as Server-Sent Events (from the Redis channels, so every node's events are seen).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use futures::StreamExt;
use serde::Deserialize;

use super::error::ApiError;
use crate::db::EventFilter;
use crate::ids::is_valid_id;
use crate::service::{Service, ServiceError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::get().to(list)).route("/events/stream", web::get().to(stream));
}

pub const EVENT_TYPES: [&str; 4] = ["line_crossing", "incident_opened", "incident_updated", "incident_closed"];
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// An SSE comment this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    camera_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Problems with the filters shared by the list and the stream.
fn check_filters(camera_id: Option<&str>, kind: Option<&str>, problems: &mut Vec<String>) {
    if camera_id.is_some_and(|id| !is_valid_id(id)) {
        problems.push("camera_id must be 1-64 characters of A-Z a-z 0-9 _ -".into());
    }
    if let Some(kind) = kind.filter(|k| !EVENT_TYPES.contains(k)) {
        problems.push(format!("type {kind:?} is not one of {}", EVENT_TYPES.join(", ")));
    }
}

/// Times the API takes: the years 0000 to 9999 that RFC 3339 writes. chrono also reads six-digit
/// and negative years, and PostgreSQL answers those before 4713 BC with an error, not with no rows.
pub(super) fn in_time_range(t: DateTime<Utc>) -> bool {
    (0..=9999).contains(&t.year())
}

/// Problems with the `from` and `to` of a query; true when there were none.
pub(super) fn check_range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>, problems: &mut Vec<String>) -> bool {
    let mut ok = true;
    for (name, t) in [("from", from), ("to", to)] {
        if t.is_some_and(|t| !in_time_range(t)) {
            problems.push(format!("{name} must be a time in the years 0000 to 9999"));
            ok = false;
        }
    }
    ok
}

/// A cursor is the (ts, event_id) of the last event of a page: `{unix micros}.{event_id}`.
fn encode_cursor(ts: DateTime<Utc>, event_id: &str) -> String {
    format!("{}.{event_id}", ts.timestamp_micros())
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    let (micros, id) = cursor.split_once('.')?;
    let ts = DateTime::from_timestamp_micros(micros.parse().ok()?).filter(|ts| in_time_range(*ts))?;
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then(|| (ts, id.to_string()))
}

async fn list(service: web::Data<Service>, query: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let mut problems = Vec::new();
    check_filters(query.camera_id.as_deref(), query.kind.as_deref(), &mut problems);
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        problems.push(format!("limit must be in 1..={MAX_PAGE}"));
    }
    if let (true, Some(from), Some(to)) = (check_range(query.from, query.to, &mut problems), query.from, query.to) {
        if from >= to {
            problems.push("from must be before to".into());
        }
    }
    let after = match query.cursor.as_deref() {
        None => None,
        Some(c) => decode_cursor(c).or_else(|| {
            problems.push("cursor is not one this API returned".into());
            None
        }),
    };
    if !problems.is_empty() {
        return Err(ServiceError::Invalid(problems).into());
    }
    let filter =
        EventFilter { camera_id: query.camera_id, kind: query.kind, from: query.from, to: query.to, after, limit };
    let events = service.db.events(&filter).await.map_err(ServiceError::from)?;
    let next_cursor =
        (events.len() == limit as usize).then(|| events.last().map(|e| encode_cursor(e.ts, &e.event_id))).flatten();
    let payloads: Vec<&serde_json::Value> = events.iter().map(|e| &e.payload).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": payloads, "next_cursor": next_cursor })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    camera_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Live events as `text/event-stream`: `id` = event id, `event` = type, `data` = the event JSON.
/// Each client gets its own Redis subscription and a bounded buffer: a client that falls
/// `http.sse_buffer` frames behind is disconnected (the pipeline never waits for it), and so is
/// every client when Redis goes away; `GET /api/v1/events` fills the gap after reconnecting.
async fn stream(service: web::Data<Service>, query: web::Query<StreamQuery>) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let mut problems = Vec::new();
    check_filters(query.camera_id.as_deref(), query.kind.as_deref(), &mut problems);
    if !problems.is_empty() {
        return Err(ServiceError::Invalid(problems).into());
    }
    let unavailable = |e: bb8_redis::redis::RedisError| ApiError::from(ServiceError::Redis(e.to_string()));
    // Single: the server; cluster: the first seed that answers (PUBLISH reaches every node).
    let mut pubsub =
        service.redis.subscriber().await.map_err(|e| ApiError::from(ServiceError::Redis(e.to_string())))?;
    match &query.camera_id {
        Some(id) => pubsub.subscribe(service.keys.camera_channel(id)).await.map_err(unavailable)?,
        None => pubsub.psubscribe(service.keys.all_cameras_pattern()).await.map_err(unavailable)?,
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(service.settings.http.sse_buffer);
    let _ = tx.try_send(Bytes::from_static(b": connected\n\n"));
    actix_web::rt::spawn(forward(pubsub.into_on_message(), query.kind, tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (Ok::<_, actix_web::Error>(frame), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// Moves one subscription's messages into a client's buffer, with keep-alives, until the client
/// goes away, falls too far behind (its buffer refuses a frame: the stream ends rather than skip
/// one), or Redis ends the subscription.
async fn forward(
    mut messages: impl futures::Stream<Item = bb8_redis::redis::Msg> + Unpin,
    kind: Option<String>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        let frame = tokio::select! {
            message = messages.next() => match message {
                Some(message) => {
                    message.get_payload::<String>().ok().and_then(|json| sse_frame(&json, kind.as_deref()))
                }
                None => return,
            },
            _ = keepalive.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
            _ = tx.closed() => return,
        };
        if let Some(frame) = frame {
            if tx.try_send(frame).is_err() {
                tracing::info!("live event client too slow or gone; stream closed");
                return;
            }
        }
    }
}

/// One SSE frame for an event published on a camera channel, if it passes the type filter.
fn sse_frame(json: &str, kind: Option<&str>) -> Option<Bytes> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let event_type = value.get("type")?.as_str()?;
    if kind.is_some_and(|k| k != event_type) {
        return None;
    }
    let id = value.get("event_id")?.as_str()?;
    // The JSON is one line (serde_json never pretty-prints here), as SSE data needs.
    Some(Bytes::from(format!("id: {id}\nevent: {event_type}\ndata: {json}\n\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let ts = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = "0b3e9c1e-1d2f-5a6b-8c7d-9e0f1a2b3c4d";
        assert_eq!(decode_cursor(&encode_cursor(ts, id)), Some((ts, id.to_string())));
        // The last two are times chrono can hold but PostgreSQL cannot (or RFC 3339 cannot write).
        for bad in
            ["", "x.y", "12", "12.", "12.'; DROP TABLE events;--", "-8000000000000000000.ab", "8000000000000000000.ab"]
        {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_beyond_rfc_3339_years_are_refused() {
        let parse = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let mut problems = Vec::new();
        assert!(check_range(
            Some(parse("0000-01-01T00:00:00Z")),
            Some(parse("9999-12-31T23:59:59.999Z")),
            &mut problems
        ));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!check_range(
            Some(parse("-5000-01-01T00:00:00Z")),
            Some(parse("+20000-01-01T00:00:00Z")),
            &mut problems
        ));
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn sse_frames_carry_id_type_and_data() {
        let json = r#"{"event_id":"e1","type":"line_crossing","camera_id":"c"}"#;
        let frame = sse_frame(json, None).unwrap();
        assert_eq!(frame, Bytes::from(format!("id: e1\nevent: line_crossing\ndata: {json}\n\n")));
        assert!(sse_frame(json, Some("incident_opened")).is_none());
        assert!(sse_frame("not json", None).is_none());
    }
}
