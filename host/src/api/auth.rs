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
//!
//! An operator's token (flag, environment, file) has at least
//! [`MIN_TOKEN_CHARS`] characters; the generated one has 64.
//!
//! Wrong tokens are slowed per client address ([`FailedAttempts`]), for the
//! API's bearer and the console's sign-in alike: the k-th wrong token in a
//! row from one address is answered [`FIRST_DELAY`]·2^(k−1) (at most
//! [`MAX_DELAY`]) after the previous wrong answer to that address, so
//! sending guesses in parallel gains nothing; an address whose next answer
//! is more than [`MAX_QUEUED`] away gets `429` at once, its token unchecked.
//! A right token is answered at once and clears its address's record.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use http::{HeaderValue, Request, Response, StatusCode, header};
use sha2::{Digest as _, Sha256};

use tokio::time::Instant;

use super::error_response;
use crate::http::{Body, ClientAddr, ClientKey};

/// The environment variable holding the admin token (server and CLI).
pub const TOKEN_ENV: &str = "BERTH_ADMIN_TOKEN";

/// The token file inside the data directory.
pub const TOKEN_FILE: &str = "admin-token";

/// The shortest admin token accepted.
pub const MIN_TOKEN_CHARS: usize = 32;

/// The delay of a client address's first wrong token in a row.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between two wrong answers to one address.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// How far ahead an address's next wrong answer may be scheduled; past it,
/// its attempts get `429` without being checked.
pub const MAX_QUEUED: Duration = Duration::from_secs(60);
/// Client addresses whose failures are remembered at once; past it the
/// stalest record goes.
pub const MAX_TRACKED: usize = 4096;
/// A record with no failure for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// Who may use the admin API: whoever presents the token.
#[derive(Clone)]
pub struct AdminAuth {
    /// sha256 of the token.
    token: Arc<[u8; 32]>,
    /// Wrong tokens per client address.
    failures: Arc<Mutex<FailedAttempts>>,
}

/// What became of a presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The token is right.
    Accepted,
    /// The token is wrong (answered after its delay).
    Wrong,
    /// The address has too many wrong answers pending; the token was not
    /// checked. Retry after this long.
    TooMany(Duration),
}

/// Wrong tokens per client address, in a bounded map.
#[derive(Debug, Default)]
pub struct FailedAttempts {
    records: HashMap<ClientKey, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    /// Wrong tokens in a row.
    count: u32,
    /// When the last wrong answer to this address is due.
    next_answer: Instant,
    /// When the last wrong token came.
    last: Instant,
}

impl FailedAttempts {
    /// How long until `key` may be answered; `Err` with the wait when it is
    /// past [`MAX_QUEUED`].
    fn admit(&self, key: ClientKey, now: Instant) -> Result<(), Duration> {
        match self.records.get(&key) {
            Some(f) if f.next_answer > now + MAX_QUEUED => Err(f.next_answer - now - MAX_QUEUED),
            _ => Ok(()),
        }
    }

