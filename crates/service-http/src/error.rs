//! One error type for every answer that is not a success: `{"error": "..."}` with the status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tidemark_service_core::ControlError;

/// A refusal or failure, as the client sees it.
///
/// A 4xx names the problem; a 500 says "internal error" with a request id, and the details go
/// to the log under that id.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// A 500: logs `error` under a new request id and tells the client only the id.
    pub(crate) fn internal(error: impl std::fmt::Display) -> ApiError {
        let id = hex::encode(rand::random::<[u8; 6]>());
        tracing::error!(request_id = %id, "internal error: {error:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error (request id {id}); the daemon's log has the details"),
        )
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::NotFound(m) => ApiError::not_found(m),
            ControlError::Invalid(m) => ApiError::invalid(m),
            ControlError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            ControlError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}
