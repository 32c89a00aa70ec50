//! A private containerd for the shim's tests, and what they use around it:
//! Debian bookworm's `containerd` 1.6.20 (the system's, `/usr/bin`) or
//! Debian trixie's 1.7.24, which `scripts/setup.sh` unpacks under
//! `/opt/berth/containerd-1.7` without installing it ([`Version`]).
//!
//! Each [`Containerd`] runs its own daemon with its own root, state
//! directory, sockets and `/opt` plugin directory under a temporary
//! directory, the CRI plugin disabled (unless started with
//! [`Containerd::start_with_cri`]), and a `PATH` that starts with the
//! directory of `containerd-shim-berth-v1`: no system service or
//! configuration is read or touched. Its log (which includes the shims'
//! logs) is kept for assertions. Dropping it kills what is left of its
//! tasks, stops the daemon and its shims, and unmounts anything left under
//! its root.
//!
//! Shim sockets live in `/run/containerd/s/<sha256>` whatever the state
//! directory (both containerd 1.6 and the shim crate hard-code that root);
//! their names hash this daemon's address, so they never collide with
//! another containerd's.
//!
//! The daemon's config, start and clean-up are the bench's private node's
//! ([`berth_bench::private_node`]); what is here is the tests' side: which
//! binaries, `ctr`, and the checks of what a daemon left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_bench::private_node as node;
use tempfile::TempDir;

/// The containerd namespace the tests use.
pub const NAMESPACE: &str = "berth-test";
/// How long the daemon may take to answer `ctr version`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The shim binary, built once per test run with the same cargo and profile
/// as this test binary (`cargo build -p berth-shim`).
pub fn shim_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/all-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "berth-shim",
            "--bin",
            "containerd-shim-berth-v1",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target_dir);
        if release {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build -p berth-shim");
        assert!(
            out.status.success(),
            "cargo build -p berth-shim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("containerd-shim-berth-v1");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// Which containerd a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 1.6.20, Debian bookworm's package (`/usr/bin`).
    V1_6,
    /// 1.7.24, Debian trixie's, unpacked by `scripts/setup.sh` into
    /// `/opt/berth/containerd-1.7` (`BERTH_CONTAINERD17_DIR` overrides it).
    V1_7,
}

impl Version {
    /// The directory holding its `containerd`, `ctr` and runc shim.
    pub fn bin_dir(self) -> PathBuf {
        match self {
            Self::V1_6 => PathBuf::from("/usr/bin"),
            Self::V1_7 => std::env::var_os("BERTH_CONTAINERD17_DIR")
                .map_or_else(|| PathBuf::from("/opt/berth/containerd-1.7"), PathBuf::from)
                .join("usr/bin"),
        }
    }

    /// The version `containerd --version` must print.
    fn expected(self) -> &'static str {
        match self {
            Self::V1_6 => " 1.6.",
            Self::V1_7 => " 1.7.24",
        }
    }
}

/// A private containerd daemon, stopped on drop.
#[derive(Debug)]
pub struct Containerd {
    /// Root of everything it writes.
    pub dir: TempDir,
    /// Its gRPC socket.
    pub socket: PathBuf,
    /// Its stdout and stderr (the shims' logs are copied here too).
    pub log: PathBuf,
    /// Which one it is.
    pub version: Version,
    child: Option<Child>,
}

impl Containerd {
    /// Starts a daemon of `version` that finds `containerd-shim-berth-v1`
    /// (and its own runc shim) on its `PATH`, its CRI plugin disabled.
    pub fn start(version: Version) -> Self {
        Self::start_with(version, None)
    }

    /// Starts a daemon of `version` with its CRI plugin enabled, `cri`
    /// merged into its config (table by table, `cri` winning).
    pub fn start_with_cri(version: Version, cri: toml::Table) -> Self {
        Self::start_with(version, Some(cri))
    }

