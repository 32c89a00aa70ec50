//! [`push_component`]: push a Wasm component as a CNCF Wasm OCI artifact.
//!
//! The artifact (CNCF TAG-Runtime "Wasm OCI Artifact" layout, as written by
//! wkg and cargo-component):
//! - manifest `application/vnd.oci.image.manifest.v1+json`;
//! - config `application/vnd.wasm.config.v0+json`:
//!   `{"created", "architecture": "wasm", "os": "wasip2", "layerDigests",
//!   "component": {"exports", "imports", "target": null}}`, with the
//!   component's top-level import and export names;
//! - exactly one layer, `application/wasm`: the component, byte for byte.
//!
//! `created` is the current time, or `SOURCE_DATE_EPOCH` when set, so that a
//! reproducible build pushes a reproducible manifest digest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use oci_client::Reference;
use oci_client::manifest::{OciDescriptor, OciImageManifest};

use super::client::Session;
use super::component::{self, ComponentWorld};
use super::{Digest, OciError, RegistryClient, media_type, parse_reference};

/// The config document of a CNCF Wasm artifact.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    created: String,
    architecture: &'static str,
    os: &'static str,
    layer_digests: Vec<String>,
    component: ComponentSection<'a>,
}

#[derive(Debug, serde::Serialize)]
struct ComponentSection<'a> {
    exports: &'a [String],
    imports: &'a [String],
    /// A WIT world the component targets; berth does not know it.
    target: Option<String>,
}

/// `reference` parsed, refused when it names a digest: a push goes to a
/// tag, and the registry derives the digest from the content.
fn tag_reference(reference: &str) -> Result<Reference, OciError> {
    let parsed = parse_reference(reference)?;
    if parsed.digest().is_some() {
        return Err(OciError::InvalidReference {
            reference: reference.to_owned(),
            reason: "push to a tag; the registry derives the digest from the content".to_owned(),
        });
    }
    Ok(parsed)
}

/// Pushes `wasm` to `reference` (which must name a tag) as a CNCF Wasm
/// artifact and returns the manifest digest (`sha256:…`).
///
/// Blobs the registry already has are not uploaded again.
///
/// # Errors
/// - [`OciError::InvalidReference`] for a malformed reference or one with a
///   digest;
/// - [`OciError::CoreModule`] / [`OciError::NotAComponent`] if `wasm` is not
///   a component;
/// - the registry errors of [`super::Puller::pull`]
///   ([`OciError::AuthenticationFailed`], [`OciError::Unreachable`], …).
pub async fn push_component(
    client: &RegistryClient,
    reference: &str,
    wasm: &[u8],
) -> Result<String, OciError> {
    let parsed = tag_reference(reference)?;
    let world = component::world(wasm, "the Wasm binary")?;
    let layer = Bytes::copy_from_slice(wasm);
    let layer_digest = Digest::of(&layer);
    let config = Bytes::from(config_json(&world, &layer_digest, created_time())?);
    let config_digest = Digest::of(&config);

    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        config: descriptor(media_type::WASM_CONFIG, &config_digest, config.len()),
        layers: vec![descriptor(
            media_type::WASM_LAYER,
            &layer_digest,
            layer.len(),
        )],
        ..OciImageManifest::default()
    };
    let manifest =
        Bytes::from(
            serde_json::to_vec(&manifest).map_err(|e| OciError::InvalidManifest {
                what: reference.to_owned(),
                detail: format!("cannot serialise the manifest: {e}"),
            })?,
        );
    let manifest_digest = Digest::of(&manifest);

    let session = client.session(&parsed).await?;
    push_blob(client, &session, &parsed, layer, &layer_digest).await?;
    push_blob(client, &session, &parsed, config, &config_digest).await?;
    client
        .retry(&session.registry, reference, || {
            let manifest = manifest.clone();
            let session = &session;
            let parsed = &parsed;
            async move {
                session
                    .client
                    .push_manifest_raw(
                        parsed,
                        manifest,
                        HeaderValue::from_static(media_type::OCI_MANIFEST),
                    )
                    .await
                    .map_err(|e| session.map_error(e, reference))
            }
        })
        .await?;
    tracing::info!(%reference, digest = %manifest_digest, "pushed");
    Ok(manifest_digest.to_string())
}

