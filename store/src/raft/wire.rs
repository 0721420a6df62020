//! The raft wire: AppendEntries and Vote, and requests a follower forwards to the
//! leader, as length-prefixed bincode frames over plain TCP connections to the peer port,
//! beside the gRPC peer service on the same port.
//!
//! Why not gRPC for these two: on the 2-core machines Skiff targets, a tonic unary call
//! costs ~180 µs per round trip on loopback against ~55 µs for the same bytes framed on
//! a TCP connection (`docs/store-raft-wire.md`), and openraft 0.9 keeps one AppendEntries
//! in flight per follower, so that round trip bounds both write latency and throughput.
//! Writes sent to a follower (two in three, with clients spread over three members) pay
//! the same round trip again to reach the leader. Snapshots (streamed) stay on gRPC.
//!
//! # Protocol
//! A frame is a little-endian `u32` length and that many bytes. The client opens a TCP
//! connection to a peer URL and writes a magic; the server tells it from an HTTP/2
//! connection by those first bytes.
//! - [`MAGIC`] (raft): strictly in turn, a request frame and a response frame. A request's
//!   body is a kind byte ([`KIND_APPEND`], [`KIND_VOTE`]) and the bincode RPC, a
//!   response's body the bincode `Result<response, RaftError>`.
//! - [`MAGIC_FORWARD`] (forwarded requests, [`Forwarder`]): many requests in flight; each
//!   frame's body starts with the caller's `u64` request id (little-endian), answers come
//!   in any order with the same id. Body after the id: the bincode `member::Forward`, and
//!   the bincode `Result<ForwardReply, StoreError>` back.
//!
//! Either side that cannot read or decode a frame closes the connection; the client
//! reconnects on its next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::config::url_host_port;

use crate::raft::network::MAX_PEER_MESSAGE;

/// The first bytes of a raft wire connection. An HTTP/2 client starts with `PRI * HTTP`.
pub const MAGIC: &[u8; 8] = b"SKRAFT\x00\x01";
/// The first bytes of a connection carrying forwarded requests.
pub const MAGIC_FORWARD: &[u8; 8] = b"SKRAFT\x00\x02";
/// Request kind: AppendEntries.
pub const KIND_APPEND: u8 = 1;
/// Request kind: Vote.
pub const KIND_VOTE: u8 = 2;
/// How long a server waits for a new connection's first bytes before giving up on it.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes of queued frames a writer task puts into one `write`.
const COALESCE_BYTES: usize = 1 << 20;

/// Opens a connection to the peer at `url` (a peer URL) and writes `magic`.
///
/// # Errors
/// The peer cannot be reached within [`CONNECT_TIMEOUT`].
pub async fn connect(url: &str, magic: &[u8; 8]) -> std::io::Result<TcpStream> {
    let addr = url_host_port(url);
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    // Without it a reply can wait for a delayed ACK and stall the log pipeline.
    stream.set_nodelay(true)?;
    stream.write_all(magic).await?;
    Ok(stream)
}

/// A whole frame (length, `head`, `body`) in one buffer.
///
/// # Errors
/// A frame over [`MAX_PEER_MESSAGE`].
pub fn frame(head: &[u8], body: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = head.len() + body.len();
    if len > MAX_PEER_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("raft message of {len} bytes is over the {MAX_PEER_MESSAGE}-byte limit"),
        ));
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(head);
    buf.extend_from_slice(body);
    Ok(buf)
}

/// Writes the frames queued on `rx` to `w`, as many as are waiting in each write, until
/// the queue closes or a write fails.
pub async fn write_queued<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(mut buf) = rx.recv().await {
        while buf.len() < COALESCE_BYTES {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
    }
}

/// Writes one frame: `body_head` then `body` (so a kind byte needs no copy of the RPC).
/// One buffer, one write: a small frame leaves in a single segment.
///
/// # Errors
/// I/O errors, or a frame over [`MAX_PEER_MESSAGE`].
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    body_head: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    w.write_all(&frame(body_head, body)?).await
}

/// Reads one frame's body. `Ok(None)`: the other side closed the connection between frames.
///
/// # Errors
/// I/O errors, a connection closed inside a frame, or a frame over [`MAX_PEER_MESSAGE`].
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_PEER_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("raft frame of {len} bytes is over the {MAX_PEER_MESSAGE}-byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Why a forwarded request got no answer.
#[derive(Debug)]
pub enum ForwardFailure {
    /// No connection to the peer: the request was never sent (safe to retry).
    Connect(std::io::Error),
    /// The connection was lost with the request sent or queued: it may have been applied.
    Lost,
    /// No answer within the caller's timeout.
    Timeout,
    /// The request cannot be sent at all (over the peer message limit).
    Refused(std::io::Error),
}

/// Requests to one peer over a [`MAGIC_FORWARD`] connection, many in flight at once;
/// connects on first use and again after the connection is lost.
pub struct Forwarder {
    url: String,
    conn: tokio::sync::Mutex<Option<Arc<ForwardConn>>>,
}

/// One forward connection: a writer task drains `tx`, a reader task answers `pending`.
struct ForwardConn {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    next_id: AtomicU64,
    shared: Arc<ForwardShared>,
}

#[derive(Default)]
struct ForwardShared {
    pending: parking_lot::Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
    closed: AtomicBool,
}

impl ForwardShared {
    /// Marks the connection lost: every waiting caller gets [`ForwardFailure::Lost`].
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.pending.lock().clear();
    }
}

