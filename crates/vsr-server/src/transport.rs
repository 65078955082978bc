//! The transport seam: how a replica listens and accepts, and how replicas and clients connect.
//!
//! Everything above this module sees only byte streams ([`Transport::Stream`]); a TLS transport
//! adds its handshake in [`Transport::handshake`] and [`Transport::connect`] without touching the
//! event loop or the framing. [`TcpTransport`] is plain TCP with `TCP_NODELAY`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A way to listen for and open byte-stream connections.
pub trait Transport: Clone + Send + Sync + 'static {
    /// An established connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A connection accepted but not yet usable (for TLS: before the handshake).
    type Incoming: Send + 'static;
    /// A listening socket.
    type Listener: Send + Sync + 'static;

    /// Listens on `address`.
    fn bind(&self, address: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Waits for the next incoming connection. Runs on the accept loop, so it must not wait for
    /// the peer: per-connection work belongs in [`Transport::handshake`].
    fn accept(
        &self,
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Incoming, SocketAddr)>> + Send;

    /// Turns an accepted connection into a stream; runs on the connection's own task.
    fn handshake(
        &self,
        incoming: Self::Incoming,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Connects to `address` (`host:port`, resolved on every call).
    fn connect(&self, address: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Plain TCP with `TCP_NODELAY` on every connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpTransport;

impl Transport for TcpTransport {
    type Stream = TcpStream;
    type Incoming = TcpStream;
    type Listener = TcpListener;

    async fn bind(&self, address: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(address).await
    }

    async fn accept(&self, listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        listener.accept().await
    }

    async fn handshake(&self, incoming: TcpStream) -> io::Result<TcpStream> {
        incoming.set_nodelay(true)?;
        Ok(incoming)
    }

    async fn connect(&self, address: &str) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
