//! The JSON documents of the admin API, shared by the server and the CLI.

use serde::{Deserialize, Serialize};

pub use crate::apps::ScaleRequest;
pub use crate::apps::view::{
    AppList, AppState, AppView, BucketView, Instances, KeyvalueView, RevisionView,
};

/// An error: `{"error": "...", "key": "limits.memory"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
    /// For a refused setting, its dotted key in the app's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `GET /v1/secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretList {
    /// Every secret, by name.
    pub secrets: Vec<SecretView>,
}

/// A secret as the API shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretView {
    /// Its name.
    pub name: String,
    /// When it was last set (RFC 3339).
    pub updated_at: String,
    /// The apps whose settings name it.
    pub used_by: Vec<String>,
}
