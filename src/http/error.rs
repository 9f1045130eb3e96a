//! The one place where failures become HTTP responses.
//!
//! Owns [`ApiError`] (everything a handler can fail with: the library [`Error`] plus the
//! HTTP-level refusals such as a missing JSON content type) and its single `IntoResponse`,
//! which renders an RFC 9457 `application/problem+json` document. Internal details (I/O
//! errors, corrupt files) are never sent to the client: the response carries them in a
//! [`ErrorDetail`] extension, and the one logging middleware [`log_errors`] writes them to the
//! log (5xx at error, others at debug). Nothing else in the crate decides an HTTP status for
//! an error.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::Version;
use crate::error::Error;

/// Content type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, as sent in every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:hoardhaven:problem:<slug>`).
    #[serde(rename = "type")]
    #[schema(example = "urn:hoardhaven:problem:not-found")]
    pub kind: String,
    /// Short, human-readable summary of the kind of problem.
    #[schema(example = "Not Found")]
    pub title: String,
    /// The HTTP status code, repeated for convenience.
    #[schema(example = 404)]
    pub status: u16,
    /// What went wrong with this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "no value under this key")]
    pub detail: Option<String>,
    /// `history-gone` only: the oldest version a watch may resume after (`since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_version: Option<u64>,
    /// `history-gone` only: the current version (list, then watch from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// A failure reported by the storage engine.
    Engine(Error),
    /// Malformed input: bad JSON, bad query parameter, bad header, bad percent-encoding.
    BadRequest(String),
    /// The key is absent (or expired).
    NotFound,
    /// The key is longer than the configured limit. `in_uri` picks 414 (key in the path) or
    /// 413 (key inside a JSON body).
    KeyTooLong {
        /// Bytes given.
        len: usize,
        /// Largest allowed.
        max: usize,
        /// Whether the key came from the request path.
        in_uri: bool,
    },
    /// The body (or a value inside it, or the number of operations) is over a limit.
    PayloadTooLarge(String),
    /// A JSON body was required and the request did not say `Content-Type: application/json`.
    UnsupportedMediaType,
    /// The method is not served on this path.
    MethodNotAllowed,
    /// No route matches the path.
    NoRoute,
    /// The engine is still opening (recovering) or the server is shutting down.
    NotReady,
    /// Too many requests in flight; the request was shed.
    Overloaded,
    /// A server-side failure that is not the engine's (a panicked task); logged, not sent.
    Internal(String),
    /// No bearer token, or one that is not known (401 with `WWW-Authenticate: Bearer`).
    /// `invalid` says a token was given (RFC 6750 `error="invalid_token"`). The token itself
    /// is never carried here.
    Unauthorized {
        /// A token was presented but is not known.
        invalid: bool,
    },
    /// The token is valid but its role is below what the route needs (403).
    Forbidden {
        /// The role the route needs, by name.
        needed: &'static str,
        /// The token's role, by name.
        has: &'static str,
    },
    /// The request was not answered within the configured request timeout (408).
    RequestTimeout,
    /// The request target (path and query) is longer than the configured limit (414).
    UriTooLong {
        /// Bytes given.
        len: usize,
        /// Largest allowed.
        max: usize,
    },
    /// A cluster membership change that conflicts with the membership (409 `cluster-conflict`):
    /// an id or URL already in use, the last voter, a cluster already initialized.
    ClusterConflict(String),
    /// A cluster member named by id that is not one (404).
    NoSuchMember(String),
    /// A watch asked to resume from a version older than the history kept (410).
    HistoryGone {
        /// The oldest version one may resume after.
        oldest: Version,
        /// The current version.
        current: Version,
    },
    /// Every watcher slot is taken (503 with `Retry-After`).
    TooManyWatchers {
        /// The configured cap.
        max: usize,
    },
    /// The request's header fields together are larger than the configured limit (431).
    HeadersTooLarge {
        /// Bytes given.
        len: usize,
        /// Largest allowed.
        max: usize,
    },
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Engine(e)
    }
}

