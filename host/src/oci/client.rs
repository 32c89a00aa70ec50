//! [`RegistryClient`]: `oci_client` set up for berth, and its errors mapped.
//!
//! - One `oci_client::Client` per registry, created on first use, reusing its
//!   connections and tokens. Loopback registries (`localhost`, `127.*`,
//!   `[::1]`) and those in [`ClientOptions::insecure_registries`] are spoken to
//!   over plain HTTP, everything else over HTTPS.
//! - Connect and read timeouts on every request, a time limit on every
//!   request that moves no blob, a minimum rate on every blob transfer
//!   ([`ClientOptions::min_transfer_rate`]), and bounded retries with
//!   exponential backoff for connection failures, timeouts and 5xx answers;
//!   never for 4xx answers or digest mismatches. An unreachable registry is
//!   not retried once [`ClientOptions::retry_window`] has passed, so a
//!   registry that is down gives an error within seconds (worst case, a
//!   blackholed address: two connect timeouts, about 10 s).
//! - `oci_client` errors become [`OciError`]s naming the registry.

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::{Auth, Digest, OciError};

/// Timeouts, retries and plain-HTTP registries for a [`RegistryClient`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Registries (`host` or `host:port`, a scheme is ignored) reached over
    /// plain HTTP in addition to loopback ones.
    pub insecure_registries: Vec<String>,
    /// Limit on establishing a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Limit on a whole request that moves no blob (resolving a tag, fetching
    /// a manifest, checking a blob exists, pushing a manifest), so that a
    /// registry that accepts connections but never answers is reported
    /// promptly. Default 10 s.
    pub request_timeout: Duration,
    /// Limit on waiting for each read from an open connection. Default 30 s.
    pub read_timeout: Duration,
    /// The least a blob transfer must move per second, measured over each
    /// [`ClientOptions::transfer_rate_window`]: a registry that drips its
    /// bytes is cut off with [`OciError::TooSlow`]. With
    /// [`ClientOptions::max_image_bytes`] it bounds how long a pull can take.
    /// Default 16 KiB/s.
    pub min_transfer_rate: u64,
    /// The window over which [`ClientOptions::min_transfer_rate`] is
    /// measured. Default 30 s.
    pub transfer_rate_window: Duration,
    /// The most bytes one pull may receive (manifests, config and layers,
    /// and the bytes of failed attempts), checked against what the manifest
    /// declares before anything is fetched and against what arrives.
    /// Default 10 GiB.
    pub max_image_bytes: u64,
    /// Attempts per operation, first one included. Default 3.
    pub attempts: u32,
    /// Delay before the first retry, doubled for each further one. Default 250 ms.
    pub backoff: Duration,
    /// No retry of an unreachable registry starts later than this after the
    /// first attempt began, so that a registry that is down is reported
    /// promptly. Default 8 s.
    pub retry_window: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            min_transfer_rate: 16 * 1024,
            transfer_rate_window: Duration::from_secs(30),
            max_image_bytes: 10 * 1024 * 1024 * 1024,
            attempts: 3,
            backoff: Duration::from_millis(250),
            retry_window: Duration::from_secs(8),
        }
    }
}

impl ClientOptions {
    /// Sets [`ClientOptions::insecure_registries`].
    #[must_use]
    pub fn with_insecure_registries(mut self, registries: Vec<String>) -> Self {
        self.insecure_registries = registries;
        self
    }

    /// Sets [`ClientOptions::connect_timeout`], [`ClientOptions::request_timeout`]
    /// and [`ClientOptions::read_timeout`].
    #[must_use]
    pub fn with_timeouts(mut self, connect: Duration, request: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self.read_timeout = read;
        self
    }

    /// Sets [`ClientOptions::min_transfer_rate`] (bytes per second, over
    /// `window`, at least 1 ms) and [`ClientOptions::max_image_bytes`].
    #[must_use]
    pub fn with_transfer_limits(
        mut self,
        min_rate: u64,
        window: Duration,
        max_image_bytes: u64,
    ) -> Self {
        self.min_transfer_rate = min_rate;
        self.transfer_rate_window = window.max(Duration::from_millis(1));
        self.max_image_bytes = max_image_bytes;
        self
    }

