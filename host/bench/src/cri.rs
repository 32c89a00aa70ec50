//! A client of the Container Runtime Interface (`runtime.v1`), the kubelet's
//! side of it: the calls a node's kubelet makes to containerd's CRI plugin
//! to run a pod, used by `berth bench containerd --cri` ([`super::cri_bench`])
//! and by the CRI tests (`tests/all/cri.rs`).
//!
//! The kubelet talks to containerd only through the CRI's gRPC API,
//! `runtime.v1.RuntimeService` and `runtime.v1.ImageService`, on
//! containerd's socket. [`CriClient`] makes those calls with the messages
//! declared below: only the fields berth sends or reads, with the field
//! numbers of `k8s.io/cri-api`'s `pkg/apis/runtime/v1/api.proto` (protobuf
//! skips the others), so the build needs no `protoc`, as the shim's own
//! containerd client (`host/shim/src/content.rs`) does. Every call is
//! bounded by [`CALL_TIMEOUT`].

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tonic::transport::{Channel, Endpoint};

/// The containerd namespace the CRI plugin keeps pods in.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The runtime handler `deploy/kubernetes/runtimeclass.yaml` names.
pub const BERTH_HANDLER: &str = "berth";
/// Bound on each CRI call (`RunPodSandbox` may pull the sandbox image).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `runtime.v1` `PodSandboxState.SANDBOX_READY`.
pub const SANDBOX_READY: i32 = 0;
/// `runtime.v1` `PodSandboxState.SANDBOX_NOTREADY`.
pub const SANDBOX_NOTREADY: i32 = 1;
/// `runtime.v1` `ContainerState.CONTAINER_RUNNING`.
pub const CONTAINER_RUNNING: i32 = 1;
/// `runtime.v1` `ContainerState.CONTAINER_EXITED`.
pub const CONTAINER_EXITED: i32 = 2;
/// `runtime.v1` `NamespaceMode.CONTAINER` (the kubelet's pid namespace).
pub const NAMESPACE_MODE_CONTAINER: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
struct VersionRequest {
    #[prost(string, tag = "1")]
    version: String,
}

/// `VersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

/// `PodSandboxMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `NamespaceOption`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceOption {
    #[prost(int32, tag = "1")]
    pub network: i32,
    #[prost(int32, tag = "2")]
    pub pid: i32,
    #[prost(int32, tag = "3")]
    pub ipc: i32,
}

/// `LinuxSandboxSecurityContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxSandboxSecurityContext {
    #[prost(message, optional, tag = "1")]
    pub namespace_options: Option<NamespaceOption>,
}

/// `LinuxPodSandboxConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxConfig {
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxSandboxSecurityContext>,
}

/// `PodSandboxConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub log_directory: String,
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "7")]
    pub annotations: HashMap<String, String>,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    config: Option<PodSandboxConfig>,
    #[prost(string, tag = "2")]
    runtime_handler: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
}

/// `StopPodSandboxRequest`, `RemovePodSandboxRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct PodSandboxIdRequest {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
struct PodSandboxStatusRequest {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
    #[prost(bool, tag = "2")]
    verbose: bool,
}

/// `PodSandboxNetworkStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxNetworkStatus {
    #[prost(string, tag = "1")]
    pub ip: String,
}

/// `PodSandboxStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(message, optional, tag = "5")]
    pub network: Option<PodSandboxNetworkStatus>,
    #[prost(string, tag = "9")]
    pub runtime_handler: String,
}

/// `PodSandboxStatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
    /// With `verbose`: containerd puts its JSON under `info`.
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

/// `ImageSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PullImageRequest {
    #[prost(message, optional, tag = "1")]
    image: Option<ImageSpec>,
    #[prost(message, optional, tag = "3")]
    sandbox_config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PullImageResponse {
    #[prost(string, tag = "1")]
    image_ref: String,
}

/// `ContainerMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `ContainerConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub envs: Vec<KeyValue>,
    #[prost(map = "string, string", tag = "9")]
    pub labels: HashMap<String, String>,
    #[prost(string, tag = "11")]
    pub log_path: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerRequest {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
    #[prost(message, optional, tag = "2")]
    config: Option<ContainerConfig>,
    #[prost(message, optional, tag = "3")]
    sandbox_config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerResponse {
    #[prost(string, tag = "1")]
    container_id: String,
}

/// `StartContainerRequest`, `RemoveContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct ContainerIdRequest {
    #[prost(string, tag = "1")]
    container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StopContainerRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(int64, tag = "2")]
    timeout: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatusRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(bool, tag = "2")]
    verbose: bool,
}

/// `ContainerStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(int64, tag = "5")]
    pub started_at: i64,
    #[prost(int64, tag = "6")]
    pub finished_at: i64,
    #[prost(int32, tag = "7")]
    pub exit_code: i32,
    #[prost(string, tag = "9")]
    pub image_ref: String,
    #[prost(string, tag = "10")]
    pub reason: String,
    #[prost(string, tag = "11")]
    pub message: String,
    #[prost(string, tag = "15")]
    pub log_path: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatusResponse {
    #[prost(message, optional, tag = "1")]
    status: Option<ContainerStatus>,
}

