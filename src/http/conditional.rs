//! Conditional requests: `If-Match` and `If-None-Match` turned into engine preconditions.
//!
//! Owns the parsing of entity-tag lists (RFC 9110 §8.8.3, §13.1) and the rule that makes
//! compare-and-set atomic: every condition ends up as a single [`Precondition`] the engine
//! checks under its own lock. When a header lists several tags, the handler reads the current
//! version once and, if it satisfies the header, pins exactly that version; a write in between
//! makes the engine refuse, so no read-then-write race is possible.

use axum::http::{HeaderMap, HeaderName, header};

use super::error::ApiError;
use crate::engine::{Precondition, Version};

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
        if s.trim() == "*" {
            return Ok(Some(TagSet::Any));
        }
        parse_list(s, &mut tags).map_err(|m| ApiError::BadRequest(format!("{name}: {m}")))?;
    }
    Ok(Some(TagSet::Tags(tags)))
}

fn parse_list(s: &str, out: &mut Vec<Option<Version>>) -> Result<(), String> {
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (weak, rest) = match item.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, item),
        };
        let inner = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .filter(|i| !i.contains('"'))
            .ok_or_else(|| format!("`{item}` is not an entity tag (expected \"...\" or *)"))?;
        out.push(if weak {
            None
        } else {
            inner.parse::<u64>().ok().map(Version)
        });
    }
    Ok(())
}

/// What a write must check, derived from the request's conditional headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteCondition {
    /// The headers map directly onto one engine precondition.
    Direct(Precondition),
    /// The headers need the current version first (tag lists, `If-None-Match` with tags).
    NeedsCurrent {
        /// Parsed `If-Match`.
        if_match: Option<TagSet>,
        /// Parsed `If-None-Match`.
        if_none_match: Option<TagSet>,
    },
}

/// Parses the conditional headers of a PUT or DELETE.
///
/// # Errors
/// 400 for malformed headers.
pub fn write_condition(headers: &HeaderMap) -> Result<WriteCondition, ApiError> {
    let if_match = tag_set(headers, header::IF_MATCH)?;
    let if_none_match = tag_set(headers, header::IF_NONE_MATCH)?;
    Ok(match (&if_match, &if_none_match) {
        (None, None) => WriteCondition::Direct(Precondition::None),
        (Some(TagSet::Any), None) => WriteCondition::Direct(Precondition::IfExists),
        (None, Some(TagSet::Any)) => WriteCondition::Direct(Precondition::IfAbsent),
        (Some(TagSet::Tags(t)), None) if t.len() == 1 => match t.first() {
            Some(Some(v)) => WriteCondition::Direct(Precondition::IfVersion(*v)),
            _ => WriteCondition::NeedsCurrent {
                if_match,
                if_none_match,
            },
        },
        _ => WriteCondition::NeedsCurrent {
            if_match,
            if_none_match,
        },
    })
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
    use axum::http::HeaderValue;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                n.clone(),
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn maps_simple_headers_directly() {
        let c = |p: &[(HeaderName, &str)]| write_condition(&headers(p)).ok();
        assert_eq!(c(&[]), Some(WriteCondition::Direct(Precondition::None)));
        assert_eq!(
            c(&[(header::IF_MATCH, "*")]),
            Some(WriteCondition::Direct(Precondition::IfExists))
        );
        assert_eq!(
            c(&[(header::IF_NONE_MATCH, "*")]),
            Some(WriteCondition::Direct(Precondition::IfAbsent))
        );
        assert_eq!(
            c(&[(header::IF_MATCH, "\"42\"")]),
            Some(WriteCondition::Direct(Precondition::IfVersion(Version(42))))
        );
        assert!(matches!(
            c(&[(header::IF_MATCH, "\"1\", \"2\"")]),
            Some(WriteCondition::NeedsCurrent { .. })
        ));
    }

    #[test]
    fn refuses_malformed_tags() {
        for bad in ["42", "\"4\"2\"", "W/42"] {
            assert!(
                write_condition(&headers(&[(header::IF_MATCH, bad)])).is_err(),
                "{bad}"
            );
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
