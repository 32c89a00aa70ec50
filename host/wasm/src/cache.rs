//! The on-disk compile cache.
//!
//! A component is compiled once; the compiled artifact is written to
//! `<data-dir>/compiled/<key>.cwasm`, where the key is the sha256 of the Wasm
//! bytes and of the engine's compatibility hash (wasmtime version, target and
//! every setting that changes generated code). A restart, or a scale-up from
//! zero, maps that file instead of compiling again. Files are written to a
//! temporary name, synced and renamed, so a crash never leaves a torn artifact
//! under a real key.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::files::write_atomic;

/// Where compiled artifacts go, and what key the running engine uses.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_hash: String,
}

/// How a component got loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedFrom {
    /// Compiled now (and written to the cache).
    Compiled,
    /// Mapped from a cached artifact.
    Cache,
}

/// Feeds `Hash` output into sha256, so the key is stable across runs.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        // Only `write` is used; the digest is read with `finalize`.
        0
    }
}

impl CompileCache {
    /// A cache under `dir` for `engine`.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(dir: impl Into<PathBuf>, engine: &Engine) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Self {
            dir,
            engine_hash: hex::encode(h.0.finalize()),
        })
    }

    /// The hex digest of the engine's compatibility hash.
    pub fn engine_hash(&self) -> &str {
        &self.engine_hash
    }

    /// The artifact path for Wasm bytes whose sha256 is `wasm_sha256` (hex).
    pub fn path_for(&self, wasm_sha256: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(wasm_sha256.as_bytes());
        h.update(b"\0");
        h.update(self.engine_hash.as_bytes());
        self.dir
            .join(format!("{}.cwasm", hex::encode(h.finalize())))
    }

    /// Maps the cached artifact of the Wasm bytes whose sha256 is
    /// `wasm_sha256`, without the bytes themselves; `None` when there is no
    /// usable artifact.
    pub fn load_cached(&self, engine: &Engine, wasm_sha256: &str) -> Option<Component> {
        let path = self.path_for(wasm_sha256);
        if !path.exists() {
            return None;
        }
        deserialize(engine, &path)
            .inspect_err(|e| {
                tracing::warn!(path = %path.display(), "ignoring unusable compiled artifact: {e:#}");
            })
            .ok()
    }

    /// Loads the component for `wasm` from the cache, or compiles and caches it.
    ///
    /// # Errors
    /// When the bytes do not compile, or the artifact cannot be written.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> anyhow::Result<(Component, LoadedFrom)> {
        let path = self.path_for(wasm_sha256);
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(c) => return Ok((c, LoadedFrom::Cache)),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "ignoring unusable compiled artifact, compiling again: {e:#}"
                ),
            }
        }
        let compiled = engine
            .precompile_component(wasm)
            .map_err(anyhow::Error::from)?;
        write_atomic(&path, &compiled)?;
        let component = deserialize(engine, &path)?;
        Ok((component, LoadedFrom::Compiled))
    }
}

fn deserialize(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be an artifact produced by
    // `Engine::precompile_component` for a compatible engine. Only this module
    // writes into the cache directory (inside berth's private data dir), always
    // through `write_atomic`, and the file name is keyed by the engine's
    // compatibility hash; wasmtime additionally checks the header, version and
    // settings recorded in the artifact and refuses mismatches.
    #[expect(
        unsafe_code,
        reason = "loading a precompiled artifact this module wrote; see SAFETY"
    )]
    let component = unsafe { Component::deserialize_file(engine, path) };
    component.map_err(anyhow::Error::from)
}
