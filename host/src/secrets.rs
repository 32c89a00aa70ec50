//! Secrets: values an app gets as environment variables without them being
//! part of its settings (Cloud Run's `--set-secrets`, Knative's
//! `secretKeyRef`).
//!
//! An app names them, `secrets = { DB_PASSWORD = "db-password" }`; its
//! settings, the state file, the API and the CLI only ever carry that name.
//! The value is resolved from this store when an instance starts (a Wasm
//! component is loaded, a container is created), so a changed secret
//! reaches the next instance.
//!
//! # At rest
//! `<data-dir>/secrets.json` (mode 0600, written atomically) holds each
//! value encrypted with XChaCha20-Poly1305 (a random 24-byte nonce per
//! value, the secret's name as associated data, so a value cannot be moved
//! to another name). The 32-byte key is a separate file: `--secrets-key
//! FILE` (`BERTH_SECRETS_KEY`), by default `<data-dir>/secrets.key` (0600),
//! created at first use. Kept on another volume (or a tmpfs filled at boot),
//! a copy of the data directory alone reveals no value; kept in the data
//! directory, the encryption only protects a copy of `secrets.json` on its
//! own. Plain values reach the disk nowhere else but in berth's private
//! runc state (a container's runtime spec, mode 0600 in 0700 directories).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

/// The store's file in the data directory.
pub const SECRETS_FILE: &str = "secrets.json";
/// The key's default file in the data directory.
pub const KEY_FILE: &str = "secrets.key";
/// Largest value (Cloud Run's limit).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most secrets one host keeps.
pub const MAX_SECRETS: usize = 10_000;

/// What can go wrong with secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// A name that is not `[A-Za-z0-9_.-]{1,128}`.
    #[error("`{0}` is not a secret name: use 1-128 of A-Z, a-z, 0-9, '_', '.', '-'")]
    BadName(String),
    /// A value that cannot be an environment variable's.
    #[error("the value of secret `{name}` {why}")]
    BadValue {
        /// The secret.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// No such secret.
    #[error("secret `{0}` does not exist (create it with `berth secret set {0}`)")]
    Missing(String),
    /// The store is full.
    #[error("the store already holds {MAX_SECRETS} secrets")]
    Full,
    /// A stored value that does not decrypt with the key.
    #[error("secret `{0}` cannot be decrypted with the key in use (was the key file replaced?)")]
    Undecryptable(String),
    /// The key or the store file cannot be used.
    #[error("{0}")]
    Io(String),
}

/// A secret's value: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<hidden>)")
    }
}

/// A secret's public facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// When it was last set (RFC 3339, UTC).
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    /// 24 bytes, hex.
    nonce: String,
    /// The value encrypted and authenticated, hex.
    ciphertext: String,
    updated_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    version: u32,
    secrets: BTreeMap<String, Sealed>,
}

/// The host's secrets.
pub struct SecretStore {
    path: PathBuf,
    cipher: XChaCha20Poly1305,
    file: Mutex<SecretsFile>,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Checks a secret's name.
///
/// # Errors
/// [`SecretError::BadName`].
pub fn validate_name(name: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SecretError::BadName(name.chars().take(64).collect()))
    }
}

fn io(what: &str, path: &Path, e: impl fmt::Display) -> SecretError {
    SecretError::Io(format!("cannot {what} `{}`: {e}", path.display()))
}

