//! The on-disk layout: two fjall databases per data directory, their keyspaces and key
//! encodings, the process lock and the format check. Not the writer (see `writer`) and not the
//! indexer (see `index`): this module only opens and reads.
//!
//! ```text
//! DIR/LOCK            advisory lock, holds the owner's pid
//! DIR/store/          the log: fsync'd with every batch, the only truth
//!   log      position u64 BE                 -> envelope (see `envelope`)
//!   dedup    command id                      -> content hash [32], first position u64, count u32
//!   meta     "format"                        -> u32 BE
//!            "replicated_sequence"           -> u64 BE (replicated stores: the last batch's
//!                                               sequence in LEDGER_LOG)
//! DIR/index/          the stream index: derived from the log, never fsync'd, caught up at open
//!   streams  stream id, 0x00, version u64 BE -> position u64 BE
//!   meta     "indexed_to"                    -> position u64 BE, that event's hash [32]
//! ```
//!
//! The index has a database of its own so that its writes take neither the log's journal lock
//! nor a share of the log's fsync: an fsync'd batch then holds one item per event (plus one per
//! command id), not two. Format 1 kept `streams` in the log's database; opening such a store
//! indexes its log into `DIR/index/`, marks it format 2 and drops the old keyspace.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::envelope::{self, GENESIS_HASH, Hash, RecordedEvent};
use crate::error::{Error, Result};
use crate::limits;

/// The on-disk format this build reads and writes. Bump it (with a migration) whenever a key or
/// value layout changes.
pub const STORE_FORMAT: u32 = 2;

/// Format 1: the stream index in the log's database. Read and migrated at open.
const STORE_FORMAT_STREAMS_IN_LOG: u32 = 1;

const FORMAT_KEY: &[u8] = b"format";

/// In `meta`: the replicated log's sequence of the last batch written here (replicated stores
/// only), written in the same fjall batch as the events.
pub(crate) const REPLICATED_SEQUENCE_KEY: &[u8] = b"replicated_sequence";
/// In `meta`: the store's identity, a UUID made when it is first opened by a build that knows
/// it, and kept forever.
const STORE_ID_KEY: &[u8] = b"store_id";

/// In `meta`: the identity of the log this store holds a copy of, when it is not the store's
/// own (a mirror of a replicated log): checkpoints name it, so every copy signs the same log.
const LOG_ID_KEY: &[u8] = b"log_id";

/// The scratch keyspace a clean close pads the journal with (`Store::flush_for_close`).
const CLOSE_PAD_KEYSPACE: &str = "close_pad";
/// One padding value: large, so that padding 64 MB is ~64 items to replay, not a million.
const CLOSE_PAD_VALUE_BYTES: usize = 1 << 20;
/// fjall 3.1 rotates the active journal at a flush that finds it past this size
/// (`worker_pool.rs`); the close padding counts on it.
const FJALL_JOURNAL_ROTATES_AT_BYTES: u64 = 64_000_000;

/// The bytes written in a database's journal files (`DIR/*.jnl`): what its next open replays.
/// fjall makes each journal file 64 MiB long up front (a hole, until written), so a file's
/// length says nothing; its data ends where its first hole starts. Where holes cannot be
/// found, the whole length counts (the close then releases the journal anyway).
pub(crate) fn journal_written_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "jnl"))
        .filter_map(|path| {
            let file = File::open(&path).ok()?;
            let len = file.metadata().ok()?.len();
            let data_end = rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(0)).unwrap_or(len);
            Some(data_end.min(len))
        })
        .sum()
}

/// Flushes every keyspace of `db` and waits until it is in tables.
fn flush_all(db: &Database) -> Result<()> {
    for name in db.list_keyspace_names() {
        let keyspace =
            db.keyspace(&name, KeyspaceCreateOptions::default)
                .map_err(Error::storage(format!(
                    "opening keyspace {name:?} to flush it"
                )))?;
        flush_and_wait(db, &keyspace, &name)?;
    }
    Ok(())
}

