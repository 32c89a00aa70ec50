//! What `Create` prepares for a task.
//!
//! containerd hands the shim a bundle directory (`config.json`, an empty
//! `rootfs/`) and the snapshot's mounts; the shim mounts them on the
//! bundle's root (containerd 1.6 does not). The image's entrypoint,
//! `process.args[0]`, names the component inside the rootfs: it is opened
//! with `openat2(RESOLVE_IN_ROOT)`, so a symlink or `..` in the image
//! resolves inside the rootfs and never reaches the host's files.
//!
//! Settings come from the container's environment, because it is what
//! every layer (ctr, CRI, Knative) passes through unchanged: `PORT` (8080),
//! and berth's app settings, validated exactly as `berth.toml`'s:
//! `BERTH_MEMORY_LIMIT` (`limits.memory`), `BERTH_TIMEOUT`
//! (`limits.timeout`), `BERTH_REQUEST_BODY_LIMIT` (`limits.request_body`),
//! `BERTH_OUTBOUND_CONNECTIONS` and `BERTH_OUTBOUND_CONNECTIONS_PER_REQUEST`
//! (`limits.outbound_connections[_per_request]`),
//! `BERTH_OUTBOUND_POOL_IDLE_PER_HOST` and `BERTH_OUTBOUND_POOL_IDLE_TIMEOUT`
//! (`limits.outbound_pool_idle_*`),
//! `BERTH_ALLOWED_OUTBOUND_HOSTS` (comma-separated `allowed_outbound_hosts`),
//! `BERTH_ALLOWED_NETWORKS` (comma-separated `allowed_networks`),
//! `BERTH_KEYVALUE` (comma-separated `wasi:keyvalue` buckets: on the
//! embedded store under the shim's data dir, or, with
//! `BERTH_KEYVALUE_REDIS_URL=redis://[user:password@]host:port[/db]`, all
//! of them on that Redis server). The app's data is kept under its name:
//! `K_SERVICE`, else the container's id.

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use berth_wasm::limits::{Limits, parse_duration, parse_size};
use berth_wasm::reuse::{InstanceReuse, ReuseMode};
use berth_wasm::standalone::LoadedComponent;
use berth_wasm::{AppSettings, InvalidSetting, WasmRuntime};
use containerd_shim::protos::types::mount::Mount;
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::netns::NetNamespace;

/// The largest component the shim reads from an image.
pub const MAX_COMPONENT_BYTES: u64 = 256 * 1024 * 1024;
/// The port a wasi:http component is served on without `PORT`.
pub const DEFAULT_PORT: u16 = 8080;

/// The annotation the CRI puts on each container of a pod: `sandbox` on
/// the pod's sandbox ("pause") container, which it creates first, through
/// the same runtime; `container` on the others.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// What a task runs, between `Create` and `Start`.
#[derive(Debug)]
pub enum Workload {
    /// A component (boxed: it is large).
    Component(Box<Prepared>),
    /// A pod's sandbox.
    Sandbox(Sandbox),
}

/// A pod's sandbox container: the pod's first task. Its image's entrypoint
/// (`/pause`) is not read; a holder process ([`pause`](crate::pause)) keeps
/// the pod's network namespace under the task's pid until it is killed.
/// The pod's other containers join this shim by the sandbox id.
#[derive(Debug)]
pub struct Sandbox {
    /// The holder (killed if dropped).
    pub holder: crate::pause::Holder,
    /// The task's stdout and stderr, held open while it runs and closed at
    /// its end, as a process's would be (`None`: not connected).
    pub _stdio: (Option<File>, Option<File>),
}

/// The sandbox the bundle's spec describes, if it is one (its
/// [`CONTAINER_TYPE`] annotation says `sandbox`).
///
/// # Errors
/// When the spec cannot be read or, for a sandbox, its holder started or
/// its stdio opened.
pub async fn sandbox(bundle: &Path, stdout: &str, stderr: &str) -> anyhow::Result<Option<Sandbox>> {
    let spec = load_spec(bundle)?;
    let is_sandbox = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINER_TYPE))
        .is_some_and(|t| t == "sandbox");
    if !is_sandbox {
        return Ok(None);
    }
    let holder = crate::pause::Holder::spawn(&NetNamespace::from_spec(&spec))
        .await
        .context("cannot start the sandbox's holder process")?;
    Ok(Some(Sandbox {
        holder,
        _stdio: (
            open_output(stdout).context("stdout")?,
            open_output(stderr).context("stderr")?,
        ),
    }))
}

