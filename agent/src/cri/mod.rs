//! Kubernetes names for cgroups, from the node's container runtime over CRI,
//! where the kubelet gets them: no Kubernetes API access and no RBAC.
//!
//! A background task ([`Cri::run`]) lists the runtime's pod sandboxes and
//! containers every `refresh` interval, and sooner when a scrape meets a
//! container id it does not know ([`Cri::missed`]), at most once per
//! `min_refresh`. Scrapes only read the cache ([`Cri::names`]): the runtime
//! is never called per scrape or per container. A container that leaves the
//! listing keeps its names for `grace`, so its last series keep their
//! labels, then is forgotten. A runtime that is down or slow leaves the
//! cache as it was (calls have deadlines); `stallwatch_cri_up` and
//! `stallwatch_cri_errors_total` say so, and the next refresh reconnects.

pub mod client;
pub mod socket;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use client::{Client, Listing};
use tokio::sync::Notify;

/// The Kubernetes names of a cgroup: a container's, a pod sandbox's
/// (`container` = `POD`, as cAdvisor names it) or a pod's (no container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeNames {
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    pub image: Option<String>,
    pub runtime: String,
    /// The pod's sandbox ("pause") container.
    pub sandbox: bool,
}

/// The container name given to sandbox cgroups.
pub const SANDBOX_CONTAINER: &str = "POD";

#[derive(Debug, Clone)]
pub struct CriConfig {
    /// `--cri-socket`; `None`: discovered on each refresh until found.
    pub socket: Option<PathBuf>,
    /// Where the host's filesystem is, for discovery (`/`, or a hostPath mount).
    pub host_root: PathBuf,
    pub timeout: Duration,
    pub refresh: Duration,
    pub min_refresh: Duration,
    pub grace: Duration,
}

#[derive(Debug, Default)]
struct Cache {
    /// Container and sandbox ids → names, and when the runtime last listed them.
    by_container: HashMap<String, (Arc<KubeNames>, Instant)>,
    /// Pod UIDs → the pod's names (no container).
    by_pod: HashMap<String, (Arc<KubeNames>, Instant)>,
    /// Bumped by every change, so the collector relabels only then.
    generation: u64,
    /// `None` until a socket is known.
    up: Option<bool>,
    errors: u64,
}

/// The cache of names, shared by the refresh task and the collector.
#[derive(Debug, Default)]
pub struct Cri {
    cache: Mutex<Cache>,
    wake: Notify,
}

/// What the exposition says about the runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CriHealth {
    /// `None` when no runtime socket was configured or found.
    pub up: Option<bool>,
    pub errors: u64,
}

impl Cri {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The names of a container or sandbox id, and of a pod UID.
    pub fn names(
        &self,
        container_id: Option<&str>,
        pod_uid: Option<&str>,
    ) -> Option<Arc<KubeNames>> {
        let cache = self.cache();
        if let Some(id) = container_id {
            return cache.by_container.get(id).map(|(n, _)| n.clone());
        }
        pod_uid.and_then(|uid| cache.by_pod.get(uid).map(|(n, _)| n.clone()))
    }

    /// Changes whenever the names change.
    pub fn generation(&self) -> u64 {
        self.cache().generation
    }

    pub fn health(&self) -> CriHealth {
        let cache = self.cache();
        CriHealth {
            up: cache.up,
            errors: cache.errors,
        }
    }

    /// A scrape met a container id the cache does not know: refresh soon.
    pub fn missed(&self) {
        self.wake.notify_one();
    }

    /// Takes in a successful listing at `now`.
    pub fn update(&self, listing: &Listing, now: Instant, grace: Duration) {
        let mut cache = self.cache();
        let Listing {
            runtime,
            sandboxes,
            containers,
        } = listing;
        let mut pods: HashMap<&str, &client::Sandbox> = HashMap::with_capacity(sandboxes.len());
        for sandbox in sandboxes {
            pods.insert(sandbox.id.as_str(), sandbox);
            let pod = KubeNames {
                namespace: sandbox.namespace.clone(),
                pod: sandbox.name.clone(),
                container: None,
                image: None,
                runtime: runtime.clone(),
                sandbox: false,
            };
            let pause = KubeNames {
                container: Some(SANDBOX_CONTAINER.to_owned()),
                sandbox: true,
                ..pod.clone()
            };
            upsert(&mut cache.by_pod, &sandbox.uid, pod, now);
            upsert(&mut cache.by_container, &sandbox.id, pause, now);
        }
        for container in containers {
            let Some(sandbox) = pods.get(container.sandbox_id.as_str()) else {
                continue;
            };
            let names = KubeNames {
                namespace: sandbox.namespace.clone(),
                pod: sandbox.name.clone(),
                container: Some(container.name.clone()),
                image: Some(container.image.clone()).filter(|i| !i.is_empty()),
                runtime: runtime.clone(),
                sandbox: false,
            };
            upsert(&mut cache.by_container, &container.id, names, now);
        }
        let fresh = |(_, seen): &mut (Arc<KubeNames>, Instant)| now.duration_since(*seen) <= grace;
        cache.by_container.retain(|_, entry| fresh(entry));
        cache.by_pod.retain(|_, entry| fresh(entry));
        cache.generation += 1;
        cache.up = Some(true);
    }

    fn failed(&self) {
        let mut cache = self.cache();
        cache.up = Some(false);
        cache.errors += 1;
    }

