//! Compiled components kept in memory, one per sha256 of the Wasm bytes.
//!
//! Every app and revision whose component has the same sha256 shares one
//! [`Compiled`]: one mapping of the compiled artifact and one pre-linked
//! [`ProxyPre`]. A component stays resident after its last instance stops
//! (an app at zero) so the next start is as cheap as a warm one, within a
//! budget of mapped bytes ([`Resident::budget`]); beyond it the least
//! recently used idle components are dropped (back to the on-disk artifact
//! of the compile cache). Components in use are never dropped.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use wasmtime_wasi_http::handler::ProxyPre;

use super::cache::LoadedFrom;
use super::guest::GuestState;

/// Mapped bytes of idle compiled components kept resident unless the
/// operator says otherwise (`--wasm-resident-budget`).
pub const DEFAULT_RESIDENT_BUDGET: u64 = 256 << 20;

/// One compiled, pre-linked component: a `wasi:http/incoming-handler@0.2`
/// proxy or a `wasi:http/handler@0.3` service ([`ProxyPre`] says which).
pub struct Compiled {
    pub(super) pre: ProxyPre<GuestState>,
    pub(super) sha256: String,
    pub(super) loaded_from: LoadedFrom,
    /// Bytes of the compiled image mapped in memory.
    pub(super) bytes: u64,
}

impl Compiled {
    /// The engine it was compiled for.
    pub(super) fn engine(&self) -> &wasmtime::Engine {
        match &self.pre {
            ProxyPre::P2(pre) => pre.engine(),
            ProxyPre::P3(pre) => pre.engine(),
        }
    }

    /// The wasi:http world the component exports.
    pub fn world(&self) -> crate::World {
        match self.pre {
            ProxyPre::P2(_) => crate::World::P2,
            ProxyPre::P3(_) => crate::World::P3,
        }
    }
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compiled")
            .field("sha256", &self.sha256)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

struct Entry {
    compiled: Arc<Compiled>,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    by_sha: HashMap<String, Entry>,
    clock: u64,
    bytes: u64,
}

/// The resident compiled components, by sha256.
pub struct Resident {
    inner: Mutex<Inner>,
    budget: u64,
}

impl fmt::Debug for Resident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Resident")
            .field("components", &inner.by_sha.len())
            .field("bytes", &inner.bytes)
            .field("budget", &self.budget)
            .finish()
    }
}

impl Resident {
    /// Keeps idle components while all resident ones map at most `budget`
    /// bytes.
    pub fn new(budget: u64) -> Self {
        Self {
            inner: Mutex::default(),
            budget,
        }
    }

    /// The budget in mapped bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Components resident now, and the bytes they map.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.by_sha.len(), inner.bytes)
    }

    /// Whether the component of `sha256` is resident.
    pub fn contains(&self, sha256: &str) -> bool {
        self.lock().by_sha.contains_key(sha256)
    }

    /// The resident component of `sha256`, marked as just used.
    pub fn get(&self, sha256: &str) -> Option<Arc<Compiled>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.by_sha.get_mut(sha256)?;
        entry.last_used = now;
        Some(entry.compiled.clone())
    }

    /// Keeps `compiled` resident (or returns the one already kept for its
    /// sha256), then drops idle components past the budget.
    pub fn insert(&self, compiled: Compiled) -> Arc<Compiled> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        if let Some(entry) = inner.by_sha.get_mut(&compiled.sha256) {
            entry.last_used = now;
            return entry.compiled.clone();
        }
        let compiled = Arc::new(compiled);
        inner.bytes += compiled.bytes;
        inner.by_sha.insert(
            compiled.sha256.clone(),
            Entry {
                compiled: compiled.clone(),
                last_used: now,
            },
        );
        // The caller holds `compiled`: it is in use, never a victim here.
        self.trim(&mut inner, None);
        compiled
    }

    /// Called when a user of `released` lets go of it (it still holds its
    /// own reference): drops idle components past the budget.
    pub fn release(&self, released: &Arc<Compiled>) {
        let mut inner = self.lock();
        self.trim(&mut inner, Some(released));
    }

    /// Drops least recently used idle components until the resident ones
    /// fit the budget or none is idle. Idle: nobody but this table holds
    /// it (`releasing` is about to let go of its reference).
    fn trim(&self, inner: &mut Inner, releasing: Option<&Arc<Compiled>>) {
        while inner.bytes > self.budget {
            let victim = inner
                .by_sha
                .iter()
                .filter(|(_, e)| {
                    let held = Arc::strong_count(&e.compiled);
                    held == 1
                        || (held == 2 && releasing.is_some_and(|r| Arc::ptr_eq(r, &e.compiled)))
                })
                .min_by_key(|(_, e)| e.last_used)
                .map(|(sha, _)| sha.clone());
            let Some(sha) = victim else { break };
            if let Some(e) = inner.by_sha.remove(&sha) {
                inner.bytes -= e.compiled.bytes;
                tracing::info!(
                    sha256 = %sha,
                    bytes = e.compiled.bytes,
                    budget = self.budget,
                    "idle compiled component dropped (past the resident budget, --wasm-resident-budget)"
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
