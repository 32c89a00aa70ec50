//! Bearer-token authentication of the admin API. Every call needs the
//! token, whatever address the admin listener binds (only `/healthz` and
//! `/readyz` stay open, for probes).
//!
//! The token comes from `--admin-token-file` or `BERTH_ADMIN_TOKEN`; when
//! neither is given, from `<data-dir>/admin-token`, which the first start
//! creates with 32 random bytes (hex) and mode 0600, as dockerd keeps its
//! control socket to root. The CLI reads the same file when it runs on the
//! same machine ([`read_token_file`]).
//!
//! Only the token's sha256 is kept in memory, and a presented token is
//! compared by hashing it and comparing the digests in constant time, so
//! neither the comparison's duration nor an early exit tells how much of a
//! guess was right.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use http::{HeaderValue, Request, Response, StatusCode, header};
use sha2::{Digest as _, Sha256};

use super::error_response;
use crate::http::Body;

/// The environment variable holding the admin token (server and CLI).
pub const TOKEN_ENV: &str = "BERTH_ADMIN_TOKEN";

/// The token file inside the data directory.
pub const TOKEN_FILE: &str = "admin-token";

/// Who may use the admin API: whoever presents the token.
#[derive(Clone)]
pub struct AdminAuth {
    /// sha256 of the token.
    token: Arc<[u8; 32]>,
}

impl fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &"<set>")
            .finish()
    }
}

impl AdminAuth {
    /// Requires `token` (surrounding whitespace is ignored).
    ///
    /// # Errors
    /// When the token is empty, or contains whitespace or control
    /// characters (it could not be sent in an `Authorization` header).
    pub fn with_token(token: &str) -> anyhow::Result<Self> {
        let token = token.trim();
        anyhow::ensure!(!token.is_empty(), "the admin token is empty");
        anyhow::ensure!(
            token.bytes().all(|b| b.is_ascii_graphic()),
            "the admin token must be printable ASCII without spaces"
        );
        Ok(Self {
            token: Arc::new(Sha256::digest(token.as_bytes()).into()),
        })
    }

    /// The token from a file (`--admin-token-file`) or from the value of
    /// [`TOKEN_ENV`]; `None` when neither is given (the data dir's token file
    /// then serves, see [`AdminAuth::for_data_dir`]). When both are given
    /// they must agree.
    ///
    /// # Errors
    /// An unreadable file, an unusable token, or two different tokens.
    pub fn from_sources(file: Option<&Path>, env: Option<&str>) -> anyhow::Result<Option<Self>> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the admin token file `{}`", path.display())
                })?;
                warn_if_shared(path);
                Some(text)
            }
            None => None,
        };
        let env = env.filter(|t| !t.trim().is_empty());
        match (from_file, env) {
            (Some(a), Some(b)) if a.trim() != b.trim() => anyhow::bail!(
                "--admin-token-file and {TOKEN_ENV} give different tokens; give one of them"
            ),
            (Some(token), _) => Self::with_token(&token)
                .with_context(|| {
                    format!(
                        "admin token file `{}`",
                        file.map(Path::display)
                            .map(|d| d.to_string())
                            .unwrap_or_default()
                    )
                })
                .map(Some),
            (None, Some(token)) => Self::with_token(token).context(TOKEN_ENV).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The token of `data_dir`'s [`TOKEN_FILE`], created (32 random bytes,
    /// hex, mode 0600) if there is none yet. Returns the auth and whether
    /// the file was created now.
    ///
    /// # Errors
    /// A token file that cannot be read, written, or holds no usable token.
    pub fn for_data_dir(data_dir: &Path) -> anyhow::Result<(Self, bool)> {
        let path = data_dir.join(TOKEN_FILE);
        if let Some(token) = read_token_file(data_dir)? {
            warn_if_shared(&path);
            let auth = Self::with_token(&token)
                .with_context(|| format!("admin token file `{}`", path.display()))?;
            return Ok((auth, false));
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
        let token = hex::encode(bytes);
        match crate::files::write_new_private(&path, format!("{token}\n").as_bytes()) {
            Ok(()) => Ok((Self::with_token(&token)?, true)),
            // Another start created it first: use that one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((Self::for_data_dir(data_dir)?.0, false))
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "cannot write the admin token to `{}`",
                path.display()
            ))),
        }
    }

    /// Whether `token` is the admin token (compared as digests in constant
    /// time, like [`AdminAuth::check`]); the console's sign-in uses it.
    pub fn verify(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        constant_time_eq(&digest, &self.token)
    }

    /// Checks a request's `Authorization: Bearer TOKEN` header.
    ///
    /// # Errors
    /// A `401` response (JSON body, `WWW-Authenticate` header) when a token
    /// is required and missing or wrong.
    #[allow(clippy::result_large_err)] // The error is the response to send.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), Response<Body>> {
        let expected = &self.token;
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let Some(token) = presented else {
            return Err(unauthorized(
                "this admin API needs `Authorization: Bearer TOKEN`",
                "Bearer realm=\"berth-admin\"",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if constant_time_eq(&digest, expected) {
            Ok(())
        } else {
            Err(unauthorized(
                "the bearer token is not valid",
                "Bearer realm=\"berth-admin\", error=\"invalid_token\"",
            ))
        }
    }
}

fn unauthorized(msg: &str, challenge: &'static str) -> Response<Body> {
    let mut resp = error_response(StatusCode::UNAUTHORIZED, msg, None);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

/// The token in `data_dir`'s [`TOKEN_FILE`], if the file exists.
///
/// # Errors
/// A token file that exists but cannot be read.
pub fn read_token_file(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot read the admin token file `{}`",
            path.display()
        ))),
    }
}

