//! A property harness (proptest) that feeds random hostile images to
//! [`unpack_image`]: one to three layers, plain, gzip or zstd (sometimes
//! mislabelled), each a mix of files, directories, symlinks and hardlinks
//! (to inside, to `..`, to the absolute path of a directory next to the
//! rootfs), FIFOs, device nodes, unknown entry types, whiteouts, opaque
//! markers and aufs metadata, duplicate paths, `..`, `.`, empty and absolute
//! components, names around `NAME_MAX`, paths thousands of components deep;
//! written with plain, GNU long-name and pax path records, pax headers padded
//! around and far beyond the header limit, lying pax `size` records, pax
//! global headers, GNU sparse files with long maps and huge holes, garbage
//! blocks, dangling long names, and archives cut short. Small limits make
//! every cap trip often.
//!
//! For every image it checks:
//! - nothing panics;
//! - nothing outside the destination changed: a sandbox holding the blobs, a
//!   sentinel directory beside the rootfs (with a file that symlinks and
//!   hardlinks aim at) and a sibling of the destination is compared, entry
//!   by entry (type, mode, size, contents, link count, symlink target),
//!   before and after;
//! - a failed unpack leaves nothing (no destination, no temporary directory),
//!   a finished one leaves the destination and no device node in it;
//! - the heap the unpack held stays under a bound that follows from the
//!   limits (the special-header cap, the copy buffers), whatever the archive
//!   holds;
//! - error messages stay short and free of control characters, whatever
//!   names the archive holds.
//!
//! `cargo test` runs [`DEFAULT_CASES`] images (a few seconds). Run more by
//! hand, e.g. (some minutes; `--release` halves it once built):
//!
//! ```text
//! BERTH_FUZZ_CASES=100000 cargo test -p berth --lib container::rootfs::fuzz
//! ```
//!
//! A failure prints the shrunk input (layers and their entries) to replay.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sha2::Digest as _;
use tar::EntryType;

use super::craft::{Tar, compress, header, heap_peak, scratch};
use super::*;

/// Images tried by `cargo test`; `BERTH_FUZZ_CASES` overrides it.
pub(super) const DEFAULT_CASES: u32 = 1024;

/// Stands for the absolute path of the sentinel directory beside the rootfs.
const OUTSIDE: &str = "@OUT";

/// Small limits, so that every cap is reached often. Each image also runs
/// with [`LIMITS`] or with large `max_bytes` and `max_entries`, so that a
/// cap that failed would not hide behind another.
const LIMITS: UnpackLimits = UnpackLimits {
    max_header_bytes: 64 * 1024,
    max_path_bytes: 4096,
    max_depth: 64,
    max_entries: 48,
    max_bytes: 512 * 1024,
};

/// [`LIMITS`], with `max_bytes` and `max_entries` raised as `loose` says.
fn limits((loose_bytes, loose_entries): (bool, bool)) -> UnpackLimits {
    UnpackLimits {
        max_bytes: if loose_bytes {
            64 << 20
        } else {
            LIMITS.max_bytes
        },
        max_entries: if loose_entries {
            1_000_000
        } else {
            LIMITS.max_entries
        },
        ..LIMITS
    }
}

/// The heap an unpack may hold under [`LIMITS`] (loosened or not): the two copy buffers
/// (128 KiB each), a special header three times over (the guard's copy, the
/// `tar` crate's, the entry's path) and room for the rest (decoders, the
/// trie, directory listings). The code before the limits held 3 MiB for one
/// oversized pax header below, and megabytes for one deep path.
const HEAP_BOUND: usize = 2 * 1024 * 1024;

/// Directory components, hostile ones among them.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => prop::sample::select(vec!["a", "b", "c", "dir", "etc"]).prop_map(str::to_owned),
        1 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just(String::new()),
        1 => prop::sample::select(vec![".wh.a", ".wh..wh.plnk"]).prop_map(str::to_owned),
        1 => (250usize..260).prop_map(|n| "n".repeat(n)),
    ]
}

/// Last components: names, whiteouts, opaque markers, aufs metadata.
fn last_component() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => prop::sample::select(vec!["a", "b", "c", "dir", "etc", "f", "g"]).prop_map(str::to_owned),
        4 => prop::sample::select(vec![".wh.a", ".wh.b", ".wh.dir", ".wh.etc", ".wh.f"])
            .prop_map(str::to_owned),
        2 => Just(".wh..wh..opq".to_owned()),
        1 => prop::sample::select(vec![".wh..wh.plnk", ".wh.", ".wh..", ".", ".."]).prop_map(str::to_owned),
    ]
}

