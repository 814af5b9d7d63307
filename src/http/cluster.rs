//! `/api/v1/cluster` (admin): the nodes, their state, capacity, load and cameras.

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use crate::ids::is_valid_id;
use crate::service::{Service, ServiceError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cluster", web::get().to(cluster)).route("/cluster/nodes/{id}", web::get().to(node));
}

async fn cluster(service: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service.cluster.view().await.map_err(ServiceError::from)?))
}

async fn node(service: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    if !is_valid_id(&id) {
        return Err(ApiError::NotFound("no such node (node ids are 1-64 characters of A-Z a-z 0-9 _ -)".into()));
    }
    let view = service.cluster.view().await.map_err(ServiceError::from)?;
    let node = view.nodes.into_iter().find(|n| n.row.id == *id);
    let node = node.ok_or_else(|| ApiError::NotFound(format!("node {id} is not a member of the cluster")))?;
    Ok(HttpResponse::Ok().json(node))
}
