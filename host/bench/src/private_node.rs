//! The private node of `berth bench containerd --cri --private-node`: a
//! containerd 1.7 with its CRI plugin that the bench starts, configures
//! (the `berth` handler from the snippet users add, a sandbox image from
//! the bench's registry, CNI `bridge` + `host-local` on a bridge and `/24`
//! of its own) and removes again ([`PrivateNode`]).
//!
//! The pieces it is made of are public, for the shim's and the CRI tests'
//! own daemons (`tests/all/support/containerd.rs`, `cri.rs`): the config
//! ([`base_config`], [`cri_config`], [`config_snippet`], [`merge_tables`]),
//! starting it ([`spawn`]) and cleaning up after it ([`shim_pids`],
//! [`wait_for_shims`], [`terminate`], [`mounts_under`], [`unmount_all`],
//! [`delete_link`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::cri::{self, CriClient};
use crate::cri_bench::{CONFIG_SNIPPET, SHIM};

/// Bound on a private containerd exiting on SIGTERM, and its shims after.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A containerd with its CRI plugin, started by the bench for the run: its
/// own root, state, sockets, config, CNI network and bridge, all under one
/// directory of the bench's; [`stop`](Self::stop) (or dropping it) removes
/// what pods are left, stops it and its shims, and deletes the bridge.
#[derive(Debug)]
pub struct PrivateNode {
    /// Its gRPC socket (CRI included).
    pub socket: PathBuf,
    /// Its directory.
    dir: PathBuf,
    /// The bridge CNI attaches pods to.
    bridge: String,
    child: Option<Child>,
}

impl PrivateNode {
    /// Starts `<containerd_dir>/usr/bin/containerd` with `shim` on its
    /// `PATH`, in `dir`, its sandbox image `sandbox_image`, the registry at
    /// `registry` (plain HTTP, loopback) trusted for pulls.
    ///
    /// # Errors
    /// A missing binary, a config that cannot be written, a daemon that
    /// does not start.
    pub fn start(
        containerd_dir: &Path,
        shim: &Path,
        dir: &Path,
        sandbox_image: &str,
        registry: &str,
    ) -> anyhow::Result<Self> {
        let bin = containerd_dir.join("usr/bin");
        let containerd = bin.join("containerd");
        let version = Command::new(&containerd)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .with_context(|| {
                format!(
                    "cannot run {} (scripts/setup.sh unpacks containerd 1.7.24 there)",
                    containerd.display()
                )
            })?;
        if !version.contains(" 1.7.") {
            bail!(
                "{} is not containerd 1.7 (it says {:?}); the private node needs 1.7's CRI plugin",
                containerd.display(),
                version.trim()
            );
        }
        if !shim.is_file() {
            bail!(
                "{} does not exist (cargo build --release -p berth-shim, or --shim PATH)",
                shim.display()
            );
        }
        let shim_dir = shim.parent().context("the shim's directory")?;
        if shim.file_name().and_then(|n| n.to_str()) != Some(SHIM) {
            bail!("--shim must name a file called {SHIM}: containerd finds it by that name");
        }
        std::fs::create_dir_all(dir)?;
        let pid = std::process::id();
        let network = CniNetwork {
            name: format!("berth-bench-{pid}"),
            bridge: format!("bbench{:x}", pid % 0xffff),
            subnet: format!("10.232.{}.0/24", pid % 256),
        };
        let socket = dir.join("containerd.sock");
        let mut config = base_config(dir, &socket, true);
        merge_tables(
            &mut config,
            cri_config(dir, &network, sandbox_image, registry)?,
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config.to_string())?;
        let child = spawn(&bin, shim_dir, &config_path, &dir.join("containerd.log"))
            .with_context(|| format!("cannot start {}", containerd.display()))?;
        Ok(Self {
            socket,
            dir: dir.to_path_buf(),
            bridge: network.bridge,
            child: Some(child),
        })
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Removes what pods are left (through the CRI), stops the daemon
    /// (SIGTERM), waits for its shims, deletes the bridge; returns what
    /// was left behind and had to be killed or unmounted (empty when
    /// clean).
    pub fn stop(&mut self) -> Vec<String> {
        let Some(mut child) = self.child.take() else {
            return Vec::new();
        };
        let mut left = Vec::new();
        let socket = self.socket.clone();
        let pods = std::thread::spawn(move || -> anyhow::Result<Vec<String>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async { CriClient::connect(&socket).await?.remove_all_pods().await })
        })
        .join();
        if let Ok(Ok(pods)) = pods {
            left.extend(pods.into_iter().map(|p| format!("pod {p}")));
        }
        wait_for_shims(&self.socket);
        for pid in shim_pids(&self.socket) {
            left.push(format!("shim process {pid}"));
            kill(pid, rustix::process::Signal::KILL);
        }
        if !terminate(&mut child) {
            left.push("containerd did not exit on SIGTERM".into());
        }
        for m in unmount_all(&self.dir) {
            left.push(format!("mount {m}"));
        }
        delete_link(&self.bridge);
        left
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The CNI network a node gives its pods ([`cri::bridge_conflist`]).
#[derive(Debug, Clone)]
pub struct CniNetwork {
    /// The network's name.
    pub name: String,
    /// The bridge the `bridge` plugin makes and attaches pods to.
    pub bridge: String,
    /// The pods' `/24`.
    pub subnet: String,
}

/// What every private containerd's config says: its root, state, sockets
/// (`socket`, and `socket.ttrpc`) and `/opt` plugin directory under `dir`,
/// log level `info`; without `cri`, its CRI plugin disabled.
///
/// # Panics
/// Never: the text is TOML (paths are quoted by `Display`).
pub fn base_config(dir: &Path, socket: &Path, cri: bool) -> toml::Table {
    format!(
        "version = 2\n\
         root = \"{root}\"\n\
         state = \"{state}\"\n\
         {disabled}\
         [grpc]\n  address = \"{sock}\"\n\
         [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
         [debug]\n  level = \"info\"\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        disabled = if cri {
            ""
        } else {
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
        },
        sock = socket.display(),
        opt = dir.join("opt").display(),
    )
    .parse()
    .expect("the base config is TOML")
}

