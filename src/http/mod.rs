//! The HTTP control API (actix-web): cameras and their geometry, analytics history, events
//! (history and live), health, metrics, the OpenAPI document of it all, and the operator console
//! (`console`, the browser page at `/`). Every request passes bearer-token authentication (`auth`)
//! and then the per-client rate limit (`rate_limit`).

pub mod analytics;
pub mod auth;
pub mod caller;
pub mod cameras;
pub mod cluster;
pub mod console;
pub mod drift;
pub mod error;
pub mod events;
pub mod health;
pub mod me;
pub mod models;
pub mod pictures;
pub mod rate_limit;
pub mod system;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::service::Service;
use crate::supervision::SystemClock;
use error::ApiError;

/// The OpenAPI 3 document of this API, served at `/api/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Routes and extractor settings.
pub fn configure(service: Arc<Service>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let max_body = service.settings.http.max_body_bytes;
        cfg.app_data(web::Data::from(service))
            .app_data(web::JsonConfig::default().limit(max_body).error_handler(|err, _req| ApiError::from(err).into()))
            .app_data(
                web::PathConfig::default().error_handler(|err, _req| ApiError::BadRequest(err.to_string()).into()),
            )
            .app_data(
                web::QueryConfig::default().error_handler(|err, _req| ApiError::BadRequest(err.to_string()).into()),
            )
            .configure(health::routes)
            .configure(console::routes)
            .route("/api/v1/openapi.json", web::get().to(openapi))
            .service(
                web::scope("/api/v1")
                    .configure(cameras::routes)
                    .configure(pictures::routes)
                    .configure(drift::routes)
                    .configure(analytics::routes)
                    .configure(events::routes)
                    .configure(system::routes)
                    .configure(cluster::routes)
                    .configure(me::routes)
                    .configure(models::routes),
            )
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::NotFound("no such endpoint".into()))
            }));
    }
}

/// The whole request, its body and handler included, within `http.request_timeout_ms` (the
/// server itself bounds only the request head): a client trickling its body, or a call stuck on
/// a dependency, is answered 408 instead of holding the connection. A streamed response (the
/// live event stream) is bounded only until it starts.
async fn within_time<B: MessageBody>(
    service: web::Data<Service>,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let limit = std::time::Duration::from_millis(service.settings.http.request_timeout_ms);
    match tokio::time::timeout(limit, next.call(req)).await {
        Ok(response) => response,
        // The request itself is inside the abandoned call: the answer is made from the error.
        Err(_) => {
            let body = serde_json::json!({ "error": "request not completed within http.request_timeout_ms" });
            Err(actix_web::error::InternalError::from_response(
                "request timeout",
                HttpResponse::RequestTimeout().json(body),
            )
            .into())
        }
    }
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(OPENAPI_JSON)
}

/// Binds and runs the server until it is stopped; `tokens` are the bearer tokens it accepts.
pub async fn serve(service: Arc<Service>, tokens: auth::TokenStore) -> anyhow::Result<()> {
    let settings = &service.settings;
    let bind = settings.http.bind.clone();
    let tokens = web::Data::new(tokens);
    // One limiter for all workers, or each worker would grant the whole rate.
    let limiter = web::Data::new(rate_limit::RateLimiter::new(settings.rate_limit.clone(), Arc::new(SystemClock)));
    let timeout = std::time::Duration::from_millis(settings.http.request_timeout_ms);
    if tokens.enabled() {
        tracing::info!(%bind, tokens = tokens.names().count(), "control API listening, bearer tokens required");
    } else {
        tracing::warn!(%bind, "control API listening WITHOUT authentication (auth.enabled = false)");
    }
    let watched = service.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(tokens.clone())
            .app_data(limiter.clone())
            // actix runs the last `wrap` first: the time limit, authentication, then the rate
            // limit per caller.
            .wrap(from_fn(rate_limit::limit))
            .wrap(from_fn(auth::authenticate))
            .wrap(from_fn(within_time))
            .configure(configure(service.clone()))
    })
    .client_request_timeout(timeout)
    .keep_alive(timeout)
    .bind(&bind)?
    .shutdown_timeout(5)
    .run();
    // A crash-looping child stops the server like a signal would; `main` then exits non-zero.
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        watched.escalated().await;
        handle.stop(true).await;
    });
    server.await?;
    Ok(())
}
