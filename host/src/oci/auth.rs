//! Registry credentials.
//!
//! In order of precedence:
//! 1. explicit credentials ([`Auth::with_credentials`]; the CLI takes them
//!    from `--username`/`--password` or `BERTH_REGISTRY_USERNAME`/
//!    `BERTH_REGISTRY_PASSWORD`);
//! 2. the user's docker `config.json` ([`DockerConfig`]), as the docker CLI
//!    reads it: a credential helper named for the registry in `credHelpers`;
//!    else an `auths.<registry>` entry with a base64 `auth`
//!    (`user:password`), `username`/`password` fields, or a
//!    `registrytoken`; else the `credsStore` helper. Helpers
//!    (`docker-credential-NAME get`) are run through the `docker_credential`
//!    crate;
//! 3. anonymous.
//!
//! `oci_client` then does the registry's challenge itself: HTTP basic, or the
//! bearer-token flow (credentials sent to the token realm only).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

use super::OciError;

/// A user name and password (or token) for HTTP basic auth.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl Credentials {
    /// Credentials from a user name and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One usable `auths` entry of a docker config.
#[derive(Clone, PartialEq, Eq)]
enum Entry {
    Basic(Credentials),
    Bearer(String),
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic(c) => c.fmt(f),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// The credentials in a docker `config.json`, keyed by registry host.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// Normalised registry host → credentials.
    auths: HashMap<String, Entry>,
    /// Normalised registry host → helper name (`credHelpers`).
    helpers: HashMap<String, String>,
    /// The default helper (`credsStore`).
    store: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: HashMap<String, RawEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

impl DockerConfig {
    /// Where the docker CLI keeps its config: `$DOCKER_CONFIG/config.json`, or
    /// `~/.docker/config.json`. `None` if neither variable is set.
    pub fn default_path() -> Option<PathBuf> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::path_from(
            std::env::var_os("DOCKER_CONFIG").as_deref(),
            home.as_deref(),
        )
    }

    /// [`DockerConfig::default_path`] given the values of `DOCKER_CONFIG` and
    /// `HOME` (empty values count as unset).
    pub fn path_from(docker_config_dir: Option<&OsStr>, home: Option<&Path>) -> Option<PathBuf> {
        match docker_config_dir.filter(|d| !d.is_empty()) {
            Some(dir) => Some(Path::new(dir).join("config.json")),
            None => home
                .filter(|h| !h.as_os_str().is_empty())
                .map(|h| h.join(".docker").join("config.json")),
        }
    }

    /// Loads [`DockerConfig::default_path`]; `Ok(None)` if there is no such file.
    ///
    /// # Errors
    /// [`OciError::DockerConfig`] if the file exists but cannot be read or parsed.
    pub fn load_default() -> Result<Option<Self>, OciError> {
        match Self::default_path() {
            Some(path) => Self::load(&path),
            None => Ok(None),
        }
    }

