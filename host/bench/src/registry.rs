//! A throw-away OCI registry on loopback: Debian's `docker-registry` (CNCF
//! distribution) serving a temporary directory on a free `127.0.0.1` port,
//! killed when dropped (the bench drops it on success, on error and on
//! Ctrl-C).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::client::TimedClient;

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
        std::fs::create_dir_all(dir)?;
        let config = dir.join("config.yml");
        let log = dir.join("registry.log");
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
                     log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {storage}\n\
                     http:\n  addr: {addr}\n",
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
            if registry.wait_ready().await {
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

    /// Polls `GET /v2/` until it answers 200.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if get_status(self.addr, "/v2/").await == Some(200) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// `127.0.0.1:PORT/<repo_and_tag>`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
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

/// The status code of `GET path`, if anything answers within 2 s.
async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let mut client = TimedClient::connect(addr, &addr.to_string()).await.ok()?;
        client.get(path).await.ok()
    };
    let timed = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()??;
    Some(timed.status.as_u16())
}
