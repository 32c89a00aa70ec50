//! A task's component read from containerd's content store: the OCI form
//! runwasi uses with containerd >= 1.7.7, an image whose config is an
//! ordinary image config (os `wasi`, architecture `wasm`) and whose one
//! layer is the component itself, with a Wasm layer media type. containerd
//! pulls such an image without unpacking that layer (the rootfs is empty);
//! the shim finds it through containerd's gRPC API, as its client:
//! `Containers.Get` (the container's image) → `Images.Get` (its target) →
//! `Content.Read` of the index, the manifest and the layer.
//!
//! Every read is bounded: an index or manifest by [`MAX_MANIFEST_BYTES`],
//! the layer by [`MAX_COMPONENT_BYTES`] and by the size its descriptor
//! declares, and each call by [`CALL_TIMEOUT`]; every blob's sha256 is
//! checked against its digest.
//!
//! The messages are declared here with only the fields the shim reads or
//! sends (field numbers from containerd's `api/services/*/v1/*.proto`;
//! protobuf skips the others), so the build needs no `protoc`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};
use tonic::transport::{Channel, Endpoint};

use crate::container::MAX_COMPONENT_BYTES;

/// Bound on an index or manifest read from the content store.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Bound on each call to containerd (the layer's read included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The layer media types that hold a component: the CNCF artifact's, and
/// those runwasi, Spin and older wasmCloud write (as berth's puller reads).
pub const WASM_LAYER_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// A component found in an image's layer.
#[derive(Debug)]
pub struct WasmLayer {
    /// The layer's digest (`sha256:…`), checked.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// The component.
    pub bytes: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetContainerRequest {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetContainerResponse {
    #[prost(message, optional, tag = "1")]
    container: Option<Container>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Container {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "3")]
    image: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetImageRequest {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetImageResponse {
    #[prost(message, optional, tag = "1")]
    image: Option<Image>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Image {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "3")]
    target: Option<Descriptor>,
}

/// `containerd.types.Descriptor`.
#[derive(Clone, PartialEq, prost::Message)]
struct Descriptor {
    #[prost(string, tag = "1")]
    media_type: String,
    #[prost(string, tag = "2")]
    digest: String,
    #[prost(int64, tag = "3")]
    size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadContentRequest {
    #[prost(string, tag = "1")]
    digest: String,
    #[prost(int64, tag = "2")]
    offset: i64,
    #[prost(int64, tag = "3")]
    size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadContentResponse {
    #[prost(int64, tag = "1")]
    offset: i64,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

/// A connection to containerd's gRPC socket, in one containerd namespace.
pub struct Client {
    channel: Channel,
    namespace: String,
}

impl Client {
    /// Connects to containerd at `address` (the `-address` it gives its
    /// shims: a unix socket path, or `unix://PATH`).
    ///
    /// # Errors
    /// When the socket does not answer.
    pub async fn connect(address: &str, namespace: &str) -> anyhow::Result<Self> {
        let path = address
            .strip_prefix("unix://")
            .unwrap_or(address)
            .to_owned();
        let shown = path.clone();
        // The URI is required by the API and not used: the connector below
        // decides where the connection goes.
        let channel = Endpoint::from_static("http://containerd.invalid")
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .with_context(|| format!("cannot connect to containerd at {shown}"))?;
        Ok(Self {
            channel,
            namespace: namespace.to_owned(),
        })
    }

    fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut req = tonic::Request::new(message);
        req.metadata_mut().insert(
            "containerd-namespace",
            self.namespace
                .parse()
                .context("the containerd namespace is not a valid header value")?,
        );
        req.set_timeout(CALL_TIMEOUT);
        Ok(req)
    }

    async fn unary<Req, Resp>(&self, path: &'static str, message: Req) -> anyhow::Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .with_context(|| format!("containerd is not ready for {path}"))?;
        let resp = grpc
            .unary(
                self.request(message)?,
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::<Req, Resp>::default(),
            )
            .await
            .map_err(|s| anyhow::anyhow!("{path}: {}: {}", s.code(), s.message()))?;
        Ok(resp.into_inner())
    }

    /// Reads blob `digest` whole: at most `limit` bytes (`what` names the
    /// limit in the error), exactly `size` when it is known, sha256 checked.
    async fn read(
        &self,
        digest: &str,
        size: Option<u64>,
        limit: u64,
        what: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let Some(hex_digest) = digest.strip_prefix("sha256:") else {
            bail!("{digest}: only sha256 digests are read");
        };
        if let Some(size) = size
            && size > limit
        {
            bail!("{digest} is {size} bytes, more than {limit} bytes ({what})");
        }
        const PATH: &str = "/containerd.services.content.v1.Content/Read";
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .with_context(|| format!("containerd is not ready for {PATH}"))?;
        let mut stream = grpc
            .server_streaming(
                self.request(ReadContentRequest {
                    digest: digest.to_owned(),
                    offset: 0,
                    size: 0,
                })?,
                http::uri::PathAndQuery::from_static(PATH),
                tonic_prost::ProstCodec::<ReadContentRequest, ReadContentResponse>::default(),
            )
            .await
            .map_err(|s| anyhow::anyhow!("reading {digest}: {}: {}", s.code(), s.message()))?
            .into_inner();
        let mut bytes = Vec::with_capacity(size.unwrap_or(0).try_into().unwrap_or(0));
        let mut hash = Sha256::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("reading {digest}: {}: {}", s.code(), s.message()))?
        {
            if u64::try_from(chunk.offset).ok() != Some(bytes.len() as u64) {
                bail!(
                    "reading {digest}: containerd sent offset {} where {} was next",
                    chunk.offset,
                    bytes.len()
                );
            }
            let total = bytes.len() as u64 + chunk.data.len() as u64;
            if total > limit || size.is_some_and(|s| total > s) {
                bail!(
                    "{digest} is longer than {} bytes ({what})",
                    size.map_or(limit, |s| s.min(limit))
                );
            }
            hash.update(&chunk.data);
            bytes.extend_from_slice(&chunk.data);
        }
        if let Some(size) = size
            && bytes.len() as u64 != size
        {
            bail!(
                "{digest}: containerd's content store holds {} bytes, the descriptor says {size}",
                bytes.len()
            );
        }
        let got = hex::encode(hash.finalize());
        if got != hex_digest {
            bail!("{digest}: the content store's bytes hash to sha256:{got}");
        }
        Ok(bytes)
    }

    /// The Wasm layer of container `id`'s image, or `None` when its image
    /// has none (an ordinary image, or no image).
    ///
    /// # Errors
    /// When containerd cannot be asked, a document cannot be read or
    /// parsed, the image has more than one Wasm layer or a Wasm layer next
    /// to others, or a read breaks a bound or a digest.
    pub async fn wasm_layer(&self, id: &str) -> anyhow::Result<Option<WasmLayer>> {
        let container: GetContainerResponse = self
            .unary(
                "/containerd.services.containers.v1.Containers/Get",
                GetContainerRequest { id: id.to_owned() },
            )
            .await?;
        let image_name = container.container.map(|c| c.image).unwrap_or_default();
        if image_name.is_empty() {
            return Ok(None);
        }
        let image: GetImageResponse = self
            .unary(
                "/containerd.services.images.v1.Images/Get",
                GetImageRequest {
                    name: image_name.clone(),
                },
            )
            .await?;
        let Some(target) = image.image.and_then(|i| i.target) else {
            bail!("containerd's image {image_name} has no target");
        };
        let manifest = if INDEX_TYPES.contains(&target.media_type.as_str()) {
            let index = self.document(&target, "the image index").await?;
            let Some(manifest) = self.wasm_manifest_of(&index, &image_name).await? else {
                return Ok(None);
            };
            manifest
        } else {
            self.document(&target, "the image manifest").await?
        };
        self.layer_of(&manifest, &image_name).await
    }

    /// A JSON document (index or manifest), bounded by [`MAX_MANIFEST_BYTES`].
    async fn document(&self, d: &Descriptor, what: &str) -> anyhow::Result<serde_json::Value> {
        let bytes = self
            .read(
                &d.digest,
                u64::try_from(d.size).ok(),
                MAX_MANIFEST_BYTES,
                "MAX_MANIFEST_BYTES",
            )
            .await
            .with_context(|| format!("cannot read {what}"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{what} {} is not JSON", d.digest))
    }

    /// The manifest of an index's `wasi/wasm` entry (any `wasm` one after
    /// it) that containerd holds: it pulled only the platform asked for.
    async fn wasm_manifest_of(
        &self,
        index: &serde_json::Value,
        image: &str,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let platform = |e: &serde_json::Value| {
            (
                e["platform"]["os"].as_str().unwrap_or("").to_owned(),
                e["platform"]["architecture"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        };
        let mut wasm: Vec<&serde_json::Value> =
            entries.iter().filter(|e| platform(e).1 == "wasm").collect();
        wasm.sort_by_key(|e| platform(e).0 != "wasi");
        let mut errors = Vec::new();
        for entry in wasm {
            let d = descriptor(entry)?;
            match self.document(&d, "the Wasm manifest").await {
                Ok(m) => return Ok(Some(m)),
                Err(e) => errors.push(format!("{}/{}: {e:#}", platform(entry).0, "wasm")),
            }
        }
        if errors.is_empty() {
            Ok(None)
        } else {
            bail!(
                "image {image}: no Wasm manifest of its index is in containerd's content store \
                 (pull it with --platform wasi/wasm): {}",
                errors.join("; ")
            )
        }
    }

    async fn layer_of(
        &self,
        manifest: &serde_json::Value,
        image: &str,
    ) -> anyhow::Result<Option<WasmLayer>> {
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        let wasm: Vec<&serde_json::Value> = layers
            .iter()
            .filter(|l| WASM_LAYER_TYPES.contains(&l["mediaType"].as_str().unwrap_or("")))
            .collect();
        let layer = match (wasm.as_slice(), layers.len()) {
            ([], _) => return Ok(None),
            ([one], 1) => descriptor(one)?,
            ([_], n) => bail!(
                "image {image}: a Wasm layer next to {} other layer(s); the component must be the only layer",
                n - 1
            ),
            (many, _) => bail!(
                "image {image} has {} Wasm layers; the shim runs one component",
                many.len()
            ),
        };
        let bytes = self
            .read(
                &layer.digest,
                Some(u64::try_from(layer.size).unwrap_or(u64::MAX)),
                MAX_COMPONENT_BYTES,
                "MAX_COMPONENT_BYTES",
            )
            .await
            .with_context(|| format!("cannot read the Wasm layer of image {image}"))?;
        Ok(Some(WasmLayer {
            digest: layer.digest,
            media_type: layer.media_type,
            bytes,
        }))
    }
}

fn descriptor(v: &serde_json::Value) -> anyhow::Result<Descriptor> {
    let field = |k: &str| {
        v[k].as_str()
            .map(String::from)
            .with_context(|| format!("a descriptor without `{k}`: {v}"))
    };
    Ok(Descriptor {
        media_type: field("mediaType")?,
        digest: field("digest")?,
        size: v["size"]
            .as_i64()
            .filter(|s| *s >= 0)
            .with_context(|| format!("a descriptor without a valid `size`: {v}"))?,
    })
}
