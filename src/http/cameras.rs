//! `/api/v1/cameras`: register, list, inspect, remove cameras; live counts and state; geometry.
//!
//! Any node answers: a camera analysed by another node is answered by that node (the request is
//! forwarded once, with its credentials, to the owner's advertised URL), or, when the owner does
//! not answer, from PostgreSQL with its owner and without its live status.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::actors::status::StatusView;
use crate::analytics::geometry::Geometry;
use crate::analytics::lines::LineCount;
use crate::camera_spec::CameraSpec;
use crate::ids::is_valid_id;
use crate::service::{CameraRuntime, Service};

/// Set on a request one node forwards to another, which answers it itself (no second hop).
pub const FORWARDED_BY: &str = "x-its-forwarded-by";

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

/// A camera as the API shows it: its registration without the URL's password, the node that
/// analyses it, and its status when that node answers.
#[derive(Serialize)]
struct CameraView {
    #[serde(flatten)]
    spec: CameraSpec,
    /// The node holding the camera's lease; null while it moves between nodes.
    owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusView>,
}

impl CameraView {
    fn new(service: &Service, spec: &CameraSpec, runtime: &CameraRuntime) -> Self {
        let (owner, status) = match runtime {
            CameraRuntime::Local(status) => (Some(service.cluster.node_id().to_string()), Some(status.view())),
            CameraRuntime::Remote { owner } => (owner.clone(), None),
        };
        Self { spec: spec.redacted(), owner, status }
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
    let runtime = service.register_camera(spec.clone()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/cameras/{}", spec.id)))
        .json(CameraView::new(&service, &spec, &runtime)))
}

/// Every registered camera with its owner; the status of those analysed here.
async fn list(service: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    let owners = service.cluster.owners().await.map_err(crate::service::ServiceError::from)?;
    let mut cameras = Vec::new();
    for stored in service.db.cameras().await.map_err(crate::service::ServiceError::from)? {
        let Ok(stored) = stored else { continue };
        let runtime = match service.pipeline.camera(&stored.spec.id) {
            Some((_, status)) => CameraRuntime::Local(status),
            None => CameraRuntime::Remote { owner: owners.get(&stored.spec.id).cloned() },
        };
        cameras.push(CameraView::new(&service, &stored.spec, &runtime));
    }
    cameras.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cameras": cameras })))
}

async fn get(service: web::Data<Service>, id: web::Path<String>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let (spec, runtime) = find(&service, &id).await?;
    if let CameraRuntime::Remote { owner: Some(owner) } = &runtime {
        if let Some(answer) = forward(&service, &req, owner).await {
            return Ok(answer);
        }
    }
    Ok(HttpResponse::Ok().json(CameraView::new(&service, &spec, &runtime)))
}

async fn remove(service: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    check_id(&id)?;
    service.remove_camera(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn counts(
    service: web::Data<Service>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (spec, runtime) = find(&service, &id).await?;
    match runtime {
        CameraRuntime::Local(status) => Ok(HttpResponse::Ok().json(CountsView {
            camera_id: spec.id,
            status: status.view(),
            lines: status.counts(),
        })),
        CameraRuntime::Remote { owner: Some(owner) } => match forward(&service, &req, &owner).await {
            Some(answer) => Ok(answer),
            None => Err(ApiError::Unavailable(format!("camera {id} runs on node {owner}, which did not answer"))),
        },
        CameraRuntime::Remote { owner: None } => {
            Err(ApiError::Unavailable(format!("camera {id} is moving between nodes; ask again in a few seconds")))
        }
    }
}

/// The registered camera and where it runs; 404 when it is not registered.
pub(super) async fn find(service: &Service, id: &str) -> Result<(CameraSpec, CameraRuntime), ApiError> {
    check_id(id)?;
    if let Some((spec, status)) = service.pipeline.camera(id) {
        return Ok((spec, CameraRuntime::Local(status)));
    }
    let stored = service.db.camera(id).await.map_err(crate::service::ServiceError::from)?;
    let stored = stored.ok_or_else(|| ApiError::NotFound(format!("camera {id} not found")))?;
    Ok((stored.spec, service.runtime(id).await?))
}

/// The owner's answer to the same request (same method, no body), once: `None` when this request was forwarded
/// already, the owner is this node, or it did not answer. The answer keeps the owner's status,
/// content type, `Cache-Control` and `X-` headers (a snapshot's frame number and size).
pub(super) async fn forward(service: &Service, req: &HttpRequest, owner: &str) -> Option<HttpResponse> {
    if req.headers().contains_key(FORWARDED_BY) || owner == service.cluster.node_id() {
        return None;
    }
    let base = service.cluster.url_of(owner).await.ok().flatten()?;
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or_else(|| req.path());
    // The same method (GET, or a POST without a body such as a drift reference's re-capture).
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).ok()?;
    let mut request =
        service.peers.request(method, format!("{base}{path}")).header(FORWARDED_BY, service.cluster.node_id());
    if let Some(auth) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        request = request.header(reqwest::header::AUTHORIZATION, auth.as_bytes());
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(node = owner, error = %error.without_url(), "camera owner did not answer");
            return None;
        }
    };
    let status = actix_web::http::StatusCode::from_u16(answer.status().as_u16()).ok()?;
    let mut response = HttpResponse::build(status);
    response.content_type("application/json");
    for (name, value) in answer.headers() {
        let kept = name == reqwest::header::CONTENT_TYPE
            || name == reqwest::header::CACHE_CONTROL
            || (name.as_str().starts_with("x-") && name.as_str() != FORWARDED_BY);
        if kept {
            response.insert_header((name.as_str(), value.as_bytes()));
        }
    }
    let body = answer.bytes().await.ok()?;
    Some(response.body(body))
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
            let stored = service.db.camera(&id).await.map_err(crate::service::ServiceError::from)?;
            stored.ok_or_else(|| ApiError::NotFound(format!("camera {id} not found")))?.geometry_version
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
    find(&service, &id).await?;
    match service.live_state(&id).await? {
        Some(state) => Ok(HttpResponse::Ok().json(state)),
        None => Err(ApiError::NotFound(format!("camera {id} has no state yet (no frame analysed)"))),
    }
}
