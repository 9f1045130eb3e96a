//! A TCP proxy that a nemesis can cut and heal: the network partition of a test that has no
//! network namespaces.
//!
//! It listens on a loopback port of its own and forwards every connection to a backend address
//! (which can change, for a node restarted elsewhere; while the backend is down a new
//! connection waits for it, bounded, so a client's request is delayed rather than lost). [`Proxy::cut`] closes the listening
//! socket (new connections are refused, so a client knows its request was never sent) and
//! closes every forwarded connection (requests in flight get no answer: their outcome is
//! unknown); [`Proxy::heal`] listens again on the same port. Between a client and a node it
//! partitions the client away; between two peers of a cluster it partitions the peers.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A cuttable TCP forwarder.
pub struct Proxy {
    addr: SocketAddr,
    backend: Arc<Mutex<SocketAddr>>,
    cut: watch::Sender<bool>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// Listens on a free loopback port, forwarding to `backend`.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start(backend: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (cut, _) = watch::channel(false);
        let proxy = Proxy {
            addr: listener.local_addr()?,
            backend: Arc::new(Mutex::new(backend)),
            cut,
            acceptor: Mutex::new(None),
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points new connections at another backend.
    pub fn set_backend(&self, backend: SocketAddr) {
        *self.backend.lock().unwrap_or_else(|p| p.into_inner()) = backend;
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// Cuts the link: stops listening and closes every forwarded connection.
    pub fn cut(&self) {
        if let Some(task) = self
            .acceptor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        self.cut.send_replace(true);
    }

    /// Heals the link: listens on the same port again.
    ///
    /// # Errors
    /// The bind error, after a few tries (the port is ours; another process would have to
    /// take it in between).
    pub async fn heal(&self) -> io::Result<()> {
        if !self.is_cut() {
            return Ok(());
        }
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries >= 50 => return Err(e),
                Err(_) => {
                    tries += 1;
                    // The aborted acceptor drops its socket when its task is next polled.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        self.cut.send_replace(false);
        self.serve(listener);
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let backend = Arc::clone(&self.backend);
        let cut = self.cut.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(forward(inbound, Arc::clone(&backend), cut.clone()));
            }
        });
        *self.acceptor.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// How long a new connection waits for its backend to come (back) up before it is closed.
const BACKEND_WAIT: Duration = Duration::from_secs(10);

/// Connects to the backend (retrying while it is down, as during a node's restart, so that a
/// client's request waits rather than fails), then copies bytes both ways until either side
/// closes or the link is cut.
async fn forward(
    mut inbound: TcpStream,
    backend: Arc<Mutex<SocketAddr>>,
    mut cut: watch::Receiver<bool>,
) {
    let deadline = tokio::time::Instant::now() + BACKEND_WAIT;
    let mut outbound = loop {
        if *cut.borrow() {
            return;
        }
        let to = *backend.lock().unwrap_or_else(|p| p.into_inner());
        match TcpStream::connect(to).await {
            Ok(s) => break s,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(_) => return,
        }
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn echo(c: &mut TcpStream) -> io::Result<Vec<u8>> {
        c.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn forwards_then_cut_refuses_and_closes_then_heal_forwards_again() {
        let proxy = Proxy::start(echo_server().await).await.expect("proxy");
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(echo(&mut c).await.expect("echo"), b"ping");

        proxy.cut();
        // The open connection is closed by the proxy: reading ends.
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(30), c.read(&mut buf))
            .await
            .expect("closed within the bound");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        // New connections are refused (the listener is closed once the acceptor has dropped it).
        let mut refused = false;
        for _ in 0..500 {
            if TcpStream::connect(proxy.addr()).await.is_err() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(refused, "a cut link must refuse connections");

        proxy.heal().await.expect("heal");
        let mut c = TcpStream::connect(proxy.addr())
            .await
            .expect("connect after heal");
        assert_eq!(echo(&mut c).await.expect("echo after heal"), b"ping");
    }
}
