//! The API's errors: every refusal is a JSON object `{"error": message, "status": code}` (plus `input`, the
//! 1-based number of the input it is about, when it is about one), whatever went wrong: a malformed body, an
//! unknown route, a full server.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A refused request: its status and the message the caller reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The 1-based number of the input the error is about, if it is about one.
    pub input: Option<usize>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), input: None }
    }

    /// A request whose body is not what the endpoint takes (valid JSON of the wrong shape, an unusable input).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    pub fn about_input(mut self, number: usize) -> Self {
        self.input = Some(number);
        self
    }

    /// The body could not be read: over the size limit (413), or broken off.
    pub fn from_rejection(rejection: &BytesRejection, max_body_bytes: usize) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large(format!("request body is larger than the limit of {max_body_bytes} bytes"))
        } else {
            Self::new(status, format!("cannot read the request body: {}", rejection.body_text()))
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.message.into());
        body.insert("status".into(), self.status.as_u16().into());
        if let Some(n) = self.input {
            body.insert("input".into(), n.into());
        }
        super::json_response(self.status, &serde_json::Value::Object(body))
    }
}
