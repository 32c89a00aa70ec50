//! A thin, typed wrapper around the `runc` command line.
//!
//! Every call runs `runc --root <root> …` with a private state directory, so
//! the containers berth made (and only those) can be listed and reaped after a
//! crash. Each call has a deadline; a runc that hangs is killed.
//!
//! `run --detach` is the call whose stdio is not captured: the container's
//! init inherits runc's stdout and stderr (the shim gives it pipes it reads
//! on tasks of their own, `output.rs`). Only runc's exit is awaited, never
//! EOF on those: the container holds them open (runc#1721: a caller that
//! waits for EOF on a detached runc's pipes waits forever).
//!
//! # Which runc
//! [`inspect`] runs `runc --version` once, when the [`Shim`](super::Shim) is
//! made, and [`RuncVersion::check`] accepts a runc only if it carries the fix
//! of CVE-2024-21626 (a leaked host directory fd let a container start with
//! its working directory on the host): upstream 1.1.12 or later, or an older
//! upstream version whose `commit:` line is a distribution package version at
//! or above one known to have the fix backported ([`PATCHED_PACKAGES`]).
//! Debian sets that line to the package version (`-X main.gitCommit=`), e.g.
//! `commit: 1.1.5+ds1-1+deb12u1`, while upstream builds print `git describe`
//! (`commit: v1.1.12-0-g51d5e94`); package versions are compared the way
//! `dpkg --compare-versions` does ([`compare_debian_versions`]).

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

/// Deadline of one runc invocation.
pub const RUNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The first upstream runc release with the fix of CVE-2024-21626
/// (GHSA-xr7r-f8xq-vfvv, 31 January 2024).
pub const FIXED_UPSTREAM: (u64, u64, u64) = (1, 1, 12);

/// Distribution builds of an older upstream runc that carry the fix of
/// CVE-2024-21626: (the upstream version as `runc version` prints it, the
/// first fixed package version). A package of that upstream version is
/// accepted at or above the fixed one. Only entries checked against the
/// distribution's own changelog are listed.
pub const PATCHED_PACKAGES: &[(&str, &str)] = &[
    // Debian 12 (bookworm-security, DSA-5615-1, 2 February 2024); its
    // changelog: "CVE-2024-21626: several container breakouts due to
    // internally leaked fds".
    ("1.1.5+ds1", "1.1.5+ds1-1+deb12u1"),
];

/// A failed runc invocation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuncError {
    /// The binary could not be started.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        /// The runc binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// runc ran and failed.
    #[error("runc {op} {id} failed ({status}): {stderr}")]
    Failed {
        /// The subcommand.
        op: &'static str,
        /// The container id (empty for `list`).
        id: String,
        /// runc's exit status.
        status: ExitStatus,
        /// What runc said (stderr, trimmed).
        stderr: String,
    },
    /// runc did not finish within [`RUNC_TIMEOUT`]; it was killed.
    #[error("runc {op} {id} did not finish within {timeout:?}; killed")]
    Timeout {
        /// The subcommand.
        op: &'static str,
        /// The container id.
        id: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The runc binary runs, but berth will not use it.
    #[error("runc at {binary} cannot be used: {reason}")]
    Unsupported {
        /// The runc binary.
        binary: PathBuf,
        /// Why (its version, and what would do).
        reason: String,
    },
    /// runc's output was not what it should be.
    #[error("runc {op}: unexpected output: {source}")]
    Output {
        /// The subcommand.
        op: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl RuncError {
    /// runc says the container does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. } if stderr.contains("does not exist"))
    }

    /// runc says the container is not running (already stopped).
    pub fn is_not_running(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. }
            if stderr.contains("not running") || stderr.contains("process already finished"))
    }
}

/// Rewrites runc's logrus lines (`time="…" level=error msg="…"`) as their
/// message alone; other lines are kept as they are.
pub fn humanize_log(text: &str) -> String {
    text.lines()
        .map(|line| {
            let Some(start) = line.find("msg=\"") else {
                return line.to_owned();
            };
            let mut msg = String::new();
            let mut chars = line[start + 5..].chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => msg.push('\n'),
                        Some('t') => msg.push('\t'),
                        Some(other) => msg.push(other),
                        None => {}
                    },
                    '"' => break,
                    c => msg.push(c),
                }
            }
            msg
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The runc binary to use: `given` as it is, else the first executable `runc`
/// on `PATH`, else `/usr/sbin/runc` if it is executable; `None` when there is
/// none.
pub fn find_runc(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("runc"))
            .find(|p| check_executable(p).is_ok())
    });
    on_path.or_else(|| {
        let p = PathBuf::from("/usr/sbin/runc");
        check_executable(&p).is_ok().then_some(p)
    })
}

