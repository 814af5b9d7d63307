//! `/api/v1/cameras`: register, list, inspect, remove cameras; live counts.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::error::ApiError;
use crate::actors::camera::status::StatusView;
use crate::actors::camera::{CameraSpec, CameraStatus};
use crate::actors::connector::lines::LineCount;
use crate::service::Service;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cameras", web::post().to(register))
        .route("/cameras", web::get().to(list))
        .route("/cameras/{id}", web::get().to(get))
        .route("/cameras/{id}", web::delete().to(remove))
        .route("/cameras/{id}/counts", web::get().to(counts));
}

/// A camera as the API shows it: its registration without the URL's password, and its status.
#[derive(Serialize)]
struct CameraView {
    #[serde(flatten)]
    spec: CameraSpec,
    status: StatusView,
}

impl CameraView {
    fn new(spec: &CameraSpec, status: &CameraStatus) -> Self {
        Self { spec: spec.redacted(), status: status.view() }
    }
}

#[derive(Serialize)]
struct CountsView {
    camera_id: String,
    status: StatusView,
    lines: Vec<LineCount>,
}

async fn register(service: web::Data<Service>, body: web::Json<CameraSpec>) -> Result<HttpResponse, ApiError> {
    let spec = body.into_inner();
    let status = service.register_camera(spec.clone()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/cameras/{}", spec.id)))
        .json(CameraView::new(&spec, &status)))
}

async fn list(service: web::Data<Service>) -> HttpResponse {
    let cameras: Vec<CameraView> = service.pipeline.cameras().iter().map(|(s, st)| CameraView::new(s, st)).collect();
    HttpResponse::Ok().json(serde_json::json!({ "cameras": cameras }))
}

async fn get(service: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (spec, status) = find(&service, &id)?;
    Ok(HttpResponse::Ok().json(CameraView::new(&spec, &status)))
}

async fn remove(service: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    service.remove_camera(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn counts(service: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (spec, status) = find(&service, &id)?;
    Ok(HttpResponse::Ok().json(CountsView { camera_id: spec.id, status: status.view(), lines: status.counts() }))
}

fn find(service: &Service, id: &str) -> Result<(CameraSpec, std::sync::Arc<CameraStatus>), ApiError> {
    service.pipeline.camera(id).ok_or_else(|| ApiError::NotFound(format!("camera {id} not found")))
}
