//! A stream wrapper that remembers the first byte the server sent, so a plain `http://`
//! client can tell a port that answers in TLS (a record starting 0x15 alert or 0x16
//! handshake) from one that is merely broken. Used by the client ([`super::wire`]) and by
//! `bench` ([`crate::loadgen::driver`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// No byte received yet on the connection.
pub(crate) const NOTHING: u16 = u16::MAX;

/// A stream that remembers the first byte it read.
pub(crate) struct Sniff<S> {
    inner: S,
    first: Arc<AtomicU16>,
}

impl<S> Sniff<S> {
    /// Wraps `inner`, recording into `first` (which the caller has reset to [`NOTHING`]).
    pub(crate) fn sharing(inner: S, first: Arc<AtomicU16>) -> Self {
        Sniff { inner, first }
    }

    /// Wraps `inner`; the cell returned tells [`speaks_tls`] what came back.
    pub(crate) fn new(inner: S) -> (Self, Arc<AtomicU16>) {
        let first = Arc::new(AtomicU16::new(NOTHING));
        (
            Sniff {
                inner,
                first: Arc::clone(&first),
            },
            first,
        )
    }
}

/// Whether the first byte a server sent on a plain connection starts a TLS record (0x15
/// alert, 0x16 handshake): the port speaks TLS.
pub(crate) fn speaks_tls(first: &AtomicU16) -> bool {
    matches!(first.load(Ordering::Relaxed), 0x15 | 0x16)
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniff<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r
            && self.first.load(Ordering::Relaxed) == NOTHING
            && let Some(&b) = buf.filled().get(before)
        {
            let _ = self.first.compare_exchange(
                NOTHING,
                u16::from(b),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_first_byte_is_kept_and_tls_recognised() -> io::Result<()> {
        let (mut s, first) = Sniff::new(&b"\x15\x03\x03rest"[..]);
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        assert_eq!(buf.len(), 7);
        assert!(speaks_tls(&first));
        let (mut s, first) = Sniff::new(&b"HTTP/1.1 200 OK"[..]);
        s.read_to_end(&mut buf).await?;
        assert!(!speaks_tls(&first));
        Ok(())
    }
}
