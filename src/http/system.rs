//! `/api/v1/system`: what an operator checks first when something is wrong — circuit breakers,
//! connection pools, devices and their models, the supervision tree, event delivery.

use actix_web::{web, HttpResponse};

use crate::service::Service;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/system", web::get().to(system));
}

async fn system(service: web::Data<Service>) -> HttpResponse {
    let cameras: Vec<_> = service.pipeline.cameras().into_iter().map(|(_, status)| status.breaker.view()).collect();
    HttpResponse::Ok().json(serde_json::json!({
        "breakers": service.breakers(),
        "pools": service.pools(),
        "devices": service.pipeline.devices().await,
        "supervisor": {
            "children": service.pipeline.children(),
            "escalated": service.escalation(),
            "cameras": { "children": service.pipeline.camera_children() },
        },
        "cameras": cameras.len(),
        "camera_breakers": cameras,
        "events": service.delivery(),
    }))
}
