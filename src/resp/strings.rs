//! String commands: GET, SET and its options, the SET family, MGET / MSET, APPEND, ranges and
//! the INCR family.
//!
//! Owns [`run`] for its group and [`rmw`], the read-modify-write loop every command that
//! reads before it writes goes through: read the value and its version, decide, write with a
//! compare-and-set on that version, retry if another writer (RESP or HTTP) got there first. So
//! INCR from many clients at once loses no increment.

use bytes::Bytes;

use super::session::{CmdResult, Session, Shared, int_arg, strict_int, text};
use crate::engine::{
    BatchOp, Engine, Error as EngineError, Precondition, PutOptions, UnixMillis, Value,
};
use hoardhaven_resp_proto::parse::Args;
use hoardhaven_resp_proto::reply::{Reply, format_double};

/// What a read-modify-write decided.
pub enum Change<T> {
    /// Write nothing; answer `T`.
    Keep(T),
    /// Store this value with this expiry; answer `T`.
    Put(Bytes, Option<UnixMillis>, T),
    /// Remove the key; answer `T`.
    Delete(T),
}

/// Largest MGET reply (the values' bytes): one command may not make the server buffer more.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Most attempts of one read-modify-write before giving up (only under a storm of writers on
/// one key).
const MAX_RETRIES: usize = 10_000;

