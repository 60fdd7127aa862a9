//! The one error shape of the API: `{"error": {"type", "code", "param", "message"}}` with a
//! stable `code`, kept apart from internal error enums.

use http::StatusCode;
use serde::Serialize;

use crate::domain::validate::FieldError;
use crate::store::{OpError, StoreError};

/// The `type` of an error: the broad class a client branches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    Permission,
    RateLimit,
    Api,
}

impl ErrorType {
    pub const ALL: &'static [ErrorType] = &[
        ErrorType::InvalidRequest,
        ErrorType::Authentication,
        ErrorType::Permission,
        ErrorType::RateLimit,
        ErrorType::Api,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Authentication => "authentication_error",
            ErrorType::Permission => "permission_error",
            ErrorType::RateLimit => "rate_limit_error",
            ErrorType::Api => "api_error",
        }
    }
}

/// Which listener answers with a code: the merchant-facing one (documented in
/// `docs/openapi.json`) or only the operator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Public,
    Operator,
}

/// Declares the registry: one line per wire code with its `type`, HTTP status and listener.
macro_rules! codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $wire:literal, $kind:ident, $status:ident, $surface:ident;)*) => {
        /// Every wire error `code` paywatch answers with: the one list, with each code's `type`
        /// and HTTP status, so a code cannot be misspelt at a call site or drift from its status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable string on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $wire,)*
                }
            }

            pub fn kind(self) -> ErrorType {
                match self {
                    $(Code::$variant => ErrorType::$kind,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(Code::$variant => StatusCode::$status,)*
                }
            }

            pub fn surface(self) -> Surface {
                match self {
                    $(Code::$variant => Surface::$surface,)*
                }
            }

            /// The code for a wire string made below the API (store refusals, domain
            /// validation), which keep plain strings so they need not depend on `api`.
            pub fn from_wire(s: &str) -> Option<Code> {
                match s {
                    $($wire => Some(Code::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    ParameterMissing = "parameter_missing", InvalidRequest, BAD_REQUEST, Public;
    ParameterInvalid = "parameter_invalid", InvalidRequest, BAD_REQUEST, Public;
    ParameterUnknown = "parameter_unknown", InvalidRequest, BAD_REQUEST, Public;
    /// A key given twice in a JSON body (the UPI ingest reads the first or the last otherwise).
    ParameterDuplicate = "parameter_duplicate", InvalidRequest, BAD_REQUEST, Public;
    BodyInvalidJson = "body_invalid_json", InvalidRequest, BAD_REQUEST, Public;
    /// A form-encoded body (Stripe's libraries) that is not a valid bracket-notation form.
    BodyInvalidForm = "body_invalid_form", InvalidRequest, BAD_REQUEST, Public;
    BodyInvalid = "body_invalid", InvalidRequest, BAD_REQUEST, Public;
    BodyUnreadable = "body_unreadable", InvalidRequest, BAD_REQUEST, Public;
    RequestMalformed = "request_malformed", InvalidRequest, BAD_REQUEST, Public;
    RequestTooLarge = "request_too_large", InvalidRequest, PAYLOAD_TOO_LARGE, Public;
    RequestTimeout = "request_timeout", InvalidRequest, REQUEST_TIMEOUT, Public;
    UrlNotAllowed = "url_not_allowed", InvalidRequest, BAD_REQUEST, Public;
    PaymentMethodUnavailable = "payment_method_unavailable", InvalidRequest, BAD_REQUEST, Public;
    IdempotencyKeyInvalid = "idempotency_key_invalid", InvalidRequest, BAD_REQUEST, Public;
    IdempotencyKeyReused = "idempotency_key_reused", InvalidRequest, CONFLICT, Public;
    ResourceMissing = "resource_missing", InvalidRequest, NOT_FOUND, Public;
    RouteMissing = "route_missing", InvalidRequest, NOT_FOUND, Public;
    SessionNotCancelable = "session_not_cancelable", InvalidRequest, CONFLICT, Public;
    /// A payment link that is deactivated, expired or used up (made by the store).
    PaymentLinkUnavailable = "payment_link_unavailable", InvalidRequest, GONE, Public;
    SimulateLimit = "simulate_limit", InvalidRequest, CONFLICT, Public;
    SessionNotPaid = "session_not_paid", InvalidRequest, CONFLICT, Public;
    RefundExceedsReceived = "refund_exceeds_received", InvalidRequest, CONFLICT, Public;
    /// At most 16 webhook endpoints per mode (made by the store).
    EndpointLimitReached = "endpoint_limit_reached", InvalidRequest, CONFLICT, Public;
    ApiKeyInvalid = "api_key_invalid", Authentication, UNAUTHORIZED, Public;
    /// A UPI forwarder's HMAC does not verify.
    SignatureInvalid = "signature_invalid", Authentication, UNAUTHORIZED, Public;
    PermissionDenied = "permission_denied", Permission, FORBIDDEN, Public;
    RateLimited = "rate_limited", RateLimit, TOO_MANY_REQUESTS, Public;
    /// A `Stripe-Version` header that is not a Stripe API version.
    StripeVersionInvalid = "stripe_version_invalid", InvalidRequest, BAD_REQUEST, Public;
    TooManyClaims = "too_many_claims", RateLimit, TOO_MANY_REQUESTS, Public;
    /// Past `server.link_opens_per_minute` payment link opens from one client.
    TooManyLinkOpens = "too_many_link_opens", RateLimit, TOO_MANY_REQUESTS, Public;
    /// Past the per-client cap; past the process-wide cap it is 503 `api_error`
    /// (`ApiError::capacity`).
    TooManyStreams = "too_many_streams", RateLimit, TOO_MANY_REQUESTS, Public;
    InternalError = "internal_error", Api, INTERNAL_SERVER_ERROR, Public;
    NoPaymentSlotAvailable = "no_payment_slot_available", Api, SERVICE_UNAVAILABLE, Public;
    ParserUnavailable = "parser_unavailable", Api, SERVICE_UNAVAILABLE, Public;
    /// A price in another currency needs a rate whose sources are stale or have not answered;
    /// nothing was created, retry later (with Retry-After).
    RateUnavailable = "rate_unavailable", Api, SERVICE_UNAVAILABLE, Public;
    /// The writer's queue is full (`storage.writer_queue`); always with Retry-After.
    StorageOverloaded = "storage_overloaded", Api, SERVICE_UNAVAILABLE, Public;
    // The operator listener's own codes.
    AdminTokenInvalid = "admin_token_invalid", Authentication, UNAUTHORIZED, Operator;
    HostMissing = "host_missing", InvalidRequest, BAD_REQUEST, Operator;
    HostNotAllowed = "host_not_allowed", InvalidRequest, MISDIRECTED_REQUEST, Operator;
    BackupFailed = "backup_failed", InvalidRequest, BAD_REQUEST, Operator;
    BackupUnavailable = "backup_unavailable", Api, SERVICE_UNAVAILABLE, Operator;
    /// Succeed or fail on a refund that already settled (made by the store).
    RefundNotPending = "refund_not_pending", InvalidRequest, CONFLICT, Operator;
    /// Return or assign a UPI credit that is not unmatched (made by the store).
    CreditNotUnmatched = "credit_not_unmatched", InvalidRequest, CONFLICT, Operator;
    /// An operator account of that name exists already (made by the store).
    OperatorExists = "operator_exists", InvalidRequest, CONFLICT, Operator;
}

/// An error as the merchant sees it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorType,
    pub code: Code,
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
    /// An error with `code`'s registered type and status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            status: code.status(),
            kind: code.kind(),
            code,
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An error about one request parameter.
    pub fn invalid(code: Code, param: &str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.to_owned()),
            ..Self::new(code, message)
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(Code::ResourceMissing, format!("no such {what}: {id}"))
    }

    pub fn route_missing(method: &http::Method, path: &str) -> Self {
        Self::new(Code::RouteMissing, format!("no route {method} {path}"))
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::ApiKeyInvalid, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, message)
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        Self::new(
            Code::RateLimited,
            format!("too many requests for this API key; retry after {retry_after} s"),
        )
        .retry_after(retry_after)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            Code::RequestTooLarge,
            format!("request bodies are limited to {limit} bytes"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::InternalError, message)
    }

    /// Tells the client when to retry (the `Retry-After` header and `retry_after_seconds`).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The process as a whole is at capacity (not this client): 503 `api_error`, whatever the
    /// code's usual status.
    pub fn capacity(mut self) -> Self {
        self.status = StatusCode::SERVICE_UNAVAILABLE;
        self.kind = ErrorType::Api;
        self
    }

    /// Names the object in a not-found message.
    pub fn with_id(mut self, id: &str) -> Self {
        if self.code == Code::ResourceMissing {
            self.message = format!("{}: {id}", self.message);
        }
        self
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&Body {
            error: Inner {
                kind: self.kind.as_str(),
                code: self.code.as_str(),
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
        ApiError::invalid(wire_code(e.code), &e.param, e.message)
    }
}

/// Maps a code string made below the API to the registry. Every such string is registered
/// (the tests below check the ones the domain and store make); one that is not is a bug,
/// logged and answered as an internal error rather than sent unlisted.
pub(crate) fn wire_code(s: &'static str) -> Code {
    Code::from_wire(s).unwrap_or_else(|| {
        tracing::error!(code = s, "an error code missing from the registry");
        Code::InternalError
    })
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if matches!(e, StoreError::Overloaded) {
            return ApiError::new(
                Code::StorageOverloaded,
                "too many writes are waiting; nothing was changed, retry shortly",
            )
            .retry_after(1);
        }
        tracing::error!(error = %e, "storage failure");
        ApiError::internal("the request could not be stored; nothing was changed, retry it")
    }
}

/// Maps a refused operation to its API error.
pub fn op_error(e: &OpError) -> ApiError {
    match e {
        OpError::NotFound(w) => ApiError::new(Code::ResourceMissing, format!("no such {w}")),
        OpError::Transition(t) => ApiError::new(Code::SessionNotCancelable, t.to_string()),
        OpError::NoSlot(m) => ApiError::new(Code::NoPaymentSlotAvailable, m.clone()),
        OpError::Invalid(m) => ApiError::new(Code::ParameterInvalid, m.clone()),
        OpError::Conflict { code, message } => ApiError::new(wire_code(code), message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::refund::RefundError;

    #[test]
    fn every_code_is_snake_case_and_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            let s = c.as_str();
            assert!(
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(seen.insert(s), "{s} is registered twice");
            assert_eq!(Code::from_wire(s), Some(*c));
        }
    }

    #[test]
    fn each_code_type_fits_its_status() {
        for c in Code::ALL {
            let (kind, status) = (c.kind(), c.status().as_u16());
            let fits = match kind {
                ErrorType::InvalidRequest => (400..500).contains(&status) && status != 401,
                ErrorType::Authentication => status == 401,
                ErrorType::Permission => status == 403,
                ErrorType::RateLimit => status == 429,
                ErrorType::Api => status >= 500,
            };
            assert!(
                fits,
                "{} is {} with status {status}",
                c.as_str(),
                kind.as_str()
            );
        }
    }

    /// The strings the store and the domain make are registered, with the status they had.
    #[test]
    fn codes_made_below_the_api_are_registered() {
        for (s, status) in [
            ("endpoint_limit_reached", 409),
            ("credit_not_unmatched", 409),
            ("session_not_paid", 409),
            ("refund_exceeds_received", 409),
            ("refund_not_pending", 409),
            ("parameter_invalid", 400),
            ("parameter_missing", 400),
            ("url_not_allowed", 400),
            (crate::engine::links::LINK_CLOSED, 410),
        ] {
            assert_eq!(
                Code::from_wire(s).map(|c| c.status().as_u16()),
                Some(status),
                "{s}"
            );
        }
        for e in [
            RefundError::NotPaid,
            RefundError::Zero,
            RefundError::MethodAmbiguous(String::new()),
            RefundError::MethodNotPaid(String::new()),
        ] {
            assert!(Code::from_wire(e.code()).is_some(), "{}", e.code());
        }
    }

    #[test]
    fn the_body_carries_the_registered_strings() {
        let e = ApiError::invalid(Code::ParameterInvalid, "amount", "bad");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).expect("json");
        assert_eq!(v["error"]["code"], "parameter_invalid");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "amount");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let busy = ApiError::new(Code::TooManyStreams, "x").capacity();
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.kind, ErrorType::Api);
    }

    /// docs/openapi.json (the merchant listener's contract) lists exactly the public codes.
    #[test]
    fn the_openapi_document_lists_exactly_the_public_codes() {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"));
        let doc: serde_json::Value = serde_json::from_str(text).expect("docs/openapi.json");
        let error = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"];
        let listed = |field: &str| -> std::collections::BTreeSet<String> {
            error[field]["enum"]
                .as_array()
                .unwrap_or_else(|| panic!("Error.{field} has an enum"))
                .iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        };
        let public: std::collections::BTreeSet<String> = Code::ALL
            .iter()
            .filter(|c| c.surface() == Surface::Public)
            .map(|c| c.as_str().to_owned())
            .collect();
        assert_eq!(listed("code"), public);
        let types: std::collections::BTreeSet<String> = ErrorType::ALL
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect();
        assert_eq!(listed("type"), types);
    }
}
