//! What one image may cost: [`UnpackLimits`], an image's running totals
//! ([`Tally`]), and [`TarGuard`], which reads the decompressed tar stream
//! ahead of the `tar` crate and stops it before it goes over a limit.
//!
//! # Why a guard in front of the `tar` crate
//! tar 0.4 reads a pax extended header, a GNU long name or long link whole
//! into memory (`EntryFields::read_all`), whatever size its header claims,
//! and grows a list for every block of a GNU sparse map. So the sizes have to
//! be checked before the crate sees them. [`TarGuard`] follows the archive's
//! framing exactly as tar 0.4 does (a 512-byte header; data padded to 512;
//! GNU sparse extension blocks after a sparse header; a pax `size` record
//! overriding the size of the next entry header; the end at the first block
//! of zeros) and looks at each header before handing it on:
//! - a pax header (`x`, `g`), GNU long name (`L`) or long link (`K`) larger
//!   than [`UnpackLimits::max_header_bytes`], or a GNU sparse map longer than
//!   that, is refused before one byte of it is read;
//! - each entry counts towards [`UnpackLimits::max_entries`];
//! - every byte that comes out of the decompressor counts towards
//!   [`UnpackLimits::max_bytes`] (headers, data, what follows the end of the
//!   archive), and so do the holes a sparse file expands to; an entry whose
//!   declared size would go over is refused at its header.
//!
//! A refusal is recorded in the [`Tally`] and returned as an I/O error, which
//! the `tar` crate passes up; `apply_tar` turns any error after a refusal into
//! [`UnpackError::Limit`](super::UnpackError::Limit). Should the guard ever
//! disagree with the crate about where a header is, the block it takes for a
//! header fails the checksum, and it stops inspecting but goes on counting
//! bytes, while the crate refuses the archive at that point too.
//!
//! Texts that quote an archive (paths, names) quote it through [`excerpt`]:
//! at most [`EXCERPT_CHARS`] characters, escaped.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use tokio_util::sync::CancellationToken;

use tar::{EntryType, Header};

/// Characters of a hostile name quoted in an error or a log line.
pub const EXCERPT_CHARS: usize = 200;

const BLOCK: usize = 512;

/// Caps on unpacking one image ([`unpack_image`](super::unpack_image)) or one
/// layer ([`apply_layer`](super::apply_layer)).
///
/// The defaults let every real image through and keep one hostile image to a
/// few GiB of disk and well under 1 GiB of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// The largest pax extended header, GNU long name or long link, or GNU
    /// sparse map, in bytes. Default 1 MiB (Go's `archive/tar` allows the
    /// same for its special headers).
    pub max_header_bytes: u64,
    /// The longest entry path or link target as written in the archive, in
    /// bytes. Default 4096 (`PATH_MAX`).
    pub max_path_bytes: usize,
    /// The most components of an entry path (once `.`, `..` and empty
    /// components are resolved). Default 256.
    pub max_depth: usize,
    /// The most entries of all the image's layers together (pax and GNU
    /// long-name headers not counted); also the most paths one layer puts in
    /// place, counting the directories its entries imply without listing
    /// them. Default 1,000,000.
    pub max_entries: u64,
    /// The most bytes all the image's layers decompress to (tar headers
    /// included, and the holes of sparse files). Default 8 GiB.
    pub max_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 1024 * 1024,
            max_path_bytes: 4096,
            max_depth: 256,
            max_entries: 1_000_000,
            max_bytes: 8 * 1024 * 1024 * 1024,
        }
    }
}

