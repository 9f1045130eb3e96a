//! One RESP connection: read, parse every complete command, run them, write all replies at once.
//!
//! Owns [`handle`]. Pipelined commands that arrive in one read are run as one group and their
//! replies leave in one write, in order. A group with a write runs on tokio's blocking pool
//! (a durable write waits for fdatasync); a group of reads runs on the connection's task. A
//! protocol error gets its `-ERR Protocol error` reply and the connection is closed, as Redis
//! does. Memory per connection is bounded: the read buffer by the parser's caps (one argument
//! of at most the value limit), the reply buffer by one group; a client that never reads its
//! replies stops being read from (the write blocks), so it cannot make the server buffer more.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::session::{Session, Shared};
use super::spec;
use crate::shutdown::Shutdown;
use hoardhaven_resp_proto::parse::{self, Args, ParseLimits};
use hoardhaven_resp_proto::reply::Reply;

/// Most commands run as one group (more wait for the next turn).
const MAX_GROUP: usize = 1024;

/// Serves one connection until the client leaves, QUIT, a protocol error or shutdown.
pub async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    limits: ParseLimits,
    shutdown: Shutdown,
) {
    let _ = stream.set_nodelay(true);
    let mut session = Some(Session::join(&shared, peer));
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    metrics::gauge!("hoardhaven_resp_connected_clients").increment(1.0);
    'conn: loop {
        let mut group: Vec<Args> = Vec::new();
        let mut fatal = None;
        while group.len() < MAX_GROUP {
            match parse::parse(&input, &limits) {
                Ok(Some((args, used))) => {
                    input.advance(used);
                    if !args.is_empty() {
                        group.push(args);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if !group.is_empty() {
            let Some(mut s) = session.take() else { break };
            let writes = group.iter().any(|a| {
                spec::lookup(&String::from_utf8_lossy(&a[0]).to_ascii_uppercase())
                    .is_some_and(|c| c.write)
            }) || s.multi.is_some();
            let sh = Arc::clone(&shared);
            let mut out = std::mem::take(&mut output);
            let run = move || {
                for args in group {
                    let reply = s.execute(&sh, args);
                    reply.encode(s.proto, &mut out);
                    if s.quit {
                        break;
                    }
                }
                (s, out)
            };
            let (s, out) = if writes {
                match tokio::task::spawn_blocking(run).await {
                    Ok(r) => r,
                    Err(_) => break,
                }
            } else {
                run()
            };
            output = out;
            let quit = s.quit;
            session = Some(s);
            if stream.write_all(&output).await.is_err() {
                break;
            }
            output.clear();
            if quit {
                break;
            }
        }
        if let Some(e) = fatal {
            let mut out = BytesMut::new();
            let proto = session
                .as_ref()
                .map_or(hoardhaven_resp_proto::Proto::Resp2, |s| s.proto);
            Reply::err(e.to_string().trim_start_matches("ERR ")).encode(proto, &mut out);
            let _ = stream.write_all(&out).await;
            break;
        }
        if !input.is_empty() && group_was_full(&input, &limits) {
            continue;
        }
        input.reserve(16 * 1024);
        tokio::select! {
            n = stream.read_buf(&mut input) => match n {
                Ok(0) | Err(_) => break 'conn,
                Ok(_) => {}
            },
            () = shutdown.wait() => break 'conn,
        }
    }
    let _ = stream.shutdown().await;
    if let Some(s) = session {
        s.leave(&shared);
    }
    metrics::gauge!("hoardhaven_resp_connected_clients").decrement(1.0);
}

/// Whether a complete command is still waiting in `input` (the group stopped at its cap).
fn group_was_full(input: &[u8], limits: &ParseLimits) -> bool {
    matches!(parse::parse(input, limits), Ok(Some(_)) | Err(_))
}
