//! The OpenAPI 3.1 document.
//!
//! Owns the document's root (title, description, tags) and its last touches: the handlers'
//! `#[utoipa::path]` attributes produce the paths and schemas through utoipa-axum's router (so
//! routes and document cannot drift); [`finish`] then writes the configured limits into the
//! document and renames the catch-all `{*key}` template to OpenAPI's `{key}`. The result is
//! served at `/openapi.json` and committed as `openapi/openapi.json` (a test keeps them equal).

use serde_json::{Value, json};
use utoipa::OpenApi;

use super::state::Limits;

/// The document's root; paths and schemas come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hoardhaven",
        description = "A persistent key-value store over HTTP/JSON.\n\n\
Keys are arbitrary non-empty byte strings, percent-encoded in the path: `/kv/a/b/c` is the key \
`a/b/c` and `%FF` is the byte 0xFF. Values are arbitrary bytes. JSON bodies carry keys and \
values as UTF-8 text in `key` / `value`, with a `key_base64` / `value_base64` twin (standard \
base64) wherever the bytes are not UTF-8.\n\n\
Every error is an RFC 9457 `application/problem+json` document.\n\n\
ETags are the value's version (an engine-wide sequence number) in quotes; `If-Match` gives \
compare-and-set, `If-None-Match: *` create-only. `X-TTL` tells the seconds left on expiring \
values.",
        license(name = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "kv", description = "Keys and values."),
        (name = "admin", description = "Merge, snapshot, statistics."),
        (name = "ops", description = "Probes and metrics."),
    ),
)]
pub struct ApiDoc;

/// Turns the generated document into the served one: OpenAPI path templates, limits shown.
pub fn finish(doc: &utoipa::openapi::OpenApi, limits: &Limits) -> Value {
    let mut v = serde_json::to_value(doc).unwrap_or(Value::Null);
    if let Some(paths) = v.get_mut("paths").and_then(Value::as_object_mut)
        && let Some(item) = paths.remove("/kv/{*key}")
    {
        paths.insert("/kv/{key}".into(), item);
    }
    if let Some(info) = v.get_mut("info").and_then(Value::as_object_mut) {
        let base = info
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let table = format!(
            "\n\n## Limits of this server\n\n\
| limit | value | over it |\n|---|---|---|\n\
| key bytes (`max_key_bytes`) | {} | 414 in the path, 413 in a body |\n\
| value bytes (`max_value_bytes`) | {} | 413 |\n\
| operations per batch or keys per mget (`max_batch_ops`) | {} | 413 |\n\
| JSON body bytes (`max_body_bytes`) | {} | 413 |\n\
| keys per listing page (`max_list_limit`) | {} | clamped |\n\
| requests in flight (`max_in_flight`) | {} | 503 |",
            limits.max_key_bytes,
            limits.max_value_bytes,
            limits.max_batch_ops,
            limits.max_body_bytes,
            limits.max_list_limit,
            limits.max_in_flight,
        );
        info.insert("description".into(), Value::String(base + &table));
        info.insert(
            "x-limits".into(),
            json!({
                "max_key_bytes": limits.max_key_bytes,
                "max_value_bytes": limits.max_value_bytes,
                "max_batch_ops": limits.max_batch_ops,
                "max_body_bytes": limits.max_body_bytes,
                "max_list_limit": limits.max_list_limit,
                "max_in_flight": limits.max_in_flight,
            }),
        );
    }
    if let Some(schemas) = v
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (schema, field) in [("BatchRequest", "ops"), ("MgetRequest", "keys")] {
            if let Some(p) = schemas
                .get_mut(schema)
                .and_then(|s| s.pointer_mut(&format!("/properties/{field}")))
                .and_then(Value::as_object_mut)
            {
                p.insert("maxItems".into(), json!(limits.max_batch_ops));
            }
        }
    }
    v
}

/// The served bytes: pretty JSON with a final newline (as committed in the repository).
pub fn to_bytes(doc: &Value) -> bytes::Bytes {
    let mut s = serde_json::to_string_pretty(doc).unwrap_or_default();
    s.push('\n');
    bytes::Bytes::from(s)
}
