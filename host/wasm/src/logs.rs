//! Per-app capture of guest output.
//!
//! Every app has one log file, `<data-dir>/logs/<app>.log`. Each line a guest
//! writes to stdout or stderr becomes one line of that file:
//!
//! ```text
//! 2026-11-30T12:00:00.123456Z 5f2a9c01-0000002a 4bf92f3577b34da6a3ce929d0e0e4736 stdout hello
//! 2026-11-30T12:00:00.123789Z 5f2a9c01-0000002b - stdout hello
//! ```
//!
//! (timestamp, request id, trace id or `-` when the request is not traced,
//! stream, text: the first three space-free, see [`log_tag`]). The file is rotated to `<app>.log.1`
//! when it passes [`MAX_LOG_BYTES`]; `berth logs NAME` prints both.
//!
//! Followers ([`AppLog::follow`]) get the files' text and then each new line
//! from an in-process broadcast (at most [`FOLLOW_BUFFER`] lines behind; one
//! that falls further behind is told how many it missed): the files are the
//! store for history, never polled.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A log file is rotated once it is larger than this.
pub const MAX_LOG_BYTES: u64 = 16 * 1024 * 1024;
/// A guest line longer than this is split.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Lines a follower may fall behind before it misses some.
pub const FOLLOW_BUFFER: usize = 512;

/// The tag of a request's lines: `<request id> <trace id>`, or
/// `<request id> -` when the request is not traced (or, for output no
/// request can be told for, `<instance id> -` or `- -`).
pub fn log_tag(request_id: &str, trace_id: Option<&str>) -> Arc<str> {
    let trace_id = trace_id.unwrap_or("-");
    let mut tag = String::with_capacity(request_id.len() + 1 + trace_id.len());
    tag.push_str(request_id);
    tag.push(' ');
    tag.push_str(trace_id);
    Arc::from(tag)
}

/// The tag of lines no request is known for.
pub const NO_REQUEST: &str = "- -";

/// The request id of a [`log_tag`] (what a message to a caller names).
pub fn request_id_of(tag: &str) -> &str {
    tag.split_once(' ').map_or(tag, |(id, _)| id)
}

/// Where an app's log file lives.
pub fn log_path(logs_dir: &Path, app: &str) -> PathBuf {
    logs_dir.join(format!("{app}.log"))
}

/// One app's log file, appended to by all its requests.
#[derive(Debug)]
pub struct AppLog {
    path: PathBuf,
    file: Mutex<(File, u64)>,
    /// Set by [`AppLog::stdio`]: lines go, untagged, to these.
    stdio: Option<Stdio>,
    /// Each line written, for followers.
    tx: tokio::sync::broadcast::Sender<Bytes>,
}

/// A process's stdout and stderr, for [`AppLog::stdio`].
#[derive(Debug)]
struct Stdio {
    stdout: Mutex<File>,
    stderr: Mutex<File>,
}

/// Opens `path` for appending, creating it readable by its owner only
/// (tenants' output is theirs; other local users do not read it).
fn open_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // A log created by an older berth may be wider.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

