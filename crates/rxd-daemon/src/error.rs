//! `ApiError`, and the one place errors become HTTP responses in LXD's error envelope.
//! Internal errors are logged in full and answered generically, so paths and SQL never reach a
//! remote client.

use crate::envelope::json_response;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use rxd_api::Envelope;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// LXD's text, which clients match.
    #[error("not authorized")]
    NotAuthorized,
    /// A refusal with a specific text (LXD uses some, e.g. for tokens).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Request body too large (limit {limit} bytes)")]
    TooLarge { limit: usize },
    /// A body that is not of the type the endpoint reads (a JSON endpoint sent `text/plain`).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A refusal made by the HTTP framework (a path or query it could not decode, a websocket
    /// request that is not one), re-answered in LXD's envelope.
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("ETag doesn't match")]
    PreconditionFailed,
    #[error("Too many failed attempts; retry in {} seconds", retry_after.as_secs().max(1))]
    TooManyRequests { retry_after: Duration },
    #[error("not implemented")]
    NotImplemented,
    /// A Candid login is needed: answered in the bakery's shape, not LXD's envelope.
    #[error("macaroon discharge required")]
    DischargeRequired {
        proxy: bool,
        body: Box<rxd_bakery::wire::BakeryErrorBody>,
    },
    #[error("internal error")]
    Internal(String),
}

/// The reason a request was refused, attached to the response so the access log can name it.
#[derive(Debug, Clone)]
pub struct RejectReason(pub String);

impl ApiError {
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(e.to_string())
    }

    /// The framework's refusal with `status` and text `message`. LXD answers every request it
    /// cannot decode with 400, so axum's 422 becomes 400; a server error stays generic.
    pub fn rejected(status: StatusCode, message: String) -> ApiError {
        match status {
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::BadRequest(message),
            s if s.is_server_error() => ApiError::Internal(message),
            s if s.is_client_error() => ApiError::Rejected { status: s, message },
            _ => ApiError::Internal(format!("unexpected framework answer {status}: {message}")),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotAuthorized | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Rejected { status, .. } => *status,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ApiError::DischargeRequired { proxy: false, .. } => StatusCode::UNAUTHORIZED,
            ApiError::DischargeRequired { proxy: true, .. } => {
                StatusCode::PROXY_AUTHENTICATION_REQUIRED
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let reason = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        if let ApiError::DischargeRequired { proxy, body } = &self {
            let mut resp = json_response(status, body.as_ref());
            if !proxy {
                resp.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Macaroon"),
                );
            }
            resp.extensions_mut().insert(RejectReason(reason));
            return resp;
        }
        let mut resp = json_response(status, &Envelope::error(status.as_u16(), self.to_string()));
        if let ApiError::TooLarge { .. } = &self {
            // The body was left unread: the connection cannot carry another request, and saying
            // so keeps a client from sending its next one into a closing socket.
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        if let ApiError::TooManyRequests { retry_after } = &self {
            let secs = retry_after.as_secs().max(1).to_string();
            if let Ok(v) = http::HeaderValue::from_str(&secs) {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        resp.extensions_mut().insert(RejectReason(reason));
        resp
    }
}

impl From<rxd_auth::AuthError> for ApiError {
    fn from(_: rxd_auth::AuthError) -> Self {
        ApiError::NotAuthorized
    }
}

impl From<rxd_core::config::ConfigError> for ApiError {
    fn from(e: rxd_core::config::ConfigError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<rxd_core::address::AddressError> for ApiError {
    fn from(e: rxd_core::address::AddressError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<rxd_store::StoreError> for ApiError {
    fn from(e: rxd_store::StoreError) -> Self {
        use rxd_store::StoreError::*;
        match e {
            AlreadyExists { .. } => ApiError::Conflict(e.to_string()),
            NotFound { .. } => ApiError::NotFound(e.to_string()),
            NotEmpty { kind: "project" } => {
                ApiError::BadRequest("Only empty projects can be renamed or removed".into())
            }
            // LXD's texts (LXD answers 500 for both; the request is what is wrong).
            InUse { kind: "profile" } => ApiError::BadRequest("Profile is currently in use".into()),
            InUse {
                kind: "storage pool",
            } => ApiError::BadRequest("The storage pool is currently in use".into()),
            // As `confinement::check_count` refuses it, found only under the store's lock.
            Full { .. } => ApiError::Forbidden(e.to_string()),
            Changed { kind } => ApiError::Conflict(format!(
                "The {kind}'s instances changed while it was being checked; try again"
            )),
            other => ApiError::internal(other),
        }
    }
}

impl From<rxd_auth::confinement::Violation> for ApiError {
    fn from(e: rxd_auth::confinement::Violation) -> Self {
        ApiError::Forbidden(e.to_string())
    }
}

impl From<rxd_auth::rbac::Decision> for ApiError {
    /// Only refusals are converted: `Hidden` answers exactly as a missing project does.
    fn from(d: rxd_auth::rbac::Decision) -> Self {
        match d {
            rxd_auth::rbac::Decision::Hidden => ApiError::NotFound(PROJECT_NOT_FOUND.into()),
            _ => ApiError::NotAuthorized,
        }
    }
}

/// LXD's text for a missing project (also for one the caller may not view).
pub const PROJECT_NOT_FOUND: &str = "Project not found";

impl From<rxd_runtime::RuntimeError> for ApiError {
    fn from(e: rxd_runtime::RuntimeError) -> Self {
        use rxd_runtime::RuntimeError::*;
        match e {
            Helper { .. } => ApiError::internal(e),
            Failed(_) | StopTimeout => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl From<rxd_image::rootfs::FileError> for ApiError {
    fn from(e: rxd_image::rootfs::FileError) -> Self {
        use rxd_image::rootfs::FileError::*;
        match e {
            NotFound => ApiError::NotFound("Not found".into()),
            InvalidPath(..) | Unsupported(..) | IsDirectory(_) | NotRegular(_) | NotEmpty(_) => {
                ApiError::BadRequest(e.to_string())
            }
            Io(io) => ApiError::internal(io),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
