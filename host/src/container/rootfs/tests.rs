//! Layers built entry by entry (raw header fields, so `..`, absolute paths
//! and hostile links get through), applied to a scratch rootfs.

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use tar::{EntryType, Header};

use super::meta::parse_pax_time;
use super::path::{BadPath, normalize};
use super::whiteout::remove_all_at;
use super::*;

const MTIME: u64 = 1_600_000_000;

/// One crafted tar entry. Paths and link targets are written into the
/// header as raw bytes, so `..` and absolute paths get through.
#[derive(Clone, Copy)]
enum E<'a> {
    File(&'a str, &'a [u8]),
    FileMode(&'a str, &'a [u8], u32),
    Owned(&'a str, u64, u64),
    Dir(&'a str, u32),
    DirAt(&'a str, u32, u64),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str),
    Block(&'a str),
    Fifo(&'a str),
}

fn raw_field(field: &mut [u8], value: &str) {
    assert!(
        value.len() < field.len(),
        "{value:?} is too long for a raw header field"
    );
    field.fill(0);
    field[..value.len()].copy_from_slice(value.as_bytes());
}

fn header(kind: EntryType, mode: u32) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h
}

fn append(builder: &mut tar::Builder<Vec<u8>>, entry: E<'_>) {
    let (mut h, path, link, data): (Header, &str, Option<&str>, &[u8]) = match entry {
        E::File(p, d) => (header(EntryType::Regular, 0o644), p, None, d),
        E::FileMode(p, d, mode) => (header(EntryType::Regular, mode), p, None, d),
        E::Owned(p, uid, gid) => {
            let mut h = header(EntryType::Regular, 0o640);
            h.set_uid(uid);
            h.set_gid(gid);
            (h, p, None, b"owned")
        }
        E::Dir(p, mode) => (header(EntryType::Directory, mode), p, None, b""),
        E::DirAt(p, mode, mtime) => {
            let mut h = header(EntryType::Directory, mode);
            h.set_mtime(mtime);
            (h, p, None, b"")
        }
        E::Symlink(p, t) => (header(EntryType::Symlink, 0o777), p, Some(t), b""),
        E::Hardlink(p, t) => (header(EntryType::Link, 0o644), p, Some(t), b""),
        E::Char(p) => (header(EntryType::Char, 0o666), p, None, b""),
        E::Block(p) => (header(EntryType::Block, 0o660), p, None, b""),
        E::Fifo(p) => (header(EntryType::Fifo, 0o644), p, None, b""),
    };
    raw_field(&mut h.as_old_mut().name, path);
    if let Some(target) = link {
        raw_field(&mut h.as_old_mut().linkname, target);
    }
    h.set_size(data.len() as u64);
    h.set_cksum();
    builder.append(&h, data).expect("append");
}

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for &entry in entries {
        append(&mut builder, entry);
    }
    builder.into_inner().expect("finish tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// A rootfs with a sibling directory `outside` holding `secret`.
struct Fx {
    tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Fx {
    fn new() -> Self {
        Self::in_dir(tempfile::tempdir().expect("tempdir"))
    }

    fn in_dir(tmp: tempfile::TempDir) -> Self {
        let root = tmp.path().join("rootfs");
        let outside = tmp.path().join("outside");
        fs::create_dir(&root).expect("mkdir rootfs");
        fs::create_dir(&outside).expect("mkdir outside");
        fs::write(outside.join("secret"), "secret").expect("write secret");
        Self { tmp, root, outside }
    }

    fn apply(&self, entries: &[E<'_>]) -> Result<LayerStats, UnpackError> {
        apply_layer(&self.root, &layer(entries)[..], Compression::None)
    }

    fn outside_str(&self) -> String {
        self.outside.to_str().expect("utf-8 temp path").to_owned()
    }

    fn secret_str(&self) -> String {
        format!("{}/secret", self.outside_str())
    }

    fn tree(&self) -> Vec<String> {
        tree(&self.root)
    }

    /// Nothing outside the rootfs was created, changed, linked or removed.
    #[track_caller]
    fn assert_outside_untouched(&self) {
        assert_eq!(tree(&self.outside), ["secret"], "outside/ changed");
        let secret = self.outside.join("secret");
        assert_eq!(fs::read_to_string(&secret).expect("read secret"), "secret");
        assert_eq!(fs::symlink_metadata(&secret).expect("stat").nlink(), 1);
        let mut siblings: Vec<_> = fs::read_dir(self.tmp.path())
            .expect("list tmp")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        siblings.sort();
        assert_eq!(
            siblings,
            ["outside", "rootfs"],
            "something appeared beside the rootfs"
        );
    }
}

/// Every path under `dir`, relative, sorted; symlinks are not followed.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(base).expect("under base");
            out.push(rel.to_str().expect("utf-8").to_owned());
            if fs::symlink_metadata(&path).expect("lstat").is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("lstat").mode() & 0o7777
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).expect("read")
}

#[track_caller]
fn assert_escape(result: Result<LayerStats, UnpackError>, entry: &str) {
    match result {
        Err(UnpackError::Escape { ref path, .. }) if path == Path::new(entry) => {
            let message = result.unwrap_err().to_string();
            assert!(message.contains(entry), "{message}");
        }
        other => panic!("expected an escape for {entry:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid(result: Result<LayerStats, UnpackError>, entry: &str) {
    match result {
        Err(UnpackError::InvalidEntry { ref path, .. }) if path == Path::new(entry) => {}
        other => panic!("expected an invalid entry {entry:?}, got {other:?}"),
    }
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn files_dirs_symlinks_hardlinks_modes_times_owners() {
    let fx = Fx::new();
    let stats = fx
        .apply(&[
            E::Dir("etc/", 0o755),
            E::File("etc/hostname", b"berth\n"),
            E::FileMode("usr/bin/tool", b"#!/bin/sh\n", 0o4755),
            E::Symlink("bin", "usr/bin"),
            E::Hardlink("usr/bin/tool2", "usr/bin/tool"),
            E::File("./etc/./motd", b"hi"),
            E::Owned("srv/data", 1234, 5678),
            E::Dir("tmp/", 0o1777),
            E::Dir("locked/", 0o500),
            E::File("locked/inside", b"written before the mode"),
        ])
        .expect("apply");
    assert_eq!(
        fx.tree(),
        [
            "bin",
            "etc",
            "etc/hostname",
            "etc/motd",
            "locked",
            "locked/inside",
            "srv",
            "srv/data",
            "tmp",
            "usr",
            "usr/bin",
            "usr/bin/tool",
            "usr/bin/tool2"
        ]
    );
    let r = &fx.root;
    assert_eq!(read(&r.join("etc/hostname")), "berth\n");
    assert_eq!(read(&r.join("etc/motd")), "hi");
    assert_eq!(mode(&r.join("etc")), 0o755);
    assert_eq!(mode(&r.join("etc/hostname")), 0o644);
    assert_eq!(mode(&r.join("usr/bin/tool")), 0o4755);
    assert_eq!(mode(&r.join("tmp")), 0o1777);
    assert_eq!(mode(&r.join("locked")), 0o500);
    assert_eq!(mode(&r.join("usr")), 0o755, "implicit parents are 0755");
    assert_eq!(mode(&r.join("usr/bin")), 0o755);
    assert_eq!(
        fs::read_link(r.join("bin")).expect("readlink"),
        Path::new("usr/bin")
    );
    let tool = fs::metadata(r.join("usr/bin/tool")).expect("stat");
    let tool2 = fs::metadata(r.join("usr/bin/tool2")).expect("stat");
    assert_eq!((tool.ino(), tool.nlink()), (tool2.ino(), 2));
    for path in [
        "etc",
        "etc/hostname",
        "tmp",
        "locked",
        "bin",
        "usr/bin/tool",
    ] {
        let meta = fs::symlink_metadata(r.join(path)).expect("lstat");
        assert_eq!(meta.mtime(), MTIME as i64, "mtime of {path}");
    }
    if running_as_root() {
        let data = fs::metadata(r.join("srv/data")).expect("stat");
        assert_eq!((data.uid(), data.gid()), (1234, 5678));
    }
    assert_eq!(
        (
            stats.entries,
            stats.files,
            stats.dirs,
            stats.symlinks,
            stats.hardlinks
        ),
        (10, 5, 3, 1, 1)
    );
    assert_eq!(stats.bytes, 6 + 10 + 2 + 5 + 23);
}

#[test]
fn gzip_and_zstd_layers() {
    let plain = layer(&[
        E::Dir("d/", 0o750),
        E::File("d/a", b"alpha"),
        E::Symlink("l", "d/a"),
    ]);
    let gz = gzip(&plain);
    let zst = zstd::encode_all(&plain[..], 3).expect("zstd");
    assert_eq!(Compression::detect(&plain), Some(Compression::None));
    assert_eq!(Compression::detect(&gz), Some(Compression::Gzip));
    assert_eq!(Compression::detect(&zst), Some(Compression::Zstd));
    assert_eq!(Compression::detect(b""), None);
    assert_eq!(Compression::detect(&[0; 1024]), None);
    for (bytes, compression) in [
        (&plain, Compression::None),
        (&gz, Compression::Gzip),
        (&zst, Compression::Zstd),
    ] {
        let fx = Fx::new();
        let stats = apply_layer(&fx.root, &bytes[..], compression).expect("apply");
        assert_eq!(fx.tree(), ["d", "d/a", "l"], "{compression:?}");
        assert_eq!(read(&fx.root.join("d/a")), "alpha");
        assert_eq!(mode(&fx.root.join("d")), 0o750);
        assert_eq!(stats.files, 1);
    }
    // Wrong compression, and a gzip stream whose trailer (CRC) is corrupt.
    let fx = Fx::new();
    let err = apply_layer(&fx.root, &gz[..], Compression::None).unwrap_err();
    assert!(matches!(err, UnpackError::Read(_)), "{err:?}");
    let mut corrupt = gz.clone();
    let crc = corrupt.len() - 8;
    corrupt[crc] ^= 0xff;
    let fx = Fx::new();
    let err = apply_layer(&fx.root, &corrupt[..], Compression::Gzip).unwrap_err();
    assert!(matches!(err, UnpackError::Read(_)), "{err:?}");
}

#[test]
fn compression_from_media_type() {
    use Compression::{Gzip, None as Plain, Zstd};
    for (media_type, expected) in [
        ("application/vnd.oci.image.layer.v1.tar", Some(Plain)),
        ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            Some(Plain),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            Some(Gzip),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            Some(Zstd),
        ),
        ("application/vnd.docker.image.rootfs.diff.tar", Some(Plain)),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Some(Gzip),
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            Some(Gzip),
        ),
        (
            "Application/VND.OCI.image.layer.v1.tar+gzip; x=y",
            Some(Gzip),
        ),
        ("application/wasm", None),
        ("application/vnd.oci.image.config.v1+json", None),
        ("", None),
    ] {
        assert_eq!(
            Compression::from_media_type(media_type),
            expected,
            "{media_type}"
        );
    }
}

#[test]
fn whiteout_removes_a_lower_file_and_a_lower_tree() {
    let fx = Fx::new();
    let outside = fx.outside_str();
    fx.apply(&[
        E::File("a/keep", b"k"),
        E::File("a/gone", b"g"),
        E::File("tree/x/y/z", b"z"),
        E::Symlink("tree/x/out", &outside),
        E::Dir("tree/locked/", 0o000),
    ])
    .expect("lower");
    let stats = fx
        .apply(&[
            E::File("a/.wh.gone", b""),
            E::File(".wh.tree", b""),
            E::File(".wh.never-existed", b""),
            E::File("no/such/dir/.wh.x", b""),
        ])
        .expect("upper");
    assert_eq!(fx.tree(), ["a", "a/keep"]);
    assert_eq!(stats.whiteouts, 4);
    fx.assert_outside_untouched();
}

#[test]
fn whiteout_never_hides_what_its_own_layer_put_there() {
    let fx = Fx::new();
    fx.apply(&[
        E::File("f", b"lower"),
        E::File("g", b"lower"),
        E::File("d/old", b"lower"),
    ])
    .expect("lower");
    fx.apply(&[
        E::File("f", b"upper"),
        E::File(".wh.f", b""),
        E::File(".wh.g", b""),
        E::File("g", b"upper"),
        E::File("d/new", b"upper"),
        E::File(".wh.d", b""),
    ])
    .expect("upper");
    assert_eq!(fx.tree(), ["d", "d/new", "f", "g"]);
    assert_eq!(read(&fx.root.join("f")), "upper");
    assert_eq!(read(&fx.root.join("g")), "upper");
}

#[test]
fn opaque_dir_hides_lower_children_whatever_the_tar_order() {
    let fx = Fx::new();
    let outside = fx.outside_str();
    fx.apply(&[
        E::File("d/old", b"lower"),
        E::File("d/sub/old2", b"lower"),
        E::Symlink("d/link", &outside),
        E::File("other/keep", b"lower"),
        E::File("was-file", b"lower"),
    ])
    .expect("lower");
    let stats = fx
        .apply(&[
            E::File("d/new", b"before the marker"),
            E::File("d/sub/new3", b"before the marker"),
            E::File("d/.wh..wh..opq", b""),
            E::File("d/after", b"after the marker"),
            E::File("fresh/.wh..wh..opq", b""),
        ])
        .expect("upper");
    assert_eq!(
        fx.tree(),
        [
            "d",
            "d/after",
            "d/new",
            "d/sub",
            "d/sub/new3",
            "fresh",
            "other",
            "other/keep",
            "was-file"
        ]
    );
    assert_eq!(stats.opaque_dirs, 2);
    // The marker's directory is resolved like any entry's parent.
    assert_invalid(
        fx.apply(&[E::File("was-file/.wh..wh..opq", b"")]),
        "was-file/.wh..wh..opq",
    );
    fx.assert_outside_untouched();
}

#[test]
fn opaque_marker_at_the_root() {
    let fx = Fx::new();
    fx.apply(&[E::File("a", b""), E::File("b/c", b"")])
        .expect("lower");
    fx.apply(&[E::File("new", b""), E::File("./.wh..wh..opq", b"")])
        .expect("upper");
    assert_eq!(fx.tree(), ["new"]);
}

#[test]
fn dotdot_escape_is_refused() {
    let fx = Fx::new();
    for path in [
        "../outside/escape",
        "../escape",
        "a/../../outside/escape",
        "./../outside/escape",
        "a/b/../../../escape",
        "..",
    ] {
        assert_escape(fx.apply(&[E::File(path, b"pwned")]), path);
    }
    for path in ["../outside/dir/", "a/../../x/"] {
        assert_escape(fx.apply(&[E::Dir(path, 0o755)]), path);
    }
    assert_escape(fx.apply(&[E::Symlink("../link", "/")]), "../link");
    assert_eq!(fx.tree(), Vec::<String>::new());
    fx.assert_outside_untouched();
    // `..` that stays inside is resolved lexically.
    fx.apply(&[E::File("a/../inside", b"ok")]).expect("apply");
    assert_eq!(fx.tree(), ["inside"]);
}

#[test]
fn absolute_paths_are_contained() {
    let fx = Fx::new();
    let absolute = format!("{}/abs", fx.outside_str());
    fx.apply(&[E::File(&absolute, b"contained")])
        .expect("apply");
    let contained = fx.root.join(absolute.trim_start_matches('/'));
    assert_eq!(read(&contained), "contained");
    fx.assert_outside_untouched();
    fx.apply(&[E::File("/etc/x", b"x"), E::Dir("/", 0o755)])
        .expect("apply");
    assert_eq!(read(&fx.root.join("etc/x")), "x");
}

#[test]
fn writes_through_a_symlink_parent_are_refused() {
    let fx = Fx::new();
    let outside = fx.outside_str();
    fx.apply(&[E::File("file", b"in the rootfs")])
        .expect("setup");
    let link_out = E::Symlink("evil", &outside);
    let cases: Vec<(Vec<E<'_>>, &str)> = vec![
        (
            vec![link_out, E::File("evil/secret", b"pwned")],
            "evil/secret",
        ),
        (
            vec![link_out, E::File("evil/new/deeper", b"pwned")],
            "evil/new/deeper",
        ),
        (vec![link_out, E::Dir("evil/sub/", 0o755)], "evil/sub/"),
        (vec![link_out, E::Symlink("evil/s", "x")], "evil/s"),
        (vec![link_out, E::Hardlink("evil/h", "file")], "evil/h"),
        (vec![link_out, E::Fifo("evil/fifo")], "evil/fifo"),
        (vec![link_out, E::Char("evil/secret")], "evil/secret"),
        (
            vec![link_out, E::File("evil/.wh.secret", b"")],
            "evil/.wh.secret",
        ),
        (
            vec![link_out, E::File("evil/.wh..wh..opq", b"")],
            "evil/.wh..wh..opq",
        ),
        (
            vec![E::Symlink("up", "../../.."), E::File("up/x", b"pwned")],
            "up/x",
        ),
        (
            vec![
                E::Symlink("rel", "../outside"),
                E::File("rel/secret", b"pwned"),
            ],
            "rel/secret",
        ),
        // Even a symlink that stays inside the rootfs is never written through.
        (
            vec![E::Symlink("here", "."), E::File("here/x", b"x")],
            "here/x",
        ),
    ];
    for (entries, refused) in cases {
        assert_escape(fx.apply(&entries), refused);
        fx.assert_outside_untouched();
    }
    // The symlink from a lower layer, the write from an upper one.
    let fx = Fx::new();
    fx.apply(&[E::Symlink("etc", &outside)]).expect("lower");
    assert_escape(fx.apply(&[E::File("etc/secret", b"pwned")]), "etc/secret");
    fx.assert_outside_untouched();
}

#[test]
fn what_is_in_the_way_is_replaced_never_written_through() {
    let fx = Fx::new();
    let (outside, secret) = (fx.outside_str(), fx.secret_str());
    fx.apply(&[
        E::Symlink("f", &secret),
        E::Symlink("d", &outside),
        E::Symlink("h", &secret),
        E::FileMode("shadow", b"root only", 0o600),
    ])
    .expect("lower");
    fx.apply(&[
        E::File("f", b"new"),
        E::Dir("d/", 0o755),
        E::File("d/secret", b"new"),
        E::File("other", b"o"),
        E::Hardlink("h", "other"),
        // A hardlink to a file, then a file at the hardlink's path.
        E::Hardlink("alias", "shadow"),
        E::FileMode("alias", b"pwned", 0o666),
    ])
    .expect("upper");
    assert_eq!(
        fx.tree(),
        ["alias", "d", "d/secret", "f", "h", "other", "shadow"]
    );
    assert_eq!(read(&fx.root.join("shadow")), "root only");
    assert_eq!(mode(&fx.root.join("shadow")), 0o600);
    assert_eq!(read(&fx.root.join("alias")), "pwned");
    assert_eq!(read(&fx.root.join("f")), "new");
    assert!(
        fs::symlink_metadata(fx.root.join("d"))
            .expect("lstat")
            .is_dir()
    );
    assert_eq!(read(&fx.root.join("h")), "o");
    fx.assert_outside_untouched();
}

#[test]
fn hardlinks_outside_or_through_symlinks_are_refused() {
    let fx = Fx::new();
    let (outside, secret) = (fx.outside_str(), fx.secret_str());
    for target in [
        "../outside/secret",
        "../../outside/secret",
        "a/../../outside/secret",
    ] {
        assert_escape(fx.apply(&[E::Hardlink("h", target)]), "h");
    }
    assert_escape(
        fx.apply(&[
            E::Symlink("evil", &outside),
            E::Hardlink("h", "evil/secret"),
        ]),
        "h",
    );
    // An absolute target is inside the rootfs, where there is no such file.
    assert_invalid(fx.apply(&[E::Hardlink("h", &secret)]), "h");
    assert_invalid(fx.apply(&[E::Hardlink("h2", "missing")]), "h2");
    assert_invalid(
        fx.apply(&[E::Dir("dir/", 0o755), E::Hardlink("h3", "dir")]),
        "h3",
    );
    assert_invalid(fx.apply(&[E::Hardlink("h4", "/")]), "h4");
    fx.assert_outside_untouched();
    // A hardlink to a symlink links the symlink, not what it points to.
    fx.apply(&[E::Symlink("s", &secret), E::Hardlink("h5", "s")])
        .expect("apply");
    let h5 = fs::symlink_metadata(fx.root.join("h5")).expect("lstat");
    assert!(h5.file_type().is_symlink());
    assert_eq!(h5.nlink(), 2);
    fx.assert_outside_untouched();
}

#[test]
fn device_nodes_are_skipped_and_fifos_created() {
    let fx = Fx::new();
    fx.apply(&[E::File("dev/null", b"lower"), E::File("dev/sda", b"lower")])
        .expect("lower");
    let stats = fx
        .apply(&[
            E::Char("dev/null"),
            E::Block("dev/sda"),
            E::Char("dev/pts/0"),
            E::Fifo("run/fifo"),
        ])
        .expect("upper");
    assert_eq!(fx.tree(), ["dev", "run", "run/fifo"]);
    assert_eq!((stats.skipped, stats.fifos), (3, 1));
    let fifo = fs::symlink_metadata(fx.root.join("run/fifo")).expect("lstat");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o644);
}

#[test]
fn a_dir_becomes_a_file_and_a_file_a_dir() {
    let fx = Fx::new();
    let outside = fx.outside_str();
    fx.apply(&[
        E::Dir("x/", 0o755),
        E::File("x/child", b"c"),
        E::Symlink("x/link", &outside),
        E::Dir("x/sub/", 0o755),
        E::File("x/sub/deep", b"d"),
        E::File("y", b"file"),
        E::Symlink("z", "y"),
    ])
    .expect("lower");
    fx.apply(&[
        E::File("x", b"now a file"),
        E::Dir("y/", 0o700),
        E::File("y/inner", b"in"),
        E::Dir("z/", 0o755),
    ])
    .expect("upper");
    assert_eq!(fx.tree(), ["x", "y", "y/inner", "z"]);
    assert_eq!(read(&fx.root.join("x")), "now a file");
    assert_eq!(mode(&fx.root.join("y")), 0o700);
    assert!(
        fs::symlink_metadata(fx.root.join("z"))
            .expect("lstat")
            .is_dir()
    );
    fx.assert_outside_untouched();
}

#[test]
fn a_dir_onto_a_dir_updates_attributes_only() {
    let fx = Fx::new();
    fx.apply(&[E::Dir("d/", 0o755), E::File("d/f", b"lower")])
        .expect("lower");
    fx.apply(&[E::DirAt("d/", 0o710, MTIME + 100), E::File("d/g", b"upper")])
        .expect("upper");
    assert_eq!(fx.tree(), ["d", "d/f", "d/g"]);
    let d = fs::metadata(fx.root.join("d")).expect("stat");
    assert_eq!(d.mode() & 0o7777, 0o710);
    assert_eq!(
        d.mtime(),
        (MTIME + 100) as i64,
        "set after the layer's writes"
    );
    // `./` stands for the rootfs itself.
    fx.apply(&[E::DirAt("./", 0o750, MTIME)]).expect("root");
    assert_eq!(mode(&fx.root), 0o750);
    assert_invalid(fx.apply(&[E::File("./", b"")]), "./");
}

#[test]
fn malformed_whiteouts_are_refused_and_aufs_metadata_skipped() {
    let fx = Fx::new();
    for path in [".wh.", ".wh..", "a/.wh...", ".wh.dir/x"] {
        assert_invalid(fx.apply(&[E::File(path, b"")]), path);
    }
    let stats = fx
        .apply(&[
            E::File(".wh..wh.aufs", b""),
            E::Dir(".wh..wh.plnk/", 0o700),
            E::File(".wh..wh.plnk/123.456", b""),
        ])
        .expect("apply");
    assert_eq!(stats.skipped, 3);
    assert_eq!(fx.tree(), Vec::<String>::new());
}

#[test]
fn a_truncated_layer_is_an_error() {
    let fx = Fx::new();
    let mut bytes = layer(&[E::File("big", &[7; 4096])]);
    bytes.truncate(512 + 1000);
    let err = fx.apply_raw(&bytes).unwrap_err();
    assert!(
        matches!(err, UnpackError::Read(_) | UnpackError::Entry { .. }),
        "{err:?}"
    );
}

impl Fx {
    fn apply_raw(&self, bytes: &[u8]) -> Result<LayerStats, UnpackError> {
        apply_layer(&self.root, bytes, Compression::None)
    }
}

#[test]
fn long_names_and_pax_records() {
    let fx = Fx::new();
    let mut builder = tar::Builder::new(Vec::new());
    let long = format!("{}file", "dir/".repeat(40));
    let mut h = header(EntryType::Regular, 0o644);
    h.set_size(4);
    builder
        .append_data(&mut h, &long, &b"long"[..])
        .expect("long name");
    builder
        .append_pax_extensions([
            ("path", &b"pax/named"[..]),
            ("mtime", b"1600000000.5"),
            ("uid", b"4000000"),
            ("SCHILY.xattr.user.berth", b"yes"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ])
        .expect("pax");
    let mut h = header(EntryType::Regular, 0o600);
    raw_field(&mut h.as_old_mut().name, "ignored");
    h.set_size(3);
    h.set_cksum();
    builder.append(&h, &b"pax"[..]).expect("append");
    let bytes = builder.into_inner().expect("tar");
    fx.apply_raw(&bytes).expect("apply");
    assert_eq!(read(&fx.root.join(&long)), "long");
    let named = fx.root.join("pax/named");
    assert_eq!(read(&named), "pax");
    let meta = fs::metadata(&named).expect("stat");
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (MTIME as i64, 500_000_000)
    );
    if running_as_root() {
        assert_eq!(meta.uid(), 4_000_000);
    }
    let mut value = [0u8; 16];
    match rustix::fs::getxattr(&named, "user.berth", &mut value[..]) {
        Ok(n) => assert_eq!(&value[..n], b"yes"),
        Err(Errno::NOTSUP) => {} // the file system has no user xattrs
        Err(e) => panic!("getxattr: {e}"),
    }
    assert_eq!(
        rustix::fs::getxattr(&named, "trusted.overlay.opaque", &mut value[..]),
        Err(Errno::NODATA),
        "trusted.* xattrs are dropped"
    );
}

#[test]
fn unpack_image_is_atomic_and_idempotent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let blobs = tmp.path().join("blobs");
    let images = tmp.path().join("images");
    fs::create_dir(&blobs).expect("mkdir");
    let write = |name: &str, bytes: Vec<u8>| {
        let path = blobs.join(name);
        fs::write(&path, bytes).expect("write blob");
        path
    };
    let base = write(
        "base",
        gzip(&layer(&[
            E::Dir("etc/", 0o755),
            E::File("etc/a", b"a"),
            E::File("etc/gone", b"g"),
        ])),
    );
    let hostile = write("hostile", layer(&[E::File("../../x", b"pwned")]));
    let upper = write(
        "upper",
        zstd::encode_all(
            &layer(&[E::File("etc/.wh.gone", b""), E::File("etc/b", b"b")])[..],
            3,
        )
        .expect("zstd"),
    );
    let dest = images.join("sha256-0123");

    let err = unpack_image(
        &[
            (base.clone(), Compression::Gzip),
            (hostile.clone(), Compression::None),
        ],
        &dest,
        &UnpackLimits::default(),
    )
    .unwrap_err();
    match &err {
        UnpackError::Layer {
            index: 1,
            blob,
            source,
        } => {
            assert_eq!(blob, &hostile);
            assert!(matches!(**source, UnpackError::Escape { .. }), "{source:?}");
        }
        other => panic!("expected a layer error, got {other:?}"),
    }
    assert!(
        !dest.exists(),
        "a failed unpack must not leave its destination"
    );
    assert_eq!(
        tree(&images),
        Vec::<String>::new(),
        "no temporary directory left"
    );
    assert_eq!(
        tree(tmp.path()),
        [
            "blobs",
            "blobs/base",
            "blobs/hostile",
            "blobs/upper",
            "images"
        ]
    );

    // `base` is declared uncompressed: its gzip magic wins.
    unpack_image(
        &[(base, Compression::None), (upper, Compression::Zstd)],
        &dest,
        &UnpackLimits::default(),
    )
    .expect("unpack");
    assert_eq!(tree(&dest), ["etc", "etc/a", "etc/b"]);
    assert_eq!(mode(&dest), 0o755);
    assert_eq!(
        tree(&images),
        [
            "sha256-0123",
            "sha256-0123/etc",
            "sha256-0123/etc/a",
            "sha256-0123/etc/b"
        ]
    );

    // Unpacked once: the blobs are not even opened again.
    unpack_image(
        &[(blobs.join("absent"), Compression::Gzip)],
        &dest,
        &UnpackLimits::default(),
    )
    .expect("again");
    assert_eq!(tree(&dest), ["etc", "etc/a", "etc/b"]);
}

#[test]
fn error_messages_name_the_entry() {
    let fx = Fx::new();
    let err = fx.apply(&[E::File("../escape", b"")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"layer entry "../escape" escapes the rootfs: `..` leaves the rootfs"#
    );
    let err = fx
        .apply(&[E::Symlink("evil", "/etc"), E::File("evil/passwd", b"")])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"layer entry "evil/passwd" escapes the rootfs: "#.to_owned()
            + r#""evil" is a symlink, and nothing is ever written through one"#
    );
}

/// Runs `f` on a thread with a 256 KiB stack: a walk that recursed once per
/// directory level would overflow it on the trees below.
fn on_a_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no stack overflow")
}

/// A temporary directory, in memory (`/dev/shm`) when there is one: deep
/// trees are thousands of directory operations, slow on a busy disk.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("tempdir")
}

fn open_dir_at(parent: impl AsFd, name: &str) -> OwnedFd {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open directory")
}

#[test]
fn a_deep_tree_is_removed_without_recursion() {
    const DEPTH: usize = 5_000;
    let tmp = scratch_dir();
    let base = open_dir_at(rustix::fs::CWD, tmp.path().to_str().expect("utf-8"));
    rustix::fs::mkdirat(&base, "top", Mode::from_raw_mode(0o755)).expect("mkdir");
    // `top/d/d/…/d`, 5,000 levels (a path of 10,000 bytes, far beyond
    // PATH_MAX), made one level at a time; a file, a symlink and an empty
    // directory every 1,000 levels.
    let mut dir = open_dir_at(&base, "top");
    for level in 0..DEPTH {
        rustix::fs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).expect("mkdir");
        if level % 1_000 == 0 {
            let file = rustix::fs::openat(
                &dir,
                "f",
                OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .expect("create");
            drop(file);
            rustix::fs::symlinkat("/etc/passwd", &dir, "l").expect("symlink");
            rustix::fs::mkdirat(&dir, "e", Mode::from_raw_mode(0o700)).expect("mkdir");
        }
        dir = open_dir_at(&dir, "d");
    }
    drop(dir);
    on_a_small_stack(move || remove_all_at(base.as_fd(), std::ffi::OsStr::new("top")))
        .expect("remove the tree");
    assert_eq!(tree(tmp.path()), Vec::<String>::new());
}

#[test]
fn deep_trees_of_layers_are_hidden_and_whited_out() {
    // 1,500 levels: the paths stay below PATH_MAX for the checks here, and
    // are written as GNU long names.
    let deep = "d/".repeat(1_500);
    let long_layer = |entries: &[(String, &[u8])]| {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = header(EntryType::Regular, 0o644);
            h.set_size(data.len() as u64);
            builder.append_data(&mut h, path, *data).expect("append");
        }
        builder.into_inner().expect("finish tar")
    };
    let fx = Fx::in_dir(scratch_dir());
    let root = fx.root.clone();
    let lower = long_layer(&[(format!("{deep}lower"), b"1"), ("keep".into(), b"1")]);
    // Opaque root: the layer's own deep tree is descended, never removed, and
    // what the lower layer put at its bottom goes.
    let opaque = long_layer(&[(format!("{deep}upper"), b"2"), (".wh..wh..opq".into(), b"")]);
    let whiteout = long_layer(&[(".wh.d".into(), b"")]);
    // Deeper than the default `max_depth` (256): raised here, to show that
    // removal stays iterative whatever depth a limit lets through.
    let limits = UnpackLimits {
        max_depth: 2_000,
        ..UnpackLimits::default()
    };
    let apply = move |root: &Path, layer: &[u8]| {
        apply_layer_with_limits(root, layer, Compression::None, &limits)
    };
    let stats = on_a_small_stack(move || {
        apply(&root, &lower[..])?;
        let opaque = apply(&root, &opaque[..])?;
        let upper = root.join(format!("{deep}upper"));
        assert_eq!(read(&upper), "2");
        assert!(!root.join(format!("{deep}lower")).exists());
        assert!(!root.join("keep").exists());
        apply(&root, &whiteout[..]).map(|w| (opaque, w))
    })
    .expect("apply the layers");
    assert_eq!((stats.0.opaque_dirs, stats.1.whiteouts), (1, 1));
    assert_eq!(fx.tree(), Vec::<String>::new());
    fx.assert_outside_untouched();
}

#[test]
fn normalize_paths() {
    let ok = |raw: &str, expected: &str| {
        assert_eq!(
            normalize(raw.as_bytes()),
            Ok(PathBuf::from(expected)),
            "{raw}"
        );
    };
    ok("a/b", "a/b");
    ok("/a//b/", "a/b");
    ok("./a/./b/.", "a/b");
    ok("a/../b", "b");
    ok("./", "");
    ok("/", "");
    ok("a/..", "");
    assert_eq!(normalize(b"../a"), Err(BadPath::Escapes));
    assert_eq!(normalize(b"a/../../b"), Err(BadPath::Escapes));
    assert_eq!(normalize(b"/.."), Err(BadPath::Escapes));
    assert_eq!(normalize(b"a\0b"), Err(BadPath::Nul));
}

#[test]
fn pax_times() {
    let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
    assert_eq!(t("12"), Some((12, 0)));
    assert_eq!(t("1.5"), Some((1, 500_000_000)));
    assert_eq!(t("1.123456789999"), Some((1, 123_456_789)));
    assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
    assert_eq!(t("-3"), Some((-3, 0)));
    for bad in ["", ".5", "1.x", "x", "1e9", "+1"] {
        assert_eq!(t(bad), None, "{bad}");
    }
}
