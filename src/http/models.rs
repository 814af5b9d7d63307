//! `/api/v1/models`: the model registry (admin only): versions, the one serving on each device,
//! transitions (from PostgreSQL: those of every node), and hot reload.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use crate::service::Service;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/models", web::get().to(list)).route("/models/{name}/reload", web::post().to(reload));
}

async fn list(service: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(vec![service.pipeline.models().view().await?]))
}

/// The body of a reload; without `file`, the configured file is read again.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadRequest {
    /// A TorchScript file in the model directory, by name (no directories above it).
    file: Option<String>,
}

/// The body is read raw: no body means the configured file, anything else must be a valid
/// request (`Option<Json>` would take a malformed body for none and reload the wrong file).
async fn reload(
    service: web::Data<Service>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: ReloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid reload request: {e}")))?
    };
    // Validated and serving here, and stored: every other node installs it within a heartbeat.
    let version = service.pipeline.models().reload(&name, request.file.as_deref()).await?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "activated": version, "model": service.pipeline.models().view().await? })))
}