impl AppLog {
    /// Opens (creating) the log of `app` under `logs_dir`.
    ///
    /// # Errors
    /// When the directory or file cannot be created.
    pub fn open(logs_dir: &Path, app: &str) -> std::io::Result<Self> {
        crate::files::create_private_dir(logs_dir)?;
        let path = log_path(logs_dir, app);
        let file = open_private(&path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path,
            file: Mutex::new((file, len)),
            stdio: None,
            tx: tokio::sync::broadcast::Sender::new(FOLLOW_BUFFER),
        })
    }

    /// A log that is a process's own output (the containerd shim: a task's
    /// stdout and stderr FIFOs): each line a guest writes goes to the file of
    /// its stream as written, without timestamp or request id, and is never
    /// rotated; failures berth reports (stream `berth`) go to `stderr`
    /// prefixed `berth: <request id>`.
    ///
    /// # Errors
    /// When `stderr` cannot be duplicated.
    pub fn stdio(stdout: File, stderr: File) -> std::io::Result<Self> {
        Ok(Self {
            path: PathBuf::new(),
            file: Mutex::new((stderr.try_clone()?, 0)),
            stdio: Some(Stdio {
                stdout: Mutex::new(stdout),
                stderr: Mutex::new(stderr),
            }),
            tx: tokio::sync::broadcast::Sender::new(1),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line tagged `tag` ([`log_tag`]). Errors are reported
    /// through tracing, never to the guest: a full disk must not fail
    /// requests.
    pub fn line(&self, tag: &str, stream: &str, text: &[u8]) {
        if let Some(stdio) = &self.stdio {
            let (file, record) = match stream {
                "stdout" => (&stdio.stdout, [text, b"\n"].concat()),
                "stderr" => (&stdio.stderr, [text, b"\n"].concat()),
                _ => (
                    &stdio.stderr,
                    [format!("{stream}: {tag} ").as_bytes(), text, b"\n"].concat(),
                ),
            };
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = file.write_all(&record) {
                tracing::warn!("cannot write guest output: {e}");
            }
            return;
        }
        let text = String::from_utf8_lossy(text);
        let text = text.trim_end_matches(['\n', '\r']);
        let ts = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let record = format!("{ts} {tag} {stream} {text}\n");
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.1 + record.len() as u64 > MAX_LOG_BYTES
            && let Err(e) = self.rotate(&mut guard)
        {
            tracing::warn!(path = %self.path.display(), "cannot rotate log: {e}");
        }
        match guard.0.write_all(record.as_bytes()) {
            Ok(()) => guard.1 += record.len() as u64,
            Err(e) => tracing::warn!(path = %self.path.display(), "cannot write log: {e}"),
        }
        // Under the lock, so a follower's history and its lines meet
        // exactly (see `follow`).
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Bytes::from(record));
        }
    }

    /// The log so far (the rotated part first) and every line written
    /// after it, from the moment of the call: nothing is missed between the
    /// two, and nothing comes twice. Reads the files: call it off the
    /// async runtime's workers (`spawn_blocking`).
    ///
    /// # Errors
    /// When the current file cannot be read.
    pub fn follow(&self) -> std::io::Result<(Vec<u8>, tokio::sync::broadcast::Receiver<Bytes>)> {
        let guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.tx.subscribe();
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        let mut text = match std::fs::read(&rotated) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        match std::fs::read(&self.path) {
            Ok(t) => text.extend_from_slice(&t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        drop(guard);
        Ok((text, rx))
    }

    fn rotate(&self, guard: &mut (File, u64)) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, old)?;
        guard.0 = open_private(&self.path)?;
        guard.1 = 0;
        Ok(())
    }

    /// A sink for `stream` ("stdout" or "stderr"), its lines tagged `tag`
    /// ([`log_tag`]).
    pub fn sink(self: &Arc<Self>, tag: Arc<str>, stream: &'static str) -> GuestOutput {
        let id = RequestIdCell::default();
        id.set(tag);
        self.sink_for(id, stream)
    }

    /// A sink whose request's tag is set later, once, through `id` (an
    /// instance made ahead of its request). Lines written before that are
    /// tagged [`NO_REQUEST`].
    pub fn sink_for(self: &Arc<Self>, id: RequestIdCell, stream: &'static str) -> GuestOutput {
        GuestOutput(Arc::new(Shared {
            log: self.clone(),
            request_id: id,
            stream,
            pending: Mutex::new(Pending::default()),
        }))
    }
}

/// Reads the whole log of an app (rotated part first).
///
/// # Errors
/// When neither file can be read.
pub fn read_all(logs_dir: &Path, app: &str) -> std::io::Result<String> {
    let path = log_path(logs_dir, app);
    let mut rotated = path.clone().into_os_string();
    rotated.push(".1");
    let mut out = std::fs::read_to_string(&rotated).unwrap_or_default();
    out.push_str(&std::fs::read_to_string(&path)?);
    Ok(out)
}

