//! The containerd shim (`containerd-shim-berth-v1`, runtime
//! `io.containerd.berth.v1`) against a real containerd, each test once per
//! version (`shim::v1_6::…`: Debian bookworm's 1.6.20; `shim::v1_7::…`:
//! Debian trixie's 1.7.24), started by each test with its own root, state,
//! sockets and config ([`Containerd`]). Images are pushed with `berth push --image` to the
//! test's own `docker-registry` and pulled by `ctr` over plain HTTP; the
//! wasi:http components serve inside a network namespace the test made, and
//! are reached with curl from inside it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::containerd::{Containerd, TestNetns, Version, wait_exit};
use crate::support::image::{Image, ImageExt as _};
use crate::support::registry::Registry;

const RUNTIME: &str = "io.containerd.berth.v1";
/// Bound on a task answering its first request after `ctr run` starts.
const FIRST_ANSWER: Duration = Duration::from_secs(60);
/// Bound on a task exiting after a kill (SIGTERM drains first).
const EXIT_AFTER_KILL: Duration = Duration::from_secs(30);
/// Bound on a command component's run.
const COMMAND_RUN: Duration = Duration::from_secs(60);

/// `berth push --image REF FILE` (the CLI, as a user runs it).
pub(crate) fn push_image(reference: &str, wasm: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["push", "--image", reference, wasm])
        .output()
        .expect("run berth push");
    assert!(
        out.status.success(),
        "berth push --image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ctr run` in the background (not detached: ctr copies the task's stdout
/// and stderr to its own, which go to files here, and exits with the task's
/// exit status).
struct Running {
    child: std::process::Child,
    stdout: tempfile::NamedTempFile,
    stderr: tempfile::NamedTempFile,
}

impl Running {
    fn start(cd: &Containerd, extra: &[&str], image: &str, id: &str, args: &[&str]) -> Self {
        let stdout = tempfile::NamedTempFile::new().unwrap();
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(extra);
        all.push(image);
        all.push(id);
        all.extend_from_slice(args);
        let child = cd
            .ctr_command(&all)
            .stdout(Stdio::from(stdout.reopen().unwrap()))
            .stderr(Stdio::from(stderr.reopen().unwrap()))
            .spawn()
            .expect("ctr run");
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.stdout.path()).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    fn wait(&mut self, what: &str, limit: Duration) -> Option<i32> {
        wait_exit(&mut self.child, what, limit)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lines of the containerd log (which carries the shims' logs) that mention
/// `needle`.
fn log_lines(cd: &Containerd, needle: &str) -> Vec<String> {
    cd.log_text()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// `(pid, status)` of task `id` as `ctr tasks ls` shows it.
fn task_row(cd: &Containerd, id: &str) -> Option<(u32, String)> {
    cd.ctr_ok(&["tasks", "ls"]).lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        match cols[..] {
            [task, pid, status] if task == id => Some((pid.parse().ok()?, status.to_string())),
            _ => None,
        }
    })
}

/// `(exit status, path)` of each "the sandbox's holder ended" line the
/// shim logged for holder `pid`: the path says where the status came from.
fn holder_ends(cd: &Containerd, pid: u32) -> Vec<(u32, String)> {
    let field = |line: &str, key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|v| v.trim_matches(|c| c == '"' || c == '\\').to_string())
    };
    log_lines(cd, "the sandbox's holder ended")
        .iter()
        .filter(|l| field(l, "holder=").as_deref() == Some(&pid.to_string()))
        .filter_map(|l| Some((field(l, "exit_status=")?.parse().ok()?, field(l, "path=")?)))
        .collect()
}

/// The annotations the CRI puts on a pod's containers (`ctr run
/// --annotation`): `sandbox` for the pod's first ("pause") container.
fn pod_annotations(kind: &str, sandbox_id: &str) -> [String; 4] {
    [
        "--annotation".into(),
        format!("io.kubernetes.cri.container-type={kind}"),
        "--annotation".into(),
        format!("io.kubernetes.cri.sandbox-id={sandbox_id}"),
    ]
}

/// A registry holding the busybox httpd image as `httpd_tag` and the hello
/// component as `hello:v1`, and a containerd that pulled both; the two
/// references.
fn httpd_and_hello(version: Version, httpd_tag: &str) -> (Registry, Containerd, String, String) {
    let registry = Registry::start();
    let httpd = registry.reference(httpd_tag);
    Image::httpd().push(&httpd);
    let hello = registry.reference("hello:v1");
    push_image(&hello, berth_test_artifacts::HELLO);
    let cd = Containerd::start(version);
    cd.ctr_ok(&["images", "pull", "--plain-http", &httpd]);
    cd.ctr_ok(&["images", "pull", "--plain-http", &hello]);
    (registry, cd, httpd, hello)
}

fn wasi_http_component_serves_drains_on_sigterm_and_compiles_once(version: Version) {
    let registry = Registry::start();
    let image = registry.reference("hello:v1");
    push_image(&image, berth_test_artifacts::HELLO);
    let mut cd = Containerd::start(version);
    cd.ctr_ok(&["images", "pull", "--plain-http", &image]);
    let (ns_a, ns_b) = (TestNetns::new("a"), TestNetns::new("b"));

    let with_ns = |ns: &TestNetns| format!("network:{}", ns.path());
    let (wa, wb) = (with_ns(&ns_a), with_ns(&ns_b));
    let mut a = Running::start(
        &cd,
        &["--runtime", RUNTIME, "--with-ns", &wa],
        &image,
        "hello-a",
        &[],
    );
    let ((status, body), _) = ns_a.wait_for("hello-a", "http://127.0.0.1:8080/", FIRST_ANSWER);
    assert_eq!((status, body.as_str()), (200, "hello from hello-a"));
    // A fresh instance per request: many requests, every one answered.
    for i in 0..20 {
        let got = ns_a.get("http://127.0.0.1:8080/", Duration::from_secs(10));
        assert_eq!(
            got,
            Some((200, "hello from hello-a".to_string())),
            "request {i}"
        );
    }

    // The second container of the same component compiles nothing.
    let mut b = Running::start(
        &cd,
        &["--runtime", RUNTIME, "--with-ns", &wb],
        &image,
        "hello-b",
        &[],
    );
    let ((status, body), _) = ns_b.wait_for("hello-b", "http://127.0.0.1:8080/", FIRST_ANSWER);
    assert_eq!((status, body.as_str()), (200, "hello from hello-b"));
    let compiled = log_lines(&cd, "compiled component");
    let from_cache = log_lines(&cd, "loaded compiled component from cache");
    let only_compiled: Vec<_> = compiled
        .iter()
        .filter(|l| !l.contains("from cache"))
        .collect();
    assert_eq!(
        (only_compiled.len(), from_cache.len()),
        (1, 1),
        "one compilation (hello-a), one cache hit (hello-b); log:\n{}",
        cd.log_text()
    );
    let cache_dir = cd.root().join("io.containerd.berth.v1/compiled");
    let artifacts: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", cache_dir.display()))
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "{}", cache_dir.display());

    // `ctr task kill` sends SIGTERM: stop accepting, drain, exit 0.
    cd.ctr_ok(&["tasks", "kill", "hello-a"]);
    let code = a.wait("ctr run hello-a after SIGTERM", EXIT_AFTER_KILL);
    assert_eq!(code, Some(0), "stderr: {}", a.stderr());
    assert_eq!(
        ns_a.get("http://127.0.0.1:8080/", Duration::from_secs(2)),
        None
    );
    // SIGKILL: at once, 137.
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "hello-b"]);
    let code = b.wait("ctr run hello-b after SIGKILL", EXIT_AFTER_KILL);
    assert_eq!(code, Some(137), "stderr: {}", b.stderr());

    let mut left = cd.stop();
    left.extend(cd.leftover_sockets(&["hello-a", "hello-b"]));
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A WASIp3 component under the shim: served on the p3 path, its instance
/// reused one request after another (WASIp3's default, as on `berth
/// serve`) unless the container's environment says
/// `BERTH_INSTANCE_REUSE=none`; a trap retires the reused instance.
fn wasip3_component_reuses_its_instance_unless_its_environment_says_none(version: Version) {
    let registry = Registry::start();
    let image = registry.reference("p3-counter:v1");
    push_image(&image, berth_test_artifacts::P3_COUNTER);
    let mut cd = Containerd::start(version);
    cd.ctr_ok(&["images", "pull", "--plain-http", &image]);
    let (ns_a, ns_b) = (TestNetns::new("p3a"), TestNetns::new("p3b"));
    let (wa, wb) = (
        format!("network:{}", ns_a.path()),
        format!("network:{}", ns_b.path()),
    );
    let mut reused = Running::start(
        &cd,
        &["--runtime", RUNTIME, "--with-ns", &wa],
        &image,
        "p3-reused",
        &[],
    );
    let mut fresh = Running::start(
        &cd,
        &[
            "--runtime",
            RUNTIME,
            "--with-ns",
            &wb,
            "--env",
            "BERTH_INSTANCE_REUSE=none",
        ],
        &image,
        "p3-fresh",
        &[],
    );
    let url = |q: &str| format!("http://127.0.0.1:8080/?{q}");
    let get = |ns: &TestNetns, q: &str| ns.get(&url(q), Duration::from_secs(10));
    let answer = |n: u32, previous: &str| Some((200, format!("count {n} previous {previous}")));

    let ((status, body), _) = ns_a.wait_for("p3-reused", &url("mark=a0"), FIRST_ANSWER);
    assert_eq!((status, body.as_str()), (200, "count 1 previous none"));
    assert_eq!(
        get(&ns_a, "mark=a1"),
        answer(2, "a0"),
        "serial: the instance carries over"
    );
    assert_eq!(get(&ns_a, "mark=a2"), answer(3, "a1"));
    // A trap answers 500 and retires the instance: the next starts over.
    let trapped = get(&ns_a, "mark=t&fail=trap").expect("an answer to the trap");
    assert_eq!(trapped.0, 500, "{trapped:?}");
    assert_eq!(
        get(&ns_a, "mark=a3"),
        answer(1, "none"),
        "a trapped instance is never reused"
    );

    let ((status, body), _) = ns_b.wait_for("p3-fresh", &url("mark=b0"), FIRST_ANSWER);
    assert_eq!((status, body.as_str()), (200, "count 1 previous none"));
    for i in 1..=5 {
        assert_eq!(
            get(&ns_b, &format!("mark=b{i}")),
            answer(1, "none"),
            "none: request {i}"
        );
    }
    let world = log_lines(&cd, "wasi:http@0.3");
    assert!(
        !world.is_empty(),
        "the shim names the world it serves; log:\n{}",
        cd.log_text()
    );

    cd.ctr_ok(&["tasks", "kill", "p3-reused"]);
    cd.ctr_ok(&["tasks", "kill", "p3-fresh"]);
    assert_eq!(
        reused.wait("p3-reused after SIGTERM", EXIT_AFTER_KILL),
        Some(0),
        "{}",
        reused.stderr()
    );
    assert_eq!(
        fresh.wait("p3-fresh after SIGTERM", EXIT_AFTER_KILL),
        Some(0),
        "{}",
        fresh.stderr()
    );
    let mut left = cd.stop();
    left.extend(cd.leftover_sockets(&["p3-reused", "p3-fresh"]));
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn guest_output_is_the_tasks_stdout_and_stderr(version: Version) {
    let registry = Registry::start();
    let image = registry.reference("logger:v1");
    push_image(&image, berth_test_artifacts::LOGGER);
    let mut cd = Containerd::start(version);
    cd.ctr_ok(&["images", "pull", "--plain-http", &image]);
    let ns = TestNetns::new("log");
    let with_ns = format!("network:{}", ns.path());
    let mut task = Running::start(
        &cd,
        &[
            "--runtime",
            RUNTIME,
            "--with-ns",
            &with_ns,
            "--env",
            "PORT=9090",
        ],
        &image,
        "logger",
        &[],
    );
    let ((status, body), _) = ns.wait_for("logger", "http://127.0.0.1:9090/", FIRST_ANSWER);
    assert_eq!((status, body.as_str()), (200, "logged"));
    cd.ctr_ok(&["tasks", "kill", "logger"]);
    assert_eq!(task.wait("ctr run logger", EXIT_AFTER_KILL), Some(0));
    assert_eq!(task.stdout(), "stdout line\n");
    assert_eq!(task.stderr(), "stderr line\n");
    let mut left = cd.stop();
    left.extend(cd.leftover_sockets(&["logger"]));
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn wasi_cli_command_exit_status_is_the_tasks(version: Version) {
    let registry = Registry::start();
    let image = registry.reference("command:v1");
    push_image(&image, berth_test_artifacts::COMMAND);
    let mut cd = Containerd::start(version);
    cd.ctr_ok(&["images", "pull", "--plain-http", &image]);

    // No arguments: success; the image's entrypoint is the component.
    let mut ok = Running::start(&cd, &["--runtime", RUNTIME], &image, "cmd-ok", &[]);
    assert_eq!(
        ok.wait("ctr run cmd-ok", COMMAND_RUN),
        Some(0),
        "{}",
        ok.stderr()
    );
    assert_eq!(ok.stdout(), "hello from a wasi:cli command\nargs: \n");
    assert_eq!(ok.stderr(), "a line on stderr\n");

    // Arguments after the id replace the command; the rootfs is its `/`.
    let mut cat = Running::start(
        &cd,
        &["--runtime", RUNTIME],
        &image,
        "cmd-cat",
        &["/app.wasm", "env", "GREETING"],
    );
    assert_eq!(cat.wait("ctr run cmd-cat", COMMAND_RUN), Some(0));
    assert!(
        cat.stdout().ends_with("args: env GREETING\nGREETING=\n"),
        "{}",
        cat.stdout()
    );

    // A failure exits 1; a trap exits 134 and says why on stderr.
    let mut fail = Running::start(
        &cd,
        &["--runtime", RUNTIME],
        &image,
        "cmd-fail",
        &["/app.wasm", "fail"],
    );
    assert_eq!(fail.wait("ctr run cmd-fail", COMMAND_RUN), Some(1));
    let mut trap = Running::start(
        &cd,
        &["--runtime", RUNTIME],
        &image,
        "cmd-trap",
        &["/app.wasm", "trap"],
    );
    assert_eq!(trap.wait("ctr run cmd-trap", COMMAND_RUN), Some(134));
    assert!(
        trap.stderr().contains("berth: the component trapped"),
        "{}",
        trap.stderr()
    );

    let mut left = cd.stop();
    left.extend(cd.leftover_sockets(&["cmd-ok", "cmd-cat", "cmd-fail", "cmd-trap"]));
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn busybox_through_runc_next_to_the_wasm_task(version: Version) {
    // The same containerd runs an ordinary image through runc
    // (io.containerd.runc.v2) and the hello component through berth's shim;
    // both answer in their own network namespace. Start → first byte is
    // printed for both (a comparison, not an assertion: the bench measures).
    let (_registry, mut cd, busybox, hello) = httpd_and_hello(version, "busybox-httpd:v1");

    let ns_runc = TestNetns::new("runc");
    let ns_wasm = TestNetns::new("wasm");
    let (wr, ww) = (
        format!("network:{}", ns_runc.path()),
        format!("network:{}", ns_wasm.path()),
    );
    let t = Instant::now();
    let mut runc = Running::start(
        &cd,
        &[
            "--runtime",
            "io.containerd.runc.v2",
            "--with-ns",
            &wr,
            "--env",
            "PORT=8080",
        ],
        &busybox,
        "busybox",
        &[],
    );
    let ((status, body), _) =
        ns_runc.wait_for("busybox httpd", "http://127.0.0.1:8080/", FIRST_ANSWER);
    let runc_first = t.elapsed();
    assert_eq!((status, body.as_str()), (200, "hello from a container\n"));
    let t = Instant::now();
    let mut wasm = Running::start(
        &cd,
        &["--runtime", RUNTIME, "--with-ns", &ww],
        &hello,
        "wasm",
        &[],
    );
    let ((status, _), _) = ns_wasm.wait_for("hello", "http://127.0.0.1:8080/", FIRST_ANSWER);
    let wasm_first = t.elapsed();
    assert_eq!(status, 200);
    eprintln!(
        "ctr run → first answer (curl polling, includes ctr's own start): runc busybox {runc_first:?}, berth shim {wasm_first:?}"
    );

    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "busybox"]);
    assert_eq!(runc.wait("ctr run busybox", EXIT_AFTER_KILL), Some(137));
    cd.ctr_ok(&["tasks", "kill", "wasm"]);
    assert_eq!(wasm.wait("ctr run wasm", EXIT_AFTER_KILL), Some(0));
    let mut left = cd.stop();
    left.extend(cd.leftover_sockets(&["busybox", "wasm"]));
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn pod_sandbox_runs_nothing_until_killed_and_its_pod_shares_the_shim(version: Version) {
    // Under the CRI, containerd first creates a pod's sandbox ("pause")
    // container through the pod's runtime handler, here berth's. Its image
    // is an ordinary one whose entrypoint is no component (the busybox httpd
    // image stands in for `pause`): the shim must not run or read it.
    let (_registry, mut cd, pause, hello) = httpd_and_hello(version, "pause:v1");
    let ns = TestNetns::new("pod");
    let in_pod = |kind: &str, sandbox: &str, netns: &str| {
        let mut extra: Vec<String> = ["--runtime", RUNTIME, "--with-ns"].map(String::from).into();
        extra.push(format!("network:{netns}"));
        extra.extend(pod_annotations(kind, sandbox));
        extra
    };
    let run = |extra: &[String], image: &str, id: &str| {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        Running::start(&cd, &extra, image, id, &[])
    };
    let running = |id: &str, what: &Running| {
        let t = Instant::now();
        loop {
            if let Some((pid, s)) = task_row(&cd, id)
                && s == "RUNNING"
            {
                return pid;
            }
            assert!(
                t.elapsed() < FIRST_ANSWER,
                "{id} never ran; stderr: {}\nlog:\n{}",
                what.stderr(),
                cd.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let mut sandbox = run(&in_pod("sandbox", "pod-a", &ns.path()), &pause, "pod-a");
    let holder = running("pod-a", &sandbox);
    // Its pid is a process of its own, in the pod's network namespace (the
    // CRI joins the app containers to `/proc/<pid>/ns/net`).
    let netns_of = |path: &str| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    };
    assert_eq!(
        netns_of(&format!("/proc/{holder}/ns/net")),
        netns_of(&ns.path()),
        "the holder is not in the pod's namespace"
    );
    // It stays up on its own, answering nothing.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(task_row(&cd, "pod-a"), Some((holder, "RUNNING".into())));
    assert_eq!(
        ns.get("http://127.0.0.1:8080/", Duration::from_secs(1)),
        None
    );

    // The pod's component joins the sandbox's shim (grouped by sandbox id)
    // and serves in the namespace named as the CRI names it.
    let mut app = run(
        &in_pod("container", "pod-a", &format!("/proc/{holder}/ns/net")),
        &hello,
        "pod-a-hello",
    );
    let ((status, body), _) = ns.wait_for("pod-a-hello", "http://127.0.0.1:8080/", FIRST_ANSWER);
    assert_eq!((status, body.as_str()), (200, "hello from pod-a-hello"));
    let shims = cd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim per pod: {shims:?}");
    assert_eq!(task_row(&cd, "pod-a-hello").map(|r| r.0), Some(shims[0]));
    let stat = std::fs::read_to_string(format!("/proc/{holder}/stat")).unwrap();
    let ppid: u32 = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert_eq!(ppid, shims[0], "the holder is the shim's child");

    // Pod stop: the app drains (0), then the sandbox ends as `pause` does:
    // 0 on SIGTERM; its holder is gone.
    cd.ctr_ok(&["tasks", "kill", "pod-a-hello"]);
    assert_eq!(app.wait("ctr run pod-a-hello", EXIT_AFTER_KILL), Some(0));
    cd.ctr_ok(&["tasks", "kill", "pod-a"]);
    assert_eq!(
        sandbox.wait("ctr run pod-a after SIGTERM", EXIT_AFTER_KILL),
        Some(0),
        "stderr: {}; how the shim learned the holder's end: {:?}",
        sandbox.stderr(),
        holder_ends(&cd, holder)
    );
    assert_eq!(holder_ends(&cd, holder), [(0, "reaper".to_string())]);
    assert!(
        !std::path::Path::new(&format!("/proc/{holder}")).exists(),
        "the holder {holder} is still there"
    );

    // Another pod's sandbox, killed with SIGKILL: 137.
    // The status is the one the shim's reaper saw; the shim logs which path
    // gave it, and a failure here quotes that line (under load a second
    // waiter on the holder's pid once lost the reaper's race and reported
    // 134; pause.rs says why).
    let mut other = run(&in_pod("sandbox", "pod-b", &ns.path()), &pause, "pod-b");
    let other_holder = running("pod-b", &other);
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "pod-b"]);
    assert_eq!(
        other.wait("ctr run pod-b after SIGKILL", EXIT_AFTER_KILL),
        Some(137),
        "how the shim learned the holder's end: {:?}",
        holder_ends(&cd, other_holder)
    );
    assert_eq!(
        holder_ends(&cd, other_holder),
        [(137, "reaper".to_string())]
    );

    let mut left = cd.stop();
    left.extend(cd.leftover_sockets(&["pod-a", "pod-b"]));
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// containerd >= 1.7.7 only: `ctr run --platform wasi/wasm` of `berth push
/// --image`'s `wasi/wasm` entry (an ordinary image config, the component as
/// its one layer, which containerd pulls without unpacking): the shim reads
/// the layer from containerd's content store, digest checked, and compiles
/// it once per node through the same cache as the rootfs form's. A layer
/// whose bytes in the content store are not its digest's is refused.
#[test]
fn wasm_layer_image_is_read_from_containerds_content_store() {
    let registry = Registry::start();
    let image = registry.reference("hello:v1");
    push_image(&image, berth_test_artifacts::HELLO);
    let mut cd = Containerd::start(Version::V1_7);
    cd.ctr_ok(&[
        "images",
        "pull",
        "--plain-http",
        "--platform",
        "wasi/wasm",
        &image,
    ]);
    let (ns_a, ns_b) = (TestNetns::new("layer-a"), TestNetns::new("layer-b"));
    let (wa, wb) = (
        format!("network:{}", ns_a.path()),
        format!("network:{}", ns_b.path()),
    );
    let mut a = Running::start(
        &cd,
        &[
            "--platform",
            "wasi/wasm",
            "--runtime",
            RUNTIME,
            "--with-ns",
            &wa,
        ],
        &image,
        "layer-a",
        &[],
    );
    let ((status, body), _) = ns_a.wait_for("layer-a", "http://127.0.0.1:8080/", FIRST_ANSWER);
    assert_eq!(
        (status, body.as_str()),
        (200, "hello from layer-a"),
        "log:\n{}",
        cd.log_text()
    );
    let wasm = std::fs::read(berth_test_artifacts::HELLO).unwrap();
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&wasm))
    };
    let from_layer = log_lines(&cd, "the component is the image's Wasm layer");
    assert_eq!(from_layer.len(), 1, "log:\n{}", cd.log_text());
    assert!(from_layer[0].contains(&digest), "{}", from_layer[0]);

    // The rootfs form of the same component, pulled into the same node,
    // compiles nothing: one cache, keyed by the component's sha256.
    cd.ctr_ok(&["images", "pull", "--plain-http", &image]);
    let mut b = Running::start(
        &cd,
        &["--runtime", RUNTIME, "--with-ns", &wb],
        &image,
        "rootfs-b",
        &[],
    );
    let ((status, body), _) = ns_b.wait_for("rootfs-b", "http://127.0.0.1:8080/", FIRST_ANSWER);
    assert_eq!((status, body.as_str()), (200, "hello from rootfs-b"));
    let compiled: Vec<_> = log_lines(&cd, "compiled component")
        .into_iter()
        .filter(|l| !l.contains("from cache"))
        .collect();
    let from_cache = log_lines(&cd, "loaded compiled component from cache");
    assert_eq!(
        (compiled.len(), from_cache.len()),
        (1, 1),
        "one compilation (the layer), one cache hit (the rootfs form); log:\n{}",
        cd.log_text()
    );
    cd.ctr_ok(&["tasks", "kill", "layer-a"]);
    assert_eq!(a.wait("ctr run layer-a", EXIT_AFTER_KILL), Some(0));
    cd.ctr_ok(&["tasks", "kill", "rootfs-b"]);
    assert_eq!(b.wait("ctr run rootfs-b", EXIT_AFTER_KILL), Some(0));

    // Bytes in the content store that are not the layer's digest: refused,
    // naming the digest (the blob is changed in place, same length).
    let blob = cd
        .root()
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(&digest);
    let mut bad = std::fs::read(&blob).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(&blob, &bad).unwrap();
    let out = cd.ctr(&[
        "run",
        "--rm",
        "--platform",
        "wasi/wasm",
        "--runtime",
        RUNTIME,
        &image,
        "layer-bad",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a corrupt layer ran");
    assert!(
        said.contains(&format!(
            "sha256:{digest}: the content store's bytes hash to"
        )),
        "{said}"
    );

    let mut left = cd.stop();
    left.extend(cd.leftover_sockets(&["layer-a", "rootfs-b", "layer-bad"]));
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `wasi:keyvalue` under the shim, with the counter example (each GET adds
/// one to a count): on the embedded store under containerd's root the count
/// outlives the task (the next container of the app, by `K_SERVICE`, counts
/// on); with `BERTH_KEYVALUE_REDIS_URL` it lives in a real `redis-server`,
/// apart from the embedded count, shared by two tasks running at once.
fn keyvalue_outlives_the_task_on_the_embedded_store_and_on_redis(version: Version) {
    let registry = Registry::start();
    let image = registry.reference("counter:v1");
    let wasm = crate::examples::built("examples/target/wasm32-wasip2/release/counter.wasm");
    push_image(&image, wasm.to_str().unwrap());
    let redis = crate::keyvalue::RedisServer::start();
    let mut cd = Containerd::start(version);
    cd.ctr_ok(&["images", "pull", "--plain-http", &image]);
    let (ns_a, ns_b) = (TestNetns::new("kva"), TestNetns::new("kvb"));
    let (wa, wb) = (
        format!("network:{}", ns_a.path()),
        format!("network:{}", ns_b.path()),
    );
    let url = "http://127.0.0.1:8080/";
    let count = |ns: &TestNetns| ns.get(url, Duration::from_secs(10));
    let answer = |n: u32| Some((200, format!("{n}\n")));
    let embedded = [
        "--env",
        "BERTH_KEYVALUE=default",
        "--env",
        "K_SERVICE=counter",
    ];
    let run = |ns: &str, id: &str, env: &[&str]| {
        let mut extra = vec!["--runtime", RUNTIME, "--with-ns", ns];
        extra.extend_from_slice(env);
        Running::start(&cd, &extra, &image, id, &[])
    };
    let stop = |task: &mut Running, id: &str| {
        cd.ctr_ok(&["tasks", "kill", id]);
        assert_eq!(
            task.wait(&format!("{id} after SIGTERM"), EXIT_AFTER_KILL),
            Some(0),
            "{}",
            task.stderr()
        );
    };

    // Embedded: the count outlives the task.
    let mut first = run(&wa, "kv-1", &embedded);
    let ((status, body), _) = ns_a.wait_for("kv-1", url, FIRST_ANSWER);
    assert_eq!((status, body.as_str()), (200, "1\n"), "{}", first.stderr());
    assert_eq!(count(&ns_a), answer(2));
    stop(&mut first, "kv-1");
    // One shim at a time holds the embedded store (a file lock): the next
    // task starts once the first's shim is gone.
    let deadline = Instant::now() + EXIT_AFTER_KILL;
    while !cd.shim_pids().is_empty() {
        assert!(Instant::now() < deadline, "kv-1's shim did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let store = cd
        .root()
        .join("io.containerd.berth.v1/keyvalue/embedded.redb");
    assert!(store.is_file(), "{} is missing", store.display());
    let mut second = run(&wa, "kv-2", &embedded);
    let ((status, body), _) = ns_a.wait_for("kv-2", url, FIRST_ANSWER);
    assert_eq!((status, body.as_str()), (200, "3\n"), "{}", second.stderr());
    stop(&mut second, "kv-2");

    // Redis: a count of its own, shared by two tasks at once.
    let redis_url = format!("BERTH_KEYVALUE_REDIS_URL=redis://{}", redis.addr);
    let on_redis: Vec<&str> = embedded
        .iter()
        .copied()
        .chain(["--env", redis_url.as_str()])
        .collect();
    let mut ra = run(&wa, "kv-ra", &on_redis);
    let mut rb = run(&wb, "kv-rb", &on_redis);
    let ((status, body), _) = ns_a.wait_for("kv-ra", url, FIRST_ANSWER);
    assert_eq!((status, body.as_str()), (200, "1\n"), "{}", ra.stderr());
    let ((status, body), _) = ns_b.wait_for("kv-rb", url, FIRST_ANSWER);
    assert_eq!((status, body.as_str()), (200, "2\n"), "{}", rb.stderr());
    assert_eq!(count(&ns_a), answer(3));
    stop(&mut ra, "kv-ra");
    stop(&mut rb, "kv-rb");

    let mut left = cd.stop();
    left.extend(cd.leftover_sockets(&["kv-1", "kv-2", "kv-ra", "kv-rb"]));
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Every test above, once per containerd: `shim::v1_6::NAME` and
/// `shim::v1_7::NAME`.
macro_rules! per_version {
    ($($name:ident),* $(,)?) => {
        mod v1_6 {
            $(#[test]
            fn $name() {
                super::$name(super::Version::V1_6);
            })*
        }
        mod v1_7 {
            $(#[test]
            fn $name() {
                super::$name(super::Version::V1_7);
            })*
        }
    };
}

per_version!(
    wasi_http_component_serves_drains_on_sigterm_and_compiles_once,
    wasip3_component_reuses_its_instance_unless_its_environment_says_none,
    guest_output_is_the_tasks_stdout_and_stderr,
    wasi_cli_command_exit_status_is_the_tasks,
    busybox_through_runc_next_to_the_wasm_task,
    pod_sandbox_runs_nothing_until_killed_and_its_pod_shares_the_shim,
    keyvalue_outlives_the_task_on_the_embedded_store_and_on_redis,
);
