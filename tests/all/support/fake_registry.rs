//! A fake OCI registry on loopback, for registries that misbehave on demand
//! (the real one in `registry.rs` cannot): hyper serving, from memory, just
//! what `oci_client` asks for a pull — `GET /v2/`, `HEAD` and `GET
//! /v2/<repo>/manifests/<tag or digest>`, `GET /v2/<repo>/blobs/<digest>` —
//! with each blob sent as its [`Serve`] says: honestly, or lying about its
//! size, dripping, or breaking off. It stops when the test's runtime ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};

/// How a blob is sent.
#[derive(Debug, Clone)]
pub enum Serve {
    /// As it is, with its `Content-Length`.
    Whole,
    /// As it is, chunked (no `Content-Length`).
    Chunked,
    /// Chunked, with these bytes after it.
    WithExtra(Vec<u8>),
    /// With this `Content-Length`, and that many bytes (cut, or padded with
    /// zeros).
    Announced(u64),
    /// Chunked, `chunk` bytes every `every`.
    Drip { chunk: usize, every: Duration },
    /// With its `Content-Length`, but the connection breaks after this many
    /// bytes.
    BreakAfter(usize),
}

type Body = UnsyncBoxBody<Bytes, io::Error>;

#[derive(Debug, Default)]
struct State {
    /// `repo/reference` → (media type, body).
    manifests: HashMap<String, (String, Bytes)>,
    /// digest → (bytes, how to send them).
    blobs: HashMap<String, (Bytes, Serve)>,
    /// `METHOD path` of every request.
    requests: Vec<String>,
}

/// A running fake registry.
#[derive(Debug, Clone)]
pub struct FakeRegistry {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl FakeRegistry {
    /// Starts one on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    /// `127.0.0.1:PORT/<repo_and_tag>`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// Adds a blob sent as `serve`; returns its digest.
    pub fn blob(&self, bytes: &[u8], serve: Serve) -> String {
        let digest = digest(bytes);
        self.lock()
            .blobs
            .insert(digest.clone(), (Bytes::copy_from_slice(bytes), serve));
        digest
    }

    /// Adds an OCI image manifest to `repo` under `tag` (and its digest)
    /// whose config and layers are these `(digest, size)` descriptors, sizes
    /// as given (they may lie); returns the manifest's digest.
    pub fn image(
        &self,
        repo: &str,
        tag: &str,
        config: (&str, u64),
        layers: &[(&str, u64)],
    ) -> String {
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.0,
                "size": config.1,
            },
            "layers": layers.iter().map(|(d, size)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": d,
                "size": size,
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let digest = digest(&manifest);
        let entry = (
            "application/vnd.oci.image.manifest.v1+json".to_owned(),
            Bytes::from(manifest),
        );
        let mut state = self.lock();
        state
            .manifests
            .insert(format!("{repo}/{tag}"), entry.clone());
        state.manifests.insert(format!("{repo}/{digest}"), entry);
        digest
    }

    /// The length of the manifest at `repo/reference`.
    pub fn manifest_len(&self, repo_reference: &str) -> u64 {
        self.lock().manifests[repo_reference].1.len() as u64
    }

    /// Every request so far, as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// How many `GET`s of blob `digest` it has answered.
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with("GET ") && r.ends_with(&format!("/blobs/{digest}")))
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

fn not_found() -> Response<Body> {
    full(
        StatusCode::NOT_FOUND,
        r#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#,
    )
}

fn answer(state: &Mutex<State>, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let mut state = state.lock().unwrap();
    state.requests.push(format!("{} {path}", req.method()));
    if path == "/v2/" {
        return full(StatusCode::OK, "{}");
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return not_found();
    };
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        let Some((media_type, body)) = state.manifests.get(&format!("{repo}/{reference}")) else {
            return not_found();
        };
        let mut r = if req.method() == Method::HEAD {
            let mut r = full(StatusCode::OK, Bytes::new());
            r.headers_mut()
                .insert("content-length", body.len().to_string().parse().unwrap());
            r
        } else {
            full(StatusCode::OK, body.clone())
        };
        r.headers_mut()
            .insert("content-type", media_type.parse().unwrap());
        r.headers_mut()
            .insert("docker-content-digest", digest(body).parse().unwrap());
        return r;
    }
    if let Some((_, blob)) = rest.rsplit_once("/blobs/") {
        let Some((bytes, serve)) = state.blobs.get(blob).cloned() else {
            return not_found();
        };
        return send_blob(bytes, &serve);
    }
    not_found()
}

fn chunked(chunks: Vec<Result<Bytes, io::Error>>) -> Body {
    let frames = futures::stream::iter(chunks.into_iter().map(|c| c.map(Frame::data)));
    StreamBody::new(frames).boxed_unsync()
}

fn send_blob(bytes: Bytes, serve: &Serve) -> Response<Body> {
    let (body, length) = match serve {
        Serve::Whole => (
            Full::new(bytes.clone())
                .map_err(|e| match e {})
                .boxed_unsync(),
            Some(bytes.len() as u64),
        ),
        Serve::Chunked => (chunked(vec![Ok(bytes)]), None),
        Serve::WithExtra(extra) => (
            chunked(vec![Ok(bytes), Ok(Bytes::copy_from_slice(extra))]),
            None,
        ),
        Serve::Announced(n) => {
            let mut data = bytes.to_vec();
            data.resize(usize::try_from(*n).unwrap(), 0);
            (
                Full::new(Bytes::from(data))
                    .map_err(|e| match e {})
                    .boxed_unsync(),
                Some(*n),
            )
        }
        Serve::Drip { chunk, every } => {
            let (chunk, every) = (*chunk, *every);
            let drip = futures::stream::unfold((bytes, true), move |(rest, first)| async move {
                if rest.is_empty() {
                    return None;
                }
                if !first {
                    tokio::time::sleep(every).await;
                }
                let mut rest = rest;
                let now = rest.split_to(chunk.min(rest.len()));
                Some((Ok::<_, io::Error>(Frame::data(now)), (rest, false)))
            });
            (StreamBody::new(drip).boxed_unsync(), None)
        }
        Serve::BreakAfter(n) => {
            // The bytes go out first; the break comes a moment later.
            let sent = bytes.slice(..*n);
            let parts = futures::stream::unfold(0, move |step| {
                let sent = sent.clone();
                async move {
                    match step {
                        0 => Some((Ok(Frame::data(sent)), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Some((Err(io::Error::other("connection broken on purpose")), 2))
                        }
                        _ => None,
                    }
                }
            });
            (
                StreamBody::new(parts).boxed_unsync(),
                Some(bytes.len() as u64),
            )
        }
    };
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", "application/octet-stream".parse().unwrap());
    if let Some(length) = length {
        r.headers_mut()
            .insert("content-length", length.to_string().parse().unwrap());
    }
    r
}