    /// Loads a docker config file; `Ok(None)` if it does not exist.
    ///
    /// # Errors
    /// [`OciError::DockerConfig`] if it cannot be read or parsed, naming the
    /// file and registry but never the secret.
    pub fn load(path: &Path) -> Result<Option<Self>, OciError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(&bytes, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(OciError::DockerConfig {
                path: path.to_owned(),
                detail: e.to_string(),
            }),
        }
    }

    /// Parses the contents of a docker config; `path` is only for errors.
    ///
    /// # Errors
    /// [`OciError::DockerConfig`] for malformed JSON or a malformed `auth` entry.
    pub fn parse(json: &[u8], path: &Path) -> Result<Self, OciError> {
        let err = |detail: String| OciError::DockerConfig {
            path: path.to_owned(),
            detail,
        };
        let raw: RawConfig = serde_json::from_slice(json).map_err(|e| err(e.to_string()))?;
        let mut auths = HashMap::new();
        for (key, entry) in raw.auths {
            let host = normalize_registry(&key);
            let parsed = if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| err(format!("auths.{key:?}.auth is not base64: {e}")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| err(format!("auths.{key:?}.auth is not UTF-8")))?;
                let (user, pass) = decoded.split_once(':').ok_or_else(|| {
                    err(format!(
                        "auths.{key:?}.auth does not decode to `user:password`"
                    ))
                })?;
                Some(Entry::Basic(Credentials::new(user, pass)))
            } else if let (Some(user), Some(pass)) = (entry.username, entry.password) {
                Some(Entry::Basic(Credentials::new(user, pass)))
            } else {
                entry
                    .registrytoken
                    .filter(|t| !t.is_empty())
                    .map(Entry::Bearer)
            };
            match parsed {
                Some(entry) => {
                    auths.insert(host, entry);
                }
                None => tracing::debug!(
                    registry = %key,
                    "docker config entry has no inline credentials (a helper may have them)"
                ),
            }
        }
        let helpers = raw
            .cred_helpers
            .into_iter()
            .filter(|(_, helper)| !helper.is_empty())
            .map(|(key, helper)| (normalize_registry(&key), helper))
            .collect();
        let store = raw.creds_store.filter(|s| !s.is_empty());
        Ok(Self {
            auths,
            helpers,
            store,
        })
    }

    /// The credentials for `registry` (`host[:port]`), if any. Keys with and
    /// without an `http(s)://` scheme or a path match, as do Docker Hub's
    /// aliases (`docker.io`, `index.docker.io`, `registry-1.docker.io`).
    ///
    /// A helper named for the registry in `credHelpers` comes first, then an
    /// inline `auths` entry, then the `credsStore` helper (the docker CLI's
    /// order). A helper that fails or knows nothing of the registry is
    /// logged (without its output, which may hold a secret) and counts as
    /// no credentials. Running a helper blocks for as long as it takes.
    pub fn auth_for(&self, registry: &str) -> Option<RegistryAuth> {
        let host = normalize_registry(registry);
        if let Some(helper) = self.helpers.get(&host) {
            return run_helper(helper, &host);
        }
        if let Some(entry) = self.auths.get(&host) {
            return Some(match entry {
                Entry::Basic(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
                Entry::Bearer(t) => RegistryAuth::Bearer(t.clone()),
            });
        }
        run_helper(self.store.as_deref()?, &host)
    }
}

/// `docker-credential-HELPER get` for `host`, through `docker_credential`.
fn run_helper(helper: &str, host: &str) -> Option<RegistryAuth> {
    // Docker Hub's helpers know it by its historical address.
    let server = if host == "docker.io" {
        "https://index.docker.io/v1/"
    } else {
        host
    };
    // A config naming only this helper for this server: the crate runs it.
    let config = serde_json::json!({ "credHelpers": { server: helper } }).to_string();
    match docker_credential::get_credential_from_reader(config.as_bytes(), server) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, secret)) => {
            Some(RegistryAuth::Basic(user, secret))
        }
        Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
            Some(RegistryAuth::Bearer(token))
        }
        Err(e) => {
            let what = match e {
                docker_credential::CredentialRetrievalError::HelperFailure { .. } => {
                    "the helper failed or has no credentials for it".to_string()
                }
                other => other.to_string(),
            };
            tracing::warn!(
                registry = %host,
                helper = %format!("docker-credential-{helper}"),
                "no credentials from the docker credential helper: {what}"
            );
            None
        }
    }
}

/// `https://Index.Docker.io/v1/` → `docker.io`; `http://127.0.0.1:5000` →
/// `127.0.0.1:5000`.
fn normalize_registry(key: &str) -> String {
    let key = key.trim();
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    }
}

/// Where a [`super::RegistryClient`] gets credentials for each registry.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    explicit: Option<Credentials>,
    docker: Option<DockerConfig>,
}

impl Auth {
    /// No credentials at all.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// The user's docker config ([`DockerConfig::load_default`]), if any.
    ///
    /// # Errors
    /// As [`DockerConfig::load_default`].
    pub fn from_docker_config() -> Result<Self, OciError> {
        Ok(Self {
            explicit: None,
            docker: DockerConfig::load_default()?,
        })
    }

