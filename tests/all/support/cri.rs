//! The kubelet's side of the Container Runtime Interface, played against a
//! private containerd 1.7 with its CRI plugin ([`CriNode`]), through a CRI
//! client of our own ([`Cri`]).
//!
//! The kubelet talks to containerd only through the CRI's gRPC API,
//! `runtime.v1.RuntimeService` and `runtime.v1.ImageService`, on
//! containerd's socket. [`Cri`] makes those calls with the messages
//! declared below: only the fields the tests send or read, with the field
//! numbers of `k8s.io/cri-api`'s `pkg/apis/runtime/v1/api.proto` (protobuf
//! skips the others), so the build needs no `protoc`, as the shim's own
//! containerd client (`host/shim/src/content.rs`) does.
//!
//! A [`CriNode`] is what a Kubernetes node is to the kubelet: a containerd
//! whose config holds the default `runc` runtime, the `berth` runtime read
//! from `deploy/kubernetes/containerd-config.toml` (the snippet users add,
//! not a copy of it), a `sandbox_image` pushed to the test's registry, the
//! registry's plain-HTTP `hosts.toml`, and CNI (Debian's
//! `containernetworking-plugins`: `bridge` + `host-local`) on a bridge and a
//! `/24` of its own, whose IP allocations are kept in its own directory.
//! Pod network namespaces are mounted under containerd's state directory
//! (`netns_mounts_under_state_dir`). Dropping the node removes what pods
//! are left through the CRI, stops containerd and deletes the bridge.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

use crate::support::containerd::{Containerd, Version, merge_tables};
use crate::support::image::{Image, busybox_base};
use crate::support::registry::Registry;

/// The containerd namespace the CRI plugin keeps pods in.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The runtime handler `deploy/kubernetes/runtimeclass.yaml` names.
pub const BERTH_HANDLER: &str = "berth";
/// Bound on each CRI call (`RunPodSandbox` pulls the sandbox image).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the CRI plugin answering `Version` after containerd starts.
const CRI_READY: Duration = Duration::from_secs(30);
/// The snippet users add to containerd's config, read by every node.
pub const CONFIG_SNIPPET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/kubernetes/containerd-config.toml"
);

/// `runtime.v1` `PodSandboxState.SANDBOX_READY`.
pub const SANDBOX_READY: i32 = 0;
/// `runtime.v1` `PodSandboxState.SANDBOX_NOTREADY`.
pub const SANDBOX_NOTREADY: i32 = 1;
/// `runtime.v1` `ContainerState.CONTAINER_RUNNING`.
pub const CONTAINER_RUNNING: i32 = 1;
/// `runtime.v1` `ContainerState.CONTAINER_EXITED`.
pub const CONTAINER_EXITED: i32 = 2;
/// `runtime.v1` `NamespaceMode.CONTAINER` (the kubelet's pid namespace).
const NAMESPACE_MODE_CONTAINER: i32 = 1;

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

