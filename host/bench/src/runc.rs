//! The bare-runc baseline: what a user gets from runc alone on the same
//! image, with the same runtime spec, and no berth.
//!
//! Prepared once: a bundle whose `rootfs` is a copy of the rootfs berth
//! unpacked for the image (a copy, so runc's mount points never land in
//! berth's shared lower layer) and whose `config.json` is the runtime spec
//! berth generated for one of its instances, with only what must differ
//! rewritten: the bind-mounted `/etc` files point at copies, and each run
//! gets its own id, cgroup, hostname and `PORT`. berth's overlay is the one
//! thing the baseline does not do (a bare-runc user with one container
//! needs none).
//!
//! One cold start: `runc run -d` (create and start in one command; it
//! returns once the container process runs), awaited as berth awaits runc,
//! and then `GET /` to `127.0.0.1:PORT` (the bench's hyper client),
//! retried every 200 µs while the port refuses, timed from spawning runc to
//! the first response byte. `runc delete -f` after each,
//! untimed. Everything is on a private `runc --root`; whatever is left there
//! is deleted on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::client::TimedClient;

/// How often a refused connection is retried.
const POLL: Duration = Duration::from_micros(200);
/// How long one cold start may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// A prepared bundle and a private runc root.
#[derive(Debug)]
pub struct BareRunc {
    runc: PathBuf,
    root: PathBuf,
    bundle: PathBuf,
    log: PathBuf,
    spec: serde_json::Value,
    prefix: String,
    runs: u64,
    expect: String,
}

impl BareRunc {
    /// Prepares the bundle under `dir` from berth's unpacked `lower_rootfs`
    /// and the runtime spec berth wrote for an instance (`berth_spec`, the
    /// `config.json` of its bundle). `expect` is the body `GET /` must
    /// answer.
    ///
    /// # Errors
    /// When the rootfs cannot be copied or the spec is not what berth
    /// writes.
    pub fn prepare(
        runc: &Path,
        dir: &Path,
        berth_spec: &Path,
        lower_rootfs: &Path,
        expect: &str,
    ) -> anyhow::Result<Self> {
        let bundle = dir.join("bundle");
        let root = dir.join("runc-root");
        let etc = dir.join("etc");
        for d in [&bundle, &root, &etc] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let rootfs = bundle.join("rootfs");
        let out = Command::new("cp")
            .arg("-a")
            .arg(lower_rootfs)
            .arg(&rootfs)
            .output()
            .context("cannot run cp")?;
        anyhow::ensure!(
            out.status.success(),
            "cannot copy {} to {}: {}",
            lower_rootfs.display(),
            rootfs.display(),
            String::from_utf8_lossy(&out.stderr)
        );

        let text = std::fs::read(berth_spec)
            .with_context(|| format!("cannot read berth's spec {}", berth_spec.display()))?;
        let mut spec: serde_json::Value =
            serde_json::from_slice(&text).context("berth's config.json is not JSON")?;
        // berth's instance directory (`…/instances/<id>`, the spec being
        // in its `scratch/bundle/`), whose files the spec bind-mounts; they
        // go when the instance stops.
        let instance_dir = berth_spec
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .context("berth's spec is not in an instance bundle")?
            .to_path_buf();
        if let Some(mounts) = spec.get_mut("mounts").and_then(|m| m.as_array_mut()) {
            for m in mounts {
                let Some(source) = m.get("source").and_then(|s| s.as_str()).map(PathBuf::from)
                else {
                    continue;
                };
                if !source.starts_with(&instance_dir) {
                    continue;
                }
                let name = source.file_name().context("a bind mount of a directory")?;
                let copy = etc.join(name);
                std::fs::copy(&source, &copy).with_context(|| {
                    format!("cannot copy {} for the baseline", source.display())
                })?;
                m["source"] = serde_json::Value::String(copy.display().to_string());
            }
        }
        anyhow::ensure!(
            spec.pointer("/root/path").and_then(|p| p.as_str()) == Some("rootfs"),
            "berth's spec does not use the bundle's rootfs"
        );
        anyhow::ensure!(
            spec.pointer("/process/env").is_some_and(|e| e.is_array()),
            "berth's spec has no process environment"
        );
        Ok(Self {
            runc: runc.to_path_buf(),
            root,
            bundle,
            log: dir.join("runc.log"),
            spec,
            prefix: format!("berth-bench-runc-{}", std::process::id()),
            runs: 0,
            expect: expect.to_owned(),
        })
    }

