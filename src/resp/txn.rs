//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! Owns [`run`] for its group. A transaction of plain writes (SET without options or with
//! EX/PX, SETEX, PSETEX, MSET, DEL, UNLINK) becomes ONE engine batch, applied with
//! [`crate::engine::Engine::apply_batch_checked`] on the WATCHed versions: the check and the
//! writes are one atomic step (a changed key: a null reply, nothing applied), all of it or
//! none of it is applied, also across kill -9. A transaction with reads or conditional writes
//! (INCR, GETSET, SETNX, ...) runs against an [`Overlay`] and commits its writes as one batch
//! checked on every version it read: atomic and isolated too, run again when another client
//! wrote a key it read. Only transactions that walk the key space or start background jobs
//! run command by command under the RESP transaction lock (docs/redis.md).

use std::sync::Arc;

use bytes::Bytes;

use super::overlay::Overlay;
use super::session::{CmdResult, Multi, Session, Shared, text};
use super::strings::check_sizes;
use crate::engine::{BatchOp, Precondition, UnixMillis, Version};
use hoardhaven_resp_proto::parse::Args;
use hoardhaven_resp_proto::reply::Reply;

/// Runs the transaction command `name`.
pub fn run(s: &mut Session, shared: &Shared, name: &str, args: &Args) -> CmdResult {
    Ok(match name {
        "multi" => {
            if s.multi.is_some() {
                return Ok(Reply::err("MULTI calls can not be nested"));
            }
            s.multi = Some(Multi::default());
            Reply::OK
        }
        "discard" => match s.multi.take() {
            Some(_) => {
                s.watched.clear();
                Reply::OK
            }
            None => Reply::err("DISCARD without MULTI"),
        },
        "watch" => {
            if s.multi.is_some() {
                return Ok(Reply::err("WATCH inside MULTI is not allowed"));
            }
            for k in &args[1..] {
                let key = s.key(k);
                let v = shared.engine.head(&key)?.map(|m| m.version);
                s.watched.push((key, v));
            }
            Reply::OK
        }
        "unwatch" => {
            s.watched.clear();
            Reply::OK
        }
        "exec" => return exec(s, shared),
        other => Reply::err(format!("'{other}' is not a transaction command")),
    })
}

fn exec(s: &mut Session, shared: &Shared) -> CmdResult {
    let Some(multi) = s.multi.take() else {
        return Ok(Reply::err("EXEC without MULTI"));
    };
    let watched = std::mem::take(&mut s.watched);
    if multi.poisoned {
        return Ok(Reply::Error(
            "EXECABORT Transaction discarded because of previous errors.".into(),
        ));
    }
    if let Some((ops, replies)) = as_batch(s, shared, &multi.queued) {
        // The WATCHed versions are checked by the engine in the same step that applies the
        // batch: no write from any client can come between.
        let checks = watch_checks(&watched);
        let results = match shared.engine.apply_batch_checked(&checks, ops) {
            Ok(r) => r,
            Err(crate::engine::Error::PreconditionFailed { .. }) => return Ok(Reply::NilArray),
            Err(e) => return Ok(super::session::engine_error(e)),
        };
        // DEL counts come from the batch's own view of which keys existed.
        let mut out = Vec::with_capacity(replies.len());
        let mut at = 0;
        for r in replies {
            match r {
                Planned::Fixed(reply, n) => {
                    at += n;
                    out.push(reply);
                }
                Planned::Deleted(n) => {
                    let existed = results[at..at + n]
                        .iter()
                        .filter(|r| r.existed_before)
                        .count();
                    at += n;
                    out.push(Reply::Int(existed as i64));
                }
            }
        }
        return Ok(Reply::Array(out));
    }
    if multi.queued.iter().any(walks_keyspace) {
        return locked(s, shared, multi.queued, &watched);
    }
    optimistic(s, shared, &multi.queued, &watched)
}

/// Most times a transaction runs again because another client wrote a key it read.
const MAX_ATTEMPTS: usize = 10_000;

/// Runs a transaction with reads or conditional writes atomically: its commands run against an
/// [`Overlay`], then the writes are applied in one engine batch on the condition that every key
/// read (and every WATCHed key) still has the version seen. A conflict on a WATCHed key is a
/// null reply, as in Redis; a conflict on a key only read runs the transaction again, so the
/// replies always describe the state the writes were applied to.
fn optimistic(
    s: &mut Session,
    shared: &Shared,
    queued: &[Args],
    watched: &[(Vec<u8>, Option<Version>)],
) -> CmdResult {
    let db = s.db;
    for _ in 0..MAX_ATTEMPTS {
        s.db = db;
        let view = Arc::new(Overlay::new(Arc::clone(&shared.engine)));
        s.txn_view = Some(Arc::clone(&view));
        let replies: Vec<Reply> = queued
            .iter()
            .map(|args| run_queued(s, shared, args.clone()))
            .collect();
        s.txn_view = None;
        let Ok(view) = Arc::try_unwrap(view) else {
            return Ok(Reply::err("internal error: transaction view still shared"));
        };
        let commit = view.into_commit();
        let mut checks = watch_checks(watched);
        checks.extend(commit.checks);
        match shared.engine.apply_batch_checked(&checks, commit.ops) {
            Ok(_) => return Ok(Reply::Array(replies)),
            Err(crate::engine::Error::PreconditionFailed { .. }) => {
                for (key, seen) in watched {
                    if shared.engine.head(key)?.map(|m| m.version) != *seen {
                        return Ok(Reply::NilArray);
                    }
                }
                // Only a key the transaction read changed: run it again on the new state.
            }
            Err(e) => return Ok(super::session::engine_error(e)),
        }
    }
    Ok(Reply::err(
        "too much contention on the transaction's keys; retry",
    ))
}