    /// Sets [`ClientOptions::attempts`] (at least 1), [`ClientOptions::backoff`]
    /// and [`ClientOptions::retry_window`].
    #[must_use]
    pub fn with_retries(mut self, attempts: u32, backoff: Duration, window: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self.retry_window = window;
        self
    }
}

/// Parses an OCI reference: `host[:port]/repo[:tag]` or `host/repo@sha256:<hex>`
/// (a reference without a tag or digest means `:latest`).
///
/// # Errors
/// [`OciError::InvalidReference`] if it is malformed, or carries a digest that
/// is not a valid sha256 digest.
pub fn parse_reference(reference: &str) -> Result<Reference, OciError> {
    let invalid = |reason: String| OciError::InvalidReference {
        reference: reference.to_owned(),
        reason,
    };
    if reference.contains("://") {
        return Err(invalid(
            "a reference has no scheme; write `host[:port]/repository[:tag]`".to_owned(),
        ));
    }
    let parsed: Reference = reference
        .parse()
        .map_err(|e: oci_client::ParseError| invalid(e.to_string()))?;
    // The registry may be spelt in any case, the repository may not (the
    // grammar lets `UPPER/x` through as a Docker Hub repository).
    if parsed.repository().bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid("the repository name must be lowercase".to_owned()));
    }
    if let Some(digest) = parsed.digest() {
        Digest::parse(digest).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(parsed)
}

/// Whether `registry` (`host[:port]`) is spoken to over plain HTTP: loopback
/// hosts always, others if listed in `insecure_registries` (by `host` or
/// `host:port`).
pub fn uses_plain_http(registry: &str, insecure_registries: &[String]) -> bool {
    let registry = registry.to_ascii_lowercase();
    let host = host_of(&registry);
    let loopback = host == "localhost"
        || host == "[::1]"
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback());
    loopback
        || insecure_registries.iter().any(|entry| {
            let entry = entry.trim().to_ascii_lowercase();
            let entry = entry
                .strip_prefix("http://")
                .or_else(|| entry.strip_prefix("https://"))
                .unwrap_or(&entry)
                .trim_end_matches('/');
            entry == registry || entry == host
        })
}

/// `host:port` → `host`; `[::1]:5000` → `[::1]`.
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.find(']').map_or(registry, |end| &registry[..=end]);
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    }
}

/// A client for OCI registries: credentials, plain-HTTP rules, timeouts and
/// retries. Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Auth,
    options: ClientOptions,
    sessions: Mutex<HashMap<String, Session>>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("auth", &self.inner.auth)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// The `oci_client` client and credentials for one registry.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) auth: RegistryAuth,
    pub(crate) registry: String,
}

impl Session {
    /// [`map_error`] for this registry, adding a hint when the registry
    /// wanted credentials and none were configured for it.
    pub(crate) fn map_error(&self, error: OciDistributionError, what: &str) -> Failure {
        let mut failure = map_error(error, &self.registry, what);
        if let OciError::AuthenticationFailed { detail, .. } = &mut failure.error
            && self.auth == RegistryAuth::Anonymous
        {
            detail.push_str(
                " (no credentials were given or found in the docker config.json for this registry)",
            );
        }
        failure
    }
}

/// A failed attempt: the error, and whether trying again might help.
pub(crate) struct Failure {
    pub(crate) error: OciError,
    pub(crate) transient: bool,
}

/// For errors raised outside [`map_error`]: an unreachable registry (or a
/// request cut off by its timeout) and an interrupted transfer are worth
/// another attempt, nothing else is.
impl From<OciError> for Failure {
    fn from(error: OciError) -> Self {
        let transient = matches!(
            error,
            OciError::Unreachable { .. } | OciError::Registry { .. }
        );
        Self { error, transient }
    }
}

