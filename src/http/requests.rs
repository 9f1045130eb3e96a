//! The JSON request bodies of `/batch` and `/mget`, and their hand-written schemas.
//!
//! Owns what a request body may say, once for serde and once for OpenAPI side by side: a key
//! as exactly one of `key` / `key_base64` (`oneOf`), a put with exactly one of `value` /
//! `value_base64`, no `null` for a field that may only be left out, a TTL of 1 s to 100 years
//! (a whole number written as a float is taken, as JSON Schema's `integer` includes it). The
//! derive cannot express these combinations, so [`MgetKey`] and [`BatchOpDto`] write their
//! schemas by hand next to their fields. Answers live in `dto.rs`.

use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use super::dto::{KeyRef, OpKind};
use super::error::ApiError;
use super::extract::{MAX_TTL_SECS, check_ttl};

/// One entry of an `mget` request: a plain string key, or an object with `key` / `key_base64`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum MgetKey {
    /// A UTF-8 key.
    Text(String),
    /// A key given as `{"key": ...}` or `{"key_base64": ...}`.
    Ref(Obj<KeyArg>),
}

/// A key in a request body: exactly one of `key` and `key_base64`, neither `null`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyArg {
    /// The key as UTF-8 text.
    #[serde(default, deserialize_with = "present")]
    pub key: Option<String>,
    /// The key's bytes in standard base64.
    #[serde(default, deserialize_with = "present")]
    pub key_base64: Option<String>,
}

impl KeyArg {
    /// The key's bytes.
    ///
    /// # Errors
    /// 400 unless exactly one of `key` and `key_base64` is given, or on bad base64.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ApiError> {
        KeyRef {
            key: self.key.clone(),
            key_base64: self.key_base64.clone(),
        }
        .to_bytes()
    }
}

/// A `T` read only from a JSON object. Derived structs also take the array form
/// (`["put", "k"]` for a batch op, `[[]]` for a request), which the document does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obj<T>(pub T);

impl<T> std::ops::Deref for Obj<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        map_only(d).map(Obj)
    }
}

/// Deserializes a `T` from a map only (see [`Obj`]).
///
/// # Errors
/// The deserializer's error for anything but an object, or `T`'s own.
pub fn map_only<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    struct Only<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(Only(PhantomData))
}

/// A field that may be left out but, when given, is not `null` (the document says so).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Standard base64 with padding, as the `*_base64` fields take it.
pub const BASE64_PATTERN: &str = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

/// The schema of a key given as text.
fn key_text_schema() -> serde_json::Value {
    serde_json::json!({"type": "string", "minLength": 1, "description": "The key as UTF-8 text."})
}

/// The schema of a key given as base64.
fn key_b64_schema() -> serde_json::Value {
    serde_json::json!({"type": "string", "minLength": 4, "pattern": BASE64_PATTERN,
        "description": "The key's bytes in standard base64 (non-empty)."})
}

/// A hand-written schema (the combinations of fields serde accepts cannot be derived).
fn schema_of(v: serde_json::Value) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    match serde_json::from_value(v) {
        Ok(s) => utoipa::openapi::RefOr::T(s),
        Err(_) => utoipa::openapi::RefOr::T(utoipa::openapi::Schema::default()),
    }
}

impl utoipa::PartialSchema for MgetKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        schema_of(serde_json::json!({
            "description": "One key of an `mget` request: a non-empty string, or an object with exactly one of `key` and `key_base64`.",
            "oneOf": [
                key_text_schema(),
                {"type": "object", "required": ["key"], "additionalProperties": false,
                 "properties": {"key": key_text_schema()}},
                {"type": "object", "required": ["key_base64"], "additionalProperties": false,
                 "properties": {"key_base64": key_b64_schema()}},
            ]
        }))
    }
}

impl ToSchema for MgetKey {}

/// `POST /mget` request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MgetRequest {
    /// Keys to read, answered in this order. At most `max_batch_ops` of them.
    pub keys: Vec<MgetKey>,
}

/// One operation of `POST /batch`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOpDto {
    /// `put` or `delete`.
    pub op: OpKind,
    /// The key as UTF-8 text (or use `key_base64`).
    #[serde(default, deserialize_with = "present")]
    pub key: Option<String>,
    /// The key's bytes in standard base64.
    #[serde(default, deserialize_with = "present")]
    pub key_base64: Option<String>,
    /// For `put`: the value as UTF-8 text (or use `value_base64`).
    #[serde(default, deserialize_with = "present")]
    pub value: Option<String>,
    /// For `put`: the value's bytes in standard base64.
    #[serde(default, deserialize_with = "present")]
    pub value_base64: Option<String>,
    /// For `put`: seconds until the value expires, 1 to [`MAX_TTL_SECS`]. JSON Schema's
    /// `integer` includes `12625.0`, so a whole number written as a float is taken too.
    #[serde(default, deserialize_with = "ttl_secs")]
    pub ttl: Option<u64>,
}

