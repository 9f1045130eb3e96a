//! The multi-key routes: `POST /batch` (atomic writes) and `POST /mget` (reads).
//!
//! Owns the translation of their JSON bodies into engine calls: validation of every key and
//! value against the limits before anything is written, then one `apply_batch` (all or nothing)
//! or one engine call reading every key.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use bytes::Bytes;

use super::body::read_json;
use super::dto::{
    BatchOpDto, BatchOpResult, BatchRequest, BatchResponse, KeyRef, MgetKey, MgetRequest,
    MgetResponse, MgetValue, OpKind,
};
use super::error::{ApiError, Problem, etag};
use super::keys::{b64, check_key, unb64};
use super::kv::expiry;
use super::state::{AppState, CallKind, Limits};
use crate::engine::BatchOp;

fn too_many(n: usize, max: usize, what: &str) -> ApiError {
    ApiError::PayloadTooLarge(format!("{n} {what}, the limit is {max}"))
}

fn batch_op(i: usize, op: BatchOpDto, limits: &Limits) -> Result<BatchOp, ApiError> {
    let at = |e: ApiError| match e {
        ApiError::BadRequest(m) => ApiError::BadRequest(format!("ops[{i}]: {m}")),
        ApiError::PayloadTooLarge(m) => ApiError::PayloadTooLarge(format!("ops[{i}]: {m}")),
        other => other,
    };
    let key = KeyRef {
        key: op.key,
        key_base64: op.key_base64,
    }
    .to_bytes()
    .map_err(at)?;
    check_key(&key, limits.max_key_bytes, false).map_err(at)?;
    match op.op {
        OpKind::Delete => {
            if op.value.is_some() || op.value_base64.is_some() || op.ttl.is_some() {
                return Err(at(ApiError::BadRequest(
                    "a delete takes no `value`, `value_base64` or `ttl`".into(),
                )));
            }
            Ok(BatchOp::Delete { key })
        }
        OpKind::Put => {
            let value = match (op.value, op.value_base64) {
                (Some(v), None) => Bytes::from(v),
                (None, Some(b)) => Bytes::from(unb64(&b, "value_base64").map_err(at)?),
                _ => {
                    return Err(at(ApiError::BadRequest(
                        "a put needs exactly one of `value` and `value_base64`".into(),
                    )));
                }
            };
            if value.len() > limits.max_value_bytes {
                return Err(at(ApiError::PayloadTooLarge(format!(
                    "value is {} bytes, the limit is {}",
                    value.len(),
                    limits.max_value_bytes
                ))));
            }
            Ok(BatchOp::Put {
                key,
                value,
                expires_at: expiry(op.ttl),
            })
        }
    }
}

/// Applies puts and deletes all-or-nothing, also across a crash.
#[utoipa::path(
    post,
    path = "/batch",
    tag = "kv",
    request_body(content = BatchRequest, description = "At most `max_batch_ops` operations and `max_body_bytes` bytes; each key and value within its limit. Keys and values are UTF-8 text in `key` / `value`, or any bytes in `key_base64` / `value_base64`."),
    responses(
        (status = 200, description = "All applied; results in request order.", body = BatchResponse),
        (status = 400, description = "Malformed JSON or operation; nothing applied.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Too many operations, or a body, key or value over its limit; nothing applied.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting, stopping, or writes refused.", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "Disk full; nothing applied.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchResponse>, ApiError> {
    let limits = *state.limits();
    let req: BatchRequest = read_json(&headers, body, limits.max_body_bytes).await?;
    if req.ops.len() > limits.max_batch_ops {
        return Err(too_many(req.ops.len(), limits.max_batch_ops, "operations"));
    }
    let kinds: Vec<OpKind> = req.ops.iter().map(|o| o.op).collect();
    let ops = req
        .ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| batch_op(i, op.0, &limits))
        .collect::<Result<Vec<_>, _>>()?;
    let results = if ops.is_empty() {
        Vec::new()
    } else {
        state
            .call_write(move |e| e.apply_batch_checked_deferred(&[], ops))
            .await?
    };
    Ok(Json(BatchResponse {
        results: kinds
            .into_iter()
            .zip(results)
            .map(|(op, r)| BatchOpResult {
                op,
                etag: etag(r.version),
                // The engine's flag means "existed just before": a put without it created.
                created: (op == OpKind::Put).then_some(!r.existed_before),
                deleted: (op == OpKind::Delete).then_some(r.existed_before),
            })
            .collect(),
    }))
}

/// Reads many keys at once.
#[utoipa::path(
    post,
    path = "/mget",
    tag = "kv",
    request_body(content = MgetRequest, description = "At most `max_batch_ops` keys. Each key is a string, or an object with `key` or `key_base64`."),
    responses(
        (status = 200, description = "One entry per key, in request order; absent keys have `found: false` and `value: null`. Values that are not UTF-8 come in `value_base64`.", body = MgetResponse),
        (status = 400, description = "Malformed JSON or key.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Too many keys, or a body or key over its limit.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "A stored record failed its checksum (type `corrupted`); see docs/operations.md.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting or stopping.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn mget(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<MgetResponse>, ApiError> {
    let limits = *state.limits();
    let req: MgetRequest = read_json(&headers, body, limits.max_body_bytes).await?;
    if req.keys.len() > limits.max_batch_ops {
        return Err(too_many(req.keys.len(), limits.max_batch_ops, "keys"));
    }
    let keys = req
        .keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let bytes = match k {
                MgetKey::Text(s) => s.into_bytes(),
                MgetKey::Ref(r) => r.to_bytes().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "keys[{i}]: give exactly one of `key` and `key_base64` (valid base64)"
                    ))
                })?,
            };
            check_key(&bytes, limits.max_key_bytes, false)?;
            Ok(bytes)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let values = state
        .call(CallKind::Read, move |e| {
            keys.into_iter()
                .map(|k| Ok((e.get(&k)?, k)))
                .collect::<crate::Result<Vec<_>>>()
        })
        .await?;
    Ok(Json(MgetResponse {
        values: values
            .into_iter()
            .map(|(v, k)| {
                let key = KeyRef::from_bytes(&k);
                match v {
                    None => MgetValue {
                        key,
                        found: false,
                        value: None,
                        value_base64: None,
                        etag: None,
                    },
                    Some(v) => {
                        let text = std::str::from_utf8(&v.bytes).ok().map(str::to_owned);
                        MgetValue {
                            key,
                            found: true,
                            value_base64: text.is_none().then(|| b64(&v.bytes)),
                            value: text,
                            etag: Some(etag(v.meta.version)),
                        }
                    }
                }
            })
            .collect(),
    }))
}
