//! Container images for the tests: the bench's [`Image`] and [`Layer`]
//! (`berth_bench::image`), with busybox-static `httpd` serving CGI scripts
//! on top ([`busybox_base`], [`ImageExt::httpd`]), written as an OCI image
//! layout and pushed with skopeo, as a user would ([`ImageExt::push`]).
//!
//! [`ImageExt`] is a trait only because [`Image`] is the bench crate's:
//! bring it into scope (`use crate::support::image::ImageExt as _`) to call
//! `Image::httpd()` or `image.push(reference)`.

use std::process::Command;

pub use berth_bench::image::{Image, Layer, RawLayer};

/// The applets [`busybox_base`] links.
const APPLETS: &[&str] = &[
    "sh", "httpd", "sleep", "id", "cat", "echo", "wget", "env", "ls", "rm", "true", "nc", "printf",
    "unshare", "grep", "head", "yes", "dd", "df",
];

/// The busybox base: the bench's [`berth_bench::image::busybox_layer`]
/// (`/bin/busybox` with applet links, passwd/group, `/www`), with an
/// `index.html` and the CGI scripts `env` and `slow` in `/www/cgi-bin`.
pub fn busybox_base() -> Layer {
    berth_bench::image::busybox_layer(APPLETS)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .file("www/index.html", 0o644, "hello from a container\n")
        .dir("www/cgi-bin")
        .file(
            "www/cgi-bin/env",
            0o755,
            "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"PORT=$PORT\"\necho \"K_SERVICE=$K_SERVICE\"\necho \"K_REVISION=$K_REVISION\"\necho \"K_CONFIGURATION=$K_CONFIGURATION\"\necho \"GREETING=$GREETING\"\necho \"UID=$(id -u)\"\n",
        )
        .file(
            "www/cgi-bin/slow",
            0o755,
            "#!/bin/sh\nsleep 1\necho 'Content-Type: text/plain'\necho\necho slept\n",
        )
}

/// What the tests add to the bench's [`Image`].
pub trait ImageExt {
    /// busybox httpd on `$PORT` serving `/www` (with CGI).
    fn httpd() -> Self;

    /// Writes the image as an OCI layout and pushes it with `skopeo copy`
    /// to `reference` (`host:port/repo:tag`, plain HTTP).
    fn push(&self, reference: &str);
}

impl ImageExt for Image {
    fn httpd() -> Self {
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

    fn push(&self, reference: &str) {
        let dir = tempfile::tempdir().unwrap();
        self.write_layout(dir.path(), "latest")
            .unwrap_or_else(|e| panic!("{e:#}"));
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
