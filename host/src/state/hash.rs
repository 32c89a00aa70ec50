//! The sha256 of `.wasm` files, read once per start plan: many apps may run
//! one file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// The sha256 (hex) of each file read so far (`None`: unreadable).
#[derive(Debug, Default)]
pub(super) struct FileHashes(HashMap<PathBuf, Option<String>>);

impl FileHashes {
    /// The sha256 of `path`'s bytes, hashed on the first call for it.
    pub(super) fn sha256(&mut self, path: &Path) -> Option<&str> {
        self.0
            .entry(path.to_path_buf())
            .or_insert_with(|| file_sha256(path))
            .as_deref()
    }
}

/// The sha256 (hex) of the file at `path`; `None` when it cannot be read.
fn file_sha256(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).ok()?;
    Some(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_once_and_unreadable_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wasm");
        std::fs::write(&path, b"code").unwrap();
        let mut hashes = FileHashes::default();
        let want = hex::encode(Sha256::digest(b"code"));
        assert_eq!(hashes.sha256(&path), Some(want.as_str()));
        // A second read is the remembered one, even after the file changes.
        std::fs::write(&path, b"other").unwrap();
        assert_eq!(hashes.sha256(&path), Some(want.as_str()));
        assert_eq!(hashes.sha256(&dir.path().join("missing.wasm")), None);
    }
}