/// Which limit of [`UnpackLimits`] an image went over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// A special header or a sparse map is larger than `max_header_bytes`.
    #[error(
        "a {kind} of {size} bytes is larger than the limit of {limit} bytes (max_header_bytes)"
    )]
    Header {
        /// What it is: "pax extended header", "GNU long name", …
        kind: &'static str,
        /// Its size (for a sparse map, the size read so far).
        size: u64,
        /// `max_header_bytes`.
        limit: u64,
    },
    /// An entry path or link target is longer than `max_path_bytes`.
    #[error(
        "the {what} of entry {path} is {len} bytes long, more than the limit of {limit} bytes \
         (max_path_bytes)"
    )]
    PathLength {
        /// "path", "symlink target" or "hardlink target".
        what: &'static str,
        /// The entry's path, as an [`excerpt`].
        path: String,
        /// The length of what is too long.
        len: usize,
        /// `max_path_bytes`.
        limit: usize,
    },
    /// An entry path has more components than `max_depth`.
    #[error(
        "the {what} of entry {path} is {depth} components deep, more than the limit of {limit} \
         (max_depth)"
    )]
    Depth {
        /// "path" or "hardlink target".
        what: &'static str,
        /// The entry's path, as an [`excerpt`].
        path: String,
        /// Its depth.
        depth: usize,
        /// `max_depth`.
        limit: usize,
    },
    /// The image has more entries than `max_entries`.
    #[error("the image has more than {limit} entries (max_entries)")]
    Entries {
        /// `max_entries`.
        limit: u64,
    },
    /// One layer puts more paths in place than `max_entries`.
    #[error(
        "the layer puts more than {limit} paths in place, counting the directories its entries \
         imply (max_entries)"
    )]
    Paths {
        /// `max_entries`.
        limit: u64,
    },
    /// The image decompresses to more than `max_bytes`.
    #[error(
        "the image decompresses to more than {limit} bytes ({}, max_bytes)",
        bytesize::ByteSize::b(*limit).display().iec()
    )]
    Bytes {
        /// `max_bytes`.
        limit: u64,
    },
}

/// `bytes` for a message or a log line: lossy UTF-8, at most
/// [`EXCERPT_CHARS`] characters, escaped (`escape_debug`) and quoted, with
/// the full length when cut.
pub fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::from("\"");
    let mut chars = text.chars();
    for c in chars.by_ref().take(EXCERPT_CHARS) {
        out.extend(c.escape_debug());
    }
    out.push('"');
    if chars.next().is_some() {
        out.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    out
}

/// Longest error message of the `tar` crate passed on as it is.
const MESSAGE_CHARS: usize = 300;

/// `e`, unless its message (some of the `tar` crate's quote a header's raw
/// name) holds control characters or is long: then the same kind of error
/// with the message escaped and cut.
pub(super) fn clean(e: io::Error) -> io::Error {
    let text = e.to_string();
    if text.chars().count() <= MESSAGE_CHARS && !text.chars().any(char::is_control) {
        return e;
    }
    let mut out = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(MESSAGE_CHARS) {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    io::Error::new(e.kind(), out)
}

/// The running totals of one image, shared by its layers' guards and
/// appliers, and the limit that stopped it, if one did.
#[derive(Debug)]
pub(super) struct Tally<'s> {
    pub(super) limits: UnpackLimits,
    bytes: Cell<u64>,
    entries: Cell<u64>,
    tripped: RefCell<Option<LimitExceeded>>,
    /// Set by someone else (the host stopping): the unpack ends at the next
    /// entry or buffer of bytes.
    stop: Option<&'s CancellationToken>,
}

impl<'s> Tally<'s> {
    pub(super) fn new(limits: UnpackLimits) -> Self {
        Self {
            limits,
            bytes: Cell::new(0),
            entries: Cell::new(0),
            tripped: RefCell::new(None),
            stop: None,
        }
    }

    /// A tally that also ends the unpack once `stop` is cancelled.
    pub(super) fn until(limits: UnpackLimits, stop: &'s CancellationToken) -> Self {
        Self {
            stop: Some(stop),
            ..Self::new(limits)
        }
    }

    /// Whether the unpack was asked to stop.
    pub(super) fn stopped(&self) -> bool {
        self.stop.is_some_and(CancellationToken::is_cancelled)
    }

