//! What a third party needs to check the log without the store: RFC 9162 Merkle trees over it.
//!
//! - The **log tree**: leaf `i` is the event at position `i + 1`, its entry the event's own hash
//!   (the SHA-256 ending its envelope), so the tree commits to every envelope byte in order. Its
//!   leaf hashes are kept in blocks of `MERKLE_BLOCK_LEAVES` in the projection keyspace
//!   `proj.merkle` with each full block's root (32 bytes per event and one root per block:
//!   about a tenth of an envelope), caught up from the log on demand like a projection and, like
//!   one, never fsync'd (rebuilt from the log when lost or when it names another log).
//! - The **stream-heads tree**: one leaf per stream in byte order of its id, the entry
//!   `len u16 ‖ stream ‖ version u64 ‖ position u64 ‖ hash [32]` (big-endian): each stream's last
//!   event at the tree's log size. Proving a stream's head entry proves how many events the stream
//!   has, so with dense versions no event of it can be left out.
//!
//! Not here: signing and the checkpoint's wire form (`proofs` crate), anything about contracts.

use std::collections::BTreeMap;

use crate::merkle::{self, Tree};
use crate::projection_store::{Checkpoint, ProjectionStore};
use crate::{GENESIS_HASH, Hash, Ledger, Result};

/// Leaves per stored block of the log tree (a power of two: every aligned subtree of this size
/// is a block).
pub const MERKLE_BLOCK_LEAVES: u64 = 256;

const _: () = assert!(MERKLE_BLOCK_LEAVES.is_power_of_two());

/// Blocks written per commit while catching up.
const CATCH_UP_BLOCKS_PER_COMMIT: u64 = 64;

/// The projection keyspace that keeps the log tree.
pub const MERKLE_STORE: &str = "merkle";

fn block_key(block: u64) -> Vec<u8> {
    let mut key = b"B".to_vec();
    key.extend_from_slice(&block.to_be_bytes());
    key
}