impl ApiError {
    /// Status, problem slug and client-facing detail.
    fn parts(&self) -> (StatusCode, &'static str, Option<String>) {
        use StatusCode as S;
        match self {
            ApiError::BadRequest(m) => (S::BAD_REQUEST, "bad-request", Some(m.clone())),
            ApiError::NotFound => (
                S::NOT_FOUND,
                "not-found",
                Some("no value under this key".into()),
            ),
            ApiError::KeyTooLong { len, max, in_uri } => {
                let status = if *in_uri {
                    S::URI_TOO_LONG
                } else {
                    S::PAYLOAD_TOO_LARGE
                };
                let detail = format!("key is {len} bytes, the limit is {max}");
                (status, "key-too-long", Some(detail))
            }
            ApiError::PayloadTooLarge(m) => (S::PAYLOAD_TOO_LARGE, "too-large", Some(m.clone())),
            ApiError::ClusterConflict(m) => (S::CONFLICT, "cluster-conflict", Some(m.clone())),
            ApiError::NoSuchMember(m) => (S::NOT_FOUND, "not-found", Some(m.clone())),
            ApiError::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                Some("this endpoint needs `Content-Type: application/json`".into()),
            ),
            ApiError::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method-not-allowed", None),
            ApiError::NoRoute => (
                S::NOT_FOUND,
                "no-route",
                Some("no such endpoint; see /openapi.json".into()),
            ),
            ApiError::NotReady => (
                S::SERVICE_UNAVAILABLE,
                "not-ready",
                Some("the store is starting or stopping; retry shortly".into()),
            ),
            ApiError::Overloaded => (
                S::SERVICE_UNAVAILABLE,
                "overloaded",
                Some("too many requests in flight; retry shortly".into()),
            ),
            ApiError::Internal(_) => (
                S::INTERNAL_SERVER_ERROR,
                "internal",
                Some("internal error; details are in the server log".into()),
            ),
            ApiError::Unauthorized { invalid } => (
                S::UNAUTHORIZED,
                "unauthorized",
                Some(if *invalid {
                    "the bearer token is not valid".into()
                } else {
                    "this endpoint needs `Authorization: Bearer <token>`".into()
                }),
            ),
            ApiError::Forbidden { needed, has } => (
                S::FORBIDDEN,
                "forbidden",
                Some(format!(
                    "this needs the `{needed}` role; the token has `{has}`"
                )),
            ),
            ApiError::RequestTimeout => (
                S::REQUEST_TIMEOUT,
                "request-timeout",
                Some("the request was not completed within the request timeout".into()),
            ),
            ApiError::UriTooLong { len, max } => (
                S::URI_TOO_LONG,
                "uri-too-long",
                Some(format!(
                    "the request target is {len} bytes, the limit is {max}"
                )),
            ),
            ApiError::HeadersTooLarge { len, max } => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                Some(format!(
                    "the header fields are {len} bytes, the limit is {max}"
                )),
            ),
            ApiError::HistoryGone { oldest, current } => (
                S::GONE,
                "history-gone",
                Some(format!(
                    "the change history no longer reaches back to that version: list the keys \
                     (the listing's X-Hoardhaven-Version is {}), then watch from there; the \
                     oldest version to resume after is {}",
                    current.0, oldest.0
                )),
            ),
            ApiError::TooManyWatchers { max } => (
                S::SERVICE_UNAVAILABLE,
                "too-many-watchers",
                Some(format!("all {max} watcher slots are taken; retry shortly")),
            ),
            ApiError::Engine(e) => engine_parts(e),
        }
    }
}

