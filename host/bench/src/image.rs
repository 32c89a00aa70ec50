//! The container side of the hello service, built here: a one-layer OCI image
//! with the static busybox of the host (`/bin/busybox`, Debian package
//! `busybox-static`) running `httpd` on `127.0.0.1:$PORT`, serving one
//! static `index.html`. Pushed with `oci-client` as a proper OCI image
//! (image manifest, `application/vnd.oci.image.config.v1+json` config with
//! `rootfs.diff_ids`, one gzip layer).
//!
//! The integration tests build their images with the same [`Image`] and
//! [`Layer`] (with [`busybox_layer`] under their httpd) and push them with
//! skopeo from an OCI image layout ([`Image::write_layout`]), as a user
//! would.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use flate2::Compression;
use flate2::write::GzEncoder;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

/// Where the static busybox comes from.
pub const BUSYBOX: &str = "/bin/busybox";

/// One entry of a layer.
#[derive(Debug, Clone)]
enum Entry {
    File(String, u32, Vec<u8>),
    Dir(String),
    Symlink(String, String),
}

/// One layer's files, in order.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    entries: Vec<Entry>,
}

impl Layer {
    /// Adds a regular file.
    pub fn file(mut self, path: &str, mode: u32, contents: impl Into<Vec<u8>>) -> Self {
        self.entries
            .push(Entry::File(path.into(), mode, contents.into()));
        self
    }

    /// Adds a directory (mode 0755).
    pub fn dir(mut self, path: &str) -> Self {
        self.entries.push(Entry::Dir(path.into()));
        self
    }

    /// Adds a symlink.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries
            .push(Entry::Symlink(path.into(), target.into()));
        self
    }

    /// The layer as an uncompressed tar (owned by root, fixed mtime, so the
    /// same input gives the same bytes).
    ///
    /// # Errors
    /// When a path cannot be put in a tar header.
    pub fn tar(&self) -> anyhow::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            match e {
                Entry::File(path, mode, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, &data[..])?;
                }
                Entry::Dir(path) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, path, std::io::empty())?;
                }
                Entry::Symlink(path, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, path, target)?;
                }
            }
        }
        Ok(b.into_inner()?)
    }
}

/// A layer given as its blob: bytes and their media type, pushed as they
/// are (the config's diff id for it is the blob's digest, made up: berth
/// does not read it).
#[derive(Debug, Clone)]
pub struct RawLayer {
    /// The descriptor's `mediaType`.
    pub media_type: String,
    /// The blob.
    pub bytes: Vec<u8>,
}

/// The static busybox ([`BUSYBOX`]) as a layer: `/bin/busybox` with links
/// for `applets`, `root` and `www` (uid 33) in `/etc/passwd` and
/// `/etc/group`, an empty `/tmp` and `/www`.
///
/// # Errors
/// When [`BUSYBOX`] cannot be read.
pub fn busybox_layer(applets: &[&str]) -> anyhow::Result<Layer> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| {
        format!("cannot read {BUSYBOX} (install the Debian package `busybox-static`)")
    })?;
    let mut layer = Layer::default()
        .dir("bin")
        .file("bin/busybox", 0o755, busybox)
        .dir("etc")
        .file(
            "etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/www:/bin/sh\n",
        )
        .file("etc/group", 0o644, "root:x:0:\nwww:x:33:\n")
        .dir("tmp")
        .dir("www");
    for applet in applets {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    Ok(layer)
}