/// The tag ([`log_tag`]) of the request an instance serves now, set when the request
/// takes the instance (which may have been made before the request came, or
/// served other requests before it, one at a time, under serial reuse).
#[derive(Debug, Clone, Default)]
pub struct RequestIdCell(Arc<std::sync::RwLock<Option<Arc<str>>>>);

impl RequestIdCell {
    /// Sets the tag of the request the instance serves from now on.
    pub fn set(&self, id: Arc<str>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(id);
    }

    /// The tag, or [`NO_REQUEST`] before it is set.
    pub fn get(&self) -> Arc<str> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| Arc::from(NO_REQUEST))
    }
}

/// A guest's stdout or stderr for one store (one request, or the requests
/// of a reused instance), as handed to WASI. Every stream handle the guest
/// opens on it writes into one line buffer, so a line written through
/// several handles (`print!` then `println!`, each getting its own
/// `get-stdout`) is one line of the log, as `wasmtime serve` shows it.
#[derive(Debug, Clone)]
pub struct GuestOutput(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    log: Arc<AppLog>,
    request_id: RequestIdCell,
    stream: &'static str,
    pending: Mutex<Pending>,
}

/// The line in progress.
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    /// The request whose line is in `buf`.
    id: Option<Arc<str>>,
}

impl Drop for Shared {
    /// The store is gone: what is left of a line is a line.
    fn drop(&mut self) {
        let pending = self.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        if !pending.buf.is_empty() {
            let id = pending.id.clone().unwrap_or_else(|| self.request_id.get());
            self.log.line(&id, self.stream, &pending.buf);
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter::new(self.clone()))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter::new(self.clone()))
    }
}

impl GuestOutput {
    /// A line splitter writing into this sink, for output that is not a
    /// guest's WASI stream (a container's stdout or stderr pipe).
    pub fn lines(&self) -> LineWriter {
        LineWriter::new(self.clone())
    }
}

/// The marker ending each piece of a line longer than [`MAX_LINE_BYTES`]
/// but the last: the line goes on in the next log line.
pub const SPLIT_MARKER: &str = " [line continues]";

/// One handle on a [`GuestOutput`]: splits what is written into lines (at
/// most [`MAX_LINE_BYTES`] each, without their `\n`; a longer one is cut,
/// each piece but the last ending in [`SPLIT_MARKER`]) and appends them to
/// the app log. The line in progress is shared by every handle of the
/// store's stream; it is written when a newline ends it, when it is
/// [`flushed`](Self::flush_line), when the store goes away, or when a write
/// comes from another request (several requests share an instance's stdout
/// under concurrent reuse: a line never mixes two).
#[derive(Debug)]
pub struct LineWriter {
    out: GuestOutput,
}

impl LineWriter {
    fn new(out: GuestOutput) -> Self {
        Self { out }
    }

    /// Writes the line in progress, if any, as a line of its own.
    pub fn flush_line(&mut self) {
        let shared = &self.out.0;
        let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.buf.is_empty() {
            emit(shared, &mut pending, false);
        }
    }

    /// Appends `bytes`: every line they complete goes to the log.
    pub fn push(&mut self, mut bytes: &[u8]) {
        let shared = &self.out.0;
        let id = shared.request_id.get();
        let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.id.as_ref() != Some(&id) {
            if !pending.buf.is_empty() {
                emit(shared, &mut pending, false);
            }
            pending.id = Some(id);
        }
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(nl);
            take_bounded(shared, &mut pending, line);
            emit(shared, &mut pending, false);
            bytes = &rest[1..];
        }
        take_bounded(shared, &mut pending, bytes);
    }
}

/// Adds `bytes` to the line in progress, cutting it (marked) each time it
/// reaches [`MAX_LINE_BYTES`].
fn take_bounded(shared: &Shared, pending: &mut Pending, mut bytes: &[u8]) {
    while pending.buf.len() + bytes.len() > MAX_LINE_BYTES {
        let room = MAX_LINE_BYTES - pending.buf.len();
        pending.buf.extend_from_slice(&bytes[..room]);
        bytes = &bytes[room..];
        emit(shared, pending, true);
    }
    pending.buf.extend_from_slice(bytes);
}

