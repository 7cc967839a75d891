//! Where `agent top` gets its documents: the running agent's JSON API over
//! HTTP ([`Remote`]), or probes loaded in this process ([`Local`]).
//!
//! The HTTP client is a plain HTTP/1.1 `GET` over a `TcpStream`, with
//! timeouts: the API is served on the node's loopback or pod network, never
//! over TLS, and one request every few seconds needs no client library.

use std::{
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    time::{Duration, Instant},
};

use crate::{
    api::{self, Snapshot},
    collector::Collector,
};

/// A connect, a read or a write that takes longer than this fails.
const TIMEOUT: Duration = Duration::from_secs(3);
/// A larger document is refused: no node has that many containers.
const MAX_BODY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("`{url}` is not an http:// URL with a host and port (e.g. http://127.0.0.1:9740)")]
    BadUrl { url: String },
    #[error("cannot resolve {authority}: {source}")]
    Resolve {
        authority: String,
        source: io::Error,
    },
    #[error(
        "cannot reach the agent at {url}: {source}; is it running there? (or use --standalone)"
    )]
    Connect { url: String, source: io::Error },
    #[error("reading from the agent at {url}: {source}")]
    Io { url: String, source: io::Error },
    #[error("the agent at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the agent at {url} sent a malformed HTTP response: {what}")]
    Malformed { url: String, what: &'static str },
    #[error(
        "the agent at {url} sent a document that is not API version {}: {source}",
        api::API_VERSION
    )]
    Parse {
        url: String,
        source: serde_json::Error,
    },
    #[error(
        "the agent at {url} speaks API version {found}; this agent top speaks {}",
        api::API_VERSION
    )]
    Version { url: String, found: u32 },
    #[error("encoding the local document: {0}")]
    Encode(serde_json::Error),
}

/// A source of documents, polled from `agent top`'s fetch thread.
pub trait Source: Send {
    fn fetch(&mut self) -> Result<Snapshot<'static>, SourceError>;
    /// Where the documents come from, for the header.
    fn describe(&self) -> String;
}

/// The agent's API at a URL.
#[derive(Debug)]
pub struct Remote {
    url: String,
    authority: String,
    path: String,
    addr: Option<SocketAddr>,
    buffer: Vec<u8>,
}

impl Remote {
    /// `http://host:port[/prefix]`; the API path is appended to the prefix.
    pub fn new(url: &str) -> Result<Self, SourceError> {
        let bad = || SourceError::BadUrl {
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
            url: url.trim().trim_end_matches('/').to_owned(),
            authority: authority.to_owned(),
            path: format!("{}{}", prefix.trim_end_matches('/'), api::CONTAINERS_PATH),
            addr: None,
            buffer: Vec::with_capacity(64 << 10),
        })
    }

    fn resolve(&mut self) -> Result<SocketAddr, SourceError> {
        if let Some(addr) = self.addr {
            return Ok(addr);
        }
        let resolve_err = |source| SourceError::Resolve {
            authority: self.authority.clone(),
            source,
        };
        let addr = self
            .authority
            .to_socket_addrs()
            .map_err(resolve_err)?
            .next()
            .ok_or_else(|| SourceError::Resolve {
                authority: self.authority.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "no address"),
            })?;
        self.addr = Some(addr);
        Ok(addr)
    }

    fn get(&mut self) -> Result<&[u8], SourceError> {
        let addr = self.resolve()?;
        let url = &self.url;
        let mut stream =
            TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|source| SourceError::Connect {
                url: url.clone(),
                source,
            })?;
        let io_err = |source| SourceError::Io {
            url: url.clone(),
            source,
        };
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io_err)?;
        write!(
            stream,
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: stallwatch-top\r\n\r\n",
            self.path, self.authority
        )
        .map_err(io_err)?;
        self.buffer.clear();
        let deadline = Instant::now() + TIMEOUT * 2;
        let mut chunk = [0u8; 16 << 10];
        loop {
            let n = stream.read(&mut chunk).map_err(io_err)?;
            if n == 0 {
                break;
            }
            self.buffer
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
            if self.buffer.len() > MAX_BODY || Instant::now() > deadline {
                return Err(SourceError::Malformed {
                    url: url.clone(),
                    what: "the response is too large or too slow",
                });
            }
        }
        let response = parse_response(&self.buffer).map_err(|what| SourceError::Malformed {
            url: url.clone(),
            what,
        })?;
        match response {
            (200, body) => Ok(body),
            (status, body) => Err(SourceError::Status {
                url: url.clone(),
                status,
                body: String::from_utf8_lossy(body)
                    .trim()
                    .chars()
                    .take(200)
                    .collect(),
            }),
        }
    }
}

