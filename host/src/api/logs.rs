//! `GET /v1/apps/{name}/logs[?follow=true]`: an app's captured guest output.
//!
//! Without `follow`, the whole log (the rotated part first, see
//! [`crate::logs`]). With it, the same, then every line appended later, as
//! a streaming body, from the app log's in-process broadcast
//! ([`crate::logs::AppLog::follow`]: no line missed or sent twice between
//! the history and the stream, and no polling). A follower more than
//! [`crate::logs::FOLLOW_BUFFER`] lines behind gets a line
//! `berth: N lines missed (this follower fell behind)` in their place. The
//! stream ends when the client goes away or the server begins to shut down.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::broadcast::error::RecvError;

use crate::apps::Apps;
use crate::http::{Body, BoxError};
use crate::logs::{AppLog, log_path};

/// How often a follower with nothing to send checks for shutdown.
const SHUTDOWN_CHECK: Duration = Duration::from_secs(1);

/// Where a read of a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// Inode of the file read (0 where there is none).
    ino: u64,
    /// Bytes of it read.
    offset: u64,
}

/// An app's log as chunks of bytes: the whole log, then (following) each
/// line appended later.
pub type LogStream = futures::stream::BoxStream<'static, Bytes>;

/// Why an app's log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No app of that name, and no log left by one.
    #[error("no app `{0}`")]
    UnknownApp(String),
    /// The log could not be read.
    #[error("cannot read the log of app `{app}`: {source}")]
    Io {
        /// The app.
        app: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The log of `app` (an app known to `apps`, or one that left a log): with
/// `follow`, the history and then every new line until `apps` begins to
/// shut down or is dropped.
///
/// # Errors
/// [`LogError`].
pub async fn stream(apps: &Arc<Apps>, app: &str, follow: bool) -> Result<LogStream, LogError> {
    let logs_dir = apps.data_dir().join("logs");
    if apps.view(app).is_err() && !log_path(&logs_dir, app).exists() {
        return Err(LogError::UnknownApp(app.to_string()));
    }
    let io = |source| LogError::Io {
        app: app.to_string(),
        source,
    };
    if !follow {
        let path = log_path(&logs_dir, app);
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        let mut text = read_or_empty(&PathBuf::from(rotated)).await.map_err(io)?;
        let (current, _) = read_whole(&path).await.map_err(io)?;
        text.extend_from_slice(&current);
        return Ok(Box::pin(futures::stream::iter([Bytes::from(text)])));
    }
    let log = apps
        .app_log(app)
        .map_err(|e| io(std::io::Error::other(e)))?;
    let follow_log = log.clone();
    let (history, rx) = tokio::task::spawn_blocking(move || follow_log.follow())
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)?;
    let tail = LogFollower {
        _log: log,
        rx,
        apps: Arc::downgrade(apps),
        first: (!history.is_empty()).then(|| Bytes::from(history)),
    };
    Ok(Box::pin(futures::stream::unfold(
        tail,
        |mut tail| async move {
            let chunk = tail.next_chunk().await?;
            Some((chunk, tail))
        },
    )))
}

/// The log response for `app`: `text/plain`, streamed when following.
///
/// # Errors
/// [`LogError`], as [`stream`].
pub async fn response(
    apps: &Arc<Apps>,
    app: &str,
    follow: bool,
) -> Result<Response<Body>, LogError> {
    let chunks = stream(apps, app, follow).await?;
    let frames = chunks.map(|chunk| Ok::<_, BoxError>(Frame::data(chunk)));
    let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

struct LogFollower {
    /// Held so the log (and its broadcast) lives while it is followed.
    _log: Arc<AppLog>,
    rx: tokio::sync::broadcast::Receiver<Bytes>,
    apps: Weak<Apps>,
    first: Option<Bytes>,
}

impl LogFollower {
    /// The next bytes to send; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            match self.apps.upgrade() {
                Some(apps) if !apps.is_shutting_down() => {}
                _ => return None,
            }
            match tokio::time::timeout(SHUTDOWN_CHECK, self.rx.recv()).await {
                Err(_) => continue,
                Ok(Ok(line)) => return Some(line),
                Ok(Err(RecvError::Lagged(n))) => {
                    return Some(Bytes::from(format!(
                        "berth: {n} lines missed (this follower fell behind)\n"
                    )));
                }
                Ok(Err(RecvError::Closed)) => return None,
            }
        }
    }
}

/// Reads all of `path`; returns it and the position after it. A missing
/// file reads as empty.
async fn read_whole(path: &Path) -> std::io::Result<(Vec<u8>, Position)> {
    read_at_most(path, 0, u64::MAX).await
}

async fn read_at_most(
    path: &Path,
    offset: u64,
    limit: u64,
) -> std::io::Result<(Vec<u8>, Position)> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), Position { ino: 0, offset: 0 }));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata().await?;
    file.seek(SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    let want = meta.len().saturating_sub(offset).min(limit);
    (&mut file).take(want).read_to_end(&mut buf).await?;
    let read = buf.len() as u64;
    Ok((
        buf,
        Position {
            ino: inode(&meta),
            offset: offset + read,
        },
    ))
}

async fn read_or_empty(path: &Path) -> std::io::Result<Vec<u8>> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    meta.ino()
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    1
}
