//! A JSON body extractor whose rejections use the API's error format: malformed JSON,
//! wrong types, unknown fields and a missing content type each get a stable code.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::bad_request("malformed_json", format!("request body is not valid JSON: {}", e.body_text()))
                }
                JsonRejection::JsonDataError(e) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    format!("request body does not match the expected shape: {}", e.body_text()),
                ),
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body with Content-Type: application/json",
                ),
                other => ApiError::bad_request("invalid_body", other.body_text()),
            }),
        }
    }
}

/// A JSON body that may be absent (empty body → `T::default()`), with the same error
/// codes as [`ApiJson`].
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        serde_json::from_slice(&bytes).map(OptionalJson).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ApiError::bad_request("malformed_json", format!("request body is not valid JSON: {e}"))
            } else {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", format!("request body does not match the expected shape: {e}"))
            }
        })
    }
}
