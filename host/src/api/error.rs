//! The one mapping from the domain errors the admin API meets ([`OpError`],
//! a failed deploy's [`DeployFailure`] among them) to its answer: a status,
//! the `{"error": …, "key": …}` body and the key it names. Every `match`
//! here is exhaustive, so a new kind of failure does not compile until it
//! has its status.

use http::{Response, StatusCode};

use crate::apps::{DeployError, DeployFailure, OpError};
use crate::http::Body;
use crate::oci::OciError;
use crate::secrets::SecretError;
use crate::state::StateError;

/// The status a failed deploy is answered with, and the key of the
/// request it blames (if one).
pub(super) fn deploy_status(failure: &DeployFailure) -> (StatusCode, Option<&str>) {
    match failure {
        DeployFailure::Traffic(_) => (StatusCode::BAD_REQUEST, Some("traffic")),
        DeployFailure::Name(_) => (StatusCode::BAD_REQUEST, Some("name")),
        DeployFailure::Invalid { key, .. } => (StatusCode::BAD_REQUEST, Some(key.as_str())),
        DeployFailure::Secret { error, .. } => secret_status(error),
        DeployFailure::Routes(_) => (StatusCode::CONFLICT, Some("routes")),
        DeployFailure::Pull { error, .. } => (pull_status(error), Some("image")),
        // A valid app that cannot run: not a component, not a wasi:http
        // proxy, imports berth does not provide, an image berth cannot
        // run or unpack, or an instance that fails to start.
        DeployFailure::NotRunnable { .. }
        | DeployFailure::NoContainers { .. }
        | DeployFailure::Load(_)
        | DeployFailure::Image(_)
        | DeployFailure::Start(_) => (StatusCode::UNPROCESSABLE_ENTITY, None),
        DeployFailure::Host(_) | DeployFailure::State(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        }
    }
}

/// A secret the app names: the app's fault unless the store itself fails.
fn secret_status(error: &SecretError) -> (StatusCode, Option<&'static str>) {
    match error {
        SecretError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        SecretError::BadName(_)
        | SecretError::BadValue { .. }
        | SecretError::Missing(_)
        | SecretError::Full
        | SecretError::Undecryptable(_) => (StatusCode::BAD_REQUEST, Some("secrets")),
    }
}

