//! [`Puller`]: resolve a reference, fetch what is missing, verify, store.
//!
//! 1. A tag is resolved to its manifest digest (`HEAD`); a digest reference is
//!    used as is. Everything after this works on the pinned digest.
//! 2. The manifest is taken from the [`BlobStore`] if present, otherwise
//!    fetched, checked against the digest and stored. An index is resolved to
//!    the entry for `wasm` or `linux/amd64` the same way.
//! 3. The manifest is classified ([`super::classify()`]).
//! 4. The image's declared size is checked against the limit, then every blob
//!    not yet stored is streamed into the store with its digest and size
//!    verified: for a Wasm component its layer, whose header is then checked
//!    (a core module is refused); for a container image its config and every
//!    layer (unpacking them is `container::rootfs`'s work).
//!
//! A second pull of a digest whose blobs are all stored transfers nothing (a
//! tag costs one `HEAD`; a digest reference makes no request at all).
//!
//! # Bounds
//! Nothing a registry or a manifest says is trusted for sizes or time:
//! - manifests and the image config are at most 4 MiB ([`MAX_MANIFEST_BYTES`],
//!   [`MAX_CONFIG_BYTES`]); a stored blob is measured before it is read;
//! - a whole pull is at most [`ClientOptions::max_image_bytes`]: the sizes the
//!   manifest declares are checked before anything is fetched, and the bytes
//!   that arrive (those of failed attempts too) as they arrive;
//! - every blob is exactly its descriptor's size: a `Content-Length` that
//!   disagrees is refused before the body is read, a body that runs longer is
//!   cut off at the first byte too many, a shorter one refused at its end, a
//!   stored copy of another size refused ([`OciError::SizeMismatch`],
//!   [`OciError::TooLarge`]); nothing is stored then, and no temporary file
//!   stays behind;
//! - a blob's response must start within [`ClientOptions::request_timeout`]
//!   and its body move at least [`ClientOptions::min_transfer_rate`] over
//!   each [`ClientOptions::transfer_rate_window`] ([`OciError::TooSlow`]).
//!
//! Manifest bodies are read whole by `oci_client` before their size can be
//! checked; [`ClientOptions::request_timeout`] bounds how long that takes.
//!
//! [`ClientOptions::max_image_bytes`]: super::ClientOptions::max_image_bytes
//! [`ClientOptions::request_timeout`]: super::ClientOptions::request_timeout
//! [`ClientOptions::min_transfer_rate`]: super::ClientOptions::min_transfer_rate
//! [`ClientOptions::transfer_rate_window`]: super::ClientOptions::transfer_rate_window

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use oci_client::Reference;
use oci_client::manifest::OciManifest;

use super::classify::{self, Classification, Descriptor, parse_manifest};
use super::client::{Failure, Session, map_stream_error};
use super::component::{self, HEADER_LEN};
use super::{
    ArtifactKind, BlobStore, Digest, OciError, RegistryClient, media_type, parse_reference,
};

/// Manifests larger than this are refused (the distribution registry's own limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Image configs larger than this are refused, like manifests: berth reads
/// the config whole.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// The bytes one pull has received, against
/// [`ClientOptions::max_image_bytes`](super::ClientOptions::max_image_bytes).
#[derive(Debug)]
struct Budget {
    reference: String,
    limit: u64,
    received: AtomicU64,
}

impl Budget {
    fn new(reference: &str, limit: u64) -> Self {
        Self {
            reference: reference.to_owned(),
            limit,
            received: AtomicU64::new(0),
        }
    }

    fn too_large(&self, detail: String) -> OciError {
        OciError::ImageTooLarge {
            reference: self.reference.clone(),
            limit: self.limit,
            detail,
        }
    }

    /// Counts `n` bytes received.
    fn add(&self, n: u64) -> Result<(), OciError> {
        let total = self
            .received
            .fetch_add(n, Ordering::Relaxed)
            .saturating_add(n);
        if total > self.limit {
            return Err(self.too_large(format!(
                "{total} bytes were received (failed attempts included)"
            )));
        }
        Ok(())
    }

    /// Refuses an image whose descriptors declare more than the limit.
    fn check_declared<'a>(
        &self,
        descriptors: impl IntoIterator<Item = &'a Descriptor>,
    ) -> Result<(), OciError> {
        let declared = descriptors
            .into_iter()
            .fold(self.received.load(Ordering::Relaxed), |sum, d| {
                sum.saturating_add(d.size)
            });
        if declared > self.limit {
            return Err(self.too_large(format!(
                "its manifests, config and layers declare {declared} bytes"
            )));
        }
        Ok(())
    }
}

