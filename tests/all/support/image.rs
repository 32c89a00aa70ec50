//! Builds small container images in Rust (busybox-static `httpd` with CGI
//! scripts) as OCI image layouts, and pushes them with skopeo, as a user
//! would.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// Layers are built with the bench's builder; this module adds the busybox
/// httpd image with CGI scripts, the OCI layout and the skopeo push.
pub use berth_bench::image::Layer;

/// The busybox base: `/bin/busybox` with applet links, passwd/group, `/www`.
pub fn busybox_base() -> Layer {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
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
        .dir("www")
        .dir("www/cgi-bin")
        .file("www/index.html", 0o644, "hello from a container\n")
        .file(
            "www/cgi-bin/env",
            0o755,
            "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"PORT=$PORT\"\necho \"K_SERVICE=$K_SERVICE\"\necho \"K_REVISION=$K_REVISION\"\necho \"K_CONFIGURATION=$K_CONFIGURATION\"\necho \"GREETING=$GREETING\"\necho \"UID=$(id -u)\"\n",
        )
        .file(
            "www/cgi-bin/slow",
            0o755,
            "#!/bin/sh\nsleep 1\necho 'Content-Type: text/plain'\necho\necho slept\n",
        );
    for applet in [
        "sh", "httpd", "sleep", "id", "cat", "echo", "wget", "env", "ls", "rm", "true", "nc",
        "printf", "unshare", "grep", "head", "yes", "dd", "df",
    ] {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer
}

/// A layer given as its blob: crafted bytes and their media type, pushed as
/// they are (the config's diff id is made up: berth does not read it).
pub struct RawLayer {
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// An image: layers (gzip-compressed on write), then raw layers, and the
/// config's `config`.
pub struct Image {
    pub layers: Vec<Layer>,
    pub raw_layers: Vec<RawLayer>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    /// The config's `WorkingDir`.
    pub working_dir: String,
}

impl Image {
    /// busybox httpd on `$PORT` serving `/www` (with CGI).
    pub fn httpd() -> Self {
        Self {
            layers: vec![busybox_base()],
            raw_layers: Vec::new(),
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["exec httpd -f -p ${LISTEN_ADDR:-0.0.0.0}:$PORT -h /www".into()],
            env: vec!["PATH=/bin".into()],
            user: None,
            working_dir: "/".into(),
        }
    }

    /// Writes an OCI image layout to `dir` (tag `latest`).
    pub fn write_layout(&self, dir: &Path) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| -> String {
            let hex = hex::encode(Sha256::digest(bytes));
            std::fs::write(blobs.join(&hex), bytes).unwrap();
            format!("sha256:{hex}")
        };
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in &self.layers {
            let tar = layer.tar().unwrap();
            diff_ids.push(format!("sha256:{}", hex::encode(Sha256::digest(&tar))));
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(&tar).unwrap();
            let gz = gz.finish().unwrap();
            let digest = put(&gz);
            layer_descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": gz.len(),
            }));
        }
        for raw in &self.raw_layers {
            let digest = put(&raw.bytes);
            diff_ids.push(digest.clone());
            layer_descs.push(serde_json::json!({
                "mediaType": raw.media_type,
                "digest": digest,
                "size": raw.bytes.len(),
            }));
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
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap();
        let config_digest = put(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layer_descs,
        }))
        .unwrap();
        let manifest_digest = put(&manifest);
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest.len(),
                    "annotations": { "org.opencontainers.image.ref.name": "latest" },
                }],
            }))
            .unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    }

    /// Writes the layout and pushes it with `skopeo copy` to `reference`
    /// (`host:port/repo:tag`, plain HTTP).
    pub fn push(&self, reference: &str) {
        let dir = tempfile::tempdir().unwrap();
        self.write_layout(dir.path());
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:latest", dir.path().display()))
            .arg(format!("docker://{reference}"))
            .output()
            .expect("skopeo is installed");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
