//! The key-value routes: `/kv/{key}` (PUT, GET, HEAD, DELETE) and the `/kv` listing.
//!
//! Owns their HTTP semantics only: keys from the raw path, `?ttl=`, `ETag`, `X-TTL`,
//! `If-Match` / `If-None-Match`, 201 versus 200, 304, 404. Storage is the engine's; errors are
//! mapped in `error.rs`; bulk routes (`/batch`, `/mget`) live in `bulk.rs`.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::body::read_limited;
use super::conditional::{IfNoneMatch, WriteConditions};
use super::dto::{KeyRef, ListResponse, RawValue};
use super::error::{ApiError, Problem, etag};
use super::extract::{Key, ListQuery, Query, TtlQuery};
use super::keys::{decode_cursor, encode_cursor};
use super::state::{AppState, CallKind};
use crate::engine::{KeyRange, Meta, PutOptions, UnixMillis};

/// Remaining time to live in whole seconds (rounded up), on GET and HEAD of expiring keys.
pub const X_TTL: HeaderName = HeaderName::from_static("x-ttl");

/// Default page size of `GET /kv`.
const DEFAULT_LIST_LIMIT: usize = 100;

/// The headers describing a stored value: `ETag` and, when it expires, `X-TTL`.
fn meta_headers(meta: &Meta) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag(meta.version)) {
        h.insert(header::ETAG, v);
    }
    if let Some(exp) = meta.expires_at {
        // Seconds left, rounded to the nearest second (like Redis's TTL), at least 1 while
        // the value exists.
        let left_ms = exp.0.saturating_sub(UnixMillis::now().0);
        h.insert(X_TTL, HeaderValue::from(((left_ms + 500) / 1000).max(1)));
    }
    h
}

/// Expiry instant of a TTL in seconds.
pub fn expiry(ttl: Option<u64>) -> Option<UnixMillis> {
    ttl.map(|s| UnixMillis::after(Duration::from_secs(s)))
}

/// Stores the request body under the key.
#[utoipa::path(
    put,
    path = "/kv/{*key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded; `/` is allowed and part of the key (`/kv/a/b` is the key `a/b`), `%FF` is the byte 0xFF."),
        TtlQuery,
        WriteConditions,
    ),
    request_body(content = inline(RawValue), content_type = "application/octet-stream", description = "The value: any bytes, at most `max_value_bytes`; no body (or an empty one) stores the empty value."),
    responses(
        (status = 201, description = "Created: the key was absent.", headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 200, description = "Replaced an existing value.", headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 400, description = "Malformed key, query or header.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match / If-None-Match did not hold.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Value over `max_value_bytes`.", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Key over `max_key_bytes`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting, stopping, shedding load, or writes refused after an I/O failure.", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "Disk full: the write was not made.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_key(
    State(state): State<AppState>,
    Key(key): Key,
    Query(query): Query<TtlQuery>,
    cond: WriteConditions,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = *state.limits();
    let value = read_limited(&headers, body, limits.max_value_bytes, "the value").await?;
    let expires_at = expiry(query.ttl);
    let written = state
        .call_write(move |e| {
            let precondition = cond.precondition(e, &key)?;
            e.put_deferred(
                &key,
                value,
                PutOptions {
                    expires_at,
                    precondition,
                },
            )
        })
        .await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag(written.version)) {
        h.insert(header::ETAG, v);
    }
    Ok((status, h).into_response())
}

/// Reads the value under the key.
#[utoipa::path(
    get,
    path = "/kv/{*key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded (see PUT)."),
        IfNoneMatch,
    ),
    responses(
        (status = 200, description = "The value's bytes.", body = inline(RawValue), content_type = "application/octet-stream",
            headers(("ETag" = String, description = "The version, quoted."), ("X-TTL" = u64, description = "Seconds left before the value expires (only on expiring values)."))),
        (status = 304, description = "Not modified: the client's ETag is current.", headers(("ETag" = String, description = "The version, quoted."))),
        (status = 400, description = "Malformed key or header.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent or expired.", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Key over `max_key_bytes`.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The stored record failed its checksum (type `corrupted`): it is not served; see docs/operations.md.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting or stopping.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_key(
    State(state): State<AppState>,
    Key(key): Key,
    cond: IfNoneMatch,
) -> Result<Response, ApiError> {
    let value = state
        .call(CallKind::Read, move |e| e.get(&key))
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut h = meta_headers(&value.meta);
    if cond.not_modified(&value.meta) {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok((StatusCode::OK, h, value.bytes).into_response())
}

/// The value's headers without its bytes.
#[utoipa::path(
    head,
    path = "/kv/{*key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded (see PUT)."),
        IfNoneMatch,
    ),
    responses(
        (status = 200, description = "Present.", headers(
            ("ETag" = String, description = "The version, quoted."),
            ("X-TTL" = u64, description = "Seconds left before the value expires (only on expiring values)."),
            ("Content-Length" = u64, description = "Length of the value in bytes."))),
        (status = 304, description = "Not modified."),
        (status = 400, description = "Malformed key or header (no body: HEAD)."),
        (status = 404, description = "Absent or expired (no body)."),
        (status = 414, description = "Key over `max_key_bytes` (no body: HEAD)."),
        (status = 500, description = "The stored record failed its checksum (no body: HEAD)."),
        (status = 503, description = "Starting, stopping or shedding load (no body: HEAD)."),
    )
)]
pub async fn head_key(
    State(state): State<AppState>,
    Key(key): Key,
    cond: IfNoneMatch,
) -> Result<Response, ApiError> {
    let meta = state
        .call(CallKind::Read, move |e| e.head(&key))
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut h = meta_headers(&meta);
    if cond.not_modified(&meta) {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.value_len));
    Ok((StatusCode::OK, h).into_response())
}

