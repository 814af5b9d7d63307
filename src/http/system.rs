//! `/api/v1/system`: what an operator checks first when something is wrong — circuit breakers,
//! connection pools, devices, event delivery.

use actix_web::{web, HttpResponse};

use crate::service::Service;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/system", web::get().to(system));
}

async fn system(service: web::Data<Service>) -> HttpResponse {
    let (accepted, delivered) = service.publisher_counts();
    let devices: Vec<_> = service
        .pipeline
        .devices()
        .into_iter()
        .map(|(name, alive)| serde_json::json!({ "name": name, "alive": alive }))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "breakers": service.breakers(),
        "pools": service.pools(),
        "devices": devices,
        "cameras": service.pipeline.cameras().len(),
        "events": { "accepted": accepted, "delivered": delivered, "pending": accepted.saturating_sub(delivered) },
    }))
}
