//! The containerd shim (`containerd-shim-berth-v1`, runtime
//! `io.containerd.berth.v1`) against a real containerd: Debian's 1.6,
//! started by each test with its own root, state, sockets and config
//! ([`Containerd`]). Images are pushed with `berth push --image` to the
//! test's own `docker-registry` and pulled by `ctr` over plain HTTP; the
//! wasi:http components serve inside a network namespace the test made, and
//! are reached with curl from inside it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::containerd::{Containerd, TestNetns, wait_exit};
use crate::support::image::Image;
use crate::support::registry::Registry;

const RUNTIME: &str = "io.containerd.berth.v1";
/// Bound on a task answering its first request after `ctr run` starts.
const FIRST_ANSWER: Duration = Duration::from_secs(60);
/// Bound on a task exiting after a kill (SIGTERM drains first).
const EXIT_AFTER_KILL: Duration = Duration::from_secs(30);
/// Bound on a command component's run.
const COMMAND_RUN: Duration = Duration::from_secs(60);

/// `berth push --image REF FILE` (the CLI, as a user runs it).
fn push_image(reference: &str, wasm: &str) {
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
fn httpd_and_hello(httpd_tag: &str) -> (Registry, Containerd, String, String) {
    let registry = Registry::start();
    let httpd = registry.reference(httpd_tag);
    Image::httpd().push(&httpd);
    let hello = registry.reference("hello:v1");
    push_image(&hello, berth_test_artifacts::HELLO);
    let cd = Containerd::start();
    cd.ctr_ok(&["images", "pull", "--plain-http", &httpd]);
    cd.ctr_ok(&["images", "pull", "--plain-http", &hello]);
    (registry, cd, httpd, hello)
}

#[test]
fn wasi_http_component_serves_drains_on_sigterm_and_compiles_once() {
    let registry = Registry::start();
    let image = registry.reference("hello:v1");
    push_image(&image, berth_test_artifacts::HELLO);
    let mut cd = Containerd::start();
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

#[test]
fn guest_output_is_the_tasks_stdout_and_stderr() {
    let registry = Registry::start();
    let image = registry.reference("logger:v1");
    push_image(&image, berth_test_artifacts::LOGGER);
    let mut cd = Containerd::start();
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

#[test]
fn wasi_cli_command_exit_status_is_the_tasks() {
    let registry = Registry::start();
    let image = registry.reference("command:v1");
    push_image(&image, berth_test_artifacts::COMMAND);
    let mut cd = Containerd::start();
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

#[test]
fn busybox_through_runc_next_to_the_wasm_task() {
    // The same containerd runs an ordinary image through runc
    // (io.containerd.runc.v2) and the hello component through berth's shim;
    // both answer in their own network namespace. Start → first byte is
    // printed for both (a comparison, not an assertion: the bench measures).
    let (_registry, mut cd, busybox, hello) = httpd_and_hello("busybox-httpd:v1");

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

#[test]
fn pod_sandbox_runs_nothing_until_killed_and_its_pod_shares_the_shim() {
    // Under the CRI, containerd first creates a pod's sandbox ("pause")
    // container through the pod's runtime handler, here berth's. Its image
    // is an ordinary one whose entrypoint is no component (the busybox httpd
    // image stands in for `pause`): the shim must not run or read it.
    let (_registry, mut cd, pause, hello) = httpd_and_hello("pause:v1");
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
        "stderr: {}",
        sandbox.stderr()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{holder}")).exists(),
        "the holder {holder} is still there"
    );

    // Another pod's sandbox, killed with SIGKILL: 137.
    let mut other = run(&in_pod("sandbox", "pod-b", &ns.path()), &pause, "pod-b");
    running("pod-b", &other);
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "pod-b"]);
    assert_eq!(
        other.wait("ctr run pod-b after SIGKILL", EXIT_AFTER_KILL),
        Some(137)
    );

    let mut left = cd.stop();
    left.extend(cd.leftover_sockets(&["pod-a", "pod-b"]));
    assert!(left.is_empty(), "left behind: {left:?}");
}