/// `Ok` when `path` is a regular file (symlinks followed) with an execute bit.
///
/// # Errors
/// Why it is not: the error of `stat`, or `PermissionDenied`.
pub(super) fn check_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)?;
    if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not an executable file",
        ))
    }
}

/// What `runc --version` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuncVersion {
    /// The `runc version` line's value, e.g. `1.1.12` or `1.1.5+ds1`.
    pub version: String,
    /// The `commit:` line's value: `git describe` for upstream builds
    /// (`v1.1.12-0-g51d5e94`), the package version for Debian's
    /// (`1.1.5+ds1-1+deb12u1`).
    pub commit: Option<String>,
    /// The `libseccomp:` line's value, when runc was built with seccomp.
    pub libseccomp: Option<String>,
}

impl RuncVersion {
    /// Parses the output of `runc --version`; `None` without a
    /// `runc version` line.
    pub fn parse(output: &str) -> Option<Self> {
        let mut version = None;
        let mut commit = None;
        let mut libseccomp = None;
        let value = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        for line in output.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("runc version") {
                version = value(v);
            } else if let Some(v) = line.strip_prefix("commit:") {
                commit = value(v);
            } else if let Some(v) = line.strip_prefix("libseccomp:") {
                libseccomp = value(v);
            }
        }
        Some(Self {
            version: version?,
            commit,
            libseccomp,
        })
    }

    /// The leading `major.minor.patch` of [`Self::version`] (a `v` prefix
    /// and any suffix, `-rc.1`, `+ds1`, `~rc93`, are ignored).
    pub fn upstream(&self) -> Option<(u64, u64, u64)> {
        let v = self.version.strip_prefix('v').unwrap_or(&self.version);
        let mut parts = v.splitn(3, '.');
        let mut number = |last: bool| -> Option<u64> {
            let part = parts.next()?;
            let digits = if last {
                let end = part
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(part.len());
                &part[..end]
            } else {
                part
            };
            digits.parse().ok()
        };
        Some((number(false)?, number(false)?, number(true)?))
    }

    /// Whether berth runs containers with this runc: `Ok` with why it is
    /// fixed, `Err` with why not (see the module docs).
    ///
    /// # Errors
    /// The reason, naming the version and what would be accepted.
    pub fn check(&self) -> Result<String, String> {
        let Some(upstream) = self.upstream() else {
            return Err(format!(
                "cannot tell its version from `runc version {}`",
                self.version
            ));
        };
        if upstream >= FIXED_UPSTREAM {
            return Ok(format!(
                "upstream {}.{}.{} >= 1.1.12",
                upstream.0, upstream.1, upstream.2
            ));
        }
        if let Some(package) = &self.commit
            && let Some((base, _)) = package.rsplit_once('-')
            && let Some((_, fixed)) = PATCHED_PACKAGES.iter().find(|(b, _)| *b == base)
            && compare_debian_versions(package, fixed).is_ge()
        {
            return Ok(format!(
                "package {package} carries the backported fix (>= {fixed})"
            ));
        }
        Err(format!(
            "runc {} (commit: {}) is older than 1.1.12 and not a distribution build known to \
             carry the fix of CVE-2024-21626 (a container could start in a host directory); \
             install runc 1.1.12 or later, or your distribution's security update (Debian 12: \
             1.1.5+ds1-1+deb12u1)",
            self.version,
            self.commit.as_deref().unwrap_or("none")
        ))
    }
}

