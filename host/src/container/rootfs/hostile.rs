//! The limits, one hostile archive each: every one is refused with an error
//! naming the limit, in bounded memory, quoting the archive only in short
//! excerpts, and an image that fails leaves nothing behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::craft::{Tar, compress, header, heap_peak, scratch};
use super::*;

const MIB: usize = 1024 * 1024;

/// Every name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn apply_with(tar: &[u8], limits: UnpackLimits) -> Result<LayerStats, UnpackError> {
    let dir = scratch();
    apply_layer_with_limits(dir.path(), tar, Compression::None, &limits)
}

#[track_caller]
fn limit(result: Result<LayerStats, UnpackError>) -> LimitExceeded {
    match result {
        Err(UnpackError::Limit(limit)) => limit,
        other => panic!("expected a limit, got {other:?}"),
    }
}

#[test]
fn special_headers_over_the_cap_are_refused_before_they_are_read() {
    let name = vec![b'n'; 2 * MIB];
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "pax extended header",
            Tar::default().pax(&[("path", &name)]).file(b"f", b"").end(),
        ),
        (
            "GNU long name",
            Tar::default()
                .gnu_long(EntryType::GNULongName, &name)
                .file(b"f", b"")
                .end(),
        ),
        (
            "GNU long link",
            Tar::default()
                .gnu_long(EntryType::GNULongLink, &name)
                .entry(EntryType::Symlink, b"l", Some(b"t"), b"")
                .end(),
        ),
        ("pax global header", {
            let mut t = Tar::default();
            let h = header(EntryType::XGlobalHeader, b"g", 0o644, name.len() as u64);
            t.raw(&h, &name);
            t.end()
        }),
    ];
    for (kind, tar) in cases {
        let (result, peak) = heap_peak(|| apply_with(&tar, UnpackLimits::default()));
        let err = result.unwrap_err();
        let UnpackError::Limit(LimitExceeded::Header {
            kind: got,
            size,
            limit,
        }) = &err
        else {
            panic!("{kind}: expected the header limit, got {err:?}");
        };
        assert_eq!((*got, *limit), (kind, MIB as u64), "{err}");
        assert!(*size > MIB as u64, "{err}");
        assert!(err.to_string().contains("max_header_bytes"), "{err}");
        // The 2 MiB were never read into memory.
        assert!(peak < MIB, "{kind}: {peak} bytes of heap");
    }
}

#[test]
fn a_huge_name_is_refused_in_a_short_message() {
    // 1 MiB, the largest special header allowed, holding a path that is
    // refused by its length; the message quotes 200 characters of it.
    let mut name = b"\x1b[31m\t".to_vec();
    name.resize(MIB - 64, b'x');
    let tar = Tar::default().pax(&[("path", &name)]).file(b"f", b"").end();
    let err = apply_with(&tar, UnpackLimits::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            UnpackError::Limit(LimitExceeded::PathLength {
                what: "path",
                limit: 4096,
                ..
            })
        ),
        "{text}"
    );
    assert!(text.len() < 500, "{} bytes: {text}", text.len());
    assert!(
        text.starts_with(r#"the path of entry "\u{1b}[31m\txxx"#),
        "{text}"
    );
    assert!(text.contains(&format!("({} bytes)", name.len())), "{text}");

    // Under the limit, entry errors quote no more of it.
    let target = format!("{}/", "x".repeat(29)).repeat(100);
    let tar = Tar::default()
        .entry(EntryType::Link, b"l", Some(target.as_bytes()), b"")
        .end();
    let text = apply_with(&tar, UnpackLimits::default())
        .unwrap_err()
        .to_string();
    assert!(text.len() < 600, "{} bytes: {text}", text.len());
    assert!(text.contains("does not exist"), "{text}");
}