/// A CRI client on containerd's socket; its calls block (the tests are
/// synchronous), each bounded by [`CALL_TIMEOUT`].
pub struct Cri {
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

impl Cri {
    /// Connects to the unix socket `socket`.
    pub fn connect(socket: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let path = socket.to_path_buf();
        // The URI is required by the API and not used: the connector
        // decides where the connection goes.
        let channel = rt
            .block_on(
                Endpoint::from_static("http://containerd.invalid")
                    .connect_timeout(CALL_TIMEOUT)
                    .timeout(CALL_TIMEOUT)
                    .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    })),
            )
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()));
        Self { rt, channel }
    }

    /// One unary call: `Err` carries the gRPC status as text.
    fn call<Req, Resp>(&self, path: &'static str, message: Req) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.rt.block_on(async {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone());
            grpc.ready().await.map_err(|e| format!("{path}: {e}"))?;
            let mut req = tonic::Request::new(message);
            req.set_timeout(CALL_TIMEOUT);
            grpc.unary(
                req,
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::<Req, Resp>::default(),
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("{path}: {:?}: {}", s.code(), s.message()))
        })
    }

    /// [`call`](Self::call), panicking on an error.
    fn ok<Req, Resp>(&self, path: &'static str, message: Req) -> Resp
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.call(path, message).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `RuntimeService/Version`.
    pub fn version(&self) -> Result<VersionResponse, String> {
        self.call(
            "/runtime.v1.RuntimeService/Version",
            VersionRequest {
                version: "v1".into(),
            },
        )
    }

    /// `RuntimeService/RunPodSandbox`: the pod's id.
    pub fn run_pod_sandbox(
        &self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, String> {
        self.call::<_, RunPodSandboxResponse>(
            "/runtime.v1.RuntimeService/RunPodSandbox",
            RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            },
        )
        .map(|r| r.pod_sandbox_id)
    }

    /// `RuntimeService/PodSandboxStatus`, verbose (containerd's `info`).
    pub fn pod_sandbox_status(&self, id: &str) -> PodSandboxStatusResponse {
        self.ok(
            "/runtime.v1.RuntimeService/PodSandboxStatus",
            PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            },
        )
    }

    /// `RuntimeService/StopPodSandbox`.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), String> {
        self.call::<_, Empty>(
            "/runtime.v1.RuntimeService/StopPodSandbox",
            PodSandboxIdRequest {
                pod_sandbox_id: id.into(),
            },
        )
        .map(drop)
    }

    /// `RuntimeService/RemovePodSandbox`.
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), String> {
        self.call::<_, Empty>(
            "/runtime.v1.RuntimeService/RemovePodSandbox",
            PodSandboxIdRequest {
                pod_sandbox_id: id.into(),
            },
        )
        .map(drop)
    }

    /// `ImageService/PullImage` in the pod's context: the image's ref.
    pub fn pull_image(&self, image: &str, sandbox: &PodSandboxConfig) -> String {
        let resp: PullImageResponse = self.ok(
            "/runtime.v1.ImageService/PullImage",
            PullImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                }),
                sandbox_config: Some(sandbox.clone()),
            },
        );
        resp.image_ref
    }

    /// `RuntimeService/CreateContainer`: the container's id.
    pub fn create_container(
        &self,
        pod: &str,
        config: ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> String {
        let resp: CreateContainerResponse = self.ok(
            "/runtime.v1.RuntimeService/CreateContainer",
            CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            },
        );
        resp.container_id
    }

    /// `RuntimeService/StartContainer`.
    pub fn start_container(&self, id: &str) {
        self.ok::<_, Empty>(
            "/runtime.v1.RuntimeService/StartContainer",
            ContainerIdRequest {
                container_id: id.into(),
            },
        );
    }

    /// `RuntimeService/StopContainer` with a grace period of `grace`
    /// seconds (SIGTERM, then SIGKILL after it).
    pub fn stop_container(&self, id: &str, grace: i64) {
        self.ok::<_, Empty>(
            "/runtime.v1.RuntimeService/StopContainer",
            StopContainerRequest {
                container_id: id.into(),
                timeout: grace,
            },
        );
    }

    /// `RuntimeService/RemoveContainer`.
    pub fn remove_container(&self, id: &str) {
        self.ok::<_, Empty>(
            "/runtime.v1.RuntimeService/RemoveContainer",
            ContainerIdRequest {
                container_id: id.into(),
            },
        );
    }

    /// `RuntimeService/ContainerStatus`.
    pub fn container_status(&self, id: &str) -> ContainerStatus {
        let resp: ContainerStatusResponse = self.ok(
            "/runtime.v1.RuntimeService/ContainerStatus",
            ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            },
        );
        resp.status.expect("ContainerStatus without a status")
    }

    /// `RuntimeService/ListPodSandbox`, unfiltered: the ids.
    pub fn list_pod_sandboxes(&self) -> Vec<String> {
        let resp: ListPodSandboxResponse =
            self.ok("/runtime.v1.RuntimeService/ListPodSandbox", Empty {});
        resp.items.into_iter().map(|p| p.id).collect()
    }

    /// `RuntimeService/ListContainers`, unfiltered: the ids.
    pub fn list_containers(&self) -> Vec<String> {
        let resp: ListContainersResponse =
            self.ok("/runtime.v1.RuntimeService/ListContainers", Empty {});
        resp.containers.into_iter().map(|c| c.id).collect()
    }
}

/// A pod as the kubelet describes it to the runtime: metadata, hostname,
/// the pod's log directory (`<logs>/<namespace>_<name>_<uid>`, which the
/// kubelet creates), and the kubelet's namespace options (the pod's
/// network and IPC, the container's own pid namespace).
pub fn pod_config(logs: &Path, name: &str) -> PodSandboxConfig {
    let uid = format!("{name}-{}", std::process::id());
    let log_directory = logs.join(format!("default_{name}_{uid}"));
    std::fs::create_dir_all(&log_directory).expect("pod log directory");
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid,
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

/// A container as the kubelet describes it: its name, image, environment
/// and log path `<name>/0.log` (the kubelet's `<container>/<restart>.log`,
/// its directory made by the kubelet).
pub fn container_config(
    pod: &PodSandboxConfig,
    name: &str,
    image: &str,
    env: &[(&str, &str)],
) -> ContainerConfig {
    std::fs::create_dir_all(Path::new(&pod.log_directory).join(name))
        .expect("container log directory");
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
        }),
        command: Vec::new(),
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

/// What the pod's sandbox runs under runc: busybox's `sleep`, the
/// smallest "pause" the test can build (containerd stops a sandbox with
/// SIGKILL).
pub fn pause_image() -> Image {
    Image {
        layers: vec![busybox_base()],
        raw_layers: Vec::new(),
        entrypoint: vec!["/bin/sleep".into()],
        cmd: vec!["2147483647".into()],
        env: vec!["PATH=/bin".into()],
        user: None,
        working_dir: "/".into(),
    }
}

