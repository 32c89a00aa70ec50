//! Container images on disk: from pulled layer blobs to a root filesystem that
//! runc can use (as the shared lower layer of each instance's overlay).
//!
//! # Layout
//! - [`rootfs`]: applies OCI and Docker image layers (plain, gzip or zstd tar
//!   changesets) with whiteouts and opaque directories, never writing outside
//!   the rootfs; [`rootfs::unpack_image`] unpacks a whole image once, atomically,
//!   per image digest.

pub mod backend;
pub mod rootfs;

pub mod instance;
pub mod netns;
pub mod overlay;
pub mod runc;
pub mod spec;

pub use instance::{ColdStartSplit, ContainerError, Instance, Shim};
pub use spec::{ContainerLimits, ImageConfig, InstanceSpec, Network, Probe};