    /// Records a wrong token from `key`; returns when to answer it.
    fn wrong(&mut self, key: ClientKey, now: Instant) -> Instant {
        if !self.records.contains_key(&key) && self.records.len() >= MAX_TRACKED {
            self.records
                .retain(|_, f| now.duration_since(f.last) < FORGET_AFTER || f.next_answer > now);
            if self.records.len() >= MAX_TRACKED
                && let Some(stalest) = self
                    .records
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| *k)
            {
                self.records.remove(&stalest);
            }
        }
        let f = self.records.entry(key).or_insert(Failures {
            count: 0,
            next_answer: now,
            last: now,
        });
        if now.duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        let delay = FIRST_DELAY
            .saturating_mul(1 << (f.count - 1).min(16))
            .min(MAX_DELAY);
        f.next_answer = f.next_answer.max(now) + delay;
        f.next_answer
    }

    /// Clears `key`'s record (a right token).
    fn right(&mut self, key: ClientKey) {
        self.records.remove(&key);
    }

    /// Addresses remembered now.
    fn len(&self) -> usize {
        self.records.len()
    }
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
    /// When the token is empty, shorter than [`MIN_TOKEN_CHARS`], or
    /// contains whitespace or control characters (it could not be sent in
    /// an `Authorization` header).
    pub fn with_token(token: &str) -> anyhow::Result<Self> {
        let token = token.trim();
        anyhow::ensure!(!token.is_empty(), "the admin token is empty");
        anyhow::ensure!(
            token.bytes().all(|b| b.is_ascii_graphic()),
            "the admin token must be printable ASCII without spaces"
        );
        anyhow::ensure!(
            token.len() >= MIN_TOKEN_CHARS,
            "the admin token has {} characters; berth needs at least {MIN_TOKEN_CHARS} \
             (e.g. `openssl rand -hex 32`)",
            token.len()
        );
        Ok(Self {
            token: Arc::new(Sha256::digest(token.as_bytes()).into()),
            failures: Arc::default(),
        })
    }

    /// Checks `token` presented from `client`, slowing wrong ones (see the
    /// module docs). A request without a client address (never from the
    /// listeners) counts as one address of its own.
    pub async fn attempt(&self, client: Option<ClientAddr>, token: &str) -> Attempt {
        let key = client.map_or(ClientKey::of(std::net::Ipv6Addr::UNSPECIFIED.into()), |c| {
            ClientKey::of(c.0.ip())
        });
        let now = Instant::now();
        let answer_at = {
            let mut failures = self.lock_failures();
            if let Err(wait) = failures.admit(key, now) {
                return Attempt::TooMany(wait);
            }
            if self.verify(token) {
                failures.right(key);
                return Attempt::Accepted;
            }
            failures.wrong(key, now)
        };
        tokio::time::sleep_until(answer_at).await;
        Attempt::Wrong
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, FailedAttempts> {
        // Only counts inside; a panic leaves them usable.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Client addresses with wrong tokens remembered now.
    pub fn tracked_clients(&self) -> usize {
        self.lock_failures().len()
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
        let token =
            random_token().map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
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
    /// time), with no slow-down: callers facing clients use
    /// [`AdminAuth::attempt`].
    pub fn verify(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        constant_time_eq(&digest, &self.token)
    }

    /// Checks a request's `Authorization: Bearer TOKEN` header, slowing
    /// wrong tokens per client address ([`AdminAuth::attempt`]). The
    /// future borrows nothing of the request.
    ///
    /// # Errors
    /// A `401` response (JSON body, `WWW-Authenticate` header) when the
    /// token is missing or wrong, a `429` with `Retry-After` when the
    /// client's address has too many wrong ones pending.
    pub fn check<B>(
        &self,
        req: &Request<B>,
    ) -> impl Future<Output = Result<(), Response<Body>>> + Send + use<B> {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_string())
            });
        let client = req.extensions().get::<ClientAddr>().copied();
        let auth = self.clone();
        async move {
            let Some(token) = presented else {
                return Err(unauthorized(
                    "this admin API needs `Authorization: Bearer TOKEN`",
                    "Bearer realm=\"berth-admin\"",
                ));
            };
            match auth.attempt(client, &token).await {
                Attempt::Accepted => Ok(()),
                Attempt::Wrong => Err(unauthorized(
                    "the bearer token is not valid",
                    "Bearer realm=\"berth-admin\", error=\"invalid_token\"",
                )),
                Attempt::TooMany(wait) => Err(too_many(wait)),
            }
        }
    }
}

/// The `429` of an address with too many wrong tokens pending.
fn too_many(wait: Duration) -> Response<Body> {
    let secs = wait.as_secs().max(1);
    let mut resp = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "too many wrong admin tokens from this address; the token was not checked, retry in {secs} s"
        ),
        None,
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
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

/// Whether secrets `a` and `b` are equal: compared as sha256 digests in
/// constant time (the admin token, the console's CSRF tokens).
pub fn same_secret(a: &str, b: &str) -> bool {
    let a: [u8; 32] = Sha256::digest(a.as_bytes()).into();
    let b: [u8; 32] = Sha256::digest(b.as_bytes()).into();
    constant_time_eq(&a, &b)
}

