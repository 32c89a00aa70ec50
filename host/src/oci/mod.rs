//! OCI registries: references, auth, a verified content-addressed blob store,
//! artifact classification and pushing Wasm component artifacts.
//!
//! berth pulls exactly what a user pushed with `berth push`, oras, wkg or
//! cargo-component, verifies it byte for byte against its digest, and keeps it
//! in a blob store shared by every app in the data dir. Tags are resolved to a
//! manifest digest first, so a deploy is pinned and a second deploy of the same
//! digest transfers nothing.
//!
//! # Layout
//! - [`digest`]: [`Digest`], a validated `sha256:<64 lowercase hex>` string; the
//!   only thing blob paths are ever built from.
//! - [`store`]: [`BlobStore`], the content-addressed store at
//!   `<data_dir>/blobs/sha256/<hex>`, holding blobs and manifests alike.
//! - [`classify`](mod@classify): what a manifest holds ([`ArtifactKind`]): a Wasm component
//!   (CNCF layout and the other single-Wasm-layer layouts seen in the wild) or a
//!   container image; pure functions, no I/O.
//! - [`component`]: checks that bytes are a Wasm *component* (not a core
//!   module) and reads its top-level import and export names.
//! - [`auth`]: credentials: anonymous, explicit basic, or the user's docker
//!   `config.json`.
//! - [`client`]: [`RegistryClient`], an `oci_client` client per registry with
//!   plain HTTP for loopback and listed registries, timeouts, bounded retries
//!   and errors mapped to [`OciError`].
//! - [`pull`]: [`Puller`]: resolve, fetch, verify, store; returns [`Pulled`].
//! - [`push`]: [`push_component`]: push a component as a CNCF Wasm artifact.
//! - [`media_type`]: the media type strings berth reads and writes.
//! - [`OciError`]: the error type of everything above.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), berth::oci::OciError> {
//! use berth::oci::{Auth, BlobStore, ClientOptions, Puller, RegistryClient};
//!
//! let client = RegistryClient::new(Auth::from_docker_config()?, ClientOptions::default());
//! let puller = Puller::new(client.clone(), BlobStore::open("/var/lib/berth")?);
//! let pulled = puller.pull("127.0.0.1:5000/hello:v1").await?;
//! println!("{} is a {}, pinned as {}", pulled.reference, pulled.kind, pulled.pinned);
//!
//! let wasm = std::fs::read("hello.wasm").expect("read");
//! let digest = berth::oci::push_component(&client, "127.0.0.1:5000/hello:v2", &wasm).await?;
//! # let _ = digest; Ok(()) }
//! ```

pub mod auth;
pub mod classify;
pub mod client;
pub mod component;
pub mod digest;
mod error;
pub mod media_type;
pub mod pull;
pub mod push;
pub mod store;

pub use auth::{Auth, Credentials, DockerConfig};
pub use classify::{
    ArtifactKind, Classification, ContainerImage, Descriptor, WasmArtifact, classify,
};
pub use client::{ClientOptions, RegistryClient, parse_reference, uses_plain_http};
pub use digest::Digest;
pub use error::OciError;
pub use oci_client::Reference;
pub use pull::{Pulled, Puller};
pub use push::{IMAGE_COMPONENT_PATH, push_component, push_component_image};
pub use store::{BlobStore, StoreCollected};
