//! Conditional requests: `If-Match` and `If-None-Match` turned into engine preconditions.
//!
//! Owns the parsing of entity-tag lists (RFC 9110 §8.8.3, §13.1) and the rule that makes
//! compare-and-set atomic: every condition ends up as a single [`Precondition`] the engine
//! checks under its own lock. When a header lists several tags, the handler reads the current
//! version once and, if it satisfies the header, pins exactly that version; a write in between
//! makes the engine refuse, so no read-then-write race is possible.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, header};
use utoipa::IntoParams;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::error::ApiError;
use crate::engine::{Engine, Meta, Precondition, Version};

/// A parsed `If-Match` / `If-None-Match` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagSet {
    /// `*`: any current value.
    Any,
    /// A list of entity tags; `None` entries are tags this server never issues (weak tags or
    /// opaque strings that are not version numbers): they match nothing.
    Tags(Vec<Option<Version>>),
}

impl TagSet {
    /// Whether the current version matches (strong comparison; weak tags never match).
    pub fn matches(&self, current: Option<Version>) -> bool {
        match (self, current) {
            (_, None) => false,
            (TagSet::Any, Some(_)) => true,
            (TagSet::Tags(tags), Some(v)) => tags.contains(&Some(v)),
        }
    }
}

/// The entity-tag list `If-Match` / `If-None-Match` take, as an OpenAPI `pattern`: `*`, or
/// quoted tags (optionally `W/`) separated by commas, spaces around them allowed, or nothing
/// (an empty list, which matches no version). [`parse_header`] accepts exactly this language.
pub const ETAG_LIST_PATTERN: &str = r#"^[ ]*(\*|((W/)?"[\x21\x23-\x2B\x2D-\x7E]*"([ ]*,[ ]*(W/)?"[\x21\x23-\x2B\x2D-\x7E]*")*)?)[ ]*$"#;

/// Reads and parses one conditional header; `Ok(None)` when absent.
///
/// # Errors
/// 400 when the header is not a valid entity-tag list.
pub fn tag_set(headers: &HeaderMap, name: HeaderName) -> Result<Option<TagSet>, ApiError> {
    let mut values = headers.get_all(&name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut tags = Vec::new();
    for v in values {
        let s = v
            .to_str()
            .map_err(|_| ApiError::BadRequest(format!("{name} must be ASCII")))?;
        match parse_header(s).map_err(|m| ApiError::BadRequest(format!("{name}: {m}")))? {
            TagSet::Any => return Ok(Some(TagSet::Any)),
            TagSet::Tags(t) => tags.extend(t),
        }
    }
    Ok(Some(TagSet::Tags(tags)))
}

/// Parses one header value of the [`ETAG_LIST_PATTERN`] language.
///
/// # Errors
/// A message saying what is not an entity tag (an empty item, a bad byte, no quotes).
pub fn parse_header(s: &str) -> Result<TagSet, String> {
    let s = s.trim_matches(' ');
    if s == "*" {
        return Ok(TagSet::Any);
    }
    if s.is_empty() {
        // An empty list (RFC 9110 §5.6.1: empty elements do not count): it matches nothing.
        return Ok(TagSet::Tags(Vec::new()));
    }
    let mut out = Vec::new();
    for item in s.split(',').map(|i| i.trim_matches(' ')) {
        let (weak, rest) = match item.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, item),
        };
        let inner = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .filter(|i| i.bytes().all(etag_char))
            .ok_or_else(|| format!("`{item}` is not an entity tag (expected \"...\" or *)"))?;
        out.push(if weak {
            None
        } else {
            inner.parse::<u64>().ok().map(Version)
        });
    }
    Ok(TagSet::Tags(out))
}

/// `etagc` of RFC 9110 restricted to ASCII, without the comma (it separates list items).
fn etag_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x7E)
}

/// The conditional headers of a write (PUT, DELETE): `If-Match` and `If-None-Match`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteConditions {
    /// Parsed `If-Match`.
    pub if_match: Option<TagSet>,
    /// Parsed `If-None-Match`.
    pub if_none_match: Option<TagSet>,
}

impl<S: Send + Sync> FromRequestParts<S> for WriteConditions {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(WriteConditions {
            if_match: tag_set(&parts.headers, header::IF_MATCH)?,
            if_none_match: tag_set(&parts.headers, header::IF_NONE_MATCH)?,
        })
    }
}

