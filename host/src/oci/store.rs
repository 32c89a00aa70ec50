//! [`BlobStore`]: a content-addressed store of verified blobs and manifests.
//!
//! # Layout
//! - `<data_dir>/blobs/sha256/<hex>`: one file per blob (layers, configs and
//!   manifests alike), named by the SHA-256 of its content.
//! - `<data_dir>/blobs/sha256/.tmp-*`: blobs being written; never read. The
//!   writer holds a shared `flock` on its temporary file; [`BlobStore::gc`]
//!   removes the ones no writer holds (left by a crash or a killed pull).
//!
//! A blob is written to a temporary file in the same directory while its
//! digest is computed, checked against the digest it was asked for, flushed to
//! disk, and only then renamed to its digest name (and the directory synced).
//! A partial, interrupted or corrupt download is therefore never visible under
//! a digest name, and concurrent writers of the same blob are harmless: the
//! first rename wins and the others discard their identical copy.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt as _;

use super::{Digest, OciError};

const TEMP_PREFIX: &str = ".tmp-";

/// How often a temporary file is made again when it is removed before it
/// could be locked.
const TEMP_ATTEMPTS: usize = 5;

/// What [`BlobStore::collect`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCollected {
    /// Blobs no root references.
    pub blobs: usize,
    /// Temporary files no writer holds.
    pub temp: usize,
}

