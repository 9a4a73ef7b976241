//! Transport connections as sessions: each accepted TCP connection gets an id that its calls carry, so a client that
//! presents neither token nor cookie keeps one session for as long as it keeps its connection (what users of ADBC,
//! JDBC or pyarrow.flight expect of a connection), while other connections stay isolated from it.
//!
//! The id is unique for the server's lifetime (unlike a client's address and port, which the OS reuses); when the
//! connection closes, its binding to a session is forgotten, and the session expires like any other unused one.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::codegen::http::Extensions;
use tonic::transport::server::{Connected, TlsConnectInfo};

use super::sessions::SessionStore;

/// What a call knows of the connection it came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub id: u64,
    pub remote: Option<SocketAddr>,
}

impl ConnectionInfo {
    /// The connection of a call (plain TCP or TLS), from the request's extensions.
    pub fn of(extensions: &Extensions) -> Option<Self> {
        extensions.get::<ConnectionInfo>().copied().or_else(|| {
            extensions
                .get::<TlsConnectInfo<ConnectionInfo>>()
                .map(|t| *t.get_ref())
        })
    }
}

/// An accepted connection; dropping it (the connection ended) unbinds its session.
pub struct Connection {
    stream: TcpStream,
    info: ConnectionInfo,
    store: Arc<SessionStore>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.store.connection_closed(self.info.id);
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;
    fn connect_info(&self) -> ConnectionInfo {
        self.info
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepted TCP streams as [`Connection`]s with fresh ids.
pub fn connections(
    incoming: impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static,
    store: Arc<SessionStore>,
) -> impl Stream<Item = std::io::Result<Connection>> + Send + 'static {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    incoming.map(move |accepted| {
        accepted.map(|stream| Connection {
            info: ConnectionInfo {
                id: NEXT.fetch_add(1, Ordering::Relaxed),
                remote: stream.peer_addr().ok(),
            },
            stream,
            store: store.clone(),
        })
    })
}
