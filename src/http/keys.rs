//! Keys as bytes, straight from the raw request URI.
//!
//! Owns the decoding of percent-encoded keys from the path (`/kv/a/b/c` is the key `a/b/c`,
//! `%FF` is the byte 0xFF) and of byte-valued query parameters (`prefix`), and the cursor
//! encoding of listings. A `String` extractor would refuse bytes that are not UTF-8, so the
//! handlers pass the raw path here instead.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use percent_encoding::percent_decode;

use super::error::ApiError;

/// The path prefix of single-key routes.
pub const KV_PREFIX: &str = "/kv/";

/// Decodes the key from a raw request path such as `/kv/a%2Fb/c%FF`.
///
/// Every `%XX` becomes the byte `0xXX`; everything else is taken as is (`+` stays `+`).
///
/// # Errors
/// 400 for a path outside `/kv/`, a broken escape or an empty key; 414 for a key over `max`.
pub fn key_from_path(path: &str, max: usize) -> Result<Vec<u8>, ApiError> {
    let raw = path
        .strip_prefix(KV_PREFIX)
        .ok_or_else(|| ApiError::BadRequest("key routes live under /kv/".into()))?;
    // Cheap early refusal before decoding: a key decodes to at least a third of its escaped form.
    if raw.len() / 3 > max {
        return Err(ApiError::KeyTooLong {
            len: raw.len() / 3,
            max,
            in_uri: true,
        });
    }
    let key = decode_strict(raw.as_bytes(), false)?;
    check_key(&key, max, true)?;
    Ok(key)
}

/// Checks a decoded key against emptiness and the configured limit.
///
/// # Errors
/// 400 when empty; 414 (`in_uri`) or 413 when over `max`.
pub fn check_key(key: &[u8], max: usize, in_uri: bool) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::BadRequest("the key must not be empty".into()));
    }
    if key.len() > max {
        return Err(ApiError::KeyTooLong {
            len: key.len(),
            max,
            in_uri,
        });
    }
    Ok(())
}

/// Percent-decodes `raw`, refusing `%` not followed by two hex digits (so that a typo does not
/// silently become a different key). With `plus_is_space`, `+` decodes to a space (form
/// encoding, as query strings use).
fn decode_strict(raw: &[u8], plus_is_space: bool) -> Result<Vec<u8>, ApiError> {
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            let ok = raw
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !ok {
                return Err(ApiError::BadRequest(
                    "broken percent-escape: `%` must be followed by two hex digits".into(),
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    if plus_is_space && raw.contains(&b'+') {
        let replaced: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        return Ok(percent_decode(&replaced).collect());
    }
    Ok(percent_decode(raw).collect())
}

/// Parses a raw query string into `(name, value-bytes)` pairs, decoding both.
///
/// # Errors
/// 400 for a broken escape or a name that is not UTF-8.
pub fn parse_query(raw: Option<&str>) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = String::from_utf8(decode_strict(name.as_bytes(), true)?)
            .map_err(|_| ApiError::BadRequest("query parameter names must be UTF-8".into()))?;
        out.push((name, decode_strict(value.as_bytes(), true)?));
    }
    Ok(out)
}

/// Encodes the last key of a page as an opaque cursor (base64url, no padding).
pub fn encode_cursor(key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// Decodes a cursor made by [`encode_cursor`].
///
/// # Errors
/// 400 when it is not one.
pub fn decode_cursor(cursor: &[u8]) -> Result<Vec<u8>, ApiError> {
    // Lenient about unused trailing bits: any string of the documented pattern decodes to
    // some key to start after, so a well-formed cursor is never refused.
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    LENIENT
        .decode(cursor)
        .ok()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::BadRequest("`cursor` is not a cursor this server issued".into()))
}

/// Standard base64 (with padding), as used for `key_base64` / `value_base64` fields.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes a `*_base64` field named `field`.
///
/// # Errors
/// 400 naming the field when it is not standard base64.
pub fn unb64(s: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    // Lenient about unused trailing bits (`QR==` is `A`), as the document's pattern is.
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    LENIENT
        .decode(s)
        .map_err(|e| ApiError::BadRequest(format!("`{field}` is not valid base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bytes_and_slashes() {
        assert_eq!(
            key_from_path("/kv/a/b/c", 100).ok(),
            Some(b"a/b/c".to_vec())
        );
        assert_eq!(key_from_path("/kv/%FF", 100).ok(), Some(vec![0xFF]));
        assert_eq!(
            key_from_path("/kv/a%2Fb+c", 100).ok(),
            Some(b"a/b+c".to_vec())
        );
        assert_eq!(key_from_path("/kv/%e2%82%ac", 100).ok(), Some("€".into()));
    }

    #[test]
    fn refuses_bad_escapes_empty_and_long_keys() {
        assert!(matches!(
            key_from_path("/kv/%G0", 100),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            key_from_path("/kv/abc%F", 100),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            key_from_path("/kv/", 100),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            key_from_path("/kv/abcd", 3),
            Err(ApiError::KeyTooLong { in_uri: true, .. })
        ));
    }

    #[test]
    fn query_and_cursor_round_trip() {
        let q = parse_query(Some("prefix=a+b%FF&limit=5&flag")).ok();
        assert_eq!(
            q,
            Some(vec![
                ("prefix".into(), b"a b\xFF".to_vec()),
                ("limit".into(), b"5".to_vec()),
                ("flag".into(), Vec::new()),
            ])
        );
        let c = encode_cursor(b"\xFFkey/1");
        assert_eq!(
            decode_cursor(c.as_bytes()).ok(),
            Some(b"\xFFkey/1".to_vec())
        );
        assert!(decode_cursor(b"!!").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_key_round_trips_through_percent_encoding(key in proptest::collection::vec(proptest::num::u8::ANY, 1..64)) {
            let enc = percent_encoding::percent_encode(&key, percent_encoding::NON_ALPHANUMERIC).to_string();
            let path = format!("/kv/{enc}");
            proptest::prop_assert_eq!(key_from_path(&path, 64).ok(), Some(key));
        }

        #[test]
        fn arbitrary_paths_never_panic(s in "\\PC*") {
            let _ = key_from_path(&format!("/kv/{s}"), 16);
            let _ = parse_query(Some(&s));
        }
    }
}