/// Runs `runc --version` (bounded by [`RUNC_TIMEOUT`]) and parses it.
/// Blocking: it is called once, when the shim is made.
///
/// # Errors
/// [`RuncError::Spawn`] when it cannot run, [`RuncError::Timeout`],
/// [`RuncError::Failed`] when it fails, [`RuncError::Unsupported`] when the
/// output has no version.
pub fn inspect(binary: &Path) -> Result<RuncVersion, RuncError> {
    use std::io::Read as _;
    let spawn_err = |source| RuncError::Spawn {
        binary: binary.to_path_buf(),
        source,
    };
    let mut child = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let deadline = std::time::Instant::now() + RUNC_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(spawn_err)? {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RuncError::Timeout {
                op: "--version",
                id: String::new(),
                timeout: RUNC_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The output is a few lines: it fits the pipes, so reading after the
    // exit cannot block.
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut stdout);
    }
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    if !status.success() {
        return Err(RuncError::Failed {
            op: "--version",
            id: String::new(),
            status,
            stderr: stderr.trim().to_owned(),
        });
    }
    RuncVersion::parse(&stdout).ok_or_else(|| RuncError::Unsupported {
        binary: binary.to_path_buf(),
        reason: format!("`runc --version` printed no version: {:?}", stdout.trim()),
    })
}

/// Compares two Debian package versions (`[epoch:]upstream[-revision]`) as
/// `dpkg --compare-versions` does: epochs numerically, then upstream and
/// revision alternating non-digit runs (letters before other characters, `~`
/// before everything, even the end) and numbers.
pub fn compare_debian_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, rest)) if e.bytes().all(|b| b.is_ascii_digit()) => {
                (e.parse().unwrap_or(0), rest)
            }
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((upstream, revision)) => (epoch, upstream, revision),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<u8>) -> i32 {
        match c {
            Some(b'~') => -1,
            None => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    fn part(mut a: &[u8], mut b: &[u8]) -> std::cmp::Ordering {
        while !a.is_empty() || !b.is_empty() {
            // A non-digit run.
            loop {
                let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
                let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
                if ca.is_none() && cb.is_none() {
                    break;
                }
                let (oa, ob) = (order(ca), order(cb));
                if oa != ob {
                    return oa.cmp(&ob);
                }
                a = &a[usize::from(ca.is_some())..];
                b = &b[usize::from(cb.is_some())..];
            }
            // A number (leading zeros do not count; any length).
            let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
            let (na, nb) = (digits(a), digits(b));
            let trim =
                |s: &[u8]| -> Vec<u8> { s.iter().copied().skip_while(|c| *c == b'0').collect() };
            let (da, db) = (trim(&a[..na]), trim(&b[..nb]));
            let by_number = da.len().cmp(&db.len()).then_with(|| da.cmp(&db));
            if by_number.is_ne() {
                return by_number;
            }
            a = &a[na..];
            b = &b[nb..];
        }
        std::cmp::Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| part(ra.as_bytes(), rb.as_bytes()))
}

/// A container's state as `runc state` / `runc list --format json` print it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct State {
    /// Container id.
    pub id: String,
    /// Host pid of the container's init (0 once stopped).
    #[serde(default)]
    pub pid: i32,
    /// `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The bundle directory.
    #[serde(default)]
    pub bundle: PathBuf,
}

/// The runc binary and the private state directory (`--root`) berth uses.
#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
}

impl Runc {
    /// A runc of `binary` keeping its state under `root`.
    pub fn new(binary: PathBuf, root: PathBuf) -> Self {
        Self { binary, root }
    }