/// A transaction that walks the key space (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHDB,
/// FLUSHALL) or starts a background job cannot be checked key by key: it checks WATCH, then
/// runs command by command under the RESP transaction lock, so no other such transaction
/// interleaves; a single write from another client may (docs/redis.md).
fn locked(
    s: &mut Session,
    shared: &Shared,
    queued: Vec<Args>,
    watched: &[(Vec<u8>, Option<Version>)],
) -> Result<Reply, crate::engine::Error> {
    let _txn = shared.txn.lock();
    for (key, seen) in watched {
        if shared.engine.head(key)?.map(|m| m.version) != *seen {
            return Ok(Reply::NilArray);
        }
    }
    let mut out = Vec::with_capacity(queued.len());
    for args in queued {
        // Run without queueing (multi is None now) and without re-taking the lock.
        out.push(run_queued(s, shared, args));
    }
    Ok(Reply::Array(out))
}

/// Whether a queued command needs the whole key space or a background job, which an
/// [`Overlay`] cannot check key by key.
fn walks_keyspace(args: &Args) -> bool {
    const WALKS: [&str; 9] = [
        "KEYS",
        "SCAN",
        "DBSIZE",
        "RANDOMKEY",
        "FLUSHDB",
        "FLUSHALL",
        "BGSAVE",
        "SAVE",
        "BGREWRITEAOF",
    ];
    let name = text(&args[0]);
    WALKS.iter().any(|w| name.eq_ignore_ascii_case(w))
}

/// The WATCHed versions as batch preconditions (absent when watched: still absent).
fn watch_checks(watched: &[(Vec<u8>, Option<Version>)]) -> Vec<(Vec<u8>, Precondition)> {
    watched
        .iter()
        .map(|(k, seen)| {
            let pre = seen.map_or(Precondition::IfAbsent, Precondition::IfVersion);
            (k.clone(), pre)
        })
        .collect()
}

fn run_queued(s: &mut Session, shared: &Shared, args: Args) -> Reply {
    // No queued command takes the transaction lock itself, so running under it cannot
    // deadlock (parking_lot's Mutex is not reentrant).
    s.execute(shared, args)
}

/// What one queued command answers once the batch is applied; the `usize` is how many batch
/// operations it made.
enum Planned {
    Fixed(Reply, usize),
    Deleted(usize),
}

/// The queued commands as one engine batch, when every one of them is a plain write.
fn as_batch(s: &Session, shared: &Shared, queued: &[Args]) -> Option<(Vec<BatchOp>, Vec<Planned>)> {
    let mut ops = Vec::new();
    let mut planned = Vec::new();
    for args in queued {
        let name = text(&args[0]).to_ascii_uppercase();
        let put = |k: &Bytes, v: &Bytes, at: Option<UnixMillis>| -> Option<BatchOp> {
            check_sizes(shared, k, Some(v)).ok()?;
            Some(BatchOp::Put {
                key: s.key(k),
                value: v.clone(),
                expires_at: at,
            })
        };
        match name.as_str() {
            "SET" if args.len() == 3 => {
                ops.push(put(&args[1], &args[2], None)?);
                planned.push(Planned::Fixed(Reply::OK, 1));
            }
            "SET" if args.len() == 5 => {
                let unit = text(&args[3]).to_ascii_uppercase();
                let at = relative(&unit, &args[4])?;
                ops.push(put(&args[1], &args[2], Some(at))?);
                planned.push(Planned::Fixed(Reply::OK, 1));
            }
            "SETEX" | "PSETEX" if args.len() == 4 => {
                let unit = if name == "SETEX" { "EX" } else { "PX" };
                let at = relative(unit, &args[2])?;
                ops.push(put(&args[1], &args[3], Some(at))?);
                planned.push(Planned::Fixed(Reply::OK, 1));
            }
            "MSET" if args.len() >= 3 && !args.len().is_multiple_of(2) => {
                for kv in args[1..].chunks(2) {
                    ops.push(put(&kv[0], &kv[1], None)?);
                }
                planned.push(Planned::Fixed(Reply::OK, (args.len() - 1) / 2));
            }
            "DEL" | "UNLINK" if args.len() >= 2 => {
                for k in &args[1..] {
                    ops.push(BatchOp::Delete { key: s.key(k) });
                }
                planned.push(Planned::Deleted(args.len() - 1));
            }
            _ => return None,
        }
    }
    (ops.len() <= shared.limits.max_batch_ops && !ops.is_empty()).then_some((ops, planned))
}

/// An EX / PX expiry as SET checks it (positive, within 100 years); `None` sends the
/// transaction down the one-by-one path, where SET answers the error itself.
fn relative(unit: &str, n: &Bytes) -> Option<UnixMillis> {
    if !matches!(unit, "EX" | "PX") {
        return None;
    }
    super::strings::expiry_from(unit, n, "set").ok()
}