/// Reads `key` (stored form), lets `decide` choose, and writes the choice only if the key still
/// has the version read. `decide` may refuse with a reply.
///
/// # Errors
/// Engine failures.
pub fn rmw<T>(
    kv: &dyn Engine,
    durable_writes: bool,
    key: &[u8],
    mut decide: impl FnMut(Option<&Value>) -> Result<Change<T>, Reply>,
) -> Result<Result<T, Reply>, EngineError> {
    for _ in 0..MAX_RETRIES {
        let cur = kv.get(key)?;
        let precondition = cur.as_ref().map_or(Precondition::IfAbsent, |v| {
            Precondition::IfVersion(v.meta.version)
        });
        let change = match decide(cur.as_ref()) {
            Ok(c) => c,
            Err(r) => return Ok(Err(r)),
        };
        let outcome = match change {
            Change::Keep(t) => return Ok(Ok(t)),
            Change::Put(value, expires_at, t) => kv
                .put(
                    key,
                    value,
                    PutOptions {
                        expires_at,
                        precondition,
                    },
                )
                .map(|_| t),
            Change::Delete(t) => kv.delete(key, precondition).map(|_| t),
        };
        match outcome {
            Ok(t) => return Ok(Ok(t)),
            // With sync=always the write that won may not be visible to reads until it is
            // durable: make it durable (and visible) before reading again, rather than spin.
            Err(EngineError::PreconditionFailed { .. }) if durable_writes => {
                kv.sync()?;
            }
            Err(EngineError::PreconditionFailed { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Err(Reply::err("too much contention on one key; retry")))
}

/// Stores `v` with the expiry the key had (APPEND, SETRANGE) and answers its new length.
fn put_keeping_ttl(v: Vec<u8>, cur: Option<&Value>) -> Change<Reply> {
    let len = i64::try_from(v.len()).unwrap_or(i64::MAX);
    Change::Put(
        Bytes::from(v),
        cur.and_then(|c| c.meta.expires_at),
        Reply::Int(len),
    )
}

/// Refuses keys and values over the configured limits, with Redis-like texts.
pub fn check_sizes(shared: &Shared, key: &[u8], value: Option<&[u8]>) -> Result<(), Reply> {
    if key.is_empty() {
        return Err(Reply::err("empty keys are not supported by hoardhaven"));
    }
    if key.len() > shared.limits.max_key_bytes {
        return Err(Reply::err(format!(
            "key of {} bytes exceeds the limit of {} bytes",
            key.len(),
            shared.limits.max_key_bytes
        )));
    }
    if let Some(v) = value
        && v.len() > shared.limits.max_value_bytes
    {
        return Err(Reply::err(format!(
            "string exceeds maximum allowed size ({} bytes)",
            shared.limits.max_value_bytes
        )));
    }
    Ok(())
}

/// Expiry given to SET / GETEX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// No option: SET clears the TTL, GETEX leaves it.
    Unset,
    /// An absolute time.
    At(UnixMillis),
    /// KEEPTTL (SET) / no change.
    Keep,
    /// PERSIST (GETEX).
    Persist,
}

/// Converts a relative or absolute time argument to an expiry instant.
pub(super) fn expiry_from(unit: &str, arg: &Bytes, cmd: &str) -> Result<UnixMillis, Reply> {
    let invalid = || Reply::err(format!("invalid expire time in '{cmd}' command"));
    let n = int_arg(arg)?;
    if n <= 0 {
        return Err(invalid());
    }
    let n = n.unsigned_abs();
    let now = UnixMillis::now().0;
    let at = match unit {
        "EX" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
        "PX" => n.checked_add(now),
        "EXAT" => n.checked_mul(1000),
        _ => Some(n),
    };
    // Past 100 years the HTTP API refuses TTLs too; keep one bound for both doors.
    match at {
        Some(at) if at < now.saturating_add(100 * 365 * 24 * 3600 * 1000) => Ok(UnixMillis(at)),
        _ => Err(invalid()),
    }
}

/// Runs the string command `name`.
pub fn run(s: &mut Session, shared: &Shared, name: &str, args: &Args) -> CmdResult {
    match name {
        "get" => {
            let key = s.key(&args[1]);
            Ok(match s.kv(shared).get(&key)? {
                Some(v) => Reply::Bulk(v.bytes),
                None => Reply::Nil,
            })
        }
        "set" => set(s, shared, args),
        "setnx" => {
            let key = s.key(&args[1]);
            if let Err(r) = check_sizes(shared, &args[1], Some(&args[2])) {
                return Ok(r);
            }
            let opts = PutOptions {
                expires_at: None,
                precondition: Precondition::IfAbsent,
            };
            match s.kv(shared).put(&key, args[2].clone(), opts) {
                Ok(_) => Ok(Reply::Int(1)),
                Err(EngineError::PreconditionFailed { .. }) => Ok(Reply::Int(0)),
                Err(e) => Err(e),
            }
        }
        "setex" | "psetex" => {
            let unit = if name == "setex" { "EX" } else { "PX" };
            let at = match expiry_from(unit, &args[2], name) {
                Ok(at) => at,
                Err(r) => return Ok(r),
            };
            if let Err(r) = check_sizes(shared, &args[1], Some(&args[3])) {
                return Ok(r);
            }
            let opts = PutOptions {
                expires_at: Some(at),
                precondition: Precondition::None,
            };
            s.kv(shared).put(&s.key(&args[1]), args[3].clone(), opts)?;
            Ok(Reply::OK)
        }
        "getdel" => {
            let key = s.key(&args[1]);
            let r = rmw(&*s.kv(shared), shared.durable_writes, &key, |cur| {
                Ok(match cur {
                    Some(v) => Change::Delete(Reply::Bulk(v.bytes.clone())),
                    None => Change::Keep(Reply::Nil),
                })
            })?;
            Ok(r.unwrap_or_else(|e| e))
        }
        "getex" => getex(s, shared, args),
        "getset" => {
            let forwarded: Args = vec![
                Bytes::from_static(b"SET"),
                args[1].clone(),
                args[2].clone(),
                Bytes::from_static(b"GET"),
            ];
            set(s, shared, &forwarded)
        }
        "mget" => {
            let mut out = Vec::with_capacity(args.len() - 1);
            let mut bytes = 0usize;
            for k in &args[1..] {
                out.push(match s.kv(shared).get(&s.key(k))? {
                    Some(v) => {
                        bytes += v.bytes.len();
                        if bytes > MAX_REPLY_BYTES {
                            return Ok(Reply::err(format!(
                                "MGET reply larger than {MAX_REPLY_BYTES} bytes; ask for fewer keys"
                            )));
                        }
                        Reply::Bulk(v.bytes)
                    }
                    None => Reply::Nil,
                });
            }
            Ok(Reply::Array(out))
        }
        "mset" | "msetnx" => mset(s, shared, name, args),
        "append" => {
            if let Err(r) = check_sizes(shared, &args[1], None) {
                return Ok(r);
            }
            let key = s.key(&args[1]);
            let tail = args[2].clone();
            let max = shared.limits.max_value_bytes;
            let r = rmw(&*s.kv(shared), shared.durable_writes, &key, |cur| {
                let mut v = cur.map(|v| v.bytes.to_vec()).unwrap_or_default();
                v.extend_from_slice(&tail);
                if v.len() > max {
                    return Err(Reply::err(format!(
                        "string exceeds maximum allowed size ({max} bytes)"
                    )));
                }
                Ok(put_keeping_ttl(v, cur))
            })?;
            Ok(r.unwrap_or_else(|e| e))
        }
        "strlen" => {
            let len = s
                .kv(shared)
                .head(&s.key(&args[1]))?
                .map_or(0, |m| m.value_len);
            Ok(Reply::Int(i64::try_from(len).unwrap_or(i64::MAX)))
        }
        "getrange" | "substr" => {
            let (start, end) = match (int_arg(&args[2]), int_arg(&args[3])) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(r), _) | (_, Err(r)) => return Ok(r),
            };
            let v = s
                .kv(shared)
                .get(&s.key(&args[1]))?
                .map(|v| v.bytes)
                .unwrap_or_default();
            Ok(Reply::Bulk(range(&v, start, end)))
        }
        "setrange" => setrange(s, shared, args),
        "incr" | "decr" | "incrby" | "decrby" => {
            let by = match name {
                "incr" => 1,
                "decr" => -1,
                _ => match int_arg(&args[2]) {
                    Ok(n) if name == "decrby" => match n.checked_neg() {
                        Some(n) => n,
                        None => return Ok(Reply::err("decrement would overflow")),
                    },
                    Ok(n) => n,
                    Err(r) => return Ok(r),
                },
            };
            let key = s.key(&args[1]);
            let r = rmw(&*s.kv(shared), shared.durable_writes, &key, |cur| {
                let now = match cur {
                    Some(v) => strict_int(&v.bytes)
                        .ok_or_else(|| Reply::err("value is not an integer or out of range"))?,
                    None => 0,
                };
                let next = now
                    .wrapping_add(0)
                    .checked_add(by)
                    .ok_or_else(|| Reply::err("increment or decrement would overflow"))?;
                Ok(Change::Put(
                    Bytes::from(next.to_string()),
                    cur.and_then(|c| c.meta.expires_at),
                    Reply::Int(next),
                ))
            })?;
            Ok(r.unwrap_or_else(|e| e))
        }
        "incrbyfloat" => {
            let Some(by) = parse_float(&args[2]) else {
                return Ok(Reply::err("value is not a valid float"));
            };
            let key = s.key(&args[1]);
            let r = rmw(&*s.kv(shared), shared.durable_writes, &key, |cur| {
                let now = match cur {
                    Some(v) => parse_float(&v.bytes)
                        .ok_or_else(|| Reply::err("value is not a valid float"))?,
                    None => 0.0,
                };
                let next = now + by;
                if !next.is_finite() {
                    return Err(Reply::err("increment would produce NaN or Infinity"));
                }
                let text = format_double(next);
                Ok(Change::Put(
                    Bytes::from(text.clone()),
                    cur.and_then(|c| c.meta.expires_at),
                    Reply::Bulk(Bytes::from(text)),
                ))
            })?;
            Ok(r.unwrap_or_else(|e| e))
        }
        other => Ok(Reply::err(format!("'{other}' is not a string command"))),
    }
}