    /// The `--root` directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs a captured (non-detaching) subcommand and returns its stdout.
    async fn run<I, S>(&self, op: &'static str, id: &str, args: I) -> Result<Vec<u8>, RuncError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|source| RuncError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let out = tokio::time::timeout(RUNC_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| RuncError::Timeout {
                op,
                id: id.to_owned(),
                timeout: RUNC_TIMEOUT,
            })?
            .map_err(|source| RuncError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(RuncError::Failed {
                op,
                id: id.to_owned(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// `runc version`: checks the binary runs; returns its first line.
    ///
    /// # Errors
    /// When runc cannot be run or fails.
    pub async fn version(&self) -> Result<String, RuncError> {
        let out = self.run("--version", "", ["--version"]).await?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned())
    }

    /// `runc run --detach --bundle B --pid-file P ID`: `create` and `start`
    /// in one runc process, the container's stdout and stderr being `stdout`
    /// and `stderr` (runc's own errors go to `stderr` too). Returns once the
    /// container's process runs (its pid in `pid_file`).
    ///
    /// # Errors
    /// When runc fails. [`RuncError::Failed::stderr`] is then empty: runc
    /// wrote its message to `stderr`, which the caller reads.
    pub async fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        stdout: File,
        stderr: File,
    ) -> Result<(), RuncError> {
        let op = "run";
        let mut cmd = self.command(["run", "--detach"]);
        cmd.arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id)
            .stdout(stdout)
            .stderr(stderr);
        let mut child = cmd.spawn().map_err(|source| RuncError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let status = tokio::time::timeout(RUNC_TIMEOUT, child.wait())
            .await
            .map_err(|_| RuncError::Timeout {
                op,
                id: id.to_owned(),
                timeout: RUNC_TIMEOUT,
            })?
            .map_err(|source| RuncError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(RuncError::Failed {
                op,
                id: id.to_owned(),
                status,
                stderr: String::new(),
            })
        }
    }

    /// `runc kill [--all] ID SIGNAL` (`signal` as runc takes it: `TERM`,
    /// `KILL`, `9`…).
    ///
    /// # Errors
    /// When runc fails (see [`RuncError::is_not_running`]).
    pub async fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), RuncError> {
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, signal]);
        self.run("kill", id, args).await.map(drop)
    }

    /// `runc delete [--force] ID`.
    ///
    /// # Errors
    /// When runc fails (see [`RuncError::is_not_found`]).
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        self.run("delete", id, args).await.map(drop)
    }

    /// `runc state ID`; `None` when runc has no such container.
    ///
    /// # Errors
    /// When runc fails otherwise.
    pub async fn state(&self, id: &str) -> Result<Option<State>, RuncError> {
        match self.run("state", id, ["state", id]).await {
            Ok(out) => serde_json::from_slice(&out)
                .map(Some)
                .map_err(|source| RuncError::Output {
                    op: "state",
                    source,
                }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `runc list --format json`: every container under the root.
    ///
    /// # Errors
    /// When runc fails or prints something else than a list.
    pub async fn list(&self) -> Result<Vec<State>, RuncError> {
        let out = self.run("list", "", ["list", "--format", "json"]).await?;
        // runc prints `null` for an empty list.
        let list: Option<Vec<State>> = serde_json::from_slice(&out)
            .map_err(|source| RuncError::Output { op: "list", source })?;
        Ok(list.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logrus_lines_become_messages() {
        let text = "time=\"2026-11-30T12:34:23Z\" level=error msg=\"runc create failed: exec: \\\"/srv\\\": stat /srv: no such file\"\nplain line";
        assert_eq!(
            humanize_log(text),
            "runc create failed: exec: \"/srv\": stat /srv: no such file\nplain line"
        );
    }

    #[test]
    fn error_kinds() {
        use std::os::unix::process::ExitStatusExt as _;
        let failed = |stderr: &str| RuncError::Failed {
            op: "kill",
            id: "x".into(),
            status: ExitStatus::from_raw(256),
            stderr: stderr.into(),
        };
        assert!(failed("container does not exist").is_not_found());
        assert!(failed("container not running").is_not_running());
        assert!(!failed("permission denied").is_not_found());
    }

    #[test]
    fn runc_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let given = dir.path().join("not-even-there");
        assert_eq!(
            find_runc(Some(&given)),
            Some(given),
            "a given path is taken as it is"
        );
        if let Some(found) = find_runc(None) {
            check_executable(&found).unwrap();
            assert!(found.ends_with("runc"), "{}", found.display());
        }
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert!(check_executable(&plain).is_err(), "no execute bit");
        assert!(check_executable(dir.path()).is_err(), "a directory");
    }

    /// `runc --version` as printed by the builds berth meets.
    const DEBIAN_12: &str = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n";

    #[test]
    fn version_parsing() {
        let v = RuncVersion::parse(DEBIAN_12).unwrap();
        assert_eq!(v.version, "1.1.5+ds1");
        assert_eq!(v.commit.as_deref(), Some("1.1.5+ds1-1+deb12u1"));
        assert_eq!(v.libseccomp.as_deref(), Some("2.5.4"));
        assert_eq!(v.upstream(), Some((1, 1, 5)));
        let upstream = RuncVersion::parse(
            "runc version 1.1.12\ncommit: v1.1.12-0-g51d5e946\nspec: 1.0.2-dev\ngo: go1.20.13\nlibseccomp: 2.5.4\n",
        )
        .unwrap();
        assert_eq!(upstream.upstream(), Some((1, 1, 12)));
        assert_eq!(upstream.commit.as_deref(), Some("v1.1.12-0-g51d5e946"));
        // No seccomp, a release candidate, an old Debian `~rc`.
        let rc = RuncVersion::parse(
            "runc version 1.2.0-rc.1\ncommit: v1.2.0-rc.1-0-g275e6d85\nspec: 1.2.0\ngo: go1.22.2\n",
        )
        .unwrap();
        assert_eq!((rc.upstream(), rc.libseccomp), (Some((1, 2, 0)), None));
        let old =
            RuncVersion::parse("runc version 1.0.0~rc93+ds1\ncommit: 1.0.0~rc93+ds1-5+deb11u2\n")
                .unwrap();
        assert_eq!(old.upstream(), Some((1, 0, 0)));
        assert_eq!(RuncVersion::parse("runc version\n"), None);
        assert_eq!(RuncVersion::parse("crun version 1.8\n"), None);
    }

    #[test]
    fn which_runc_is_accepted() {
        let v = |text: &str| RuncVersion::parse(text).unwrap().check();
        // This machine's: Debian's backport.
        let why = v(DEBIAN_12).unwrap();
        assert!(why.contains("1.1.5+ds1-1+deb12u1"), "{why}");
        // A later Debian update of the same upstream version.
        v("runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u2\n").unwrap();
        // Upstream with the fix, and later.
        for ok in [
            "runc version 1.1.12\ncommit: v1.1.12-0-g51d5e946\n",
            "runc version 1.1.14\ncommit: v1.1.14-0-g2c9f5602\n",
            "runc version 1.2.0-rc.1\ncommit: v1.2.0-rc.1-0-g275e6d85\n",
            "runc version 1.3.3\ncommit: v1.3.3-0-gd842d771\n",
            "runc version 2.0.0\n",
        ] {
            v(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        // Unfixed: upstream before 1.1.12; Debian 12 before its security
        // update; a package of an upstream version berth has no entry for; a
        // version that says nothing.
        for bad in [
            "runc version 1.1.11\ncommit: v1.1.11-0-g4bccb38c\n",
            "runc version 1.1.5\ncommit: v1.1.5-0-gf19387a6\n",
            "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1\n",
            "runc version 1.1.5+ds1\n",
            "runc version 1.0.0~rc93+ds1\ncommit: 1.0.0~rc93+ds1-5+deb11u2\n",
            "runc version unknown\n",
        ] {
            let err = v(bad).unwrap_err();
            assert!(
                err.contains("1.1.12") || err.contains("cannot tell"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn debian_version_order() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        for (a, b, want) in [
            ("1.1.5+ds1-1+deb12u1", "1.1.5+ds1-1+deb12u1", Equal),
            ("1.1.5+ds1-1+deb12u2", "1.1.5+ds1-1+deb12u1", Greater),
            ("1.1.5+ds1-1+deb12u10", "1.1.5+ds1-1+deb12u9", Greater),
            ("1.1.5+ds1-1", "1.1.5+ds1-1+deb12u1", Less),
            ("1.1.5+ds1-2", "1.1.5+ds1-1+deb12u1", Greater),
            ("1.0~rc1-1", "1.0-1", Less),
            ("1.0-1", "1.0+x-1", Less),
            ("1:1.0-1", "2.0-1", Greater),
            ("1.01-1", "1.1-1", Equal),
            ("1.0a-1", "1.0+-1", Less),
        ] {
            assert_eq!(compare_debian_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_debian_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn the_local_runc_is_inspected() {
        let Some(runc) = find_runc(None) else {
            return; // The instance tests report a missing runc clearly.
        };
        let v = inspect(&runc).unwrap();
        assert!(v.upstream().is_some(), "{v:?}");
        assert!(inspect(Path::new("/no/runc")).is_err());
    }

    #[tokio::test]
    async fn list_of_an_empty_root() {
        let dir = tempfile::tempdir().unwrap();
        let runc = Runc::new(PathBuf::from("runc"), dir.path().join("root"));
        match runc.list().await {
            Ok(list) => assert!(list.is_empty()),
            // No runc on PATH: the instance tests report that clearly.
            Err(RuncError::Spawn { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        assert_eq!(runc.state("nope").await.ok().flatten(), None);
    }
}