/// Removes the key.
#[utoipa::path(
    delete,
    path = "/kv/{*key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded (see PUT)."),
        WriteConditions,
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "Malformed key or header.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent or expired.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not hold.", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Key over `max_key_bytes`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting, stopping, or writes refused.", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "Disk full.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_key(
    State(state): State<AppState>,
    Key(key): Key,
    cond: WriteConditions,
) -> Result<Response, ApiError> {
    let deleted = state
        .call_write(move |e| {
            let precondition = cond.precondition(e, &key)?;
            e.delete_deferred(&key, precondition)
        })
        .await?;
    match deleted {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(ApiError::NotFound),
    }
}

/// Lists keys by prefix and/or `[start, end)` range, in ascending byte order, a page at a time.
#[utoipa::path(
    get,
    path = "/kv",
    tag = "kv",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of keys.", body = ListResponse),
        (status = 400, description = "Malformed parameter.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting or stopping.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ListResponse>, ApiError> {
    let max = state.limits().max_list_limit;
    let prefix = query.prefix.unwrap_or_default();
    let limit = query
        .limit
        .map_or(DEFAULT_LIST_LIMIT, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        })
        .min(max);
    let start_after = match query.cursor {
        None => None,
        Some(c) if c.is_empty() => None,
        Some(c) => Some(decode_cursor(&c)?),
    };
    let (start, end) = (query.start, query.end);
    let page = state
        .call(CallKind::Read, move |e| {
            let range = KeyRange {
                prefix: &prefix,
                start: start.as_deref(),
                end: end.as_deref(),
            };
            e.list_range(&range, start_after.as_deref(), limit)
        })
        .await?;
    Ok(Json(ListResponse {
        keys: page.keys.iter().map(|k| KeyRef::from_bytes(k)).collect(),
        next_cursor: page.next_start_after.as_deref().map(encode_cursor),
    }))
}

/// `/kv/` with nothing after it: the empty key, which no engine stores.
pub async fn empty_key() -> ApiError {
    ApiError::BadRequest("the key must not be empty".into())
}