impl RegistryClient {
    /// A client using `auth` for credentials.
    pub fn new(auth: Auth, options: ClientOptions) -> Self {
        // HTTPS registries need the process's rustls provider.
        crate::tls::install_crypto_provider();
        Self {
            inner: Arc::new(Inner {
                auth,
                options,
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A client without credentials and with default options.
    pub fn anonymous() -> Self {
        Self::new(Auth::anonymous(), ClientOptions::default())
    }

    /// The same credentials with [`ClientOptions::max_image_bytes`] set to
    /// `limit` (a new client: sessions are not shared).
    #[must_use]
    pub fn with_max_image_bytes(&self, limit: u64) -> Self {
        let mut options = self.inner.options.clone();
        options.max_image_bytes = limit;
        Self::new(self.inner.auth.clone(), options)
    }

    /// The options this client was created with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Whether `registry` is reached over plain HTTP by this client.
    pub fn uses_plain_http(&self, registry: &str) -> bool {
        uses_plain_http(registry, &self.inner.options.insecure_registries)
    }

    /// The session for the registry of `reference`, created on first use.
    pub(crate) async fn session(&self, reference: &Reference) -> Result<Session, OciError> {
        let registry = reference.resolve_registry();
        if let Some(session) = self.lock_sessions().get(registry) {
            return Ok(session.clone());
        }
        let options = &self.inner.options;
        let protocol = if self.uses_plain_http(registry) {
            ClientProtocol::HttpsExcept(vec![registry.to_owned()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(options.connect_timeout),
            read_timeout: Some(options.read_timeout),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
            platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| OciError::Registry {
            registry: registry.to_owned(),
            detail: format!("cannot create an HTTP client: {}", error_chain(&e)),
        })?;
        let auth = self.inner.auth.resolve(registry);
        client.store_auth_if_needed(registry, &auth).await;
        let session = Session {
            client,
            auth,
            registry: registry.to_owned(),
        };
        Ok(self
            .lock_sessions()
            .entry(registry.to_owned())
            .or_insert(session)
            .clone())
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // The map is only ever inserted into; a panic elsewhere cannot leave
        // it inconsistent.
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs a request that moves no blob: each attempt is limited to
    /// [`ClientOptions::request_timeout`]; see [`RegistryClient::retry_transfer`].
    pub(crate) async fn retry<T, F, Fut>(
        &self,
        registry: &str,
        what: &str,
        op: F,
    ) -> Result<T, OciError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let limit = self.inner.options.request_timeout;
        self.retry_inner(registry, what, Some(limit), op).await
    }

    /// Runs `op` until it succeeds, fails for good, runs out of attempts, or
    /// (for an unreachable registry) the retry window closes. Attempts are
    /// only limited by the connect and read timeouts.
    pub(crate) async fn retry_transfer<T, F, Fut>(
        &self,
        registry: &str,
        what: &str,
        op: F,
    ) -> Result<T, OciError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.retry_inner(registry, what, None, op).await
    }

    async fn retry_inner<T, F, Fut>(
        &self,
        registry: &str,
        what: &str,
        limit: Option<Duration>,
        mut op: F,
    ) -> Result<T, OciError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let options = &self.inner.options;
        let start = Instant::now();
        let mut attempt = 1;
        let mut delay = options.backoff;
        loop {
            let outcome = match limit {
                Some(limit) => tokio::time::timeout(limit, op()).await.unwrap_or_else(|_| {
                    Err(Failure::from(OciError::Unreachable {
                        registry: registry.to_owned(),
                        detail: format!("no answer within {limit:?}"),
                    }))
                }),
                None => op().await,
            };
            let failure = match outcome {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            // The window bounds how long an unreachable registry is retried;
            // a transfer cut off after a long time deserves its retries.
            let window_closed = matches!(failure.error, OciError::Unreachable { .. })
                && start.elapsed() + delay > options.retry_window;
            let give_up = !failure.transient || attempt >= options.attempts || window_closed;
            if give_up {
                let mut error = failure.error;
                if let OciError::Unreachable { detail, .. } = &mut error
                    && attempt > 1
                {
                    detail.push_str(&format!(" (after {attempt} attempts)"));
                }
                return Err(error);
            }
            tracing::debug!(
                %what,
                attempt,
                error = %failure.error,
                "transient registry error; retrying in {delay:?}"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
            delay *= 2;
        }
    }
}

/// Maps an `oci_client` error from an operation on `what` (a reference or a
/// digest) at `registry`.
pub(crate) fn map_error(error: OciDistributionError, registry: &str, what: &str) -> Failure {
    let registry = registry.to_owned();
    let auth_failed = |detail: String| OciError::AuthenticationFailed {
        registry: registry.clone(),
        detail,
    };
    let not_found = || OciError::NotFound {
        registry: registry.clone(),
        what: what.to_owned(),
    };
    let error = match error {
        OciDistributionError::UnauthorizedError { .. } => {
            auth_failed(format!("HTTP 401 Unauthorized for {what}"))
        }
        OciDistributionError::AuthenticationFailure(reason) => auth_failed(format!(
            "token request refused: {}",
            truncate(reason.trim())
        )),
        OciDistributionError::RegistryError { envelope, .. } => {
            let messages = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            let has =
                |codes: &[OciErrorCode]| envelope.errors.iter().any(|e| codes.contains(&e.code));
            if has(&[OciErrorCode::Unauthorized, OciErrorCode::Denied]) {
                auth_failed(messages)
            } else if has(&[
                OciErrorCode::ManifestUnknown,
                OciErrorCode::BlobUnknown,
                OciErrorCode::NameUnknown,
                OciErrorCode::NotFound,
            ]) {
                not_found()
            } else {
                return Failure {
                    error: OciError::Registry {
                        registry,
                        detail: messages,
                    },
                    transient: false,
                };
            }
        }
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 => auth_failed(format!("HTTP 401 Unauthorized for {what}")),
            403 => auth_failed(format!("HTTP 403 Forbidden for {what}")),
            404 => not_found(),
            _ => {
                return Failure {
                    error: OciError::Registry {
                        registry,
                        detail: format!("HTTP {code}: {}", truncate(message.trim())),
                    },
                    transient: code >= 500,
                };
            }
        },
        OciDistributionError::RequestError(e) => {
            if let Some(status) = e.status() {
                match status.as_u16() {
                    401 | 403 => auth_failed(format!("HTTP {status} for {what}")),
                    404 => not_found(),
                    code => {
                        return Failure {
                            error: OciError::Registry {
                                registry,
                                detail: format!("HTTP {status}"),
                            },
                            transient: code >= 500,
                        };
                    }
                }
            } else if e.is_connect() || e.is_timeout() {
                // The top-level message only repeats the URL; the causes say
                // what happened ("tcp connect error: Connection refused").
                let detail = match e.source() {
                    Some(cause) => error_chain(cause),
                    None => e.to_string(),
                };
                OciError::Unreachable { registry, detail }
            } else {
                // The connection broke mid-request or mid-body.
                return Failure {
                    error: OciError::Registry {
                        registry,
                        detail: error_chain(&e),
                    },
                    transient: e.is_request() || e.is_body(),
                };
            }
        }
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            OciError::DigestMismatch { expected, actual }
        }
        OciDistributionError::IoError(e) => return map_stream_error(e, &registry),
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        e @ (OciDistributionError::ManifestParsingError(_)
        | OciDistributionError::VersionedParsingError(_)
        | OciDistributionError::UnsupportedMediaTypeError(_)
        | OciDistributionError::UnsupportedSchemaVersionError(_)
        | OciDistributionError::ManifestEncodingError(_)
        | OciDistributionError::JsonError(_)) => OciError::InvalidManifest {
            what: what.to_owned(),
            detail: e.to_string(),
        },
        e => OciError::Registry {
            registry,
            detail: error_chain(&e),
        },
    };
    // Only connection-level problems are worth another attempt here; the
    // registry answered everything else.
    let transient = matches!(error, OciError::Unreachable { .. });
    Failure { error, transient }
}

/// Maps an error from a blob body stream: `oci_client` reports a digest
/// mismatch it detects at the end of the stream as an I/O error.
pub(crate) fn map_stream_error(e: std::io::Error, registry: &str) -> Failure {
    if let Some(DigestError::VerificationError { expected, actual }) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<DigestError>())
    {
        return Failure {
            error: OciError::DigestMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            },
            transient: false,
        };
    }
    Failure {
        error: OciError::Registry {
            registry: registry.to_owned(),
            detail: format!("transfer interrupted: {}", error_chain(&e)),
        },
        transient: true,
    }
}

/// `error: source: source…`, leaving out a source already quoted by its parent.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Registry error bodies can be whole HTML pages.
fn truncate(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests;
