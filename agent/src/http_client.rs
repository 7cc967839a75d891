//! A plain HTTP/1.1 `GET` client over a `TcpStream`, with timeouts, for
//! `agent top` (the agent's JSON API) and `agent recommend` (Prometheus'
//! HTTP API): both are served on a node's or cluster's network without TLS,
//! and a request every few seconds needs no client library.

use std::{
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    time::{Duration, Instant},
};

/// A connect, a read or a write that takes longer than this fails.
const TIMEOUT: Duration = Duration::from_secs(3);
/// A larger response is refused.
const MAX_BODY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("`{url}` is not an http:// URL with a host and port (e.g. http://127.0.0.1:9740)")]
    BadUrl { url: String },
    #[error("cannot resolve {authority}: {source}")]
    Resolve {
        authority: String,
        source: io::Error,
    },
    #[error("cannot reach {what} at {url}: {source}; is it running there?{hint}")]
    Connect {
        what: &'static str,
        url: String,
        source: io::Error,
        hint: &'static str,
    },
    #[error("reading from {what} at {url}: {source}")]
    Io {
        what: &'static str,
        url: String,
        source: io::Error,
    },
    #[error("{what} at {url} answered {status}: {body}")]
    Status {
        what: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{what} at {url} sent a malformed HTTP response: {detail}")]
    Malformed {
        what: &'static str,
        url: String,
        detail: &'static str,
    },
}

/// A server at a base URL (`http://host:port[/prefix]`).
#[derive(Debug)]
pub struct HttpClient {
    /// What the server is, for messages ("the agent", "Prometheus").
    what: &'static str,
    /// Appended to connection errors (e.g. another way to run).
    hint: &'static str,
    url: String,
    authority: String,
    prefix: String,
    addr: Option<SocketAddr>,
    buffer: Vec<u8>,
    body: Vec<u8>,
}

impl HttpClient {
    pub fn new(url: &str, what: &'static str, hint: &'static str) -> Result<Self, HttpError> {
        let bad = || HttpError::BadUrl {
            url: url.to_owned(),
        };
        let rest = url.trim().strip_prefix("http://").ok_or_else(bad)?;
        let (authority, prefix) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(Self {
            what,
            hint,
            url: url.trim().trim_end_matches('/').to_owned(),
            authority: authority.to_owned(),
            prefix: prefix.trim_end_matches('/').to_owned(),
            addr: None,
            buffer: Vec::with_capacity(64 << 10),
            body: Vec::new(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix of the base URL followed by `path`.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    fn resolve(&mut self) -> Result<SocketAddr, HttpError> {
        if let Some(addr) = self.addr {
            return Ok(addr);
        }
        let resolve_err = |source| HttpError::Resolve {
            authority: self.authority.clone(),
            source,
        };
        let addr = self
            .authority
            .to_socket_addrs()
            .map_err(resolve_err)?
            .next()
            .ok_or_else(|| HttpError::Resolve {
                authority: self.authority.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "no address"),
            })?;
        self.addr = Some(addr);
        Ok(addr)
    }

    /// `GET` of `path_and_query` below the base URL's prefix; the body of a
    /// 200 answer.
    pub fn get(&mut self, path_and_query: &str) -> Result<&[u8], HttpError> {
        let addr = self.resolve()?;
        let (what, url) = (self.what, &self.url);
        let mut stream =
            TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|source| HttpError::Connect {
                what,
                url: url.clone(),
                source,
                hint: self.hint,
            })?;
        let io_err = |source| HttpError::Io {
            what,
            url: url.clone(),
            source,
        };
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io_err)?;
        write!(
            stream,
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: stallwatch\r\n\r\n",
            self.path(path_and_query),
            self.authority
        )
        .map_err(io_err)?;
        self.buffer.clear();
        let deadline = Instant::now() + TIMEOUT * 2;
        let mut chunk = [0u8; 16 << 10];
        let malformed = |detail| HttpError::Malformed {
            what,
            url: url.clone(),
            detail,
        };
        loop {
            let n = stream.read(&mut chunk).map_err(io_err)?;
            if n == 0 {
                break;
            }
            self.buffer
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
            if self.buffer.len() > MAX_BODY || Instant::now() > deadline {
                return Err(malformed("the response is too large or too slow"));
            }
        }
        let (status, body) = parse_response(&self.buffer, &mut self.body).map_err(malformed)?;
        if status == 200 {
            Ok(body)
        } else {
            Err(HttpError::Status {
                what,
                url: url.clone(),
                status,
                body: String::from_utf8_lossy(body)
                    .trim()
                    .chars()
                    .take(300)
                    .collect(),
            })
        }
    }
}

/// (status, body) of a complete HTTP/1.1 response; the body is delimited by
/// `Content-Length`, chunked (decoded into `decoded`), or the end of the
/// connection.
fn parse_response<'a>(
    bytes: &'a [u8],
    decoded: &'a mut Vec<u8>,
) -> Result<(u16, &'a [u8]), &'static str> {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(bytes.get(..end).ok_or("no headers")?)
        .map_err(|_| "headers are not text")?;
    let body = bytes.get(end + 4..).ok_or("no body")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("no status line")?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    if chunked {
        decoded.clear();
        dechunk(body, decoded)?;
        return Ok((status, decoded.as_slice()));
    }
    match length {
        Some(n) => Ok((
            status,
            body.get(..n)
                .ok_or("the body is shorter than its Content-Length")?,
        )),
        None => Ok((status, body)),
    }
}

/// Decodes a chunked body: `<hex size>[;ext]\r\n<data>\r\n`… `0\r\n\r\n`.
fn dechunk(mut body: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk has no size line")?;
        let line = std::str::from_utf8(body.get(..line_end).ok_or("bad chunk")?)
            .map_err(|_| "a chunk size is not text")?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "a chunk size is not hex")?;
        let data = body.get(line_end + 2..).ok_or("bad chunk")?;
        if size == 0 {
            return Ok(());
        }
        out.extend_from_slice(data.get(..size).ok_or("a chunk is cut short")?);
        body = data.get(size + 2..).ok_or("a chunk is cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_http_a_host_and_a_port() {
        let client = HttpClient::new("http://127.0.0.1:9740", "x", "").expect("valid");
        assert_eq!(client.path("/api"), "/api");
        let client = HttpClient::new("http://node-1:9740/stallwatch/", "x", "").expect("valid");
        assert_eq!(client.path("/api"), "/stallwatch/api");
        for bad in [
            "https://127.0.0.1:9740",
            "127.0.0.1:9740",
            "http://host",
            "http://:80",
            "http://h:port",
        ] {
            let err = HttpClient::new(bad, "x", "").expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn responses_are_cut_at_their_length_or_dechunked() {
        let mut scratch = Vec::new();
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}junk";
        assert_eq!(parse_response(raw, &mut scratch), Ok((200, &b"{}"[..])));
        let raw = b"HTTP/1.1 503 Service Unavailable\r\n\r\nnot ready";
        assert_eq!(
            parse_response(raw, &mut scratch),
            Ok((503, &b"not ready"[..]))
        );
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=1\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(raw, &mut scratch),
            Ok((200, &b"{\"a\":1}"[..]))
        );
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nshort";
        assert!(parse_response(raw, &mut scratch).is_err());
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}",
                &mut scratch
            )
            .is_err()
        );
        assert!(parse_response(b"garbage", &mut scratch).is_err());
    }
}
