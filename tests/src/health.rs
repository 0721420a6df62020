//! Is a member serving? `GET /health` on its client URL (etcd answers `{"health":"true"}`
//! once the member has a leader), or else a linearizable Range that succeeds.
//!
//! The HTTP request is a minimal HTTP/1.1 exchange over a plain TCP stream: the harness
//! only ever asks one small JSON document of a server on loopback.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use skiff_proto::etcdserverpb::RangeRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{connect, kv};

/// Upper bound on a `/health` response; anything longer is not etcd's answer.
const MAX_RESPONSE: usize = 64 * 1024;

/// The answer of one health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `/health` said `"true"`, or a Range succeeded.
    Healthy,
    /// Not (yet) serving; the reason, for error messages.
    Unhealthy(String),
}

impl Health {
    /// Whether the probe found the member serving.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// Probes the member whose client URL is `client_url` (`http://127.0.0.1:PORT`): first
/// `GET /health`, then, if that did not say healthy, one Range of key `health`.
/// Each step is bounded by `timeout`. Never fails: a failure is [`Health::Unhealthy`].
pub async fn probe(client_url: &str, timeout: Duration) -> Health {
    let http = match tokio::time::timeout(timeout, http_health(client_url)).await {
        Ok(Ok(true)) => return Health::Healthy,
        Ok(Ok(false)) => "/health said not healthy".to_string(),
        Ok(Err(e)) => format!("/health: {e:#}"),
        Err(_) => "/health timed out".to_string(),
    };
    match tokio::time::timeout(timeout, range_probe(client_url)).await {
        Ok(Ok(())) => Health::Healthy,
        Ok(Err(e)) => Health::Unhealthy(format!("{http}; range: {e:#}")),
        Err(_) => Health::Unhealthy(format!("{http}; range timed out")),
    }
}

async fn range_probe(client_url: &str) -> Result<()> {
    let channel = connect(client_url).await?;
    kv(channel)
        .range(RangeRequest {
            key: b"health".to_vec(),
            ..Default::default()
        })
        .await
        .context("range")?;
    Ok(())
}

/// `GET /health` on `client_url`; `Ok(true)` when the body is `{"health":"true", ...}`.
async fn http_health(client_url: &str) -> Result<bool> {
    let authority = authority_of(client_url)?;
    let (status, body) = http_get(authority, "/health").await?;
    if status != 200 {
        // etcd answers 503 with {"health":"false"} when it has no leader.
        return Ok(false);
    }
    parse_health_body(&body)
}

/// `host:port` of an `http://host:port[/...]` URL.
///
/// # Errors
/// When the URL is not plain `http://`.
pub fn authority_of(url: &str) -> Result<&str> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http:// URL: {url:?}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("no host in URL {url:?}");
    }
    Ok(authority)
}

/// A minimal HTTP/1.1 GET of `path` on `authority` (`host:port`): status and body
/// (de-chunked).
pub async fn http_get(authority: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect {authority}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE as u64)
        .read_to_end(&mut response)
        .await?;
    parse_http_response(&response)
}

/// Splits an HTTP/1.1 response into its status code and body (de-chunked if needed).
fn parse_http_response(response: &[u8]) -> Result<(u16, Vec<u8>)> {
    let split = find(response, b"\r\n\r\n").ok_or_else(|| anyhow!("no end of HTTP headers"))?;
    let head = std::str::from_utf8(&response[..split]).context("HTTP head is not UTF-8")?;
    let body = &response[split + 4..];
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line {status_line:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n").ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&body[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body
            .get(..size)
            .ok_or_else(|| anyhow!("chunk of {size} bytes is truncated"))?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether a `/health` body says healthy: a JSON object whose `health` is `"true"` (etcd
/// 3.4 uses a string; a JSON `true` is accepted as well).
///
/// # Errors
/// When the body is not a JSON object.
pub fn parse_health_body(body: &[u8]) -> Result<bool> {
    let value: serde_json::Value =
        serde_json::from_slice(body).context("/health body is not JSON")?;
    let obj = value
        .as_object()
        .ok_or_else(|| anyhow!("/health body is not a JSON object"))?;
    Ok(match obj.get("health") {
        Some(serde_json::Value::String(s)) => s == "true",
        Some(serde_json::Value::Bool(b)) => *b,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_body_variants() {
        assert!(parse_health_body(br#"{"health":"true"}"#).unwrap());
        assert!(parse_health_body(br#"{"health":"true","reason":""}"#).unwrap());
        assert!(parse_health_body(br#"{"health":true}"#).unwrap());
        assert!(!parse_health_body(br#"{"health":"false"}"#).unwrap());
        assert!(!parse_health_body(br#"{}"#).unwrap());
        assert!(parse_health_body(b"not json").is_err());
        assert!(parse_health_body(b"[1]").is_err());
    }

    #[test]
    fn http_response_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"health\":\"true\"}";
        let (status, body) = parse_http_response(plain).unwrap();
        assert_eq!(status, 200);
        assert!(parse_health_body(&body).unwrap());

        let chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5\r\n{\"hea\r\nd\r\nlth\":\"false\"}\r\n0\r\n\r\n";
        let (status, body) = parse_http_response(chunked).unwrap();
        assert_eq!(status, 503);
        assert_eq!(body, br#"{"health":"false"}"#);
    }

    #[test]
    fn http_response_garbage_is_an_error_not_a_panic() {
        assert!(parse_http_response(b"").is_err());
        assert!(parse_http_response(b"HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_http_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        .is_err());
        assert!(parse_http_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab"
        )
        .is_err());
    }

    #[test]
    fn authority_of_urls() {
        assert_eq!(
            authority_of("http://127.0.0.1:2379").unwrap(),
            "127.0.0.1:2379"
        );
        assert_eq!(
            authority_of("http://127.0.0.1:2379/x").unwrap(),
            "127.0.0.1:2379"
        );
        assert!(authority_of("https://a:1").is_err());
        assert!(authority_of("http://").is_err());
    }

    #[tokio::test]
    async fn probe_of_closed_port_is_unhealthy() {
        let port = crate::ports::free_port().unwrap();
        let h = probe(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_millis(500),
        )
        .await;
        assert!(!h.is_healthy(), "{h:?}");
    }
}
