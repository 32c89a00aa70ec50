//! What a manifest holds: a Wasm component, a container image, or (for an
//! index) which child manifest to follow.
//!
//! These are pure functions over a parsed manifest; [`super::Puller`] does the
//! fetching. The rules:
//! - **Wasm component**: exactly one layer, of a Wasm media type
//!   ([`media_type::WASM_LAYERS`]), under any config. This covers the CNCF
//!   layout (config `application/vnd.wasm.config.v0+json`, one
//!   `application/wasm` layer), runwasi, Spin and legacy wasmCloud single-layer
//!   artifacts, and a plain `oras push file.wasm:application/wasm`. Two or more
//!   Wasm layers are refused ([`OciError::MultipleWasmLayers`]), as is a Wasm
//!   layer next to other layers.
//! - **Container image**: an OCI or Docker schema 2 manifest whose config is an
//!   image config and whose layers are all (possibly compressed) tarballs.
//! - **Index / manifest list**: a `wasm` entry if there is one, otherwise
//!   `linux/amd64`.
//! - Anything else: [`OciError::UnsupportedArtifact`], naming the media types.

use std::fmt;

use oci_client::manifest::{
    ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest, OciManifest,
};
use oci_spec::image::{Arch, Os};

use super::{Digest, OciError, media_type};

/// A validated content descriptor: what a manifest says about a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The blob's media type.
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
}

impl Descriptor {
    /// Validates a descriptor from a manifest.
    ///
    /// # Errors
    /// [`OciError::InvalidDigest`] for a digest that is not sha256, and
    /// [`OciError::InvalidManifest`] for a negative size.
    pub fn from_oci(d: &OciDescriptor) -> Result<Self, OciError> {
        Self::new(&d.media_type, &d.digest, d.size)
    }

    fn new(media_type: &str, digest: &str, size: i64) -> Result<Self, OciError> {
        let digest = Digest::parse(digest)?;
        let size = u64::try_from(size).map_err(|_| OciError::InvalidManifest {
            what: format!("descriptor {digest}"),
            detail: format!("negative size {size}"),
        })?;
        Ok(Self {
            media_type: media_type.to_owned(),
            digest,
            size,
        })
    }
}

/// A Wasm component artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmArtifact {
    /// The layer holding the component.
    pub layer: Descriptor,
    /// The media type of the manifest's config.
    pub config_media_type: String,
}

impl WasmArtifact {
    /// Whether this is exactly the CNCF layout (Wasm config, `application/wasm` layer).
    pub fn is_cncf(&self) -> bool {
        self.config_media_type == media_type::WASM_CONFIG
            && self.layer.media_type == media_type::WASM_LAYER
    }
}

/// A container image (recognised; running one is a later feature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    /// `os/architecture` picked from an index, if the reference was one.
    pub platform: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The filesystem layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// What an artifact is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArtifactKind {
    /// A Wasm component.
    Wasm(WasmArtifact),
    /// A container image.
    Container(ContainerImage),
}

impl ArtifactKind {
    /// A short name for the kind: `wasm-component` or `container-image`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Wasm(_) => "wasm-component",
            Self::Container(_) => "container-image",
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of classifying one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// An image manifest: the artifact itself.
    Artifact(ArtifactKind),
    /// An image index or manifest list: follow `manifest`, chosen for `platform`.
    Index {
        /// The chosen child manifest.
        manifest: Descriptor,
        /// Its `os/architecture`.
        platform: String,
    },
}

/// Parses a manifest or index as served by a registry.
///
/// `what` names it in errors (a digest or reference).
///
/// # Errors
/// [`OciError::InvalidManifest`] if it is not a schema 2 manifest or index.
pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<OciManifest, OciError> {
    let invalid = |detail: String| OciError::InvalidManifest {
        what: what.to_owned(),
        detail,
    };
    let manifest: OciManifest =
        serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let (schema_version, declared) = match &manifest {
        OciManifest::Image(m) => (m.schema_version, m.media_type.as_deref()),
        OciManifest::ImageIndex(i) => (i.schema_version, i.media_type.as_deref()),
    };
    if schema_version != 2 {
        return Err(invalid(format!(
            "unsupported schemaVersion {schema_version}"
        )));
    }
    let consistent = match (&manifest, declared) {
        (_, None) => true,
        (OciManifest::Image(_), Some(t)) => {
            t == media_type::OCI_MANIFEST || t == media_type::DOCKER_MANIFEST
        }
        (OciManifest::ImageIndex(_), Some(t)) => {
            t == media_type::OCI_INDEX || t == media_type::DOCKER_MANIFEST_LIST
        }
    };
    if !consistent {
        return Err(invalid(format!(
            "mediaType {} does not match the document's content",
            declared.unwrap_or_default()
        )));
    }
    Ok(manifest)
}