/// Flushes `keyspace`'s memtable and waits until it is in a table, or fails when the flush did:
/// fjall's own `rotate_memtable_and_wait` waits forever after a failed flush (a full disk
/// stops fjall's worker, and the sealed memtable stays), which hung a close on a full disk.
fn flush_and_wait(db: &Database, keyspace: &Keyspace, name: &str) -> Result<()> {
    let flushing = keyspace
        .rotate_memtable()
        .map_err(Error::storage(format!("flushing keyspace {name:?}")))?;
    if !flushing {
        return Ok(());
    }
    while keyspace.sealed_memtable_count() > 0 {
        // A failed flush poisons the database; `persist` then says so (and otherwise only
        // hands the journal's buffer to the OS).
        db.persist(PersistMode::Buffer)
            .map_err(Error::storage(format!("flushing keyspace {name:?}")))?;
        std::thread::sleep(CLOSE_FLUSH_POLL);
    }
    Ok(())
}

/// How often a close looks whether a flush it asked for is done (fjall's own wait: 10 ms).
const CLOSE_FLUSH_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// Free disk a close needs before it pads a journal: the padding's journal bytes and its table,
/// and 16 MiB to spare.
const CLOSE_PAD_FREE_BYTES_MIN: u64 = 2 * FJALL_JOURNAL_ROTATES_AT_BYTES + (16 << 20);

/// Free bytes on the filesystem of `dir`, when it can be told.
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// `len` bytes lz4 cannot shrink (xorshift64 from `seed`), for the close padding.
fn incompressible_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ seed;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// The index's checkpoint key in its `meta` keyspace.
pub(crate) const INDEXED_TO_KEY: &[u8] = b"indexed_to";

/// Handles to the databases and their keyspaces. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    pub db: Database,
    pub log: Keyspace,
    pub dedup: Keyspace,
    pub meta: Keyspace,
    /// The index's own database (`DIR/index`).
    pub index_db: Database,
    pub streams: Keyspace,
    pub index_meta: Keyspace,
    /// `DIR`.
    pub path: PathBuf,
    /// The store was format 1 when opened: its index must be built and its marker moved on.
    pub needs_migration: bool,
}

/// Holds the data directory for this process; released when dropped.
pub(crate) struct DirectoryLock {
    file: File,
}

impl Drop for DirectoryLock {
    fn drop(&mut self) {
        // Unlock explicitly rather than by closing: a child forked by another thread of this
        // process holds a copy of the descriptor until it execs, and closing our copy would
        // leave the lock held through theirs. Unlocking releases it for every copy.
        let _ = self.file.unlock();
    }
}

/// Takes the advisory lock on `DIR/LOCK` at once (no waiting), writing our pid into it, or says
/// which process holds it.
pub(crate) fn lock_directory(path: &Path) -> Result<DirectoryLock> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(io)?;
    let lock_path = path.join("LOCK");
    let lock_io = |source| Error::Io {
        path: lock_path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(lock_io)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(lock_io)?;
            file.rewind().map_err(lock_io)?;
            write!(file, "{}", std::process::id()).map_err(lock_io)?;
            Ok(DirectoryLock { file })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            // The pid is advisory: a holder that has not written it yet reads as empty.
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "another process".to_owned(),
            };
            Err(Error::Locked {
                path: path.to_owned(),
                holder,
            })
        }
        Err(std::fs::TryLockError::Error(source)) => Err(lock_io(source)),
    }
}

