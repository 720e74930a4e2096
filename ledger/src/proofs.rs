//! What a third party needs to check the log without the store: RFC 9162 Merkle trees over it.
//!
//! - The **log tree**: leaf `i` is the event at position `i + 1`, its entry the event's own hash
//!   (the SHA-256 ending its envelope), so the tree commits to every envelope byte in order. It
//!   is kept in the projection keyspace `proj.merkle` as the roots of its aligned subtrees of
//!   `MERKLE_STORED_LEAVES` leaves, grouped by block of `MERKLE_BLOCK_LEAVES`, and each full
//!   block's root: 2.1 bytes per event, under 1 % of the log. Nodes below the stored level are
//!   recomputed from the events' hashes, read from the log. Caught up from the log on demand like
//!   a projection and, like one, never fsync'd (rebuilt from the log when lost or when it names
//!   another log).
//! - The **stream-heads tree**: one leaf per stream in byte order of its id, the entry
//!   `len u16 ‖ stream ‖ version u64 ‖ position u64 ‖ hash [32]` (big-endian): each stream's last
//!   event at the tree's log size. Proving a stream's head entry proves how many events the stream
//!   has, so with dense versions no event of it can be left out.
//!
//! Not here: signing and the checkpoint's wire form (`proofs` crate), anything about contracts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::merkle::{self, Tree};
use crate::projection_store::{Checkpoint, ProjectionStore};
use crate::{GENESIS_HASH, Hash, Ledger, Result};

/// Leaves per block of the log tree: each full block's root is kept (a power of two: every
/// aligned subtree of this size is a block).
pub const MERKLE_BLOCK_LEAVES: u64 = 256;

/// Leaves under the smallest kept node: the roots of the aligned subtrees of this many leaves
/// are kept; below them nodes are hashed again from the log (at most this many reads a proof).
pub const MERKLE_STORED_LEAVES: u64 = 16;

const _: () = assert!(MERKLE_BLOCK_LEAVES.is_power_of_two());
const _: () = assert!(MERKLE_STORED_LEAVES.is_power_of_two());
const _: () = assert!(MERKLE_STORED_LEAVES < MERKLE_BLOCK_LEAVES);

/// Kept nodes per block.
const NODES_PER_BLOCK: u64 = MERKLE_BLOCK_LEAVES / MERKLE_STORED_LEAVES;

/// Events read from the log per page while catching up.
const CATCH_UP_PAGE_EVENTS: usize = 16_384;

/// Computed subtree hashes one tree remembers before it forgets them all (a bound on memory:
/// 48 bytes each).
const MEMO_MAX: usize = 1 << 20;

/// The projection keyspace that keeps the log tree.
pub const MERKLE_STORE: &str = "merkle";

/// The layout of `proj.merkle` this build keeps, under the key `F`: a store kept in another
/// layout is built again.
const TREE_LAYOUT: u8 = 3;

/// The kept nodes of a block: `N ‖ block u64`.
fn nodes_key(block: u64) -> Vec<u8> {
    let mut key = b"N".to_vec();
    key.extend_from_slice(&block.to_be_bytes());
    key
}

/// A stream's head: `H ‖ stream`, the value `version u64 ‖ position u64 ‖ hash [32]`.
fn head_key(stream: &str) -> Vec<u8> {
    let mut key = b"H".to_vec();
    key.extend_from_slice(stream.as_bytes());
    key
}

/// A full block's root: `R ‖ block u64`.
fn root_key(block: u64) -> Vec<u8> {
    let mut key = b"R".to_vec();
    key.extend_from_slice(&block.to_be_bytes());
    key
}

fn hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks_exact(32)
        .map(|chunk| <Hash>::try_from(chunk).expect("32-byte chunks"))
        .collect()
}

/// A stream's last event at a log size: the stream-heads tree's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    /// The stream.
    pub stream: String,
    /// Its last version.
    pub version: u64,
    /// That event's position.
    pub position: u64,
    /// That event's hash.
    pub hash: Hash,
}

impl StreamHead {
    /// The leaf's entry bytes: `len u16 ‖ stream ‖ version u64 ‖ position u64 ‖ hash [32]`.
    pub fn entry(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.stream.len() + 48);
        let len = u16::try_from(self.stream.len()).expect("stream ids are at most 128 bytes");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(self.stream.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out
    }
}

/// The log tree up to a size, served from `proj.merkle` and the log.
pub struct LogTree {
    ledger: Ledger,
    store: ProjectionStore,
    size: u64,
    /// The stored-level run of leaves last read from the log: (its first leaf, their hashes).
    leaves: Option<(u64, Vec<Hash>)>,
    /// The block whose kept nodes were last read: (block, its nodes).
    nodes: Option<(u64, Vec<Hash>)>,
    /// Subtree hashes computed or read: (start, size) → hash.
    memo: HashMap<(u64, u64), Hash>,
    /// Subtrees of a block or more, kept by the ledger across trees: a log's subtree never
    /// changes, so the next checkpoint's root reads none of them again.
    shared: Arc<Mutex<HashMap<(u64, u64), Hash>>>,
    /// Every stream's head at `size`, in byte order of the stream ids.
    heads: Vec<StreamHead>,
}

