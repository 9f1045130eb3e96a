//! The server's life: bind, open the engine, serve, stop gracefully, make everything durable.
//!
//! Owns [`run`]. It checks the security settings (tokens, TLS files) and binds first (so `/healthz` answers and `/readyz` says 503 while the engine
//! recovers), opens the engine on a blocking thread, then serves until SIGTERM / Ctrl-C: stop
//! accepting, let in-flight requests finish (up to the grace period), then `Engine::close`
//! (final sync, directory lock released). A failure to open, such as a data directory locked
//! by another process, stops the server and is returned to the caller. `listening on` is
//! logged only once the socket is bound and the engine is open, so it never precedes such a
//! failure.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::engine::{self, Engine};
use crate::exec::Pool;
use crate::http::auth::Auth;
use crate::http::{self, AppState, Exec, ExecMode, HttpOptions};
use crate::reload;
use crate::shutdown::Shutdown;
use crate::tls::{self, CertStore};
use crate::transport::{self, Transport};

/// Runs the server until a stop signal (or `shutdown` is triggered by the caller).
///
/// # Errors
/// Binding, opening the engine (locked directory, unsupported format, I/O) or the final sync.
pub async fn run(cfg: ServeConfig, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let resp_listener = match cfg.resp_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (resp_listen)"))?,
        ),
        None => None,
    };
    let sec = &cfg.security;
    let scheme = if sec.tls.is_some() { "https" } else { "http" };
    // Not "listening on" yet: opening the engine can still fail (a file where the directory
    // should be, no permission, locked by another process). Meanwhile /healthz answers.
    tracing::info!(%addr, dir = %cfg.engine.dir.display(), "bound; opening the engine");
    if !sec.auth.enabled() && !addr.ip().to_canonical().is_loopback() {
        tracing::warn!(%addr, "serving WITHOUT authentication on a non-loopback address (allow_unauthenticated_remote)");
    }
    let auth = if sec.auth.enabled() {
        Some(Arc::new(
            Auth::new(sec.auth.clone()).map_err(|e| anyhow!("auth.token_file: {e}"))?,
        ))
    } else {
        None
    };
    let certs = match &sec.tls {
        Some(t) => Some(Arc::new(
            CertStore::new(t.clone()).context("loading TLS files")?,
        )),
        None => None,
    };
    let transport = Transport {
        header_read_timeout: sec.header_read_timeout,
        max_head_bytes: sec.head.max_uri_bytes + sec.head.max_header_bytes + 1024,
        tls: match &certs {
            Some(c) => Some(tls::acceptor(Arc::clone(c), cfg.http2.is_some())?),
            None => None,
        },
        http2: cfg.http2,
    };
    reload::spawn(certs.clone(), auth.clone(), shutdown.clone());
    if let Some(p) = &cfg.port_file {
        write_port_file(p, &addr.to_string())
            .with_context(|| format!("writing the port file {}", p.display()))?;
    }

    let uses_pool = cfg.exec_reads == ExecMode::Pool || cfg.exec_writes == ExecMode::Pool;
    let pool = if uses_pool {
        Some(Arc::new(
            Pool::new(cfg.pool_threads).context("starting the engine thread pool")?,
        ))
    } else {
        None
    };
    let exec = Exec {
        reads: cfg.exec_reads,
        writes: cfg.exec_writes,
        pool,
    };
    let metrics = http::metrics::install();
    let state = AppState::new(cfg.limits, exec, metrics.clone());
    state.watch().configure(cfg.watch);
    let opts = HttpOptions {
        auth: auth.clone(),
        metrics_open: sec.auth.metrics_open,
        docs_open: sec.auth.docs_open,
        head: sec.head,
        request_timeout: sec.request_timeout,
        cors_origins: sec.cors_origins.clone(),
        cluster_doc: cfg.cluster.is_some(),
    };
    let app = http::router_with(state.clone(), &opts);
    // A cluster node: the /cluster routes, the read barrier and the leader header around the
    // same router; the node appears in `slot` once started.
    let slot: crate::cluster::admin::Slot = Default::default();
    let app = match &cfg.cluster {
        Some(_) => crate::cluster::admin::wrap(app, Arc::clone(&slot), auth.clone()),
        None => app,
    };

    if let Some(handle) = metrics {
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(http::METRICS_UPKEEP);
            loop {
                tokio::select! {
                    _ = tick.tick() => handle.run_upkeep(),
                    _ = sd.wait() => break,
                }
            }
        });
    }

    let serve = {
        let sd = shutdown.clone();
        let st = state.clone();
        tokio::spawn(transport::serve(listener, app, transport, async move {
            sd.wait().await;
            st.set_stopping();
        }))
    };

    let opened: anyhow::Result<Arc<dyn Engine>> = match &cfg.cluster {
        None => {
            let opts = cfg.engine.clone();
            tokio::task::spawn_blocking(move || engine::open(&opts))
                .await
                .map_err(|e| anyhow!("opening the engine: {e}"))?
                .map_err(anyhow::Error::new)
        }
        Some(c) => start_cluster(&cfg, c, format!("{scheme}://{addr}"), certs, &shutdown)
            .await
            .map(|node| {
                let _ = slot.set(Arc::clone(&node));
                Arc::new(crate::cluster::facade::ClusterStore::new(
                    node,
                    tokio::runtime::Handle::current(),
                )) as Arc<dyn Engine>
            }),
    };
    let engine: Arc<dyn Engine> = match opened {
        Ok(e) => e,
        Err(e) => {
            shutdown.trigger();
            let _ = serve.await;
            remove_port_file(cfg.port_file.as_deref());
            return Err(e);
        }
    };
    // Logged before /readyz turns 200, so whoever sees ready can also find this line.
    tracing::info!(%addr, engine = %cfg.engine.kind, dir = %cfg.engine.dir.display(),
        sync = %cfg.engine.sync, auth = sec.auth.enabled(),
        "listening on {scheme}://{addr}; ready: engine open");
    crate::telemetry::set_store(cfg.engine.kind, cfg.engine.sync);
    state.set_engine(Arc::clone(&engine));
    if let Some(l) = resp_listener {
        let resp_addr = l.local_addr().context("reading the RESP address")?;
        state.set_resp_addr(resp_addr);
        let mut shared =
            crate::resp::Shared::new(Arc::clone(&engine), auth.clone(), cfg.limits, resp_addr);
        shared.cluster = slot.get().cloned();
        let shared = Arc::new(shared);
        tracing::info!(addr = %resp_addr, "Redis protocol listening on {resp_addr}");
        tokio::spawn(crate::resp::serve(l, shared, shutdown.clone()));
    }

    shutdown.wait().await;
    let mut serve = serve;
    match tokio::time::timeout(cfg.shutdown_grace, &mut serve).await {
        Ok(Ok(Ok(()))) => tracing::info!("stopped accepting; in-flight requests finished"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
        Err(_) => {
            tracing::warn!(grace = ?cfg.shutdown_grace, "in-flight requests still running after the grace period; closing anyway");
            serve.abort();
        }
    }
    let closing = Arc::clone(&engine);
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|e| anyhow!("closing the engine: {e}"))?
        .context("final sync at shutdown")?;
    remove_port_file(cfg.port_file.as_deref());
    tracing::info!("engine closed; data durable; bye");
    Ok(())
}

