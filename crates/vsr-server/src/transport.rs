//! The transport seam: how a replica listens and accepts, and how replicas and clients connect.
//!
//! Everything above this module sees only byte streams ([`Transport::Stream`]) and, for an
//! accepted connection, who is at the other end ([`Identity`], when the transport can prove
//! it). [`TcpTransport`] is plain TCP with `TCP_NODELAY`; [`TlsTransport`](crate::TlsTransport)
//! is mutual TLS over it; [`Network`] is either, chosen at run time.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsStream;

use crate::tls::{Identity, TlsTransport};

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

    /// Turns an accepted connection into a stream and says who connected: `Some` when the
    /// transport authenticated the peer, `None` when it cannot tell (plain TCP, for a trusted
    /// network only). Runs on the connection's own task.
    fn handshake(
        &self,
        incoming: Self::Incoming,
    ) -> impl Future<Output = io::Result<(Self::Stream, Option<Identity>)>> + Send;

    /// Connects to replica `replica` at `address` (`host:port`, resolved on every call). An
    /// authenticating transport fails unless the other end proves it is that replica.
    fn connect(
        &self,
        address: &str,
        replica: u8,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Data unacknowledged this long fails a connection (`TCP_USER_TIMEOUT`), and an idle
/// connection's keepalive probes go unanswered for about this long before it fails: a dead
/// path is found in about a second, instead of after TCP's retransmission backoff has grown
/// to many seconds.
pub(crate) const PATH_TIMEOUT: Duration = Duration::from_secs(1);
/// Idle time before the first keepalive probe, and between probes (whole seconds: the
/// kernel's unit).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Connects over TCP, with [`configure`]'s options.
pub(crate) async fn tcp_connect(address: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(address).await?;
    configure(&stream)?;
    Ok(stream)
}

/// `TCP_NODELAY` (frames go out at once), keepalive and `TCP_USER_TIMEOUT` (a dead path fails
/// the connection within about [`PATH_TIMEOUT`]).
pub(crate) fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_INTERVAL)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(2);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    socket.set_tcp_user_timeout(Some(PATH_TIMEOUT))?;
    Ok(())
}

/// Plain TCP, with `TCP_NODELAY`, keepalive and `TCP_USER_TIMEOUT` on every connection.
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

    async fn handshake(&self, incoming: TcpStream) -> io::Result<(TcpStream, Option<Identity>)> {
        configure(&incoming)?;
        Ok((incoming, None))
    }

    async fn connect(&self, address: &str, _replica: u8) -> io::Result<TcpStream> {
        tcp_connect(address).await
    }
}

/// The transport chosen at run time: mutual TLS, or plain TCP on a trusted network
/// (`--insecure`).
#[derive(Clone, Debug)]
pub enum Network {
    /// Plain TCP: anyone who reaches a port can send anything.
    Insecure,
    /// Mutual TLS.
    Tls(TlsTransport),
}

impl Network {
    /// The TLS transport, if this is one.
    #[must_use]
    pub fn tls(&self) -> Option<&TlsTransport> {
        match self {
            Self::Insecure => None,
            Self::Tls(tls) => Some(tls),
        }
    }
}

/// A [`Network`] connection.
#[derive(Debug)]
pub enum NetworkStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport for Network {
    type Stream = NetworkStream;
    type Incoming = TcpStream;
    type Listener = TcpListener;

    async fn bind(&self, address: SocketAddr) -> io::Result<TcpListener> {
        TcpTransport.bind(address).await
    }

    async fn accept(&self, listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        TcpTransport.accept(listener).await
    }

    async fn handshake(
        &self,
        incoming: TcpStream,
    ) -> io::Result<(NetworkStream, Option<Identity>)> {
        match self {
            Self::Insecure => {
                let (stream, identity) = TcpTransport.handshake(incoming).await?;
                Ok((NetworkStream::Plain(stream), identity))
            }
            Self::Tls(tls) => {
                let (stream, identity) = tls.handshake(incoming).await?;
                Ok((NetworkStream::Tls(Box::new(stream)), identity))
            }
        }
    }

    async fn connect(&self, address: &str, replica: u8) -> io::Result<NetworkStream> {
        Ok(match self {
            Self::Insecure => NetworkStream::Plain(tcp_connect(address).await?),
            Self::Tls(tls) => NetworkStream::Tls(Box::new(tls.connect(address, replica).await?)),
        })
    }
}

impl AsyncRead for NetworkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for NetworkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(context, bytes),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, bytes),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(context, buffers),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(context, buffers),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(context),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(context),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(context),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_get_their_socket_options() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (connected, accepted) = tokio::join!(tcp_connect(&address), listener.accept());
        let connected = connected.expect("connect and configure");
        let (accepted, _) = accepted.unwrap();
        configure(&accepted).expect("configure an accepted connection");
        let socket = socket2::SockRef::from(&connected);
        assert!(connected.nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(PATH_TIMEOUT));
    }
}
