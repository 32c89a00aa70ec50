//! The `list-keys` cursors: an opaque number per page handed out, standing
//! for the page's last key (see the module doc of [`super`]).

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{CURSOR_TTL, MAX_CURSORS, Namespace};

/// Where a cursor picks up: after `after` in `ns`.
struct Cursor {
    ns: Arc<Namespace>,
    after: String,
    made: Instant,
    /// Order of making (ties of `made` go to the older).
    seq: u64,
}

/// The `list-keys` cursors the host has handed out: an opaque number for
/// the last key of a page. A number from another app or bucket, an expired
/// one or a made-up one is refused.
pub(crate) struct Cursors {
    hasher: RandomState,
    inner: Mutex<(u64, HashMap<u64, Cursor>)>,
}

impl Cursors {
    pub(super) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            inner: Mutex::new((0, HashMap::new())),
        }
    }

    /// A new cursor for the page of `ns` that ended with `after`.
    pub(super) fn make(&self, ns: &Arc<Namespace>, after: String) -> u64 {
        let now = Instant::now();
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (counter, map) = &mut *guard;
        if map.len() >= MAX_CURSORS {
            map.retain(|_, c| now.duration_since(c.made) < CURSOR_TTL);
        }
        if map.len() >= MAX_CURSORS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, c)| (c.made, c.seq))
                .map(|(id, _)| *id)
        {
            map.remove(&oldest);
        }
        // A keyed hash of a counter: unique while it lasts, and no guest can
        // tell from one cursor what another is.
        let id = loop {
            *counter += 1;
            let mut h = self.hasher.build_hasher();
            h.write_u64(*counter);
            let id = h.finish();
            if id != 0 && !map.contains_key(&id) {
                break id;
            }
        };
        map.insert(
            id,
            Cursor {
                ns: ns.clone(),
                after,
                made: now,
                seq: *counter,
            },
        );
        id
    }

    /// The key `id` picks up after, if it was made for `ns` and has not
    /// expired.
    pub(super) fn after(&self, id: u64, ns: &Namespace) -> Option<String> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .1
            .get(&id)
            .filter(|c| *c.ns == *ns && c.made.elapsed() < CURSOR_TTL)
            .map(|c| c.after.clone())
    }

    /// How many cursors the host keeps now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1.len()
    }
}