/// The outcome of [`Puller::pull`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Pulled {
    /// The reference as given.
    pub reference: String,
    /// The manifest digest the reference resolved to (for an index, the
    /// index's digest): what a deploy pins.
    pub digest: String,
    /// `registry/repository@digest`: the reference, pinned.
    pub pinned: String,
    /// What the artifact is.
    pub kind: ArtifactKind,
    /// For a Wasm component, the path of its verified blob in the store. (For a
    /// container image, its config and every layer are in the store too.)
    pub wasm: Option<PathBuf>,
    /// Bytes transferred from the registry (manifests and blobs); 0 when
    /// everything was already in the store.
    pub pulled_bytes: u64,
}

/// Pulls artifacts into a [`BlobStore`].
#[derive(Debug, Clone)]
pub struct Puller {
    client: RegistryClient,
    store: BlobStore,
    progress: bool,
}

impl Puller {
    /// A puller fetching with `client` into `store`. A progress bar is drawn
    /// on stderr while a blob downloads if stderr is a terminal.
    pub fn new(client: RegistryClient, store: BlobStore) -> Self {
        Self {
            client,
            store,
            progress: std::io::stderr().is_terminal(),
        }
    }

    /// Whether to draw download progress on stderr (if it is a terminal).
    #[must_use]
    pub fn with_progress(mut self, show: bool) -> Self {
        self.progress = show && std::io::stderr().is_terminal();
        self
    }

    /// The store blobs go to.
    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// The registry client.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// Pulls `reference` (`host/repo:tag` or `host/repo@sha256:…`).
    ///
    /// # Errors
    /// - [`OciError::InvalidReference`] for a malformed reference;
    /// - [`OciError::Unreachable`], [`OciError::AuthenticationFailed`],
    ///   [`OciError::NotFound`], [`OciError::Registry`] from the registry;
    /// - [`OciError::DigestMismatch`], [`OciError::SizeMismatch`] or
    ///   [`OciError::TooLarge`] when content does not match its descriptor
    ///   (nothing is stored then);
    /// - [`OciError::ImageTooLarge`] and [`OciError::TooSlow`] when the pull
    ///   goes over the client's limits;
    /// - the errors of [`super::classify()`] for artifacts that are neither a
    ///   Wasm component nor a container image;
    /// - [`OciError::CoreModule`] / [`OciError::NotAComponent`] when the Wasm
    ///   layer is not a component;
    /// - [`OciError::Io`] when the store cannot be written.
    pub async fn pull(&self, reference: &str) -> Result<Pulled, OciError> {
        let parsed = parse_reference(reference)?;
        let session = self.client.session(&parsed).await?;
        let digest = match parsed.digest() {
            Some(d) => Digest::parse(d)?,
            None => self.resolve(&session, &parsed, reference).await?,
        };
        tracing::debug!(%reference, %digest, "resolved");
        let pinned = parsed.clone_with_digest(digest.to_string());
        let mut pulled_bytes = 0;
        let budget = Budget::new(reference, self.client.options().max_image_bytes);

        let top = self
            .manifest(
                &session,
                &pinned,
                &digest,
                MAX_MANIFEST_BYTES,
                &mut pulled_bytes,
                &budget,
            )
            .await?;
        let kind = match classify::classify(&top, &digest.to_string())? {
            Classification::Artifact(kind) => kind,
            Classification::Index { manifest, platform } => {
                let child_ref = parsed.clone_with_digest(manifest.digest.to_string());
                let limit = manifest.size.min(MAX_MANIFEST_BYTES);
                let child = self
                    .manifest(
                        &session,
                        &child_ref,
                        &manifest.digest,
                        limit,
                        &mut pulled_bytes,
                        &budget,
                    )
                    .await?;
                match classify::classify(&child, &manifest.digest.to_string())? {
                    Classification::Artifact(ArtifactKind::Container(mut image)) => {
                        image.platform = Some(platform);
                        ArtifactKind::Container(image)
                    }
                    Classification::Artifact(kind) => kind,
                    Classification::Index { .. } => {
                        return Err(OciError::InvalidManifest {
                            what: manifest.digest.to_string(),
                            detail: "an index nested in an index is not supported".to_owned(),
                        });
                    }
                }
            }
        };

        let blobs: Vec<&Descriptor> = match &kind {
            ArtifactKind::Wasm(artifact) => vec![&artifact.layer],
            ArtifactKind::Container(image) => {
                if image.config.size > MAX_CONFIG_BYTES {
                    return Err(OciError::TooLarge {
                        digest: image.config.digest.to_string(),
                        limit: MAX_CONFIG_BYTES,
                    });
                }
                std::iter::once(&image.config)
                    .chain(&image.layers)
                    .collect()
            }
        };
        budget.check_declared(blobs.iter().copied())?;
        for blob in blobs {
            match self.store.stored_len(&blob.digest) {
                Some(len) if len == blob.size => {}
                Some(len) => {
                    return Err(OciError::SizeMismatch {
                        digest: blob.digest.to_string(),
                        what: "the stored copy",
                        expected: blob.size,
                        actual: len,
                    });
                }
                None => pulled_bytes += self.blob(&session, &pinned, blob, &budget).await?,
            }
        }
        let wasm = match &kind {
            ArtifactKind::Wasm(artifact) => {
                let layer = &artifact.layer;
                let path = self.store.path(&layer.digest);
                let header = read_header(&path)?;
                component::ensure_component(
                    &header,
                    &format!("{reference} (layer {})", layer.digest),
                )?;
                Some(path)
            }
            ArtifactKind::Container(_) => None,
        };
        tracing::info!(%reference, %digest, kind = %kind, pulled_bytes, "pulled");
        Ok(Pulled {
            reference: reference.to_owned(),
            digest: digest.to_string(),
            pinned: format!("{}/{}@{digest}", parsed.registry(), parsed.repository()),
            kind,
            wasm,
            pulled_bytes,
        })
    }

