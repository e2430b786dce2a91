//! Health and the OpenAPI document.

use axum::Json;

#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "The control plane is up", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", responses((status = 200, description = "This document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}
