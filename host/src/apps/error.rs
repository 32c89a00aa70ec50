//! Why a deploy failed, typed: [`DeployError`] names the app and carries a
//! [`DeployFailure`], one variant per kind of cause a caller may treat
//! differently (the admin API maps each to its status and key in one
//! exhaustive `match`, `api::error`). Messages are the ones a user reads:
//! `cannot deploy app `NAME`: …` followed by the cause with its own causes.

use std::sync::Arc;

use crate::oci::OciError;
use crate::secrets::SecretError;
use crate::state::StateError;
use crate::wasm::LoadError;

/// A deploy of app `app` that failed; nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("cannot deploy app `{app}`: {failure}")]
pub struct DeployError {
    /// The app.
    pub app: String,
    /// Why (boxed: a deploy's error stays small on the success path).
    pub failure: Box<DeployFailure>,
}

impl DeployError {
    /// App `app` could not be deployed because of `failure`.
    pub fn new(app: &str, failure: impl Into<DeployFailure>) -> Self {
        Self {
            app: app.to_string(),
            failure: Box::new(failure.into()),
        }
    }
}

/// Why a deploy failed. Every variant is a distinct answer for a caller;
/// its message includes the causes (it is shown whole, never walked as a
/// chain).
#[derive(Debug, thiserror::Error)]
pub enum DeployFailure {
    /// A canary share above 100 %.
    #[error("a traffic share is at most 100 percent, not {0}")]
    Traffic(u32),
    /// The app's name is not a DNS label.
    #[error("app name: {0}")]
    Name(String),
    /// A setting that validation refuses.
    #[error("key `{key}`: {reason}")]
    Invalid {
        /// The setting (`limits.memory`, `routes`, …).
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// A secret the settings name (`secrets.VAR`, when the variable is
    /// known) that is missing or cannot be read.
    #[error("{}{error}", secret_key(.var.as_deref()))]
    Secret {
        /// The environment variable it was to fill.
        var: Option<String>,
        /// What the secret store said.
        error: SecretError,
    },
    /// A path route another app serves.
    #[error(transparent)]
    Routes(#[from] RouteConflict),
    /// The image could not be resolved or pulled.
    #[error("cannot pull image `{reference}`: {error}")]
    Pull {
        /// The image as given.
        reference: String,
        /// What the registry (or the blob store) said.
        error: OciError,
    },
    /// The image is an artifact berth cannot run.
    #[error("image `{reference}` is a {kind}, which berth cannot run")]
    NotRunnable {
        /// The image as given.
        reference: String,
        /// What it is.
        kind: String,
    },
    /// The image is a container image and this host runs none.
    #[error("image `{reference}` is a container image, but containers are unavailable: {why}")]
    NoContainers {
        /// The image as given.
        reference: String,
        /// Why (no runc, a shim that could not start).
        why: String,
    },
    /// The component cannot be read, compiled, linked or served.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The container image's content cannot be used (its config, a layer,
    /// an unpack over the limits).
    #[error("{0:#}")]
    Image(anyhow::Error),
    /// The revision's initial instances did not start.
    #[error("{0:#}")]
    Start(anyhow::Error),
    /// This host failed, not the app: a log or blob that cannot be opened,
    /// a build task that died.
    #[error("{0:#}")]
    Host(anyhow::Error),
    /// The state file cannot be written (one error can fail a whole batch,
    /// hence shared).
    #[error("{0}")]
    State(Arc<StateError>),
}

/// `key `secrets.VAR`: ` before a secret's error, when the variable is known.
fn secret_key(var: Option<&str>) -> String {
    var.map(|v| format!("key `secrets.{v}`: "))
        .unwrap_or_default()
}

impl From<StateError> for DeployFailure {
    fn from(e: StateError) -> Self {
        Self::State(Arc::new(e))
    }
}

impl From<SecretError> for DeployFailure {
    fn from(error: SecretError) -> Self {
        Self::Secret { var: None, error }
    }
}

/// A deploy asked for a path route that another app serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route `{route}` is taken by app `{owner}`")]
pub struct RouteConflict {
    /// The route.
    pub route: String,
    /// The app serving it.
    pub owner: String,
}