impl LogTree {
    fn corrupt(start: u64, detail: &str) -> crate::Error {
        crate::Error::Corrupt {
            position: start + 1,
            detail: detail.to_owned(),
        }
    }

    /// The kept node over leaves `[start, start + MERKLE_STORED_LEAVES)`, if kept.
    fn kept_node(&mut self, start: u64) -> Result<Option<Hash>> {
        let block = start / MERKLE_BLOCK_LEAVES;
        if self
            .nodes
            .as_ref()
            .is_none_or(|(cached, _)| *cached != block)
        {
            let bytes = self.store.get(&nodes_key(block))?.unwrap_or_default();
            self.nodes = Some((block, hashes(&bytes)));
        }
        let nodes = &self.nodes.as_ref().expect("just read").1;
        let index = ((start % MERKLE_BLOCK_LEAVES) / MERKLE_STORED_LEAVES) as usize;
        Ok(nodes.get(index).copied())
    }

    /// The tree's size: the log's head when it was caught up.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Every stream's head at the tree's size (each stream's last event at or before it), in
    /// byte order of the stream ids: the stream-heads tree's leaves.
    pub fn heads(&self) -> &[StreamHead] {
        &self.heads
    }

    fn remember(&mut self, start: u64, size: u64, hash: Hash) {
        if self.memo.len() >= MEMO_MAX {
            self.memo.clear();
        }
        self.memo.insert((start, size), hash);
    }
}

impl Tree for LogTree {
    fn leaf(&mut self, index: u64) -> Result<Hash> {
        if index >= self.size {
            return Err(Self::corrupt(
                index,
                "the log tree has no leaf for this position (catch it up first)",
            ));
        }
        let first = index - index % MERKLE_STORED_LEAVES;
        if self
            .leaves
            .as_ref()
            .is_none_or(|(cached, _)| *cached != first)
        {
            let count = MERKLE_STORED_LEAVES.min(self.size - first);
            let leaves = self
                .ledger
                .event_hashes(first + 1, count as usize)?
                .iter()
                .map(|hash| merkle::leaf_hash(hash))
                .collect();
            self.leaves = Some((first, leaves));
        }
        let leaves = &self.leaves.as_ref().expect("just read").1;
        leaves
            .get((index - first) as usize)
            .copied()
            .ok_or_else(|| Self::corrupt(index, "the log is shorter than its tree"))
    }

    fn subtree(&mut self, start: u64, size: u64) -> Result<Hash> {
        if size == 1 {
            return self.leaf(start);
        }
        if let Some(hash) = self.memo.get(&(start, size)) {
            return Ok(*hash);
        }
        let large = size >= MERKLE_BLOCK_LEAVES;
        let known = large
            .then(|| {
                let shared = self.shared.lock().expect("log tree cache lock");
                shared.get(&(start, size)).copied()
            })
            .flatten();
        if let Some(hash) = known {
            self.remember(start, size, hash);
            return Ok(hash);
        }
        let aligned = |leaves: u64| size == leaves && start.is_multiple_of(leaves);
        let kept = if aligned(MERKLE_BLOCK_LEAVES) {
            match self.store.get(&root_key(start / MERKLE_BLOCK_LEAVES))? {
                Some(bytes) => Some(
                    <Hash>::try_from(bytes.as_slice())
                        .map_err(|_| Self::corrupt(start, "a kept block root is not 32 bytes"))?,
                ),
                None => None,
            }
        } else if aligned(MERKLE_STORED_LEAVES) {
            self.kept_node(start)?
        } else {
            None
        };
        let hash = match kept {
            Some(hash) => hash,
            None => merkle::subtree_from_leaves(self, start, size)?,
        };
        self.remember(start, size, hash);
        if large {
            let mut shared = self.shared.lock().expect("log tree cache lock");
            if shared.len() >= MEMO_MAX {
                shared.clear();
            }
            shared.insert((start, size), hash);
        }
        Ok(hash)
    }
}

