//! The Redis protocol door: a RESP2 / RESP3 listener over the same engine, tokens and limits
//! as HTTP, for clients that already speak Redis (redis-cli, redis-benchmark, redis-py).
//!
//! Owns [`serve`] (the accept loop) and the modules under it: [`spec`] (the command table), [`session`] (per
//! connection state and dispatch), [`conn`] (the read-run-write loop with pipelining), and the
//! command groups [`strings`], [`keys`], [`txn`] and [`server`]. The wire format (the bounded
//! request parser and the reply encoder) is the crate `hoardhaven-resp-proto`, fuzzed on its own. docs/redis.md lists every
//! command and how it differs from Redis.

pub mod conn;
pub mod glob;
pub mod keys;
pub mod overlay;
pub mod server;
pub mod session;
pub mod spec;
pub mod strings;
pub mod txn;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::shutdown::Shutdown;
pub use session::Shared;

/// Accepts RESP connections until shutdown; each runs in its own task.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    let limits = hoardhaven_resp_proto::ParseLimits {
        max_args: 2 * shared.limits.max_batch_ops + 16,
        max_bulk: shared
            .limits
            .max_value_bytes
            .max(shared.limits.max_key_bytes)
            + 1024,
        max_inline: 64 * 1024,
        max_request: shared
            .limits
            .max_body_bytes
            .max(shared.limits.max_value_bytes + 64 * 1024),
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(conn::handle(stream, peer, Arc::clone(&shared), limits, shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "RESP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            () = shutdown.wait() => break,
        }
    }
}