#[test]
fn paths_are_bounded_in_length_and_depth() {
    let limits = UnpackLimits::default();
    // At the limits: 4096 bytes, 256 components.
    let long = format!(
        "./{}/{}",
        vec!["x".repeat(255); 15].join("/"),
        "y".repeat(254)
    );
    assert_eq!(long.len(), 4096);
    let deep = format!("{}f", "a/".repeat(255));
    let ok = Tar::default()
        .file(long.as_bytes(), b"1")
        .file(deep.as_bytes(), b"2")
        .end();
    apply_with(&ok, limits).expect("at the limits");

    let longer = format!("{long}z");
    let err = limit(apply_with(
        &Tar::default().file(longer.as_bytes(), b"").end(),
        limits,
    ));
    assert!(
        matches!(
            err,
            LimitExceeded::PathLength {
                what: "path",
                len: 4097,
                limit: 4096,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("max_path_bytes"), "{err}");

    let deeper = format!("a/{deep}");
    let err = limit(apply_with(
        &Tar::default().file(deeper.as_bytes(), b"").end(),
        limits,
    ));
    assert!(
        matches!(
            err,
            LimitExceeded::Depth {
                what: "path",
                depth: 257,
                limit: 256,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("max_depth"), "{err}");

    let target = "t".repeat(4097);
    let err = limit(apply_with(
        &Tar::default()
            .entry(EntryType::Symlink, b"l", Some(target.as_bytes()), b"")
            .end(),
        limits,
    ));
    assert!(
        matches!(
            err,
            LimitExceeded::PathLength {
                what: "symlink target",
                ..
            }
        ),
        "{err}"
    );
    let err = limit(apply_with(
        &Tar::default()
            .entry(EntryType::Link, b"l", Some(deeper.as_bytes()), b"")
            .end(),
        limits,
    ));
    assert!(
        matches!(
            err,
            LimitExceeded::Depth {
                what: "hardlink target",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_deep_path_of_the_report_costs_nothing() {
    // The layer of issue 13: one path 256 KiB deep (131,072 components), in
    // a pax header. It once took the host past 7 GB; now it is refused at
    // its length, before anything is created.
    let path = "a/".repeat(128 * 1024);
    let tar = Tar::default()
        .pax(&[("path", path.as_bytes())])
        .file(b"x", b"deep")
        .end();
    let layer = zstd::encode_all(&tar[..], 19).expect("zstd");
    let dir = scratch();
    let (result, peak) = heap_peak(|| apply_layer(dir.path(), &layer[..], Compression::Zstd));
    let err = limit(result);
    assert!(matches!(err, LimitExceeded::PathLength { .. }), "{err}");
    assert!(peak < 4 * MIB, "{peak} bytes of heap");
    assert_eq!(names(dir.path()), Vec::<String>::new());
}

#[test]
fn a_deep_tree_is_recorded_once_per_component() {
    // 3,000 levels (a 6 KiB path), let through by raised limits: what the
    // layer records grows with the depth, not with its square (a set of the
    // path's ancestors held 3,000 paths of 3 KiB on average: 9 MB).
    let limits = UnpackLimits {
        max_path_bytes: 8 * 1024,
        max_depth: 4_000,
        ..UnpackLimits::default()
    };
    let deep = format!("{}f", "d/".repeat(3_000));
    let tar = Tar::default()
        .file(deep.as_bytes(), b"1")
        .file(format!("{}g", "d/".repeat(2_999)).as_bytes(), b"2")
        .entry(EntryType::Regular, b"d/.wh..wh..opq", None, b"")
        .end();
    let dir = scratch();
    let (stats, peak) =
        heap_peak(|| apply_layer_with_limits(dir.path(), &tar[..], Compression::None, &limits));
    let stats = stats.expect("apply");
    assert_eq!((stats.files, stats.opaque_dirs), (2, 1));
    assert!(peak < 2 * MIB, "{peak} bytes of heap");
}

#[test]
fn the_paths_a_layer_records_are_capped() {
    // Each entry implies nine directories of its own: 25 entries would
    // record 250 paths.
    let limits = UnpackLimits {
        max_entries: 100,
        ..UnpackLimits::default()
    };
    let mut tar = Tar::default();
    for i in 0..25 {
        tar.file(format!("{i}/a/b/c/d/e/f/g/h/file").as_bytes(), b"");
    }
    let err = limit(apply_with(&tar.end(), limits));
    assert_eq!(err, LimitExceeded::Paths { limit: 100 });
}

#[test]
fn a_repeated_marker_is_walked_once() {
    // A directory of this layer's own files, then the same opaque marker and
    // the same whiteout of that directory's parent 2,000 times each: each
    // would list the whole directory again.
    let mut t = Tar::default();
    for i in 0..500 {
        t.file(format!("top/d/{i}").as_bytes(), b"");
    }
    for _ in 0..2_000 {
        t.file(b"top/d/.wh..wh..opq", b"");
        t.file(b".wh.top", b"");
    }
    let tar = t.end();
    let dir = scratch();
    fs::create_dir_all(dir.path().join("top/d/lower")).expect("mkdir");
    let before = whiteout::WALKS.with(std::cell::Cell::get);
    let stats = apply_layer(dir.path(), &tar[..], Compression::None).expect("apply");
    let walks = whiteout::WALKS.with(std::cell::Cell::get) - before;
    assert_eq!((stats.opaque_dirs, stats.whiteouts), (2_000, 2_000));
    assert!(walks <= 2 * 500 + 2, "{walks} walks");
    assert!(!dir.path().join("top/d/lower").exists());
    assert_eq!(names(&dir.path().join("top/d")).len(), 500);
}

#[test]
fn sparse_maps_and_holes_are_bounded() {
    // A map of 3,000 extension blocks (1.5 MB): the `tar` crate would hold a
    // list entry for each of its records.
    let tar = Tar::default().sparse(b"s", 0, 3_000).end();
    let err = limit(apply_with(&tar, UnpackLimits::default()));
    assert!(
        matches!(
            err,
            LimitExceeded::Header {
                kind: "GNU sparse map",
                ..
            }
        ),
        "{err}"
    );
    // One TiB of holes would be written out as zeros.
    let tar = Tar::default().sparse(b"s", 1 << 40, 0).end();
    let err = limit(apply_with(&tar, UnpackLimits::default()));
    assert_eq!(err, LimitExceeded::Bytes { limit: 8 << 30 });
    assert!(err.to_string().contains("8.0 GiB"), "{err}");
}

#[test]
fn decompressed_bytes_are_counted_whatever_carries_them() {
    let limits = UnpackLimits {
        max_bytes: MIB as u64,
        ..UnpackLimits::default()
    };
    // A file that declares more than the image may hold is refused at its
    // header, before anything is written.
    let mut t = Tar::default();
    let mut h = header(EntryType::Regular, b"big", 0o644, 2 * MIB as u64);
    h.set_cksum();
    t.raw(&h, &[]);
    let dir = scratch();
    let err = apply_layer_with_limits(dir.path(), &t.end()[..], Compression::None, &limits);
    assert_eq!(limit(err), LimitExceeded::Bytes { limit: MIB as u64 });
    assert_eq!(names(dir.path()), Vec::<String>::new());

    // Many small files.
    let mut t = Tar::default();
    for i in 0..40 {
        t.file(format!("f{i}").as_bytes(), &[7; 32 * 1024]);
    }
    let bomb = compress(&t.end(), Compression::Gzip);
    let dir = scratch();
    let err = apply_layer_with_limits(dir.path(), &bomb[..], Compression::Gzip, &limits);
    assert_eq!(limit(err), LimitExceeded::Bytes { limit: MIB as u64 });

    // Zeros after the end of the archive, which are read to check the
    // compressed stream's end.
    let mut tar = Tar::default().file(b"f", b"small").end();
    tar.resize(4 * MIB, 0);
    let bomb = compress(&tar, Compression::Zstd);
    assert!(bomb.len() < 4096, "{}", bomb.len());
    let err = apply_with_compression(&bomb, Compression::Zstd, limits);
    assert_eq!(limit(err), LimitExceeded::Bytes { limit: MIB as u64 });
}

fn apply_with_compression(
    layer: &[u8],
    compression: Compression,
    limits: UnpackLimits,
) -> Result<LayerStats, UnpackError> {
    let dir = scratch();
    apply_layer_with_limits(dir.path(), layer, compression, &limits)
}

/// Writes each layer to `dir/blobs/N` as a plain tar.
fn blobs(dir: &Path, layers: &[Vec<u8>]) -> Vec<(PathBuf, Compression)> {
    let blobs = dir.join("blobs");
    fs::create_dir_all(&blobs).expect("mkdir");
    layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let path = blobs.join(i.to_string());
            fs::write(&path, layer).expect("write blob");
            (path, Compression::None)
        })
        .collect()
}

#[test]
fn the_limits_hold_for_the_whole_image_and_a_failure_leaves_nothing() {
    let tmp = scratch();
    let layer = |prefix: &str| {
        let mut t = Tar::default();
        // A read-only directory with content: removal must open it up.
        t.entry(
            EntryType::Directory,
            format!("{prefix}ro/").as_bytes(),
            None,
            b"",
        );
        for i in 0..3 {
            t.file(format!("{prefix}ro/{i}").as_bytes(), b"data");
        }
        let mut h = header(
            EntryType::Directory,
            format!("{prefix}ro/").as_bytes(),
            0o555,
            0,
        );
        h.set_cksum();
        t.raw(&h, &[]);
        t.end()
    };
    let layers = blobs(tmp.path(), &[layer("a"), layer("b")]);
    let images = tmp.path().join("rootfs");
    let dest = images.join("sha256-x");
    let limits = UnpackLimits {
        max_entries: 7,
        ..UnpackLimits::default()
    };
    // Five entries a layer: the second layer goes over.
    let err = unpack_image(&layers, &dest, &limits).unwrap_err();
    let UnpackError::Layer {
        index,
        blob,
        source,
    } = &err
    else {
        panic!("expected a layer error, got {err:?}");
    };
    assert_eq!((*index, blob), (1, &layers[1].0));
    assert!(
        matches!(
            **source,
            UnpackError::Limit(LimitExceeded::Entries { limit: 7 })
        ),
        "{source:?}"
    );
    let text = format!("{err}: {source}");
    assert!(
        text.contains("layer 1 (") && text.contains("max_entries"),
        "{text}"
    );
    assert_eq!(names(&images), Vec::<String>::new(), "nothing left behind");

    let lease = unpack_image(&layers, &dest, &UnpackLimits::default()).expect("unpack");
    assert_eq!(lease.path(), dest);
    assert_eq!(names(&dest), ["aro", "bro"]);
    assert_eq!(
        fs::metadata(dest.join("aro"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o555
    );
}

#[test]
fn the_guard_follows_the_archive_as_the_tar_crate_does() {
    // A pax `size` overriding the header's, long names and links, a global
    // header, a sparse file with an extended map, a file after them all: the
    // guard counts every entry the crate yields, so it never lost its place.
    let mut t = Tar::default();
    t.pax(&[("size", b"5"), ("mtime", b"1600000000.5")]);
    let h = header(EntryType::Regular, b"sized", 0o644, 0);
    t.raw(&h, b"12345");
    let long = format!("{}/file", "l".repeat(150));
    t.file(long.as_bytes(), b"long");
    t.entry(
        EntryType::Symlink,
        b"link",
        Some("t".repeat(150).as_bytes()),
        b"",
    );
    t.pax(&[("path", b"pax/named"), ("linkpath", b"sized")])
        .entry(EntryType::Link, b"ignored", Some(b"ignored"), b"");
    let g = header(EntryType::XGlobalHeader, b"g", 0o644, 9);
    t.raw(&g, b"9 a=bcd\n\n");
    t.sparse(b"sparse", 0, 3);
    t.file(b"last", b"end");
    let tar = t.end();
    let dir = scratch();
    let tally = Tally::new(UnpackLimits::default());
    let stats = apply_counted(dir.path(), &tar[..], Compression::None, &tally).expect("apply");
    assert_eq!(stats.entries, 7);
    assert_eq!(tally.entries(), 7);
    assert_eq!(fs::read(dir.path().join("sized")).expect("read"), b"12345");
    assert_eq!(fs::read(dir.path().join("last")).expect("read"), b"end");
    assert_eq!(
        fs::read(dir.path().join("pax/named")).expect("read"),
        b"12345"
    );
    assert_eq!(tally.bytes(), tar.len() as u64);
}

#[test]
fn excerpts_are_short_and_escaped() {
    assert_eq!(excerpt(b"plain"), r#""plain""#);
    assert_eq!(excerpt(b"a\nb\"c\x1b"), r#""a\nb\"c\u{1b}""#);
    let long = "é".repeat(300);
    let e = excerpt(long.as_bytes());
    assert_eq!(e, format!("\"{}\"… (600 bytes)", "é".repeat(EXCERPT_CHARS)));
    assert_eq!(excerpt(&[0xff, b'a']), "\"\u{fffd}a\"");
}

#[test]
fn garbage_collection_removes_only_what_no_one_holds() {
    let tmp = scratch();
    let dir = tmp.path().join("rootfs");
    let hex = |c: char| c.to_string().repeat(64);
    let layers = blobs(tmp.path(), &[Tar::default().file(b"f", b"x").end()]);
    let unpack = |name: &str| {
        unpack_image(&layers, &dir.join(name), &UnpackLimits::default()).expect("unpack")
    };
    drop(unpack(&hex('a'))); // in use, say the caller
    drop(unpack(&hex('b'))); // unused
    let held = unpack(&hex('c')); // unused, but a deploy holds it
    // A leftover of a crashed unpack, with a locked-out directory in it.
    let leftover = dir.join(format!("{}.tmp-crashed", hex('d')));
    fs::create_dir_all(leftover.join("sub/closed")).expect("mkdir");
    fs::set_permissions(leftover.join("sub"), fs::Permissions::from_mode(0o000)).expect("chmod");
    // An unpack in progress.
    let running = lease::TempTree::create(&dir, std::ffi::OsStr::new("e.tmp-")).expect("temp");
    fs::create_dir(dir.join("not-a-digest")).expect("mkdir");

    let in_use = |name: &str| name == hex('a');
    let collected = collect_garbage(&dir, in_use).expect("collect");
    assert_eq!(collected, Collected { rootfs: 1, temp: 1 });
    let mut expected = vec![
        hex('a'),
        hex('c'),
        running
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned(),
        "not-a-digest".to_owned(),
    ];
    expected.sort();
    assert_eq!(names(&dir), expected);

    drop(held);
    drop(running);
    let collected = collect_garbage(&dir, in_use).expect("collect");
    assert_eq!(collected, Collected { rootfs: 1, temp: 0 });
    assert_eq!(names(&dir), [hex('a'), "not-a-digest".to_owned()]);
    assert_eq!(
        collect_garbage(&tmp.path().join("absent"), in_use).expect("collect"),
        Collected::default()
    );
}

#[test]
fn an_unpack_told_to_stop_ends_with_stopped_and_leaves_nothing() {
    let tmp = scratch();
    let mut t = Tar::default();
    for i in 0..100 {
        t.file(format!("f{i}").as_bytes(), b"data");
    }
    let layers = blobs(tmp.path(), &[t.end()]);
    let images = tmp.path().join("rootfs");
    let dest = images.join("sha256-x");
    let stop = CancellationToken::new();
    stop.cancel();
    let err = unpack_image_until(&layers, &dest, &UnpackLimits::default(), &stop).unwrap_err();
    assert!(matches!(err, UnpackError::Stopped), "{err:?}");
    assert!(err.to_string().contains("stopped"), "{err}");
    assert_eq!(names(&images), Vec::<String>::new(), "nothing left behind");

    // Not told to stop: the same layers unpack.
    let lease = unpack_image_until(
        &layers,
        &dest,
        &UnpackLimits::default(),
        &CancellationToken::new(),
    )
    .expect("unpack");
    assert_eq!(names(lease.path()).len(), 100);
}