impl Forwarder {
    /// A forwarder to the peer at `url` (not connected yet).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    async fn connection(&self) -> Result<Arc<ForwardConn>, ForwardFailure> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.shared.closed.load(Ordering::SeqCst) {
                return Ok(c.clone());
            }
        }
        *slot = None;
        let stream = connect(&self.url, MAGIC_FORWARD)
            .await
            .map_err(ForwardFailure::Connect)?;
        let (r, w) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(ForwardShared::default());
        let writer_shared = shared.clone();
        tokio::spawn(async move {
            write_queued(w, rx).await;
            writer_shared.close();
        });
        let reader_shared = shared.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(r);
            while let Ok(Some(body)) = read_frame(&mut r).await {
                let Some((id, reply)) = body.split_at_checked(8) else {
                    break;
                };
                let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
                if let Some(waiter) = reader_shared.pending.lock().remove(&id) {
                    let _ = waiter.send(reply.to_vec());
                }
            }
            reader_shared.close();
        });
        let c = Arc::new(ForwardConn {
            tx,
            next_id: AtomicU64::new(1),
            shared,
        });
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Sends `body` and waits until `deadline` for the answer's body.
    ///
    /// # Errors
    /// See [`ForwardFailure`].
    pub async fn call(
        &self,
        body: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, ForwardFailure> {
        let conn = self.connection().await?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = frame(&id.to_le_bytes(), body).map_err(ForwardFailure::Refused)?;
        let (tx, rx) = oneshot::channel();
        conn.shared.pending.lock().insert(id, tx);
        // Closed between the check above and the insert: nobody would answer.
        if conn.shared.closed.load(Ordering::SeqCst) || conn.tx.send(frame).is_err() {
            conn.shared.pending.lock().remove(&id);
            return Err(ForwardFailure::Lost);
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(ForwardFailure::Lost),
            Err(_) => {
                conn.shared.pending.lock().remove(&id);
                Err(ForwardFailure::Timeout)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_eof_between_frames_is_clean() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &[KIND_VOTE], b"hello").await.unwrap();
        write_frame(&mut a, &[], b"").await.unwrap();
        drop(a);
        let f = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(f, b"\x02hello");
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"");
        assert!(read_frame(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_truncated_or_oversized_frame_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&10u32.to_le_bytes()).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        drop(a);
        assert!(read_frame(&mut b).await.is_err());

        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        let e = read_frame(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    /// A forward server that answers each request with its body reversed, the second
    /// request of every pair first, then closes after `serve` requests.
    async fn reversing_server(serve: usize) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut s = BufReader::new(s);
            let mut magic = [0u8; 8];
            s.read_exact(&mut magic).await.unwrap();
            assert_eq!(&magic, MAGIC_FORWARD);
            let mut held: Option<Vec<u8>> = None;
            for _ in 0..serve {
                let body = read_frame(&mut s).await.unwrap().unwrap();
                let (id, req) = body.split_at(8);
                let mut rev = req.to_vec();
                rev.reverse();
                let f = frame(id, &rev).unwrap();
                match held.take() {
                    None => held = Some(f),
                    Some(first) => {
                        s.write_all(&f).await.unwrap();
                        s.write_all(&first).await.unwrap();
                    }
                }
            }
        });
        url
    }

    #[tokio::test]
    async fn forwarder_matches_answers_out_of_order_and_reports_a_lost_connection() {
        let url = reversing_server(2).await;
        let f = Arc::new(Forwarder::new(&url));
        let t = tokio::time::Instant::now() + Duration::from_secs(5);
        let (a, b) = tokio::join!(f.call(b"abc", t), f.call(b"12345", t));
        assert_eq!(a.unwrap(), b"cba");
        assert_eq!(b.unwrap(), b"54321");
        // The server has closed: a request on the dead connection is lost or, once the
        // reader noticed, a reconnect is refused (nothing listens any more).
        match f.call(b"x", t).await {
            Err(ForwardFailure::Lost) | Err(ForwardFailure::Connect(_)) => {}
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn forwarder_to_nothing_is_a_connect_failure_and_a_silent_peer_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let f = Forwarder::new(&url);
        let r = f
            .call(b"x", tokio::time::Instant::now() + Duration::from_secs(1))
            .await;
        assert!(matches!(r, Err(ForwardFailure::Connect(_))), "{r:?}");

        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let _held = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let f = Forwarder::new(&url);
        let r = f
            .call(
                b"x",
                tokio::time::Instant::now() + Duration::from_millis(200),
            )
            .await;
        assert!(matches!(r, Err(ForwardFailure::Timeout)), "{r:?}");
    }
}
