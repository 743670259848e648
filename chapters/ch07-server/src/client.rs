//! A small HTTP/1.1 client (hyper) for plain-`http://` OpenAI-compatible servers: JSON requests,
//! and server-sent event streams read event by event. The load generator and the tests use it.

use anyhow::{anyhow, bail, Context, Result};
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::Request;
pub use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;

/// `http://host:port/path` → ("host:port", "/path").
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    Ok((authority, if path.is_empty() { "/".into() } else { path.to_string() }))
}

/// Sends one request on a fresh connection; returns the status and the body, unread.
pub async fn send(method: Method, url: &str, body: String) -> Result<(StatusCode, Incoming)> {
    let (authority, path) = split_url(url)?;
    let stream = tokio::net::TcpStream::connect(&authority).await.with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn); // drives the connection; ends with it
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", &authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    Ok((resp.status(), resp.into_body()))
}

/// The whole body as text.
pub async fn read_all(body: Incoming) -> Result<String> {
    Ok(String::from_utf8_lossy(&body.collect().await?.to_bytes()).into_owned())
}

/// GET `url`: status and body text.
pub async fn get(url: &str) -> Result<(StatusCode, String)> {
    let (status, body) = send(Method::GET, url, String::new()).await?;
    Ok((status, read_all(body).await?))
}

/// POST a JSON body: status and body text (a raw string body lets tests send bad JSON).
pub async fn post_raw(url: &str, body: &str) -> Result<(StatusCode, String)> {
    let (status, body) = send(Method::POST, url, body.to_string()).await?;
    Ok((status, read_all(body).await?))
}

// ANCHOR: sse_reader
/// Reads a server-sent event stream one `data:` payload at a time.
pub struct SseReader {
    body: Incoming,
    buf: Vec<u8>,
}

impl SseReader {
    pub fn new(body: Incoming) -> Self {
        SseReader { body, buf: Vec::new() }
    }

    /// The next event's data (`[DONE]` included), or `None` when the stream ends.
    pub async fn next(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
                let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
                if data.is_empty() {
                    continue; // a comment or keep-alive
                }
                return Ok(Some(data.join("\n")));
            }
            match self.body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                None => return Ok(None),
            }
        }
    }
}
// ANCHOR_END: sse_reader

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(split_url("http://127.0.0.1:8000/v1").unwrap(), ("127.0.0.1:8000".into(), "/v1".into()));
        assert_eq!(split_url("http://localhost").unwrap(), ("localhost:80".into(), "/".into()));
        assert!(split_url("https://api.openai.com/v1").is_err());
    }
}