    /// Tag → manifest digest, with a `HEAD` (or a `GET` if the registry sends
    /// no digest header).
    async fn resolve(
        &self,
        session: &Session,
        reference: &Reference,
        what: &str,
    ) -> Result<Digest, OciError> {
        let digest = self
            .client
            .retry(&session.registry, what, || async {
                session
                    .client
                    .fetch_manifest_digest(reference, &session.auth)
                    .await
                    .map_err(|e| session.map_error(e, what))
            })
            .await?;
        Digest::parse(&digest).map_err(|e| OciError::Registry {
            registry: session.registry.clone(),
            detail: format!("{what} resolved to an unusable digest: {e}"),
        })
    }

    /// The manifest `digest` from the store, or fetched, verified and stored.
    async fn manifest(
        &self,
        session: &Session,
        reference: &Reference,
        digest: &Digest,
        limit: u64,
        pulled_bytes: &mut u64,
        budget: &Budget,
    ) -> Result<OciManifest, OciError> {
        let what = digest.to_string();
        if self.store.contains(digest) {
            match self.store.read_limited(digest, limit) {
                Ok(bytes) => return parse_manifest(&bytes, &what),
                Err(OciError::DigestMismatch { .. }) => {
                    tracing::warn!(%digest, "stored manifest is corrupt; fetching it again");
                    self.store.remove(digest)?;
                }
                Err(e) => return Err(e),
            }
        }
        let what_ref = reference.to_string();
        let (bytes, _) = self
            .client
            .retry(&session.registry, &what_ref, || async {
                session
                    .client
                    .pull_manifest_raw(reference, &session.auth, media_type::MANIFESTS)
                    .await
                    .map_err(|e| session.map_error(e, &what_ref))
            })
            .await?;
        budget.add(bytes.len() as u64)?;
        if bytes.len() as u64 > limit {
            return Err(OciError::TooLarge {
                digest: what,
                limit,
            });
        }
        // oci_client checked the body against the digest in the URL; the
        // store checks again before anything becomes visible.
        self.store.put_bytes(digest, &bytes)?;
        *pulled_bytes += bytes.len() as u64;
        parse_manifest(&bytes, &what)
    }

