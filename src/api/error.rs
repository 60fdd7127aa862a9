//! The one error shape of the API: `{"error": {"type", "code", "param", "message"}}` with a
//! stable `code`, kept apart from internal error enums.

use http::StatusCode;
use serde::Serialize;

use crate::domain::validate::FieldError;
use crate::store::{OpError, StoreError};

/// An error as the merchant sees it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub param: Option<String>,
    pub message: String,
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: String,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            param: None,
            message,
            retry_after: None,
        }
    }

    pub fn invalid(code: &'static str, param: &str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.to_owned()),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                code,
                message.into(),
            )
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "resource_missing",
            format!("no such {what}: {id}"),
        )
    }

    pub fn route_missing(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "route_missing",
            format!("no route {method} {path}"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "api_key_invalid",
            message.into(),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "permission_denied",
            message.into(),
        )
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limited",
                format!("too many requests for this API key; retry after {retry_after} s"),
            )
        }
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal_error",
            message.into(),
        )
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            code,
            message.into(),
        )
    }

    /// Names the object in a not-found message.
    pub fn with_id(mut self, id: &str) -> Self {
        if self.code == "resource_missing" {
            self.message = format!("{}: {id}", self.message);
        }
        self
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&Body {
            error: Inner {
                kind: self.kind,
                code: self.code,
                param: self.param.as_deref(),
                message: &self.message,
                retry_after_seconds: self.retry_after,
            },
        })
        .unwrap_or_default()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(e.code, &e.param, e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if matches!(e, StoreError::Overloaded) {
            let mut busy = ApiError::unavailable(
                "storage_overloaded",
                "too many writes are waiting; nothing was changed, retry shortly",
            );
            busy.retry_after = Some(1);
            return busy;
        }
        tracing::error!(error = %e, "storage failure");
        ApiError::internal("the request could not be stored; nothing was changed, retry it")
    }
}

/// Maps a refused operation to its API error.
pub fn op_error(e: &OpError) -> ApiError {
    match e {
        OpError::NotFound(w) => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "resource_missing",
            format!("no such {w}"),
        ),
        OpError::Transition(t) => ApiError::conflict("session_not_cancelable", t.to_string()),
        OpError::NoSlot(m) => ApiError::unavailable("no_payment_slot_available", m.clone()),
        OpError::Invalid(m) => ApiError::bad_request("parameter_invalid", m.clone()),
        OpError::Conflict { code, message } => ApiError::conflict(code, message.clone()),
    }
}
