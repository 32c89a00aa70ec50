//! A thin, typed wrapper around the `runc` command line.
//!
//! Every call runs `runc --root <root> …` with a private state directory, so
//! the containers berth made (and only those) can be listed and reaped after a
//! crash. Each call has a deadline; a runc that hangs is killed.
//!
//! `create` is the one call whose stdio is not captured: the container's init
//! inherits runc's stdout and stderr, so they must be files (runc#1721: a
//! detached runc given pipes keeps the caller waiting for EOF forever).

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

/// Deadline of one runc invocation.
pub const RUNC_TIMEOUT: Duration = Duration::from_secs(30);

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

    /// `runc create --bundle B --pid-file P ID`, the container's stdout and
    /// stderr being `stdout` and `stderr` (runc's own errors go to `stderr`
    /// too). Returns once the container is in the `created` state.
    ///
    /// # Errors
    /// When runc fails. [`RuncError::Failed::stderr`] is then empty: runc
    /// wrote its message to the `stderr` file, which the caller reads.
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        stdout: File,
        stderr: File,
    ) -> Result<(), RuncError> {
        let mut cmd = self.command([OsStr::new("create"), OsStr::new("--bundle")]);
        cmd.arg(bundle)
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
                op: "create",
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
                op: "create",
                id: id.to_owned(),
                status,
                stderr: String::new(),
            })
        }
    }

    /// `runc start ID`: runs the user process of a created container.
    ///
    /// # Errors
    /// When runc fails.
    pub async fn start(&self, id: &str) -> Result<(), RuncError> {
        self.run("start", id, ["start", id]).await.map(drop)
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
