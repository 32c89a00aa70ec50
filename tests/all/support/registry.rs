//! A real CNCF distribution registry (Debian's `docker-registry`) for tests.
//!
//! Each [`Registry`] runs its own `docker-registry serve` on a free loopback
//! port, with its storage and log in a temporary directory; it is killed when
//! dropped. Needs `/usr/bin/docker-registry` (Debian package
//! `docker-registry`) and, for [`Registry::start_with_htpasswd`], `htpasswd`
//! (package `apache2-utils`) to write the bcrypt entry.
//!
//! The registry writes one access-log line per request, e.g.
//! `127.0.0.1 - - [30/Nov/2026:11:48:16 +0000] "GET /v2/hello/blobs/sha256:… HTTP/1.1" 200 8 "" "berth/0.1.0"`;
//! [`Registry::blob_gets`] counts those.
//!
//! Starting and stopping it is the bench's ([`berth_bench::registry`]),
//! with the access log, deletes and basic auth the tests ask for.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_bench::registry::{DEFAULT_BINARY as BINARY, RegistryOptions};
use tempfile::TempDir;

/// A running registry, killed on drop.
#[derive(Debug)]
pub struct Registry {
    /// The process (killed first on drop, before `root` goes).
    inner: berth_bench::registry::Registry,
    /// Where it listens (always on 127.0.0.1).
    pub addr: SocketAddr,
    /// Its config, storage (`storage/docker/registry/v2/…`) and log.
    pub root: TempDir,
}

impl Registry {
    /// Starts a registry without authentication.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Starts a registry that requires HTTP basic auth as `user:password`.
    pub fn start_with_htpasswd(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user, password)))
    }

    fn start_inner(credentials: Option<(&str, &str)>) -> Self {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing: install the Debian package `docker-registry`"
        );
        let root = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("create registry dir");
        let htpasswd = credentials.map(|(user, password)| {
            let htpasswd = root.path().join("htpasswd");
            std::fs::write(&htpasswd, htpasswd_line(user, password)).expect("write htpasswd");
            htpasswd
        });
        let options = RegistryOptions {
            access_log: true,
            delete: true,
            htpasswd,
        };
        let inner = berth_bench::registry::Registry::start_blocking(
            Path::new(BINARY),
            root.path(),
            &options,
        )
        .unwrap_or_else(|e| panic!("docker-registry did not become ready: {e:#}"));
        Self {
            addr: inner.addr,
            inner,
            root,
        }
    }

    /// `127.0.0.1:PORT`, the registry part of a reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:PORT/<repo_and_tag>`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// The registry's output so far.
    pub fn log_text(&self) -> String {
        self.inner.log_text()
    }

    /// How many blob downloads (`GET /v2/<name>/blobs/sha256:…`) the
    /// registry has served or refused so far.
    pub fn blob_gets(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|line| is_blob_get(line, None))
            .count()
    }

    /// Like [`Registry::blob_gets`], for one digest (`sha256:…`).
    pub fn blob_gets_of(&self, digest: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|line| is_blob_get(line, Some(digest)))
            .count()
    }

    /// Where the registry keeps a blob's bytes on disk.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.root
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// An access-log line for a blob GET (not a HEAD, not an upload).
fn is_blob_get(line: &str, digest: Option<&str>) -> bool {
    let Some(start) = line.find("\"GET /v2/") else {
        return false;
    };
    let request = &line[start..];
    let Some(path_end) = request.find(" HTTP/") else {
        return false;
    };
    let path = &request[5..path_end];
    match path.rsplit_once("/blobs/") {
        Some((_, blob)) => blob.starts_with("sha256:") && digest.is_none_or(|d| blob == d),
        None => false,
    }
}

/// A loopback address nothing listens on right now.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
}

/// A bcrypt htpasswd line from `htpasswd -nbB` (apache2-utils).
fn htpasswd_line(user: &str, password: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-nbB", user, password])
        .output()
        .unwrap_or_else(|e| panic!("cannot run htpasswd (install apache2-utils): {e}"));
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("htpasswd output is UTF-8")
}

/// A docker `config.json` holding `user:password` for `registry` as a base64
/// `auth` entry, as `docker login` writes it.
pub fn docker_config_json(registry: &str, user: &str, password: &str) -> String {
    format!(
        r#"{{"auths": {{"{registry}": {{"auth": "{}"}}}}}}"#,
        base64(format!("{user}:{password}").as_bytes())
    )
}

/// Standard base64 with padding (test credentials only).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs one of the Python helpers in `tests/support/` (oras-py scripts) and
/// returns its stdout; panics with its stderr if it fails.
pub fn python_helper(script: &str, args: &[&str]) -> String {
    // The integration tests belong to the `host` package, a sibling of `tests/`.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/support")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helper output is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (input, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), encoded);
        }
    }

    #[test]
    fn recognises_blob_gets_in_the_access_log() {
        let d = "sha256:24eaf3439a60c96764c4f2c92a0a81b52bd4fe5d5b91f090184a0f6486b1bf29";
        let get = format!(
            r#"127.0.0.1 - - [30/Nov/2026:11:48:16 +0000] "GET /v2/a/b/blobs/{d} HTTP/1.1" 200 8 "" "berth/0.1.0""#
        );
        assert!(is_blob_get(&get, None));
        assert!(is_blob_get(&get, Some(d)));
        assert!(!is_blob_get(&get, Some("sha256:00")));
        for other in [
            format!(r#"127.0.0.1 - - [x] "HEAD /v2/a/blobs/{d} HTTP/1.1" 200 0 "" "x""#),
            r#"127.0.0.1 - - [x] "GET /v2/a/manifests/v1 HTTP/1.1" 200 466 "" "x""#.to_owned(),
            r#"127.0.0.1 - - [x] "PATCH /v2/a/blobs/uploads/u HTTP/1.1" 202 0 "" "x""#.to_owned(),
            format!(
                r#"time="x" level=info msg="response completed" http.request.method=GET http.request.uri="/v2/a/blobs/{d}""#
            ),
        ] {
            assert!(!is_blob_get(&other, None), "{other}");
        }
    }
}
