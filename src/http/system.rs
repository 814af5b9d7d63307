//! `/api/v1/system`: what an operator checks first when something is wrong — circuit breakers,
//! connection pools, devices, event delivery.

use actix_web::{web, HttpResponse};

use crate::service::Service;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/system", web::get().to(system));
}

async fn system(service: web::Data<Service>) -> HttpResponse {
    let devices: Vec<_> = service
        .pipeline
        .devices()
        .into_iter()
        .map(|(name, alive, batch_limit)| serde_json::json!({ "name": name, "alive": alive, "batch_limit": batch_limit }))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "breakers": service.breakers(),
        "pools": service.pools(),
        "devices": devices,
        "supervisor": { "children": service.pipeline.children(), "escalated": service.escalation() },
        "cameras": service.pipeline.cameras().len(),
        "events": service.delivery(),
    }))
}
