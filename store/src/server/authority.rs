//! Client connections whose HTTP/2 `:authority` is a whole URL get it mended before the
//! HTTP/2 server reads it.
//!
//! etcdctl 3.4 dials one connection per endpoint for `endpoint status`, `endpoint hashkv`,
//! `defrag` and `move-leader`, with the gRPC target `passthrough:///http://host:port`, so
//! grpc-go sends `:authority: http://host:port`. etcd's Go server ignores the authority;
//! hyper's (h2) parses it and resets the stream with PROTOCOL_ERROR ("malformed
//! authority"), so those commands failed with the usual `http://` endpoints. h2 has no
//! switch for it, and the header is HPACK-compressed (possibly Huffman-coded, possibly a
//! reference into the connection's dynamic table), so it cannot be patched in place.
//!
//! [`AuthorityFix`] reads the connection's first header block with its own HPACK decoder
//! (a mirror of the client's encoder state). If that block's `:authority` parses, the
//! connection is passed through byte for byte from then on — the normal case; it costs one
//! header block decode per connection. If it does not, every header block of the
//! connection is decoded with the mirror and re-encoded with an encoder of our own (whose
//! state h2's decoder then mirrors), with `:authority` mended: the scheme and anything
//! after the host dropped (`http://127.0.0.1:2379/` → `127.0.0.1:2379`), or `localhost`
//! when that still does not parse. grpc-go sends one authority for every request of a
//! connection, so the first block decides for all of them. HTTP/1.1 connections (no
//! HTTP/2 preface) are passed through untouched.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface a client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Frames we emit stay within the smallest maximum frame size HTTP/2 allows.
const MAX_FRAME: usize = 16 * 1024;
/// The dynamic table size h2 advertises (the HTTP/2 default), which bounds the client's.
const TABLE_SIZE: usize = 4096;
/// A frame or header block larger than this is not gathered (h2 rejects frames over its
/// 16 KiB maximum frame size, and its header list limit is lower).
const MAX_BLOCK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waiting for the connection preface.
    Preface,
    /// HTTP/2, before the first header block.
    Undecided,
    /// Every header block is re-encoded.
    Rewrite,
    /// Bytes go through unchanged.
    Pass,
}

/// An IO stream that mends the `:authority` of HTTP/2 requests that carry a whole URL. See
/// the module documentation.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// Bytes read from `inner` and not yet looked at.
    raw: Vec<u8>,
    /// Bytes ready for the reader, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// The frames of a header block being gathered: original bytes (for passing them on
    /// unchanged), the block fragment, and the HEADERS frame's stream id and flags.
    pending: Option<Pending>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    eof: bool,
}

struct Pending {
    original: Vec<u8>,
    block: Vec<u8>,
    stream: u32,
    end_stream: bool,
}

