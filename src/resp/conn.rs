//! One RESP connection: read, parse every complete command, run them, write all replies at once.
//!
//! Owns [`handle`]. Pipelined commands that arrive in one read run as one group and their
//! replies leave in one write, in order. A group runs on tokio's blocking pool unless every
//! command in it is a cheap point read (a durable write waits for fdatasync; KEYS, SCAN, MGET,
//! EXEC and INFO can take long). A protocol error gets its `-ERR Protocol error` reply and the
//! connection is closed, as Redis does.
//!
//! Memory per connection is bounded: input by the parser's caps (tight ones until the client
//! has authenticated, as Redis does), output by [`OUT_CAP`]: once a group's replies pass it,
//! they are written before the next command runs. A client that never reads its replies stops
//! being read from (the write blocks). An HTTP request sent to this port (a browser tricked
//! into it: `POST` or `Host:` as a command) closes the connection before anything runs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use hoardhaven_resp_proto::parse::{self, Args, ParseLimits};
use hoardhaven_resp_proto::{Proto, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::session::{Session, Shared};
use crate::shutdown::Shutdown;

/// Most commands parsed ahead into one group.
const MAX_GROUP: usize = 1024;

/// Reply bytes buffered before they are written out (the group pauses there).
pub const OUT_CAP: usize = 8 * 1024 * 1024;

/// Commands cheap enough to run on the connection's async task: point reads of one key and
/// connection bookkeeping. Everything else goes to the blocking pool.
const INLINE: &[&str] = &[
    "get", "exists", "ttl", "pttl", "type", "strlen", "ping", "echo", "select", "time", "lastsave",
    "quit",
];

/// Single-key writes: inline too when writes do not wait for fdatasync (`sync` is not
/// `always`), so a sync=never SET costs no thread hop.
const INLINE_UNLESS_DURABLE: &[&str] = &[
    "set",
    "setnx",
    "setex",
    "psetex",
    "getset",
    "getdel",
    "del",
    "unlink",
    "incr",
    "decr",
    "incrby",
    "decrby",
    "incrbyfloat",
    "append",
    "expire",
    "pexpire",
    "persist",
];

/// Unregisters the client however the connection ends (a panic in a command included).
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.clients.lock().remove(&self.id);
        metrics::gauge!("hoardhaven_resp_connected_clients").decrement(1.0);
    }
}

/// Whether `args` is the first line of an HTTP request (cross-protocol scripting).
fn is_http(args: &Args) -> bool {
    args[0].eq_ignore_ascii_case(b"POST") || args[0].eq_ignore_ascii_case(b"HOST:")
}

/// Most key and value bytes in one coalesced run of SETs (well under either engine's batch
/// byte limit, so a run never fails where the single SETs would not).
const SET_RUN_BYTES: usize = 8 * 1024 * 1024;

/// How many commands at the front of `group` are plain `SET key value` (no options), at most
/// `max` of them and [`SET_RUN_BYTES`] bytes: they can be applied as one engine batch.
fn plain_set_run(group: &VecDeque<Args>, max: usize) -> usize {
    let mut bytes = 0usize;
    group
        .iter()
        .take(max)
        .take_while(|a| {
            bytes += a.iter().map(|x| x.len()).sum::<usize>();
            a.len() == 3 && a[0].eq_ignore_ascii_case(b"SET") && bytes <= SET_RUN_BYTES
        })
        .count()
}

/// Whether a command reads keys (so, on a cluster node, needs the read barrier first).
fn reads_keys(args: &Args) -> bool {
    super::spec::lookup_bytes(&args[0]).is_some_and(|(_, spec)| spec.first_key > 0)
}

fn runs_inline(args: &Args, durable_writes: bool) -> bool {
    let Some((_, spec)) = super::spec::lookup_bytes(&args[0]) else {
        return true; // answered "unknown command" at once
    };
    INLINE.contains(&spec.label)
        || (!durable_writes && args.len() <= 16 && INLINE_UNLESS_DURABLE.contains(&spec.label))
}