/// Entry paths and link targets.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => (
            prop::bool::weighted(0.2),
            prop::collection::vec(component(), 0..4),
            last_component(),
        )
            .prop_map(|(absolute, mut parts, last)| {
                parts.push(last);
                format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"))
            }),
        1 => (1usize..3_000).prop_map(|n| format!("{}x", "d/".repeat(n))),
        1 => Just(format!("{OUTSIDE}/secret")),
        1 => prop::collection::vec(component(), 0..4)
            .prop_map(|parts| format!("{OUTSIDE}/{}", parts.join("/"))),
        1 => Just("../../outside/secret".to_owned()),
    ]
}

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Dir(u32),
    Symlink(String),
    Hardlink(String),
    Fifo,
    Char,
    Block,
    Unknown(u8),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        24 => prop::collection::vec(any::<u8>(), 0..2_000).prop_map(Kind::File),
        2 => (0usize..200_000).prop_map(|n| Kind::File(vec![b'z'; n])),
        16 => prop::sample::select(vec![0o755, 0o700, 0o555, 0o000, 0o7777]).prop_map(Kind::Dir),
        8 => prop_oneof![
            path(),
            prop::sample::select(vec!["a", "dir", "/etc", "..", "/", OUTSIDE]).prop_map(str::to_owned),
        ]
        .prop_map(Kind::Symlink),
        8 => prop_oneof![
            3 => prop::sample::select(vec!["a", "b", "f", "g", "dir/f", "a/b", "etc/f", "/a"])
                .prop_map(str::to_owned),
            1 => path(),
        ]
        .prop_map(Kind::Hardlink),
        2 => Just(Kind::Fifo),
        2 => Just(Kind::Char),
        2 => Just(Kind::Block),
        1 => prop::sample::select(vec![b'V', b'M', b'N', b'7', b'?']).prop_map(Kind::Unknown),
    ]
}

/// How the path is written.
#[derive(Debug, Clone, Copy)]
enum Naming {
    Header,
    GnuLong,
    Pax,
}

/// Sizes of pax padding records: none, small, around the cap, far beyond.
fn padding() -> impl Strategy<Value = usize> {
    prop_oneof![
        60 => Just(0usize),
        8 => 1usize..1_000,
        2 => (LIMITS.max_header_bytes as usize - 100)..(LIMITS.max_header_bytes as usize + 100),
        1 => Just(3 * 1024 * 1024),
    ]
}

#[derive(Debug, Clone)]
enum Item {
    Entry {
        path: String,
        kind: Kind,
        naming: Naming,
        padding: usize,
        lying_size: Option<u64>,
        mode: u32,
    },
    Global(usize),
    DanglingLongName(String),
    Sparse {
        real_size: u64,
        ext_blocks: usize,
    },
    Garbage(Vec<u8>),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        60 => (
            path(),
            kind(),
            prop::sample::select(vec![Naming::Header, Naming::GnuLong, Naming::Pax]),
            padding(),
            prop::option::weighted(0.01, 0u64..5_000),
            prop::sample::select(vec![0o644, 0o600, 0o4755, 0o000, 0o777]),
        )
            .prop_map(|(path, kind, naming, padding, lying_size, mode)| Item::Entry {
                path,
                kind,
                naming,
                padding,
                lying_size,
                mode
            }),
        1 => padding().prop_map(Item::Global),
        1 => path().prop_map(Item::DanglingLongName),
        1 => (
            prop_oneof![Just(0u64), 1u64..10_000, Just(1u64 << 40)],
            prop_oneof![Just(0usize), 1usize..4, 100usize..200],
        )
            .prop_map(|(real_size, ext_blocks)| Item::Sparse {
                real_size,
                ext_blocks
            }),
        1 => prop::collection::vec(any::<u8>(), 512..=512).prop_map(Item::Garbage),
    ]
}

/// Entries that mostly apply: paths inside the rootfs (whiteouts and opaque
/// markers among them), links to likely names, no oversized header; so
/// that layers stack up and whiteouts, opaque markers and replacements meet
/// what lower layers put there.
fn tame_item() -> impl Strategy<Value = Item> {
    let path = (
        prop::bool::weighted(0.2),
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "c", "dir", "etc"]),
            0..3,
        ),
        prop_oneof![
            16 => prop::sample::select(vec!["a", "b", "c", "dir", "etc", "f", "g"]),
            4 => prop::sample::select(vec![".wh.a", ".wh.b", ".wh.dir", ".wh.etc", ".wh.f"]),
            2 => Just(".wh..wh..opq"),
        ],
    )
        .prop_map(|(absolute, mut parts, last)| {
            parts.push(last);
            format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"))
        });
    let names = vec!["a", "b", "f", "g", "dir/f", "a/b", "etc/f", "/a"];
    let kind = prop_oneof![
        12 => prop::collection::vec(any::<u8>(), 0..2_000).prop_map(Kind::File),
        8 => prop::sample::select(vec![0o755, 0o700, 0o555, 0o7777]).prop_map(Kind::Dir),
        3 => prop::sample::select(vec!["a", "dir", "/etc", "..", OUTSIDE])
            .prop_map(|t| Kind::Symlink(t.to_owned())),
        3 => prop::sample::select(names).prop_map(|t| Kind::Hardlink(t.to_owned())),
        1 => Just(Kind::Fifo),
        1 => Just(Kind::Char),
    ];
    (
        path,
        kind,
        prop::sample::select(vec![Naming::Header, Naming::GnuLong, Naming::Pax]),
        prop::sample::select(vec![0usize, 0, 0, 100]),
        prop::sample::select(vec![0o644, 0o600, 0o4755, 0o777]),
    )
        .prop_map(|(path, kind, naming, padding, mode)| Item::Entry {
            path,
            kind,
            naming,
            padding,
            lying_size: None,
            mode,
        })
}

