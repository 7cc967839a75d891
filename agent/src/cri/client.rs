//! A CRI `RuntimeService` client over the runtime's unix socket: the same
//! three calls the kubelet's pod listing makes (`Version`, `ListPodSandbox`,
//! `ListContainers`), each with a deadline.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ListContainersRequest, ListPodSandboxRequest, VersionRequest,
    runtime_service_client::RuntimeServiceClient,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("connecting to the container runtime at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("CRI {call} on {path}: {status}")]
    Call {
        call: &'static str,
        path: PathBuf,
        status: Box<tonic::Status>,
    },
    #[error("CRI {call} on {path} took longer than {timeout:?}")]
    Timeout {
        call: &'static str,
        path: PathBuf,
        timeout: Duration,
    },
}

/// A pod as the runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub uid: String,
    pub name: String,
    pub namespace: String,
}

/// A container as the runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub image: String,
}

/// Everything one refresh learns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// `containerd`, `cri-o`, … from `Version`.
    pub runtime: String,
    pub sandboxes: Vec<Sandbox>,
    pub containers: Vec<Container>,
}

pub struct Client {
    path: PathBuf,
    timeout: Duration,
    runtime: String,
    service: RuntimeServiceClient<Channel>,
}

impl Client {
    /// Connects to the socket at `path` and asks the runtime its name.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, CriError> {
        let socket = path.to_owned();
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
            }))
            .await
            .map_err(|source| CriError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let mut client = Self {
            path: path.to_owned(),
            timeout,
            runtime: String::new(),
            service: RuntimeServiceClient::new(channel),
        };
        let version = client
            .call("Version", |mut s| async move {
                s.version(VersionRequest::default()).await
            })
            .await?;
        client.runtime = version.runtime_name;
        Ok(client)
    }

    pub fn runtime(&self) -> &str {
        &self.runtime
    }

    /// Every pod sandbox and container the runtime has.
    pub async fn list(&mut self) -> Result<Listing, CriError> {
        let sandboxes = self
            .call("ListPodSandbox", |mut s| async move {
                s.list_pod_sandbox(ListPodSandboxRequest::default()).await
            })
            .await?
            .items
            .into_iter()
            .filter_map(|item| {
                let meta = item.metadata?;
                Some(Sandbox {
                    id: item.id,
                    uid: meta.uid,
                    name: meta.name,
                    namespace: meta.namespace,
                })
            })
            .collect();
        let containers = self
            .call("ListContainers", |mut s| async move {
                s.list_containers(ListContainersRequest::default()).await
            })
            .await?
            .containers
            .into_iter()
            .filter_map(|c| {
                let name = c.metadata?.name;
                let image = c
                    .image
                    .map(|i| i.image)
                    .filter(|i| !i.is_empty())
                    .unwrap_or(c.image_ref);
                Some(Container {
                    id: c.id,
                    sandbox_id: c.pod_sandbox_id,
                    name,
                    image,
                })
            })
            .collect();
        Ok(Listing {
            runtime: self.runtime.clone(),
            sandboxes,
            containers,
        })
    }

    /// Runs one call with the deadline, naming it in any error.
    async fn call<T, F, Fut>(&mut self, call: &'static str, f: F) -> Result<T, CriError>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let service = self.service.clone();
        match tokio::time::timeout(self.timeout, f(service)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(CriError::Call {
                call,
                path: self.path.clone(),
                status: Box::new(status),
            }),
            Err(_elapsed) => Err(CriError::Timeout {
                call,
                path: self.path.clone(),
                timeout: self.timeout,
            }),
        }
    }
}
