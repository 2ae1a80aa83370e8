//! The api's one error type: a single status mapping and a single Octopus-shaped body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cuttle_store::StoreError;
use cuttle_wire::ErrorBody;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    errors: Vec<String>,
    /// Seconds for `Retry-After` (429 only).
    retry_after: Option<u64>,
}

impl ApiError {
    /// 400 with a message and one detail per problem.
    pub fn bad_request(message: impl Into<String>, errors: Vec<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            errors,
            retry_after: None,
        }
    }

    /// 400 for one invalid field: the detail names it.
    pub fn invalid_field(field: &str, problem: impl Into<String>) -> Self {
        let problem = problem.into();
        ApiError::bad_request(
            "There was a problem with your request.",
            vec![format!("{field}: {problem}")],
        )
    }

    /// 404 naming what was not found.
    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("The resource you requested was not found: {}", what.into()),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 409 Conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 401: no or unknown credentials.
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "You must be logged in to perform this action. Please provide a valid API key in the X-Octopus-ApiKey header.".into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 403 naming the permission the caller lacks, in Octopus's words.
    pub fn forbidden(permission: cuttle_authz::Permission) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: cuttle_authz::missing_permission_message(permission),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 401 with a specific message (a failed sign-in).
    pub fn unauthorized_with(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 403: a write made with a session cookie did not echo its CSRF token.
    pub fn csrf() -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: "A write with a session cookie must send the Octopus-Csrf-Token cookie's value in the X-Octopus-Csrf-Token header.".into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// An error with a chosen status and message.
    pub fn with_status(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 403: the organisation has used all of a quota.
    pub fn quota(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: message.into(),
            errors: Vec::new(),
            retry_after: Some(retry_after_secs),
        }
    }

    /// 400 for an option Octopus accepts but Cuttle does not implement yet: refused, never
    /// silently ignored.
    pub fn unavailable(what: &str) -> Self {
        ApiError::bad_request(
            format!("{what} is not available in this version of Cuttle yet."),
            Vec::new(),
        )
    }

    /// 501: a route Octopus has that Cuttle does not implement yet; never a fake success.
    pub fn not_implemented(what: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_IMPLEMENTED,
            message: format!("{what} is not available in this version of Cuttle yet."),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 500: logged once here with its cause chain; the client gets a generic message.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "request failed with an internal error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "The server could not complete the request because of an internal error. It has been logged.".into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// The message and its details in one line, for HTML pages.
    pub fn describe(&self) -> String {
        std::iter::once(self.message.as_str())
            .chain(self.errors.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The status, for tests and middleware.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(message) => ApiError::bad_request(message.clone(), vec![message]),
            StoreError::VersionMismatch(message) => ApiError::conflict(message),
            other => ApiError::internal(other),
        }
    }
}

impl From<cuttle_store::sea_orm_err::DbErr> for ApiError {
    fn from(err: cuttle_store::sea_orm_err::DbErr) -> Self {
        ApiError::internal(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ErrorBody::new(self.message, self.errors))).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