impl WriteConditions {
    /// The one engine precondition the headers map onto without reading, if any.
    pub fn direct(&self) -> Option<Precondition> {
        match (&self.if_match, &self.if_none_match) {
            (None, None) => Some(Precondition::None),
            (Some(TagSet::Any), None) => Some(Precondition::IfExists),
            (None, Some(TagSet::Any)) => Some(Precondition::IfAbsent),
            (Some(TagSet::Tags(t)), None) if t.len() == 1 => match t.first() {
                Some(Some(v)) => Some(Precondition::IfVersion(*v)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The precondition of a write of `key`, run on the engine's thread: direct when the
    /// headers allow, else the current version read once and pinned (see the module doc).
    ///
    /// # Errors
    /// The engine's `PreconditionFailed` when the headers do not hold now; read errors.
    pub fn precondition(&self, e: &dyn Engine, key: &[u8]) -> crate::Result<Precondition> {
        match self.direct() {
            Some(p) => Ok(p),
            None => {
                let current = e.head(key)?.map(|m| m.version);
                pin(self.if_match.as_ref(), self.if_none_match.as_ref(), current)
            }
        }
    }
}

impl IntoParams for WriteConditions {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            header_param(
                "If-Match",
                "Compare-and-set: write only if the current ETag is one of these (`*` = the key exists).",
            ),
            header_param(
                "If-None-Match",
                "Write only if the current ETag is none of these (`*` = create only: the key is absent).",
            ),
        ]
    }
}

/// `If-None-Match` of a read (GET, HEAD): 304 when the client's copy is current.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IfNoneMatch(pub Option<TagSet>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        tag_set(&parts.headers, header::IF_NONE_MATCH).map(IfNoneMatch)
    }
}

impl IfNoneMatch {
    /// True when the client's copy is current (answer 304).
    pub fn not_modified(&self, meta: &Meta) -> bool {
        self.0
            .as_ref()
            .is_some_and(|t| t.matches(Some(meta.version)))
    }
}

impl IntoParams for IfNoneMatch {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_param(
            "If-None-Match",
            "ETags the client holds: 304 when one is current.",
        )]
    }
}

/// An optional header parameter holding an entity-tag list (not nullable: a header is text).
fn header_param(name: &str, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(ETAG_LIST_PATTERN)),
        ))
        .build()
}

/// Evaluates the headers against the current version and pins it.
///
/// # Errors
/// The engine's `PreconditionFailed` (412) when the headers do not hold now.
pub fn pin(
    if_match: Option<&TagSet>,
    if_none_match: Option<&TagSet>,
    current: Option<Version>,
) -> Result<Precondition, crate::Error> {
    let ok = if_match.is_none_or(|t| t.matches(current))
        && if_none_match.is_none_or(|t| !t.matches(current));
    if !ok {
        return Err(crate::Error::PreconditionFailed { current });
    }
    Ok(match current {
        Some(v) => Precondition::IfVersion(v),
        None => Precondition::IfAbsent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(im: Option<&str>, inm: Option<&str>) -> Result<WriteConditions, String> {
        let p = |v: Option<&str>| v.map(parse_header).transpose();
        Ok(WriteConditions {
            if_match: p(im)?,
            if_none_match: p(inm)?,
        })
    }

    #[test]
    fn maps_simple_headers_directly() {
        let c = |im, inm| cond(im, inm).ok().and_then(|c| c.direct());
        assert_eq!(c(None, None), Some(Precondition::None));
        assert_eq!(c(Some("*"), None), Some(Precondition::IfExists));
        assert_eq!(c(None, Some("*")), Some(Precondition::IfAbsent));
        assert_eq!(
            c(Some("\"42\""), None),
            Some(Precondition::IfVersion(Version(42)))
        );
        assert_eq!(c(Some("\"1\", \"2\""), None), None);
    }

    #[test]
    fn refuses_what_the_pattern_refuses() {
        for bad in [
            "42",
            "\"4\"2\"",
            "W/42",
            "null",
            "\"1\",",
            ",\"1\"",
            "\"a b\"",
            "* , \"1\"",
            "\t\"1\"",
        ] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
        for good in [
            "",
            "  ",
            "*",
            " * ",
            "\"\"",
            "W/\"x\"",
            "\"1\" , W/\"2\",\"3\"",
            "\"!#~\"",
        ] {
            assert!(parse_header(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn pins_the_current_version() {
        let list = TagSet::Tags(vec![Some(Version(1)), Some(Version(2)), None]);
        assert_eq!(
            pin(Some(&list), None, Some(Version(2))).ok(),
            Some(Precondition::IfVersion(Version(2)))
        );
        assert!(pin(Some(&list), None, Some(Version(3))).is_err());
        assert!(pin(Some(&list), None, None).is_err());
        assert_eq!(
            pin(None, Some(&list), None).ok(),
            Some(Precondition::IfAbsent)
        );
        assert!(pin(None, Some(&list), Some(Version(1))).is_err());
        assert!(pin(Some(&TagSet::Any), Some(&TagSet::Any), Some(Version(1))).is_err());
    }
}