    fn start_with(version: Version, cri: Option<toml::Table>) -> Self {
        let bin = version.bin_dir();
        let out = Command::new(bin.join("containerd"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        assert!(
            out.contains(version.expected()),
            "containerd{} is missing from {} (`containerd --version` said {out:?}): \
             scripts/setup.sh installs 1.6 (Debian's package) and unpacks 1.7.24",
            version.expected(),
            bin.display()
        );
        let shim_dir = shim_binary().parent().expect("shim dir").to_path_buf();
        let dir = tempfile::Builder::new()
            .prefix("berth-containerd-")
            .tempdir()
            .expect("containerd dir");
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = d.join("config.toml");
        let mut table = node::base_config(d, &socket, cri.is_some());
        if let Some(cri) = cri {
            node::merge_tables(&mut table, cri);
        }
        std::fs::write(&config, table.to_string()).expect("write config");
        let log = d.join("containerd.log");
        let child = node::spawn(&bin, &shim_dir, &config, &log).expect("start containerd");
        let me = Self {
            dir,
            socket,
            log,
            version,
            child: Some(child),
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if me.socket.exists() && me.ctr(&["version"]).status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within {STARTUP_TIMEOUT:?} (STARTUP_TIMEOUT); log:\n{}",
                me.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    /// `ctr --address SOCKET --namespace berth-test ARGS`, as a command.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.version.bin_dir().join("ctr"));
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `ctr ARGS` to its end.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).output().expect("run ctr")
    }

    /// Runs `ctr ARGS` and panics, with its output, unless it succeeds.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// containerd's root (snapshots, content, the shim's compile cache).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Pids of the shims (any runtime) this daemon started, found by the
    /// `-address SOCKET` on their command line.
    pub fn shim_pids(&self) -> Vec<u32> {
        node::shim_pids(&self.socket)
    }

    /// The shim sockets of task `ids` still in `/run/containerd/s` (a
    /// shim's socket is named by the sha256 of `ADDRESS/NAMESPACE/ID`, the
    /// rule containerd and the shim crate share).
    pub fn leftover_sockets(&self, ids: &[&str]) -> Vec<String> {
        self.leftover_sockets_in(NAMESPACE, ids)
    }

    /// [`leftover_sockets`](Self::leftover_sockets) of tasks in containerd
    /// namespace `namespace` (the CRI's is `k8s.io`).
    pub fn leftover_sockets_in(&self, namespace: &str, ids: &[&str]) -> Vec<String> {
        use sha2::Digest as _;
        ids.iter()
            .map(|id| {
                let key = format!("{}/{namespace}/{id}", self.socket.display());
                format!(
                    "/run/containerd/s/{}",
                    hex::encode(sha2::Sha256::digest(key))
                )
            })
            .filter(|p| Path::new(p).exists())
            .collect()
    }

    /// Mounts left under this daemon's directory.
    pub fn mounts(&self) -> Vec<String> {
        node::mounts_under(self.dir.path())
    }

    /// Stops the daemon and waits for its shims; returns what was left
    /// behind (shim processes, mounts), empty when clean.
    pub fn stop(&mut self) -> Vec<String> {
        // Tasks still around: kill and delete them, as an operator would.
        let tasks = self.ctr(&["tasks", "ls", "-q"]);
        for id in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr(&["tasks", "delete", "-f", id]);
        }
        let containers = self.ctr(&["containers", "ls", "-q"]);
        for id in String::from_utf8_lossy(&containers.stdout).split_whitespace() {
            let _ = self.ctr(&["containers", "delete", id]);
        }
        node::wait_for_shims(&self.socket);
        let mut left: Vec<String> = self
            .shim_pids()
            .into_iter()
            .map(|p| format!("shim process {p}"))
            .collect();
        if let Some(mut child) = self.child.take()
            && !node::terminate(&mut child)
        {
            left.push("containerd did not exit on SIGTERM".into());
        }
        left.extend(self.mounts().into_iter().map(|m| format!("mount {m}")));
        left
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.stop();
        for pid in self.shim_pids() {
            node::kill(pid, rustix::process::Signal::KILL);
        }
        node::unmount_all(self.dir.path());
    }
}

/// A network namespace made for a test (the bench's
/// [`Netns`](berth_bench::containerd::Netns): `ip netns add`, `lo` up);
/// deleted on drop.
#[derive(Debug)]
pub struct TestNetns {
    ns: berth_bench::containerd::Netns,
}

impl TestNetns {
    /// Creates a namespace named after this process, `tag` and a counter
    /// (the same test runs once per containerd version, at the same time).
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("berth-shim-{}-{n}-{tag}", std::process::id());
        let ns = berth_bench::containerd::Netns::new(name).unwrap_or_else(|e| panic!("{e:#}"));
        Self { ns }
    }

    /// Its name under `/run/netns`.
    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// Its file, for `ctr run --with-ns network:PATH`.
    pub fn path(&self) -> String {
        self.ns.path()
    }

    /// [`curl`] inside the namespace.
    pub fn get(&self, url: &str, timeout: Duration) -> Option<(u16, String)> {
        curl(Some(Path::new(&self.path())), url, timeout)
    }

    /// Polls [`get`](Self::get) until something answers; panics naming
    /// `what` after `limit`. Returns the answer and how long it took.
    pub fn wait_for(&self, what: &str, url: &str, limit: Duration) -> ((u16, String), Duration) {
        let start = Instant::now();
        loop {
            if let Some(answer) = self.get(url, Duration::from_secs(2)) {
                return (answer, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "{what} did not answer on {url} in netns {} within {limit:?}",
                self.name()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits for `child` to exit, at most `limit`; returns its exit code.
/// Panics naming `what` (after killing it) if it does not.
pub fn wait_exit(child: &mut Child, what: &str, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `curl` from the host (or inside `netns`, a namespace file): (status,
/// body), or `None` when nothing answered within `timeout`.
pub fn curl(netns: Option<&Path>, url: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("curl");
            c
        }
        None => Command::new("curl"),
    };
    let out = cmd
        .args(["-s", "--noproxy", "*", "-m"])
        .arg(format!("{:.1}", timeout.as_secs_f64()))
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}
