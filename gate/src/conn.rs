//! One client connection: TLS handshake and CONNECT under a deadline, the authorizer's decision,
//! then the pipe to the broker, judging every client packet on the way.

use crate::backlog::{Backlog, ReplayWindow, publish_bytes, publish_topic};
use crate::grant::{Authorizer, Grant};
use crate::rules::{self, Framing, MAX_FIXED_HEADER, Verdict};
use crate::stats::{GateStats, Reason, Slot};
use crate::upstream::{Link, Upstream};
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Bytes asked of the socket per read at least (when the packet being framed allows).
const READ_CHUNK: usize = 4096;

/// Bytes copied from the broker to the client per read: what goes down is CONNACK, SUBACK,
/// PINGRESP, acknowledgements and an occasional configuration, so 2 KiB is plenty, and it is
/// held by every connection (`tokio::io::copy`'s 8 KiB cost 6 KiB more per agent).
const DOWN_CHUNK: usize = 2048;

/// A client stream, plain TCP or TLS.
trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) upstream: Upstream,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_packet_size: usize,
    pub(crate) backlog: Option<Arc<Backlog>>,
    pub(crate) replay: Option<ReplayWindow>,
    pub(crate) auth: Arc<dyn Authorizer>,
    pub(crate) stats: Arc<GateStats>,
    /// Bumped by `GateHandle::recheck`.
    pub(crate) generation: watch::Receiver<u64>,
}

/// How a connection ended: `Some(reason)` is counted, `None` is an ordinary close (either side
/// hung up or an I/O error).
type End = Option<Reason>;

/// Serves one accepted connection until it ends or `cancel` fires.
pub(crate) async fn serve(
    tcp: TcpStream,
    shared: Arc<Shared>,
    slot: Slot,
    cancel: CancellationToken,
) {
    let end = tokio::select! {
        _ = cancel.cancelled() => None,
        end = run(tcp, &shared, slot) => end,
    };
    if let Some(reason) = end {
        shared.stats.record(reason);
    }
}

async fn run(tcp: TcpStream, shared: &Shared, mut slot: Slot) -> End {
    let mut generation = shared.generation.clone();
    let deadline = Instant::now() + shared.connect_timeout;
    let (mut client, buf, connect, connect_frame) =
        match timeout_at(deadline, handshake(tcp, shared)).await {
            Ok(Ok(Some(done))) => done,
            Ok(Ok(None)) => return None,
            Ok(Err(reason)) => return Some(reason),
            Err(_) => return Some(Reason::ConnectTimeout),
        };

    // Any recheck from now on applies to the grant about to be issued.
    generation.borrow_and_update();
    let decision = shared.auth.connect(
        &connect.client_id,
        connect.login.as_ref().map(|l| l.username.as_str()),
        connect.login.as_ref().map(|l| l.password.as_bytes()),
    );
    let grant = match rules::admit(&connect, decision) {
        Ok(grant) => grant,
        Err((code, reason)) => {
            refuse(&mut client, code, shared.connect_timeout).await;
            return Some(reason);
        }
    };

    let upstream = match shared.upstream.open(shared.connect_timeout).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::debug!(error = %e, "MQTT gate: broker unreachable");
            refuse(
                &mut client,
                ConnectReturnCode::ServiceUnavailable,
                shared.connect_timeout,
            )
            .await;
            return Some(Reason::UpstreamError);
        }
    };
    slot.connected();
    tracing::debug!(identity = %grant.identity, client_id = %connect.client_id, "MQTT gate: admitted");

    let up = Admitted {
        client,
        buf,
        grant,
        connect_frame,
        generation,
    };
    match upstream {
        Link::Tcp(tcp) => {
            let (read, write) = tcp.into_split();
            up.pipe(read, write, shared).await
        }
        Link::Pipe(pipe) => {
            let (read, write) = tokio::io::split(pipe);
            up.pipe(read, write, shared).await
        }
    }
}

/// A client past CONNECT and admission, with its connection to the broker open.
struct Admitted {
    client: Box<dyn ClientIo>,
    /// Client bytes read after the CONNECT.
    buf: BytesMut,
    grant: Grant,
    /// The CONNECT as the client sent it.
    connect_frame: Bytes,
    generation: watch::Receiver<u64>,
}

impl Admitted {
    /// Sends the CONNECT up, then carries both directions until either side ends, a packet
    /// closes the connection, or the grant is revoked. Returning drops both connections (the
    /// broker sees its end close).
    async fn pipe<R, W>(self, mut up_read: R, mut up_write: W, shared: &Shared) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let Admitted {
            client,
            mut buf,
            grant,
            connect_frame,
            mut generation,
        } = self;
        // The CONNECT goes up exactly as the client sent it.
        if up_write.write_all(&connect_frame).await.is_err() {
            return Some(Reason::UpstreamError);
        }
        let (mut client_read, mut client_write) = tokio::io::split(client);

        let down = broker_to_client(&mut up_read, &mut client_write);
        let up = client_to_broker(
            &mut client_read,
            &mut up_write,
            &mut buf,
            &grant,
            shared.max_packet_size,
            shared.backlog.as_deref(),
            shared.replay.as_ref(),
        );
        let revoked = async {
            loop {
                if generation.changed().await.is_err() {
                    // The gate is stopping; cancellation closes this connection.
                    std::future::pending::<()>().await;
                }
                if !shared.auth.still_valid(&grant) {
                    return;
                }
            }
        };
        tokio::select! {
            _ = down => None,
            end = up => end,
            () = revoked => Some(Reason::Revoked),
        }
    }
}

