//! `GET /v1/apps/{name}/logs[?follow=true]`: an app's captured guest output.
//!
//! Without `follow`, the whole log (the rotated part first, see
//! [`crate::logs`]). With it, the same, then every line appended later, as
//! a streaming body: the file is polled every [`POLL`]. A rotation (the file
//! replaced by a new one) is noticed by its inode changing or its length
//! shrinking; the rest of the old file is sent before the new one. The stream
//! ends when the client goes away or the server begins to shut down.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::apps::Apps;
use crate::http::{Body, BoxError};
use crate::logs::log_path;

/// How often a followed log is polled.
pub const POLL: Duration = Duration::from_millis(250);
/// Largest chunk read from the file at once.
const CHUNK: u64 = 1024 * 1024;

/// Where a follower has read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// Inode of the file read (0 where there is none).
    ino: u64,
    /// Bytes of it sent.
    offset: u64,
}

/// The log response for `app` under `logs_dir`. A follow ends when `apps`
/// begins to shut down or is dropped.
///
/// # Errors
/// An I/O error reading the log, as the error to send.
pub async fn response(
    logs_dir: &Path,
    app: &str,
    follow: bool,
    apps: Weak<Apps>,
) -> std::io::Result<Response<Body>> {
    let path = log_path(logs_dir, app);
    let mut rotated = path.clone().into_os_string();
    rotated.push(".1");
    let rotated = PathBuf::from(rotated);
    let mut text = read_or_empty(&rotated).await?;
    let (current, pos) = read_whole(&path).await?;
    text.extend_from_slice(&current);
    let body: Body = if follow {
        let first = Bytes::from(text);
        let tail = LogFollower {
            path,
            rotated,
            pos,
            apps,
            first: (!first.is_empty()).then_some(first),
        };
        let stream = futures::stream::unfold(tail, |mut tail| async move {
            let chunk = tail.next_chunk().await?;
            Some((
                chunk.map(Frame::data).map_err(|e| Box::new(e) as BoxError),
                tail,
            ))
        });
        StreamBody::new(stream).boxed_unsync()
    } else {
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync()
    };
    let mut resp = Response::new(body);
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
    path: PathBuf,
    rotated: PathBuf,
    pos: Position,
    apps: Weak<Apps>,
    first: Option<Bytes>,
}

impl LogFollower {
    /// The next bytes to send; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        loop {
            match self.apps.upgrade() {
                Some(apps) if !apps.is_shutting_down() => {}
                _ => return None,
            }
            match self.poll_file().await {
                Ok(Some(bytes)) => return Some(Ok(bytes)),
                Ok(None) => tokio::time::sleep(POLL).await,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// New bytes, if any.
    async fn poll_file(&mut self) -> std::io::Result<Option<Bytes>> {
        let now = match tokio::fs::metadata(&self.path).await {
            Ok(m) => Position {
                ino: inode(&m),
                offset: m.len(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Position { ino: 0, offset: 0 },
            Err(e) => return Err(e),
        };
        if now.ino != self.pos.ino || now.offset < self.pos.offset {
            // Rotated: what is left of the file we were reading is now the
            // `.1` file (when it is the same file), then start the new one.
            let mut rest = Vec::new();
            if let Ok(m) = tokio::fs::metadata(&self.rotated).await
                && self.pos.ino != 0
                && inode(&m) == self.pos.ino
            {
                rest = read_from(&self.rotated, self.pos.offset).await?.0;
            }
            self.pos = Position {
                ino: now.ino,
                offset: 0,
            };
            if !rest.is_empty() {
                return Ok(Some(Bytes::from(rest)));
            }
        }
        if now.offset > self.pos.offset {
            let (bytes, pos) = read_from(&self.path, self.pos.offset).await?;
            self.pos = pos;
            if !bytes.is_empty() {
                return Ok(Some(Bytes::from(bytes)));
            }
        }
        Ok(None)
    }
}

/// Reads `path` from `offset` (at most [`CHUNK`] bytes); returns what was
/// read and the position after it. A missing file reads as empty.
async fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<u8>, Position)> {
    read_at_most(path, offset, CHUNK).await
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
