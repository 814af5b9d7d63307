//! The HTTP control API (actix-web): cameras and their geometry, analytics history, events
//! (history and live), health, metrics.

pub mod analytics;
pub mod cameras;
pub mod error;
pub mod events;
pub mod health;
pub mod system;

use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use crate::service::Service;
use error::ApiError;

/// Largest accepted request body: a camera with 64 lines fits many times over.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Routes and extractor settings, shared by the server and the tests.
pub fn configure(service: Arc<Service>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(service))
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY_BYTES)
                    .error_handler(|err, _req| ApiError::BadRequest(err.to_string()).into()),
            )
            .app_data(web::PathConfig::default().error_handler(|err, _req| ApiError::BadRequest(err.to_string()).into()))
            .app_data(web::QueryConfig::default().error_handler(|err, _req| ApiError::BadRequest(err.to_string()).into()))
            .configure(health::routes)
            .service(web::scope("/api/v1").configure(cameras::routes).configure(analytics::routes).configure(events::routes).configure(system::routes))
            .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(ApiError::NotFound("no such endpoint".into())) }));
    }
}

/// Binds and runs the server until it is stopped.
pub async fn serve(service: Arc<Service>) -> std::io::Result<()> {
    let bind = service.settings.http.bind.clone();
    tracing::info!(%bind, "control API listening");
    HttpServer::new(move || App::new().configure(configure(service.clone())))
        .bind(&bind)?
        .shutdown_timeout(5)
        .run()
        .await
}