impl Store {
    /// Opens (or creates) the log under `DIR/store` and the index under `DIR/index`, and checks
    /// the format.
    pub fn open(path: &Path) -> Result<Store> {
        let open_db = |name: &str| {
            let db_path: PathBuf = path.join(name);
            Database::builder(&db_path)
                .open()
                .map_err(Error::storage(format!("opening {}", db_path.display())))
        };
        let db = open_db("store")?;
        let index_db = open_db("index")?;
        let keyspace = |db: &Database, name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(Error::storage(format!("opening keyspace {name}")))
        };
        let mut store = Store {
            log: keyspace(&db, "log")?,
            dedup: keyspace(&db, "dedup")?,
            meta: keyspace(&db, "meta")?,
            streams: keyspace(&index_db, "streams")?,
            index_meta: keyspace(&index_db, "meta")?,
            db,
            index_db,
            path: path.to_owned(),
            needs_migration: false,
        };
        store.needs_migration = store.check_format(path)? == STORE_FORMAT_STREAMS_IN_LOG;
        Ok(store)
    }

    /// The format found (or written, for a new store).
    fn check_format(&self, path: &Path) -> Result<u32> {
        let stored = self
            .meta
            .get(FORMAT_KEY)
            .map_err(Error::storage("reading the format"))?;
        match stored {
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(&*bytes).map(u32::from_be_bytes);
                match found {
                    Ok(format @ (STORE_FORMAT | STORE_FORMAT_STREAMS_IN_LOG)) => Ok(format),
                    Ok(other) => Err(Error::UnsupportedFormat {
                        path: path.to_owned(),
                        found: other.to_string(),
                        supported: STORE_FORMAT,
                    }),
                    Err(_) => Err(Error::UnsupportedFormat {
                        path: path.to_owned(),
                        found: format!("unreadable ({} bytes)", bytes.len()),
                        supported: STORE_FORMAT,
                    }),
                }
            }
            None => {
                let log_empty = self
                    .log
                    .is_empty()
                    .map_err(Error::storage("checking the log"))?;
                if !log_empty {
                    return Err(Error::UnsupportedFormat {
                        path: path.to_owned(),
                        found: "none (events without a format marker)".to_owned(),
                        supported: STORE_FORMAT,
                    });
                }
                self.write_format()?;
                Ok(STORE_FORMAT)
            }
        }
    }

    /// The store's identity: read, or made (UUID v7) and written durably the first time.
    pub fn identity(&self) -> Result<uuid::Uuid> {
        let stored = self
            .meta
            .get(STORE_ID_KEY)
            .map_err(Error::storage("reading the store's identity"))?;
        if let Some(bytes) = stored {
            return <[u8; 16]>::try_from(&*bytes)
                .map(uuid::Uuid::from_bytes)
                .map_err(|_| Error::Corrupt {
                    position: 0,
                    detail: "the store's identity is not 16 bytes".into(),
                });
        }
        let id = uuid::Uuid::now_v7();
        self.meta
            .insert(STORE_ID_KEY, id.as_bytes())
            .map_err(Error::storage("writing the store's identity"))?;
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(Error::storage("persisting the store's identity"))?;
        Ok(id)
    }

    /// What a clean close does so that the next open has (almost) no journal to replay: every
    /// keyspace's memtable of both databases flushed to tables, and the journal they came from
    /// released. Not durability: all of it was fsync'd in the journal already.
    ///
    /// Without it, every open replays each database's active journal in full: fjall 3.1 rotates
    /// a journal only when a flush finds it past 64 MB, and replays item by item (a keyspace
    /// lookup each), so the stream index's ~1M small items took 1.3 s at 1M events, on every
    /// call. With fjall's own API only, the active journal is released by padding it past that
    /// size in a scratch keyspace (incompressible values, so the journal grows by their size),
    /// flushing that keyspace (the flush rotates the journal, and with every keyspace flushed
    /// the old one is deleted) and emptying the keyspace. Done only when the journal holds more
    /// than `CLOSE_LOG_JOURNAL_KEEP_BYTES` (the log's database) or
    /// `CLOSE_INDEX_JOURNAL_KEEP_BYTES` (the index's): after a read, or a few commands, a close
    /// costs a flush.
    pub fn flush_for_close(&self) -> Result<()> {
        for (db, name, keep) in [
            (&self.db, "store", limits::CLOSE_LOG_JOURNAL_KEEP_BYTES),
            (
                &self.index_db,
                "index",
                limits::CLOSE_INDEX_JOURNAL_KEEP_BYTES,
            ),
        ] {
            let dir = self.path.join(name);
            // A small journal replays fast; flushing it would only leave a tiny table a call.
            if journal_written_bytes(&dir) <= keep {
                continue;
            }
            flush_all(db)?;
            let journal = journal_written_bytes(&dir);
            if journal <= keep {
                continue;
            }
            // The padding writes up to 64 MB of journal and as much again in a table: on a disk
            // short of room it would fill it, so the next open replays the journal instead.
            if free_bytes(&dir).is_some_and(|free| free < CLOSE_PAD_FREE_BYTES_MIN) {
                tracing::info!(
                    database = name,
                    "too little free disk to release the journal at close; the next open replays it"
                );
                continue;
            }
            let pad = db
                .keyspace(CLOSE_PAD_KEYSPACE, KeyspaceCreateOptions::default)
                .map_err(Error::storage("opening the close padding keyspace"))?;
            // One value, inserted again and again: the journal compresses each value on its own
            // (lz4, whose window is 64 KiB), so a random value stays its size every time.
            let value = fjall::Slice::from(incompressible_bytes(CLOSE_PAD_VALUE_BYTES, journal));
            let mut written = journal;
            let mut chunk = 0u64;
            while written <= FJALL_JOURNAL_ROTATES_AT_BYTES {
                pad.insert(chunk.to_be_bytes(), value.clone())
                    .map_err(Error::storage("padding the journal at close"))?;
                written += CLOSE_PAD_VALUE_BYTES as u64;
                chunk += 1;
            }
            flush_and_wait(db, &pad, CLOSE_PAD_KEYSPACE)?;
            // The padding's tables go with a compaction. The keyspace stays (fjall 3.1.13 lost
            // another keyspace's registration after `delete_keyspace` here).
            for chunk in 0..chunk {
                pad.remove(chunk.to_be_bytes())
                    .map_err(Error::storage("removing the close padding"))?;
            }
            flush_all(db)?;
            pad.major_compact()
                .map_err(Error::storage("compacting the close padding away"))?;
        }
        Ok(())
    }

    /// The identity of the log this store copies, when one was adopted.
    pub fn log_id(&self) -> Result<Option<String>> {
        let stored = self
            .meta
            .get(LOG_ID_KEY)
            .map_err(Error::storage("reading the log's identity"))?;
        stored
            .map(|bytes| {
                String::from_utf8(bytes.to_vec()).map_err(|_| Error::Corrupt {
                    position: 0,
                    detail: "the log's identity is not UTF-8".into(),
                })
            })
            .transpose()
    }

    /// Records, durably, the identity of the log this store copies.
    pub fn set_log_id(&self, id: &str) -> Result<()> {
        self.meta
            .insert(LOG_ID_KEY, id.as_bytes())
            .map_err(Error::storage("writing the log's identity"))?;
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(Error::storage("persisting the log's identity"))
    }

    /// Marks the store as of this build's format, durably.
    pub fn write_format(&self) -> Result<()> {
        self.meta
            .insert(FORMAT_KEY, STORE_FORMAT.to_be_bytes())
            .map_err(Error::storage("writing the format"))?;
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(Error::storage("persisting the format"))
    }

    /// Drops format 1's stream index from the log's database, once the new index holds it.
    pub fn drop_format_1_index(&self) -> Result<()> {
        if self.db.keyspace_exists("streams") {
            let old = self
                .db
                .keyspace("streams", KeyspaceCreateOptions::default)
                .map_err(Error::storage("opening format 1's stream index"))?;
            self.db
                .delete_keyspace(old)
                .map_err(Error::storage("dropping format 1's stream index"))?;
        }
        Ok(())
    }

    /// The index's checkpoint: every event up to this position is indexed, and this is its hash.
    pub fn indexed_to(&self) -> Result<(u64, Hash)> {
        let stored = self
            .index_meta
            .get(INDEXED_TO_KEY)
            .map_err(Error::storage("reading the index checkpoint"))?;
        match stored {
            None => Ok((0, GENESIS_HASH)),
            Some(bytes) if bytes.len() == 40 => Ok((
                decode_u64(&bytes[..8]).expect("8 bytes"),
                bytes[8..].try_into().expect("32 bytes"),
            )),
            Some(bytes) => Err(Error::Corrupt {
                position: 0,
                detail: format!("the index checkpoint is {} bytes, not 40", bytes.len()),
            }),
        }
    }

    /// The last event's position and hash, or (0, genesis) for an empty log, and its recorded time.
    pub fn head(&self) -> Result<(u64, Hash, i64)> {
        match self.log.last_key_value() {
            None => Ok((0, GENESIS_HASH, i64::MIN)),
            Some(guard) => {
                let (key, value) = guard
                    .into_inner()
                    .map_err(Error::storage("reading the log's head"))?;
                let position = decode_u64(&key).ok_or_else(|| Error::Corrupt {
                    position: 0,
                    detail: "log key is not 8 bytes".into(),
                })?;
                let event = envelope::decode(position, &value)?;
                let recorded = event
                    .recorded_at
                    .timestamp_nanos_opt()
                    .expect("recorded times are decoded from i64 nanoseconds");
                Ok((position, event.hash, recorded))
            }
        }
    }

    pub fn event_at(&self, position: u64) -> Result<Option<RecordedEvent>> {
        let value = self
            .log
            .get(position.to_be_bytes())
            .map_err(Error::storage(format!("reading position {position}")))?;
        value
            .map(|bytes| envelope::decode(position, &bytes))
            .transpose()
    }

    /// A stream's version: the version in its last index entry. There is no separate `heads`
    /// keyspace: it cost a third of the writes of a one-event append, and this lookup is one
    /// reverse seek, made by the writer once per stream it has not seen since opening (the
    /// index is caught up before the writer starts, and only the writer moves a stream on).
    pub fn stream_version(&self, stream: &str) -> Result<u64> {
        let last = self
            .streams
            .range(stream_key(stream, 0)..=stream_key(stream, u64::MAX))
            .next_back();
        match last {
            None => Ok(0),
            Some(guard) => {
                let key = guard
                    .key()
                    .map_err(Error::storage(format!("reading the head of {stream}")))?;
                decode_u64(&key[key.len() - 8..]).ok_or_else(|| Error::Corrupt {
                    position: 0,
                    detail: format!("an index key of stream {stream} is too short"),
                })
            }
        }
    }
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

/// `stream id, 0x00, version`: stream ids never contain 0x00, so one stream's keys never
/// interleave with another's that shares a prefix (`C-1` and `C-10`).
pub(crate) fn stream_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 9);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// A dedup record: what an idempotent append wrote the first time.
pub(crate) struct DedupRecord {
    pub content_hash: Hash,
    pub first_position: u64,
    pub count: u32,
}

impl DedupRecord {
    pub fn encode(&self) -> [u8; 44] {
        let mut out = [0u8; 44];
        out[..32].copy_from_slice(&self.content_hash);
        out[32..40].copy_from_slice(&self.first_position.to_be_bytes());
        out[40..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<DedupRecord> {
        if bytes.len() != 44 {
            return None;
        }
        Some(DedupRecord {
            content_hash: bytes[..32].try_into().ok()?,
            first_position: decode_u64(&bytes[32..40])?,
            count: u32::from_be_bytes(bytes[40..].try_into().ok()?),
        })
    }
}

/// The index checkpoint's value: position, then the hash of the event there.
pub(crate) fn encode_indexed_to(position: u64, hash: &Hash) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..8].copy_from_slice(&position.to_be_bytes());
    out[8..].copy_from_slice(hash);
    out
}
