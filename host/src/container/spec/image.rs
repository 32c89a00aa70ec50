//! [`ImageConfig`]: the parts of an image's configuration that decide how
//! its process runs, read and checked at deploy.

use oci_spec::image::ImageConfiguration;
use serde::Deserialize;

use super::SpecError;

/// The parts of an OCI image config that decide how its process runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, `NAME=value` strings in image order.
    pub env: Vec<String>,
    /// `WorkingDir` (`None` when absent or empty).
    pub working_dir: Option<String>,
    /// `User` (`None` when absent or empty).
    pub user: Option<String>,
}

impl ImageConfig {
    /// Parses an image config blob (`application/vnd.oci.image.config.v1+json`
    /// or Docker's `application/vnd.docker.container.image.v1+json`). Only the
    /// `config` object is read, as an [`oci_spec::image::Config`]. Refused
    /// here, at deploy, rather than at each instance start: an image with
    /// nothing to run (no `Entrypoint` or `Cmd`, or no `config` at all), and
    /// one whose `WorkingDir` [`check_working_dir`] refuses.
    ///
    /// The whole blob is not read as an [`ImageConfiguration`]: that requires
    /// `architecture`, `os` and `rootfs`, which say nothing about how the
    /// process runs and which berth has never asked of an image.
    ///
    /// # Errors
    /// [`SpecError::ImageConfig`] when the blob is not a JSON object, or its
    /// `config` is not a valid image config object; [`SpecError::NoCommand`];
    /// [`SpecError::WorkingDir`] for a refused `WorkingDir`.
    pub fn from_json(blob: &[u8]) -> Result<Self, SpecError> {
        let mut image: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(blob).map_err(SpecError::ImageConfig)?;
        let config = match image.remove("config") {
            Some(config) => Option::<oci_spec::image::Config>::deserialize(config)
                .map_err(SpecError::ImageConfig)?,
            None => None,
        };
        let image = Self::from_config(config.as_ref());
        if image.entrypoint.is_empty() && image.cmd.is_empty() {
            return Err(SpecError::NoCommand);
        }
        if let Some(dir) = &image.working_dir {
            check_working_dir(dir)?;
        }
        Ok(image)
    }

    /// The parts of `config` that berth uses; empty `WorkingDir` and `User`
    /// count as absent.
    fn from_config(config: Option<&oci_spec::image::Config>) -> Self {
        let Some(c) = config else {
            return Self::default();
        };
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Self {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: non_empty(c.working_dir()),
            user: non_empty(c.user()),
        }
    }
}

impl From<&ImageConfiguration> for ImageConfig {
    fn from(image: &ImageConfiguration) -> Self {
        Self::from_config(image.config().as_ref())
    }
}

/// Checks an image's `WorkingDir`: an absolute path with no empty, `.` or
/// `..` component (one trailing `/` is allowed: Docker keeps `WORKDIR /app/`
/// as written), and not `/proc` or below it.
///
/// CVE-2024-21626: runc before 1.1.12 leaked a host directory's fd into
/// `runc init`, and an image whose `WorkingDir` was `/proc/self/fd/7` started
/// its process with a working directory on the host. The runc berth accepts
/// is fixed ([`crate::container::runc::RuncVersion`]); this refusal stands
/// regardless, as nothing honest needs such a `WorkingDir`.
///
/// # Errors
/// [`SpecError::WorkingDir`] naming the reason.
pub fn check_working_dir(dir: &str) -> Result<(), SpecError> {
    let refuse = |reason| {
        Err(SpecError::WorkingDir {
            dir: dir.to_owned(),
            reason,
        })
    };
    let Some(rest) = dir.strip_prefix('/') else {
        return refuse("it must be an absolute path");
    };
    if dir.contains('\0') {
        return refuse("it contains a NUL byte");
    }
    // One trailing `/` (not the only character after the root: `//`).
    let rest = match rest.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => rest,
    };
    if !rest.is_empty()
        && rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return refuse("it must be a clean path (no empty, `.` or `..` component)");
    }
    if rest == "proc" || rest.starts_with("proc/") {
        return refuse(
            "it is under /proc, where /proc/self/fd/N can name a host directory (CVE-2024-21626)",
        );
    }
    Ok(())
}
