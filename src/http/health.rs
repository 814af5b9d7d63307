//! Liveness, readiness and Prometheus metrics.

use actix_web::{web, HttpResponse};

use crate::service::Service;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

/// The process answers: nothing more (a failing dependency must not get it restarted).
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "live" }))
}

/// Ready when PostgreSQL and Redis answer, neither's circuit breaker is open, and every device's
/// inference thread runs its model.
async fn ready(service: web::Data<Service>) -> HttpResponse {
    let postgres = service.db.ping().await.map_err(|e| e.to_string());
    let redis = service.redis_ping().await.map_err(|e| e.to_string());
    let devices = service.pipeline.devices();
    let model_ok = !devices.is_empty() && devices.iter().all(|(_, alive, _)| *alive);
    let devices: Vec<_> = devices.into_iter().map(|(name, alive, _)| serde_json::json!({ "name": name, "alive": alive })).collect();
    let check = |r: &Result<(), String>| match r {
        Ok(()) => serde_json::json!({ "ok": true }),
        Err(e) => serde_json::json!({ "ok": false, "error": e }),
    };
    let breakers = service.breakers();
    // An open breaker only changes state at its next call; once its open period is over it no
    // longer holds readiness back (the pings above say whether the dependency is back).
    let open_for = service.settings.breakers.open_for_ms as f64 / 1e3;
    let breakers_closed = breakers.iter().all(|b| {
        b.state != crate::supervision::BreakerState::Open || b.opened_secs_ago.is_some_and(|age| age >= open_for)
    });
    let ok = postgres.is_ok() && redis.is_ok() && model_ok && breakers_closed;
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": {
            "postgres": check(&postgres),
            "redis": check(&redis),
            "model": { "ok": model_ok, "devices": devices },
            "breakers": { "ok": breakers_closed, "breakers": breakers },
        }
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(service: web::Data<Service>) -> HttpResponse {
    service.refresh_scraped_metrics();
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(service.metrics.encode())
}