#[derive(Debug, Clone)]
struct Layer {
    items: Vec<Item>,
    compression: Compression,
    declared: Compression,
    /// Cut the archive at this fraction of its length (per mille).
    cut: Option<u16>,
}

fn compression() -> impl Strategy<Value = Compression> {
    prop::sample::select(vec![
        Compression::None,
        Compression::Gzip,
        Compression::Zstd,
    ])
}

fn layer(tame: bool) -> impl Strategy<Value = Layer> {
    let items = if tame {
        prop::collection::vec(tame_item().boxed(), 0..10).boxed()
    } else {
        prop::collection::vec(item().boxed(), 0..14).boxed()
    };
    let cut = if tame { 0.001 } else { 0.05 };
    (
        items,
        compression(),
        prop_oneof![4 => Just(None), 1 => compression().prop_map(Some)],
        prop::option::weighted(cut, 0u16..1_000),
    )
        .prop_map(|(items, compression, declared, cut)| Layer {
            items,
            compression,
            declared: declared.unwrap_or(compression),
            cut,
        })
}

/// `s` with [`OUTSIDE`] replaced by the sentinel directory's path.
fn resolve(s: &str, outside: &str) -> Vec<u8> {
    s.replace(OUTSIDE, outside).into_bytes()
}

fn pax_records(
    path: Option<&[u8]>,
    padding: usize,
    size: Option<u64>,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut records = Vec::new();
    if let Some(path) = path {
        records.push(("path", path.to_vec()));
    }
    if padding > 0 {
        records.push(("comment", vec![b'p'; padding]));
    }
    if let Some(size) = size {
        records.push(("size", size.to_string().into_bytes()));
    }
    records
}

fn write_layer(layer: &Layer, outside: &str) -> Vec<u8> {
    let mut t = Tar::default();
    for item in &layer.items {
        match item {
            Item::Entry {
                path,
                kind,
                naming,
                padding,
                lying_size,
                mode,
            } => {
                let path = resolve(path, outside);
                let (entry_type, link, data): (EntryType, Option<Vec<u8>>, &[u8]) = match kind {
                    Kind::File(data) => (EntryType::Regular, None, data),
                    Kind::Dir(_) => (EntryType::Directory, None, b""),
                    Kind::Symlink(target) => {
                        (EntryType::Symlink, Some(resolve(target, outside)), b"")
                    }
                    Kind::Hardlink(target) => {
                        (EntryType::Link, Some(resolve(target, outside)), b"")
                    }
                    Kind::Fifo => (EntryType::Fifo, None, b""),
                    Kind::Char => (EntryType::Char, None, b""),
                    Kind::Block => (EntryType::Block, None, b""),
                    Kind::Unknown(b) => (EntryType::new(*b), None, b""),
                };
                let pax_path = matches!(naming, Naming::Pax).then_some(&path[..]);
                let records = pax_records(pax_path, *padding, *lying_size);
                if !records.is_empty() {
                    let refs: Vec<(&str, &[u8])> =
                        records.iter().map(|(k, v)| (*k, &v[..])).collect();
                    t.pax(&refs);
                }
                if matches!(naming, Naming::GnuLong) {
                    t.gnu_long(EntryType::GNULongName, &path);
                }
                if let Some(link) = link.as_ref().filter(|l| l.len() >= 100) {
                    t.gnu_long(EntryType::GNULongLink, link);
                }
                let mode = if let Kind::Dir(dir_mode) = kind {
                    *dir_mode
                } else {
                    *mode
                };
                let mut h = header(entry_type, &path, mode, data.len() as u64);
                if let Some(link) = &link {
                    let field = &mut h.as_old_mut().linkname;
                    let n = link.len().min(field.len() - 1);
                    field.fill(0);
                    field[..n].copy_from_slice(&link[..n]);
                    h.set_cksum();
                }
                t.raw(&h, data);
            }
            Item::Global(size) => {
                let data = vec![b'g'; *size];
                let h = header(EntryType::XGlobalHeader, b"g", 0o644, data.len() as u64);
                t.raw(&h, &data);
            }
            Item::DanglingLongName(path) => {
                t.gnu_long(EntryType::GNULongName, &resolve(path, outside));
            }
            Item::Sparse {
                real_size,
                ext_blocks,
            } => {
                t.sparse(b"sparse", *real_size, *ext_blocks);
            }
            Item::Garbage(bytes) => t.bytes.extend_from_slice(bytes),
        }
    }
    let mut tar = t.end();
    if let Some(cut) = layer.cut {
        tar.truncate(tar.len() * usize::from(cut) / 1000);
    }
    compress(&tar, layer.compression)
}

