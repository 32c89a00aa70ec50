//! Pods through the Container Runtime Interface, made exactly as the
//! kubelet makes them: containerd 1.7.24 with its CRI plugin, the `berth`
//! runtime handler from `deploy/kubernetes/containerd-config.toml` beside
//! the default `runc`, CNI `bridge` + `host-local`, and the test's own CRI
//! client ([`crate::support::cri`]). A `RuntimeClass` named `berth` makes
//! the kubelet send `runtime_handler = "berth"`; that is the whole
//! difference between a Wasm pod and a container pod, on the node.
//!
//! The pods' addresses are in the test's CNI subnet on the test's bridge;
//! the host reaches them there, and nothing else is contacted.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::shim::push_image;
use crate::support::containerd::{Version, curl, shim_binary};
use crate::support::cri::{
    BERTH_HANDLER, CONTAINER_EXITED, CONTAINER_RUNNING, CriNode, K8S_NAMESPACE, PodSandboxConfig,
    SANDBOX_NOTREADY, SANDBOX_READY, container_config, pod_config,
};
use crate::support::image::{Image, ImageExt as _};
use crate::support::registry::Registry;

/// Bound on a container answering its first request after `StartContainer`.
const FIRST_ANSWER: Duration = Duration::from_secs(60);
/// `StopContainer`'s grace period for berth's containers, in seconds: they
/// drain on SIGTERM well within it.
const BERTH_GRACE: i64 = 10;
/// `StopContainer`'s grace period for the busybox httpd, in seconds (as
/// pid 1 it ignores SIGTERM; SIGKILL follows the grace period).
const RUNC_GRACE: i64 = 1;
/// Bound on the node being clean (shims gone) after the last removal.
const CLEAN: Duration = Duration::from_secs(20);
/// Bound on a log line reaching the CRI log file.
const LOG_LINE: Duration = Duration::from_secs(10);

/// A pod made by `RunPodSandbox`: its id, its config (the kubelet passes
/// it again on every call), the IP `PodSandboxStatus` reports, and its
/// network namespace (from containerd's verbose status).
struct Pod {
    id: String,
    config: PodSandboxConfig,
    ip: String,
    netns: PathBuf,
}

impl Pod {
    /// `RunPodSandbox` with `handler` ("" for the node's default, runc),
    /// then `PodSandboxStatus`.
    fn run(node: &CriNode, name: &str, handler: &str) -> Self {
        let config = pod_config(&node.logs(), name);
        let id = node
            .cri
            .run_pod_sandbox(&config, handler)
            .unwrap_or_else(|e| panic!("{e}; containerd's log:\n{}", node.cd.log_text()));
        let status = node.cri.pod_sandbox_status(&id);
        let s = status
            .status
            .as_ref()
            .expect("PodSandboxStatus without a status");
        assert_eq!(s.state, SANDBOX_READY, "pod {name}");
        assert_eq!(s.runtime_handler, handler, "pod {name}");
        let ip = s.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
        let prefix = node.subnet.trim_end_matches("0/24");
        assert!(
            ip.starts_with(prefix),
            "pod {name}: IP {ip:?} is not in the node's CNI subnet {}",
            node.subnet
        );
        let info: serde_json::Value = serde_json::from_str(
            status
                .info
                .get("info")
                .expect("verbose PodSandboxStatus has containerd's info"),
        )
        .expect("containerd's info is JSON");
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .and_then(|all| all.iter().find(|ns| ns["type"] == "network"))
            .and_then(|ns| ns["path"].as_str())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("pod {name}: no network namespace in {info}"));
        assert!(netns.exists(), "{}", netns.display());
        Self {
            id,
            config,
            ip,
            netns,
        }
    }

    /// `PullImage`, `CreateContainer` and `StartContainer` of `image` as
    /// container `name` with `env`: the container's id.
    fn start(
        &self,
        node: &CriNode,
        name: &str,
        image: &str,
        env: &[(&str, &str)],
        command: &[&str],
    ) -> String {
        let image_ref = node.cri.pull_image(image, &self.config);
        assert!(image_ref.starts_with("sha256:"), "{image_ref}");
        let mut config = container_config(&self.config, name, image, env);
        config.command = command.iter().map(|c| (*c).to_string()).collect();
        let id = node.cri.create_container(&self.id, config, &self.config);
        node.cri.start_container(&id);
        id
    }

    /// `http://IP:PORT/`.
    fn url(&self, port: u16) -> String {
        format!("http://{}:{port}/", self.ip)
    }
}

