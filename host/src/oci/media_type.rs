//! Media types berth reads and writes.
//!
//! Sources: the CNCF TAG-Runtime Wasm OCI artifact layout, the OCI image spec
//! and Docker's image manifest v2 schema 2; the other Wasm layer types are those
//! written by runwasi, Spin and older wasmCloud releases.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest media types berth asks a registry for.
pub const MANIFESTS: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Config of a CNCF Wasm artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The one layer of a CNCF Wasm artifact: the component itself.
pub const WASM_LAYER: &str = "application/wasm";
/// runwasi's component layer.
pub const BYTECODEALLIANCE_COMPONENT_LAYER: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Spin's (and older warg's) Wasm layer.
pub const WASM_CONTENT_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Legacy wasmCloud's Wasm layer.
pub const MODULE_WASM_CONTENT_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

/// Every layer media type that holds a Wasm binary.
pub const WASM_LAYERS: &[&str] = &[
    WASM_LAYER,
    BYTECODEALLIANCE_COMPONENT_LAYER,
    WASM_CONTENT_LAYER,
    MODULE_WASM_CONTENT_LAYER,
];

/// OCI image config.
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Container image layer media types (tarballs, possibly compressed).
pub const CONTAINER_LAYERS: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];