impl<S> AuthorityFix<S> {
    /// Wraps `inner`, a connection just accepted.
    pub fn new(inner: S) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            inner,
            mode: Mode::Preface,
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            pending: None,
            decoder,
            encoder: Encoder::new(),
            eof: false,
        }
    }

    /// Moves what can be decided from `raw` to `out`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Pass => {
                    self.out.append(&mut self.raw);
                    return Ok(());
                }
                Mode::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.mode = Mode::Pass;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.out.extend(self.raw.drain(..PREFACE.len()));
                    self.mode = Mode::Undecided;
                }
                Mode::Undecided | Mode::Rewrite => {
                    if self.raw.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = (usize::from(self.raw[0]) << 16)
                        | (usize::from(self.raw[1]) << 8)
                        | usize::from(self.raw[2]);
                    if len > MAX_BLOCK {
                        // Not ours to judge: h2 answers an oversized frame itself.
                        return self.give_up(&[]);
                    }
                    if self.raw.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let frame: Vec<u8> = self.raw.drain(..FRAME_HEADER + len).collect();
                    self.frame(frame)?;
                }
            }
        }
    }

    /// Stops looking: the gathered header block's frames, then `then`, then everything
    /// after go through unchanged. Only possible before anything was re-encoded.
    fn give_up(&mut self, then: &[u8]) -> io::Result<()> {
        if self.mode == Mode::Rewrite {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an HTTP/2 frame or header block this connection cannot re-encode",
            ));
        }
        if let Some(p) = self.pending.take() {
            self.out.extend_from_slice(&p.original);
        }
        self.out.extend_from_slice(then);
        self.mode = Mode::Pass;
        Ok(())
    }

    /// One whole frame (header and payload) in Undecided or Rewrite mode.
    fn frame(&mut self, frame: Vec<u8>) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match (kind, self.pending.as_mut()) {
            (TYPE_HEADERS, None) => {
                let Some(fragment) = headers_fragment(flags, payload) else {
                    // Malformed padding or priority: h2 reports it.
                    return self.give_up(&frame);
                };
                let p = Pending {
                    block: fragment.to_vec(),
                    original: frame.clone(),
                    stream,
                    end_stream: flags & FLAG_END_STREAM != 0,
                };
                self.pending = Some(p);
            }
            (TYPE_CONTINUATION, Some(p)) if p.stream == stream => {
                p.block.extend_from_slice(payload);
                p.original.extend_from_slice(&frame);
                if p.block.len() > MAX_BLOCK {
                    return self.give_up(&[]);
                }
            }
            (_, Some(_)) => {
                // Anything else inside a header block is a protocol error h2 reports.
                return self.give_up(&frame);
            }
            (_, None) => {
                self.out.extend_from_slice(&frame);
                return Ok(());
            }
        }
        if flags & FLAG_END_HEADERS != 0 {
            self.block_done()?;
        }
        Ok(())
    }

    /// A whole header block arrived: decide (first block) or re-encode.
    fn block_done(&mut self) -> io::Result<()> {
        let Some(p) = &self.pending else {
            return Ok(());
        };
        let mut headers = match self.decoder.decode(&p.block) {
            Ok(h) => h,
            Err(e) if self.mode == Mode::Undecided => {
                // h2 reports the compression error itself.
                tracing::debug!(error = ?e, "undecodable first header block");
                return self.give_up(&[]);
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("undecodable HTTP/2 header block: {e:?}"),
                ))
            }
        };
        let mut mended = false;
        for (n, v) in &mut headers {
            if n == b":authority" && !authority_ok(v) {
                *v = mend_authority(v);
                mended = true;
            }
        }
        if self.mode == Mode::Undecided {
            if !mended {
                return self.give_up(&[]);
            }
            tracing::debug!("a client sent a URL as the HTTP/2 :authority; mending it");
            self.mode = Mode::Rewrite;
        }
        let Some(p) = self.pending.take() else {
            unreachable!("checked at the start")
        };
        let block = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        write_header_frames(&mut self.out, p.stream, p.end_stream, &block);
        Ok(())
    }
}

/// The header block fragment of a HEADERS frame's payload, without padding and priority.
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        pad = usize::from(*p.first()?);
        p = &p[1..];
    }
    if flags & FLAG_PRIORITY != 0 {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

/// HEADERS (and CONTINUATION frames, if the block needs them) carrying `block`.
fn write_header_frames(out: &mut Vec<u8>, stream: u32, end_stream: bool, block: &[u8]) {
    // An empty block still needs its HEADERS frame.
    let chunks: Vec<&[u8]> = if block.is_empty() {
        vec![block]
    } else {
        block.chunks(MAX_FRAME).collect()
    };
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut flags = if i == last { FLAG_END_HEADERS } else { 0 };
        let kind = if i == 0 {
            if end_stream {
                flags |= FLAG_END_STREAM;
            }
            TYPE_HEADERS
        } else {
            TYPE_CONTINUATION
        };
        write_frame_header(out, chunk.len(), kind, flags, stream);
        out.extend_from_slice(chunk);
    }
}