/// Where [`push_component_image`] puts the component in the image's rootfs;
/// the image's entrypoint names it.
pub const IMAGE_COMPONENT_PATH: &str = "/app.wasm";

/// Pushes `wasm` to `reference` (a tag) in both packagings, under one image
/// index, and returns the index digest:
/// - platform `wasip2/wasm`: the CNCF Wasm artifact of [`push_component`]
///   (what `berth` pulls: it picks the `wasm` entry of an index first, and
///   what containerd >= 1.7.7 hands to Wasm shims as layers);
/// - platform `wasi/wasm`: runwasi's form for containerd >= 1.7.7, an
///   ordinary image config (os `wasi`, architecture `wasm`) whose one layer
///   is the component (media type
///   [`media_type::BYTECODEALLIANCE_COMPONENT_LAYER`]): containerd pulls it
///   without unpacking, and berth's shim reads the layer from its content
///   store (what `ctr run --platform wasi/wasm` serves);
/// - platform `linux/<this machine's architecture>`: an ordinary image with
///   one layer holding the component at [`IMAGE_COMPONENT_PATH`] and that
///   path as its entrypoint (what every containerd, 1.6 included, pulls and
///   unpacks for the `io.containerd.berth.v1` runtime).
///
/// # Errors
/// As [`push_component`].
pub async fn push_component_image(
    client: &RegistryClient,
    reference: &str,
    wasm: &[u8],
) -> Result<String, OciError> {
    let parsed = tag_reference(reference)?;
    let world = component::world(wasm, "the Wasm binary")?;
    let created = created_time();
    let invalid = |detail: String| OciError::InvalidManifest {
        what: reference.to_owned(),
        detail,
    };

    // The CNCF artifact.
    let wasm_layer = Bytes::copy_from_slice(wasm);
    let wasm_layer_digest = Digest::of(&wasm_layer);
    let wasm_config = Bytes::from(config_json(&world, &wasm_layer_digest, created)?);
    let wasm_config_digest = Digest::of(&wasm_config);
    let artifact = OciImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        config: descriptor(
            media_type::WASM_CONFIG,
            &wasm_config_digest,
            wasm_config.len(),
        ),
        layers: vec![descriptor(
            media_type::WASM_LAYER,
            &wasm_layer_digest,
            wasm_layer.len(),
        )],
        ..OciImageManifest::default()
    };
    let artifact = Bytes::from(
        serde_json::to_vec(&artifact).map_err(|e| invalid(format!("cannot serialise: {e}")))?,
    );

    // The rootfs image.
    let secs = created
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tar =
        rootfs_tar(wasm, secs).map_err(|e| invalid(format!("cannot build the layer: {e}")))?;
    let diff_id = Digest::of(&tar);
    let gz = {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar)
            .and_then(|()| gz.finish())
            .map_err(|e| invalid(format!("cannot compress the layer: {e}")))?
    };
    let image_layer = Bytes::from(gz);
    let image_layer_digest = Digest::of(&image_layer);
    let arch = oci_arch();
    let image_config = serde_json::to_vec(&serde_json::json!({
        "created": rfc3339_utc(created),
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": [IMAGE_COMPONENT_PATH],
            "Env": ["PATH=/"],
            "WorkingDir": "/",
            "Labels": { "dev.berth.component": IMAGE_COMPONENT_PATH },
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
    }))
    .map_err(|e| invalid(format!("cannot serialise: {e}")))?;
    let image_config = Bytes::from(image_config);
    let image_config_digest = Digest::of(&image_config);
    let image = OciImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        config: descriptor(
            media_type::OCI_IMAGE_CONFIG,
            &image_config_digest,
            image_config.len(),
        ),
        layers: vec![descriptor(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &image_layer_digest,
            image_layer.len(),
        )],
        ..OciImageManifest::default()
    };
    let image = Bytes::from(
        serde_json::to_vec(&image).map_err(|e| invalid(format!("cannot serialise: {e}")))?,
    );

    // runwasi's form for containerd >= 1.7.7: an ordinary image config (os
    // `wasi`, architecture `wasm`, no filesystem layers) and the component
    // itself as the one layer, under a Wasm layer media type. containerd
    // pulls it without unpacking the layer; a Wasm shim reads the layer
    // from containerd's content store. The layer is the CNCF artifact's
    // blob (same bytes, same digest), so nothing more is uploaded for it.
    let wasi_config = serde_json::to_vec(&serde_json::json!({
        "created": rfc3339_utc(created),
        "architecture": "wasm",
        "os": "wasi",
        "config": {
            "Entrypoint": [IMAGE_COMPONENT_PATH],
            "Labels": { "dev.berth.component": "layer" },
        },
        "rootfs": { "type": "layers", "diff_ids": [] },
    }))
    .map_err(|e| invalid(format!("cannot serialise: {e}")))?;
    let wasi_config = Bytes::from(wasi_config);
    let wasi_config_digest = Digest::of(&wasi_config);
    let wasi_image = OciImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        config: descriptor(
            media_type::OCI_IMAGE_CONFIG,
            &wasi_config_digest,
            wasi_config.len(),
        ),
        layers: vec![descriptor(
            media_type::BYTECODEALLIANCE_COMPONENT_LAYER,
            &wasm_layer_digest,
            wasm_layer.len(),
        )],
        ..OciImageManifest::default()
    };
    let wasi_image = Bytes::from(
        serde_json::to_vec(&wasi_image).map_err(|e| invalid(format!("cannot serialise: {e}")))?,
    );

    let entry = |manifest: &Bytes, os: &str, arch: &str| {
        serde_json::json!({
            "mediaType": media_type::OCI_MANIFEST,
            "digest": Digest::of(manifest).to_string(),
            "size": manifest.len(),
            "platform": { "os": os, "architecture": arch },
        })
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [
            entry(&artifact, "wasip2", "wasm"),
            entry(&wasi_image, "wasi", "wasm"),
            entry(&image, "linux", arch),
        ],
    }))
    .map_err(|e| invalid(format!("cannot serialise: {e}")))?;
    let index = Bytes::from(index);
    let index_digest = Digest::of(&index);

    let session = client.session(&parsed).await?;
    for (blob, digest) in [
        (wasm_layer, wasm_layer_digest),
        (wasm_config, wasm_config_digest),
        (wasi_config, wasi_config_digest),
        (image_layer, image_layer_digest),
        (image_config, image_config_digest),
    ] {
        push_blob(client, &session, &parsed, blob, &digest).await?;
    }
    for (body, media) in [
        (artifact, media_type::OCI_MANIFEST),
        (wasi_image, media_type::OCI_MANIFEST),
        (image, media_type::OCI_MANIFEST),
        (index, media_type::OCI_INDEX),
    ] {
        let target = if media == media_type::OCI_INDEX {
            parsed.clone()
        } else {
            Reference::with_digest(
                parsed.registry().to_owned(),
                parsed.repository().to_owned(),
                Digest::of(&body).to_string(),
            )
        };
        client
            .retry(&session.registry, reference, || {
                let body = body.clone();
                let session = &session;
                let target = &target;
                async move {
                    session
                        .client
                        .push_manifest_raw(target, body, HeaderValue::from_static(media))
                        .await
                        .map_err(|e| session.map_error(e, reference))
                }
            })
            .await?;
    }
    tracing::info!(%reference, digest = %index_digest, "pushed the component as an artifact and two images (wasi/wasm, linux)");
    Ok(index_digest.to_string())
}

