//! The OpenAPI 3.1 document.
//!
//! Owns the document's root (title, description, tags) and its last touches: the handlers'
//! `#[utoipa::path]` attributes produce the paths and schemas through utoipa-axum's router (so
//! routes and document cannot drift); [`finish`] then applies the server's `utoipa::Modify`
//! steps: [`PathTemplates`] renames the catch-all `{*key}` template to OpenAPI's `{key}`,
//! [`LimitsDoc`] writes the configured limits in, and `auth::SecurityDoc` the roles. The result is
//! served at `/openapi.json` and committed as `openapi/openapi.json` (a test keeps them equal).

use serde_json::{Value, json};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::{OpenApi as OpenApiDoc, RefOr, Schema};
use utoipa::{Modify, OpenApi};

use super::extract::MAX_TTL_SECS;
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

/// Renames the catch-all `{*key}` template of axum to OpenAPI's `{key}`, and marks the body
/// of `PUT /kv/{key}` optional (no body stores the empty value; utoipa marks every body it
/// derives required).
pub struct PathTemplates;

impl Modify for PathTemplates {
    fn modify(&self, doc: &mut OpenApiDoc) {
        if let Some(mut item) = doc.paths.paths.remove("/kv/{*key}") {
            if let Some(RefOr::T(body)) = item.put.as_mut().and_then(|op| op.request_body.as_mut())
            {
                body.required = Some(utoipa::openapi::Required::False);
            }
            doc.paths.paths.insert("/kv/{key}".into(), item);
        }
    }
}

/// Writes this server's configured limits into the document: a table in the description,
/// `x-limits` on `info`, and `maxItems` of the batch and mget arrays (so a client generated
/// from the document, or a schema fuzzer, knows the live limit).
pub struct LimitsDoc(pub Limits);

impl Modify for LimitsDoc {
    fn modify(&self, doc: &mut OpenApiDoc) {
        let limits = &self.0;
        let table = format!(
            "\n\n## Limits of this server\n\n\
| limit | value | over it |\n|---|---|---|\n\
| key bytes (`max_key_bytes`) | {} | 414 in the path, 413 in a body |\n\
| value bytes (`max_value_bytes`) | {} | 413 |\n\
| operations per batch or keys per mget (`max_batch_ops`) | {} | 413 |\n\
| JSON body bytes (`max_body_bytes`) | {} | 413 |\n\
| keys per listing page (`max_list_limit`) | {} | clamped |\n\
| requests in flight (`max_in_flight`) | {} | 503 |\n\
| TTL seconds (`ttl`, 100 years) | {} | 400 |",
            limits.max_key_bytes,
            limits.max_value_bytes,
            limits.max_batch_ops,
            limits.max_body_bytes,
            limits.max_list_limit,
            limits.max_in_flight,
            MAX_TTL_SECS,
        );
        let info = &mut doc.info;
        info.description = Some(info.description.take().unwrap_or_default() + &table);
        let x_limits = json!({
            "max_key_bytes": limits.max_key_bytes,
            "max_value_bytes": limits.max_value_bytes,
            "max_batch_ops": limits.max_batch_ops,
            "max_body_bytes": limits.max_body_bytes,
            "max_list_limit": limits.max_list_limit,
            "max_in_flight": limits.max_in_flight,
            "max_ttl_seconds": MAX_TTL_SECS,
        });
        let mut ext = info.extensions.take().unwrap_or_default();
        ext.merge(ExtensionsBuilder::new().add("x-limits", x_limits).build());
        info.extensions = Some(ext);
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        for (schema, field) in [("BatchRequest", "ops"), ("MgetRequest", "keys")] {
            if let Some(RefOr::T(Schema::Object(obj))) = components.schemas.get_mut(schema)
                && let Some(RefOr::T(Schema::Array(arr))) = obj.properties.get_mut(field)
            {
                arr.max_items = Some(limits.max_batch_ops);
            }
        }
    }
}

/// The served document: the generated one with every [`Modify`] of the server applied.
pub fn finish(doc: &OpenApiDoc, modifiers: &[&dyn Modify]) -> Value {
    let mut doc = doc.clone();
    for m in modifiers {
        m.modify(&mut doc);
    }
    serde_json::to_value(&doc).unwrap_or(Value::Null)
}

/// The served bytes: pretty JSON with a final newline (as committed in the repository).
pub fn to_bytes(doc: &Value) -> bytes::Bytes {
    let mut s = serde_json::to_string_pretty(doc).unwrap_or_default();
    s.push('\n');
    bytes::Bytes::from(s)
}