fn write_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Whether the HTTP/2 server accepts `v` as an authority.
fn authority_ok(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// `scheme://host:port/...` → `host:port`; `localhost` if that does not parse either.
fn mend_authority(v: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(v);
    let rest = s.split_once("://").map_or(s.as_ref(), |(_, r)| r);
    let host = rest.split('/').next().unwrap_or_default();
    if authority_ok(host.as_bytes()) {
        host.as_bytes().to_vec()
    } else {
        b"localhost".to_vec()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Pass && this.raw.is_empty() {
                // The normal case after the first header block: no copies.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                // The connection ended inside a frame: hand over what there is, in the
                // order it came.
                if let Some(p) = this.pending.take() {
                    this.out.extend_from_slice(&p.original);
                }
                this.out.append(&mut this.raw);
                if this.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
            } else {
                this.raw.extend_from_slice(rb.filled());
                this.process()?;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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

    fn settings_frame() -> Vec<u8> {
        let mut f = Vec::new();
        write_frame_header(&mut f, 6, 0x4, 0, 0);
        f.extend_from_slice(&[0, 4, 0, 1, 0, 0]); // INITIAL_WINDOW_SIZE 65536
        f
    }

    /// A client's connection: preface, SETTINGS, then one HEADERS frame per request,
    /// encoded by one (stateful) encoder as a client's would be.
    fn client_bytes(authority: &[u8], requests: u32) -> Vec<u8> {
        let mut enc = Encoder::new();
        let mut out = PREFACE.to_vec();
        out.extend(settings_frame());
        for i in 0..requests {
            let path = format!("/etcdserverpb.Maintenance/Status{i}");
            let block = enc.encode([
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"http"),
                (b":path", path.as_bytes()),
                (b":authority", authority),
                (b"content-type", b"application/grpc"),
            ]);
            write_header_frames(&mut out, 1 + 2 * i, false, &block);
        }
        out
    }

    async fn read_all(input: Vec<u8>) -> Vec<u8> {
        // Small reads, so frames arrive split at every point.
        let (mut a, b) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            a.write_all(&input).await.unwrap();
        });
        let mut fix = AuthorityFix::new(b);
        let mut got = Vec::new();
        fix.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        got
    }

    /// Decodes the header blocks of the frames after the preface and SETTINGS.
    fn decode_requests(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rest = &bytes[PREFACE.len() + settings_frame().len()..];
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            assert_eq!(rest[3], TYPE_HEADERS);
            out.push(dec.decode(&rest[FRAME_HEADER..FRAME_HEADER + len]).unwrap());
            rest = &rest[FRAME_HEADER + len..];
        }
        out
    }

    fn authority_of(headers: &[(Vec<u8>, Vec<u8>)]) -> &[u8] {
        &headers.iter().find(|(n, _)| n == b":authority").unwrap().1
    }

    #[tokio::test]
    async fn a_valid_authority_passes_through_byte_for_byte() {
        let input = client_bytes(b"127.0.0.1:2379", 3);
        assert_eq!(read_all(input.clone()).await, input);
    }

    #[tokio::test]
    async fn http1_passes_through_byte_for_byte() {
        let input = b"GET /health HTTP/1.1\r\nHost: http://x\r\n\r\n".to_vec();
        assert_eq!(read_all(input.clone()).await, input);
    }

    /// The second and third requests refer to the first one's table entry; after the
    /// rewrite every request carries the mended authority and the other headers as sent.
    #[tokio::test]
    async fn a_url_authority_is_mended_in_every_request() {
        let got = read_all(client_bytes(b"http://127.0.0.1:2379", 3)).await;
        let requests = decode_requests(&got);
        assert_eq!(requests.len(), 3);
        for (i, r) in requests.iter().enumerate() {
            assert_eq!(authority_of(r), b"127.0.0.1:2379");
            let path = format!("/etcdserverpb.Maintenance/Status{i}");
            assert!(r.contains(&(b":path".to_vec(), path.into_bytes())));
            assert!(r.contains(&(b"content-type".to_vec(), b"application/grpc".to_vec())));
        }
    }

    #[test]
    fn authorities_are_mended_to_host_and_port() {
        assert_eq!(mend_authority(b"http://127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(mend_authority(b"https://etcd-0:2379/x"), b"etcd-0:2379");
        assert_eq!(mend_authority(b"unix:///run/etcd.sock"), b"localhost");
        assert!(authority_ok(b"127.0.0.1:2379"));
        assert!(!authority_ok(b"http://127.0.0.1:2379"));
    }

    #[test]
    fn padding_and_priority_are_stripped_from_a_headers_fragment() {
        let payload = [2u8, 0, 0, 0, 1, 16, b'a', b'b', 0, 0];
        assert_eq!(
            headers_fragment(FLAG_PADDED | FLAG_PRIORITY, &payload),
            Some(&b"ab"[..])
        );
        assert_eq!(headers_fragment(FLAG_PADDED, &[9u8, 1]), None);
    }

    /// A block larger than one frame leaves as HEADERS + CONTINUATION.
    #[test]
    fn a_large_block_is_split_into_continuations() {
        let block = vec![0x82u8; MAX_FRAME + 10];
        let mut out = Vec::new();
        write_header_frames(&mut out, 3, true, &block);
        assert_eq!(out[3], TYPE_HEADERS);
        assert_eq!(out[4], FLAG_END_STREAM);
        let second = FRAME_HEADER + MAX_FRAME;
        assert_eq!(out[second + 3], TYPE_CONTINUATION);
        assert_eq!(out[second + 4], FLAG_END_HEADERS);
        assert_eq!(out.len(), 2 * FRAME_HEADER + block.len());
    }
}
