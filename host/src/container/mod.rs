//! Containers: OCI images unpacked into a root filesystem, and instances of
//! them run with runc behind the same [`Backend`](crate::backend::Backend)
//! contract as Wasm components.
//!
//! # Layout
//! - [`backend`]: [`backend::ContainerBackend`], the `Backend` of a container
//!   revision (one [`Shim`] instance per backend instance, reached over a
//!   keep-alive HTTP connection pool).
//! - [`shim`]: [`Shim`], one per host: starts instances and reaps what a
//!   crashed run left.
//! - `start`: one cold start, from an [`InstanceSpec`] to a ready
//!   [`Container`], undone on any failure.
//! - [`running`]: [`Container`], a running instance (connect, stop, exit
//!   status) and its [`StartTimings`].
//! - `probe`: readiness (TCP connect or HTTP GET) until ready, exited or
//!   timed out.
//! - `process`: the container's init process: exit through a pidfd, reaping
//!   as a child subreaper.
//! - [`output`]: the container's stdout and stderr, pipes read into the app
//!   log within a budget per stream (never files on the host).
//! - `state_dir`: where an instance's files live under the shim's state
//!   directory, and their teardown.
//! - [`error`]: why a start or a stop failed ([`ContainerError`]).
//! - [`spec`]: [`InstanceSpec`] and [`ImageConfig`] into the OCI runtime spec
//!   (`config.json`), hardened (capabilities, seccomp, namespaces, masked
//!   paths, limits).
//! - [`seccomp`]: berth's default seccomp profile, stored as data
//!   (`seccomp/default.json`, modelled on moby's; `seccomp/README.md`).
//! - [`accounts`]: the image's users and groups (`/etc/passwd`, `/etc/group`
//!   read inside its rootfs) and its `User` resolved against them.
//! - [`runc`]: the `runc` command line, typed; [`runc::find_runc`];
//!   [`runc::RuncVersion`], which runc berth accepts.
//! - [`netns`]: the instance's network namespace, made and pinned by berth
//!   before `runc run`, and reaching into it (`network = "none"`).
//! - [`overlay`]: the per-instance overlay mount over the shared image
//!   rootfs, its writable layer on a tmpfs sized to the memory limit.
//! - `sys`: the module's only `unsafe` (tokio's `AsyncFd` registration, the
//!   interface-flags ioctls), each behind a safe function; all other system
//!   calls go through rustix.
//! - [`rootfs`]: applies OCI and Docker image layers (plain, gzip or zstd tar
//!   changesets) with whiteouts and opaque directories, never writing outside
//!   the rootfs; [`rootfs::unpack_image`] unpacks a whole image once,
//!   atomically, per image digest.
//!
//! Dependencies point one way, down this list: `shim` → `start` →
//! `running` → `probe`, `state_dir` → `process`, `netns` → `sys`; all of
//! them may use `error`, `runc`, `overlay`, `output`, `accounts` and `spec`
//! (`error` and `accounts` use `spec`; `spec` uses only `seccomp`, which
//! uses none, and, outside the module, the settings' types and the rules
//! deploy checks them by, `crate::config::spec`; `output` uses none).

pub mod accounts;
pub mod backend;
pub mod bridge;
pub mod error;
pub mod netns;
pub mod output;
pub mod overlay;
mod probe;
mod process;
pub mod rootfs;
pub mod runc;
pub mod running;
pub mod seccomp;
pub mod shim;
pub mod spec;
mod start;
mod state_dir;
mod sys;

#[cfg(test)]
mod tests;

pub use bridge::BridgeOptions;
pub use error::ContainerError;
pub use running::{Container, Endpoint, StartTimings};
pub use shim::Shim;
pub use spec::{ContainerLimits, ImageConfig, InstanceSpec, NetworkMode, Probe, SeccompMode};
pub use start::keep_runtime_specs;
