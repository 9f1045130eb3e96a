//! Request bodies read under a limit.
//!
//! Owns the two ways a handler takes a body: raw bytes (a value) and a JSON document (batch,
//! mget). Both refuse an over-limit `Content-Length` before reading anything, and stop reading
//! as soon as the bytes received pass the limit, so no body is ever buffered whole beyond it.

use std::pin::Pin;

use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Reads a body of at most `limit` bytes. `what` names it in the 413 message.
///
/// # Errors
/// 413 when the declared or received length passes `limit`; 400 when the body cannot be read
/// or its `Content-Length` is not a number.
pub async fn read_limited(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    what: &str,
) -> Result<Bytes, ApiError> {
    let too_large = |len: String| {
        ApiError::PayloadTooLarge(format!("{what} is {len} bytes, the limit is {limit}"))
    };
    let declared = match headers.get(header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Content-Length is not a number".into()))?,
        ),
        None => None,
    };
    if let Some(len) = declared
        && len > limit as u64
    {
        return Err(too_large(len.to_string()));
    }
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut received = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        received = received.saturating_add(data.len());
        if received > limit {
            return Err(too_large(format!("more than {limit}")));
        }
        match (&mut first, &mut buf) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let cap = declared.map_or(received, |d| d as usize).max(received);
                let mut b = BytesMut::with_capacity(cap);
                b.extend_from_slice(f);
                b.extend_from_slice(&data);
                buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&data),
        }
    }
    Ok(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

/// True when the request says its body is JSON (`application/json` or `application/*+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Reads and parses a JSON body of at most `limit` bytes.
///
/// # Errors
/// 415 without a JSON content type; 413 over the limit; 400 when the JSON does not parse or
/// does not have the expected shape, or is not a JSON object (the parser's message, with line
/// and column, is sent).
pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = read_limited(headers, body, limit, "the JSON body").await?;
    let bad = |e: serde_json::Error| ApiError::BadRequest(format!("invalid JSON: {e}"));
    // Every JSON body of this API is an object; a derived struct would also take an array.
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = super::requests::map_only(&mut de).map_err(bad)?;
    de.end().map_err(bad)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[tokio::test]
    async fn refuses_declared_and_actual_overflow() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        let r = read_limited(&h, Body::from("hello world"), 10, "value").await;
        assert!(matches!(r, Err(ApiError::PayloadTooLarge(_))));
        let r = read_limited(&HeaderMap::new(), Body::from("hello world"), 10, "value").await;
        assert!(matches!(r, Err(ApiError::PayloadTooLarge(_))));
        let r = read_limited(&HeaderMap::new(), Body::from("hello"), 10, "value").await;
        assert_eq!(r.ok(), Some(Bytes::from_static(b"hello")));
    }

    #[tokio::test]
    async fn json_needs_its_content_type() {
        let r: Result<serde_json::Value, _> =
            read_json(&HeaderMap::new(), Body::from("{}"), 10).await;
        assert!(matches!(r, Err(ApiError::UnsupportedMediaType)));
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        let r: Result<serde_json::Value, _> = read_json(&h, Body::from("{"), 10).await;
        assert!(matches!(r, Err(ApiError::BadRequest(_))));
        for not_object in ["[[]]", "[]", "1", "\"x\"", "{} {}"] {
            let r: Result<serde_json::Value, _> = read_json(&h, Body::from(not_object), 10).await;
            assert!(matches!(r, Err(ApiError::BadRequest(_))), "{not_object}");
        }
        let r: Result<serde_json::Value, _> = read_json(&h, Body::from(" {} "), 10).await;
        assert!(r.is_ok());
    }
}
