//! The raft wire: AppendEntries and Vote as length-prefixed bincode frames over a plain
//! TCP connection to the peer port, beside the gRPC peer service on the same port.
//!
//! Why not gRPC for these two: on the 2-core machines Skiff targets, a tonic unary call
//! costs ~180 µs per round trip on loopback against ~55 µs for the same bytes framed on
//! a TCP connection (`docs/store-raft-wire.md`), and openraft 0.9 keeps one AppendEntries
//! in flight per follower, so that round trip bounds both write latency and throughput.
//! Snapshots (streamed) and forwarded client requests stay on gRPC.
//!
//! # Protocol
//! The client opens a TCP connection to a peer URL and writes [`MAGIC`]; the server tells
//! it from an HTTP/2 connection by those first bytes. Then, strictly in turn: a request
//! frame, a response frame. A frame is a little-endian `u32` length and that many bytes;
//! a request's body is a kind byte ([`KIND_APPEND`], [`KIND_VOTE`]) and the bincode RPC,
//! a response's body the bincode `Result<response, RaftError>`. Either side that cannot
//! read or decode a frame closes the connection; the client reconnects on its next call.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::raft::network::MAX_PEER_MESSAGE;

/// The first bytes of a raft wire connection. An HTTP/2 client starts with `PRI * HTTP`.
pub const MAGIC: &[u8; 8] = b"SKRAFT\x00\x01";
/// Request kind: AppendEntries.
pub const KIND_APPEND: u8 = 1;
/// Request kind: Vote.
pub const KIND_VOTE: u8 = 2;
/// How long a server waits for a new connection's first bytes before giving up on it.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes one frame: `body_head` then `body` (so a kind byte needs no copy of the RPC).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    body_head: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    let len = body_head.len() + body.len();
    if len > MAX_PEER_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("raft message of {len} bytes is over the {MAX_PEER_MESSAGE}-byte limit"),
        ));
    }
    // One buffer, one write: small frames leave in a single segment.
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(body_head);
    buf.extend_from_slice(body);
    w.write_all(&buf).await
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
}
