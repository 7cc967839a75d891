//! Where `agent top` gets its documents: the running agent's JSON API over
//! HTTP ([`Remote`], through [`HttpClient`]), or probes loaded in this
//! process ([`Local`]).

use std::time::Instant;

use crate::{
    api::{self, Snapshot},
    collector::Collector,
    http_client::{HttpClient, HttpError},
};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Http(#[from] HttpError),
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
    client: HttpClient,
}

impl Remote {
    /// `http://host:port[/prefix]`; the API path is appended to the prefix.
    pub fn new(url: &str) -> Result<Self, SourceError> {
        Ok(Self {
            client: HttpClient::new(url, "the agent", " (or use --standalone)")?,
        })
    }
}

impl Source for Remote {
    fn fetch(&mut self) -> Result<Snapshot<'static>, SourceError> {
        let url = self.client.url().to_owned();
        let body = self.client.get(api::CONTAINERS_PATH)?;
        parse_document(&url, body)
    }

    fn describe(&self) -> String {
        self.client.url().to_owned()
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
    use std::{
        io::{Read as _, Write as _},
        net::TcpListener,
        thread,
    };

    use super::*;

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