/// The mapping of library errors. Exhaustive on purpose: a new variant must be mapped here.
fn engine_parts(e: &Error) -> (StatusCode, &'static str, Option<String>) {
    use StatusCode as S;
    match e {
        Error::PreconditionFailed { .. } => (
            S::PRECONDITION_FAILED,
            "precondition-failed",
            Some("the key's current version does not satisfy If-Match / If-None-Match".into()),
        ),
        Error::EmptyKey => (S::BAD_REQUEST, "empty-key", Some(e.to_string())),
        Error::KeyTooLarge { .. } => (S::URI_TOO_LONG, "key-too-long", Some(e.to_string())),
        Error::ValueTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "too-large", Some(e.to_string())),
        Error::BatchTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "too-large", Some(e.to_string())),
        Error::Busy(_) => (S::CONFLICT, "job-running", Some(e.to_string())),
        Error::DiskFull { .. } => (
            S::INSUFFICIENT_STORAGE,
            "disk-full",
            Some("the disk is full; the write was not made".into()),
        ),
        Error::Poisoned(_) => (
            S::SERVICE_UNAVAILABLE,
            "write-refused",
            Some("writes are refused after an earlier I/O failure; restart needed".into()),
        ),
        // 500, not 503: retrying will not help (the bytes on disk are bad until restored
        // from a snapshot or backup), and the fault is the server's, not the request's. The
        // type says what it is; file and offset go to the log, not to the client.
        Error::Corrupted { .. } => (
            S::INTERNAL_SERVER_ERROR,
            "corrupted",
            Some(
                "the stored record failed its checksum and is not served; the server log \
                 names the file and offset (see docs/operations.md, damage and corruption)"
                    .into(),
            ),
        ),
        Error::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable", Some(e.to_string())),
        // The type tells a client the write was applied nowhere (a retry is safe); plain
        // "unavailable" leaves the outcome unknown.
        Error::NotApplied(_) => (S::SERVICE_UNAVAILABLE, "not-applied", Some(e.to_string())),
        Error::ReservedKey(_) => (S::BAD_REQUEST, "reserved-key", Some(e.to_string())),
        Error::Closed => (
            S::SERVICE_UNAVAILABLE,
            "not-ready",
            Some("the store is shutting down".into()),
        ),
        Error::Io { .. }
        | Error::Locked(_)
        | Error::UnsupportedFormat { .. }
        | Error::InvalidConfig { .. }
        | Error::ReadOnly
        | Error::WrongEngine { .. } => (
            S::INTERNAL_SERVER_ERROR,
            "internal",
            Some("internal error; details are in the server log".into()),
        ),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, detail) = self.parts();
        let problem = Problem {
            kind: format!("urn:hoardhaven:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            oldest_version: None,
            current_version: None,
        };
        let problem = match &self {
            ApiError::HistoryGone { oldest, current } => Problem {
                oldest_version: Some(oldest.0),
                current_version: Some(current.0),
                ..problem
            },
            _ => problem,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.extensions_mut().insert(ErrorDetail {
            kind: slug,
            detail: self.log_detail(),
        });
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            ApiError::NotReady
            | ApiError::Overloaded
            | ApiError::TooManyWatchers { .. }
            | ApiError::Engine(Error::Closed | Error::Unavailable(_) | Error::NotApplied(_)) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized { invalid } => {
                let v = if *invalid {
                    "Bearer realm=\"hoardhaven\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"hoardhaven\""
                };
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
            }
            ApiError::Forbidden { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"hoardhaven\", error=\"insufficient_scope\"",
                    ),
                );
            }
            ApiError::RequestTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // Version 0 is never written: an engine reporting it only means "present".
            ApiError::Engine(Error::PreconditionFailed {
                current: Some(version),
            }) if version.0 > 0 => {
                if let Ok(v) = HeaderValue::from_str(&etag(*version)) {
                    headers.insert(header::ETAG, v);
                }
            }
            _ => {}
        }
        resp
    }
}

impl ApiError {
    /// What the log says about this failure (may name files; never sent to the client).
    fn log_detail(&self) -> String {
        match self {
            ApiError::Engine(e) => e.to_string(),
            ApiError::Internal(m)
            | ApiError::BadRequest(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::ClusterConflict(m)
            | ApiError::NoSuchMember(m) => m.clone(),
            other => format!("{other:?}"),
        }
    }
}

/// What a failed response carries for the log: the problem type and the internal detail.
#[derive(Clone, Debug)]
pub struct ErrorDetail {
    /// The problem slug (`corrupted`, `internal`, ...).
    pub kind: &'static str,
    /// The full error, which the client does not see.
    pub detail: String,
}

/// The one place failures are logged: 5xx at error, other refusals at debug. It runs inside
/// the request span, which names the method, path and request id.
pub async fn log_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if let Some(e) = resp.extensions().get::<ErrorDetail>() {
        let status = resp.status().as_u16();
        if resp.status().is_server_error() {
            tracing::error!(status, kind = e.kind, error = %e.detail, "request failed");
        } else {
            tracing::debug!(status, kind = e.kind, error = %e.detail, "request refused");
        }
    }
    resp
}

/// The strong ETag of a version: the decimal sequence number in quotes.
pub fn etag(v: Version) -> String {
    format!("\"{}\"", v.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_never_maps_to_5xx() {
        let inputs = [
            ApiError::BadRequest("x".into()),
            ApiError::KeyTooLong {
                len: 9,
                max: 1,
                in_uri: true,
            },
            ApiError::PayloadTooLarge("x".into()),
            ApiError::UnsupportedMediaType,
            ApiError::Engine(Error::EmptyKey),
            ApiError::Engine(Error::KeyTooLarge { len: 9, max: 1 }),
            ApiError::Engine(Error::ValueTooLarge { len: 9, max: 1 }),
            ApiError::Engine(Error::BatchTooLarge("x".into())),
            ApiError::Engine(Error::PreconditionFailed { current: None }),
            ApiError::Unauthorized { invalid: true },
            ApiError::Forbidden {
                needed: "admin",
                has: "read",
            },
            ApiError::RequestTimeout,
            ApiError::UriTooLong { len: 9, max: 1 },
            ApiError::HeadersTooLarge { len: 9, max: 1 },
        ];
        for e in inputs {
            let status = e.into_response().status();
            assert!(status.is_client_error(), "{status}");
        }
    }

    #[test]
    fn problem_has_its_content_type_and_etag_on_412() {
        let resp = ApiError::Engine(Error::PreconditionFailed {
            current: Some(Version(7)),
        })
        .into_response();
        assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(resp.headers()[header::ETAG], "\"7\"");
    }
}
