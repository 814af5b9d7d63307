//! `/api/v1/me`: who the caller is (token name and role), so that a client such as the console
//! can show what its token may do before it tries.

use actix_web::{web, HttpResponse};

use super::caller::Caller;
use super::error::ApiError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/me", web::get().to(me));
}

/// The caller's token name and role; with auth disabled every caller is the anonymous admin.
async fn me(caller: Option<web::ReqData<Caller>>) -> Result<HttpResponse, ApiError> {
    // Authentication admits every request to this route with a caller; none is a wiring defect.
    let caller = caller.ok_or_else(|| ApiError::Internal("no caller on an authenticated route".into()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "name": &*caller.name, "role": caller.role })))
}