fn load_spec(bundle: &Path) -> anyhow::Result<oci_spec::runtime::Spec> {
    let path = bundle.join("config.json");
    oci_spec::runtime::Spec::load(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// A component task between `Create` and `Start`.
#[derive(Debug)]
pub struct Prepared {
    /// The compiled, classified component.
    pub loaded: LoadedComponent,
    /// What the guest sees as `BERTH_APP` (`K_SERVICE`, else the task id).
    pub name: String,
    /// `process.args` (argument 0 is the component's path in the image).
    pub args: Vec<String>,
    /// `process.env`.
    pub env: Vec<(String, String)>,
    /// Limits and outbound allow-list, validated as berth's.
    pub settings: AppSettings,
    /// Where its listening socket goes.
    pub network: NetNamespace,
    /// `PORT`.
    pub port: u16,
    /// The task's stdout and stderr (`None`: not connected).
    pub stdout: Option<File>,
    /// See `stdout`.
    pub stderr: Option<File>,
    /// The mounted rootfs (a command sees it as `/`).
    pub rootfs: PathBuf,
}

/// Mounts the snapshot's `mounts` on `target`, in order. Returns whether
/// anything was mounted.
///
/// # Errors
/// A mount that fails, with its type and source.
pub fn mount_rootfs(mounts: &[Mount], target: &Path) -> anyhow::Result<bool> {
    for m in mounts {
        let fs_type = (!m.type_.is_empty()).then_some(m.type_.as_str());
        let source = (!m.source.is_empty()).then_some(m.source.as_str());
        containerd_shim::mount::mount_rootfs(fs_type, source, &m.options, target).with_context(
            || {
                format!(
                    "cannot mount the rootfs ({} {}) on {}",
                    m.type_,
                    m.source,
                    target.display()
                )
            },
        )?;
    }
    Ok(!mounts.is_empty())
}

/// Unmounts everything at or below `target`.
pub fn unmount_rootfs(target: &Path) {
    if let Some(t) = target.to_str()
        && let Err(e) = containerd_shim::mount::umount_recursive(Some(t), 0)
    {
        tracing::warn!(target = t, "cannot unmount the rootfs: {e}");
    }
}

/// Reads the bundle's spec and the component, compiles (or maps) it. The
/// component is the rootfs file `process.args[0]` names; when there is none,
/// `wasm_layer` is asked for the image's Wasm layer (containerd >= 1.7.7
/// pulls one without unpacking it: [`crate::content`]).
///
/// # Errors
/// What is wrong with the spec, the image or the component, named.
pub fn prepare(
    runtime: &WasmRuntime,
    id: &str,
    bundle: &Path,
    stdout: &str,
    stderr: &str,
    wasm_layer: &dyn Fn() -> anyhow::Result<Option<crate::content::WasmLayer>>,
) -> anyhow::Result<Prepared> {
    let spec = load_spec(bundle)?;
    let process = spec
        .process()
        .as_ref()
        .context("config.json has no `process`")?;
    let args = process.args().clone().unwrap_or_default();
    let Some(entry) = args.first() else {
        bail!("the container has no command: the image's entrypoint must name the .wasm file");
    };
    let env: Vec<(String, String)> = process
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let get = |key: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let root = spec
        .root()
        .as_ref()
        .map_or_else(|| PathBuf::from("rootfs"), |r| r.path().clone());
    let rootfs = if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    };
    let cwd = process.cwd().clone();
    // The component is the file the entrypoint names in the rootfs; when
    // the rootfs has none, the image's Wasm layer, if it has one.
    let (shown, bytes) = match resolve_in_image(&rootfs, entry, &cwd, get("PATH"))
        .and_then(|p| Ok((p.display().to_string(), read_in_root(&rootfs, &p)?)))
    {
        Ok(found) => found,
        Err(in_rootfs) => match wasm_layer() {
            Ok(Some(layer)) => {
                tracing::info!(
                    id,
                    digest = %layer.digest,
                    media_type = %layer.media_type,
                    bytes = layer.bytes.len(),
                    "the component is the image's Wasm layer, read from containerd's content store"
                );
                (format!("layer {}", layer.digest), layer.bytes)
            }
            Ok(None) => return Err(in_rootfs),
            Err(e) => bail!(
                "{in_rootfs:#}; and the image's Wasm layer cannot be read from containerd: {e:#}"
            ),
        },
    };
    let loaded = runtime
        .load_component(&shown, &bytes)
        .map_err(anyhow::Error::from)?;
    let port = match get("PORT") {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse()
            .with_context(|| format!("PORT={p:?} is not a port number"))?,
    };
    let settings = app_settings(&get)?;
    let name = get("K_SERVICE").unwrap_or(id).to_string();
    Ok(Prepared {
        loaded,
        name,
        args: args.clone(),
        env: env.clone(),
        settings,
        network: NetNamespace::from_spec(&spec),
        port,
        stdout: open_output(stdout).context("stdout")?,
        stderr: open_output(stderr).context("stderr")?,
        rootfs,
    })
}

/// berth's app settings from the container's environment, checked as
/// `berth.toml`'s are ([`AppSettings::validate`]).
fn app_settings<'a>(get: &dyn Fn(&str) -> Option<&'a str>) -> anyhow::Result<AppSettings> {
    let invalid = |var: &str, reason: String| {
        anyhow::anyhow!("invalid BERTH_* settings in the environment: {var}: {reason}")
    };
    let mut limits = Limits::default();
    if let Some(v) = get("BERTH_MEMORY_LIMIT") {
        limits.memory = parse_size(v).map_err(|r| invalid("BERTH_MEMORY_LIMIT", r))?;
    }
    if let Some(v) = get("BERTH_TIMEOUT") {
        limits.timeout = parse_duration(v).map_err(|r| invalid("BERTH_TIMEOUT", r))?;
    }
    if let Some(v) = get("BERTH_REQUEST_BODY_LIMIT") {
        limits.request_body = parse_size(v).map_err(|r| invalid("BERTH_REQUEST_BODY_LIMIT", r))?;
    }
    let count = |var: &str, v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| invalid(var, format!("`{v}` is not a count")))
    };
    if let Some(v) = get("BERTH_OUTBOUND_CONNECTIONS") {
        limits.outbound_connections = count("BERTH_OUTBOUND_CONNECTIONS", v)?;
    }
    if let Some(v) = get("BERTH_OUTBOUND_CONNECTIONS_PER_REQUEST") {
        limits.outbound_connections_per_request =
            count("BERTH_OUTBOUND_CONNECTIONS_PER_REQUEST", v)?;
    }
    if let Some(v) = get("BERTH_OUTBOUND_POOL_IDLE_PER_HOST") {
        limits.outbound_pool_idle_per_host = count("BERTH_OUTBOUND_POOL_IDLE_PER_HOST", v)?;
    }
    if let Some(v) = get("BERTH_OUTBOUND_POOL_IDLE_TIMEOUT") {
        limits.outbound_pool_idle_timeout =
            parse_duration(v).map_err(|r| invalid("BERTH_OUTBOUND_POOL_IDLE_TIMEOUT", r))?;
    }
    let reuse = reuse_settings(get).map_err(|e| invalid(&e.key, e.reason))?;
    let list = |var: &str| -> Vec<String> {
        get(var)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(String::from)
            .collect()
    };
    let keyvalue = list("BERTH_KEYVALUE");
    let keyvalue_store = match get("BERTH_KEYVALUE_REDIS_URL") {
        None => None,
        Some(_) if keyvalue.is_empty() => {
            return Err(invalid(
                "BERTH_KEYVALUE_REDIS_URL",
                "is set, but BERTH_KEYVALUE names no bucket".into(),
            ));
        }
        Some(url) => {
            berth_wasm::keyvalue::check_redis_url(url)
                .map_err(|r| invalid("BERTH_KEYVALUE_REDIS_URL", r))?;
            Some(berth_wasm::keyvalue::StoreConfig::Redis { url: url.into() })
        }
    };
    let settings = AppSettings {
        reuse,
        env: Vec::new(),
        allowed_outbound_hosts: list("BERTH_ALLOWED_OUTBOUND_HOSTS"),
        allowed_networks: list("BERTH_ALLOWED_NETWORKS"),
        limits,
        // Buckets on the embedded store under the shim's data dir, or all
        // on the container's Redis; the quotas are the defaults.
        keyvalue,
        keyvalue_limits: berth_wasm::keyvalue::KvQuota::default(),
        keyvalue_store,
    };
    settings.validate().map_err(|e| invalid(&e.key, e.reason))?;
    Ok(settings)
}

