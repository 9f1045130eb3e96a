//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! Owns [`run`] for its group. A transaction of plain writes (SET without options or with
//! EX/PX, SETEX, PSETEX, MSET, DEL, UNLINK) becomes ONE engine batch, applied with
//! [`crate::engine::Engine::apply_batch_checked`] on the WATCHed versions: the check and the
//! writes are one atomic step (a changed key: a null reply, nothing applied), all of it or
//! none of it is applied, also across kill -9. Any other transaction checks WATCH, then runs
//! its commands one after the other under the RESP transaction lock, so no other such
//! transaction interleaves; a single write from another client may (docs/redis.md).

use bytes::Bytes;

use super::session::{CmdResult, Multi, Session, Shared, text};
use super::strings::check_sizes;
use crate::engine::{BatchOp, Precondition, UnixMillis};
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
        let checks: Vec<(Vec<u8>, Precondition)> = watched
            .iter()
            .map(|(k, seen)| {
                let pre = seen.map_or(Precondition::IfAbsent, Precondition::IfVersion);
                (k.clone(), pre)
            })
            .collect();
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
    // A transaction with reads or conditional writes runs command by command under the
    // transaction lock, after checking WATCH; a single write from another client can still
    // come between (docs/redis.md).
    let _txn = shared.txn.lock();
    for (key, seen) in &watched {
        if shared.engine.head(key)?.map(|m| m.version) != *seen {
            return Ok(Reply::NilArray);
        }
    }
    let mut out = Vec::with_capacity(multi.queued.len());
    for args in multi.queued {
        // Run without queueing (multi is None now) and without re-taking the lock.
        out.push(run_queued(s, shared, args));
    }
    Ok(Reply::Array(out))
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
