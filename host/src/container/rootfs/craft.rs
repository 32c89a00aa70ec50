//! Test helpers: hostile tar archives written block by block (any header
//! size, any path, special headers of any size, GNU sparse maps of any
//! length), and a measure of the heap one call needs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::Path;

use tar::{EntryType, GnuExtSparseHeader, Header};

use super::Compression;

pub(super) const MTIME: u64 = 1_600_000_000;

/// A scratch directory, in memory (`/dev/shm`) when there is one: hostile
/// trees are many directory operations, slow on a busy disk.
pub(super) fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("tempdir")
}

/// An archive being written.
#[derive(Default)]
pub(super) struct Tar {
    pub(super) bytes: Vec<u8>,
}

fn pad(bytes: &mut Vec<u8>) {
    let rem = bytes.len() % 512;
    if rem != 0 {
        bytes.resize(bytes.len() + 512 - rem, 0);
    }
}

/// A GNU header of `kind` with `name` in its name field (cut to 99 bytes).
pub(super) fn header(kind: EntryType, name: &[u8], mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    let field = &mut h.as_old_mut().name;
    let n = name.len().min(field.len() - 1);
    field.fill(0);
    field[..n].copy_from_slice(&name[..n]);
    h.set_cksum();
    h
}

impl Tar {
    /// A header, then `data` padded to a block.
    pub(super) fn raw(&mut self, h: &Header, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(h.as_bytes());
        self.bytes.extend_from_slice(data);
        pad(&mut self.bytes);
        self
    }

    /// A GNU long name (`L`) or long link (`K`) holding `name`.
    pub(super) fn gnu_long(&mut self, kind: EntryType, name: &[u8]) -> &mut Self {
        let mut data = name.to_vec();
        data.push(0);
        let h = header(kind, b"././@LongLink", 0o644, data.len() as u64);
        self.raw(&h, &data)
    }

    /// A pax extended header (`x`) with these records.
    pub(super) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // "LEN KEY=VALUE\n", LEN counting itself.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let h = header(
            EntryType::XHeader,
            b"././@PaxHeader",
            0o644,
            data.len() as u64,
        );
        self.raw(&h, &data)
    }

    /// An entry with `path` (in the name field, or a GNU long name when it
    /// does not fit) and, for links, `link`.
    pub(super) fn entry(
        &mut self,
        kind: EntryType,
        path: &[u8],
        link: Option<&[u8]>,
        data: &[u8],
    ) -> &mut Self {
        if path.len() >= 100 {
            self.gnu_long(EntryType::GNULongName, path);
        }
        if let Some(link) = link.filter(|l| l.len() >= 100) {
            self.gnu_long(EntryType::GNULongLink, link);
        }
        let mode = if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        };
        let mut h = header(kind, path, mode, data.len() as u64);
        if let Some(link) = link {
            let field = &mut h.as_old_mut().linkname;
            let n = link.len().min(field.len() - 1);
            field.fill(0);
            field[..n].copy_from_slice(&link[..n]);
            h.set_cksum();
        }
        self.raw(&h, data)
    }

    /// A regular file.
    pub(super) fn file(&mut self, path: &[u8], data: &[u8]) -> &mut Self {
        self.entry(EntryType::Regular, path, None, data)
    }

    /// A GNU sparse file of `real_size` bytes holding no data, whose sparse
    /// map goes on for `ext_blocks` extension blocks.
    pub(super) fn sparse(&mut self, path: &[u8], real_size: u64, ext_blocks: usize) -> &mut Self {
        let mut h = header(EntryType::GNUSparse, path, 0o644, 0);
        if let Some(gnu) = h.as_gnu_mut() {
            gnu.set_real_size(real_size);
            gnu.set_is_extended(ext_blocks > 0);
        }
        h.set_cksum();
        self.bytes.extend_from_slice(h.as_bytes());
        for i in 0..ext_blocks {
            let mut ext = GnuExtSparseHeader::new();
            ext.set_is_extended(i + 1 < ext_blocks);
            self.bytes.extend_from_slice(ext.as_bytes());
        }
        self
    }

    /// Two blocks of zeros: the end of the archive.
    pub(super) fn end(&mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0; 1024]);
        std::mem::take(&mut self.bytes)
    }
}

/// `tar` compressed as `compression` says.
pub(super) fn compress(tar: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip");
            e.finish().expect("gzip")
        }
        Compression::Zstd => zstd::encode_all(tar, 1).expect("zstd"),
    }
}

/// The global allocator of the lib tests: the system's, counting the bytes
/// each thread holds and the most it held since [`heap_peak`] last started.
pub(super) struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // Const-initialized, without a destructor: never allocates, usable
    // while a thread is torn down.
    let held = HELD.with(|h| {
        let held = h.get() + delta;
        h.set(held);
        held
    });
    PEAK.with(|p| p.set(p.get().max(held)));
}

// A measure of memory that other tests running at the same time cannot
// blur (RSS is the process's): test builds only.
// SAFETY: every call is forwarded to `System` unchanged; the counting only
// touches thread-local cells.
#[expect(
    unsafe_code,
    reason = "a counting global allocator for the memory tests; see SAFETY"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `f` and returns what it returned with the most heap (Rust's
/// allocations, on this thread) it held on top of what was held before.
/// zstd's own (C) allocations are not seen.
pub(super) fn heap_peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = HELD.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, usize::try_from(peak - base).unwrap_or(0))
}