/// `[instances]` from `BERTH_INSTANCE_REUSE` (`none` | `serial` |
/// `concurrent`), `BERTH_MAX_REQUESTS_PER_INSTANCE`,
/// `BERTH_MAX_CONCURRENT_PER_INSTANCE` and `BERTH_INSTANCE_IDLE_TIMEOUT`;
/// `None` when none is set (the component's world decides).
fn reuse_settings<'a>(
    get: &dyn Fn(&str) -> Option<&'a str>,
) -> Result<Option<InstanceReuse>, InvalidSetting> {
    let mode = get("BERTH_INSTANCE_REUSE");
    let max = get("BERTH_MAX_REQUESTS_PER_INSTANCE");
    let at_once = get("BERTH_MAX_CONCURRENT_PER_INSTANCE");
    let idle = get("BERTH_INSTANCE_IDLE_TIMEOUT");
    if mode.is_none() && max.is_none() && at_once.is_none() && idle.is_none() {
        return Ok(None);
    }
    let mode = match mode {
        Some(m) => {
            ReuseMode::parse(m).map_err(|r| InvalidSetting::new("BERTH_INSTANCE_REUSE", r))?
        }
        None => ReuseMode::Serial,
    };
    let mut reuse = mode.defaults();
    if let Some(v) = max {
        reuse.max_requests_per_instance = v.parse().map_err(|_| {
            InvalidSetting::new(
                "BERTH_MAX_REQUESTS_PER_INSTANCE",
                format!("{v:?} is not a count"),
            )
        })?;
    }
    if let Some(v) = at_once {
        reuse.max_concurrent_per_instance = v.parse().map_err(|_| {
            InvalidSetting::new(
                "BERTH_MAX_CONCURRENT_PER_INSTANCE",
                format!("{v:?} is not a count"),
            )
        })?;
    }
    if let Some(v) = idle {
        reuse.idle_timeout =
            parse_duration(v).map_err(|r| InvalidSetting::new("BERTH_INSTANCE_IDLE_TIMEOUT", r))?;
    }
    Ok(Some(reuse))
}