/// An image: its layers and the `config` part of its config.
#[derive(Debug, Clone)]
pub struct Image {
    /// Layers, bottom first (gzip-compressed when pushed).
    pub layers: Vec<Layer>,
    /// Layers given as blobs, above [`layers`](Self::layers).
    pub raw_layers: Vec<RawLayer>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`.
    pub env: Vec<String>,
    /// `User`, when set.
    pub user: Option<String>,
    /// `WorkingDir`.
    pub working_dir: String,
}

impl Image {
    /// busybox `httpd` in the foreground on `127.0.0.1:$PORT`, serving `/www`
    /// whose `index.html` is `index` (no CGI: the static file is the
    /// cheapest answer httpd has, as `hello` is for Wasm).
    ///
    /// # Errors
    /// When [`BUSYBOX`] cannot be read.
    pub fn hello(index: &str) -> anyhow::Result<Self> {
        let layer = busybox_layer(&["sh", "httpd"])?.file(
            "www/index.html",
            0o644,
            index.as_bytes().to_vec(),
        );
        Ok(Self {
            layers: vec![layer],
            raw_layers: Vec::new(),
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["exec httpd -f -p 127.0.0.1:$PORT -h /www".into()],
            env: vec!["PATH=/bin".into()],
            user: None,
            working_dir: "/".into(),
        })
    }

    /// A pod's sandbox image ("pause") for a CRI node of the bench's own:
    /// busybox's `sleep`, which containerd stops with SIGKILL.
    ///
    /// # Errors
    /// When [`BUSYBOX`] cannot be read.
    pub fn pause() -> anyhow::Result<Self> {
        let layer = busybox_layer(&["sleep"])?;
        Ok(Self {
            layers: vec![layer],
            raw_layers: Vec::new(),
            entrypoint: vec!["/bin/sleep".into()],
            cmd: vec!["2147483647".into()],
            env: vec!["PATH=/bin".into()],
            user: None,
            working_dir: "/".into(),
        })
    }

    /// The layers' blobs (gzip, then the raw ones) and the config document.
    fn blobs(&self) -> anyhow::Result<(Vec<ImageLayer>, Config)> {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in &self.layers {
            let tar = layer.tar()?;
            diff_ids.push(format!("sha256:{}", hex::encode(Sha256::digest(&tar))));
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(&tar)?;
            layers.push(ImageLayer::oci_v1_gzip(gz.finish()?, None));
        }
        for raw in &self.raw_layers {
            diff_ids.push(format!(
                "sha256:{}",
                hex::encode(Sha256::digest(&raw.bytes))
            ));
            layers.push(ImageLayer::new(
                raw.bytes.clone(),
                raw.media_type.clone(),
                None,
            ));
        }
        let mut config = serde_json::json!({
            "Entrypoint": self.entrypoint,
            "Cmd": self.cmd,
            "Env": self.env,
            "WorkingDir": self.working_dir,
        });
        if let Some(user) = &self.user {
            config["User"] = serde_json::json!(user);
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": oci_arch(),
            "os": "linux",
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))?;
        Ok((layers, Config::oci_v1(config, None)))
    }

    /// The blobs and the image manifest that names them.
    fn manifest(&self) -> anyhow::Result<(Vec<ImageLayer>, Config, OciImageManifest)> {
        let (layers, config) = self.blobs()?;
        let mut manifest = OciImageManifest::build(&layers, &config, None);
        manifest.media_type = Some(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_owned());
        Ok((layers, config, manifest))
    }

    /// Pushes the image to `reference` (`127.0.0.1:PORT/repo:tag`, plain
    /// HTTP: loopback only) and returns its manifest digest.
    ///
    /// # Errors
    /// When the registry refuses or cannot be reached.
    pub async fn push_plain_http(&self, reference: &str) -> anyhow::Result<String> {
        let parsed: Reference = reference
            .parse()
            .with_context(|| format!("bad reference `{reference}`"))?;
        let (layers, config, manifest) = self.manifest()?;
        let digest = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(serde_json::to_vec(&manifest)?))
        );
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..ClientConfig::default()
        });
        client
            .push(
                &parsed,
                &layers,
                config,
                &RegistryAuth::Anonymous,
                Some(manifest),
            )
            .await
            .with_context(|| format!("cannot push {reference}"))?;
        Ok(digest)
    }

    /// Writes the image as an OCI image layout to `dir` (blobs, its
    /// manifest tagged `tag` in `index.json`, `oci-layout`), the form
    /// `skopeo copy oci:DIR:TAG` reads.
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> anyhow::Result<()> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        let put = |bytes: &[u8]| -> anyhow::Result<(String, usize)> {
            let hex = hex::encode(Sha256::digest(bytes));
            std::fs::write(blobs.join(&hex), bytes)?;
            Ok((format!("sha256:{hex}"), bytes.len()))
        };
        let (layers, config, manifest) = self.manifest()?;
        for layer in &layers {
            put(&layer.data[..])?;
        }
        put(&config.data[..])?;
        let (digest, size) = put(&serde_json::to_vec(&manifest)?)?;
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{
                    "mediaType": oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
                    "digest": digest,
                    "size": size,
                    "annotations": { "org.opencontainers.image.ref.name": tag },
                }],
            }))?,
        )?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(())
    }

    /// Whether the host has what [`Image::hello`] needs.
    pub fn available() -> bool {
        Path::new(BUSYBOX).is_file()
    }
}

/// The OCI name of this machine's architecture.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_tar_lists_its_entries() {
        let tar = Layer::default()
            .dir("www")
            .file("www/index.html", 0o644, "hi")
            .symlink("bin/sh", "busybox")
            .tar()
            .unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["www", "www/index.html", "bin/sh"]);
    }

    #[test]
    fn the_config_names_the_layers_by_diff_id() {
        let image = Image {
            layers: vec![Layer::default().file("a", 0o644, "x")],
            raw_layers: vec![RawLayer {
                media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                bytes: b"not zstd".to_vec(),
            }],
            entrypoint: vec!["/bin/true".into()],
            cmd: vec![],
            env: vec![],
            user: Some("33".into()),
            working_dir: "/www".into(),
        };
        let (layers, config) = image.blobs().unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(
            layers[0].media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            layers[1].media_type,
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        let config: serde_json::Value = serde_json::from_slice(&config.data).unwrap();
        let tar = image.layers[0].tar().unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
        );
        assert_eq!(
            config["rootfs"]["diff_ids"][1],
            format!("sha256:{}", hex::encode(Sha256::digest(b"not zstd")))
        );
        assert_eq!(config["config"]["Entrypoint"][0], "/bin/true");
        assert_eq!(config["config"]["User"], "33");
        assert_eq!(config["config"]["WorkingDir"], "/www");
    }

    #[test]
    fn the_layout_holds_every_blob_the_index_names() {
        let image = Image::hello("hi\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        image.write_layout(dir.path(), "latest").unwrap();
        let blob = |digest: &serde_json::Value| {
            let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
            std::fs::read(dir.path().join("blobs/sha256").join(hex)).unwrap()
        };
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            "latest"
        );
        let manifest: serde_json::Value = serde_json::from_slice(&blob(&entry["digest"])).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        let config = blob(&manifest["config"]["digest"]);
        assert_eq!(manifest["config"]["size"], config.len());
        let layer = blob(&manifest["layers"][0]["digest"]);
        assert_eq!(manifest["layers"][0]["size"], layer.len());
        assert!(dir.path().join("oci-layout").is_file());
    }
}
