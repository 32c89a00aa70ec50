//! The shim against a real runc and a real busybox: start, probe, stop and
//! reap instances. Each test has its own state directory and unique ids, so
//! they run in parallel.
//!
//! [`lifecycle`] holds the tests; this module the helpers they share.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::runc::find_runc;
use super::{
    Container, ContainerError, ContainerLimits, ImageConfig, InstanceSpec, NetworkMode, Probe,
    SeccompMode, Shim, overlay,
};
use crate::logs::AppLog;

mod lifecycle;

/// The runc binary: `$BERTH_RUNC`, else `runc` on `PATH`, else
/// `/usr/sbin/runc` ([`find_runc`]).
fn runc_bin() -> PathBuf {
    let given = std::env::var_os("BERTH_RUNC").map(PathBuf::from);
    find_runc(given.as_deref()).unwrap_or_else(|| {
        panic!("runc is not installed (looked on PATH and in /usr/sbin): these tests need a real runc; run the project's setup script (apt-get install runc)")
    })
}

struct Env {
    dir: tempfile::TempDir,
    shim: Shim,
    rootfs: PathBuf,
    /// Where every instance's output goes.
    log: Arc<AppLog>,
}

impl Env {
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts `spec` on the test image, its output into [`Self::log`].
    async fn start(&self, spec: InstanceSpec) -> Result<Container, ContainerError> {
        self.shim
            .start(&self.rootfs, spec, Arc::clone(&self.log))
            .await
    }

    /// The lines of instance `id` in the log: `stream text` each.
    fn output_of(&self, id: &str) -> Vec<String> {
        let text = crate::logs::read_all(&self.dir.path().join("logs"), "app").unwrap();
        // An instance's lines: its id, and `-` for the trace.
        let tag = format!(" {id} - ");
        text.lines()
            .filter_map(|l| l.split_once(&tag).map(|(_, rest)| rest.to_owned()))
            .collect()
    }
}

/// A failed test must not leave containers or mounts behind either.
impl Drop for Env {
    fn drop(&mut self) {
        let state = self.state_dir();
        let runc = |args: &[&str]| {
            std::process::Command::new(self.shim.runc().binary())
                .arg("--root")
                .arg(state.join("runc"))
                .args(args)
                .output()
        };
        if let Ok(out) = runc(&["list", "-q"]) {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = runc(&["delete", "--force", id]);
            }
        }
        for m in overlay::mounts_under(&state).unwrap_or_default() {
            let _ = overlay::unmount(&m);
        }
    }
}

fn setup() -> Env {
    assert!(
        rustix::process::geteuid().is_root(),
        "container tests must run as root (runc, overlay mounts)"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox is missing: install busybox-static"
    );
    let dir = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(&dir.path().join("image"));
    let shim = Shim::new(&dir.path().join("state"), runc_bin()).unwrap();
    let log = Arc::new(AppLog::open(&dir.path().join("logs"), "app").unwrap());
    Env {
        dir,
        shim,
        rootfs,
        log,
    }
}

/// A tiny image: static busybox, a `www` user, a web root.
fn make_rootfs(root: &Path) -> PathBuf {
    use std::os::unix::fs::{PermissionsExt as _, symlink};
    for d in ["bin", "etc", "www", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for tool in [
        "sh", "httpd", "wget", "id", "sleep", "echo", "cat", "cp", "pwd", "hostname", "ls",
    ] {
        symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nwww:x:33:\nstaff:x:50:www\n",
    )
    .unwrap();
    std::fs::write(root.join("www/index.html"), "hello from berth\n").unwrap();
    std::fs::set_permissions(root.join("www"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    root.to_path_buf()
}

fn unique_id(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{prefix}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free port below the kernel's ephemeral range (32768 and up), so that
/// no socket another test binds to port 0 meanwhile can take it: each call
/// tries the next port of this process's own stretch.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 100) as u16 * 100;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        if std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            return port;
        }
    }
}

/// An instance running `sh -c SCRIPT`.
fn sh(prefix: &str, script: &str) -> InstanceSpec {
    InstanceSpec {
        id: unique_id(prefix),
        app: "hello".into(),
        revision: "hello-00001".into(),
        image: ImageConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec![script.into()],
            env: vec!["GREETING=image".into()],
            working_dir: None,
            user: None,
        },
        env: BTreeMap::new(),
        port: free_port(),
        limits: ContainerLimits::default(),
        network: NetworkMode::Host,
        seccomp: SeccompMode::Default,
        readiness: Probe::Tcp,
        startup_timeout: Duration::from_secs(10),
        stop_grace: Duration::from_secs(5),
        allowed_networks: Vec::new(),
    }
}

/// `httpd` serving `/www` on `$PORT`, after `prelude`; SIGTERM stops it.
fn httpd(prefix: &str, prelude: &str) -> InstanceSpec {
    sh(
        prefix,
        &format!("{prelude}\ntrap 'exit 0' TERM\nhttpd -f -p $PORT -h /www &\nwait"),
    )
}

/// `GET path` over `stream`; (status, body).
async fn get(mut stream: TcpStream, path: &str) -> (u16, String) {
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("response within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = status_code(&buf).unwrap_or_else(|| panic!("not HTTP: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn host_get(port: u16, path: &str) -> (u16, String) {
    get(
        TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap(),
        path,
    )
    .await
}

/// Nothing of `id` remains: no runc container, no mount, no directory, no process.
async fn assert_gone(env: &Env, id: &str, pid: Option<u32>) {
    assert_eq!(
        env.shim.runc().state(id).await.unwrap(),
        None,
        "runc still knows {id}"
    );
    let dir = env.state_dir().join("instances").join(id);
    assert_eq!(
        overlay::mounts_under(&dir).unwrap(),
        Vec::<PathBuf>::new(),
        "mounts left"
    );
    assert!(!dir.exists(), "{} left", dir.display());
    if let Some(pid) = pid {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} (or its zombie) left"
        );
    }
}

/// A host loopback listener answering every connection with `ok`; counts them.
async fn host_listener() -> (u16, Arc<AtomicU32>) {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU32::new(0));
    let h = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await;
            let _ = s
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    (port, hits)
}

/// The status code of an HTTP/1.x response's status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok())?
}