    /// Streams a blob into the store, exactly its descriptor's size, counting
    /// what arrives in `budget`; returns its size.
    async fn blob(
        &self,
        session: &Session,
        reference: &Reference,
        descriptor: &Descriptor,
        budget: &Budget,
    ) -> Result<u64, OciError> {
        let digest = descriptor.digest.to_string();
        let bar = self.progress_bar(descriptor);
        let options = self.client.options();
        let pace = Pace {
            min_rate: options.min_transfer_rate,
            window: options.transfer_rate_window,
            registry: session.registry.clone(),
            what: digest.clone(),
        };
        let result = self
            .client
            .retry_transfer(&session.registry, &digest, || async {
                bar.set_position(0);
                // A plain digest, not the descriptor: never follow the
                // descriptor's `urls` to hosts other than the registry.
                let limit = options.request_timeout;
                let response = tokio::time::timeout(
                    limit,
                    session.client.pull_blob_stream(reference, digest.as_str()),
                )
                .await
                .map_err(|_| {
                    Failure::from(OciError::Unreachable {
                        registry: session.registry.clone(),
                        detail: format!("no answer for {digest} within {limit:?}"),
                    })
                })?
                .map_err(|e| session.map_error(e, &digest))?;
                if let Some(announced) = response.content_length
                    && announced != descriptor.size
                {
                    return Err(Failure::from(OciError::SizeMismatch {
                        digest: digest.clone(),
                        what: "the Content-Length the registry announced",
                        expected: descriptor.size,
                        actual: announced,
                    }));
                }
                let body = response
                    .stream
                    .map_err(|e| map_stream_error(e, &session.registry).error);
                let body = checked_body(body, descriptor, budget, &pace);
                self.store
                    .put_sized(&descriptor.digest, body, descriptor.size, |n| {
                        bar.set_position(n)
                    })
                    .await
                    .map_err(Failure::from)
            })
            .await;
        match &result {
            Ok(_) => bar.finish_and_clear(),
            Err(_) => bar.abandon(),
        }
        result
    }

    fn progress_bar(&self, descriptor: &Descriptor) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar =
            ProgressBar::with_draw_target(Some(descriptor.size), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(format!("pulling {}", descriptor.digest.short()));
        bar
    }
}

/// The minimum rate of a blob transfer, and what to name when it is missed.
#[derive(Debug)]
struct Pace {
    min_rate: u64,
    window: Duration,
    registry: String,
    what: String,
}

/// Where [`checked_body`] is.
struct Checked<'a, S> {
    body: S,
    received: u64,
    in_window: u64,
    window_end: tokio::time::Instant,
    done: bool,
    descriptor: &'a Descriptor,
    budget: &'a Budget,
    pace: &'a Pace,
}

/// `body`, counted into `budget` as it arrives, cut off when it moves fewer
/// than `pace.min_rate` bytes a second over a window, and with a digest
/// mismatch of a body of the wrong length reported as the size mismatch it
/// is.
fn checked_body<'a, S>(
    body: S,
    descriptor: &'a Descriptor,
    budget: &'a Budget,
    pace: &'a Pace,
) -> impl Stream<Item = Result<Bytes, OciError>> + 'a
where
    S: Stream<Item = Result<Bytes, OciError>> + Unpin + 'a,
{
    let state = Checked {
        body,
        received: 0,
        in_window: 0,
        window_end: tokio::time::Instant::now() + pace.window,
        done: false,
        descriptor,
        budget,
        pace,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let item = loop {
            tokio::select! {
                item = st.body.next() => break item,
                () = tokio::time::sleep_until(st.window_end) => {
                    let needed = u128::from(st.pace.min_rate) * st.pace.window.as_millis() / 1000;
                    if u128::from(st.in_window) < needed {
                        st.done = true;
                        let slow = OciError::TooSlow {
                            registry: st.pace.registry.clone(),
                            what: st.pace.what.clone(),
                            received: st.in_window,
                            window: st.pace.window,
                            min_rate: st.pace.min_rate,
                        };
                        return Some((Err(slow), st));
                    }
                    st.in_window = 0;
                    st.window_end += st.pace.window;
                }
            }
        };
        let result = match item? {
            Ok(chunk) => {
                let n = chunk.len() as u64;
                st.received += n;
                st.in_window += n;
                st.budget.add(n).map(|()| chunk)
            }
            Err(OciError::DigestMismatch { .. }) if st.received != st.descriptor.size => {
                Err(OciError::SizeMismatch {
                    digest: st.descriptor.digest.to_string(),
                    what: "the body the registry sent",
                    expected: st.descriptor.size,
                    actual: st.received,
                })
            }
            Err(e) => Err(e),
        };
        st.done = result.is_err();
        Some((result, st))
    })
}

/// The first [`HEADER_LEN`] bytes of a file (fewer if it is shorter).
fn read_header(path: &std::path::Path) -> Result<Vec<u8>, OciError> {
    let context = || format!("reading {}", path.display());
    let file = std::fs::File::open(path).map_err(|e| OciError::io(context(), e))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    file.take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .map_err(|e| OciError::io(context(), e))?;
    Ok(header)
}