/// An image that cannot be pulled: a reference that is wrong (400), an
/// artifact berth cannot run (422), else the registry's failure (502).
fn pull_status(error: &OciError) -> StatusCode {
    match error {
        OciError::InvalidReference { .. } | OciError::InvalidDigest { .. } => {
            StatusCode::BAD_REQUEST
        }
        OciError::UnsupportedArtifact { .. }
        | OciError::MultipleWasmLayers { .. }
        | OciError::CoreModule { .. }
        | OciError::NotAComponent { .. }
        | OciError::NoMatchingPlatform { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        OciError::AuthenticationFailed { .. }
        | OciError::Unreachable { .. }
        | OciError::NotFound { .. }
        | OciError::Registry { .. }
        | OciError::DigestMismatch { .. }
        | OciError::TooLarge { .. }
        | OciError::SizeMismatch { .. }
        | OciError::ImageTooLarge { .. }
        | OciError::TooSlow { .. }
        | OciError::InvalidManifest { .. }
        | OciError::DockerConfig { .. }
        | OciError::Io { .. } => StatusCode::BAD_GATEWAY,
    }
}

/// The answer to a failed deploy: its status, the whole message, the key.
fn deploy_error(e: &DeployError) -> Response<Body> {
    let (status, key) = deploy_status(&e.failure);
    if status.is_server_error() && status != StatusCode::BAD_GATEWAY {
        tracing::error!(status = status.as_u16(), "admin API deploy failed: {e}");
    } else {
        tracing::warn!(status = status.as_u16(), "admin API deploy failed: {e}");
    }
    super::error_response(status, &e.to_string(), key)
}

/// The answer to an operation on an app that was refused or failed.
pub(super) fn op_error(e: &OpError) -> Response<Body> {
    let (status, key) = match e {
        OpError::UnknownApp(_) => (StatusCode::NOT_FOUND, None),
        OpError::Invalid { key, .. } => (StatusCode::BAD_REQUEST, key.as_deref()),
        OpError::Deploy(e) => return deploy_error(e),
        OpError::State(e) => return state_error(e),
        OpError::Removed(_) => (StatusCode::CONFLICT, None),
    };
    super::error_response(status, &e.to_string(), key)
}

/// The answer when the state file cannot be written.
fn state_error(e: &StateError) -> Response<Body> {
    tracing::error!("{e}");
    super::error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::apps::RouteConflict;

    fn status(failure: DeployFailure) -> (u16, Option<String>, String) {
        let e = DeployError::new("x", failure);
        let (status, key) = deploy_status(&e.failure);
        (status.as_u16(), key.map(str::to_string), e.to_string())
    }

    #[test]
    fn op_errors_map_to_statuses() {
        let state = StateError::Invalid {
            path: "/d/state.json".into(),
            reason: "bad".into(),
        };
        let conflict = DeployError::new(
            "x",
            RouteConflict {
                route: "/a".into(),
                owner: "other".into(),
            },
        );
        for (e, status) in [
            (OpError::UnknownApp("x".into()), StatusCode::NOT_FOUND),
            (
                OpError::invalid(Some("name"), "bad"),
                StatusCode::BAD_REQUEST,
            ),
            (OpError::setting("", "bad"), StatusCode::BAD_REQUEST),
            (OpError::Removed("x".into()), StatusCode::CONFLICT),
            (OpError::Deploy(conflict), StatusCode::CONFLICT),
            (OpError::State(state), StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            assert_eq!(op_error(&e).status(), status, "{e}");
        }
    }

    #[test]
    fn deploy_failures_map_to_statuses() {
        let conflict = RouteConflict {
            route: "/a".into(),
            owner: "other".into(),
        };
        assert_eq!(
            status(conflict.into()),
            (
                409,
                Some("routes".into()),
                "cannot deploy app `x`: route `/a` is taken by app `other`".into()
            )
        );
        let pull = DeployFailure::Pull {
            reference: "r/x:1".into(),
            error: OciError::Unreachable {
                registry: "r".into(),
                detail: "refused".into(),
            },
        };
        assert_eq!(
            status(pull),
            (
                502,
                Some("image".into()),
                "cannot deploy app `x`: cannot pull image `r/x:1`: registry r is unreachable: refused"
                    .into()
            )
        );
        let bad_reference = DeployFailure::Pull {
            reference: "R".into(),
            error: OciError::InvalidReference {
                reference: "R".into(),
                reason: "uppercase".into(),
            },
        };
        assert_eq!(status(bad_reference).0, 400);
        let missing = DeployFailure::Secret {
            var: Some("TOKEN".into()),
            error: SecretError::Missing("t".into()),
        };
        let (code, key, msg) = status(missing);
        assert_eq!((code, key.as_deref()), (400, Some("secrets")));
        assert!(
            msg.starts_with(
                "cannot deploy app `x`: key `secrets.TOKEN`: secret `t` does not exist"
            ),
            "{msg}"
        );
        let invalid = DeployFailure::Invalid {
            key: "limits.memory".into(),
            reason: "too small".into(),
        };
        assert_eq!(
            status(invalid),
            (
                400,
                Some("limits.memory".into()),
                "cannot deploy app `x`: key `limits.memory`: too small".into()
            )
        );
        let start = DeployFailure::Start(anyhow::anyhow!("exit 1").context("cannot start"));
        assert_eq!(
            status(start),
            (
                422,
                None,
                "cannot deploy app `x`: cannot start: exit 1".into()
            )
        );
        let state = DeployFailure::State(Arc::new(StateError::Invalid {
            path: "/s".into(),
            reason: "bad".into(),
        }));
        assert_eq!(status(state).0, 500);
        let host = DeployFailure::Host(anyhow::anyhow!("cannot open the log"));
        assert_eq!(status(host).0, 500);
    }
}