/// `PodSandbox` (in `ListPodSandboxResponse`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandbox {
    #[prost(string, tag = "1")]
    pub id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListPodSandboxResponse {
    #[prost(message, repeated, tag = "1")]
    items: Vec<PodSandbox>,
}

/// `Container` (in `ListContainersResponse`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListContainersResponse {
    #[prost(message, repeated, tag = "1")]
    containers: Vec<Container>,
}

/// A CRI client on containerd's socket (cheap to clone: one connection).
#[derive(Debug, Clone)]
pub struct CriClient {
    channel: Channel,
}

impl CriClient {
    /// Connects to the unix socket `socket`.
    ///
    /// # Errors
    /// When nothing accepts on `socket` within [`CALL_TIMEOUT`].
    pub async fn connect(socket: &Path) -> anyhow::Result<Self> {
        let path = socket.to_path_buf();
        // The URI is required by the API and not used: the connector
        // decides where the connection goes.
        let channel = Endpoint::from_static("http://containerd.invalid")
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .with_context(|| format!("cannot connect to containerd on {}", socket.display()))?;
        Ok(Self { channel })
    }

    /// One unary call; the error names the method and carries the gRPC
    /// status (`/runtime.v1.RuntimeService/X: Code: message`).
    async fn call<Req, Resp>(&self, path: &'static str, message: Req) -> anyhow::Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        let mut req = tonic::Request::new(message);
        req.set_timeout(CALL_TIMEOUT);
        grpc.unary(
            req,
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::<Req, Resp>::default(),
        )
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow::anyhow!("{path}: {:?}: {}", s.code(), s.message()))
    }

    /// `RuntimeService/Version`.
    ///
    /// # Errors
    /// The call's error (so for every method below).
    pub async fn version(&self) -> anyhow::Result<VersionResponse> {
        self.call(
            "/runtime.v1.RuntimeService/Version",
            VersionRequest {
                version: "v1".into(),
            },
        )
        .await
    }

    /// `RuntimeService/RunPodSandbox`: the pod's id.
    ///
    /// # Errors
    /// The call's error.
    pub async fn run_pod_sandbox(
        &self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> anyhow::Result<String> {
        self.call::<_, RunPodSandboxResponse>(
            "/runtime.v1.RuntimeService/RunPodSandbox",
            RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            },
        )
        .await
        .map(|r| r.pod_sandbox_id)
    }

    /// `RuntimeService/PodSandboxStatus`; `verbose` adds containerd's
    /// `info` JSON.
    ///
    /// # Errors
    /// The call's error.
    pub async fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> anyhow::Result<PodSandboxStatusResponse> {
        self.call(
            "/runtime.v1.RuntimeService/PodSandboxStatus",
            PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose,
            },
        )
        .await
    }

    /// `RuntimeService/StopPodSandbox`.
    ///
    /// # Errors
    /// The call's error.
    pub async fn stop_pod_sandbox(&self, id: &str) -> anyhow::Result<()> {
        self.call::<_, Empty>(
            "/runtime.v1.RuntimeService/StopPodSandbox",
            PodSandboxIdRequest {
                pod_sandbox_id: id.into(),
            },
        )
        .await
        .map(drop)
    }

    /// `RuntimeService/RemovePodSandbox`.
    ///
    /// # Errors
    /// The call's error.
    pub async fn remove_pod_sandbox(&self, id: &str) -> anyhow::Result<()> {
        self.call::<_, Empty>(
            "/runtime.v1.RuntimeService/RemovePodSandbox",
            PodSandboxIdRequest {
                pod_sandbox_id: id.into(),
            },
        )
        .await
        .map(drop)
    }

    /// `ImageService/PullImage` in the pod's context: the image's ref.
    ///
    /// # Errors
    /// The call's error.
    pub async fn pull_image(
        &self,
        image: &str,
        sandbox: &PodSandboxConfig,
    ) -> anyhow::Result<String> {
        self.call::<_, PullImageResponse>(
            "/runtime.v1.ImageService/PullImage",
            PullImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                }),
                sandbox_config: Some(sandbox.clone()),
            },
        )
        .await
        .map(|r| r.image_ref)
    }

    /// `RuntimeService/CreateContainer`: the container's id.
    ///
    /// # Errors
    /// The call's error.
    pub async fn create_container(
        &self,
        pod: &str,
        config: ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> anyhow::Result<String> {
        self.call::<_, CreateContainerResponse>(
            "/runtime.v1.RuntimeService/CreateContainer",
            CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            },
        )
        .await
        .map(|r| r.container_id)
    }

    /// `RuntimeService/StartContainer`.
    ///
    /// # Errors
    /// The call's error.
    pub async fn start_container(&self, id: &str) -> anyhow::Result<()> {
        self.call::<_, Empty>(
            "/runtime.v1.RuntimeService/StartContainer",
            ContainerIdRequest {
                container_id: id.into(),
            },
        )
        .await
        .map(drop)
    }

    /// `RuntimeService/StopContainer` with a grace period of `grace`
    /// seconds (SIGTERM, then SIGKILL after it; 0: SIGKILL at once).
    ///
    /// # Errors
    /// The call's error.
    pub async fn stop_container(&self, id: &str, grace: i64) -> anyhow::Result<()> {
        self.call::<_, Empty>(
            "/runtime.v1.RuntimeService/StopContainer",
            StopContainerRequest {
                container_id: id.into(),
                timeout: grace,
            },
        )
        .await
        .map(drop)
    }

    /// `RuntimeService/RemoveContainer`.
    ///
    /// # Errors
    /// The call's error.
    pub async fn remove_container(&self, id: &str) -> anyhow::Result<()> {
        self.call::<_, Empty>(
            "/runtime.v1.RuntimeService/RemoveContainer",
            ContainerIdRequest {
                container_id: id.into(),
            },
        )
        .await
        .map(drop)
    }

    /// `RuntimeService/ContainerStatus`.
    ///
    /// # Errors
    /// The call's error, or an answer without a status.
    pub async fn container_status(&self, id: &str) -> anyhow::Result<ContainerStatus> {
        let resp: ContainerStatusResponse = self
            .call(
                "/runtime.v1.RuntimeService/ContainerStatus",
                ContainerStatusRequest {
                    container_id: id.into(),
                    verbose: false,
                },
            )
            .await?;
        resp.status
            .with_context(|| format!("ContainerStatus of {id} without a status"))
    }

    /// `RuntimeService/ListPodSandbox`, unfiltered: the ids.
    ///
    /// # Errors
    /// The call's error.
    pub async fn list_pod_sandboxes(&self) -> anyhow::Result<Vec<String>> {
        let resp: ListPodSandboxResponse = self
            .call("/runtime.v1.RuntimeService/ListPodSandbox", Empty {})
            .await?;
        Ok(resp.items.into_iter().map(|p| p.id).collect())
    }

    /// Every pod stopped and removed, as an operator draining a node does
    /// (CNI releases their addresses): the ids of those there were. A
    /// pod's failure is ignored (the others are still removed).
    ///
    /// # Errors
    /// When the pods cannot be listed.
    pub async fn remove_all_pods(&self) -> anyhow::Result<Vec<String>> {
        let pods = self.list_pod_sandboxes().await?;
        for pod in &pods {
            let _ = self.stop_pod_sandbox(pod).await;
            let _ = self.remove_pod_sandbox(pod).await;
        }
        Ok(pods)
    }

    /// `RuntimeService/ListContainers`, unfiltered: the ids.
    ///
    /// # Errors
    /// The call's error.
    pub async fn list_containers(&self) -> anyhow::Result<Vec<String>> {
        let resp: ListContainersResponse = self
            .call("/runtime.v1.RuntimeService/ListContainers", Empty {})
            .await?;
        Ok(resp.containers.into_iter().map(|c| c.id).collect())
    }
}

