//! A container's stdout and stderr: two pipes whose read ends berth holds,
//! never files on the host.
//!
//! The container's init gets the write ends as its fd 1 and 2 (through
//! `runc run --detach`, which passes its own stdio on). Whatever the
//! container does with them (`truncate /proc/1/fd/1`, reopening it, `dd`
//! into it), they stay pipes: nothing it writes lands on the host's disk
//! except the lines berth copies into the app log
//! ([`AppLog`], rotated at [`MAX_LOG_BYTES`](crate::logs::MAX_LOG_BYTES)).
//!
//! runc#1721 ("runc create hangs when passed a pipe for stdout or stderr")
//! is a caller that waits for EOF on pipes it gave a detached runc: the
//! container holds their write ends, so EOF never comes while it runs. berth
//! waits only for runc's exit status and reads the pipes on tasks of their
//! own, so the start does not wait on them; its copies of the write ends are
//! closed once runc has returned.
//!
//! # Rate and what is dropped
//! One task per stream reads its pipe as soon as there is something to
//! read, and never stops reading while the instance lives: a container never
//! waits on berth for more than the time to copy a pipe's buffer (64 KiB).
//! Lines go to the app log within a budget per stream: a burst of
//! [`OUTPUT_BURST`] bytes, refilled at [`OUTPUT_RATE`] bytes a second.
//! Bytes over the budget are dropped, counted, and replaced by one marker
//! line (`berth: dropped N bytes of stdout: …`) when forwarding resumes or
//! the stream ends. Dropping rather than blocking the writer (Docker's
//! default, `mode=blocking`) keeps a flood from holding a container's later
//! lines hours behind, and bounds the disk writes a tenant causes; it is
//! Docker's `mode=non-blocking` with the budget in place of its ring buffer.
//!
//! # End
//! A stream ends at EOF, when the container's last process holding it has
//! exited. Once the instance is stopped or dropped ([`Output::finish`], or
//! dropping the [`Output`]), a reader still waiting gives up after
//! [`DRAIN_WAIT`] and closes its read end, so a write end passed to some
//! other process can keep neither a task nor a descriptor of berth's.
//! Should berth die, the read ends close with it: a container that writes
//! then gets `EPIPE` (or `SIGPIPE`), never a file that grows, and
//! [`Shim::reap_leftovers`](super::Shim::reap_leftovers) removes it at the
//! next start.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::logs::{AppLog, LineWriter};

/// Bytes of one stream forwarded at once before the rate applies.
pub const OUTPUT_BURST: u64 = 4 << 20;

/// Bytes a second of one stream forwarded once the burst is spent.
pub const OUTPUT_RATE: u64 = 5 << 20;

/// How long a reader waits for EOF once its instance is stopped or dropped.
pub const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// What one read takes from a pipe at most.
const READ_CHUNK: usize = 64 << 10;

/// How much of stderr is kept in memory for a failed start's error.
const TAIL_BYTES: usize = 8 << 10;

/// How many lines of that tail the error quotes.
const TAIL_LINES: usize = 20;

/// The write ends, for runc to hand to the container as fd 1 and 2.
pub(super) struct WriteEnds {
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
}