/// A content-addressed blob store rooted in a data directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    /// `<data_dir>/blobs/sha256`.
    dir: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the store under `data_dir`.
    ///
    /// # Errors
    /// [`OciError::Io`] if `<data_dir>/blobs/sha256` cannot be created.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self, OciError> {
        let dir = data_dir.as_ref().join("blobs").join("sha256");
        std::fs::create_dir_all(&dir)
            .map_err(|e| OciError::io(format!("creating blob store {}", dir.display()), e))?;
        Ok(Self { dir })
    }

    /// The directory holding the blobs (`<data_dir>/blobs/sha256`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with this digest lives (whether or not it is present).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether the blob is in the store.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Reads a whole blob and checks it still hashes to its name.
    ///
    /// Meant for manifests and configs; large layers are used through
    /// [`BlobStore::path`].
    ///
    /// # Errors
    /// [`OciError::Io`] if the blob is absent or unreadable,
    /// [`OciError::DigestMismatch`] if the file was altered on disk.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, OciError> {
        let path = self.path(digest);
        let bytes = std::fs::read(&path)
            .map_err(|e| OciError::io(format!("reading blob {digest} ({})", path.display()), e))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(OciError::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// [`BlobStore::read`], refusing a blob larger than `limit` before
    /// reading it (a digest can name a huge layer as well as a manifest).
    ///
    /// # Errors
    /// [`OciError::TooLarge`], and those of [`BlobStore::read`].
    pub fn read_limited(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, OciError> {
        let path = self.path(digest);
        let len = std::fs::metadata(&path)
            .map_err(|e| OciError::io(format!("reading blob {digest} ({})", path.display()), e))?
            .len();
        if len > limit {
            return Err(OciError::TooLarge {
                digest: digest.to_string(),
                limit,
            });
        }
        self.read(digest)
    }

    /// The size of a stored blob, if it is stored.
    pub fn stored_len(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(digest))
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
    }

    /// Re-hashes a stored blob to check it has not been altered on disk.
    ///
    /// # Errors
    /// [`OciError::Io`] if it cannot be read, [`OciError::DigestMismatch`] if
    /// its content no longer matches its name.
    pub fn verify(&self, digest: &Digest) -> Result<(), OciError> {
        let path = self.path(digest);
        let context = || format!("reading blob {digest} ({})", path.display());
        let mut file = File::open(&path).map_err(|e| OciError::io(context(), e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| OciError::io(context(), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = Digest::from_hasher(hasher);
        if actual == *digest {
            Ok(())
        } else {
            Err(OciError::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            })
        }
    }

    /// Removes a blob; `Ok(false)` if it was not there.
    ///
    /// # Errors
    /// [`OciError::Io`] if it cannot be removed.
    pub fn remove(&self, digest: &Digest) -> Result<bool, OciError> {
        let path = self.path(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(OciError::io(format!("removing {}", path.display()), e)),
        }
    }

    /// Stores `bytes` under `expected`, after checking they hash to it.
    ///
    /// # Errors
    /// [`OciError::DigestMismatch`] (and nothing is stored) if they do not;
    /// [`OciError::Io`] if writing fails.
    pub fn put_bytes(&self, expected: &Digest, bytes: &[u8]) -> Result<PathBuf, OciError> {
        let actual = Digest::of(bytes);
        if actual != *expected {
            return Err(OciError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        let mut tmp = self.temp_file()?;
        let context = || format!("writing blob {expected} to {}", self.dir.display());
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| OciError::io(context(), e))?;
        self.commit(tmp, expected)
    }

    /// Streams a blob into the store, verifying it against `expected`.
    ///
    /// The bytes go to a temporary file while being hashed; once the stream
    /// ends the digest is compared, the file is synced and renamed to its
    /// digest name. On any error (a failed stream, more than `max_len` bytes, a
    /// digest mismatch) the temporary file is removed and nothing becomes
    /// visible. `on_progress` is called with the running byte count.
    ///
    /// Returns the number of bytes written.
    ///
    /// # Errors
    /// The first error of `stream`, [`OciError::TooLarge`],
    /// [`OciError::DigestMismatch`], or [`OciError::Io`].
    pub async fn put<S>(
        &self,
        expected: &Digest,
        stream: S,
        max_len: Option<u64>,
        on_progress: impl FnMut(u64),
    ) -> Result<u64, OciError>
    where
        S: Stream<Item = Result<Bytes, OciError>>,
    {
        self.put_inner(expected, stream, max_len, false, on_progress)
            .await
    }

    /// [`BlobStore::put`] of a blob that must be exactly `size` bytes long:
    /// more is [`OciError::TooLarge`] as soon as it arrives, fewer is
    /// [`OciError::SizeMismatch`] at the end; nothing is stored then.
    ///
    /// # Errors
    /// Those of [`BlobStore::put`], and [`OciError::SizeMismatch`].
    pub async fn put_sized<S>(
        &self,
        expected: &Digest,
        stream: S,
        size: u64,
        on_progress: impl FnMut(u64),
    ) -> Result<u64, OciError>
    where
        S: Stream<Item = Result<Bytes, OciError>>,
    {
        self.put_inner(expected, stream, Some(size), true, on_progress)
            .await
    }

    async fn put_inner<S>(
        &self,
        expected: &Digest,
        stream: S,
        max_len: Option<u64>,
        exact: bool,
        mut on_progress: impl FnMut(u64),
    ) -> Result<u64, OciError>
    where
        S: Stream<Item = Result<Bytes, OciError>>,
    {
        let tmp = self.temp_file()?;
        let context = || format!("writing blob {expected} to {}", self.dir.display());
        let std_file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| OciError::io(context(), e))?;
        let mut file = tokio::fs::File::from_std(std_file);
        let mut hasher = Sha256::new();
        let mut len: u64 = 0;
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            len += chunk.len() as u64;
            if let Some(limit) = max_len
                && len > limit
            {
                return Err(OciError::TooLarge {
                    digest: expected.to_string(),
                    limit,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| OciError::io(context(), e))?;
            on_progress(len);
        }
        file.flush().await.map_err(|e| OciError::io(context(), e))?;
        if let Some(size) = max_len.filter(|&size| exact && len != size) {
            return Err(OciError::SizeMismatch {
                digest: expected.to_string(),
                what: "the body the registry sent",
                expected: size,
                actual: len,
            });
        }
        let actual = Digest::from_hasher(hasher);
        if actual != *expected {
            return Err(OciError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        file.sync_all()
            .await
            .map_err(|e| OciError::io(context(), e))?;
        drop(file);
        let this = self.clone();
        let expected = expected.clone();
        tokio::task::spawn_blocking(move || this.commit(tmp, &expected))
            .await
            .map_err(|e| OciError::io("committing blob", io::Error::other(e)))??;
        Ok(len)
    }

    /// Removes every blob whose digest is not in `referenced`, and temporary
    /// files that no write holds (left behind by interrupted writes).
    ///
    /// Returns how many blobs were removed. Use [`BlobStore::closure`] to turn
    /// the manifest digests in use into the full set of referenced blobs. A
    /// pull running at the same time may lose blobs it has just stored: run
    /// `gc` when no pull is in flight, or include what is being pulled.
    ///
    /// # Errors
    /// [`OciError::Io`] if the directory cannot be listed or a file removed.
    pub fn gc(&self, referenced: &HashSet<Digest>) -> Result<usize, OciError> {
        self.collect(referenced).map(|c| c.blobs)
    }

    /// [`BlobStore::gc`], also counting the temporary files removed.
    ///
    /// # Errors
    /// As [`BlobStore::gc`].
    pub fn collect(&self, referenced: &HashSet<Digest>) -> Result<StoreCollected, OciError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| OciError::io(format!("listing {}", self.dir.display()), e))?;
        let mut removed = StoreCollected::default();
        for entry in entries {
            let entry =
                entry.map_err(|e| OciError::io(format!("listing {}", self.dir.display()), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.starts_with(TEMP_PREFIX) {
                if remove_unheld(&path)? {
                    removed.temp += 1;
                }
                continue;
            }
            // Anything that is not a digest name is not ours: leave it alone.
            let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else {
                continue;
            };
            if !referenced.contains(&digest) {
                remove_if_present(&path)?;
                removed.blobs += 1;
            }
        }
        Ok(removed)
    }

    /// Removes the temporary files that no write holds (left behind by a
    /// host that was killed mid-pull); returns how many.
    ///
    /// # Errors
    /// [`OciError::Io`] if the directory cannot be listed or a file removed.
    pub fn remove_temp(&self) -> Result<usize, OciError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| OciError::io(format!("listing {}", self.dir.display()), e))?;
        let mut removed = 0;
        for entry in entries {
            let entry =
                entry.map_err(|e| OciError::io(format!("listing {}", self.dir.display()), e))?;
            if entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(TEMP_PREFIX.as_bytes())
                && remove_unheld(&entry.path())?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The digests `roots` reference, transitively: each root itself and, for
    /// every root that is a manifest or index present in the store, the
    /// digests of its config, layers and child manifests.
    ///
    /// # Errors
    /// [`OciError::Io`] or [`OciError::DigestMismatch`] if a stored manifest
    /// cannot be read.
    pub fn closure<'a>(
        &self,
        roots: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<HashSet<Digest>, OciError> {
        let mut seen = HashSet::new();
        let mut todo: Vec<Digest> = roots.into_iter().cloned().collect();
        while let Some(digest) = todo.pop() {
            if !seen.insert(digest.clone()) || !self.contains(&digest) {
                continue;
            }
            // Only manifests are small JSON documents worth opening.
            let len = std::fs::metadata(self.path(&digest))
                .map(|m| m.len())
                .unwrap_or(u64::MAX);
            if len > super::pull::MAX_MANIFEST_BYTES {
                continue;
            }
            let bytes = self.read(&digest)?;
            let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let descriptors = doc
                .get("config")
                .into_iter()
                .chain(
                    doc.get("layers")
                        .and_then(|l| l.as_array())
                        .into_iter()
                        .flatten(),
                )
                .chain(
                    doc.get("manifests")
                        .and_then(|m| m.as_array())
                        .into_iter()
                        .flatten(),
                );
            for descriptor in descriptors {
                if let Some(child) = descriptor
                    .get("digest")
                    .and_then(|d| d.as_str())
                    .and_then(|d| Digest::parse(d).ok())
                {
                    todo.push(child);
                }
            }
        }
        Ok(seen)
    }

    /// A new temporary file, locked shared so that [`BlobStore::gc`] leaves
    /// it alone.
    fn temp_file(&self) -> Result<NamedTempFile, OciError> {
        let context = || format!("creating a temporary file in {}", self.dir.display());
        for _ in 0..TEMP_ATTEMPTS {
            let tmp = tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .tempfile_in(&self.dir)
                .map_err(|e| OciError::io(context(), e))?;
            rustix::fs::flock(tmp.as_file(), rustix::fs::FlockOperation::LockShared)
                .map_err(|e| OciError::io(context(), e.into()))?;
            // Collected between its creation and its lock: make another.
            let linked = rustix::fs::fstat(tmp.as_file())
                .map_err(|e| OciError::io(context(), e.into()))?
                .st_nlink
                > 0;
            if linked {
                return Ok(tmp);
            }
        }
        Err(OciError::io(
            context(),
            io::Error::other("each one was removed before it could be locked"),
        ))
    }

    /// Renames a fully written, synced, verified temporary file to its digest
    /// name and syncs the directory so the rename survives a crash.
    fn commit(&self, tmp: NamedTempFile, digest: &Digest) -> Result<PathBuf, OciError> {
        let path = self.path(digest);
        match tmp.persist_noclobber(&path) {
            Ok(_) => {}
            // Someone else stored the same content first; ours is dropped
            // (and deleted) here. Identical by construction.
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(OciError::io(
                    format!("moving blob {digest} into place at {}", path.display()),
                    e.error,
                ));
            }
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| OciError::io(format!("syncing {}", self.dir.display()), e))?;
        Ok(path)
    }
}

/// Removes the temporary file at `path` unless a write holds it; whether it
/// was removed.
fn remove_unheld(path: &Path) -> Result<bool, OciError> {
    let context = || format!("removing {}", path.display());
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(OciError::io(context(), e)),
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
        Err(e) => return Err(OciError::io(context(), e.into())),
    }
    // The name must still be the file locked (a finished write renames it).
    use std::os::unix::fs::MetadataExt as _;
    let locked = file.metadata().map_err(|e| OciError::io(context(), e))?;
    match std::fs::symlink_metadata(path) {
        Ok(here) if (here.dev(), here.ino()) == (locked.dev(), locked.ino()) => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(OciError::io(context(), e)),
    }
    remove_if_present(path)?;
    tracing::info!(path = %path.display(), "removed a temporary blob file no write holds");
    Ok(true)
}

fn remove_if_present(path: &Path) -> Result<(), OciError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(OciError::io(format!("removing {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, OciError>> {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    fn names(store: &BlobStore) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn put_streams_verifies_and_places_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello world");
        assert!(!store.contains(&digest));
        let mut seen = Vec::new();
        let n = store
            .put(
                &digest,
                chunks(&[b"hello", b" ", b"world"]),
                Some(11),
                |n| seen.push(n),
            )
            .await
            .unwrap();
        assert_eq!(n, 11);
        assert_eq!(seen, [5, 6, 11]);
        assert!(store.contains(&digest));
        assert_eq!(
            store.path(&digest),
            dir.path().join("blobs/sha256").join(digest.hex())
        );
        assert_eq!(store.read(&digest).unwrap(), b"hello world");
        store.verify(&digest).unwrap();
        assert_eq!(names(&store), [digest.hex()]);
    }

    #[tokio::test]
    async fn wrong_digest_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let claimed = Digest::of(b"what the manifest says");
        let err = store
            .put(&claimed, chunks(&[b"something ", b"else"]), None, |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        assert!(err.to_string().contains(&claimed.to_string()), "{err}");
        assert!(!store.contains(&claimed));
        assert!(names(&store).is_empty(), "{:?}", names(&store));

        let err = store.put_bytes(&claimed, b"nope").unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        assert!(names(&store).is_empty(), "{:?}", names(&store));
    }

    #[tokio::test]
    async fn failed_or_oversized_stream_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = Digest::of(b"0123456789");

        let failing = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"01234")),
            Err(OciError::io(
                "network",
                io::Error::other("connection reset"),
            )),
        ]);
        assert!(store.put(&digest, failing, None, |_| {}).await.is_err());
        assert!(names(&store).is_empty());

        let err = store
            .put(&digest, chunks(&[b"01234", b"56789"]), Some(9), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, OciError::TooLarge { limit: 9, .. }), "{err}");
        assert!(names(&store).is_empty());
    }

    #[tokio::test]
    async fn concurrent_puts_of_the_same_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data: &'static [u8] = b"the same bytes, written by many";
        let digest = Digest::of(data);
        let puts = (0..16).map(|_| {
            let store = store.clone();
            let digest = digest.clone();
            tokio::spawn(async move { store.put(&digest, chunks(&[data]), None, |_| {}).await })
        });
        for put in futures::future::join_all(puts).await {
            assert_eq!(put.unwrap().unwrap(), data.len() as u64);
        }
        store.put_bytes(&digest, data).unwrap();
        assert_eq!(store.read(&digest).unwrap(), data);
        assert_eq!(names(&store), [digest.hex()]);
    }

    #[test]
    fn gc_removes_temporary_files_that_no_write_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        // Left by a pull that was killed a moment ago: no age to wait for.
        std::fs::write(store.dir().join(".tmp-killed"), b"partial").unwrap();
        // A write in progress holds its file.
        let writing = store.temp_file().unwrap();
        let removed = store.collect(&HashSet::new()).unwrap();
        assert_eq!(removed, StoreCollected { blobs: 0, temp: 1 });
        let left = names(&store);
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(store.dir().join(&left[0]), writing.path());
        drop(writing);
        assert_eq!(names(&store), Vec::<String>::new());
    }

    #[test]
    fn a_blob_is_measured_before_it_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let big = vec![7u8; 4096];
        let digest = Digest::of(&big);
        store.put_bytes(&digest, &big).unwrap();
        assert_eq!(store.stored_len(&digest), Some(4096));
        assert!(matches!(
            store.read_limited(&digest, 4095),
            Err(OciError::TooLarge { limit: 4095, .. })
        ));
        assert_eq!(store.read_limited(&digest, 4096).unwrap(), big);
    }

    #[tokio::test]
    async fn a_sized_put_refuses_a_short_body() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = Digest::of(b"0123456789");
        let err = store
            .put_sized(&digest, chunks(&[b"01234", b"56789"]), 12, |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                OciError::SizeMismatch {
                    expected: 12,
                    actual: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert!(names(&store).is_empty());
        let n = store
            .put_sized(&digest, chunks(&[b"01234", b"56789"]), 10, |_| {})
            .await
            .unwrap();
        assert_eq!(n, 10);
    }

    #[test]
    fn read_detects_corruption_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = Digest::of(b"pristine");
        store.put_bytes(&digest, b"pristine").unwrap();
        std::fs::write(store.path(&digest), b"tampered").unwrap();
        assert!(matches!(
            store.read(&digest),
            Err(OciError::DigestMismatch { .. })
        ));
        assert!(matches!(
            store.verify(&digest),
            Err(OciError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn gc_keeps_the_closure_of_referenced_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let put = |bytes: &[u8]| {
            let d = Digest::of(bytes);
            store.put_bytes(&d, bytes).unwrap();
            d
        };
        let layer = put(b"\0asm\x0d\0\x01\0");
        let config = put(b"{}");
        let manifest = put(
            serde_json::json!({
                "schemaVersion": 2,
                "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config.to_string(), "size": 2},
                "layers": [{"mediaType": "application/wasm", "digest": layer.to_string(), "size": 8}],
            })
            .to_string()
            .as_bytes(),
        );
        let orphan = put(b"no longer used");
        std::fs::write(store.dir().join("README"), b"not a blob").unwrap();

        let keep = store.closure([&manifest]).unwrap();
        assert_eq!(
            keep,
            HashSet::from([manifest.clone(), config.clone(), layer.clone()])
        );
        assert_eq!(store.gc(&keep).unwrap(), 1);
        assert!(!store.contains(&orphan));
        assert!(store.contains(&manifest) && store.contains(&config) && store.contains(&layer));
        assert!(store.dir().join("README").exists());

        assert_eq!(store.gc(&HashSet::new()).unwrap(), 3);
        assert!(!store.contains(&manifest));
    }
}