/// The component's path inside the image: `entry` as is when it has a `/`
/// (relative ones from `cwd`), else looked up in the image's `PATH`.
fn resolve_in_image(
    rootfs: &Path,
    entry: &str,
    cwd: &Path,
    path_var: Option<&str>,
) -> anyhow::Result<PathBuf> {
    if entry.contains('/') {
        return Ok(Path::new("/").join(cwd).join(entry));
    }
    let search = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    for dir in search.split(':').filter(|d| !d.is_empty()).take(64) {
        let candidate = Path::new("/").join(dir).join(entry);
        if open_in_root(rootfs, &candidate).is_ok() {
            return Ok(candidate);
        }
    }
    bail!("`{entry}` (the image's entrypoint) is not found in the image's PATH {search:?}")
}

fn open_in_root(rootfs: &Path, path: &Path) -> std::io::Result<File> {
    let root = File::open(rootfs)?;
    let fd = rustix::fs::openat2(
        &root,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )?;
    Ok(File::from(fd))
}

/// Reads the file at `path` of the image, at most [`MAX_COMPONENT_BYTES`].
fn read_in_root(rootfs: &Path, path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = open_in_root(rootfs, path)
        .with_context(|| format!("cannot open `{}` in the image", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("`{}` in the image is not a regular file", path.display());
    }
    if meta.len() > MAX_COMPONENT_BYTES {
        bail!(
            "`{}` is {} bytes, more than the shim's limit of {MAX_COMPONENT_BYTES} bytes (MAX_COMPONENT_BYTES) for a component",
            path.display(),
            meta.len()
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read `{}` in the image", path.display()))?;
    Ok(bytes)
}

/// Opens a task's stdout or stderr as containerd names it: empty (not
/// connected), a FIFO path (its reader is containerd's or ctr's), or a
/// `file://` URI (`ctr run --log-uri file:///PATH`), appended to.
fn open_output(target: &str) -> anyhow::Result<Option<File>> {
    if target.is_empty() {
        return Ok(None);
    }
    if let Some(path) = target.strip_prefix("file://") {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open log file {path}"))?;
        return Ok(Some(f));
    }
    if target.contains("://") {
        bail!("stdio target {target:?}: only FIFOs and file:// are supported (no binary://)");
    }
    // O_NONBLOCK so that a FIFO with no reader fails at once (ENXIO) instead
    // of hanging Create; then blocking again, so no output is dropped.
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(target)
        .with_context(|| format!("cannot open {target} (is anything reading it?)"))?;
    let flags = rustix::fs::fcntl_getfl(&f)?;
    rustix::fs::fcntl_setfl(&f, flags - OFlags::NONBLOCK)?;
    Ok(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<AppSettings> {
        let get = |key: &str| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        app_settings(&get)
    }

    #[test]
    fn instance_reuse_comes_from_the_environment() {
        assert_eq!(settings(&[]).unwrap().reuse, None);
        let s = settings(&[
            ("BERTH_INSTANCE_REUSE", "serial"),
            ("BERTH_MAX_REQUESTS_PER_INSTANCE", "7"),
            ("BERTH_INSTANCE_IDLE_TIMEOUT", "5s"),
        ])
        .unwrap();
        assert_eq!(
            s.reuse,
            Some(InstanceReuse {
                mode: ReuseMode::Serial,
                max_requests_per_instance: 7,
                max_concurrent_per_instance: 1,
                idle_timeout: std::time::Duration::from_secs(5),
            })
        );
        let none = settings(&[("BERTH_INSTANCE_REUSE", "none")]).unwrap();
        assert_eq!(none.reuse, Some(InstanceReuse::NONE));
        let concurrent = settings(&[
            ("BERTH_INSTANCE_REUSE", "concurrent"),
            ("BERTH_MAX_CONCURRENT_PER_INSTANCE", "4"),
        ])
        .unwrap();
        assert_eq!(
            concurrent.reuse,
            Some(InstanceReuse {
                max_concurrent_per_instance: 4,
                ..InstanceReuse::CONCURRENT
            })
        );
        for (var, value, says) in [
            ("BERTH_INSTANCE_REUSE", "sometimes", "not one of"),
            ("BERTH_MAX_REQUESTS_PER_INSTANCE", "0", "outside 1..="),
            ("BERTH_MAX_REQUESTS_PER_INSTANCE", "many", "not a count"),
            ("BERTH_MAX_CONCURRENT_PER_INSTANCE", "lots", "not a count"),
        ] {
            let err = format!("{:#}", settings(&[(var, value)]).unwrap_err());
            assert!(err.contains(says), "{var}={value}: {err}");
        }
    }

    #[test]
    fn settings_come_from_the_environment_checked_as_berths() {
        let s = settings(&[
            ("BERTH_MEMORY_LIMIT", "32MiB"),
            ("BERTH_TIMEOUT", "5s"),
            (
                "BERTH_ALLOWED_OUTBOUND_HOSTS",
                "example.com, *.example.org:443,",
            ),
            ("BERTH_ALLOWED_NETWORKS", "10.20.0.0/16, fd00:1::/32"),
        ])
        .unwrap();
        assert_eq!(s.limits.memory, 32 << 20);
        assert_eq!(s.limits.timeout, std::time::Duration::from_secs(5));
        assert_eq!(
            s.allowed_outbound_hosts,
            ["example.com", "*.example.org:443"]
        );
        assert_eq!(s.allowed_networks, ["10.20.0.0/16", "fd00:1::/32"]);
        assert_eq!(settings(&[]).unwrap(), AppSettings::default());
        for (var, value, says) in [
            ("BERTH_MEMORY_LIMIT", "lots", "BERTH_MEMORY_LIMIT"),
            ("BERTH_MEMORY_LIMIT", "8GiB", "limits.memory"),
            ("BERTH_TIMEOUT", "0s", "limits.timeout"),
            (
                "BERTH_ALLOWED_OUTBOUND_HOSTS",
                "ftp://x",
                "allowed_outbound_hosts",
            ),
            ("BERTH_ALLOWED_NETWORKS", "0.0.0.0/0", "allowed_networks"),
        ] {
            let e = settings(&[(var, value)]).unwrap_err().to_string();
            assert!(e.contains(says), "{var}={value}: {e}");
        }
    }

    #[test]
    fn keyvalue_buckets_and_their_redis_come_from_the_environment() {
        let s = settings(&[("BERTH_KEYVALUE", "default, sessions")]).unwrap();
        assert_eq!(s.keyvalue, ["default", "sessions"]);
        assert_eq!(s.keyvalue_store, None);
        let url = "redis://user:pw@127.0.0.1:6379/2";
        let s = settings(&[
            ("BERTH_KEYVALUE", "default"),
            ("BERTH_KEYVALUE_REDIS_URL", url),
        ])
        .unwrap();
        assert_eq!(
            s.keyvalue_store,
            Some(berth_wasm::keyvalue::StoreConfig::Redis { url: url.into() })
        );
        let e = settings(&[("BERTH_KEYVALUE_REDIS_URL", url)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("BERTH_KEYVALUE names no bucket"), "{e}");
        let e = settings(&[
            ("BERTH_KEYVALUE", "default"),
            ("BERTH_KEYVALUE_REDIS_URL", "http://user:pw@x"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("BERTH_KEYVALUE_REDIS_URL"), "{e}");
        assert!(!e.contains("pw"), "the URL is never repeated: {e}");
    }
}