/// TLS handshake (if configured) and the first packet, which must be a CONNECT. `Ok(None)` when
/// the client hangs up first.
async fn handshake(
    tcp: TcpStream,
    shared: &Shared,
) -> Result<Option<(Box<dyn ClientIo>, BytesMut, Connect, Bytes)>, Reason> {
    let _ = tcp.set_nodelay(true);
    let mut client: Box<dyn ClientIo> = match &shared.tls {
        Some(acceptor) => Box::new(acceptor.accept(tcp).await.map_err(|_| Reason::TlsError)?),
        None => Box::new(tcp),
    };
    let mut buf = BytesMut::new();
    loop {
        if !rules::may_be_connect(&buf) {
            return Err(Reason::ProtocolError);
        }
        match rules::next_frame(&mut buf, shared.max_packet_size)? {
            Framing::Frame(header, frame) => {
                let connect = rules::parse_connect(header, frame.clone())?;
                return Ok(Some((client, buf, connect, frame)));
            }
            Framing::Need(n) => {
                match read_more(&mut client, &mut buf, n, shared.max_packet_size).await {
                    Ok(0) if buf.is_empty() => return Ok(None),
                    Ok(0) => return Err(Reason::ProtocolError),
                    Ok(_) => {}
                    Err(_) => return Ok(None),
                }
            }
        }
    }
}

/// Reads at least one byte (0 at end of stream) into `buf`, which holds part of one packet
/// still `need` bytes short. Never lets `buf` grow past the largest allowed packet.
async fn read_more<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    buf: &mut BytesMut,
    need: usize,
    max_packet_size: usize,
) -> std::io::Result<usize> {
    let room = (max_packet_size + MAX_FIXED_HEADER).saturating_sub(buf.len());
    let want = need.max(READ_CHUNK).min(room).max(1);
    buf.reserve(want);
    (&mut *reader).take(want as u64).read_buf(buf).await
}

/// Copies the broker's bytes to the client untouched until either side ends, flushing after
/// each read (a TLS client gets its record at once).
async fn broker_to_client<R, W>(broker: &mut R, client: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = [0u8; DOWN_CHUNK];
    loop {
        let n = broker.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        client.write_all(&buf[..n]).await?;
        client.flush().await?;
    }
}

/// Sends a refusing CONNACK, best effort and bounded in time.
async fn refuse(client: &mut Box<dyn ClientIo>, code: ConnectReturnCode, limit: Duration) {
    let mut out = BytesMut::new();
    if Packet::ConnAck(ConnAck::new(code, false))
        .write(&mut out, usize::MAX)
        .is_err()
    {
        return;
    }
    let _ = timeout(limit, async {
        client.write_all(&out).await?;
        client.flush().await?;
        client.shutdown().await
    })
    .await;
}

/// Reads client packets, judges each, and writes the allowed ones to the broker in batches.
/// With a `backlog`, counts the PUBLISH bytes forwarded and reads nothing more from the client
/// while the window is full. With a `replay` window, publishes on replay topics are counted
/// and held there instead: while it is full, a connection waits before its next replay publish
/// only (what it sent after it, live messages included, waits behind it in its own socket; other
/// connections go on). Returns at end of stream, on an I/O error, or at the first packet that
/// must close.
async fn client_to_broker<R, W>(
    client: &mut R,
    broker: &mut W,
    buf: &mut BytesMut,
    grant: &Grant,
    max_packet_size: usize,
    backlog: Option<&Backlog>,
    replay: Option<&ReplayWindow>,
) -> End
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut out = BytesMut::new();
    loop {
        let need = loop {
            match rules::next_frame(buf, max_packet_size) {
                Ok(Framing::Frame(header, frame)) => match rules::judge(grant, header, &frame) {
                    Verdict::Forward => {
                        let window = match replay {
                            Some(r) if publish_topic(&frame).is_some_and(r.matches) => {
                                Some(&*r.backlog)
                            }
                            _ => backlog,
                        };
                        if let Some(b) = window
                            && let Some(n) = publish_bytes(&frame)
                        {
                            // Checked per publish, not per read: a read of many publishes, or
                            // thousands of connections woken at once, must not overfill the
                            // window (what is not forwarded waits in `buf`, ≤ one read).
                            if !b.has_room() {
                                if !out.is_empty() {
                                    if broker.write_all(&out).await.is_err() {
                                        return None;
                                    }
                                    out.clear();
                                }
                                b.room().await;
                            }
                            b.forwarded(n);
                        }
                        out.extend_from_slice(&frame);
                    }
                    Verdict::Close(reason) => {
                        // What came before the offending packet was allowed: let it through.
                        let _ = broker.write_all(&out).await;
                        return Some(reason);
                    }
                },
                Ok(Framing::Need(n)) => break n,
                Err(reason) => {
                    let _ = broker.write_all(&out).await;
                    return Some(reason);
                }
            }
        };
        if !out.is_empty() {
            if broker.write_all(&out).await.is_err() {
                return None;
            }
            out.clear();
        }
        if let Some(b) = backlog {
            b.room().await;
        }
        match read_more(client, buf, need, max_packet_size).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