/// Starts this server's cluster node (log, engine, Raft, peer listener; init or join). With
/// `certs` (the client listener's TLS) the peer listener serves TLS with the same certificate.
async fn start_cluster(
    cfg: &ServeConfig,
    c: &crate::config::ClusterConfig,
    bound_url: String,
    certs: Option<Arc<CertStore>>,
    shutdown: &Shutdown,
) -> anyhow::Result<Arc<crate::cluster::node::Node>> {
    crate::cluster::metrics::describe();
    let tls = match certs {
        Some(certs) => {
            let roots = tls::trust_roots(c.peer_ca_file.as_deref(), "peer_ca_file")
                .map_err(|e| anyhow!("{e}"))?;
            Some(crate::cluster::node::PeerTls {
                certs,
                client: tls::peer_client_config(roots)?,
            })
        }
        None => None,
    };
    let opts = crate::cluster::node::ClusterOptions {
        node_id: c.node_id,
        peer_listen: c.peer_listen,
        peer_url: c.peer_url.clone(),
        api_url: c.api_url.clone().unwrap_or(bound_url),
        init: c.init,
        join: c.join.clone(),
        secret: c.secret.clone(),
        data_dir: cfg.engine.dir.clone(),
        engine: cfg.engine.clone(),
        timeout: c.timeout,
        snapshot_every: c.snapshot_every,
        heartbeat: c.heartbeat,
        tls,
    };
    crate::cluster::node::start(opts, shutdown.clone()).await
}

/// Writes `addr` to `path` atomically (temporary file, then rename), so a reader never sees a
/// partial address.
fn write_port_file(path: &Path, addr: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, path)
}

fn remove_port_file(path: Option<&Path>) {
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
}
