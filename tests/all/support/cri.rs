//! The kubelet's side of the Container Runtime Interface, played against a
//! private containerd 1.7 with its CRI plugin ([`CriNode`]), through berth's
//! CRI client (`berth_bench::cri`, the one `berth bench containerd --cri`
//! uses), wrapped here in blocking calls ([`Cri`]) for the synchronous tests.
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
//! That config, its files and the clean-up are the bench's private node's
//! ([`berth_bench::private_node`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_bench::cri::CriClient;
pub use berth_bench::cri::{
    BERTH_HANDLER, CONTAINER_EXITED, CONTAINER_RUNNING, ContainerConfig, ContainerStatus,
    K8S_NAMESPACE, PodSandboxConfig, PodSandboxStatusResponse, SANDBOX_NOTREADY, SANDBOX_READY,
    VersionResponse,
};
use berth_bench::private_node::{self as node, CniNetwork};
use tempfile::TempDir;

use crate::support::containerd::{Containerd, Version};
use crate::support::image::{Image, ImageExt as _};
use crate::support::registry::Registry;

/// Bound on the CRI plugin answering `Version` after containerd starts.
const CRI_READY: Duration = Duration::from_secs(30);

/// [`CriClient`] with blocking calls (the tests are synchronous); each call
/// is bounded by the client's `CALL_TIMEOUT`.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: CriClient,
}

impl Cri {
    /// Connects to the unix socket `socket`.
    pub fn connect(socket: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = rt
            .block_on(CriClient::connect(socket))
            .unwrap_or_else(|e| panic!("{e:#}"));
        Self { rt, client }
    }

    /// `RuntimeService/Version`.
    pub fn version(&self) -> Result<VersionResponse, String> {
        self.rt
            .block_on(self.client.version())
            .map_err(|e| format!("{e:#}"))
    }

    /// `RuntimeService/RunPodSandbox`: the pod's id.
    pub fn run_pod_sandbox(
        &self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, String> {
        self.rt
            .block_on(self.client.run_pod_sandbox(config, handler))
            .map_err(|e| format!("{e:#}"))
    }

    /// `RuntimeService/PodSandboxStatus`, verbose (containerd's `info`).
    pub fn pod_sandbox_status(&self, id: &str) -> PodSandboxStatusResponse {
        ok(self.rt.block_on(self.client.pod_sandbox_status(id, true)))
    }

    /// `RuntimeService/StopPodSandbox`.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), String> {
        self.rt
            .block_on(self.client.stop_pod_sandbox(id))
            .map_err(|e| format!("{e:#}"))
    }

    /// `RuntimeService/RemovePodSandbox`.
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), String> {
        self.rt
            .block_on(self.client.remove_pod_sandbox(id))
            .map_err(|e| format!("{e:#}"))
    }

    /// `ImageService/PullImage` in the pod's context: the image's ref.
    pub fn pull_image(&self, image: &str, sandbox: &PodSandboxConfig) -> String {
        ok(self.rt.block_on(self.client.pull_image(image, sandbox)))
    }

    /// `RuntimeService/CreateContainer`: the container's id.
    pub fn create_container(
        &self,
        pod: &str,
        config: ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> String {
        ok(self
            .rt
            .block_on(self.client.create_container(pod, config, sandbox)))
    }

    /// `RuntimeService/StartContainer`.
    pub fn start_container(&self, id: &str) {
        ok(self.rt.block_on(self.client.start_container(id)));
    }

    /// `RuntimeService/StopContainer` with a grace period of `grace`
    /// seconds (SIGTERM, then SIGKILL after it).
    pub fn stop_container(&self, id: &str, grace: i64) {
        ok(self.rt.block_on(self.client.stop_container(id, grace)));
    }

    /// `RuntimeService/RemoveContainer`.
    pub fn remove_container(&self, id: &str) {
        ok(self.rt.block_on(self.client.remove_container(id)));
    }

    /// `RuntimeService/ContainerStatus`.
    pub fn container_status(&self, id: &str) -> ContainerStatus {
        ok(self.rt.block_on(self.client.container_status(id)))
    }

    /// `RuntimeService/ListPodSandbox`, unfiltered: the ids.
    pub fn list_pod_sandboxes(&self) -> Vec<String> {
        ok(self.rt.block_on(self.client.list_pod_sandboxes()))
    }

    /// `RuntimeService/ListContainers`, unfiltered: the ids.
    pub fn list_containers(&self) -> Vec<String> {
        ok(self.rt.block_on(self.client.list_containers()))
    }
}

/// The value, or a panic with the error's chain.
fn ok<T>(result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

/// A pod as the kubelet describes it ([`berth_bench::cri::pod_config`]),
/// its log directory made under `logs`, as the kubelet makes it.
pub fn pod_config(logs: &Path, name: &str) -> PodSandboxConfig {
    let uid = format!("{name}-{}", std::process::id());
    let log_directory = logs.join(format!("default_{name}_{uid}"));
    std::fs::create_dir_all(&log_directory).expect("pod log directory");
    berth_bench::cri::pod_config(name, &uid, &log_directory)
}

/// A container as the kubelet describes it
/// ([`berth_bench::cri::container_config`]), its log directory made.
pub fn container_config(
    pod: &PodSandboxConfig,
    name: &str,
    image: &str,
    env: &[(&str, &str)],
) -> ContainerConfig {
    std::fs::create_dir_all(Path::new(&pod.log_directory).join(name))
        .expect("container log directory");
    berth_bench::cri::container_config(name, image, env, &[])
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
        // What the pod's sandbox runs under runc: busybox's `sleep`
        // (containerd stops a sandbox with SIGKILL).
        let sandbox_image = registry.reference("pause:v1");
        Image::pause()
            .unwrap_or_else(|e| panic!("{e:#}"))
            .push(&sandbox_image);

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
        let cni = CniNetwork {
            name: network.clone(),
            bridge: bridge.clone(),
            subnet: subnet.clone(),
        };
        // CNI's conflist and IP allocations, the registry's plain-HTTP
        // hosts.toml, under the node's directory; the snippet users add
        // (deploy/kubernetes) merged in as it is.
        let config = node::cri_config(dir.path(), &cni, &sandbox_image, &registry.host())
            .unwrap_or_else(|e| panic!("{e:#}"));
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
        let _ = self.cri.rt.block_on(self.cri.client.remove_all_pods());
        let _ = self.cd.stop();
        node::delete_link(&self.bridge);
    }
}
