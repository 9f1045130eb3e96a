//! The key-value routes: `/kv/{key}` (PUT, GET, HEAD, DELETE) and the `/kv` listing.
//!
//! Owns their HTTP semantics only: keys from the raw path, `?ttl=`, `ETag`, `X-TTL`,
//! `If-Match` / `If-None-Match`, 201 versus 200, 304, 404. Storage is the engine's; errors are
//! mapped in `error.rs`; bulk routes (`/batch`, `/mget`) live in `bulk.rs`.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::body::read_limited;
use super::conditional::{self, TagSet, WriteCondition};
use super::dto::{KeyRef, ListResponse, RawValue};
use super::error::{ApiError, Problem, etag};
use super::keys::{decode_cursor, encode_cursor, key_from_path, parse_query};
use super::state::{AppState, CallKind};
use crate::engine::{Meta, PutOptions, UnixMillis};

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

/// `If-None-Match` on a read: true when the client's copy is current (answer 304).
fn not_modified(headers: &HeaderMap, meta: &Meta) -> Result<bool, ApiError> {
    Ok(conditional::tag_set(headers, header::IF_NONE_MATCH)?
        .is_some_and(|t: TagSet| t.matches(Some(meta.version))))
}

fn ttl_param(query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let mut ttl = None;
    for (name, value) in parse_query(query)? {
        match name.as_str() {
            "ttl" => {
                let secs = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|s| *s > 0)
                    .ok_or_else(|| {
                        ApiError::BadRequest("`ttl` must be a whole number of seconds >= 1".into())
                    })?;
                ttl = Some(secs);
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{other}` (this route takes `ttl`)"
                )));
            }
        }
    }
    Ok(ttl)
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
        ("ttl" = Option<u64>, Query, minimum = 1, description = "Seconds until the value expires."),
        ("If-Match" = Option<String>, Header, description = "Compare-and-set: write only if the current ETag is one of these (`*` = the key exists)."),
        ("If-None-Match" = Option<String>, Header, description = "`*` = create only: write only if the key is absent."),
    ),
    request_body(content = inline(RawValue), content_type = "application/octet-stream", description = "The value: any bytes, empty allowed, at most `max_value_bytes`."),
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
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = *state.limits();
    let key = key_from_path(uri.path(), limits.max_key_bytes)?;
    let ttl = ttl_param(uri.query())?;
    let cond = conditional::write_condition(&headers)?;
    let value = read_limited(&headers, body, limits.max_value_bytes, "the value").await?;
    let expires_at = expiry(ttl);
    let written = state
        .call(CallKind::Write, move |e| {
            let precondition = match cond {
                WriteCondition::Direct(p) => p,
                WriteCondition::NeedsCurrent {
                    if_match,
                    if_none_match,
                } => {
                    let current = e.head(&key)?.map(|m| m.version);
                    conditional::pin(if_match.as_ref(), if_none_match.as_ref(), current)?
                }
            };
            e.put(
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
        ("If-None-Match" = Option<String>, Header, description = "ETags the client holds: 304 when one is current."),
    ),
    responses(
        (status = 200, description = "The value's bytes.", body = inline(RawValue), content_type = "application/octet-stream",
            headers(("ETag" = String, description = "The version, quoted."), ("X-TTL" = u64, description = "Seconds left before the value expires (only on expiring values)."))),
        (status = 304, description = "Not modified: the client's ETag is current.", headers(("ETag" = String, description = "The version, quoted."))),
        (status = 400, description = "Malformed key or header.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent or expired.", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Key over `max_key_bytes`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting or stopping.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_key(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_from_path(uri.path(), state.limits().max_key_bytes)?;
    let value = state
        .call(CallKind::Read, move |e| e.get(&key))
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut h = meta_headers(&value.meta);
    if not_modified(&headers, &value.meta)? {
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
        ("If-None-Match" = Option<String>, Header, description = "ETags the client holds: 304 when one is current."),
    ),
    responses(
        (status = 200, description = "Present.", headers(
            ("ETag" = String, description = "The version, quoted."),
            ("X-TTL" = u64, description = "Seconds left before the value expires (only on expiring values)."),
            ("Content-Length" = u64, description = "Length of the value in bytes."))),
        (status = 304, description = "Not modified."),
        (status = 404, description = "Absent or expired (no body)."),
    )
)]
pub async fn head_key(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_from_path(uri.path(), state.limits().max_key_bytes)?;
    let meta = state
        .call(CallKind::Read, move |e| e.head(&key))
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut h = meta_headers(&meta);
    if not_modified(&headers, &meta)? {
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
        ("If-Match" = Option<String>, Header, description = "Delete only if the current ETag is one of these (`*` = exists)."),
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
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_from_path(uri.path(), state.limits().max_key_bytes)?;
    let cond = conditional::write_condition(&headers)?;
    let deleted = state
        .call(CallKind::Write, move |e| {
            let precondition = match cond {
                WriteCondition::Direct(p) => p,
                WriteCondition::NeedsCurrent {
                    if_match,
                    if_none_match,
                } => {
                    let current = e.head(&key)?.map(|m| m.version);
                    conditional::pin(if_match.as_ref(), if_none_match.as_ref(), current)?
                }
            };
            e.delete(&key, precondition)
        })
        .await?;
    match deleted {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(ApiError::NotFound),
    }
}

/// Lists keys by prefix, in ascending byte order, a page at a time.
#[utoipa::path(
    get,
    path = "/kv",
    tag = "kv",
    params(
        ("prefix" = Option<String>, Query, description = "Only keys starting with these bytes (percent-encoded; `+` is a space)."),
        ("limit" = Option<usize>, Query, minimum = 1, description = "Page size: default 100, larger values are clamped to `max_list_limit`."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page (opaque)."),
    ),
    responses(
        (status = 200, description = "One page of keys.", body = ListResponse),
        (status = 400, description = "Malformed parameter.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting or stopping.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<ListResponse>, ApiError> {
    let max = state.limits().max_list_limit;
    let mut prefix = Vec::new();
    let mut limit = DEFAULT_LIST_LIMIT.min(max);
    let mut start_after = None;
    for (name, value) in parse_query(uri.query())? {
        match name.as_str() {
            "prefix" => prefix = value,
            "limit" => {
                let n = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        ApiError::BadRequest("`limit` must be a whole number >= 1".into())
                    })?;
                limit = n.min(max);
            }
            "cursor" => start_after = Some(decode_cursor(&value)?),
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{other}` (this route takes `prefix`, `limit`, `cursor`)"
                )));
            }
        }
    }
    let page = state
        .call(CallKind::Read, move |e| {
            e.list(&prefix, start_after.as_deref(), limit)
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
