//! Reloading while the server runs: the TLS certificate and the token file.
//!
//! Owns [`spawn`], one task that reloads both on SIGHUP and the certificate alone when its
//! files change (polled every `tls.reload_interval_secs`). A failed reload keeps what is in
//! use and is logged; the server never stops over it. With a SIGHUP handler installed, SIGHUP
//! no longer ends the process (its default action), whatever is configured.

use std::sync::Arc;

use crate::http::auth::Auth;
use crate::shutdown::Shutdown;
use crate::tls::CertStore;

fn reload_tls(store: &CertStore, why: &str) {
    match store.reload() {
        Ok(()) => {
            tracing::info!(why, file = %store.config().cert_file.display(), "TLS certificate reloaded")
        }
        Err(e) => {
            tracing::error!(why, error = %format!("{e:#}"), "TLS certificate not reloaded; keeping the one in use")
        }
    }
}

fn reload_auth(auth: &Auth) {
    match auth.reload() {
        Ok(n) => tracing::info!(tokens = n, "tokens reloaded"),
        Err(e) => tracing::error!(error = %e, "tokens not reloaded; keeping those in use"),
    }
}

/// Starts the reload task (it ends with `shutdown`).
pub fn spawn(tls: Option<Arc<CertStore>>, auth: Option<Arc<Auth>>, shutdown: Shutdown) {
    // Installed before returning, so a SIGHUP sent once the server is up never kills it.
    let mut hup = hangup();
    tokio::spawn(async move {
        let interval = tls.as_ref().and_then(|t| t.config().reload_interval);
        let mut tick = interval.map(tokio::time::interval);
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                () = next_hup(&mut hup) => {
                    tracing::info!("SIGHUP: reloading certificate and tokens");
                    if let Some(t) = &tls { reload_tls(t, "SIGHUP"); }
                    if let Some(a) = &auth { reload_auth(a); }
                }
                () = next_tick(&mut tick) => {
                    if let Some(t) = tls.as_ref().filter(|t| t.changed()) {
                        reload_tls(t, "files changed");
                    }
                }
            }
        }
    });
}

async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hup = Option<()>;

#[cfg(unix)]
fn hangup() -> Hup {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler; reload by restarting");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup() -> Hup {
    None
}

#[cfg(unix)]
async fn next_hup(hup: &mut Hup) {
    match hup {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hup(_hup: &mut Hup) {
    std::future::pending().await
}
