//! Bearer-token authentication of the admin API.
//!
//! A token is **required** whenever the admin listener is not loopback-only
//! ([`AdminAuth::ensure_listener_allowed`] refuses to start otherwise). With a
//! loopback listener and no token configured, requests are allowed: only
//! local users reach it. Once a token is configured it is always required.
//!
//! Only the token's sha256 is kept in memory, and a presented token is
//! compared by hashing it and comparing the digests in constant time, so
//! neither the comparison's duration nor an early exit tells how much of a
//! guess was right.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use http::{HeaderValue, Request, Response, StatusCode, header};
use sha2::{Digest as _, Sha256};

use super::error_response;
use crate::http::Body;

/// The environment variable holding the admin token (server and CLI).
pub const TOKEN_ENV: &str = "BERTH_ADMIN_TOKEN";

/// Who may use the admin API.
#[derive(Clone, Default)]
pub struct AdminAuth {
    /// sha256 of the token; `None` = no token configured.
    token: Option<Arc<[u8; 32]>>,
}

impl fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl AdminAuth {
    /// No token: only a loopback admin listener is allowed.
    pub fn none() -> Self {
        Self::default()
    }

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
            token: Some(Arc::new(Sha256::digest(token.as_bytes()).into())),
        })
    }

    /// The token from a file (`--admin-token-file`) or from the value of
    /// [`TOKEN_ENV`]; neither = no token. When both are given they must agree.
    ///
    /// # Errors
    /// An unreadable file, an unusable token, or two different tokens.
    pub fn from_sources(file: Option<&Path>, env: Option<&str>) -> anyhow::Result<Self> {
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
            (Some(token), _) => Self::with_token(&token).with_context(|| {
                format!(
                    "admin token file `{}`",
                    file.map(Path::display)
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                )
            }),
            (None, Some(token)) => Self::with_token(token).context(TOKEN_ENV),
            (None, None) => Ok(Self::none()),
        }
    }

    /// Whether a token is configured (and so required).
    pub fn is_required(&self) -> bool {
        self.token.is_some()
    }

    /// Refuses an admin listener that others than local users can reach
    /// when no token is configured.
    ///
    /// # Errors
    /// A message saying why and how to fix it.
    pub fn ensure_listener_allowed(&self, addr: SocketAddr) -> anyhow::Result<()> {
        if self.token.is_none() && !addr.ip().to_canonical().is_loopback() {
            anyhow::bail!(
                "the admin listener {addr} is reachable from other hosts, so the admin API needs \
                 a token: pass --admin-token-file FILE or set {TOKEN_ENV} (or listen on \
                 127.0.0.1 / [::1])"
            );
        }
        Ok(())
    }

    /// Checks a request's `Authorization: Bearer TOKEN` header.
    ///
    /// # Errors
    /// A `401` response (JSON body, `WWW-Authenticate` header) when a token
    /// is required and missing or wrong.
    #[allow(clippy::result_large_err)] // The error is the response to send.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), Response<Body>> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
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
        assert!(AdminAuth::none().check(&req(None)).is_ok());
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn a_reachable_listener_needs_a_token() {
        let none = AdminAuth::none();
        assert!(
            none.ensure_listener_allowed("127.0.0.1:8081".parse().unwrap())
                .is_ok()
        );
        assert!(
            none.ensure_listener_allowed("[::1]:8081".parse().unwrap())
                .is_ok()
        );
        assert!(
            none.ensure_listener_allowed("[::ffff:127.0.0.1]:1".parse().unwrap())
                .is_ok()
        );
        let msg = none
            .ensure_listener_allowed("0.0.0.0:8081".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("--admin-token-file") && msg.contains(TOKEN_ENV),
            "{msg}"
        );
        assert!(
            none.ensure_listener_allowed("[::]:8081".parse().unwrap())
                .is_err()
        );
        let token = AdminAuth::with_token("t").unwrap();
        assert!(
            token
                .ensure_listener_allowed("0.0.0.0:8081".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn tokens_come_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abc\n").unwrap();
        assert!(
            AdminAuth::from_sources(Some(&file), None)
                .unwrap()
                .is_required()
        );
        assert!(AdminAuth::from_sources(Some(&file), Some("abc")).is_ok());
        assert!(AdminAuth::from_sources(Some(&file), Some("xyz")).is_err());
        assert!(
            AdminAuth::from_sources(None, Some("xyz"))
                .unwrap()
                .is_required()
        );
        assert!(
            !AdminAuth::from_sources(None, Some("  "))
                .unwrap()
                .is_required()
        );
        assert!(!AdminAuth::from_sources(None, None).unwrap().is_required());
        std::fs::write(&file, "\n").unwrap();
        assert!(AdminAuth::from_sources(Some(&file), None).is_err());
        assert!(AdminAuth::with_token("has space").is_err());
    }
}