fn parse_float(b: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(b).ok()?;
    if t.is_empty() || t.contains(char::is_whitespace) {
        return None;
    }
    let f: f64 = match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => t.parse().ok()?,
    };
    (!f.is_nan()).then_some(f)
}

/// Redis's GETRANGE: inclusive, negative indices from the end, clamped.
fn range(v: &Bytes, start: i64, end: i64) -> Bytes {
    let len = v.len() as i64;
    if len == 0 {
        return Bytes::new();
    }
    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (a, b) = (norm(start), norm(end).min(len - 1));
    if a > b || a >= len {
        return Bytes::new();
    }
    v.slice(a as usize..=b as usize)
}

/// The expiry options of SET and GETEX from `args[from..]` (EX, PX, EXAT, PXAT, KEEPTTL,
/// PERSIST; at most one), and the other words, upper-cased, for the caller to check.
fn options(args: &Args, from: usize, cmd: &str) -> Result<(Expiry, Vec<String>), Reply> {
    let mut expiry = Expiry::Unset;
    let mut flags = Vec::new();
    let mut i = from;
    while i < args.len() {
        let opt = text(&args[i]).to_ascii_uppercase();
        match opt.as_str() {
            "KEEPTTL" if expiry == Expiry::Unset => expiry = Expiry::Keep,
            "PERSIST" if expiry == Expiry::Unset => expiry = Expiry::Persist,
            "EX" | "PX" | "EXAT" | "PXAT" if expiry == Expiry::Unset && i + 1 < args.len() => {
                expiry = Expiry::At(expiry_from(&opt, &args[i + 1], cmd)?);
                i += 1;
            }
            "KEEPTTL" | "PERSIST" | "EX" | "PX" | "EXAT" | "PXAT" => {
                return Err(Reply::err("syntax error"));
            }
            _ => flags.push(opt),
        }
        i += 1;
    }
    Ok((expiry, flags))
}