/// What a tree holds, entry by entry: type, mode, contents or target,
/// links. Directory times and link counts are left out (creating and
/// removing temporary directories changes them).
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path == skip {
                continue;
            }
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let kind = meta.file_type();
            // A directory's link count follows its subdirectories: the
            // destination's parent gains one.
            let what = if kind.is_dir() {
                todo.push(path.clone());
                format!("dir mode {:o} uid {}", meta.mode(), meta.uid())
            } else if kind.is_symlink() {
                format!("symlink to {:?}", fs::read_link(&path).expect("readlink"))
            } else if kind.is_file() {
                let data = fs::read(&path).expect("read");
                format!(
                    "file {:x?} mtime {}",
                    sha2::Sha256::digest(&data),
                    meta.mtime()
                )
            } else {
                format!("{kind:?}")
            };
            let what = if kind.is_dir() {
                what
            } else {
                format!(
                    "{what} mode {:o} nlink {} uid {}",
                    meta.mode(),
                    meta.nlink(),
                    meta.uid()
                )
            };
            out.insert(
                path.strip_prefix(root).expect("under root").to_owned(),
                what,
            );
        }
    }
    out
}

/// Device nodes under `root`.
fn devices(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let kind = fs::symlink_metadata(&path).expect("lstat").file_type();
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_block_device() || kind.is_char_device() {
                found.push(path);
            }
        }
    }
    found
}

/// The whole chain of an error, as a log line would show it.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn check_image(layers: &[Layer], limits: UnpackLimits) -> Result<(), TestCaseError> {
    let sandbox = scratch();
    let top = sandbox.path();
    let outside = top.join("outside");
    fs::create_dir_all(outside.join("dir")).expect("mkdir");
    fs::write(outside.join("secret"), "secret").expect("write");
    let images = top.join("images");
    fs::create_dir_all(images.join("sibling")).expect("mkdir");
    fs::write(images.join("sibling/keep"), "keep").expect("write");
    let outside_str = outside.to_str().expect("utf-8").to_owned();
    let blobs: Vec<(PathBuf, Compression)> = layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let path = top.join(format!("blob{i}"));
            fs::write(&path, write_layer(layer, &outside_str)).expect("write blob");
            (path, layer.declared)
        })
        .collect();
    let dest = images.join("0".repeat(64));
    let before = snapshot(top, &dest);

    let (result, peak) = heap_peak(|| unpack_image(&blobs, &dest, &limits));

    prop_assert!(peak <= HEAP_BOUND, "the unpack held {peak} bytes of heap");
    let after = snapshot(top, &dest);
    prop_assert_eq!(&before, &after, "something outside the destination changed");
    let mut left: Vec<_> = fs::read_dir(&images)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    left.sort();
    match result {
        Ok(lease) => {
            prop_assert_eq!(lease.path(), dest.as_path());
            prop_assert_eq!(left, vec!["0".repeat(64), "sibling".to_owned()]);
            prop_assert_eq!(devices(&dest), Vec::<PathBuf>::new());
        }
        Err(err) => {
            prop_assert!(!dest.exists(), "a failed unpack left its destination");
            prop_assert_eq!(
                left,
                vec!["sibling".to_owned()],
                "a failed unpack left something"
            );
            let text = chain(&err);
            prop_assert!(
                text.len() < 2_000,
                "{} bytes of error: {}",
                text.len(),
                text
            );
            prop_assert!(
                !text.chars().any(char::is_control),
                "an unescaped control character in: {:?}",
                text
            );
        }
    }
    Ok(())
}

#[test]
fn hostile_images_never_escape_leak_or_grow() {
    let cases = std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let config = Config {
        cases,
        // No regression files in the source tree; a failure prints its input.
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    // Half the images tame, so that layers stack up; half hostile.
    let images = prop_oneof![
        prop::collection::vec(layer(true), 1..=3),
        prop::collection::vec(layer(false), 1..=3),
    ];
    let result = runner.run(&(images, any::<(bool, bool)>()), |(layers, loose)| {
        check_image(&layers, limits(loose))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
