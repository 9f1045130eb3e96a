//! Keyspace commands: DEL, EXISTS, TYPE, the EXPIRE family, TTL, PERSIST, KEYS, SCAN, DBSIZE,
//! FLUSHDB / FLUSHALL, RANDOMKEY, RENAME.
//!
//! Owns [`run`] for its group. Expiry changes rewrite the value with a new expiry through
//! [`super::strings::rmw`] (a compare-and-set on the version read), so they never undo a
//! concurrent write. KEYS and SCAN list the engine in key order from the pattern's literal
//! prefix; a SCAN cursor is a number standing for the last key returned, so a scan is stable
//! under concurrent writes and sees every key that exists from its start to its end.

use bytes::Bytes;

use super::glob;
use super::session::{CmdResult, Session, Shared, db_prefix, int_arg, random_u63, text};
use super::strings::{Change, rmw};
use crate::engine::{BatchOp, Precondition, UnixMillis};
use hoardhaven_resp_proto::parse::Args;
use hoardhaven_resp_proto::reply::Reply;

/// Keys per engine page while walking the key space.
const PAGE: usize = 1000;

/// Runs the keyspace command `name`.
pub fn run(s: &mut Session, shared: &Shared, name: &str, args: &Args) -> CmdResult {
    match name {
        "del" | "unlink" => {
            let mut n = 0;
            for k in &args[1..] {
                if s.kv(shared)
                    .delete(&s.key(k), Precondition::None)?
                    .is_some()
                {
                    n += 1;
                }
            }
            Ok(Reply::Int(n))
        }
        "exists" => {
            let mut n = 0;
            for k in &args[1..] {
                if s.kv(shared).head(&s.key(k))?.is_some() {
                    n += 1;
                }
            }
            Ok(Reply::Int(n))
        }
        "type" => Ok(Reply::Simple(
            if s.kv(shared).head(&s.key(&args[1]))?.is_some() {
                "string"
            } else {
                "none"
            },
        )),
        "expire" | "pexpire" | "expireat" | "pexpireat" => expire(s, shared, name, args),
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
            let Some(meta) = s.kv(shared).head(&s.key(&args[1]))? else {
                return Ok(Reply::Int(-2));
            };
            let Some(at) = meta.expires_at else {
                return Ok(Reply::Int(-1));
            };
            let now = UnixMillis::now().0;
            let left = at.0.saturating_sub(now);
            let n = match name {
                "ttl" => (left + 500) / 1000,
                "pttl" => left,
                "expiretime" => (at.0 + 500) / 1000,
                _ => at.0,
            };
            Ok(Reply::Int(i64::try_from(n).unwrap_or(i64::MAX)))
        }
        "persist" => {
            let r = rmw(
                &*s.kv(shared),
                shared.durable_writes,
                &s.key(&args[1]),
                |cur| {
                    Ok(match cur {
                        Some(v) if v.meta.expires_at.is_some() => {
                            Change::Put(v.bytes.clone(), None, Reply::Int(1))
                        }
                        _ => Change::Keep(Reply::Int(0)),
                    })
                },
            )?;
            Ok(r.unwrap_or_else(|e| e))
        }
        "keys" => {
            let pattern = args[1].clone();
            let mut out = Vec::new();
            walk(s, shared, &pattern, None, usize::MAX, |k| {
                out.push(Reply::Bulk(Bytes::copy_from_slice(k)));
            })?;
            Ok(Reply::Array(out))
        }
        "scan" => scan(s, shared, args),
        "dbsize" => {
            let mut n = 0i64;
            walk(s, shared, b"*", None, usize::MAX, |_| n += 1)?;
            Ok(Reply::Int(n))
        }
        "flushdb" | "flushall" => {
            if args.len() > 2
                || args.get(1).is_some_and(|a| {
                    !matches!(text(a).to_ascii_uppercase().as_str(), "SYNC" | "ASYNC")
                })
            {
                return Ok(Reply::err("syntax error"));
            }
            let all = name == "flushall";
            let prefix = if all { Vec::new() } else { db_prefix(s.db) };
            let page_size = shared.limits.max_batch_ops.clamp(1, PAGE);
            // Page by page: list, delete that page, go on after its last key.
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = s.kv(shared).list(&prefix, after.as_deref(), page_size)?;
                let ops: Vec<BatchOp> = page
                    .keys
                    .iter()
                    .filter(|k| all || s.owns(k))
                    .map(|k| BatchOp::Delete { key: k.clone() })
                    .collect();
                if !ops.is_empty() {
                    s.kv(shared).apply_batch(ops)?;
                }
                match page.next_start_after {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            Ok(Reply::OK)
        }
        "randomkey" => {
            let prefix = db_prefix(s.db);
            let mut seed = [0u8; 8];
            seed.copy_from_slice(&random_u63().to_be_bytes());
            let start = [prefix.as_slice(), &seed].concat();
            let mut found = None;
            for after in [Some(start.as_slice()), None] {
                let page = s.kv(shared).list(&prefix, after, PAGE)?;
                if let Some(k) = page.keys.into_iter().find(|k| s.owns(k)) {
                    found = Some(k);
                    break;
                }
            }
            Ok(found.map_or(Reply::Nil, |k| {
                Reply::Bulk(Bytes::copy_from_slice(s.user_key(&k)))
            }))
        }
        "rename" | "renamenx" => {
            let (from, to) = (s.key(&args[1]), s.key(&args[2]));
            let nx = name == "renamenx";
            let done = if nx { Reply::Int(1) } else { Reply::OK };
            // Read the source, then move it only if neither it (nor, for RENAMENX, the
            // target's absence) changed meanwhile; retry if another writer came between.
            loop {
                let Some(v) = s.kv(shared).get(&from)? else {
                    return Ok(Reply::err("no such key"));
                };
                if from == to {
                    return Ok(if nx { Reply::Int(0) } else { Reply::OK });
                }
                let mut checks = vec![(from.clone(), Precondition::IfVersion(v.meta.version))];
                if nx {
                    checks.push((to.clone(), Precondition::IfAbsent));
                }
                let ops = vec![
                    BatchOp::Put {
                        key: to.clone(),
                        value: v.bytes,
                        expires_at: v.meta.expires_at,
                    },
                    BatchOp::Delete { key: from.clone() },
                ];
                match s.kv(shared).apply_batch_checked(&checks, ops) {
                    Ok(_) => return Ok(done),
                    Err(crate::engine::Error::PreconditionFailed { .. }) => {
                        if nx && s.kv(shared).head(&to)?.is_some() {
                            return Ok(Reply::Int(0));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        other => Ok(Reply::err(format!("'{other}' is not a keyspace command"))),
    }
}

/// Visits the selected database's keys matching `pattern` in key order, strictly after the
/// stored key `after`, until `budget` stored keys have been looked at. Returns the last stored
/// key looked at when the walk stopped early (the SCAN cursor), `None` when it reached the end.
fn walk(
    s: &Session,
    shared: &Shared,
    pattern: &[u8],
    after: Option<Vec<u8>>,
    budget: usize,
    mut visit: impl FnMut(&[u8]),
) -> Result<Option<Vec<u8>>, crate::engine::Error> {
    let prefix = [db_prefix(s.db), glob::literal_prefix(pattern)].concat();
    let mut after = after;
    let mut looked = 0usize;
    loop {
        let want = PAGE.min(budget - looked);
        let page = s.kv(shared).list(&prefix, after.as_deref(), want)?;
        looked += page.keys.len();
        for k in &page.keys {
            if !s.owns(k) {
                continue;
            }
            let user = s.user_key(k);
            if glob::matches(pattern, user) {
                visit(user);
            }
        }
        let last = page.keys.last().cloned();
        match page.next_start_after {
            None => return Ok(None),
            Some(_) if looked >= budget => return Ok(last),
            Some(n) => after = Some(n),
        }
    }
}

fn scan(s: &mut Session, shared: &Shared, args: &Args) -> CmdResult {
    let cursor = match text(&args[1]).parse::<u64>() {
        Ok(c) => c,
        Err(_) => return Ok(Reply::err("invalid cursor")),
    };
    let mut pattern = Bytes::from_static(b"*");
    let mut count = 10usize;
    let mut type_ok = true;
    let mut i = 2;
    while i < args.len() {
        let opt = text(&args[i]).to_ascii_uppercase();
        let Some(val) = args.get(i + 1) else {
            return Ok(Reply::err("syntax error"));
        };
        match opt.as_str() {
            "MATCH" => pattern = val.clone(),
            "COUNT" => match int_arg(val) {
                Ok(n) if n > 0 => count = usize::try_from(n).unwrap_or(usize::MAX).min(100_000),
                Ok(_) => return Ok(Reply::err("syntax error")),
                Err(r) => return Ok(r),
            },
            "TYPE" => type_ok = text(val).eq_ignore_ascii_case("string"),
            _ => return Ok(Reply::err("syntax error")),
        }
        i += 2;
    }
    let after = if cursor == 0 {
        None
    } else {
        match shared.cursors.lock().take(cursor, s.db) {
            Some(k) => Some(k),
            None => return Ok(Reply::err("invalid cursor")),
        }
    };
    let mut keys = Vec::new();
    let next = walk(s, shared, &pattern, after, count, |k| {
        if type_ok {
            keys.push(Reply::Bulk(Bytes::copy_from_slice(k)));
        }
    })?;
    let next_cursor = match next {
        None => 0,
        Some(last) => shared.cursors.lock().open(s.db, last),
    };
    Ok(Reply::Array(vec![
        Reply::Bulk(Bytes::from(next_cursor.to_string())),
        Reply::Array(keys),
    ]))
}

fn expire(s: &mut Session, shared: &Shared, name: &str, args: &Args) -> CmdResult {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for a in &args[3..] {
        match text(a).to_ascii_uppercase().as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            other => return Ok(Reply::err(format!("Unsupported option {other}"))),
        }
    }
    if nx && (xx || gt || lt) {
        return Ok(Reply::err(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Ok(Reply::err(
            "GT and LT options at the same time are not compatible",
        ));
    }
    let n = match int_arg(&args[2]) {
        Ok(n) => n,
        Err(r) => return Ok(r),
    };
    let now = UnixMillis::now().0 as i64;
    let at_ms = match name {
        "expire" => n.checked_mul(1000).and_then(|m| m.checked_add(now)),
        "pexpire" => n.checked_add(now),
        "expireat" => n.checked_mul(1000),
        _ => Some(n),
    };
    let Some(at_ms) = at_ms else {
        return Ok(Reply::err(format!(
            "invalid expire time in '{name}' command"
        )));
    };
    let key = s.key(&args[1]);
    let r = rmw(&*s.kv(shared), shared.durable_writes, &key, |cur| {
        let Some(v) = cur else {
            return Ok(Change::Keep(Reply::Int(0)));
        };
        let old = v.meta.expires_at.map(|e| e.0 as i64);
        // No TTL counts as an infinite one for GT and LT (Redis).
        let allowed = (!nx || old.is_none())
            && (!xx || old.is_some())
            && (!gt || old.is_some_and(|o| at_ms > o))
            && (!lt || old.is_none_or(|o| at_ms < o));
        if !allowed {
            return Ok(Change::Keep(Reply::Int(0)));
        }
        if at_ms <= now {
            return Ok(Change::Delete(Reply::Int(1)));
        }
        Ok(Change::Put(
            v.bytes.clone(),
            Some(UnixMillis(at_ms.unsigned_abs())),
            Reply::Int(1),
        ))
    })?;
    Ok(r.unwrap_or_else(|e| e))
}
