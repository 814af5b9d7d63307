//! `/api/v1/cameras/{id}/analytics`: measures history from PostgreSQL, per element and interval.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::analytics::rollup::{roll_up, ElementSeries, Interval};
use crate::service::{Service, ServiceError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cameras/{id}/analytics", web::get().to(history));
}

/// Longest range one request may cover: minute rows are read and merged per request.
fn max_range_days(interval: Interval) -> i64 {
    match interval {
        Interval::Minute => 2,
        Interval::Quarter | Interval::Hour => 31,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// RFC 3339; default `to` minus one hour.
    from: Option<DateTime<Utc>>,
    /// RFC 3339, exclusive; default now.
    to: Option<DateTime<Utc>>,
    /// `1m` (default), `15m` or `1h`.
    interval: Option<String>,
}

#[derive(Serialize)]
struct HistoryView {
    camera_id: String,
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    elements: Vec<ElementSeries>,
}

async fn history(
    service: web::Data<Service>,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    super::cameras::check_id(&id)?;
    let mut problems = Vec::new();
    let interval = match query.interval.as_deref() {
        None => Interval::Minute,
        Some(text) => Interval::parse(text).unwrap_or_else(|| {
            problems.push(format!("interval {text:?} is not one of 1m, 15m, 1h"));
            Interval::Minute
        }),
    };
    // Times beyond the years 0000-9999 are refused before any arithmetic on them (chrono reads
    // times so early that an hour before them cannot be held: a panic).
    let times_ok = super::events::check_range(query.from, query.to, &mut problems);
    let to = query.to.unwrap_or_else(Utc::now);
    let from = query.from.or_else(|| to.checked_sub_signed(Duration::hours(1))).unwrap_or(to);
    if times_ok && from >= to {
        problems.push("from must be before to".into());
    } else if times_ok && to - from > Duration::days(max_range_days(interval)) {
        problems.push(format!(
            "at interval {} the range may cover at most {} days",
            interval.label(),
            max_range_days(interval)
        ));
    }
    if !problems.is_empty() {
        return Err(ServiceError::Invalid(problems).into());
    }
    // Whole intervals: a quarter asked from 10:07 starts at 10:00.
    let from = interval.start_of(from);
    let rows = service.db.aggregates(&id, from, to).await.map_err(ServiceError::from)?;
    if rows.is_empty() && service.pipeline.camera(&id).is_none() {
        return Err(ApiError::NotFound(format!("camera {id} not found and no history in that range")));
    }
    Ok(HttpResponse::Ok().json(HistoryView {
        camera_id: id.into_inner(),
        interval,
        from,
        to,
        elements: roll_up(rows, interval),
    }))
}