    fn check_stop(&self) -> io::Result<()> {
        if self.stopped() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the unpack was stopped",
            ));
        }
        Ok(())
    }

    /// Bytes counted so far.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// Entries counted so far.
    #[cfg(test)]
    pub(super) fn entries(&self) -> u64 {
        self.entries.get()
    }

    /// Counts `n` more bytes.
    fn add_bytes(&self, n: u64) -> io::Result<()> {
        self.check_stop()?;
        let total = self.bytes.get().saturating_add(n);
        self.bytes.set(total);
        if total > self.limits.max_bytes {
            return Err(self.trip(LimitExceeded::Bytes {
                limit: self.limits.max_bytes,
            }));
        }
        Ok(())
    }

    /// Refuses an entry that declares more bytes than the image has left.
    fn check_declared(&self, n: u64) -> io::Result<()> {
        if self.bytes.get().saturating_add(n) > self.limits.max_bytes {
            return Err(self.trip(LimitExceeded::Bytes {
                limit: self.limits.max_bytes,
            }));
        }
        Ok(())
    }

    fn add_entry(&self) -> io::Result<()> {
        self.check_stop()?;
        let total = self.entries.get() + 1;
        self.entries.set(total);
        if total > self.limits.max_entries {
            return Err(self.trip(LimitExceeded::Entries {
                limit: self.limits.max_entries,
            }));
        }
        Ok(())
    }

    /// Records `limit` as what stopped the image, and returns it as an I/O
    /// error for the reader that hit it.
    fn trip(&self, limit: LimitExceeded) -> io::Error {
        self.tripped.replace(Some(limit.clone()));
        io::Error::other(limit)
    }

    /// The limit a guard hit, if any (taken: asked once).
    pub(super) fn take_tripped(&self) -> Option<LimitExceeded> {
        self.tripped.borrow_mut().take()
    }
}

/// Where the guard is in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The next block is an entry header.
    Header,
    /// The next block continues the GNU sparse map of the entry whose header
    /// came `map` bytes of map ago; its data (`data` bytes, padded) follows
    /// the map.
    SparseMap { map: u64, data: u64 },
    /// `left` bytes of data and padding; the first `keep` of them are a pax
    /// extended header, kept for its `size` record.
    Data { left: u64, keep: u64 },
    /// After the end of the archive (or a header the `tar` crate refuses):
    /// bytes are only counted.
    Trailer,
}

/// A reader of a decompressed tar stream that enforces [`UnpackLimits`]
/// before the `tar` crate reads what it guards (see the module docs).
pub(super) struct TarGuard<'a, R> {
    inner: R,
    tally: &'a Tally<'a>,
    state: State,
    /// A header block (or sparse map block) being read, then handed on.
    block: [u8; BLOCK],
    filled: usize,
    handed: usize,
    /// The pax extended header being read.
    pax: Vec<u8>,
    /// The `size` record of the last pax header, for the next entry header.
    pax_size: Option<u64>,
}

impl<'a, R: Read> TarGuard<'a, R> {
    pub(super) fn new(inner: R, tally: &'a Tally<'a>) -> Self {
        Self {
            inner,
            tally,
            state: State::Header,
            block: [0; BLOCK],
            filled: 0,
            handed: 0,
            pax: Vec::new(),
            pax_size: None,
        }
    }

