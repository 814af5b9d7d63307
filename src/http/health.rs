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
/// inference thread runs a model whose breaker is not open. After a fallback at start the
/// service is ready (it serves) and `checks.model.fallback` names the version serving and why.
/// Cameras whose breaker is not closed are listed but do not make the service unready.
async fn ready(service: web::Data<Service>) -> HttpResponse {
    let postgres = service.db.ping().await.map_err(|e| e.to_string());
    let redis = service.redis_ping().await.map_err(|e| e.to_string());
    let devices = service.pipeline.devices().await;
    // An open breaker only changes state at its next call; once its open period is over it no
    // longer holds readiness back (the pings and the next model call say whether all is well).
    let open_for = service.settings.breakers.open_for_ms as f64 / 1e3;
    let holds = |b: &crate::supervision::BreakerView| {
        b.state == crate::supervision::BreakerState::Open && b.opened_secs_ago.is_none_or(|age| age < open_for)
    };
    // A device serves when its inference thread runs and its model's breaker does not hold it.
    let model_ok = !devices.is_empty() && devices.iter().all(|d| d.alive && !holds(&d.model_breaker));
    // Shown, not judged: one dead camera does not make the service unready.
    let open_cameras: Vec<_> = service
        .pipeline
        .cameras()
        .into_iter()
        .filter(|(_, status)| status.breaker.state() != crate::supervision::BreakerState::Closed)
        .map(|(spec, status)| serde_json::json!({ "camera": spec.id, "breaker": status.breaker.state() }))
        .collect();
    let check = |r: &Result<(), String>| match r {
        Ok(()) => serde_json::json!({ "ok": true }),
        Err(e) => serde_json::json!({ "ok": false, "error": e }),
    };
    let breakers = service.breakers();
    let breakers_closed = !breakers.iter().any(holds);
    let ok = postgres.is_ok() && redis.is_ok() && model_ok && breakers_closed;
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": {
            "postgres": check(&postgres),
            "redis": check(&redis),
            // A fallback at start serves (ready), and says which version and why.
            "model": { "ok": model_ok, "devices": devices, "fallback": service.pipeline.models().fallback() },
            "breakers": { "ok": breakers_closed, "breakers": breakers },
            "cameras": { "breakers_not_closed": open_cameras },
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
