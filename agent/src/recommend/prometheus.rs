//! Instant queries against Prometheus' HTTP API (`/api/v1/query`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::http_client::{HttpClient, HttpError};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(
        "Prometheus at {url} answered `{query}` with something that is not a query result: {source}"
    )]
    Parse {
        url: String,
        query: String,
        source: serde_json::Error,
    },
    #[error("Prometheus at {url} refused `{query}`: {error}")]
    Refused {
        url: String,
        query: String,
        error: String,
    },
}

/// One series of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

pub struct Prometheus {
    client: HttpClient,
}

impl Prometheus {
    pub fn new(url: &str) -> Result<Self, HttpError> {
        Ok(Self {
            client: HttpClient::new(url, "Prometheus", "")?,
        })
    }

    pub fn url(&self) -> &str {
        self.client.url()
    }

    /// The instant vector `query` evaluates to now; `NaN` and infinite
    /// values are left out.
    pub fn query(&mut self, query: &str) -> Result<Vec<Sample>, QueryError> {
        let path = format!("/api/v1/query?query={}", encode(query));
        let url = self.client.url().to_owned();
        let body = self.client.get(&path)?;
        let parsed: Response =
            serde_json::from_slice(body).map_err(|source| QueryError::Parse {
                url: url.clone(),
                query: query.to_owned(),
                source,
            })?;
        if parsed.status != "success" {
            return Err(QueryError::Refused {
                url,
                query: query.to_owned(),
                error: parsed.error.unwrap_or_default(),
            });
        }
        Ok(parsed
            .data
            .map(|d| d.result)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| {
                let value: f64 = s.value.1.parse().ok()?;
                value.is_finite().then_some(Sample {
                    labels: s.metric,
                    value,
                })
            })
            .collect())
    }
}

/// Percent-encodes a query parameter (RFC 3986 unreserved characters stay).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte));
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode(r#"up{job="a b"}[5m]"#),
            "up%7Bjob%3D%22a%20b%22%7D%5B5m%5D"
        );
    }
}