/// Serves one connection until the client leaves, QUIT, a protocol error or shutdown.
pub async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    limits: ParseLimits,
    shutdown: Shutdown,
) {
    let _ = stream.set_nodelay(true);
    let first = Session::join(&shared, peer);
    metrics::gauge!("hoardhaven_resp_connected_clients").increment(1.0);
    let _registration = Registration {
        shared: Arc::clone(&shared),
        id: first.id,
    };
    let mut session = Some(first);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    let mut pending: VecDeque<Args> = VecDeque::new();
    loop {
        let authenticated = session.as_ref().is_some_and(|s| s.role.is_some());
        let caps = if authenticated {
            limits
        } else {
            ParseLimits::unauthenticated()
        };
        let mut fatal = None;
        while pending.len() < MAX_GROUP {
            match parse::parse(&input, &caps) {
                Ok(Some((args, used))) => {
                    input.advance(used);
                    if args.is_empty() {
                        continue;
                    }
                    if is_http(&args) {
                        tracing::warn!(%peer, "an HTTP request reached the RESP port; closing (possible cross-protocol attack)");
                        return;
                    }
                    pending.push_back(args);
                    if !authenticated {
                        // The caps change once AUTH succeeds: parse the rest afterwards.
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        // Plain SETs with sync=always: appended inline as one batch, then the group commit is
        // awaited (no thread parked); the replies go out once the batch is durable.
        if shared.durable_writes
            && fatal.is_none()
            && !pending.is_empty()
            && session.as_ref().is_some_and(|s| s.multi.is_none())
            && plain_set_run(&pending, shared.limits.max_batch_ops) == pending.len()
            && let Some(s) = session.as_mut()
        {
            let sets: Vec<Args> = pending.drain(..).collect();
            let (replies, ticket) = s.execute_sets_deferred(&shared, sets);
            let durable = ticket.await;
            for reply in replies {
                match &durable {
                    Ok(()) => reply.encode(s.proto, &mut output),
                    Err(e) => Reply::err(e.to_string()).encode(s.proto, &mut output),
                }
            }
            if stream.write_all(&output).await.is_err() {
                break;
            }
            output.clear();
            continue;
        }
        // On a cluster node reads are linearizable: one read barrier (read index) covers every
        // command received so far, unless the client asked for its local copy (READONLY).
        if let Some(node) = &shared.cluster
            && fatal.is_none()
            && session
                .as_ref()
                .is_some_and(|s| !s.stale_reads && s.role.is_some())
            && pending.iter().any(reads_keys)
            && let Err(e) = node.read_barrier().await
        {
            let proto = session.as_ref().map_or(Proto::Resp2, |s| s.proto);
            for _ in pending.drain(..) {
                Reply::Error(format!("TRYAGAIN {e}")).encode(proto, &mut output);
            }
            if stream.write_all(&output).await.is_err() {
                break;
            }
            output.clear();
            continue;
        }
        if !pending.is_empty() {
            let Some(mut s) = session.take() else { break };
            let inline = pending
                .iter()
                .all(|a| runs_inline(a, shared.durable_writes))
                && s.multi.is_none();
            let sh = Arc::clone(&shared);
            let mut out = std::mem::take(&mut output);
            let mut group = std::mem::take(&mut pending);
            let run = move || {
                while !group.is_empty() {
                    // Pipelined plain SETs with sync=always: one batch, one fdatasync.
                    let run = if sh.durable_writes {
                        plain_set_run(&group, sh.limits.max_batch_ops)
                    } else {
                        0
                    };
                    if run >= 2 {
                        let sets: Vec<Args> = group.drain(..run).collect();
                        for reply in s.execute_sets(&sh, sets) {
                            reply.encode(s.proto, &mut out);
                        }
                    } else if let Some(args) = group.pop_front() {
                        let reply = s.execute(&sh, args);
                        reply.encode(s.proto, &mut out);
                    }
                    if s.quit || out.len() >= OUT_CAP {
                        break;
                    }
                }
                (s, out, group)
            };
            let (s, out, rest) = if inline {
                run()
            } else {
                match tokio::task::spawn_blocking(run).await {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            output = out;
            pending = rest;
            let quit = s.quit;
            session = Some(s);
            if stream.write_all(&output).await.is_err() {
                break;
            }
            output.clear();
            if quit {
                break;
            }
            if !pending.is_empty() {
                continue;
            }
        }
        if let Some(e) = fatal {
            let mut out = BytesMut::new();
            let proto = session.as_ref().map_or(Proto::Resp2, |s| s.proto);
            Reply::err(e.to_string().trim_start_matches("ERR ")).encode(proto, &mut out);
            let _ = stream.write_all(&out).await;
            break;
        }
        if matches!(parse::parse(&input, &caps), Ok(Some(_)) | Err(_)) {
            continue;
        }
        input.reserve(16 * 1024);
        tokio::select! {
            n = stream.read_buf(&mut input) => match n {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            () = shutdown.wait() => break,
        }
    }
    let _ = stream.shutdown().await;
}
