//! API errors as RFC 9457 problem details: one mapping from error kind to status code, a stable
//! `type` per kind, client errors that say what was wrong, and internal errors that return a
//! generic body and are logged once with their detail.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use speechmill_queue::QueueError;
use utoipa::ToSchema;

/// The prefix of every problem `type`; the rest is the kind's stable slug.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:speechmill:problem:";

/// A problem details body (`application/problem+json`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem, `urn:speechmill:problem:<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What was wrong with this request.
    pub detail: String,
}

/// Everything a handler can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid API key (missing, unknown or revoked).
    #[error("a valid API key is required (Authorization: Bearer KEY)")]
    Unauthorized,
    /// The key lacks the scope the route needs.
    #[error("this API key lacks the {0} scope")]
    Forbidden(&'static str),
    /// The request is malformed or names something invalid.
    #[error("{0}")]
    BadRequest(String),
    /// An input path outside every configured input root, or one that does not exist there.
    #[error("{0}")]
    PathRejected(String),
    /// The named resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The resource is in a state that does not allow the operation.
    #[error("{0}")]
    Conflict(String),
    /// The upload is larger than `max_upload_bytes`.
    #[error("the upload is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The queue's backlog is over its limit; try again later.
    #[error("the queue holds {backlog} unfinished jobs, over the limit of {limit}; retry later")]
    Backlog {
        /// Unfinished jobs.
        backlog: u64,
        /// The configured limit.
        limit: u64,
        /// Seconds to suggest in `Retry-After`.
        retry_after_seconds: u64,
    },
    /// A dependency (database, storage) is unavailable or its circuit breaker is open.
    #[error("{what} is unavailable; retry later")]
    Unavailable {
        /// Which dependency.
        what: &'static str,
        /// Seconds to suggest in `Retry-After`.
        retry_after_seconds: u64,
    },
    /// The service is shutting down and takes no new work.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// A bug or an unexpected failure; the detail is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The stable slug, status and title of this kind.
    fn kind(&self) -> (&'static str, StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Forbidden(_) => ("forbidden", StatusCode::FORBIDDEN, "Missing scope"),
            ApiError::BadRequest(_) => ("bad-request", StatusCode::BAD_REQUEST, "Bad request"),
            ApiError::PathRejected(_) => ("path-rejected", StatusCode::BAD_REQUEST, "Input path rejected"),
            ApiError::NotFound(_) => ("not-found", StatusCode::NOT_FOUND, "Not found"),
            ApiError::Conflict(_) => ("conflict", StatusCode::CONFLICT, "Conflict with the job's state"),
            ApiError::TooLarge(_) => ("too-large", StatusCode::PAYLOAD_TOO_LARGE, "Upload too large"),
            ApiError::Backlog { .. } => ("backlog", StatusCode::TOO_MANY_REQUESTS, "Backlog over its limit"),
            ApiError::Unavailable { .. } => ("unavailable", StatusCode::SERVICE_UNAVAILABLE, "Dependency unavailable"),
            ApiError::ShuttingDown => ("shutting-down", StatusCode::SERVICE_UNAVAILABLE, "Shutting down"),
            ApiError::Internal(_) => ("internal", StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        }
    }

    /// The problem body this error answers with.
    pub fn problem(&self) -> Problem {
        let (slug, status, title) = self.kind();
        Problem {
            kind: format!("{PROBLEM_TYPE_PREFIX}{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        if err.is_transient() {
            tracing::warn!(error = %err, "database unavailable");
            return ApiError::Unavailable { what: "the database", retry_after_seconds: 5 };
        }
        match err {
            QueueError::NotFound { id } => ApiError::NotFound(format!("no job {id}")),
            QueueError::InvalidState { id, state } => ApiError::Conflict(format!("job {id} is {}", state.as_str())),
            QueueError::BadCursor(cursor) => ApiError::BadRequest(format!("invalid cursor {cursor:?}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(err: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError;
        match err {
            StorageError::BreakerOpen { retry_after } => {
                ApiError::Unavailable { what: "storage", retry_after_seconds: retry_after.as_secs().max(1) }
            }
            err if err.is_transient() => {
                tracing::warn!(error = %err, "storage unavailable");
                ApiError::Unavailable { what: "storage", retry_after_seconds: 5 }
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error answering a request");
        }
        let retry_after = match &self {
            ApiError::Backlog { retry_after_seconds, .. } | ApiError::Unavailable { retry_after_seconds, .. } => {
                Some(*retry_after_seconds)
            }
            ApiError::ShuttingDown => Some(5),
            _ => None,
        };
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, ApiError::Unauthorized) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_their_detail() {
        let problem = ApiError::Internal("password=hunter2 in /secret/path".into()).problem();
        assert_eq!(problem.detail, "internal error");
        assert_eq!(problem.kind, "urn:speechmill:problem:internal");
        assert_eq!(problem.status, 500);
    }

    #[test]
    fn a_missing_job_is_a_404_with_a_stable_type() {
        let problem = ApiError::from(QueueError::NotFound { id: "j1".into() }).problem();
        assert_eq!((problem.status, problem.kind.as_str()), (404, "urn:speechmill:problem:not-found"));
    }
}