impl Source for Remote {
    fn fetch(&mut self) -> Result<Snapshot<'static>, SourceError> {
        let url = self.url.clone();
        let body = self.get()?;
        parse_document(&url, body)
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// A document, checked for its version before the rest is parsed.
pub fn parse_document(url: &str, body: &[u8]) -> Result<Snapshot<'static>, SourceError> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        api_version: u32,
    }
    let parse_err = |source| SourceError::Parse {
        url: url.to_owned(),
        source,
    };
    let Versioned { api_version } = serde_json::from_slice(body).map_err(parse_err)?;
    if api_version != api::API_VERSION {
        return Err(SourceError::Version {
            url: url.to_owned(),
            found: api_version,
        });
    }
    serde_json::from_slice(body).map_err(parse_err)
}

/// (status, body) of a complete HTTP/1.1 response; the body is delimited by
/// `Content-Length`, chunked, or the end of the connection.
fn parse_response(bytes: &[u8]) -> Result<(u16, &[u8]), &'static str> {
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
        return Err("chunked responses are not expected from the agent");
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

/// Probes loaded in this process (`--standalone`): each fetch collects and
/// encodes a document exactly as the agent's API does.
pub struct Local {
    collector: Collector,
    started: Instant,
    bounds: Vec<f64>,
    buffer: Vec<u8>,
}

impl Local {
    pub fn new(collector: Collector) -> Self {
        Self {
            collector,
            started: Instant::now(),
            bounds: api::bucket_bounds_seconds(),
            buffer: Vec::new(),
        }
    }
}

impl Source for Local {
    fn fetch(&mut self) -> Result<Snapshot<'static>, SourceError> {
        let (node, _errors) = crate::node::read(std::path::Path::new("/proc"));
        let uptime = self.started.elapsed().as_secs_f64();
        let bounds = &self.bounds;
        let buffer = &mut self.buffer;
        buffer.clear();
        let view = self.collector.collect();
        serde_json::to_writer(&mut *buffer, &api::snapshot(&view, &node, uptime, bounds))
            .map_err(SourceError::Encode)?;
        parse_document("this process", buffer)
    }

    fn describe(&self) -> String {
        "probes in this process (--standalone)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, thread};

    use super::*;

    #[test]
    fn urls_need_http_a_host_and_a_port() {
        let remote = Remote::new("http://127.0.0.1:9740").expect("valid");
        assert_eq!(remote.path, "/api/v1/containers");
        let remote = Remote::new("http://node-1:9740/stallwatch/").expect("valid");
        assert_eq!(remote.path, "/stallwatch/api/v1/containers");
        for bad in [
            "https://127.0.0.1:9740",
            "127.0.0.1:9740",
            "http://host",
            "http://:80",
            "http://h:port",
        ] {
            let err = Remote::new(bad).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn responses_are_cut_at_their_length() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}junk";
        assert_eq!(parse_response(raw), Ok((200, &b"{}"[..])));
        let raw = b"HTTP/1.1 503 Service Unavailable\r\n\r\nnot ready";
        assert_eq!(parse_response(raw), Ok((503, &b"not ready"[..])));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage").is_err());
    }

    /// Serves one canned response on a fresh port, and returns the URL.
    fn serve_once(response: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                // The whole request, so closing does not reset the connection.
                let mut request = Vec::new();
                let mut buf = [0u8; 256];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response);
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn an_agent_that_is_down_is_named_with_its_url() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let err = Remote::new(&url)
            .expect("valid")
            .fetch()
            .expect_err("nobody listens");
        let text = err.to_string();
        assert!(
            text.contains(&url) && text.contains("cannot reach"),
            "{text}"
        );
    }

    #[test]
    fn errors_and_other_versions_are_refused_clearly() {
        let url = serve_once(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found");
        let err = Remote::new(&url).expect("valid").fetch().expect_err("404");
        assert!(err.to_string().contains("404"), "{err}");

        let url = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\n{\"api_version\":2}");
        let err = Remote::new(&url).expect("valid").fetch().expect_err("v2");
        assert!(err.to_string().contains("version 2"), "{err}");

        let url = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{\"api");
        let err = Remote::new(&url)
            .expect("valid")
            .fetch()
            .expect_err("cut short");
        assert!(matches!(err, SourceError::Parse { .. }), "{err}");
    }
}