impl Ledger {
    /// The log tree and the stream heads caught up to the committed head: a tree to ask for
    /// roots and proofs of any size up to it.
    ///
    /// Catching up reads each new event's stream, version and hash from its envelope's first
    /// and last bytes, and keeps the new nodes and heads in `proj.merkle`, one commit per page.
    ///
    /// # Errors
    /// When the log or `proj.merkle` cannot be read or written.
    pub fn log_tree(&self) -> Result<LogTree> {
        let _one_at_a_time = self.inner.log_tree.lock().expect("log tree lock");
        let store = self.projection_store(MERKLE_STORE)?;
        let mut from = store.checkpoint()?.unwrap_or(Checkpoint {
            position: 0,
            hash: GENESIS_HASH,
        });
        // Kept for another log (a store swapped in), ahead of this one or in another layout:
        // built again.
        if from.position > 0 {
            let here = self.event_hashes(from.position, 1)?;
            let layout = store.get(b"F")?;
            if here.first() != Some(&from.hash) || layout.as_deref() != Some(&[TREE_LAYOUT]) {
                store.clear()?;
                from = Checkpoint {
                    position: 0,
                    hash: GENESIS_HASH,
                };
            }
        }
        // The leaves of the unfinished stored-level run, hashed again from the log; the kept
        // nodes of the unfinished block.
        let mut block = from.position / MERKLE_BLOCK_LEAVES;
        let run_start = from.position - from.position % MERKLE_STORED_LEAVES;
        let mut run: Vec<Hash> = self
            .event_hashes(run_start + 1, (from.position - run_start) as usize)?
            .iter()
            .map(|hash| merkle::leaf_hash(hash))
            .collect();
        let mut nodes: Vec<Hash> = hashes(&store.get(&nodes_key(block))?.unwrap_or_default());
        nodes.truncate((from.position % MERKLE_BLOCK_LEAVES / MERKLE_STORED_LEAVES) as usize);
        let mut checkpoint = from;
        // From now on the writer hands over what it commits (`recent.rs`).
        self.inner.recent.enable();
        loop {
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = vec![(b"F".to_vec(), vec![TREE_LAYOUT])];
            let mut heads: HashMap<String, (u64, u64, Hash)> = HashMap::new();
            let mut last = checkpoint;
            let mut failed = None;
            let mut on_event = |position: u64, stream: &str, version: u64, hash: Hash| {
                last = Checkpoint { position, hash };
                match heads.get_mut(stream) {
                    Some(head) => *head = (version, position, hash),
                    None => {
                        heads.insert(stream.to_owned(), (version, position, hash));
                    }
                }
                run.push(merkle::leaf_hash(&hash));
                if run.len() as u64 != MERKLE_STORED_LEAVES {
                    return;
                }
                match merkle::root(&mut merkle::Leaves(&run), MERKLE_STORED_LEAVES) {
                    Ok(node) => nodes.push(node),
                    Err(error) => failed = Some(error),
                }
                run.clear();
                if nodes.len() as u64 != NODES_PER_BLOCK {
                    return;
                }
                match merkle::root(&mut merkle::Leaves(&nodes), NODES_PER_BLOCK) {
                    Ok(root) => {
                        entries.push((nodes_key(block), nodes.concat()));
                        entries.push((root_key(block), root.to_vec()));
                    }
                    Err(error) => failed = Some(error),
                }
                nodes.clear();
                block += 1;
            };
            let next = checkpoint.position + 1;
            // What the writer just committed, from memory; else (or beyond it) from the log.
            let visited = match self.inner.recent.take(next, CATCH_UP_PAGE_EVENTS) {
                Some(recent) if !recent.is_empty() => {
                    for (offset, (stream, version, hash)) in recent.iter().enumerate() {
                        on_event(next + offset as u64, stream, *version, *hash);
                    }
                    recent.len() as u64
                }
                _ => self.visit_heads(next, CATCH_UP_PAGE_EVENTS, &mut on_event)?,
            };
            if let Some(error) = failed {
                return Err(error);
            }
            if visited == 0 {
                break;
            }
            if !nodes.is_empty() {
                entries.push((nodes_key(block), nodes.concat()));
            }
            for (stream, (version, position, hash)) in heads {
                let mut value = Vec::with_capacity(48);
                value.extend_from_slice(&version.to_be_bytes());
                value.extend_from_slice(&position.to_be_bytes());
                value.extend_from_slice(&hash);
                entries.push((head_key(&stream), value));
            }
            checkpoint = last;
            store.commit(entries, checkpoint)?;
        }
        let mut heads = Vec::new();
        let mut bad = None;
        store.visit_prefix(b"H", |key, value| {
            let stream = std::str::from_utf8(&key[1..]);
            match (stream, value.len()) {
                (Ok(stream), 48) => heads.push(StreamHead {
                    stream: stream.to_owned(),
                    version: u64::from_be_bytes(value[..8].try_into().expect("8 bytes")),
                    position: u64::from_be_bytes(value[8..16].try_into().expect("8 bytes")),
                    hash: value[16..].try_into().expect("32 bytes"),
                }),
                _ => bad = Some(key.to_vec()),
            }
        })?;
        if let Some(key) = bad {
            return Err(crate::Error::Corrupt {
                position: checkpoint.position,
                detail: format!("a kept stream head {key:?} is malformed"),
            });
        }
        // Keys are `H ‖ stream`: byte order of the keys is byte order of the stream ids.
        Ok(LogTree {
            ledger: self.clone(),
            store,
            size: checkpoint.position,
            leaves: None,
            nodes: None,
            memo: HashMap::new(),
            shared: self.inner.log_tree_nodes.clone(),
            heads,
        })
    }
}

/// The stream-heads tree's leaf hashes.
pub fn head_leaves(heads: &[StreamHead]) -> Vec<Hash> {
    heads
        .iter()
        .map(|head| merkle::leaf_hash(&head.entry()))
        .collect()
}
