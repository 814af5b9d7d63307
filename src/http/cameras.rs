//! `/api/v1/cameras`: register, list, inspect, remove cameras; live counts and state; geometry.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::actors::status::CameraStatus;
use crate::actors::status::StatusView;
use crate::analytics::geometry::Geometry;
use crate::analytics::lines::LineCount;
use crate::camera_spec::CameraSpec;
use crate::ids::is_valid_id;
use crate::service::Service;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cameras", web::post().to(register))
        .route("/cameras", web::get().to(list))
        .route("/cameras/{id}", web::get().to(get))
        .route("/cameras/{id}", web::delete().to(remove))
        .route("/cameras/{id}/counts", web::get().to(counts))
        .route("/cameras/{id}/geometry", web::put().to(put_geometry))
        .route("/cameras/{id}/geometry", web::get().to(get_geometry))
        .route("/cameras/{id}/state", web::get().to(state));
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
    check_id(&id)?;
    service.remove_camera(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn counts(service: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (spec, status) = find(&service, &id)?;
    Ok(HttpResponse::Ok().json(CountsView { camera_id: spec.id, status: status.view(), lines: status.counts() }))
}

fn find(service: &Service, id: &str) -> Result<(CameraSpec, std::sync::Arc<CameraStatus>), ApiError> {
    check_id(id)?;
    service.pipeline.camera(id).ok_or_else(|| ApiError::NotFound(format!("camera {id} not found")))
}

/// A path id that is no valid camera id names no camera: 404 before it reaches PostgreSQL, which
/// would refuse some of them (a NUL byte) with an error that must not read as an outage. The id is
/// not echoed: it may be anything.
pub(super) fn check_id(id: &str) -> Result<(), ApiError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::NotFound("no such camera (camera ids are 1-64 characters of A-Z a-z 0-9 _ -)".into()))
    }
}

#[derive(Serialize)]
struct GeometryView {
    camera_id: String,
    version: u32,
    geometry: Geometry,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn put_geometry(
    service: web::Data<Service>,
    id: web::Path<String>,
    body: web::Json<Geometry>,
) -> Result<HttpResponse, ApiError> {
    let geometry = body.into_inner();
    let version = service.set_geometry(&id, geometry.clone()).await?;
    Ok(HttpResponse::Ok().json(GeometryView { camera_id: id.into_inner(), version, geometry, created_at: None }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GeometryQuery {
    version: Option<u32>,
}

/// The current geometry, or with `?version=N` any stored version (also of a removed camera).
async fn get_geometry(
    service: web::Data<Service>,
    id: web::Path<String>,
    query: web::Query<GeometryQuery>,
) -> Result<HttpResponse, ApiError> {
    check_id(&id)?;
    let version = match query.version {
        Some(v) => v,
        None => {
            let (_, status) = find(&service, &id)?;
            status.geometry_version.load(std::sync::atomic::Ordering::SeqCst)
        }
    };
    let (geometry, created_at) =
        service
            .db
            .geometry(&id, version)
            .await
            .map_err(crate::service::ServiceError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("camera {id} has no geometry version {version}")))?;
    Ok(HttpResponse::Ok().json(GeometryView {
        camera_id: id.into_inner(),
        version,
        geometry,
        created_at: Some(created_at),
    }))
}

/// The camera's latest state as cached in Redis by its connector.
async fn state(service: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    find(&service, &id)?;
    match service.live_state(&id).await? {
        Some(state) => Ok(HttpResponse::Ok().json(state)),
        None => Err(ApiError::NotFound(format!("camera {id} has no state yet (no frame analysed)"))),
    }
}
