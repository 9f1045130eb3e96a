//! Typed extractors: what a handler takes from the request head before it runs.
//!
//! Owns [`Key`] (the byte key of `/kv/{key}`, checked against `max_key_bytes`), [`Query`] (a
//! strict query-string extractor into a serde struct that also derives `utoipa::IntoParams`,
//! so the OpenAPI parameters and the parsing are one definition), and the query structs of
//! the routes ([`TtlQuery`], [`ListQuery`], [`WaitQuery`]). Conditional headers are
//! extracted in `conditional.rs`. Every rejection is an [`ApiError`] (400, 414).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};
use utoipa::IntoParams;

use super::error::ApiError;
use super::keys::{key_from_path, parse_query};
use super::state::AppState;

/// Longest TTL accepted, in seconds: 100 years of 365.25 days.
pub const MAX_TTL_SECS: u64 = 3_155_760_000;

/// The key of a single-key route, decoded from the raw path (`/kv/a%2Fb` is `a/b`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(pub Vec<u8>);

impl FromRequestParts<AppState> for Key {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = key_from_path(parts.uri.path(), state.limits().max_key_bytes)?;
        super::trace::record_key_len(key.len());
        Ok(Key(key))
    }
}

/// A query string deserialized into `T`: percent-escapes checked strictly, `+` is a space,
/// unknown and repeated parameters refused (`T` should `deny_unknown_fields`).
#[derive(Clone, Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let pairs = parse_query(parts.uri.query())?;
        let map = de::value::MapDeserializer::new(
            pairs
                .into_iter()
                .map(|(name, bytes)| (name.clone(), QueryValue { name, bytes })),
        );
        T::deserialize(map)
            .map(Query)
            .map_err(|e: de::value::Error| ApiError::BadRequest(format!("query string: {e}")))
    }
}

/// `?ttl=` of `PUT /kv/{key}`.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TtlQuery {
    /// Seconds until the value expires: 1 to 3155760000 (100 years).
    #[param(minimum = 1, maximum = 3155760000_u64)]
    #[serde(default, deserialize_with = "ttl_secs")]
    pub ttl: Option<u64>,
}

/// `?prefix=&start=&end=&limit=&cursor=` of `GET /kv`.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only keys starting with these bytes (percent-encoded; `+` is a space).
    #[param(value_type = Option<String>)]
    #[serde(default, deserialize_with = "bytes_param")]
    pub prefix: Option<Vec<u8>>,
    /// Only keys at or after these bytes (inclusive; percent-encoded).
    #[param(value_type = Option<String>)]
    #[serde(default, deserialize_with = "bytes_param")]
    pub start: Option<Vec<u8>>,
    /// Only keys before these bytes (exclusive, as etcd's `range_end`; percent-encoded).
    #[param(value_type = Option<String>)]
    #[serde(default, deserialize_with = "bytes_param")]
    pub end: Option<Vec<u8>>,
    /// Page size: default 100, larger values are clamped to `max_list_limit`.
    #[param(minimum = 1, maximum = 9223372036854775807_u64)]
    #[serde(default, deserialize_with = "positive")]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page (opaque); empty = from the start.
    #[param(value_type = Option<String>, pattern = r"^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$")]
    #[serde(default, deserialize_with = "bytes_param")]
    pub cursor: Option<Vec<u8>>,
}

/// `?wait=` of `POST /admin/merge` and `POST /admin/snapshot`.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// `true`: run to the end and answer 200 with the result; `false` (default): answer 202.
    #[serde(default)]
    pub wait: Option<bool>,
}

/// A whole number of seconds within 1..=[`MAX_TTL_SECS`]; the 400 names the limit.
///
/// # Errors
/// When the number is missing, not whole, zero or over the cap.
pub fn check_ttl(secs: u64) -> Result<u64, String> {
    if secs == 0 {
        return Err("`ttl` must be a whole number of seconds >= 1".into());
    }
    if secs > MAX_TTL_SECS {
        return Err(format!(
            "`ttl` is {secs} s, the limit is {MAX_TTL_SECS} s (100 years)"
        ));
    }
    Ok(secs)
}

fn ttl_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = u64::deserialize(d)?;
    check_ttl(n).map(Some).map_err(de::Error::custom)
}

/// Largest `limit` the document declares (`int64`); anything larger than `max_list_limit`
/// is clamped to it anyway.
pub const MAX_LIMIT_PARAM: u64 = i64::MAX as u64;

fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(de::Error::custom("`limit` must be a whole number >= 1")),
        n if n > MAX_LIMIT_PARAM => Err(de::Error::custom(format!(
            "`limit` must be at most {MAX_LIMIT_PARAM} (larger pages are clamped to `max_list_limit` anyway)"
        ))),
        n => Ok(Some(n)),
    }
}

/// A version or count in a query: a whole number the document's `int64` can say (at most
/// `i64::MAX`; versions never come near it). Larger numbers are a 400, not a silent wrap.
pub(crate) fn int64_param<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        n if n > MAX_LIMIT_PARAM => Err(de::Error::custom(format!(
            "{n} is out of range: at most {MAX_LIMIT_PARAM}"
        ))),
        n => Ok(Some(n)),
    }
}

pub(crate) fn bytes_param<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    struct Bytes;
    impl Visitor<'_> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
    }
    d.deserialize_byte_buf(Bytes).map(Some)
}

/// One decoded query value, deserialized by what the field asks for: whole numbers and
/// booleans (`true` / `false` only) parse from the text, bytes stay bytes.
struct QueryValue {
    name: String,
    bytes: Vec<u8>,
}

impl QueryValue {
    fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    fn invalid(&self, what: &str) -> de::value::Error {
        de::Error::custom(format!("`{}` must be {what}", self.name))
    }
}

impl<'de> IntoDeserializer<'de, de::value::Error> for QueryValue {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for QueryValue {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match String::from_utf8(self.bytes) {
            Ok(s) => v.visit_string(s),
            Err(e) => v.visit_byte_buf(e.into_bytes()),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_some(self)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        // Digits only: `+5`, ` 5` and `5.0` are not whole numbers as the document says.
        match self
            .text()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        {
            Some(s) => match s.parse::<u64>() {
                Ok(n) => v.visit_u64(n),
                Err(_) => Err(self.invalid("a whole number at most 18446744073709551615")),
            },
            None => Err(self.invalid("a whole number")),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self.bytes.as_slice() {
            b"true" => v.visit_bool(true),
            b"false" => v.visit_bool(false),
            _ => Err(self.invalid("true or false")),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_byte_buf(self.bytes)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_byte_buf(self.bytes)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u128 f32 f64 char str string
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: DeserializeOwned>(q: &str) -> Result<T, String> {
        let pairs = parse_query(Some(q)).map_err(|e| format!("{e:?}"))?;
        let map = de::value::MapDeserializer::new(
            pairs
                .into_iter()
                .map(|(name, bytes)| (name.clone(), QueryValue { name, bytes })),
        );
        T::deserialize(map).map_err(|e: de::value::Error| e.to_string())
    }

    #[test]
    fn typed_queries_parse_and_refuse() {
        let t: TtlQuery = parse("ttl=100").expect("ttl");
        assert_eq!(t.ttl, Some(100));
        for bad in [
            "ttl=0",
            "ttl=",
            "ttl=abc",
            "ttl=-1",
            "ttl=1.0",
            "ttl=3155760001",
            "ttl=18446744073709551615",
            "bogus=1",
            "ttl=1&ttl=2",
        ] {
            assert!(parse::<TtlQuery>(bad).is_err(), "{bad}");
        }
        let e = parse::<TtlQuery>("ttl=3155760001").expect_err("cap");
        assert!(e.contains("3155760000"), "{e}");
        let l: ListQuery = parse("prefix=a+%FF&limit=955362820247976017&cursor=").expect("list");
        assert_eq!(l.prefix.as_deref(), Some(&b"a \xFF"[..]));
        assert_eq!(l.limit, Some(955_362_820_247_976_017));
        assert_eq!(l.cursor.as_deref(), Some(&b""[..]));
        assert!(parse::<ListQuery>("limit=955362820247976017920").is_err());
        assert!(parse::<ListQuery>("limit=9223372036854775807").is_ok());
        assert!(parse::<ListQuery>("limit=9223372036854775808").is_err());
        let w: WaitQuery = parse("wait=true").expect("wait");
        assert_eq!(w.wait, Some(true));
        for bad in ["wait=", "wait=1", "wait=yes"] {
            assert!(parse::<WaitQuery>(bad).is_err(), "{bad}");
        }
    }
}
