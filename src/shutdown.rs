//! The stop signal: SIGTERM or Ctrl-C (SIGINT), or a programmatic trigger.
//!
//! Owns [`Shutdown`], a cloneable handle every long-lived task holds: the server's graceful
//! stop and the background tasks wait on it; [`Shutdown::listen_for_signals`] triggers it from
//! the operating system's signals.

use tokio::sync::watch;

/// A one-way latch: once triggered, every waiter wakes and stays woken.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A latch not yet triggered.
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(false);
        Shutdown { tx }
    }

    /// Triggers it (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether it was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once triggered.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // `wait_for` checks the current value first, so a trigger before the call is seen.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Spawns a task that triggers the latch on SIGTERM or SIGINT (Ctrl-C).
    pub fn listen_for_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let name = signal().await;
            tracing::info!(signal = name, "stopping: finishing in-flight requests");
            this.trigger();
        });
    }
}

#[cfg(unix)]
async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            tracing::warn!("cannot install signal handlers; falling back to Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(not(unix))]
async fn signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_wakes_present_and_future_waiters() {
        let s = Shutdown::new();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        s.trigger();
        waiter.await.expect("waiter");
        s.wait().await;
        assert!(s.is_triggered());
    }
}