/// An HTTP server on an address of the test's bridge that answers every
/// request with the peer's IP address; stopped on drop.
struct PeerEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeerEcho {
    /// Bound on the server's life, whatever the test does.
    const LIFE: Duration = Duration::from_secs(120);

    fn start(ip: IpAddr) -> Self {
        let listener = TcpListener::bind((ip, 0)).expect("bind on the bridge's gateway");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) && start.elapsed() < Self::LIFE {
                let Ok((mut conn, peer)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = peer.ip().to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PeerEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `url` from the host until it answers; panics naming `what`.
fn wait_answer(what: &str, url: &str) -> (u16, String) {
    let start = Instant::now();
    loop {
        if let Some(answer) = curl(None, url, Duration::from_secs(2)) {
            return answer;
        }
        assert!(
            start.elapsed() < FIRST_ANSWER,
            "{what} did not answer on {url} within {FIRST_ANSWER:?} (FIRST_ANSWER)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lines of a CRI log file (what `kubectl logs` reads), each split
/// into (stream, tag, content) after checking its timestamp: the format
/// is `<RFC 3339 nanoseconds> <stdout|stderr> <F|P> <content>`.
fn cri_log(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (time, stream, tag) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            assert!(
                time.len() > 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
                "not a CRI log timestamp in {line:?}"
            );
            assert!(
                matches!(stream, "stdout" | "stderr") && matches!(tag, "F" | "P"),
                "not a CRI log line: {line:?}"
            );
            (
                stream.to_string(),
                tag.to_string(),
                parts.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until the CRI log at `path` holds `want` (stream, content) as
/// full lines.
fn wait_log(path: &Path, want: &[(&str, &str)]) {
    let start = Instant::now();
    loop {
        let lines = cri_log(path);
        let has = |(stream, content): &(&str, &str)| {
            lines
                .iter()
                .any(|(s, t, c)| s == stream && t == "F" && c == content)
        };
        if want.iter().all(has) {
            return;
        }
        assert!(
            start.elapsed() < LOG_LINE,
            "{} does not hold {want:?} within {LOG_LINE:?}; it holds {lines:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `StopPodSandbox` and `RemovePodSandbox` of every pod (what the kubelet
/// does when pods are deleted), then what is left on the node: CRI pods
/// and containers, shim processes, pod network namespaces, host-local
/// allocations, veths on the bridge, shim sockets, mounts. Empty when
/// clean.
fn remove_and_leftovers(node: &mut CriNode, pods: &[&Pod]) -> Vec<String> {
    for pod in pods {
        node.cri.stop_pod_sandbox(&pod.id).expect("StopPodSandbox");
        let status = node.cri.pod_sandbox_status(&pod.id);
        assert_eq!(
            status.status.map(|s| s.state),
            Some(SANDBOX_NOTREADY),
            "pod {} after StopPodSandbox",
            pod.id
        );
        node.cri
            .remove_pod_sandbox(&pod.id)
            .expect("RemovePodSandbox");
    }
    let mut left: Vec<String> = node
        .cri
        .list_pod_sandboxes()
        .into_iter()
        .map(|p| format!("pod {p}"))
        .chain(
            node.cri
                .list_containers()
                .into_iter()
                .map(|c| format!("container {c}")),
        )
        .collect();
    let start = Instant::now();
    while !node.cd.shim_pids().is_empty() && start.elapsed() < CLEAN {
        std::thread::sleep(Duration::from_millis(50));
    }
    left.extend(
        node.cd
            .shim_pids()
            .into_iter()
            .map(|p| format!("shim process {p}")),
    );
    left.extend(
        pods.iter()
            .filter(|p| p.netns.exists())
            .map(|p| format!("netns {}", p.netns.display())),
    );
    left.extend(
        node.ip_allocations()
            .into_iter()
            .map(|ip| format!("host-local allocation {ip}")),
    );
    left.extend(
        node.bridge_ports()
            .into_iter()
            .map(|port| format!("veth {port} on {}", node.bridge)),
    );
    let ids: Vec<&str> = pods.iter().map(|p| p.id.as_str()).collect();
    left.extend(node.cd.leftover_sockets_in(K8S_NAMESPACE, &ids));
    left.extend(node.cd.stop());
    left
}

/// The kubelet's calls for a Wasm pod (`runtime_handler = "berth"`) and a
/// runc pod on the same node, from `RunPodSandbox` to `RemovePodSandbox`:
/// each answers on its pod IP from the host, logs in the CRI format where
/// the kubelet said, stops on SIGTERM (berth: drained, exit 0), and leaves
/// nothing behind. A second component in the berth pod shows that a
/// guest's outbound request leaves from the pod's address.
#[test]
fn a_berth_pod_and_a_runc_pod_live_and_die_through_the_cri() {
    let registry = Registry::start();
    let logger = registry.reference("logger:v1");
    push_image(&logger, berth_test_artifacts::LOGGER);
    let outbound = registry.reference("outbound:v1");
    push_image(&outbound, berth_test_artifacts::OUTBOUND);
    let httpd = registry.reference("busybox-httpd:v1");
    Image::httpd().push(&httpd);
    let mut node = CriNode::start(&registry);

    // The Wasm pod: RuntimeClass `berth`. Pod created → first byte.
    let created = Instant::now();
    let wasm = Pod::run(&node, "wasm", BERTH_HANDLER);
    let logger_id = wasm.start(&node, "logger", &logger, &[("PORT", "8080")], &[]);
    let answer = wait_answer("the berth pod", &wasm.url(8080));
    let berth_first_byte = created.elapsed();
    assert_eq!(answer, (200, "logged".to_string()));

    // A second component in the same pod, on 8081, whose outbound request
    // goes to a server of the test's on the bridge's gateway (an address of
    // the bridge the test's CNI made): it sees the pod's address, because
    // the guest's connections leave from the pod's network namespace.
    let gateway = node.subnet.replace(".0/24", ".1");
    let upstream = PeerEcho::start(gateway.parse().expect("gateway address"));
    let allowed = format!("http://{}", upstream.addr);
    wasm.start(
        &node,
        "outbound",
        &outbound,
        &[("PORT", "8081"), ("BERTH_ALLOWED_OUTBOUND_HOSTS", &allowed)],
        &[],
    );
    let target = format!("http%3A%2F%2F{}%2F", upstream.addr);
    let (status, body) = wait_answer(
        "the pod's outbound component",
        &format!("{}?url={target}", wasm.url(8081)),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, format!("upstream 200: {}", wasm.ip).as_str()),
        "the upstream saw the request come from the pod's IP {}",
        wasm.ip
    );

    // The container pod beside it: the node's default handler, runc.
    let created = Instant::now();
    let runc = Pod::run(&node, "runc", "");
    let httpd_id = runc.start(
        &node,
        "httpd",
        &httpd,
        &[("PORT", "8080")],
        &["/bin/sh", "-c", "exec httpd -f -v -p 0.0.0.0:$PORT -h /www"],
    );
    let answer = wait_answer("the runc pod", &runc.url(8080));
    let runc_first_byte = created.elapsed();
    assert_eq!(answer, (200, "hello from a container\n".to_string()));
    eprintln!(
        "pod created → first byte: berth {berth_first_byte:?}, runc {runc_first_byte:?} \
         (one sample each; `berth bench` measures)"
    );
    assert_ne!(wasm.ip, runc.ip);
    // Both still answer, each on its own address.
    assert_eq!(
        curl(None, &wasm.url(8080), Duration::from_secs(5)),
        Some((200, "logged".to_string()))
    );

    // ContainerStatus: running, logging where the kubelet said.
    for (id, pod, name) in [(&logger_id, &wasm, "logger"), (&httpd_id, &runc, "httpd")] {
        let status = node.cri.container_status(id);
        assert_eq!(status.state, CONTAINER_RUNNING, "{name}: {status:?}");
        assert!(status.started_at > 0, "{name}: {status:?}");
        assert_eq!(
            Path::new(&status.log_path),
            Path::new(&pod.config.log_directory)
                .join(name)
                .join("0.log"),
            "{name}"
        );
    }
    // The component's stdout and stderr, in the CRI log format.
    let logger_log = Path::new(&wasm.config.log_directory).join("logger/0.log");
    wait_log(
        &logger_log,
        &[("stdout", "stdout line"), ("stderr", "stderr line")],
    );
    // httpd -v logs each connection to stderr.
    let httpd_log = Path::new(&runc.config.log_directory).join("httpd/0.log");
    let start = Instant::now();
    while !cri_log(&httpd_log).iter().any(|(s, _, _)| s == "stderr") {
        assert!(
            start.elapsed() < LOG_LINE,
            "{} holds no stderr line",
            httpd_log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // StopContainer: SIGTERM; berth drains and exits 0 ("Completed").
    node.cri.stop_container(&logger_id, BERTH_GRACE);
    let status = node.cri.container_status(&logger_id);
    assert_eq!(
        (status.state, status.exit_code, status.reason.as_str()),
        (CONTAINER_EXITED, 0, "Completed"),
        "{status:?}"
    );
    assert!(status.finished_at >= status.started_at, "{status:?}");
    assert_eq!(curl(None, &wasm.url(8080), Duration::from_secs(2)), None);
    node.cri.stop_container(&httpd_id, RUNC_GRACE);
    let status = node.cri.container_status(&httpd_id);
    assert_eq!(status.state, CONTAINER_EXITED, "{status:?}");
    assert_eq!(curl(None, &runc.url(8080), Duration::from_secs(2)), None);
    // The log outlives the container, as `kubectl logs --previous` needs.
    assert!(
        cri_log(&logger_log)
            .iter()
            .any(|(s, _, c)| s == "stdout" && c == "stdout line")
    );

    node.cri.remove_container(&logger_id);
    node.cri.remove_container(&httpd_id);
    let left = remove_and_leftovers(&mut node, &[&wasm, &runc]);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Two berth pods on one node, one with two containers of the same
/// component: one compilation on the node for the three, one shim per pod,
/// and each pod's ports in its own network namespace.
#[test]
fn two_containers_in_a_pod_and_two_pods_compile_once_and_keep_their_networks() {
    let registry = Registry::start();
    let hello = registry.reference("hello:v1");
    push_image(&hello, berth_test_artifacts::HELLO);
    let mut node = CriNode::start(&registry);

    let a = Pod::run(&node, "pod-a", BERTH_HANDLER);
    let b = Pod::run(&node, "pod-b", BERTH_HANDLER);
    a.start(
        &node,
        "a1",
        &hello,
        &[("PORT", "8080"), ("K_SERVICE", "a1")],
        &[],
    );
    a.start(
        &node,
        "a2",
        &hello,
        &[("PORT", "8081"), ("K_SERVICE", "a2")],
        &[],
    );
    b.start(
        &node,
        "b1",
        &hello,
        &[("PORT", "8080"), ("K_SERVICE", "b1")],
        &[],
    );
    let ok = |body: &str| (200, format!("hello from {body}"));
    assert_eq!(wait_answer("a1", &a.url(8080)), ok("a1"));
    assert_eq!(wait_answer("a2", &a.url(8081)), ok("a2"));
    assert_eq!(wait_answer("b1", &b.url(8080)), ok("b1"));

    // Each pod has its own network namespace: a2's port is pod a's alone,
    // from the host and from inside pod b; inside pod a, both containers
    // share the pod's loopback.
    let short = Duration::from_secs(2);
    assert_eq!(curl(None, &b.url(8081), short), None);
    assert_eq!(curl(Some(&b.netns), "http://127.0.0.1:8081/", short), None);
    assert_eq!(
        curl(Some(&b.netns), "http://127.0.0.1:8080/", short),
        Some(ok("b1"))
    );
    assert_eq!(
        curl(Some(&a.netns), "http://127.0.0.1:8081/", short),
        Some(ok("a2"))
    );

    // One shim per pod; one compilation on the node for three containers.
    let shims = node.cd.shim_pids();
    assert_eq!(shims.len(), 2, "one shim per pod: {shims:?}");
    let log = node.cd.log_text();
    let compiled = log
        .lines()
        .filter(|l| l.contains("compiled component") && !l.contains("from cache"))
        .count();
    let from_cache = log
        .lines()
        .filter(|l| l.contains("loaded compiled component from cache"))
        .count();
    assert_eq!(
        compiled, 1,
        "one compilation for a1, a2 and b1 ({from_cache} cache loads); log:\n{log}"
    );
    let cache_dir = node.cd.root().join("io.containerd.berth.v1/compiled");
    let artifacts = crate::support::dir_names(&cache_dir)
        .into_iter()
        .filter(|n| n.ends_with(".cwasm"))
        .count();
    assert_eq!(artifacts, 1, "{}", cache_dir.display());
    eprintln!(
        "3 containers in 2 pods: {compiled} compilation, {from_cache} loads from the node's cache"
    );

    // The kubelet deleting both pods: StopPodSandbox stops their
    // containers too.
    let left = remove_and_leftovers(&mut node, &[&a, &b]);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `berth bench containerd --cri` against the test's node: both runtime
/// handlers measured from `RunPodSandbox` to the first byte, each sample's
/// marks in order (sandbox ready, then container started, then first
/// byte), and the node left with no pod, container, shim or address.
#[test]
fn the_cri_bench_measures_both_handlers_and_leaves_nothing() {
    let registry = Registry::start();
    let mut node = CriNode::start(&registry);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("cri.json");
    let out = crate::bench::bench(
        &[
            "containerd",
            "--cri",
            "--socket",
            node.cd.socket.to_str().unwrap(),
            "--iterations",
            "3",
            "--wasm",
            berth_test_artifacts::HELLO,
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "berth bench containerd --cri failed:\n{stdout}\n{}\ncontainerd's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.cd.log_text()
    );
    assert!(stdout.contains("runc / berth (first byte)"), "{stdout}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["iterations"], 3);
    assert!(
        report["containerd"]
            .as_str()
            .is_some_and(|v| v.contains("1.7.24")),
        "{}",
        report["containerd"]
    );
    assert_eq!(report["calls"][0], "RunPodSandbox");
    for (kind, handler) in [("berth", "berth"), ("runc", "runc")] {
        let k = &report[kind];
        assert_eq!(k["handler"], handler);
        let samples = |mark: &str| -> Vec<f64> {
            let stats = &k[mark];
            assert_eq!(stats["n"], 3, "{kind}.{mark}: {stats}");
            stats["samples"]
                .as_array()
                .unwrap_or_else(|| panic!("{kind}.{mark}.samples"))
                .iter()
                .map(|v| v.as_f64().expect("a number"))
                .collect()
        };
        let (ready, started, first) = (
            samples("sandbox_ready_us"),
            samples("container_started_us"),
            samples("first_byte_us"),
        );
        for i in 0..3 {
            assert!(
                0.0 < ready[i] && ready[i] < started[i] && started[i] < first[i],
                "{kind} sample {i}: sandbox ready {} µs, started {} µs, first byte {} µs",
                ready[i],
                started[i],
                first[i]
            );
            // Bounded by the bench's own timeouts: nothing took longer.
            assert!(first[i] < 120e6, "{kind} sample {i}: {} µs", first[i]);
        }
        assert!(k["warmup_first_byte_us"].as_f64().is_some_and(|v| v > 0.0));
    }
    assert!(report["ratio_p50"].as_f64().is_some_and(|r| r > 0.0));

    // Nothing left: the CRI lists no pod or container, no shim runs, no
    // address is held, no veth is on the bridge.
    assert_eq!(node.cri.list_pod_sandboxes(), Vec::<String>::new());
    assert_eq!(node.cri.list_containers(), Vec::<String>::new());
    let start = Instant::now();
    while !node.cd.shim_pids().is_empty() && start.elapsed() < CLEAN {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(node.cd.shim_pids(), Vec::<u32>::new(), "shim processes");
    assert_eq!(node.ip_allocations(), Vec::<String>::new());
    assert_eq!(node.bridge_ports(), Vec::<String>::new());
    let left = node.cd.stop();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `berth bench containerd --cri --private-node`: the bench starts its own
/// containerd 1.7.24 (CRI, the `berth` handler from the deploy snippet,
/// CNI on a bridge of its own), measures both handlers and removes it all:
/// no containerd or shim of its directory left running, no mount under
/// it, no bridge.
#[test]
fn the_cri_bench_runs_its_own_private_node_and_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("cri.json");
    let containerd_dir = Version::V1_7.bin_dir();
    let containerd_dir = containerd_dir
        .parent()
        .and_then(Path::parent)
        .expect("<dir>/usr/bin");
    let out = crate::bench::bench(
        &[
            "containerd",
            "--cri",
            "--private-node",
            "--containerd-dir",
            containerd_dir.to_str().unwrap(),
            "--shim",
            shim_binary().to_str().unwrap(),
            "--iterations",
            "2",
            "--wasm",
            berth_test_artifacts::HELLO,
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "berth bench containerd --cri --private-node failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["node"], "private");
    assert!(
        report["containerd"]
            .as_str()
            .is_some_and(|v| v.contains("1.7.24")),
        "{}",
        report["containerd"]
    );
    for kind in ["berth", "runc"] {
        assert_eq!(report[kind]["first_byte_us"]["n"], 2, "{kind}");
    }
    // The node lived in `berth-cri-bench-*/node`: nothing of it is left.
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("berth-cri-bench-") && cmdline.contains("containerd") {
            left.push(format!("process {cmdline}"));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    left.extend(
        mountinfo
            .lines()
            .filter(|l| l.contains("berth-cri-bench-"))
            .map(|l| format!("mount {l}")),
    );
    left.extend(
        crate::support::dir_names(Path::new("/sys/class/net"))
            .into_iter()
            .filter(|n| n.starts_with("bbench"))
            .map(|n| format!("bridge {n}")),
    );
    assert!(left.is_empty(), "left behind: {left:?}");
}