    /// Keeps the cache fresh until the process ends.
    pub async fn run(self: Arc<Self>, config: CriConfig) {
        let mut client: Option<Client> = None;
        let mut last: Option<Instant> = None;
        let mut said_none = false;
        loop {
            if let Some(last) = last {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(config.refresh) => {}
                }
                let since = last.elapsed();
                if since < config.min_refresh {
                    tokio::time::sleep(config.min_refresh - since).await;
                }
            }
            last = Some(Instant::now());

            let socket = match &config.socket {
                Some(socket) => Some(socket.clone()),
                None => socket::discover(&config.host_root, &socket::WELL_KNOWN),
            };
            let Some(socket) = socket else {
                if !said_none {
                    tracing::info!(
                        "no container runtime socket found (looked for {}; set --cri-socket); \
                         container labels come from cgroup paths only",
                        socket::WELL_KNOWN.join(", ")
                    );
                    said_none = true;
                }
                continue;
            };
            if client.is_none() {
                match Client::connect(&socket, config.timeout).await {
                    Ok(connected) => {
                        tracing::info!(
                            socket = %socket.display(),
                            runtime = connected.runtime(),
                            "container runtime connected"
                        );
                        client = Some(connected);
                    }
                    Err(e) => {
                        tracing::warn!("{e}; keeping the last known names");
                        self.failed();
                        continue;
                    }
                }
            }
            let Some(connected) = client.as_mut() else {
                continue;
            };
            match connected.list().await {
                Ok(listing) => self.update(&listing, Instant::now(), config.grace),
                Err(e) => {
                    tracing::warn!("{e}; keeping the last known names, reconnecting");
                    self.failed();
                    client = None;
                }
            }
        }
    }
}

/// Inserts or refreshes `key`, keeping the same `Arc` when nothing changed.
fn upsert(
    map: &mut HashMap<String, (Arc<KubeNames>, Instant)>,
    key: &str,
    names: KubeNames,
    now: Instant,
) {
    match map.get_mut(key) {
        Some((known, seen)) => {
            if **known != names {
                *known = Arc::new(names);
            }
            *seen = now;
        }
        None => {
            map.insert(key.to_owned(), (Arc::new(names), now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{client::*, *};

    fn listing() -> Listing {
        Listing {
            runtime: "containerd".into(),
            sandboxes: vec![Sandbox {
                id: "sb1".into(),
                uid: "uid-1".into(),
                name: "web-0".into(),
                namespace: "shop".into(),
            }],
            containers: vec![
                Container {
                    id: "c1".into(),
                    sandbox_id: "sb1".into(),
                    name: "nginx".into(),
                    image: "docker.io/library/nginx:1.27".into(),
                },
                Container {
                    id: "orphan".into(),
                    sandbox_id: "gone".into(),
                    name: "x".into(),
                    image: String::new(),
                },
            ],
        }
    }

    #[test]
    fn containers_sandboxes_and_pods_get_their_names() {
        let cri = Cri::default();
        assert_eq!(cri.health(), CriHealth::default());
        cri.update(&listing(), Instant::now(), Duration::from_secs(60));
        let c = cri.names(Some("c1"), Some("uid-1")).expect("container");
        assert_eq!((c.namespace.as_str(), c.pod.as_str()), ("shop", "web-0"));
        assert_eq!(c.container.as_deref(), Some("nginx"));
        assert_eq!(c.image.as_deref(), Some("docker.io/library/nginx:1.27"));
        let pause = cri.names(Some("sb1"), Some("uid-1")).expect("sandbox");
        assert_eq!(pause.container.as_deref(), Some("POD"));
        assert!(pause.sandbox);
        let pod = cri.names(None, Some("uid-1")).expect("pod");
        assert_eq!(pod.container, None);
        assert!(
            cri.names(Some("orphan"), None).is_none(),
            "its pod is unknown"
        );
        assert_eq!(cri.health().up, Some(true));
    }

    #[test]
    fn a_gone_container_keeps_its_names_for_the_grace_period_only() {
        let cri = Cri::default();
        let start = Instant::now();
        let grace = Duration::from_secs(60);
        cri.update(&listing(), start, grace);
        let empty = Listing {
            runtime: "containerd".into(),
            ..Listing::default()
        };
        cri.update(&empty, start + Duration::from_secs(30), grace);
        assert!(
            cri.names(Some("c1"), None).is_some(),
            "within the grace period"
        );
        let generation = cri.generation();
        cri.update(&empty, start + Duration::from_secs(61), grace);
        assert!(cri.names(Some("c1"), None).is_none());
        assert!(cri.names(None, Some("uid-1")).is_none());
        assert!(cri.generation() > generation);
    }

    #[test]
    fn failures_count_and_keep_the_names() {
        let cri = Cri::default();
        cri.update(&listing(), Instant::now(), Duration::from_secs(60));
        cri.failed();
        cri.failed();
        assert_eq!(
            cri.health(),
            CriHealth {
                up: Some(false),
                errors: 2
            }
        );
        assert!(cri.names(Some("c1"), None).is_some());
    }

    #[tokio::test]
    async fn a_runtime_that_never_answers_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("slow.sock");
        // Accepts connections, never speaks.
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let started = Instant::now();
        let result = Client::connect(&path, Duration::from_millis(300)).await;
        hold.abort();
        let err = result.err().expect("no answer");
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_socket_nobody_serves_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("containerd.sock");
        let err = Client::connect(&path, Duration::from_millis(500))
            .await
            .err()
            .expect("no runtime there");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