/// A tar with the component at [`IMAGE_COMPONENT_PATH`] (mode 0755, owned
/// by root, modified at `mtime`): deterministic for the same bytes and time.
fn rootfs_tar(wasm: &[u8], mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(wasm.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    b.append_data(
        &mut header,
        IMAGE_COMPONENT_PATH.trim_start_matches('/'),
        wasm,
    )?;
    b.into_inner()
}

/// The OCI name of this machine's architecture.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

async fn push_blob(
    client: &RegistryClient,
    session: &Session,
    reference: &Reference,
    data: Bytes,
    digest: &Digest,
) -> Result<(), OciError> {
    let digest = digest.to_string();
    let digest = digest.as_str();
    // Errors name the reference: "HTTP 401 Unauthorized for host/repo:tag".
    let what = reference.to_string();
    let what = what.as_str();
    let exists = client
        .retry(&session.registry, digest, || async move {
            session
                .client
                .blob_exists(reference, digest)
                .await
                .map_err(|e| session.map_error(e, what))
        })
        .await?;
    if exists {
        tracing::debug!(%digest, "blob already in the registry");
        return Ok(());
    }
    client
        .retry_transfer(&session.registry, digest, || {
            let data = data.clone();
            async move {
                session
                    .client
                    .push_blob(reference, data, digest)
                    .await
                    .map_err(|e| session.map_error(e, what))
            }
        })
        .await?;
    Ok(())
}

fn descriptor(media_type: &str, digest: &Digest, size: usize) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.to_owned(),
        digest: digest.to_string(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    }
}