/// 32 random bytes in hex: a token, a session id.
///
/// # Errors
/// The system has no randomness to give.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
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

    const TOKEN: &str = "s3cret-s3cret-s3cret-s3cret-s3cret";

    #[tokio::test(start_paused = true)]
    async fn a_configured_token_is_always_required() {
        let auth = AdminAuth::with_token(&format!("{TOKEN}\n")).unwrap();
        assert!(
            auth.check(&req(Some(&format!("Bearer {TOKEN}"))))
                .await
                .is_ok()
        );
        assert!(
            auth.check(&req(Some(&format!("bearer  {TOKEN} "))))
                .await
                .is_ok()
        );
        let basic = format!("Basic {TOKEN}");
        for bad in [None, Some("Bearer wrong"), Some(&basic), Some(TOKEN)] {
            let resp = auth.check(&req(bad)).await.unwrap_err();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
            assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
        }
        assert!(!format!("{auth:?}").contains(TOKEN));
    }

    #[tokio::test]
    async fn the_data_dir_token_is_created_once_and_private() {
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
        assert!(first.check(&req(Some(&bearer))).await.is_ok());
        assert!(second.check(&req(Some(&bearer))).await.is_ok());
        assert!(second.check(&req(None)).await.is_err());
    }

    #[test]
    fn tokens_come_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let abc = "abc".repeat(11);
        let xyz = "xyz".repeat(11);
        std::fs::write(&file, format!("{abc}\n")).unwrap();
        assert!(
            AdminAuth::from_sources(Some(&file), None)
                .unwrap()
                .is_some()
        );
        assert!(AdminAuth::from_sources(Some(&file), Some(&abc)).is_ok());
        assert!(AdminAuth::from_sources(Some(&file), Some(&xyz)).is_err());
        assert!(AdminAuth::from_sources(None, Some(&xyz)).unwrap().is_some());
        assert!(AdminAuth::from_sources(None, Some("  ")).unwrap().is_none());
        assert!(AdminAuth::from_sources(None, None).unwrap().is_none());
        std::fs::write(&file, "\n").unwrap();
        assert!(AdminAuth::from_sources(Some(&file), None).is_err());
        assert!(AdminAuth::with_token(&format!("has space{abc}")).is_err());
    }

    #[test]
    fn a_short_operator_token_is_refused_naming_the_minimum() {
        let e = AdminAuth::with_token(&"x".repeat(31))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("31 characters") && e.contains("at least 32"),
            "{e}"
        );
        assert!(AdminAuth::with_token(&"x".repeat(32)).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let e = AdminAuth::from_sources(None, Some("a"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(TOKEN_ENV), "{e}");
        std::fs::write(dir.path().join(TOKEN_FILE), "short\n").unwrap();
        let e = format!("{:#}", AdminAuth::for_data_dir(dir.path()).unwrap_err());
        assert!(e.contains("at least 32"), "{e}");
    }

    fn from(ip: &str) -> Option<ClientAddr> {
        Some(ClientAddr(std::net::SocketAddr::new(
            ip.parse().unwrap(),
            4000,
        )))
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_tokens_are_answered_ever_later_per_address_and_a_right_one_at_once() {
        let auth = AdminAuth::with_token(TOKEN).unwrap();
        let start = Instant::now();
        // One after the other: 100 ms, 200 ms, 400 ms, ... up to 10 s.
        let mut waits = Vec::new();
        for _ in 0..9 {
            let t = Instant::now();
            assert_eq!(
                auth.attempt(from("10.0.0.1"), "wrong").await,
                Attempt::Wrong
            );
            waits.push(t.elapsed().as_millis());
        }
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        // Another address: its first wrong one waits 100 ms, a right one
        // not at all.
        let t = Instant::now();
        assert_eq!(
            auth.attempt(from("10.0.0.2"), TOKEN).await,
            Attempt::Accepted
        );
        assert_eq!(t.elapsed(), Duration::ZERO);
        // A right token clears the record: the next wrong one is quick again.
        assert_eq!(
            auth.attempt(from("10.0.0.1"), TOKEN).await,
            Attempt::Accepted
        );
        let t = Instant::now();
        assert_eq!(
            auth.attempt(from("10.0.0.1"), "wrong").await,
            Attempt::Wrong
        );
        assert_eq!(t.elapsed(), FIRST_DELAY);
        assert!(start.elapsed() < Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn guesses_in_parallel_are_answered_one_delay_apart_then_refused_unchecked() {
        let auth = AdminAuth::with_token(TOKEN).unwrap();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let auth = auth.clone();
            tasks.spawn(async move {
                let r = auth.attempt(from("10.0.0.3"), "wrong").await;
                (r, start.elapsed())
            });
            // Let it take its place in the schedule.
            tokio::task::yield_now().await;
        }
        // While the queue is past a minute, even the right token is
        // refused unchecked.
        assert!(matches!(
            auth.attempt(from("10.0.0.3"), TOKEN).await,
            Attempt::TooMany(_)
        ));
        let mut answers = tasks.join_all().await;
        answers.sort_by_key(|(_, t)| *t);
        let wrong: Vec<u128> = answers
            .iter()
            .filter(|(r, _)| *r == Attempt::Wrong)
            .map(|(_, t)| t.as_millis())
            .collect();
        // Sequential however they came: 0.1, 0.3, 0.7, 1.5, 3.1, 6.3,
        // 12.7, 22.7, 32.7, 42.7, 52.7, 62.7 (the last within a minute of
        // being asked).
        assert_eq!(
            wrong,
            [
                100, 300, 700, 1500, 3100, 6300, 12_700, 22_700, 32_700, 42_700, 52_700, 62_700
            ]
        );
        // The rest were refused at once, unchecked: even the right token.
        assert!(
            answers
                .iter()
                .any(|(r, t)| matches!(r, Attempt::TooMany(_)) && t.is_zero())
        );
        assert_eq!(answers.len(), 20);
        // Once the queue has drained, the right token gets in.
        tokio::time::sleep(Duration::from_secs(70)).await;
        assert_eq!(
            auth.attempt(from("10.0.0.3"), TOKEN).await,
            Attempt::Accepted
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_bookkeeping_is_bounded() {
        let auth = AdminAuth::with_token(TOKEN).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..(MAX_TRACKED as u32 + 500) {
            let auth = auth.clone();
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            tasks.spawn(async move { auth.attempt(from(&ip), "wrong").await });
        }
        tasks.join_all().await;
        assert_eq!(auth.tracked_clients(), MAX_TRACKED);
    }
}
