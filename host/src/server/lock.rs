//! One `berth serve` per data directory: an exclusive `flock` on
//! `<data-dir>/lock`, held as long as the process runs.
//!
//! Two hosts on one data directory would both write the state file and both
//! reconcile the same containers and firewall chains. The lock is advisory
//! and tied to the open file: it goes when the process exits, however it
//! exits (a SIGKILLed host leaves no stale lock), and the descriptor is
//! close-on-exec, so no child (runc, a container) inherits it. The file holds
//! the holder's pid, for the refusal's message only.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "lock";

/// The most bytes of the lock file read for the holder's pid.
const MAX_PID_BYTES: u64 = 32;

/// An exclusive hold on a data directory; released when dropped (or when
/// the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Locks `data_dir` (which must exist) without waiting, and writes this
    /// process's pid into the lock file.
    ///
    /// # Errors
    /// When another process holds the lock: one line naming the directory
    /// and, when the file says, the holder's pid. When the lock file cannot
    /// be opened, locked or written: which, and why.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // the holder's pid stays for the message
            .mode(0o600)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open the lock file {}: {e}", path.display()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let holder = match holder_pid(&mut file) {
                    Some(pid) => format!(" (pid {pid})"),
                    None => String::new(),
                };
                anyhow::bail!(
                    "data directory {} is in use by another berth serve{holder}; give each berth serve its own --data-dir",
                    data_dir.display()
                );
            }
            Err(e) => anyhow::bail!("cannot lock {}: {e}", path.display()),
        }
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"))
            .map_err(|e| anyhow::anyhow!("cannot write the lock file {}: {e}", path.display()))?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid the lock file names, if it names one (the holder may not have
/// written it yet).
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(MAX_PID_BYTES).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_hold_is_refused_naming_the_dir_and_pid_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        // flock conflicts between two opens even within one process.
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!("(pid {})", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(again.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn a_lock_file_without_a_pid_still_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DataDirLock::acquire(dir.path()).unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "garbage").unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another berth serve;"), "{err}");
    }
}
