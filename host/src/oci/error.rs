//! [`OciError`], the error type at the boundary of the `oci` module.

use std::path::PathBuf;

/// What can go wrong resolving, pulling, verifying, storing or pushing an artifact.
///
/// Messages name the offending value (the reference, the registry, the digest,
/// the media types found) so that they can be shown to a user as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// The string is not an OCI reference (`registry/repository[:tag][@digest]`).
    #[error("invalid OCI reference {reference:?}: {reason}")]
    InvalidReference {
        /// The string as given.
        reference: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The digest as given.
        digest: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The registry refused the credentials (or their absence): HTTP 401, a
    /// failed token exchange, or an access-denied error.
    #[error("authentication failed for {registry}: {detail}")]
    AuthenticationFailed {
        /// The registry host (`host[:port]`).
        registry: String,
        /// What the registry said.
        detail: String,
    },

    /// The registry could not be reached (connection refused, DNS, TLS or a
    /// timeout) within the retry budget.
    #[error("registry {registry} is unreachable: {detail}")]
    Unreachable {
        /// The registry host (`host[:port]`).
        registry: String,
        /// The underlying network error.
        detail: String,
    },

    /// The registry does not have the manifest or blob.
    #[error("{what} not found in registry {registry}")]
    NotFound {
        /// The registry host (`host[:port]`).
        registry: String,
        /// The reference or blob that was asked for.
        what: String,
    },

    /// Any other error response from the registry.
    #[error("registry {registry} returned an error: {detail}")]
    Registry {
        /// The registry host (`host[:port]`).
        registry: String,
        /// The status and message.
        detail: String,
    },

    /// Content did not hash to the digest it was fetched or stored under.
    #[error("digest mismatch: expected {expected}, but the content hashes to {actual}")]
    DigestMismatch {
        /// The digest the content was supposed to have.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },

    /// A blob was larger than its descriptor says (or than the manifest limit).
    #[error("{digest} is larger than the {limit} bytes allowed for it")]
    TooLarge {
        /// The digest being fetched.
        digest: String,
        /// The size it was allowed to have.
        limit: u64,
    },

    /// A blob's size is not the one its descriptor gives: the registry sent
    /// fewer bytes, announced another `Content-Length`, or the stored copy
    /// differs. Nothing is stored then.
    #[error("{what} of {digest} is {actual} bytes, but its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// What was measured: "the body the registry sent", "the
        /// Content-Length the registry announced", "the stored copy".
        what: &'static str,
        /// The size the descriptor gives.
        expected: u64,
        /// The size measured.
        actual: u64,
    },

    /// An image is larger than [`ClientOptions::max_image_bytes`], as its
    /// manifest declares it or as the bytes received (retries included) show.
    ///
    /// [`ClientOptions::max_image_bytes`]: super::ClientOptions::max_image_bytes
    #[error(
        "image {reference} is larger than the limit of {limit} bytes ({}, max_image_bytes): {detail}",
        bytesize::ByteSize::b(*limit).display().iec()
    )]
    ImageTooLarge {
        /// The reference being pulled.
        reference: String,
        /// The limit.
        limit: u64,
        /// What showed it.
        detail: String,
    },

    /// A transfer went slower than [`ClientOptions::min_transfer_rate`] over
    /// a whole [`ClientOptions::transfer_rate_window`].
    ///
    /// [`ClientOptions::min_transfer_rate`]: super::ClientOptions::min_transfer_rate
    /// [`ClientOptions::transfer_rate_window`]: super::ClientOptions::transfer_rate_window
    #[error(
        "registry {registry} sent {received} bytes of {what} in {window:?}, slower than the \
         minimum of {min_rate} bytes/s (min_transfer_rate)"
    )]
    TooSlow {
        /// The registry host (`host[:port]`).
        registry: String,
        /// The blob being fetched.
        what: String,
        /// Bytes received in the window.
        received: u64,
        /// The window.
        window: std::time::Duration,
        /// The minimum rate, bytes per second.
        min_rate: u64,
    },

    /// The manifest is neither a Wasm component artifact nor a container image.
    #[error(
        "unsupported artifact: {reason} (manifest {manifest_media_type}, config {config_media_type}, \
         layers [{}]); berth runs a Wasm component stored as the only layer of an artifact \
         (application/wasm, as the CNCF Wasm OCI artifact layout specifies) and recognises \
         container images",
        layer_media_types.join(", ")
    )]
    UnsupportedArtifact {
        /// What is wrong with it.
        reason: String,
        /// `mediaType` of the manifest (`<none>` when absent).
        manifest_media_type: String,
        /// Media type of the config descriptor.
        config_media_type: String,
        /// Media types of the layers, in manifest order.
        layer_media_types: Vec<String>,
    },

    /// More than one layer holds Wasm: berth would not know which to run.
    #[error(
        "the artifact has {} Wasm layers ({}); a Wasm component artifact must have exactly one",
        media_types.len(),
        media_types.join(", ")
    )]
    MultipleWasmLayers {
        /// Media types of the Wasm layers.
        media_types: Vec<String>,
    },

    /// The Wasm binary is a core module; berth runs components only.
    #[error("{what} is a core Wasm module, not a component")]
    CoreModule {
        /// What was checked (a file, a blob digest).
        what: String,
    },

    /// The bytes are not a Wasm component binary at all.
    #[error("{what} is not a Wasm component: {detail}")]
    NotAComponent {
        /// What was checked (a file, a blob digest).
        what: String,
        /// Why.
        detail: String,
    },

    /// A manifest could not be parsed or is inconsistent.
    #[error("invalid manifest {what}: {detail}")]
    InvalidManifest {
        /// The manifest digest or reference.
        what: String,
        /// What is wrong with it.
        detail: String,
    },

    /// An image index has no entry berth can use.
    #[error(
        "image index {digest} has no manifest for wasm or linux/amd64 (platforms: [{}])",
        available.join(", ")
    )]
    NoMatchingPlatform {
        /// The index digest.
        digest: String,
        /// `os/architecture` of each entry.
        available: Vec<String>,
    },

    /// The docker `config.json` exists but cannot be used.
    #[error("cannot use docker config {}: {detail}", path.display())]
    DockerConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never the secret itself).
        detail: String,
    },

    /// A file system operation on the blob store failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl OciError {
    /// An [`OciError::Io`] with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