fn emit(shared: &Shared, pending: &mut Pending, split: bool) {
    let id = match &pending.id {
        Some(id) => id.clone(),
        None => shared.request_id.get(),
    };
    if split {
        pending.buf.extend_from_slice(SPLIT_MARKER.as_bytes());
    }
    shared.log.line(&id, shared.stream, &pending.buf);
    pending.buf.clear();
}

#[async_trait::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_tagged() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AppLog::open(dir.path(), "app").unwrap());
        {
            let mut w = LineWriter::new(log.sink("req-1".into(), "stdout"));
            w.push(b"one\ntw");
            w.push(b"o\nthree");
        }
        let text = read_all(dir.path(), "app").unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with(" req-1 stdout one"), "{text}");
        assert!(lines[1].ends_with(" req-1 stdout two"), "{text}");
        assert!(lines[2].ends_with(" req-1 stdout three"), "{text}");
    }

    /// A line written through several handles of one stream (as `print!`
    /// then `println!` do in a guest) is one line; the other stream's lines
    /// stay apart; what is left when the store goes is a line.
    #[test]
    fn handles_of_one_stream_share_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AppLog::open(dir.path(), "app").unwrap());
        let out = log.sink("req-1".into(), "stdout");
        let err = log.sink("req-1".into(), "stderr");
        {
            let mut a = out.lines();
            a.push(b"hello ");
        }
        err.lines().push(b"oops\n");
        {
            let mut b = out.lines();
            b.push(b"world\nand ");
        }
        out.lines().push(b"the rest");
        drop((out, err));
        let text = read_all(dir.path(), "app").unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with(" req-1 stderr oops"), "{text}");
        assert!(lines[1].ends_with(" req-1 stdout hello world"), "{text}");
        assert!(lines[2].ends_with(" req-1 stdout and the rest"), "{text}");
    }

    /// A follower gets the history, then each new line once; one that falls
    /// more than [`FOLLOW_BUFFER`] lines behind is told how many it missed.
    #[test]
    fn followers_get_history_then_lines() {
        use tokio::sync::broadcast::error::TryRecvError;
        let dir = tempfile::tempdir().unwrap();
        let log = AppLog::open(dir.path(), "app").unwrap();
        log.line("r1", "stdout", b"before");
        let (history, mut rx) = log.follow().unwrap();
        assert!(
            String::from_utf8(history)
                .unwrap()
                .ends_with(" r1 stdout before\n")
        );
        log.line("r2", "stdout", b"after");
        let next = rx.try_recv().unwrap();
        assert!(next.ends_with(b" r2 stdout after\n"), "{next:?}");
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        for i in 0..FOLLOW_BUFFER + 5 {
            log.line("r3", "stdout", format!("{i}").as_bytes());
        }
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Lagged(5))));
        let next = rx.try_recv().unwrap();
        assert!(next.ends_with(b" r3 stdout 5\n"), "{next:?}");
    }

    /// A line over the bound is cut into marked pieces, none longer than
    /// the bound (and its marker).
    #[test]
    fn long_lines_are_split_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AppLog::open(dir.path(), "app").unwrap());
        {
            let out = log.sink("r".into(), "stdout");
            let mut w = out.lines();
            w.push(&vec![b'a'; MAX_LINE_BYTES + 10]);
            w.push(&vec![b'b'; MAX_LINE_BYTES - 20]);
            w.push(b"\n");
        }
        let text = read_all(dir.path(), "app").unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{}", text.len());
        let first = lines[0].split(" r stdout ").nth(1).unwrap();
        assert_eq!(first.len(), MAX_LINE_BYTES + SPLIT_MARKER.len());
        assert!(first.ends_with(SPLIT_MARKER));
        let second = lines[1].split(" r stdout ").nth(1).unwrap();
        assert_eq!(second, "a".repeat(10) + &"b".repeat(MAX_LINE_BYTES - 20));
    }
}
