//! Storage for projections: one fjall keyspace per projection (`proj.<name>`) in the log's own
//! database, holding the projection's state entries and its checkpoint — the position and chain
//! hash it was built to. State and checkpoint are written in one batch, so after a crash they
//! agree and the projection resumes from the checkpoint. Not durable by itself (no fsync): a
//! projection lost in a crash is rebuilt from the log, which is.
//!
//! The log still knows nothing of contracts: keys and values are the projection's bytes.

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use crate::envelope::Hash;
use crate::error::{Error, Result};

/// The checkpoint key; state keys never start with 0x00.
const CHECKPOINT_KEY: &[u8] = b"\0checkpoint";

/// Where a projection was built to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last position folded.
    pub position: u64,
    /// That event's chain hash.
    pub hash: Hash,
}

/// One projection's keyspace. Cheap to clone.
#[derive(Clone)]
pub struct ProjectionStore {
    db: Database,
    keyspace: Keyspace,
    name: String,
}

impl ProjectionStore {
    pub(crate) fn open(db: &Database, name: &str) -> Result<ProjectionStore> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(Error::invalid(
                "projection name",
                format!("{name:?} must be 1 to 64 characters of [A-Za-z0-9_]"),
            ));
        }
        let keyspace = db
            .keyspace(&format!("proj.{name}"), || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(crate::limits::PROJECTION_MEMTABLE_BYTES)
            })
            .map_err(Error::storage(format!("opening projection {name}")))?;
        Ok(ProjectionStore {
            db: db.clone(),
            keyspace,
            name: name.to_owned(),
        })
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the projection was built to, or `None` when it never was.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when it cannot be read.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        let Some(bytes) = self
            .keyspace
            .get(CHECKPOINT_KEY)
            .map_err(Error::storage(format!(
                "reading the checkpoint of {}",
                self.name
            )))?
        else {
            return Ok(None);
        };
        if bytes.len() != 40 {
            return Err(Error::Corrupt {
                position: 0,
                detail: format!("the checkpoint of projection {} is not 40 bytes", self.name),
            });
        }
        Ok(Some(Checkpoint {
            position: u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
            hash: bytes[8..].try_into().expect("32 bytes"),
        }))
    }

    /// One state entry.
    ///
    /// # Errors
    /// [`Error::Storage`] when it cannot be read.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .keyspace
            .get(key)
            .map_err(Error::storage(format!("reading projection {}", self.name)))?
            .map(|value| value.to_vec()))
    }

    /// Every state entry whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// [`Error::Storage`] when it cannot be read.
    pub fn entries(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = Vec::new();
        for guard in self.keyspace.prefix(prefix) {
            let (key, value) = guard
                .into_inner()
                .map_err(Error::storage(format!("reading projection {}", self.name)))?;
            if key.first() == Some(&0) {
                continue;
            }
            entries.push((key.to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    /// Calls `visit` with every state entry whose key starts with `prefix`, in key order,
    /// without copying them out (the hot path of queries that sum many small entries).
    ///
    /// # Errors
    /// [`Error::Storage`] when it cannot be read.
    pub fn visit_prefix(&self, prefix: &[u8], mut visit: impl FnMut(&[u8], &[u8])) -> Result<()> {
        for guard in self.keyspace.prefix(prefix) {
            let (key, value) = guard
                .into_inner()
                .map_err(Error::storage(format!("reading projection {}", self.name)))?;
            if key.first() != Some(&0) {
                visit(&key, &value);
            }
        }
        Ok(())
    }

    /// Writes state entries and the checkpoint atomically.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a key starting with 0x00; [`Error::Storage`] when fjall fails.
    pub fn commit(&self, entries: Vec<(Vec<u8>, Vec<u8>)>, checkpoint: Checkpoint) -> Result<()> {
        let mut batch = self.db.batch();
        for (key, value) in entries {
            if key.first().is_none_or(|b| *b == 0) {
                return Err(Error::invalid(
                    "projection key",
                    "state keys are non-empty and never start with 0x00",
                ));
            }
            batch.insert(&self.keyspace, key, value);
        }
        let mut bytes = Vec::with_capacity(40);
        bytes.extend_from_slice(&checkpoint.position.to_be_bytes());
        bytes.extend_from_slice(&checkpoint.hash);
        batch.insert(&self.keyspace, CHECKPOINT_KEY, bytes);
        batch
            .commit()
            .map_err(Error::storage(format!("writing projection {}", self.name)))
    }

    /// Removes every entry and the checkpoint, for a rebuild from position 0.
    ///
    /// # Errors
    /// [`Error::Storage`] when fjall fails.
    pub fn clear(&self) -> Result<()> {
        self.keyspace
            .clear()
            .map_err(Error::storage(format!("clearing projection {}", self.name)))
    }
}