fn root_key(block: u64) -> Vec<u8> {
    let mut key = b"R".to_vec();
    key.extend_from_slice(&block.to_be_bytes());
    key
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

/// The log tree, served from `proj.merkle`.
pub struct LogTree {
    store: ProjectionStore,
    /// The block last read: (block, its leaf hashes).
    cached: Option<(u64, Vec<Hash>)>,
    roots: BTreeMap<u64, Hash>,
}

impl LogTree {
    fn block(&mut self, block: u64) -> Result<&[Hash]> {
        if self
            .cached
            .as_ref()
            .is_none_or(|(cached, _)| *cached != block)
        {
            let bytes = self.store.get(&block_key(block))?.unwrap_or_default();
            let leaves = bytes
                .chunks_exact(32)
                .map(|chunk| <Hash>::try_from(chunk).expect("32-byte chunks"))
                .collect();
            self.cached = Some((block, leaves));
        }
        Ok(&self.cached.as_ref().expect("just cached").1)
    }
}

impl Tree for LogTree {
    fn leaf(&mut self, index: u64) -> Result<Hash> {
        let block = self.block(index / MERKLE_BLOCK_LEAVES)?;
        block
            .get((index % MERKLE_BLOCK_LEAVES) as usize)
            .copied()
            .ok_or_else(|| crate::Error::Corrupt {
                position: index + 1,
                detail: "the log tree has no leaf for this position (catch it up first)".into(),
            })
    }

    fn subtree(&mut self, start: u64, size: u64) -> Result<Hash> {
        if size == MERKLE_BLOCK_LEAVES && start.is_multiple_of(MERKLE_BLOCK_LEAVES) {
            let block = start / MERKLE_BLOCK_LEAVES;
            if let Some(root) = self.roots.get(&block) {
                return Ok(*root);
            }
            if let Some(bytes) = self.store.get(&root_key(block))? {
                let root =
                    <Hash>::try_from(bytes.as_slice()).map_err(|_| crate::Error::Corrupt {
                        position: start + 1,
                        detail: "a stored block root is not 32 bytes".into(),
                    })?;
                self.roots.insert(block, root);
                return Ok(root);
            }
        }
        merkle::subtree_from_leaves(self, start, size)
    }
}

impl Ledger {
    /// The log tree caught up to the committed head: its size (the head) and a tree to ask
    /// for roots and proofs of any size up to it.
    ///
    /// # Errors
    /// When the log or `proj.merkle` cannot be read or written.
    pub fn log_tree(&self) -> Result<(u64, LogTree)> {
        let store = self.projection_store(MERKLE_STORE)?;
        let mut from = store.checkpoint()?.unwrap_or(Checkpoint {
            position: 0,
            hash: GENESIS_HASH,
        });
        // Kept for another log (a store swapped in), or ahead of this one: built again.
        if from.position > 0 {
            let here = self.read_all(from.position, 1)?;
            if here.first().is_none_or(|event| event.hash != from.hash) {
                store.clear()?;
                from = Checkpoint {
                    position: 0,
                    hash: GENESIS_HASH,
                };
            }
        }
        let mut block = from.position / MERKLE_BLOCK_LEAVES;
        let mut leaves: Vec<Hash> = store
            .get(&block_key(block))?
            .unwrap_or_default()
            .chunks_exact(32)
            .map(|chunk| <Hash>::try_from(chunk).expect("32-byte chunks"))
            .collect();
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut checkpoint = from;
        let mut blocks_in_commit = 0;
        for event in self.scan(from.position + 1) {
            let event = event?;
            leaves.push(merkle::leaf_hash(&event.hash));
            checkpoint = Checkpoint {
                position: event.position,
                hash: event.hash,
            };
            if leaves.len() as u64 == MERKLE_BLOCK_LEAVES {
                let root = merkle::root(&mut merkle::Leaves(&leaves), MERKLE_BLOCK_LEAVES)?;
                entries.push((block_key(block), leaves.concat()));
                entries.push((root_key(block), root.to_vec()));
                leaves.clear();
                block += 1;
                blocks_in_commit += 1;
                if blocks_in_commit == CATCH_UP_BLOCKS_PER_COMMIT {
                    store.commit(std::mem::take(&mut entries), checkpoint)?;
                    blocks_in_commit = 0;
                }
            }
        }
        if checkpoint != from {
            entries.push((block_key(block), leaves.concat()));
            store.commit(entries, checkpoint)?;
        }
        Ok((
            checkpoint.position,
            LogTree {
                store,
                cached: None,
                roots: BTreeMap::new(),
            },
        ))
    }

    /// Every stream's head at log size `size` (each stream's last event at or before position
    /// `size`), in byte order of the stream ids: the stream-heads tree's leaves.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub fn stream_heads(&self, size: u64) -> Result<Vec<StreamHead>> {
        let mut heads = Vec::new();
        for stream in self.stream_ids("")? {
            let mut before = None;
            // Usually the stream's last event is within the size: one read.
            let mut page_size = 1;
            loop {
                let page = self.read_stream_backward(&stream, before, page_size)?;
                page_size = 64;
                let Some(event) = page.iter().find(|event| event.position <= size) else {
                    match page.last() {
                        Some(last) if last.version > 1 => {
                            before = Some(last.version - 1);
                            continue;
                        }
                        _ => break,
                    }
                };
                heads.push(StreamHead {
                    stream: stream.clone(),
                    version: event.version,
                    position: event.position,
                    hash: event.hash,
                });
                break;
            }
        }
        heads.sort_by(|a, b| a.stream.as_bytes().cmp(b.stream.as_bytes()));
        Ok(heads)
    }
}

/// The stream-heads tree's leaf hashes.
pub fn head_leaves(heads: &[StreamHead]) -> Vec<Hash> {
    heads
        .iter()
        .map(|head| merkle::leaf_hash(&head.entry()))
        .collect()
}
