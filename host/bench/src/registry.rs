//! A throw-away OCI registry on loopback: Debian's `docker-registry` (CNCF
//! distribution) serving a directory on a free `127.0.0.1` port, killed
//! when dropped (the bench drops it on success, on error and on Ctrl-C).
//! The integration tests run theirs with it too
//! (`tests/all/support/registry.rs`), with the [`RegistryOptions`] they
//! need: an access log to count requests by, deletes, basic auth.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Where Debian installs it.
pub const DEFAULT_BINARY: &str = "/usr/bin/docker-registry";
/// How long the registry may take to answer `GET /v2/`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// The registry binary: `docker-registry` on `PATH`, else
/// [`DEFAULT_BINARY`].
pub fn find_binary() -> Option<PathBuf> {
    super::find_on_path("docker-registry").or_else(|| {
        let p = PathBuf::from(DEFAULT_BINARY);
        p.is_file().then_some(p)
    })
}

/// What a registry does beyond serving its storage (the bench's: none
/// of it, warnings only in its log).
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Log at `info`, one access-log line per request.
    pub access_log: bool,
    /// Allow deleting manifests and blobs.
    pub delete: bool,
    /// Require HTTP basic auth, checked against this htpasswd file
    /// (bcrypt entries).
    pub htpasswd: Option<PathBuf>,
}

/// A running registry, killed on drop.
#[derive(Debug)]
pub struct Registry {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Registry {
    /// Starts `binary serve CONFIG` with its storage, config and log under
    /// `dir`, and waits until it answers.
    ///
    /// # Errors
    /// When it cannot be started or does not answer within 15 s (its log is
    /// quoted).
    pub async fn start(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        let (binary, dir) = (binary.to_path_buf(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || {
            Self::start_blocking(&binary, &dir, &RegistryOptions::default())
        })
        .await?
    }

    /// [`start`](Self::start), blocking the thread, with `options`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_blocking(
        binary: &Path,
        dir: &Path,
        options: &RegistryOptions,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("config.yml");
        let log = dir.join("registry.log");
        let (level, access_log) = if options.access_log {
            ("info", "false")
        } else {
            ("warn", "true")
        };
        let delete = if options.delete {
            "  delete:\n    enabled: true\n"
        } else {
            ""
        };
        let auth = options.htpasswd.as_ref().map_or_else(String::new, |path| {
            format!(
                "auth:\n  htpasswd:\n    realm: berth\n    path: {}\n",
                path.display()
            )
        });
        let mut last_log = String::new();
        // The port is found by binding and released before the registry
        // binds it; another process could take it in between, so try again.
        for _ in 0..3 {
            let addr = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("cannot find a free loopback port")?;
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: {level}\n  accesslog:\n    disabled: {access_log}\n\
                     storage:\n  filesystem:\n    rootdirectory: {storage}\n{delete}\
                     http:\n  addr: {addr}\n\
                     {auth}",
                    storage = dir.join("storage").display(),
                ),
            )?;
            let log_file = std::fs::File::create(&log)?;
            let child = Command::new(binary)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .spawn()
                .with_context(|| format!("cannot start {}", binary.display()))?;
            let mut registry = Self {
                addr,
                child,
                log: log.clone(),
            };
            if registry.wait_ready(options.htpasswd.is_some()) {
                return Ok(registry);
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            drop(registry);
        }
        anyhow::bail!(
            "{} did not answer on loopback within {STARTUP_TIMEOUT:?}; its log:\n{last_log}",
            binary.display()
        )
    }

    /// Polls `GET /v2/` until it answers 200 (or, with `auth`, 401).
    fn wait_ready(&mut self, auth: bool) -> bool {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // exited, e.g. the port was taken
            }
            match get_status(self.addr, "/v2/") {
                Some(200) => return true,
                Some(401) if auth => return true,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `127.0.0.1:PORT/<repo_and_tag>`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// Its log (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The registry's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of a plain HTTP/1.0 `GET path`, if anything answers
/// within 2 s.
fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
