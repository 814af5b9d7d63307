//! `/api/v1/cameras/{id}/drift`: the camera's drift monitor (`detector::drift`): capturing its
//! reference (n of N frames) or comparing, with KL(window || reference) per feature and the
//! model version it profiles; `POST .../drift/reference` starts a new reference (operators, after a
//! camera is moved or re-aimed).
//!
//! A camera analysed by another node is answered by that node (the request is forwarded once, as
//! `counts`, snapshots and tracks are); 503 when the owner does not answer or the camera moves.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::cameras::{find, forward};
use super::error::ApiError;
use crate::actors::status::CameraStatus;
use crate::detector::drift::DriftView;
use crate::service::{CameraRuntime, Service};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cameras/{id}/drift", web::get().to(get))
        .route("/cameras/{id}/drift/reference", web::post().to(recapture));
}

/// A camera's monitor as the API shows it.
#[derive(Serialize)]
struct DriftAnswer {
    camera_id: String,
    /// The model's name, as in `ml_model_drift_kl{model}`.
    model: String,
    /// `model.drift.enabled`: off, nothing else follows.
    enabled: bool,
    #[serde(flatten)]
    view: Option<DriftView>,
}

impl DriftAnswer {
    fn new(service: &Service, id: String, view: Option<DriftView>) -> Self {
        let enabled = service.settings.model.drift.enabled;
        Self { camera_id: id, model: service.pipeline.model_name().to_string(), enabled, view }
    }
}

/// Where the camera is analysed: here (its status), or the owner's answer to this request.
enum Located {
    Here(Arc<CameraStatus>),
    Answered(HttpResponse),
}

/// The camera's status when this node analyses it, else its owner's answer; 503 when the owner
/// does not answer or there is none, 404 for a camera that is not registered.
async fn locate(service: &Service, id: &str, req: &HttpRequest) -> Result<Located, ApiError> {
    match find(service, id).await?.1 {
        CameraRuntime::Local(status) => Ok(Located::Here(status)),
        CameraRuntime::Remote { owner: Some(owner) } => match forward(service, req, &owner).await {
            Some(answer) => Ok(Located::Answered(answer)),
            None => Err(ApiError::Unavailable(format!("camera {id} runs on node {owner}, which did not answer"))),
        },
        CameraRuntime::Remote { owner: None } => {
            Err(ApiError::Unavailable(format!("camera {id} is moving between nodes; ask again in a few seconds")))
        }
    }
}

async fn get(service: web::Data<Service>, id: web::Path<String>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let status = match locate(&service, &id, &req).await? {
        Located::Here(status) => status,
        Located::Answered(answer) => return Ok(answer),
    };
    let answer = DriftAnswer::new(&service, id.into_inner(), status.drift.view());
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(answer))
}

/// Starts a new reference from the camera's next frame; the last comparison's values are removed
/// from `ml_model_drift_kl` (no stale value keeps `ModelDriftHigh` firing meanwhile).
async fn recapture(
    service: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let status = match locate(&service, &id, &req).await? {
        Located::Here(status) => status,
        Located::Answered(answer) => return Ok(answer),
    };
    let view = status.drift.recapture().ok_or_else(|| {
        ApiError::Conflict("drift detection is off (model.drift.enabled = false): there is no reference".into())
    })?;
    service.metrics.remove_drift(&id, service.pipeline.model_name());
    tracing::info!(camera = %id, model_version = ?view.model_version, "drift reference captured again on request");
    Ok(HttpResponse::Ok().json(DriftAnswer::new(&service, id.into_inner(), Some(view))))
}