/// A Kubernetes node to the kubelet: containerd 1.7 with CRI and CNI (see
/// the module's doc). Dropping it removes what is left.
pub struct CriNode {
    /// The daemon.
    pub cd: Containerd,
    /// The kubelet's client.
    pub cri: Cri,
    /// The bridge CNI attaches pods to (made by the `bridge` plugin).
    pub bridge: String,
    /// The pods' `/24`.
    pub subnet: String,
    /// The CNI network's name.
    pub network: String,
    /// CNI config, IP allocations, registry hosts, pod logs.
    dir: TempDir,
}

impl CriNode {
    /// Starts containerd 1.7.24 with the CRI plugin, its sandbox image
    /// pushed to `registry` first.
    pub fn start(registry: &Registry) -> Self {
        let sandbox_image = registry.reference("pause:v1");
        pause_image().push(&sandbox_image);

        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let bridge = format!("bcri{:x}-{n}", pid % 0xffff);
        let slot = (pid.wrapping_mul(31).wrapping_add(n)) % 256;
        let subnet = format!("10.231.{slot}.0/24");
        let network = format!("berth-cri-{pid}-{n}");

        let dir = tempfile::Builder::new()
            .prefix("berth-cri-")
            .tempdir()
            .expect("node dir");
        let d = dir.path();
        let conf_dir = d.join("net.d");
        std::fs::create_dir_all(&conf_dir).expect("CNI conf dir");
        let conflist = serde_json::json!({
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
                    "dataDir": d.join("ipam").display().to_string(),
                },
            }],
        });
        std::fs::write(
            conf_dir.join("10-berth-test.conflist"),
            serde_json::to_vec_pretty(&conflist).unwrap(),
        )
        .expect("CNI conflist");
        // The registry speaks plain HTTP: containerd's hosts.toml says so.
        let hosts = d.join("certs.d").join(registry.host());
        std::fs::create_dir_all(&hosts).expect("certs.d");
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"http://{host}\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                host = registry.host()
            ),
        )
        .expect("hosts.toml");

        // `restrict_oom_score_adj`: this VM refuses to lower a process's
        // oom_score_adj (EIO, even as root), and the CRI asks runc for
        // -998 on a sandbox; restricted, it asks for no less than
        // containerd's own, as on rootless nodes.
        let mut config: toml::Table = format!(
            "[plugins.\"io.containerd.grpc.v1.cri\"]\n\
             sandbox_image = \"{sandbox_image}\"\n\
             stream_server_address = \"127.0.0.1\"\n\
             stream_server_port = \"0\"\n\
             netns_mounts_under_state_dir = true\n\
             restrict_oom_score_adj = true\n\
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
             bin_dir = \"/usr/lib/cni\"\n\
             conf_dir = \"{conf_dir}\"\n\
             max_conf_num = 1\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n\
             default_runtime_name = \"runc\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
             runtime_type = \"io.containerd.runc.v2\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".registry]\n\
             config_path = \"{certs}\"\n",
            conf_dir = conf_dir.display(),
            certs = d.join("certs.d").display(),
        )
        .parse()
        .expect("the CRI config is TOML");
        // The snippet users add (deploy/kubernetes), as it is: its `version`
        // is the base config's, its tables go in whole.
        let snippet = std::fs::read_to_string(CONFIG_SNIPPET).expect("read the config snippet");
        let mut snippet: toml::Table = snippet
            .parse()
            .unwrap_or_else(|e| panic!("{CONFIG_SNIPPET} is not TOML: {e}"));
        assert_eq!(
            snippet.remove("version").and_then(|v| v.as_integer()),
            Some(2),
            "{CONFIG_SNIPPET} is for config version 2"
        );
        merge_tables(&mut config, snippet);

        let cd = Containerd::start_with_cri(Version::V1_7, config);
        let cri = Cri::connect(&cd.socket);
        let deadline = Instant::now() + CRI_READY;
        loop {
            match cri.version() {
                Ok(v) => {
                    assert_eq!(v.runtime_name, "containerd");
                    break;
                }
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "the CRI plugin did not answer within {CRI_READY:?} (CRI_READY): {e}; log:\n{}",
                    cd.log_text()
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            cd,
            cri,
            bridge,
            subnet,
            network,
            dir,
        }
    }

    /// Where pods' log directories go.
    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    /// The IPs `host-local` holds for pods now (one file per address).
    pub fn ip_allocations(&self) -> Vec<String> {
        crate::support::dir_names(&self.dir.path().join("ipam").join(&self.network))
            .into_iter()
            .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// Interfaces still attached to the bridge (each pod's veth).
    pub fn bridge_ports(&self) -> Vec<String> {
        crate::support::dir_names(&Path::new("/sys/class/net").join(&self.bridge).join("brif"))
    }
}

impl Drop for CriNode {
    fn drop(&mut self) {
        // As an operator draining the node: every pod stopped and removed
        // (CNI releases its address), then the daemon.
        for pod in self
            .cri
            .call::<_, ListPodSandboxResponse>(
                "/runtime.v1.RuntimeService/ListPodSandbox",
                Empty {},
            )
            .map(|r| r.items)
            .unwrap_or_default()
        {
            let _ = self.cri.stop_pod_sandbox(&pod.id);
            let _ = self.cri.remove_pod_sandbox(&pod.id);
        }
        let _ = self.cd.stop();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