/// A pod as the kubelet describes it to the runtime: metadata (namespace
/// `default`), hostname, the pod's log directory (the kubelet's
/// `<logs>/<namespace>_<name>_<uid>`, which the caller creates), and the
/// kubelet's namespace options (the pod's network and IPC, the container's
/// own pid namespace).
pub fn pod_config(name: &str, uid: &str, log_directory: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_directory.display().to_string(),
        labels: HashMap::from([("app".into(), name.into())]),
        annotations: HashMap::new(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: 0,
                    pid: NAMESPACE_MODE_CONTAINER,
                    ipc: 0,
                }),
            }),
        }),
    }
}

/// A container as the kubelet describes it: its name, image, environment,
/// command (empty: the image's) and log path `<name>/0.log` under the pod's
/// log directory (the kubelet's `<container>/<restart>.log`, whose
/// directory the caller creates).
pub fn container_config(
    name: &str,
    image: &str,
    env: &[(&str, &str)],
    command: &[&str],
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
        }),
        command: command.iter().map(|c| (*c).to_string()).collect(),
        args: Vec::new(),
        envs: env
            .iter()
            .map(|(k, v)| KeyValue {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        labels: HashMap::from([("container".into(), name.into())]),
        log_path: format!("{name}/0.log"),
    }
}

/// The CNI network a test or bench node gives its pods: one `bridge` plugin
/// (the gateway on `bridge`, no masquerade) with `host-local` addresses
/// from `subnet`, kept under `ipam_dir`.
pub fn bridge_conflist(
    network: &str,
    bridge: &str,
    subnet: &str,
    ipam_dir: &Path,
) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": subnet }]],
                "dataDir": ipam_dir.display().to_string(),
            },
        }],
    })
}