fn set(s: &mut Session, shared: &Shared, args: &Args) -> CmdResult {
    let (expiry, flags) = match options(args, 3, "set") {
        Ok(o) => o,
        Err(r) => return Ok(r),
    };
    let (mut nx, mut xx, mut get) = (false, false, false);
    for f in flags {
        match f.as_str() {
            "NX" if !xx => nx = true,
            "XX" if !nx => xx = true,
            "GET" => get = true,
            _ => return Ok(Reply::err("syntax error")),
        }
    }
    if expiry == Expiry::Persist {
        return Ok(Reply::err("syntax error"));
    }
    if let Err(r) = check_sizes(shared, &args[1], Some(&args[2])) {
        return Ok(r);
    }
    let key = s.key(&args[1]);
    let value = args[2].clone();
    if !get && expiry != Expiry::Keep {
        // One conditional write: no read needed.
        let opts = PutOptions {
            expires_at: match expiry {
                Expiry::At(at) => Some(at),
                _ => None,
            },
            precondition: if nx {
                Precondition::IfAbsent
            } else if xx {
                Precondition::IfExists
            } else {
                Precondition::None
            },
        };
        return match s.kv(shared).put(&key, value, opts) {
            Ok(_) => Ok(Reply::OK),
            Err(EngineError::PreconditionFailed { .. }) => Ok(Reply::Nil),
            Err(e) => Err(e),
        };
    }
    let r = rmw(&*s.kv(shared), shared.durable_writes, &key, |cur| {
        let old = cur.map_or(Reply::Nil, |v| Reply::Bulk(v.bytes.clone()));
        let answer = if get { old } else { Reply::OK };
        let skip = if get { answer.clone() } else { Reply::Nil };
        if (nx && cur.is_some()) || (xx && cur.is_none()) {
            return Ok(Change::Keep(skip));
        }
        let expires_at = match expiry {
            Expiry::At(at) => Some(at),
            Expiry::Keep => cur.and_then(|c| c.meta.expires_at),
            Expiry::Unset | Expiry::Persist => None,
        };
        Ok(Change::Put(value.clone(), expires_at, answer))
    })?;
    Ok(r.unwrap_or_else(|e| e))
}

fn getex(s: &mut Session, shared: &Shared, args: &Args) -> CmdResult {
    let expiry = match options(args, 2, "getex") {
        Ok((e, flags)) if flags.is_empty() && e != Expiry::Keep => e,
        Ok(_) => return Ok(Reply::err("syntax error")),
        Err(r) => return Ok(r),
    };
    let key = s.key(&args[1]);
    let r = rmw(&*s.kv(shared), shared.durable_writes, &key, |cur| {
        let Some(v) = cur else {
            return Ok(Change::Keep(Reply::Nil));
        };
        let answer = Reply::Bulk(v.bytes.clone());
        Ok(match expiry {
            Expiry::Unset | Expiry::Keep => Change::Keep(answer),
            Expiry::Persist if v.meta.expires_at.is_none() => Change::Keep(answer),
            Expiry::Persist => Change::Put(v.bytes.clone(), None, answer),
            Expiry::At(at) => Change::Put(v.bytes.clone(), Some(at), answer),
        })
    })?;
    Ok(r.unwrap_or_else(|e| e))
}