    /// Fills `block` from the inner reader; the number of bytes it holds
    /// (less than a block only at the end of the stream).
    fn fill_block(&mut self) -> io::Result<usize> {
        while self.filled < BLOCK {
            let n = match self.inner.read(&mut self.block[self.filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            self.tally.add_bytes(n as u64)?;
            self.filled += n;
        }
        Ok(self.filled)
    }

    /// Looks at a full header block and decides what follows it.
    fn inspect_header(&mut self) -> io::Result<()> {
        // A copy: the header is read while `self` changes.
        let block = self.block;
        if block.iter().all(|&b| b == 0) {
            self.state = State::Trailer;
            return Ok(());
        }
        let header = Header::from_byte_slice(&block);
        // The same checksum as the `tar` crate: it refuses the block if this fails.
        let sum = block[..148]
            .iter()
            .chain(&block[156..])
            .fold(0u32, |a, &b| a + u32::from(b))
            + 8 * 32;
        let (Ok(cksum), Ok(mut size)) = (header.cksum(), header.entry_size()) else {
            self.state = State::Trailer;
            return Ok(());
        };
        if sum != cksum {
            self.state = State::Trailer;
            return Ok(());
        }
        let kind = header.entry_type();
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let long_name = kind.is_gnu_longname() || kind.is_gnu_longlink();
        let extension =
            long_name || kind.is_pax_local_extensions() || kind.is_pax_global_extensions();
        // A pax `size` applies to the header that ends the group of special
        // headers, if it is not an extension header itself (a `g`).
        let ends_group = !(recognized && (long_name || kind.is_pax_local_extensions()));
        let pax_size = if ends_group {
            self.pax_size.take()
        } else {
            None
        };
        if let Some(pax_size) = pax_size.filter(|_| !extension) {
            size = pax_size;
        }
        let Some(padded) = size
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s & !(BLOCK as u64 - 1))
        else {
            self.state = State::Trailer;
            return Ok(());
        };
        let limit = self.tally.limits.max_header_bytes;
        if extension && size > limit {
            return Err(self.tally.trip(LimitExceeded::Header {
                kind: special_kind(kind),
                size,
                limit,
            }));
        }
        let sparse = header.as_gnu().filter(|_| kind.is_gnu_sparse());
        if ends_group {
            self.tally.add_entry()?;
            // A sparse file's holes are written out as zeros: they count.
            let holes = sparse
                .and_then(|gnu| gnu.real_size().ok())
                .map_or(0, |real| real.saturating_sub(size));
            self.tally.check_declared(size.saturating_add(holes))?;
            self.tally.add_bytes(holes)?;
        }
        self.state = if sparse.is_some_and(|gnu| gnu.is_extended()) {
            State::SparseMap {
                map: 0,
                data: padded,
            }
        } else if recognized && kind.is_pax_local_extensions() {
            self.pax.clear();
            if size == 0 {
                self.finish_pax();
            }
            State::Data {
                left: padded,
                keep: size,
            }
        } else {
            State::Data {
                left: padded,
                keep: 0,
            }
        };
        Ok(())
    }

    /// Looks at a full block of a GNU sparse map.
    fn inspect_sparse_map(&mut self, map: u64, data: u64) -> io::Result<()> {
        let map = map + BLOCK as u64;
        let limit = self.tally.limits.max_header_bytes;
        if map > limit {
            return Err(self.tally.trip(LimitExceeded::Header {
                kind: "GNU sparse map",
                size: map,
                limit,
            }));
        }
        // `GnuExtSparseHeader::is_extended`: 21 sparse records of 24 bytes, then the flag.
        self.state = if self.block[21 * 24] == 1 {
            State::SparseMap { map, data }
        } else {
            State::Data {
                left: data,
                keep: 0,
            }
        };
        Ok(())
    }

    /// The pax header is complete: remember its `size` record as the `tar`
    /// crate reads it (the first malformed record ends the search).
    fn finish_pax(&mut self) {
        let mut size = None;
        for record in tar::PaxExtensions::new(&self.pax) {
            let Ok(record) = record else { break };
            if record.key() != Ok("size") {
                continue;
            }
            size = record.value().ok().and_then(|v| v.parse::<u64>().ok());
            break;
        }
        self.pax_size = size;
        self.pax = Vec::new();
    }
}

impl<R: Read> Read for TarGuard<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.handed < self.filled {
                let n = (self.filled - self.handed).min(buf.len());
                buf[..n].copy_from_slice(&self.block[self.handed..self.handed + n]);
                self.handed += n;
                if self.handed == BLOCK {
                    (self.filled, self.handed) = (0, 0);
                }
                return Ok(n);
            }
            match self.state {
                State::Header | State::SparseMap { .. } => {
                    let n = self.fill_block()?;
                    if n == 0 {
                        return Ok(0);
                    }
                    if n < BLOCK {
                        // Truncated: hand on what there is; the crate refuses it.
                        self.state = State::Trailer;
                        continue;
                    }
                    match self.state {
                        State::SparseMap { map, data } => self.inspect_sparse_map(map, data)?,
                        _ => self.inspect_header()?,
                    }
                }
                State::Data { left: 0, .. } => self.state = State::Header,
                State::Data { left, keep } => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Ok(0);
                    }
                    self.tally.add_bytes(n as u64)?;
                    if keep > 0 {
                        let kept = n.min(usize::try_from(keep).unwrap_or(usize::MAX));
                        self.pax.extend_from_slice(&buf[..kept]);
                        if keep == kept as u64 {
                            self.finish_pax();
                        }
                    }
                    let keep = keep.saturating_sub(n as u64);
                    self.state = State::Data {
                        left: left - n as u64,
                        keep,
                    };
                    return Ok(n);
                }
                State::Trailer => {
                    let n = self.inner.read(buf)?;
                    self.tally.add_bytes(n as u64)?;
                    return Ok(n);
                }
            }
        }
    }
}

/// What a special header is called in messages.
fn special_kind(kind: EntryType) -> &'static str {
    if kind.is_gnu_longname() {
        "GNU long name"
    } else if kind.is_gnu_longlink() {
        "GNU long link"
    } else if kind.is_pax_global_extensions() {
        "pax global header"
    } else {
        "pax extended header"
    }
}
