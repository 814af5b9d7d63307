//! `/api/v1/models`: the model registry (admin only): versions, the one serving on each device,
//! transitions (from PostgreSQL: those of every node), and hot reload.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use crate::service::Service;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/models", web::get().to(list))
        .route("/models/{name}/reload", web::post().to(reload))
        .route("/models/{name}/candidates", web::get().to(candidates))
        .route("/models/{name}/candidates", web::post().to(start_candidate))
        .route("/models/{name}/candidates/{version}", web::get().to(candidate))
        .route("/models/{name}/candidates/{version}/promote", web::post().to(promote))
        .route("/models/{name}/candidates/{version}/rollback", web::post().to(rollback));
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

/// The body of `POST /models/{name}/candidates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateRequest {
    /// A model file in the model directory, by name.
    file: String,
    /// Share of the shadowed cameras' frames the candidate runs on; default
    /// `model.lifecycle.shadow_share`.
    share: Option<f64>,
    /// The cameras it runs on; default all.
    cameras: Option<Vec<String>>,
}

/// The body of a promotion: `share` of the cameras (1: all).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    share: f64,
    /// A canary despite unmet bars (its own rollback rule still applies); never for share 1.
    #[serde(default)]
    force: bool,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid {what} request: {e}")))
}

fn version_of(raw: &str) -> Result<u32, ApiError> {
    raw.parse().map_err(|_| ApiError::BadRequest(format!("version must be a positive integer, not {raw:?}")))
}

async fn candidates(service: web::Data<Service>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service.pipeline.candidates().list(&name)?))
}

async fn start_candidate(
    service: web::Data<Service>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: CandidateRequest = json_body(&body, "candidate")?;
    let view = service.pipeline.candidates().start(&name, &request.file, request.share, request.cameras).await?;
    Ok(HttpResponse::Created().json(view))
}

async fn candidate(service: web::Data<Service>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    Ok(HttpResponse::Ok().json(service.pipeline.candidates().view(&name, version_of(&version)?)?))
}

async fn promote(
    service: web::Data<Service>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    let version = version_of(&version)?;
    let request: PromoteRequest = json_body(&body, "promotion")?;
    let view = service.pipeline.candidates().promote(&name, version, request.share, request.force).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn rollback(service: web::Data<Service>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    Ok(HttpResponse::Ok().json(service.pipeline.candidates().rollback(&name, version_of(&version)?).await?))
}