fn config_json(
    world: &ComponentWorld,
    layer: &Digest,
    created: SystemTime,
) -> Result<Vec<u8>, OciError> {
    let config = WasmConfig {
        created: rfc3339_utc(created),
        architecture: "wasm",
        os: "wasip2",
        layer_digests: vec![layer.to_string()],
        component: ComponentSection {
            exports: &world.exports,
            imports: &world.imports,
            target: None,
        },
    };
    serde_json::to_vec(&config).map_err(|e| OciError::InvalidManifest {
        what: "the Wasm config".to_owned(),
        detail: e.to_string(),
    })
}

/// Now, or `SOURCE_DATE_EPOCH` (seconds since the epoch) when it is set.
fn created_time() -> SystemTime {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or_else(SystemTime::now, |secs| {
            UNIX_EPOCH + Duration::from_secs(secs)
        })
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time at or after the epoch (earlier times
/// print as the epoch).
fn rfc3339_utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Days since 1970-01-01 to a proleptic Gregorian date, counting in
    // 400-year eras that start on March 1st (so leap days come last).
    let days_since_0000_03_01 = days + 719_468;
    let era = days_since_0000_03_01 / 146_097;
    let day_of_era = days_since_0000_03_01 % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        let at = |secs| rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(at(1_735_689_599), "2024-12-31T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn config_follows_the_cncf_layout() {
        let world = ComponentWorld {
            imports: vec!["wasi:io/streams@0.2.6".into()],
            exports: vec!["wasi:http/incoming-handler@0.2.6".into()],
        };
        let layer = Digest::of(b"component");
        let bytes = config_json(
            &world,
            &layer,
            UNIX_EPOCH + Duration::from_secs(1_709_210_096),
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "created": "2024-02-29T12:34:56Z",
                "architecture": "wasm",
                "os": "wasip2",
                "layerDigests": [layer.to_string()],
                "component": {
                    "exports": ["wasi:http/incoming-handler@0.2.6"],
                    "imports": ["wasi:io/streams@0.2.6"],
                    "target": null,
                },
            })
        );
    }

    #[tokio::test]
    async fn refuses_core_modules_and_digest_references_before_any_request() {
        // Port 9 on loopback: nothing is listening, and nothing is contacted.
        let client = RegistryClient::anonymous();
        let err = push_component(&client, "127.0.0.1:9/app:v1", b"\0asm\x01\0\0\0")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the Wasm binary is a core Wasm module, not a component"
        );
        let reference = format!("127.0.0.1:9/app@{}", Digest::of(b"x"));
        let err = push_component(&client, &reference, b"\0asm\x0d\0\x01\0")
            .await
            .unwrap_err();
        assert!(matches!(err, OciError::InvalidReference { .. }), "{err}");
    }
}