/// Compares two digests without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0_u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A token file others can read is a leaked token.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the admin token file is readable by other users; `chmod 600` it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri("/v1/apps");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn a_configured_token_is_always_required() {
        let auth = AdminAuth::with_token("s3cret\n").unwrap();
        assert!(auth.check(&req(Some("Bearer s3cret"))).is_ok());
        assert!(auth.check(&req(Some("bearer  s3cret "))).is_ok());
        for bad in [
            None,
            Some("Bearer wrong"),
            Some("Basic s3cret"),
            Some("s3cret"),
        ] {
            let resp = auth.check(&req(bad)).unwrap_err();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
            assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
        }
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn the_data_dir_token_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = AdminAuth::for_data_dir(dir.path()).unwrap();
        assert!(created);
        let path = dir.path().join(TOKEN_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = read_token_file(dir.path()).unwrap().unwrap();
        assert_eq!(token.len(), 64);
        let (second, created) = AdminAuth::for_data_dir(dir.path()).unwrap();
        assert!(!created);
        let bearer = format!("Bearer {token}");
        assert!(first.check(&req(Some(&bearer))).is_ok());
        assert!(second.check(&req(Some(&bearer))).is_ok());
        assert!(second.check(&req(None)).is_err());
    }

    #[test]
    fn tokens_come_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abc\n").unwrap();
        assert!(
            AdminAuth::from_sources(Some(&file), None)
                .unwrap()
                .is_some()
        );
        assert!(AdminAuth::from_sources(Some(&file), Some("abc")).is_ok());
        assert!(AdminAuth::from_sources(Some(&file), Some("xyz")).is_err());
        assert!(
            AdminAuth::from_sources(None, Some("xyz"))
                .unwrap()
                .is_some()
        );
        assert!(AdminAuth::from_sources(None, Some("  ")).unwrap().is_none());
        assert!(AdminAuth::from_sources(None, None).unwrap().is_none());
        std::fs::write(&file, "\n").unwrap();
        assert!(AdminAuth::from_sources(Some(&file), None).is_err());
        assert!(AdminAuth::with_token("has space").is_err());
    }
}
