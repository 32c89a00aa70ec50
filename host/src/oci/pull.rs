//! [`Puller`]: resolve a reference, fetch what is missing, verify, store.
//!
//! 1. A tag is resolved to its manifest digest (`HEAD`); a digest reference is
//!    used as is. Everything after this works on the pinned digest.
//! 2. The manifest is taken from the [`BlobStore`] if present, otherwise
//!    fetched, checked against the digest and stored. An index is resolved to
//!    the entry for `wasm` or `linux/amd64` the same way.
//! 3. The manifest is classified ([`super::classify()`]).
//! 4. For a Wasm component, the layer is fetched unless already stored,
//!    streamed into the store with its digest and size verified, and its
//!    header checked: a core module is refused. For a container image only
//!    the config is fetched; running images (and fetching their layers) is
//!    not part of this module yet.
//!
//! A second pull of a digest whose blobs are all stored transfers nothing (a
//! tag costs one `HEAD`; a digest reference makes no request at all).

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;

use futures::TryStreamExt as _;
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
pub(crate) const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

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
    /// - [`OciError::DigestMismatch`] or [`OciError::TooLarge`] when content
    ///   does not match its descriptor (nothing is stored then);
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

        let top = self
            .manifest(
                &session,
                &pinned,
                &digest,
                MAX_MANIFEST_BYTES,
                &mut pulled_bytes,
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

        let wasm = match &kind {
            ArtifactKind::Wasm(artifact) => {
                let layer = &artifact.layer;
                if !self.store.contains(&layer.digest) {
                    pulled_bytes += self.blob(&session, &pinned, layer).await?;
                }
                let path = self.store.path(&layer.digest);
                let header = read_header(&path)?;
                component::ensure_component(
                    &header,
                    &format!("{reference} (layer {})", layer.digest),
                )?;
                Some(path)
            }
            ArtifactKind::Container(image) => {
                for blob in std::iter::once(&image.config).chain(&image.layers) {
                    if !self.store.contains(&blob.digest) {
                        pulled_bytes += self.blob(&session, &pinned, blob).await?;
                    }
                }
                None
            }
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
    ) -> Result<OciManifest, OciError> {
        let what = digest.to_string();
        if self.store.contains(digest) {
            match self.store.read(digest) {
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

    /// Streams a blob into the store; returns its size.
    async fn blob(
        &self,
        session: &Session,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<u64, OciError> {
        let digest = descriptor.digest.to_string();
        let bar = self.progress_bar(descriptor);
        let result = self
            .client
            .retry_transfer(&session.registry, &digest, || async {
                bar.set_position(0);
                // A plain digest, not the descriptor: never follow the
                // descriptor's `urls` to hosts other than the registry.
                let response = session
                    .client
                    .pull_blob_stream(reference, digest.as_str())
                    .await
                    .map_err(|e| session.map_error(e, &digest))?;
                let stream = response
                    .stream
                    .map_err(|e| map_stream_error(e, &session.registry).error);
                self.store
                    .put(&descriptor.digest, stream, Some(descriptor.size), |n| {
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
