//! Debian's Prometheus server on loopback, with a private data directory,
//! scraping a running agent every second and evaluating stallwatch's rules.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::free_port;

/// `deploy/prometheus/` in this repository.
pub fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl Prometheus {
    /// Starts Prometheus scraping the agent on `agent_port` every second,
    /// with stallwatch's rules evaluated every second, and waits until ready.
    pub fn scraping(agent_port: u16) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "stallwatch-prometheus-{}-{port}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let rules = rules_dir().join("stallwatch-rules.yaml");
        fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: stallwatch\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n",
                rules.display()
            ),
        )
        .unwrap_or_else(|e| panic!("writing prometheus.yml: {e}"));
        let log = fs::File::create(dir.join("prometheus.log"))
            .unwrap_or_else(|e| panic!("creating prometheus.log: {e}"));
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting prometheus (cargo xtask setup installs it): {e}"));
        let prometheus = Self { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while prometheus.get("/-/ready").map(|(s, _)| s) != Ok(200) {
            if Instant::now() > deadline {
                panic!("prometheus did not get ready:\n{}", prometheus.log());
            }
            thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    fn get(&self, path: &str) -> Result<(u16, String), String> {
        crate::http_get(&format!("http://127.0.0.1:{}{path}", self.port), None)
    }

    /// The values of an instant query's result series, with their labels.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let request = ureq::get(&format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query("query", promql);
        let body = request
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_else(|e| panic!("querying {promql}: {e}"));
        let doc: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("prometheus answered {body}: {e}"));
        doc["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let value = r["value"][1].as_str()?.parse().ok()?;
                Some((r["metric"].clone(), value))
            })
            .collect()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if fs::remove_dir_all(&self.dir).is_err() {
            eprintln!("warning: could not remove {}", self.dir.display());
        }
    }
}
