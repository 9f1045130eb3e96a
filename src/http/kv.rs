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

/// `?wait=&version=` of `GET /kv/{key}`: a blocking read (Consul's blocking query on one key).
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BlockingQuery {
    /// Wait up to this long (`30s`, `500ms`, `2m`, or whole seconds; at most
    /// `watch_max_wait_secs`) for the key's version to differ from `version`.
    #[param(value_type = Option<String>, example = "30s", pattern = "^[0-9]{1,18}(ms|s|m)?$")]
    pub wait: Option<String>,
    /// The version the client has (its ETag without quotes; `0` = absent). Without it the read
    /// does not block.
    #[serde(default, deserialize_with = "super::extract::int64_param")]
    pub version: Option<u64>,
}

/// Parses `30s`, `500ms`, `2m` or a bare number of seconds.
fn parse_wait(s: &str) -> Result<Duration, ApiError> {
    let bad = || ApiError::BadRequest(format!("bad `wait` `{s}`: use e.g. 30s, 500ms or 2m"));
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(bad()),
    }
}

/// Blocks until `key`'s version differs from `have` (0 = absent), the wait passes, or the
/// server stops. Returns true when it changed.
async fn wait_for_change(
    state: &AppState,
    key: &[u8],
    have: u64,
    wait: Duration,
) -> Result<bool, ApiError> {
    let hub = state.watch();
    let mut moved = hub.moved();
    let mut stop = hub.stopping();
    let deadline = tokio::time::Instant::now() + wait.min(hub.options().max_wait);
    loop {
        // Subscribed before reading: a write after this read wakes us.
        moved.borrow_and_update();
        let k = key.to_vec();
        let now = state
            .call(CallKind::Read, move |e| e.head(&k))
            .await?
            .map_or(0, |m| m.version.0);
        if now != have {
            return Ok(true);
        }
        tokio::select! {
            r = moved.changed() => if r.is_err() { return Ok(false) },
            () = tokio::time::sleep_until(deadline) => return Ok(false),
            _ = stop.wait_for(|s| *s) => return Ok(false),
        }
    }
}

/// Reads the value under the key.
#[utoipa::path(
    get,
    path = "/kv/{*key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded (see PUT)."),
        IfNoneMatch,
        BlockingQuery,
    ),
    responses(
        (status = 200, description = "The value's bytes.", body = inline(RawValue), content_type = "application/octet-stream",
            headers(("ETag" = String, description = "The version, quoted."), ("X-TTL" = u64, description = "Seconds left before the value expires (only on expiring values)."))),
        (status = 304, description = "Not modified: the client's ETag is current, or a blocking read's `wait` passed with the version unchanged.", headers(("ETag" = String, description = "The version, quoted."))),
        (status = 400, description = "Malformed key, header, `wait` or `version`.", body = Problem, content_type = "application/problem+json"),
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
    Query(blocking): Query<BlockingQuery>,
) -> Result<Response, ApiError> {
    if let (Some(w), Some(have)) = (&blocking.wait, blocking.version) {
        let wait = parse_wait(w)?;
        if !wait_for_change(&state, &key, have, wait).await? {
            let mut h = HeaderMap::new();
            if have > 0
                && let Ok(v) = HeaderValue::from_str(&etag(crate::engine::Version(have)))
            {
                h.insert(header::ETAG, v);
            }
            return Ok((StatusCode::NOT_MODIFIED, h).into_response());
        }
    } else if let Some(w) = &blocking.wait {
        parse_wait(w)?;
    }
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
        (status = 200, description = "One page of keys.", body = ListResponse,
            headers(("X-Hoardhaven-Version" = u64, description = "The store's version when the page was read: watch `since` it for the changes after (docs/watch.md)."))),
        (status = 400, description = "Malformed parameter.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting or stopping.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
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
    // The version is read before the listing: every change after it is in a watch `since` it,
    // so "list, then watch from X-Hoardhaven-Version" has no gap (at worst a repeat).
    let (version, page) = state
        .call(CallKind::Read, move |e| {
            let v = e.changes().map(|c| c.current());
            let range = KeyRange {
                prefix: &prefix,
                start: start.as_deref(),
                end: end.as_deref(),
            };
            Ok((v, e.list_range(&range, start_after.as_deref(), limit)?))
        })
        .await?;
    let mut resp = Json(ListResponse {
        keys: page.keys.iter().map(|k| KeyRef::from_bytes(k)).collect(),
        next_cursor: page.next_start_after.as_deref().map(encode_cursor),
    })
    .into_response();
    if let Some(v) = version
        && let Ok(h) = HeaderValue::from_str(&v.0.to_string())
    {
        resp.headers_mut().insert(super::watch::X_VERSION, h);
    }
    Ok(resp)
}

/// `/kv/` with nothing after it: the empty key, which no engine stores.
pub async fn empty_key() -> ApiError {
    ApiError::BadRequest("the key must not be empty".into())
}