/// Classifies a manifest (see the [module docs](self) for the rules).
///
/// `digest` names an index in [`OciError::NoMatchingPlatform`].
///
/// # Errors
/// [`OciError::MultipleWasmLayers`], [`OciError::UnsupportedArtifact`],
/// [`OciError::NoMatchingPlatform`], or an invalid descriptor.
pub fn classify(manifest: &OciManifest, digest: &str) -> Result<Classification, OciError> {
    match manifest {
        OciManifest::Image(m) => classify_image(m).map(Classification::Artifact),
        OciManifest::ImageIndex(index) => choose_from_index(index, digest),
    }
}

fn classify_image(m: &OciImageManifest) -> Result<ArtifactKind, OciError> {
    let config = &m.config.media_type;
    let wasm_layers: Vec<&OciDescriptor> = m
        .layers
        .iter()
        .filter(|l| media_type::WASM_LAYERS.contains(&l.media_type.as_str()))
        .collect();
    let unsupported = |reason: &str| OciError::UnsupportedArtifact {
        reason: reason.to_owned(),
        manifest_media_type: m.media_type.clone().unwrap_or_else(|| "<none>".to_owned()),
        config_media_type: config.clone(),
        layer_media_types: m.layers.iter().map(|l| l.media_type.clone()).collect(),
    };
    match (wasm_layers.as_slice(), m.layers.len()) {
        ([layer], 1) => {
            return Ok(ArtifactKind::Wasm(WasmArtifact {
                layer: Descriptor::from_oci(layer)?,
                config_media_type: config.clone(),
            }));
        }
        ([_], _) => {
            return Err(unsupported(
                "a Wasm layer next to other layers; the component must be the only layer",
            ));
        }
        ([], _) => {}
        (many, _) => {
            return Err(OciError::MultipleWasmLayers {
                media_types: many.iter().map(|l| l.media_type.clone()).collect(),
            });
        }
    }

    let image_config =
        config == media_type::OCI_IMAGE_CONFIG || config == media_type::DOCKER_IMAGE_CONFIG;
    let tar_layers = m
        .layers
        .iter()
        .all(|l| media_type::CONTAINER_LAYERS.contains(&l.media_type.as_str()));
    if image_config && tar_layers {
        return Ok(ArtifactKind::Container(ContainerImage {
            platform: None,
            config: Descriptor::from_oci(&m.config)?,
            layers: m
                .layers
                .iter()
                .map(Descriptor::from_oci)
                .collect::<Result<_, _>>()?,
        }));
    }
    Err(unsupported(if m.layers.is_empty() {
        "no layers"
    } else if config == media_type::WASM_CONFIG {
        "the config says Wasm but no layer holds Wasm"
    } else if image_config {
        "an image config with layers that are not filesystem tarballs"
    } else {
        "no Wasm layer and not a container image"
    }))
}

fn platform_name(entry: &ImageIndexEntry) -> String {
    match &entry.platform {
        Some(p) => format!("{}/{}", p.os, p.architecture),
        None => "unknown".to_owned(),
    }
}

