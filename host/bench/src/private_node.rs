//! The private node of `berth bench containerd --cri --private-node`: a
//! containerd 1.7 with its CRI plugin that the bench starts, configures
//! (the `berth` handler from the snippet users add, a sandbox image from
//! the bench's registry, CNI `bridge` + `host-local` on a bridge and `/24`
//! of its own) and removes again ([`PrivateNode`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::cri::{self, CriClient};
use crate::cri_bench::{CONFIG_SNIPPET, SHIM, STOP_TIMEOUT};

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
        let bridge = format!("bbench{:x}", pid % 0xffff);
        let subnet = format!("10.232.{}.0/24", pid % 256);
        let network = format!("berth-bench-{pid}");
        let conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&conf_dir)?;
        let conflist = cri::bridge_conflist(&network, &bridge, &subnet, &dir.join("ipam"));
        std::fs::write(
            conf_dir.join("10-berth-bench.conflist"),
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
        let socket = dir.join("containerd.sock");
        // `restrict_oom_score_adj`: some VMs refuse to lower a process's
        // oom_score_adj even for root, and the CRI asks runc for -998 on a
        // sandbox; restricted, it asks for no less than containerd's own.
        let mut config: toml::Table = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n\
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
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
            opt = dir.join("opt").display(),
            conf_dir = conf_dir.display(),
            certs = dir.join("certs.d").display(),
        )
        .parse()
        .context("the node's config is not TOML")?;
        let mut snippet: toml::Table = CONFIG_SNIPPET
            .parse()
            .context("deploy/kubernetes/containerd-config.toml is not TOML")?;
        snippet.remove("version");
        merge_tables(&mut config, snippet);
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config.to_string())?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let child = Command::new(&containerd)
            .arg("--config")
            .arg(&config_path)
            .env(
                "PATH",
                format!(
                    "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    shim_dir.display(),
                    bin.display()
                ),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", containerd.display()))?;
        Ok(Self {
            socket,
            dir: dir.to_path_buf(),
            bridge,
            child: Some(child),
        })
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Pids of the shims this daemon started (their `-address` is its
    /// socket).
    fn shim_pids(&self) -> Vec<u32> {
        let needle = self.socket.display().to_string();
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

    /// Mounts left under the node's directory.
    fn mounts(&self) -> Vec<String> {
        let dir = self.dir.display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .map(String::from)
            .collect()
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
            rt.block_on(async {
                let client = CriClient::connect(&socket).await?;
                let pods = client.list_pod_sandboxes().await?;
                for pod in &pods {
                    let _ = client.stop_pod_sandbox(pod).await;
                    let _ = client.remove_pod_sandbox(pod).await;
                }
                Ok(pods)
            })
        })
        .join();
        if let Ok(Ok(pods)) = pods {
            left.extend(pods.into_iter().map(|p| format!("pod {p}")));
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !self.shim_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in self.shim_pids() {
            left.push(format!("shim process {pid}"));
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        if let Some(pid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() >= deadline => {
                    left.push("containerd did not exit on SIGTERM".into());
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            left.push(format!("mount {m}"));
            let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        left
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Merges `from` into `into`: tables key by key (recursively), anything
/// else replaced.
fn merge_tables(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => merge_tables(old, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}
