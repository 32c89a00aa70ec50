//! Files berth writes for itself, written so that a crash never leaves a torn
//! one: the state file and compiled artifacts.

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` through a synced temporary file in the same
/// directory, a rename, and a sync of the directory.
///
/// # Errors
/// Any I/O error; the destination is then untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Make the rename durable; not all filesystems support syncing dirs.
        let _ = d.sync_all();
    }
    Ok(())
}
