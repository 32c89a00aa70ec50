//! What one layer has put in place ([`Written`]): every path it wrote and
//! the directories above them, as a trie of components. A path costs one
//! node per component that no earlier path had, so a layer's bookkeeping
//! grows with what it writes, never with the square of its depth (a set of
//! whole paths with their ancestors once held, for one path `N` components
//! deep, `N` copies of prefixes up to `N` components long).
//!
//! Nodes are bounded by [`UnpackLimits::max_entries`](super::UnpackLimits),
//! and a node's name is one path component, which exists on disk and so is
//! at most `NAME_MAX` (255) bytes: the trie of a layer at the limit takes
//! some 100 bytes a node on average, a few hundred at worst.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::limits::LimitExceeded;

/// A node of the trie: a path the layer put in place, or an ancestor of one.
pub(super) type NodeId = u32;

/// The node of the rootfs itself (the empty path).
pub(super) const ROOT: NodeId = 0;

/// The paths a layer has put in place, with their ancestors.
#[derive(Debug)]
pub(super) struct Written {
    /// Key: the parent's id (4 bytes, little-endian) and the component's
    /// name; value: the component's id. [`ROOT`] is implied.
    nodes: HashMap<Box<[u8]>, NodeId>,
    /// Nodes allowed, [`ROOT`] not counted.
    limit: u64,
}

fn key(parent: NodeId, name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + name.len());
    key.extend_from_slice(&parent.to_le_bytes());
    key.extend_from_slice(name);
    key
}

impl Written {
    pub(super) fn new(limit: u64) -> Self {
        Self {
            nodes: HashMap::new(),
            limit,
        }
    }

    /// How many paths are recorded ([`ROOT`] not counted).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The node of `parent/name`, if the layer put something there or below.
    pub(super) fn child(&self, parent: NodeId, name: &OsStr) -> Option<NodeId> {
        self.nodes.get(&key(parent, name.as_bytes())[..]).copied()
    }

    /// The node of `rel` (a normalized path), if the layer put something
    /// there or below; [`ROOT`] for the empty path.
    pub(super) fn find(&self, rel: &Path) -> Option<NodeId> {
        rel.iter()
            .try_fold(ROOT, |node, component| self.child(node, component))
    }

    /// Records that the layer put `rel` in place (its ancestors are implied
    /// and recorded too); returns its node.
    ///
    /// # Errors
    /// [`LimitExceeded::Paths`] when the layer already holds the most paths
    /// allowed.
    pub(super) fn insert(&mut self, rel: &Path) -> Result<NodeId, LimitExceeded> {
        let mut node = ROOT;
        for component in rel {
            let k = key(node, component.as_bytes());
            node = match self.nodes.get(&k[..]) {
                Some(&id) => id,
                None => {
                    let id = NodeId::try_from(self.nodes.len() + 1)
                        .ok()
                        .filter(|&id| u64::from(id) <= self.limit)
                        .ok_or(LimitExceeded::Paths { limit: self.limit })?;
                    self.nodes.insert(k.into_boxed_slice(), id);
                    id
                }
            };
        }
        Ok(node)
    }

    /// The paths of `ids`, each with its depth.
    pub(super) fn paths(&self, ids: impl IntoIterator<Item = NodeId>) -> Vec<(PathBuf, usize)> {
        // Parent and name of every node, by id.
        let none: &[u8] = &[];
        let mut up: Vec<(NodeId, &[u8])> = vec![(ROOT, none); self.nodes.len() + 1];
        for (k, &id) in &self.nodes {
            let (parent, name) = k.split_at(4);
            let parent = NodeId::from_le_bytes(parent.try_into().unwrap_or_default());
            up[id as usize] = (parent, name);
        }
        ids.into_iter()
            .map(|id| {
                let mut names = Vec::new();
                let mut node = id;
                while node != ROOT {
                    let (parent, name) = up[node as usize];
                    names.push(OsStr::from_bytes(name));
                    node = parent;
                }
                let depth = names.len();
                (names.into_iter().rev().collect(), depth)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_share_their_ancestors() {
        let mut w = Written::new(10);
        let c = w.insert(Path::new("a/b/c")).unwrap();
        assert_eq!(w.len(), 3);
        let d = w.insert(Path::new("a/b/d")).unwrap();
        assert_eq!(w.len(), 4, "a and a/b are recorded once");
        assert_eq!(
            w.insert(Path::new("a/b")).unwrap(),
            w.find(Path::new("a/b")).unwrap()
        );
        assert_eq!(w.len(), 4);
        assert_eq!(w.find(Path::new("")), Some(ROOT));
        assert_eq!(w.find(Path::new("a/b/c")), Some(c));
        assert_eq!(w.find(Path::new("a/x")), None);
        let b = w.find(Path::new("a/b")).unwrap();
        assert_eq!(w.child(b, OsStr::new("d")), Some(d));
        assert_eq!(
            w.paths([c, ROOT]),
            [(PathBuf::from("a/b/c"), 3), (PathBuf::new(), 0)]
        );
    }

    #[test]
    fn the_number_of_paths_is_bounded() {
        let mut w = Written::new(3);
        w.insert(Path::new("a/b/c")).unwrap();
        assert_eq!(
            w.insert(Path::new("a/x")),
            Err(LimitExceeded::Paths { limit: 3 })
        );
        assert_eq!(w.len(), 3);
        w.insert(Path::new("a/b")).unwrap();
    }
}
