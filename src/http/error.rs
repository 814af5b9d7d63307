//! The one mapping from errors to HTTP statuses; every error body is `{"error": "..."}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::actors::gpu::candidate::CandidateError;
use crate::actors::gpu::registry::ReloadError;
use crate::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Well-formed, and refused on its content (a model file that does not validate).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    /// A limit on concurrent use (live viewers of a camera) is reached.
    #[error("{0}")]
    TooManyRequests(String),
    #[error("internal error")]
    Internal(String),
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            ServiceError::Duplicate(_) => ApiError::Conflict(e.to_string()),
            ServiceError::NotFound(_) => ApiError::NotFound(e.to_string()),
            // PostgreSQL refusing a statement is a defect to fix, not an outage to wait out.
            ServiceError::Db(ref db) if !db.is_transient() => ApiError::Internal(e.to_string()),
            ServiceError::Db(_) | ServiceError::Redis(_) => {
                // The driver's text stays in the log; clients learn only what is down.
                tracing::warn!(error = %e, "dependency unavailable");
                ApiError::Unavailable(match e {
                    ServiceError::Db(_) => "database unavailable".into(),
                    _ => "redis unavailable".into(),
                })
            }
            ServiceError::Topology(_) => ApiError::Internal(e.to_string()),
            ServiceError::Cluster(crate::cluster::ClusterError::Db(db)) => ServiceError::Db(db).into(),
            ServiceError::Cluster(crate::cluster::ClusterError::Timeout(_)) => {
                tracing::warn!(error = %e, "coordination store unavailable");
                ApiError::Unavailable("coordination store unavailable".into())
            }
            ServiceError::Cluster(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<CandidateError> for ApiError {
    fn from(e: CandidateError) -> Self {
        match e {
            CandidateError::NotFound(_) => ApiError::NotFound(e.to_string()),
            CandidateError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            CandidateError::Conflict(_) | CandidateError::Busy => ApiError::Conflict(e.to_string()),
            CandidateError::Reload(reload) => reload.into(),
        }
    }
}

impl From<ReloadError> for ApiError {
    fn from(e: ReloadError) -> Self {
        match e {
            ReloadError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ReloadError::BadPath(_) => ApiError::BadRequest(e.to_string()),
            ReloadError::Rejected(_) => ApiError::Unprocessable(e.to_string()),
            ReloadError::Busy => ApiError::Conflict(e.to_string()),
            ReloadError::Stopped => ApiError::Unavailable(e.to_string()),
            ReloadError::Store(db) => ServiceError::Db(db).into(),
        }
    }
}

impl From<actix_web::error::JsonPayloadError> for ApiError {
    fn from(e: actix_web::error::JsonPayloadError) -> Self {
        use actix_web::error::JsonPayloadError as E;
        match e {
            E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::PayloadTooLarge(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::TooManyRequests(_) = self {
            // A place frees when a viewer leaves; the client does not know when.
            response.insert_header(("Retry-After", "5"));
        }
        response.json(serde_json::json!({ "error": self.to_string() }))
    }
}