    /// One cold start: `runc run -d` → first byte of `GET /`.
    ///
    /// runc is spawned and awaited as berth's shim does it (tokio's process
    /// support, no busy polling that would keep a CPU awake); the port is
    /// then polled from a blocking thread.
    ///
    /// # Errors
    /// When runc fails, nothing answers within 30 s, or the answer is not
    /// the expected one.
    pub async fn cold_start(&mut self) -> anyhow::Result<Duration> {
        self.runs += 1;
        let id = format!("{}-{}", self.prefix, self.runs);
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        self.write_spec(&id, port)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;

        let t0 = Instant::now();
        let mut child = tokio::process::Command::from(self.runc())
            .args(["run", "-d", "--bundle"])
            .arg(&self.bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot run runc")?;
        let status = match tokio::time::timeout(DEADLINE, child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                let _ = child.kill().await;
                self.delete(&id);
                anyhow::bail!("runc run did not return within {DEADLINE:?}");
            }
        };
        if !status.success() {
            self.delete(&id);
            anyhow::bail!(
                "runc run failed ({status}); its log {}:\n{}",
                self.log.display(),
                tail(&self.log)
            );
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let answer = first_byte(addr, t0).await;
        self.delete(&id);
        let (elapsed, status, body) = answer?;
        let text = String::from_utf8_lossy(&body);
        anyhow::ensure!(
            status == http::StatusCode::OK && text.ends_with(&self.expect),
            "unexpected answer from the bare-runc container: {status} {text:?}"
        );
        Ok(elapsed)
    }

    fn runc(&self) -> Command {
        let mut c = Command::new(&self.runc);
        c.arg("--root").arg(&self.root);
        c
    }

    fn write_spec(&self, id: &str, port: u16) -> anyhow::Result<()> {
        let mut spec = self.spec.clone();
        if let Some(env) = spec
            .pointer_mut("/process/env")
            .and_then(|e| e.as_array_mut())
        {
            env.retain(|v| !v.as_str().is_some_and(|s| s.starts_with("PORT=")));
            env.push(format!("PORT={port}").into());
        }
        spec["hostname"] = id.into();
        if let Some(linux) = spec.get_mut("linux").and_then(|l| l.as_object_mut()) {
            linux.insert("cgroupsPath".into(), format!("/berth-bench/{id}").into());
        }
        std::fs::write(self.bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
        Ok(())
    }

    fn delete(&self, id: &str) {
        let _ = self
            .runc()
            .args(["delete", "-f", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Deletes every container left under the private root.
    pub fn cleanup(&self) {
        let Ok(out) = self.runc().args(["list", "-q"]).output() else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            self.delete(id.trim());
        }
    }
}

impl Drop for BareRunc {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Connects (retrying every [`POLL`] while refused), sends `GET /`, and
/// returns the time from `t0` to the first response byte, the status and
/// the body.
async fn first_byte(
    addr: SocketAddr,
    t0: Instant,
) -> anyhow::Result<(Duration, http::StatusCode, bytes::Bytes)> {
    let mut last_error = String::from("nothing tried");
    while t0.elapsed() < DEADLINE {
        let mut client = match TimedClient::connect(addr, &addr.to_string()).await {
            Ok(c) => c,
            Err(e) => {
                last_error = format!("{e:#}");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        match client.get("/").await {
            Ok(t) => {
                let elapsed = t.first_byte_at.saturating_duration_since(t0);
                return Ok((elapsed, t.status, t.body));
            }
            Err(e) => last_error = format!("{e:#}"),
        }
    }
    anyhow::bail!(
        "the bare-runc container did not answer on {addr} within {DEADLINE:?}: {last_error}"
    )
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