    /// Uses these credentials for every registry, ahead of any docker config.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.explicit = Some(credentials);
        self
    }

    /// Looks credentials up in this docker config.
    #[must_use]
    pub fn with_docker_config(mut self, config: DockerConfig) -> Self {
        self.docker = Some(config);
        self
    }

    /// What to present to `registry` (`host[:port]`).
    pub fn resolve(&self, registry: &str) -> RegistryAuth {
        if let Some(c) = &self.explicit {
            return RegistryAuth::Basic(c.username.clone(), c.password.clone());
        }
        self.docker
            .as_ref()
            .and_then(|d| d.auth_for(registry))
            .unwrap_or(RegistryAuth::Anonymous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn default_path_honours_docker_config_dir() {
        let home = Path::new("/home/u");
        assert_eq!(
            DockerConfig::path_from(Some(OsStr::new("/etc/dc")), Some(home)),
            Some(PathBuf::from("/etc/dc/config.json"))
        );
        assert_eq!(
            DockerConfig::path_from(None, Some(home)),
            Some(PathBuf::from("/home/u/.docker/config.json"))
        );
        assert_eq!(
            DockerConfig::path_from(Some(OsStr::new("")), Some(home)),
            Some(PathBuf::from("/home/u/.docker/config.json"))
        );
        assert_eq!(DockerConfig::path_from(None, None), None);
    }

    #[test]
    fn parses_auth_and_username_password_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let json = serde_json::json!({
            "auths": {
                "127.0.0.1:5000": {"auth": b64("alice:s3cret:with:colons")},
                "https://registry.example.com": {"username": "bob", "password": "hunter2"},
                "http://plain.example.com:8080/": {"auth": b64("carol:pw")},
                "https://index.docker.io/v1/": {"auth": b64("dave:hub")},
                "tokens.example.com": {"registrytoken": "tok"},
                "helper.example.com": {},
                "empty.example.com": {"auth": ""},
            },
            "credsStore": "desktop",
        });
        std::fs::write(&path, json.to_string()).unwrap();
        let cfg = DockerConfig::load(&path).unwrap().unwrap();
        let basic = |u: &str, p: &str| Some(RegistryAuth::Basic(u.into(), p.into()));
        assert_eq!(
            cfg.auth_for("127.0.0.1:5000"),
            basic("alice", "s3cret:with:colons")
        );
        assert_eq!(
            cfg.auth_for("registry.example.com"),
            basic("bob", "hunter2")
        );
        assert_eq!(cfg.auth_for("plain.example.com:8080"), basic("carol", "pw"));
        assert_eq!(cfg.auth_for("index.docker.io"), basic("dave", "hub"));
        assert_eq!(cfg.auth_for("docker.io"), basic("dave", "hub"));
        assert_eq!(
            cfg.auth_for("tokens.example.com"),
            Some(RegistryAuth::Bearer("tok".into()))
        );
        assert_eq!(cfg.auth_for("helper.example.com"), None);
        assert_eq!(cfg.auth_for("empty.example.com"), None);
        assert_eq!(cfg.auth_for("127.0.0.1:5001"), None);

        let auth = Auth::anonymous().with_docker_config(cfg);
        assert_eq!(
            auth.resolve("127.0.0.1:5000"),
            basic("alice", "s3cret:with:colons").unwrap()
        );
        assert_eq!(
            auth.resolve("elsewhere.example.com"),
            RegistryAuth::Anonymous
        );
        let auth = auth.with_credentials(Credentials::new("flag", "pw"));
        assert_eq!(auth.resolve("127.0.0.1:5000"), basic("flag", "pw").unwrap());
    }

    #[test]
    fn missing_file_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            DockerConfig::load(&dir.path().join("config.json"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn malformed_configs_name_the_file_not_the_secret() {
        let path = Path::new("/somewhere/config.json");
        for (json, needle) in [
            (r#"{"auths": "#.to_owned(), "EOF"),
            (
                format!(
                    r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
                    b64("no-colon-secret")
                ),
                "user:password",
            ),
            (
                r#"{"auths": {"r.example": {"auth": "%%%"}}}"#.to_owned(),
                "not base64",
            ),
        ] {
            let msg = DockerConfig::parse(json.as_bytes(), path)
                .unwrap_err()
                .to_string();
            assert!(msg.contains("/somewhere/config.json"), "{msg}");
            assert!(msg.contains(needle), "{msg}");
            assert!(!msg.contains("no-colon-secret"), "{msg}");
        }
    }

    #[test]
    fn debug_output_redacts_passwords() {
        let c = Credentials::new("user", "topsecret");
        assert!(!format!("{c:?}").contains("topsecret"));
        let auth = Auth::anonymous().with_credentials(c);
        assert!(!format!("{auth:?}").contains("topsecret"));
    }
}