/// The snippet users add to containerd's config
/// (`deploy/kubernetes/containerd-config.toml`: the `berth` handler), as
/// it is, less its `version` (the base config's).
///
/// # Errors
/// When it is not TOML or not for config version 2.
pub fn config_snippet() -> anyhow::Result<toml::Table> {
    let mut snippet: toml::Table = CONFIG_SNIPPET
        .parse()
        .context("deploy/kubernetes/containerd-config.toml is not TOML")?;
    let version = snippet.remove("version").and_then(|v| v.as_integer());
    if version != Some(2) {
        bail!("deploy/kubernetes/containerd-config.toml is for config version {version:?}, not 2");
    }
    Ok(snippet)
}

/// The CRI side of a node's config, and the files it names, under `dir`:
/// CNI on `network` (`bridge` + `host-local`, its conflist in `net.d`, its
/// IP allocations in `ipam`), the sandbox image `sandbox_image`, the
/// registry at `registry` trusted over plain HTTP (`certs.d`), the default
/// `runc` runtime, and the [`config_snippet`] merged in. Merge it into a
/// [`base_config`] made with `cri`.
///
/// # Errors
/// When a file cannot be written or the snippet is not right.
pub fn cri_config(
    dir: &Path,
    network: &CniNetwork,
    sandbox_image: &str,
    registry: &str,
) -> anyhow::Result<toml::Table> {
    let conf_dir = dir.join("net.d");
    std::fs::create_dir_all(&conf_dir)?;
    let conflist = cri::bridge_conflist(
        &network.name,
        &network.bridge,
        &network.subnet,
        &dir.join("ipam"),
    );
    std::fs::write(
        conf_dir.join("10-berth.conflist"),
        serde_json::to_vec_pretty(&conflist)?,
    )?;
    let hosts = dir.join("certs.d").join(registry);
    std::fs::create_dir_all(&hosts)?;
    std::fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"http://{registry}\"\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )?;
    // `restrict_oom_score_adj`: some VMs refuse to lower a process's
    // oom_score_adj (EIO, even for root), and the CRI asks runc for -998
    // on a sandbox; restricted, it asks for no less than containerd's own,
    // as on rootless nodes.
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
        certs = dir.join("certs.d").display(),
    )
    .parse()
    .context("the CRI config is not TOML")?;
    merge_tables(&mut config, config_snippet()?);
    Ok(config)
}

/// Starts `<bin_dir>/containerd --config CONFIG`, its stdout and stderr
/// into `log`, with `shim_dir` (the berth shim's) and `bin_dir` (its own
/// runc shim, `ctr`) first on its `PATH`.
///
/// # Errors
/// When the log cannot be made or containerd cannot be started.
pub fn spawn(bin_dir: &Path, shim_dir: &Path, config: &Path, log: &Path) -> std::io::Result<Child> {
    let log = std::fs::File::create(log)?;
    Command::new(bin_dir.join("containerd"))
        .arg("--config")
        .arg(config)
        .env(
            "PATH",
            format!(
                "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                shim_dir.display(),
                bin_dir.display()
            ),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// Pids of the shims (any runtime) the containerd on `socket` started,
/// found by the `-address SOCKET` on their command line.
pub fn shim_pids(socket: &Path) -> Vec<u32> {
    let needle = socket.display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_shim = args
            .first()
            .is_some_and(|a| String::from_utf8_lossy(a).contains("containerd-shim"));
        if is_shim && args.contains(&needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits, at most [`STOP_TIMEOUT`], until the containerd on `socket` has
/// no shim left.
pub fn wait_for_shims(socket: &Path) {
    let deadline = Instant::now() + STOP_TIMEOUT;
    while !shim_pids(socket).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` to process `pid`, if it is still there.
pub fn kill(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Stops `child` with SIGTERM, waiting at most [`STOP_TIMEOUT`]; kills it
/// if it is still there then. Whether it exited on SIGTERM.
pub fn terminate(child: &mut Child) -> bool {
    kill(child.id(), rustix::process::Signal::TERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            _ if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Mounts under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(String::from)
        .collect()
}

/// Unmounts (lazily, deepest first) what is mounted under `dir`; returns
/// what was.
pub fn unmount_all(dir: &Path) -> Vec<String> {
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in &mounts {
        let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
    }
    mounts
}

/// Deletes network link `name` (a node's bridge), if it is there.
pub fn delete_link(name: &str) {
    let _ = Command::new("ip")
        .args(["link", "delete", name])
        .stderr(Stdio::null())
        .status();
}

/// Merges `from` into `into`: tables key by key (recursively), anything
/// else replaced.
pub fn merge_tables(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => merge_tables(old, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}