fn ttl_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    let n = serde_json::Number::deserialize(d)?;
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= MAX_TTL_SECS as f64)
            .map(|f| f as u64)
    });
    match whole {
        Some(s) => check_ttl(s).map(Some).map_err(D::Error::custom),
        None if n.as_f64().is_some_and(|f| f > MAX_TTL_SECS as f64) => Err(D::Error::custom(
            format!("`ttl` is {n} s, the limit is {MAX_TTL_SECS} s (100 years)"),
        )),
        None => Err(D::Error::custom(
            "`ttl` must be a whole number of seconds >= 1",
        )),
    }
}

impl utoipa::PartialSchema for BatchOpDto {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        let ttl = serde_json::json!({"type": "integer", "minimum": 1, "maximum": MAX_TTL_SECS,
            "description": "Seconds until the value expires (at most 100 years)."});
        let value =
            serde_json::json!({"type": "string", "description": "The value as UTF-8 text."});
        let value_b64 = serde_json::json!({"type": "string", "pattern": BASE64_PATTERN,
            "description": "The value's bytes in standard base64."});
        let mut variants = Vec::new();
        for (kname, kschema) in [("key", key_text_schema()), ("key_base64", key_b64_schema())] {
            for (vname, vschema) in [("value", &value), ("value_base64", &value_b64)] {
                variants.push(serde_json::json!({
                    "type": "object", "title": format!("put by {kname} with {vname}"),
                    "additionalProperties": false, "required": ["op", kname, vname],
                    "properties": {"op": {"type": "string", "enum": ["put"]},
                        kname: kschema.clone(), vname: vschema.clone(), "ttl": ttl.clone()}
                }));
            }
            variants.push(serde_json::json!({
                "type": "object", "title": format!("delete by {kname}"),
                "additionalProperties": false, "required": ["op", kname],
                "properties": {"op": {"type": "string", "enum": ["delete"]}, kname: kschema}
            }));
        }
        schema_of(serde_json::json!({
            "description": "One operation of `POST /batch`: a `put` with exactly one of `key` / `key_base64` and exactly one of `value` / `value_base64` (and an optional `ttl`), or a `delete` with exactly one of `key` / `key_base64`.",
            "oneOf": variants,
        }))
    }
}

impl ToSchema for BatchOpDto {}

/// `POST /batch` request: applied all-or-nothing, also across a crash.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The operations, applied in order. At most `max_batch_ops` of them.
    #[schema(value_type = Vec<BatchOpDto>)]
    pub ops: Vec<Obj<BatchOpDto>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(v: serde_json::Value) -> Result<BatchOpDto, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn batch_ops_take_what_their_schema_says() {
        let ok = op(serde_json::json!({"op": "put", "key": "k", "value": "v", "ttl": 12625.0}));
        assert_eq!(ok.map(|o| o.ttl), Ok(Some(12625)));
        for bad in [
            serde_json::json!({"op": "put", "key": null, "key_base64": "YQ==", "value": "v"}),
            serde_json::json!({"op": "put", "key": "k", "value": null, "value_base64": "YQ=="}),
            serde_json::json!({"op": "put", "key": "k", "value": "v", "ttl": 1.5}),
            serde_json::json!({"op": "put", "key": "k", "value": "v", "ttl": 0}),
            serde_json::json!({"op": "put", "key": "k", "value": "v", "ttl": 3155760001_u64}),
            serde_json::json!({"op": "put", "key": "k", "value": "v", "extra": 1}),
        ] {
            assert!(op(bad.clone()).is_err(), "{bad}");
        }
        let key: Result<MgetKey, _> = serde_json::from_value(serde_json::json!({"key": null}));
        assert!(key.is_err());
        // Array forms of objects, which derived structs would take.
        let key: Result<MgetKey, _> = serde_json::from_value(serde_json::json!(["k"]));
        assert!(key.is_err());
        let op: Result<Obj<BatchOpDto>, _> =
            serde_json::from_value(serde_json::json!(["delete", "k"]));
        assert!(op.is_err());
        let op: Result<Obj<BatchOpDto>, _> =
            serde_json::from_value(serde_json::json!({"op": "delete", "key": "k"}));
        assert!(op.is_ok());
    }
}