fn choose_from_index(index: &OciImageIndex, digest: &str) -> Result<Classification, OciError> {
    let is_wasm = |e: &&ImageIndexEntry| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.architecture == Arch::Wasm)
    };
    let is_linux_amd64 = |e: &&ImageIndexEntry| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.os == Os::Linux && p.architecture == Arch::Amd64)
    };
    let chosen = index
        .manifests
        .iter()
        .find(is_wasm)
        .or_else(|| index.manifests.iter().find(is_linux_amd64));
    match chosen {
        Some(entry) => Ok(Classification::Index {
            manifest: Descriptor::new(&entry.media_type, &entry.digest, entry.size)?,
            platform: platform_name(entry),
        }),
        None => Err(OciError::NoMatchingPlatform {
            digest: digest.to_owned(),
            available: index.manifests.iter().map(platform_name).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn manifest(config: &str, layers: &[&str]) -> OciManifest {
        let layers: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"mediaType": t, "digest": d(i as u8 + 1), "size": 100}))
            .collect();
        let doc = json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": {"mediaType": config, "digest": d(0), "size": 2},
            "layers": layers,
        });
        parse_manifest(doc.to_string().as_bytes(), "test").unwrap()
    }

    fn wasm(m: &OciManifest) -> WasmArtifact {
        match classify(m, "test").unwrap() {
            Classification::Artifact(ArtifactKind::Wasm(w)) => w,
            other => panic!("not Wasm: {other:?}"),
        }
    }

    fn error(m: &OciManifest) -> String {
        classify(m, "test").unwrap_err().to_string()
    }

    #[test]
    fn cncf_layout_is_a_component() {
        let w = wasm(&manifest(
            media_type::WASM_CONFIG,
            &[media_type::WASM_LAYER],
        ));
        assert!(w.is_cncf());
        assert_eq!(w.layer.digest.to_string(), d(1));
        assert_eq!(w.layer.size, 100);
    }

    #[test]
    fn other_single_wasm_layer_types_are_components() {
        for layer in [
            media_type::BYTECODEALLIANCE_COMPONENT_LAYER,
            media_type::WASM_CONTENT_LAYER,
            media_type::MODULE_WASM_CONTENT_LAYER,
        ] {
            for config in [
                media_type::WASM_CONFIG,
                // runwasi's form (`berth push --image`'s `wasi/wasm` entry).
                media_type::OCI_IMAGE_CONFIG,
                "application/vnd.oci.empty.v1+json",
                "application/vnd.unknown.config.v1+json",
            ] {
                let w = wasm(&manifest(config, &[layer]));
                assert_eq!(w.layer.media_type, layer);
                assert!(!w.is_cncf());
            }
        }
    }

    #[test]
    fn oras_push_of_application_wasm_under_any_config() {
        let w = wasm(&manifest(
            "application/vnd.unknown.config.v1+json",
            &[media_type::WASM_LAYER],
        ));
        assert_eq!(
            w.config_media_type,
            "application/vnd.unknown.config.v1+json"
        );
    }

    #[test]
    fn two_wasm_layers_are_refused() {
        let msg = error(&manifest(
            media_type::WASM_CONFIG,
            &[media_type::WASM_LAYER, media_type::WASM_CONTENT_LAYER],
        ));
        assert!(msg.contains("2 Wasm layers"), "{msg}");
        assert!(msg.contains(media_type::WASM_CONTENT_LAYER), "{msg}");
    }

    #[test]
    fn a_wasm_layer_with_company_is_refused() {
        let msg = error(&manifest(
            media_type::WASM_CONFIG,
            &[media_type::WASM_LAYER, "text/plain"],
        ));
        assert!(msg.contains("only layer"), "{msg}");
        assert!(msg.contains("text/plain"), "{msg}");
    }

    #[test]
    fn non_wasm_layer_is_refused_naming_media_types() {
        let msg = error(&manifest(media_type::WASM_CONFIG, &["text/plain"]));
        assert!(msg.contains("unsupported artifact"), "{msg}");
        assert!(msg.contains("text/plain"), "{msg}");
        assert!(msg.contains(media_type::WASM_CONFIG), "{msg}");

        let msg = error(&manifest(
            "application/vnd.cncf.helm.config.v1+json",
            &["application/vnd.cncf.helm.chart.content.v1.tar+gzip"],
        ));
        assert!(
            msg.contains("application/vnd.cncf.helm.chart.content.v1.tar+gzip"),
            "{msg}"
        );

        let msg = error(&manifest(media_type::WASM_CONFIG, &[]));
        assert!(msg.contains("no layers"), "{msg}");
    }

    #[test]
    fn container_images_are_recognised() {
        for (config, layers) in [
            (
                media_type::OCI_IMAGE_CONFIG,
                vec![
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                ],
            ),
            (
                media_type::OCI_IMAGE_CONFIG,
                vec!["application/vnd.oci.image.layer.v1.tar"],
            ),
            (
                media_type::DOCKER_IMAGE_CONFIG,
                vec!["application/vnd.docker.image.rootfs.diff.tar.gzip"],
            ),
        ] {
            match classify(&manifest(config, &layers), "test").unwrap() {
                Classification::Artifact(ArtifactKind::Container(c)) => {
                    assert_eq!(c.layers.len(), layers.len());
                    assert_eq!(c.config.media_type, config);
                    assert_eq!(c.platform, None);
                }
                other => panic!("{other:?}"),
            }
        }
        let msg = error(&manifest(
            media_type::OCI_IMAGE_CONFIG,
            &["application/octet-stream"],
        ));
        assert!(msg.contains("not filesystem tarballs"), "{msg}");
    }

    #[test]
    fn docker_schema2_manifest_parses() {
        let doc = json!({
            "schemaVersion": 2,
            "mediaType": media_type::DOCKER_MANIFEST,
            "config": {"mediaType": media_type::DOCKER_IMAGE_CONFIG, "digest": d(0), "size": 7023},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d(1), "size": 32654}],
        });
        let m = parse_manifest(doc.to_string().as_bytes(), "test").unwrap();
        assert!(matches!(
            classify(&m, "test").unwrap(),
            Classification::Artifact(ArtifactKind::Container(_))
        ));
    }

    fn index(entries: &[(&str, &str)]) -> OciManifest {
        let manifests: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, (os, arch))| {
                json!({"mediaType": media_type::OCI_MANIFEST, "digest": d(i as u8 + 10), "size": 500,
                       "platform": {"os": os, "architecture": arch}})
            })
            .collect();
        let doc =
            json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": manifests});
        parse_manifest(doc.to_string().as_bytes(), "test").unwrap()
    }

    #[test]
    fn index_picks_wasm_then_linux_amd64() {
        let pick = |m: &OciManifest| match classify(m, "idx").unwrap() {
            Classification::Index { manifest, platform } => (manifest.digest.to_string(), platform),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            pick(&index(&[
                ("linux", "arm64"),
                ("linux", "amd64"),
                ("windows", "amd64")
            ])),
            (d(11), "linux/amd64".to_owned())
        );
        assert_eq!(
            pick(&index(&[("linux", "amd64"), ("wasip2", "wasm")])),
            (d(11), "wasip2/wasm".to_owned())
        );
        let err = classify(
            &index(&[("linux", "arm64"), ("windows", "amd64")]),
            "sha256:idx",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("linux/arm64")
                && msg.contains("windows/amd64")
                && msg.contains("sha256:idx"),
            "{msg}"
        );
    }

    #[test]
    fn bad_documents_are_invalid_manifests() {
        for doc in [
            "not json".to_owned(),
            json!({"schemaVersion": 1, "config": {"mediaType": "x", "digest": d(0), "size": 1}, "layers": []}).to_string(),
            json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "config": {"mediaType": "x", "digest": d(0), "size": 1}, "layers": []}).to_string(),
            json!({"schemaVersion": 2}).to_string(),
        ] {
            let err = parse_manifest(doc.as_bytes(), "sha256:abc").unwrap_err();
            assert!(matches!(err, OciError::InvalidManifest { .. }), "{doc}: {err}");
        }
    }

    #[test]
    fn untrusted_descriptor_digests_are_validated() {
        let doc = json!({
            "schemaVersion": 2,
            "config": {"mediaType": media_type::WASM_CONFIG, "digest": d(0), "size": 2},
            "layers": [{"mediaType": media_type::WASM_LAYER, "digest": "sha256:../../etc/passwd", "size": 1}],
        });
        let m = parse_manifest(doc.to_string().as_bytes(), "test").unwrap();
        assert!(matches!(
            classify(&m, "test"),
            Err(OciError::InvalidDigest { .. })
        ));

        let doc = json!({
            "schemaVersion": 2,
            "config": {"mediaType": media_type::WASM_CONFIG, "digest": d(0), "size": 2},
            "layers": [{"mediaType": media_type::WASM_LAYER, "digest": d(1), "size": -1}],
        });
        let m = parse_manifest(doc.to_string().as_bytes(), "test").unwrap();
        assert!(matches!(
            classify(&m, "test"),
            Err(OciError::InvalidManifest { .. })
        ));
    }
}