fn mset(s: &mut Session, shared: &Shared, name: &str, args: &Args) -> CmdResult {
    if args.len().is_multiple_of(2) {
        return Ok(Reply::err(format!(
            "wrong number of arguments for '{name}' command"
        )));
    }
    let pairs = (args.len() - 1) / 2;
    if pairs > shared.limits.max_batch_ops {
        return Ok(Reply::err(format!(
            "{pairs} keys in one {name}; the limit is {} (max_batch_ops)",
            shared.limits.max_batch_ops
        )));
    }
    let mut ops = Vec::with_capacity(pairs);
    for kv in args[1..].chunks(2) {
        if let Err(r) = check_sizes(shared, &kv[0], Some(&kv[1])) {
            return Ok(r);
        }
        ops.push(BatchOp::Put {
            key: s.key(&kv[0]),
            value: kv[1].clone(),
            expires_at: None,
        });
    }
    if name == "msetnx" {
        // Every key absent, checked and applied as one engine step: no write can slip in.
        let checks: Vec<(Vec<u8>, Precondition)> = ops
            .iter()
            .map(|op| (op.key().to_vec(), Precondition::IfAbsent))
            .collect();
        return match s.kv(shared).apply_batch_checked(&checks, ops) {
            Ok(_) => Ok(Reply::Int(1)),
            Err(EngineError::PreconditionFailed { .. }) => Ok(Reply::Int(0)),
            Err(e) => Err(e),
        };
    }
    s.kv(shared).apply_batch(ops)?;
    Ok(Reply::OK)
}

fn setrange(s: &mut Session, shared: &Shared, args: &Args) -> CmdResult {
    let offset = match int_arg(&args[2]) {
        Ok(o) if o >= 0 => o.unsigned_abs() as usize,
        Ok(_) => return Ok(Reply::err("offset is out of range")),
        Err(r) => return Ok(r),
    };
    let patch = args[3].clone();
    let max = shared.limits.max_value_bytes;
    if patch.is_empty() {
        // Nothing to write: the current length, whatever the offset (Redis).
        let len = s
            .kv(shared)
            .head(&s.key(&args[1]))?
            .map_or(0, |m| m.value_len);
        return Ok(Reply::Int(i64::try_from(len).unwrap_or(i64::MAX)));
    }
    if offset.saturating_add(patch.len()) > max {
        return Ok(Reply::err(format!(
            "string exceeds maximum allowed size ({max} bytes)"
        )));
    }
    let key = s.key(&args[1]);
    let r = rmw(&*s.kv(shared), shared.durable_writes, &key, |cur| {
        let mut v = cur.map(|v| v.bytes.to_vec()).unwrap_or_default();
        if patch.is_empty() {
            return Ok(Change::Keep(Reply::Int(v.len() as i64)));
        }
        if v.len() < offset + patch.len() {
            v.resize(offset + patch.len(), 0);
        }
        v[offset..offset + patch.len()].copy_from_slice(&patch);
        Ok(put_keeping_ttl(v, cur))
    })?;
    Ok(r.unwrap_or_else(|e| e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_follows_redis() {
        let v = Bytes::from_static(b"This is a string");
        assert_eq!(range(&v, 0, 3), "This");
        assert_eq!(range(&v, -3, -1), "ing");
        assert_eq!(range(&v, 0, -1), "This is a string");
        assert_eq!(range(&v, 10, 100), "string");
        assert_eq!(range(&v, 5, 2), "");
        assert_eq!(parse_float(b"10.5"), Some(10.5));
        assert_eq!(parse_float(b" 1"), None);
        assert_eq!(strict_int(b"-12"), Some(-12));
        for bad in [
            &b"+5"[..],
            b"01",
            b"-0",
            b"",
            b"1 ",
            b"99999999999999999999",
        ] {
            assert_eq!(strict_int(bad), None, "{bad:?}");
        }
        assert_eq!(parse_float(b"abc"), None);
    }
}