/// The readers of one instance's stdout and stderr.
#[derive(Debug)]
pub(super) struct Output {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The last [`TAIL_BYTES`] of stderr (runc's own errors included).
    tail: Arc<Mutex<VecDeque<u8>>>,
}

impl Output {
    /// Makes both pipes and starts reading them into `log`, lines tagged
    /// with `instance` (no request can be told for a container's output:
    /// its trace id is `-`). Call it inside a tokio runtime.
    ///
    /// # Errors
    /// When a pipe cannot be made or registered with the reactor.
    pub(super) fn open(log: &Arc<AppLog>, instance: &str) -> io::Result<(Self, WriteEnds)> {
        let (stop, _) = watch::channel(false);
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_BYTES)));
        let mut tasks = Vec::with_capacity(2);
        let mut ends = Vec::with_capacity(2);
        let tag = crate::logs::log_tag(instance, None);
        for stream in ["stdout", "stderr"] {
            // The write end stays blocking (it is the container's fd 1 or
            // 2); tokio makes the read end non-blocking.
            let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            let reader = pipe::Receiver::from_owned_fd(read)?;
            let forward = Forward {
                log: Arc::clone(log),
                instance: instance.to_owned(),
                stream,
                tag: tag.clone(),
                lines: log.sink(tag.clone(), stream).lines(),
                budget: Budget::new(Instant::now()),
                dropped: 0,
                tail: (stream == "stderr").then(|| Arc::clone(&tail)),
            };
            tasks.push(tokio::spawn(read_stream(reader, forward, stop.subscribe())));
            ends.push(write);
        }
        let stderr = ends.pop().expect("two pipes");
        let stdout = ends.pop().expect("two pipes");
        Ok((Self { stop, tasks, tail }, WriteEnds { stdout, stderr }))
    }

    /// Waits until both streams are read to their end (at most
    /// [`DRAIN_WAIT`] once called), so that everything the instance wrote
    /// is in the app log.
    pub(super) async fn finish(&mut self) {
        self.stop.send_replace(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// The last lines of stderr (for an error that quotes them), or
    /// `(nothing)`.
    pub(super) fn stderr_tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Vec<u8> = tail.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        let text = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        if text.trim().is_empty() {
            "(nothing)".to_owned()
        } else {
            text
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // The readers end at EOF or `DRAIN_WAIT` from now.
        self.stop.send_replace(true);
    }
}

/// Reads one pipe until EOF, or until [`DRAIN_WAIT`] after `stop`.
async fn read_stream(
    mut reader: pipe::Receiver,
    mut out: Forward,
    mut stop: watch::Receiver<bool>,
) {
    let give_up = async move {
        // `Err`: the `Output` is gone, which is a stop too.
        let _ = stop.wait_for(|s| *s).await;
        tokio::time::sleep(DRAIN_WAIT).await;
    };
    tokio::pin!(give_up);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let read = tokio::select! {
            read = reader.read(&mut buf) => read,
            () = &mut give_up => {
                tracing::debug!(instance = %out.instance, stream = out.stream, "container output still open {DRAIN_WAIT:?} after the stop; closed");
                break;
            }
        };
        match read {
            Ok(0) => break,
            Ok(n) => out.chunk(&buf[..n], Instant::now()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(instance = %out.instance, stream = out.stream, error = %e, "reading container output failed; the rest of this stream is lost");
                break;
            }
        }
    }
    out.end();
}

/// Where one stream's bytes go: the app log, within the budget.
struct Forward {
    log: Arc<AppLog>,
    instance: String,
    /// Its lines' tag in the app log.
    tag: Arc<str>,
    stream: &'static str,
    lines: LineWriter,
    budget: Budget,
    /// Bytes dropped since the last marker.
    dropped: u64,
    tail: Option<Arc<Mutex<VecDeque<u8>>>>,
}

impl Forward {
    /// Forwards what the budget allows of `bytes`, read at `now`; counts the
    /// rest.
    fn chunk(&mut self, bytes: &[u8], now: Instant) {
        if let Some(tail) = &self.tail {
            let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
            let keep = &bytes[bytes.len().saturating_sub(TAIL_BYTES)..];
            let over = (tail.len() + keep.len()).saturating_sub(TAIL_BYTES);
            tail.drain(..over);
            tail.extend(keep);
        }
        let granted = self.budget.take(bytes.len() as u64, now) as usize;
        if granted > 0 {
            self.marker();
            self.lines.push(&bytes[..granted]);
        }
        if granted < bytes.len() {
            if self.dropped == 0 {
                // The line in progress loses its end: its start goes apart.
                self.lines.flush_line();
            }
            self.dropped += (bytes.len() - granted) as u64;
        }
    }

    /// Says how much was dropped since the last marker, if anything.
    fn marker(&mut self) {
        if self.dropped == 0 {
            return;
        }
        let text = format!(
            "berth: dropped {} bytes of {}: the container wrote faster than its output is \
             forwarded (at most {OUTPUT_BURST} bytes at once, then {OUTPUT_RATE} bytes a second)",
            self.dropped, self.stream
        );
        self.log.line(&self.tag, self.stream, text.as_bytes());
        self.dropped = 0;
    }

    /// The stream ended: the last partial line, then the last marker.
    fn end(&mut self) {
        self.lines.flush_line();
        self.marker();
    }
}

/// A token bucket of bytes: [`OUTPUT_BURST`] deep, refilled at
/// [`OUTPUT_RATE`] a second.
#[derive(Debug)]
struct Budget {
    tokens: u64,
    at: Instant,
}

impl Budget {
    fn new(now: Instant) -> Self {
        Self {
            tokens: OUTPUT_BURST,
            at: now,
        }
    }

