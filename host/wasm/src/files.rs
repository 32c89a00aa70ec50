//! Files berth writes for itself, written so that a crash never leaves a torn
//! one (the state file, compiled artifacts), and private ones (the admin
//! token, secrets, the data directory itself).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Writes `bytes` to `path` through a synced temporary file in the same
/// directory, a rename, and a sync of the directory. The file is readable
/// by its owner only (mode 0600, as the temporary file is created).
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

/// Writes `bytes` to a new file at `path` that only its owner can read
/// (mode 0600, set at creation).
///
/// # Errors
/// `AlreadyExists` if the file exists; any other I/O error.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates `dir` (and its parents) with mode 0700, and sets 0700 on `dir`
/// if it already existed: nobody but its owner lists or enters it.
///
/// # Errors
/// Any I/O error.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_and_dirs_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sub), 0o700);
        write_atomic(&sub.join("f"), b"x").unwrap();
        assert_eq!(mode(&sub.join("f")), 0o600);
        write_new_private(&sub.join("g"), b"y").unwrap();
        assert_eq!(mode(&sub.join("g")), 0o600);
        let again = write_new_private(&sub.join("g"), b"z").unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    }
}
