//! Where the gate forwards an admitted client: a broker on TCP, or one in this process reached
//! through an in-memory pipe.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The smallest in-process pipe buffer [`crate::GateConfig`] accepts.
pub(crate) const MIN_PIPE_BUFFER: usize = 1024;

/// Gives the broker its end of a client's pipe; an error refuses the client (the broker is not
/// running).
pub type HandOver = Arc<dyn Fn(DuplexStream) -> std::io::Result<()> + Send + Sync>;

/// The broker the gate forwards to.
#[derive(Clone)]
pub enum Upstream {
    /// A broker listening on TCP, normally on loopback: one connection per client (two more
    /// descriptors per client in a process that holds both ends).
    Tcp(SocketAddr),
    /// A broker in this process (the embedded rumqttd, through its `Connector`).
    InProcess(InProcess),
}

/// A broker in this process: each admitted client gets a [`tokio::io::duplex`] pipe, whose one
/// end the gate writes the client's allowed packets to and reads the broker's bytes from, and
/// whose other end `hand_over` gives the broker to serve as if it had accepted a socket.
/// Dropping the gate's end (the client gone, refused or revoked) ends the broker's connection
/// as a closed socket would, so the client's will fires.
#[derive(Clone)]
pub struct InProcess {
    /// Bytes each direction of a pipe holds before its writer waits (as a full socket buffer
    /// makes it wait); at least 1,024. Allocated as used, not up front.
    pub buffer: usize,
    /// Gives the broker its end.
    pub hand_over: HandOver,
}

impl From<SocketAddr> for Upstream {
    fn from(addr: SocketAddr) -> Upstream {
        Upstream::Tcp(addr)
    }
}

impl From<InProcess> for Upstream {
    fn from(p: InProcess) -> Upstream {
        Upstream::InProcess(p)
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Tcp(addr) => f.debug_tuple("Tcp").field(addr).finish(),
            Upstream::InProcess(p) => f
                .debug_struct("InProcess")
                .field("buffer", &p.buffer)
                .finish_non_exhaustive(),
        }
    }
}

/// A connection to the broker, ready to carry the client's CONNECT.
pub(crate) enum Link {
    Tcp(TcpStream),
    Pipe(DuplexStream),
}

impl Upstream {
    /// Opens the client's connection to the broker, within `limit` for TCP (a hand-over does
    /// not wait).
    pub(crate) async fn open(&self, limit: Duration) -> std::io::Result<Link> {
        match self {
            Upstream::Tcp(addr) => {
                let tcp = timeout(limit, TcpStream::connect(addr))
                    .await
                    .map_err(|_| std::io::ErrorKind::TimedOut)??;
                let _ = tcp.set_nodelay(true);
                Ok(Link::Tcp(tcp))
            }
            Upstream::InProcess(p) => {
                let (ours, broker) = tokio::io::duplex(p.buffer);
                (p.hand_over)(broker)?;
                Ok(Link::Pipe(ours))
            }
        }
    }
}