impl SecretStore {
    /// Opens the store of `data_dir` with the key at `key_file` (default
    /// `<data-dir>/secrets.key`), creating the key at first use.
    ///
    /// # Errors
    /// A key file of the wrong size, or files that cannot be read or
    /// written.
    pub fn open(data_dir: &Path, key_file: Option<&Path>) -> Result<Self, SecretError> {
        let key_path = key_file.map_or_else(|| data_dir.join(KEY_FILE), Path::to_path_buf);
        let key = match std::fs::read(&key_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && key_file.is_none() => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| io("create", &key_path, e))?;
                crate::files::write_new_private(&key_path, &key)
                    .map_err(|e| io("write", &key_path, e))?;
                tracing::info!(file = %key_path.display(), "created the secrets key");
                key.to_vec()
            }
            Err(e) => return Err(io("read the secrets key", &key_path, e)),
        };
        let key: [u8; 32] = key.try_into().map_err(|k: Vec<u8>| {
            SecretError::Io(format!(
                "the secrets key `{}` has {} bytes, not 32",
                key_path.display(),
                k.len()
            ))
        })?;
        let path = data_dir.join(SECRETS_FILE);
        let file = match std::fs::read(&path) {
            Ok(text) => serde_json::from_slice(&text).map_err(|e| io("parse", &path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SecretsFile {
                version: 1,
                ..SecretsFile::default()
            },
            Err(e) => return Err(io("read", &path, e)),
        };
        Ok(Self {
            path,
            cipher: XChaCha20Poly1305::new(&key.into()),
            file: Mutex::new(file),
        })
    }

    /// Sets `name` to `value`; returns whether it is new.
    ///
    /// # Errors
    /// A bad name or value, a full store, or a file that cannot be written
    /// (the store is then unchanged).
    pub fn set(&self, name: &str, value: &str) -> Result<bool, SecretError> {
        validate_name(name)?;
        let bad = |why: &str| SecretError::BadValue {
            name: name.into(),
            why: why.into(),
        };
        if value.len() > MAX_VALUE_BYTES {
            return Err(bad(&format!("is over {MAX_VALUE_BYTES} bytes")));
        }
        if value.contains('\0') {
            return Err(bad(
                "contains a NUL byte (it is given as an environment variable)",
            ));
        }
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| SecretError::Io(format!("no randomness: {e}")))?;
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Io("encryption failed".into()))?;
        let mut file = self.lock();
        if !file.secrets.contains_key(name) && file.secrets.len() >= MAX_SECRETS {
            return Err(SecretError::Full);
        }
        let mut next = file.clone();
        let new = next
            .secrets
            .insert(
                name.to_string(),
                Sealed {
                    nonce: hex::encode(nonce),
                    ciphertext: hex::encode(ciphertext),
                    updated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                        .to_string(),
                },
            )
            .is_none();
        self.write(&next)?;
        *file = next;
        Ok(new)
    }

    /// The value of `name`.
    ///
    /// # Errors
    /// [`SecretError::Missing`], or a value the key does not open.
    pub fn get(&self, name: &str) -> Result<SecretValue, SecretError> {
        let sealed = self
            .lock()
            .secrets
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::Missing(name.to_string()))?;
        let undecryptable = || SecretError::Undecryptable(name.to_string());
        let nonce = hex::decode(&sealed.nonce).map_err(|_| undecryptable())?;
        let ciphertext = hex::decode(&sealed.ciphertext).map_err(|_| undecryptable())?;
        if nonce.len() != 24 {
            return Err(undecryptable());
        }
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| undecryptable())?;
        String::from_utf8(plain)
            .map(SecretValue)
            .map_err(|_| undecryptable())
    }

    /// Whether `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().secrets.contains_key(name)
    }

    /// Every secret's name and update time, by name.
    pub fn list(&self) -> Vec<SecretInfo> {
        self.lock()
            .secrets
            .iter()
            .map(|(name, s)| SecretInfo {
                name: name.clone(),
                updated_at: s.updated_at.clone(),
            })
            .collect()
    }

    /// Removes `name`; returns whether it existed.
    ///
    /// # Errors
    /// A file that cannot be written (the store is then unchanged).
    pub fn delete(&self, name: &str) -> Result<bool, SecretError> {
        let mut file = self.lock();
        if !file.secrets.contains_key(name) {
            return Ok(false);
        }
        let mut next = file.clone();
        next.secrets.remove(name);
        self.write(&next)?;
        *file = next;
        Ok(true)
    }

    /// The environment an app's `secrets` table asks for: `(VAR, value)`.
    ///
    /// # Errors
    /// The first secret that is missing or cannot be decrypted, naming the
    /// variable it was for.
    pub fn resolve(
        &self,
        refs: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, SecretValue)>, SecretError> {
        refs.iter()
            .map(|(var, name)| Ok((var.clone(), self.get(name)?)))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SecretsFile> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, file: &SecretsFile) -> Result<(), SecretError> {
        let mut text = serde_json::to_vec_pretty(file).map_err(|e| io("encode", &self.path, e))?;
        text.push(b'\n');
        crate::files::write_atomic(&self.path, &text).map_err(|e| io("write", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_encrypted_and_bound_to_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::open(dir.path(), None).unwrap();
        assert!(store.set("db-password", "hunter2").unwrap());
        assert!(!store.set("db-password", "hunter3").unwrap());
        assert_eq!(store.get("db-password").unwrap().expose(), "hunter3");
        assert!(!format!("{:?}", store.get("db-password").unwrap()).contains("hunter"));
        let on_disk = std::fs::read_to_string(dir.path().join(SECRETS_FILE)).unwrap();
        assert!(!on_disk.contains("hunter"), "{on_disk}");
        use std::os::unix::fs::PermissionsExt as _;
        for f in [SECRETS_FILE, KEY_FILE] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // Reopened with the same key: the same value.
        let again = SecretStore::open(dir.path(), None).unwrap();
        assert_eq!(again.get("db-password").unwrap().expose(), "hunter3");
        // A ciphertext moved to another name does not open.
        let mut file: serde_json::Value = serde_json::from_str(&on_disk).unwrap();
        let sealed = file["secrets"]["db-password"].clone();
        file["secrets"]["other"] = sealed;
        std::fs::write(dir.path().join(SECRETS_FILE), file.to_string()).unwrap();
        let moved = SecretStore::open(dir.path(), None).unwrap();
        assert!(matches!(
            moved.get("other"),
            Err(SecretError::Undecryptable(_))
        ));
        // Another key opens nothing.
        std::fs::write(dir.path().join("other.key"), [7u8; 32]).unwrap();
        let wrong = SecretStore::open(dir.path(), Some(&dir.path().join("other.key"))).unwrap();
        assert!(matches!(
            wrong.get("db-password"),
            Err(SecretError::Undecryptable(_))
        ));
    }

    #[test]
    fn names_values_and_resolution_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::open(dir.path(), None).unwrap();
        for bad in ["", "a b", "a/b", &"x".repeat(129)] {
            assert!(
                matches!(store.set(bad, "v"), Err(SecretError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(store.set("x", "a\0b").is_err());
        assert!(store.set("x", &"v".repeat(MAX_VALUE_BYTES + 1)).is_err());
        store.set("token", "t0k3n").unwrap();
        let refs = BTreeMap::from([("API_TOKEN".to_string(), "token".to_string())]);
        let env = store.resolve(&refs).unwrap();
        assert_eq!(env[0].0, "API_TOKEN");
        assert_eq!(env[0].1.expose(), "t0k3n");
        let missing = BTreeMap::from([("X".to_string(), "nope".to_string())]);
        let err = store.resolve(&missing).unwrap_err().to_string();
        assert!(
            err.contains("`nope`") && err.contains("berth secret set nope"),
            "{err}"
        );
        assert!(store.delete("token").unwrap());
        assert!(!store.delete("token").unwrap());
        assert!(store.list().is_empty());
        // A key file of the wrong size is refused, not truncated.
        std::fs::write(dir.path().join("short.key"), [1u8; 5]).unwrap();
        assert!(SecretStore::open(dir.path(), Some(&dir.path().join("short.key"))).is_err());
    }
}