    /// Takes up to `want` bytes at `now`; returns how many it may forward.
    fn take(&mut self, want: u64, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.at);
        let earned = elapsed.as_nanos() * u128::from(OUTPUT_RATE) / 1_000_000_000;
        if earned > 0 {
            let earned = u64::try_from(earned).unwrap_or(u64::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(OUTPUT_BURST);
            self.at = now;
        }
        let granted = want.min(self.tokens);
        self.tokens -= granted;
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_burst_then_a_rate() {
        let t = Instant::now();
        let mut b = Budget::new(t);
        assert_eq!(b.take(OUTPUT_BURST + 1, t), OUTPUT_BURST);
        assert_eq!(b.take(1, t), 0);
        let tenth = t + Duration::from_millis(100);
        assert_eq!(b.take(u64::MAX, tenth), OUTPUT_RATE / 10);
        // Never more than the burst, however long the pause.
        let later = tenth + Duration::from_secs(3600);
        assert_eq!(b.take(u64::MAX, later), OUTPUT_BURST);
    }

    /// A real pipe flooded far past the budget: what is forwarded is the
    /// burst, in order, then a marker counting the rest; the line after the
    /// flood arrives; the reader ends at EOF and closes its read end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_is_cut_at_the_budget_with_a_marker() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AppLog::open(dir.path(), "app").unwrap());
        let (mut output, ends) = Output::open(&log, "i-1").unwrap();
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = std::fs::File::from(ends.stdout);
            let mut err = std::fs::File::from(ends.stderr);
            err.write_all(b"to stderr\n").unwrap();
            let line = format!("{}\n", "x".repeat(1023));
            // 64 MiB in well under the 12 s the rate would need for it.
            for _ in 0..(64 << 10) {
                out.write_all(line.as_bytes()).unwrap();
            }
            out.write_all(b"partial").unwrap();
        });
        writer.await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), output.finish())
            .await
            .expect("EOF ends the readers");
        assert_eq!(output.stderr_tail(), "to stderr");
        let text = crate::logs::read_all(dir.path(), "app").unwrap();
        let stdout: Vec<&str> = text.lines().filter(|l| l.contains(" stdout ")).collect();
        let full = stdout
            .iter()
            .filter(|l| l.ends_with(&"x".repeat(1023)))
            .count();
        let dropped: u64 = stdout
            .iter()
            .filter_map(|l| l.split("berth: dropped ").nth(1))
            .map(|rest| rest.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        // Forwarded + dropped = written (each forwarded line lost its `\n`;
        // a cut line counts its two parts).
        let forwarded: u64 = stdout
            .iter()
            .filter(|l| !l.contains("berth: dropped"))
            .map(|l| l.split(" stdout ").nth(1).unwrap().len() as u64)
            .sum();
        let lines = stdout
            .iter()
            .filter(|l| !l.contains("berth: dropped"))
            .count() as u64;
        let written = (64u64 << 20) + 7;
        assert!(dropped > 0, "a marker: {}", stdout.len());
        assert!(
            full >= (OUTPUT_BURST >> 10) as usize - 1,
            "{full} full lines"
        );
        assert!(
            forwarded + lines >= written - dropped && forwarded <= written - dropped,
            "forwarded {forwarded} in {lines} lines, dropped {dropped}, written {written}"
        );
        assert!(
            forwarded <= OUTPUT_BURST + OUTPUT_RATE * 12,
            "forwarded {forwarded}"
        );
        assert!(text.contains(" i-1 - stderr to stderr\n"), "stderr tagged");
    }

    #[tokio::test]
    async fn the_stderr_tail_is_its_last_lines() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AppLog::open(dir.path(), "app").unwrap());
        let (mut output, ends) = Output::open(&log, "i-3").unwrap();
        drop(ends.stdout);
        let mut err = std::fs::File::from(ends.stderr);
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        err.write_all(text.as_bytes()).unwrap();
        drop(err);
        output.finish().await;
        let tail = output.stderr_tail();
        assert!(
            tail.starts_with("line 10\n") && tail.ends_with("line 29"),
            "{tail}"
        );
        let (mut quiet, ends) = Output::open(&log, "i-4").unwrap();
        drop(ends);
        quiet.finish().await;
        assert_eq!(quiet.stderr_tail(), "(nothing)");
    }

    /// A write end held by someone else does not keep the reader: it gives
    /// up `DRAIN_WAIT` after the stop.
    #[tokio::test]
    async fn a_reader_gives_up_after_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AppLog::open(dir.path(), "app").unwrap());
        let (mut output, ends) = Output::open(&log, "i-2").unwrap();
        let t = std::time::Instant::now();
        output.finish().await;
        let took = t.elapsed();
        assert!(
            took >= DRAIN_WAIT && took < DRAIN_WAIT + Duration::from_secs(2),
            "{took:?}"
        );
        // The read ends are closed: a write fails with EPIPE.
        let mut out = std::fs::File::from(ends.stdout);
        let err = io::Write::write_all(&mut out, b"late\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
