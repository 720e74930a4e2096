//! The event log of Contract Ledger: streams with dense versions and a dense global order,
//! kept in fjall, with expected-version appends, permanent idempotency, group-committed fsyncs,
//! catch-up subscriptions and a SHA-256 hash chain.
//!
//! It knows nothing of contracts: events are opaque bytes with a type name and metadata.
//!
//! The public surface: [`Ledger::open`], [`Ledger::append`] (and [`Ledger::append_blocking`]),
//! the reads [`Ledger::read_stream`], [`Ledger::read_stream_backward`], [`Ledger::read_all`],
//! [`Ledger::scan`], [`Ledger::subscribe`], the idempotency lookup [`Ledger::command`], and
//! [`Ledger::verify`]. Limits are in [`limits`]. On disk: the log (`DIR/store`, fsync'd) and a
//! stream index that follows it (`DIR/index`, see `index`).

mod envelope;
mod error;
mod index;
pub mod limits;
pub mod merkle;
mod projection_store;
pub mod proofs;
mod recent;
pub mod replica;
mod scan;
mod store;
mod subscribe;
mod verify;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

pub use envelope::{GENESIS_HASH, Hash, Metadata, NewEvent, RecordedEvent};
pub use error::{Error, Result};
pub use projection_store::{Checkpoint, ProjectionStore};
pub use replica::{Replicator, WireBatch};
pub use scan::ScanAhead;
pub use store::STORE_FORMAT;
pub use subscribe::Subscription;
pub use verify::{VerifyProblem, VerifyReport};

use limits::*;
use store::Store;

/// The clock that stamps recorded times. Injected so tests and imports control it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What the caller believes about a stream's version before appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream has no events yet.
    NoStream,
    /// The stream has at least one event.
    StreamExists,
    /// The stream's last event has exactly this version (0: no events).
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// An idempotency key with the hash of the content it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The caller's id for the command, remembered forever.
    pub command_id: String,
    /// What the id stood for the first time. A retry must carry the same hash.
    pub content_hash: Hash,
}

/// One atomic append: all its events land with consecutive versions and positions, or none do.
#[derive(Debug, Clone)]
pub struct Append {
    /// The stream.
    pub stream: String,
    /// The version check.
    pub expected: ExpectedVersion,
    /// The events, at least one.
    pub events: Vec<NewEvent>,
    /// When set, a retry returns the first result and writes nothing.
    pub idempotency: Option<Idempotency>,
}

impl Append {
    /// An append without an idempotency key.
    pub fn new(
        stream: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Append {
        Append {
            stream: stream.into(),
            expected,
            events,
            idempotency: None,
        }
    }

    /// Sets the idempotency key, hashing the stream and the events' types, schema versions,
    /// effective times and payloads (not their metadata, which may name a fresh correlation).
    pub fn command_id(mut self, command_id: impl Into<String>) -> Append {
        let content_hash = content_hash(&self.stream, &self.events);
        self.idempotency = Some(Idempotency {
            command_id: command_id.into(),
            content_hash,
        });
        self
    }

    /// Sets the idempotency key with a content hash of the caller's choosing (e.g. of a command).
    pub fn idempotency(mut self, command_id: impl Into<String>, content_hash: Hash) -> Append {
        self.idempotency = Some(Idempotency {
            command_id: command_id.into(),
            content_hash,
        });
        self
    }

    fn validate(&self) -> Result<()> {
        validate_stream_id(&self.stream)?;
        if self.events.is_empty() {
            return Err(Error::invalid(
                "events",
                "an append needs at least one event",
            ));
        }
        if self.events.len() > EVENTS_PER_APPEND_MAX {
            return Err(Error::invalid(
                "events per append",
                format!(
                    "{} events; at most {EVENTS_PER_APPEND_MAX} land in one append",
                    self.events.len()
                ),
            ));
        }
        if let Some(idempotency) = &self.idempotency {
            let id = &idempotency.command_id;
            if id.is_empty()
                || id.len() > COMMAND_ID_BYTES_MAX
                || !id.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(Error::invalid(
                    "command id",
                    format!(
                        "{id:?} must be 1 to {COMMAND_ID_BYTES_MAX} printable ASCII characters without spaces"
                    ),
                ));
            }
        }
        for event in &self.events {
            validate_event(event)?;
        }
        Ok(())
    }
}

/// The journal bytes the next open of the store in `path` replays (both of its databases): small
/// after a clean close, up to ~64 MB per database after a crash.
pub fn journal_bytes(path: &Path) -> u64 {
    ["store", "index"]
        .iter()
        .map(|db| store::journal_written_bytes(&path.join(db)))
        .sum()
}

/// Lowercase hex of a hash (or any bytes), as statements and `verify` print chain hashes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // A bundle prints hundreds of thousands of hashes: no `format!` per byte.
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The bytes of lowercase or uppercase hex; `None` when `text` is not hex of whole bytes.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The SHA-256 an idempotency key remembers for an append's content (see [`Append::command_id`]).
pub fn content_hash(stream: &str, events: &[NewEvent]) -> Hash {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(stream.as_bytes());
    for event in events {
        field(event.event_type.as_bytes());
        field(&event.schema_version.to_be_bytes());
        match event.effective_at.and_then(|at| at.timestamp_nanos_opt()) {
            Some(nanos) => field(&nanos.to_be_bytes()),
            None => field(&[]),
        }
        field(&event.payload);
    }
    hasher.finalize().into()
}

fn validate_stream_id(stream: &str) -> Result<()> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
    if stream.is_empty() || stream.len() > STREAM_ID_BYTES_MAX || !stream.bytes().all(allowed) {
        return Err(Error::invalid(
            "stream id",
            format!("{stream:?} must be 1 to {STREAM_ID_BYTES_MAX} characters of [A-Za-z0-9_.:-]"),
        ));
    }
    Ok(())
}

fn validate_event(event: &NewEvent) -> Result<()> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let name = &event.event_type;
    if name.is_empty() || name.len() > EVENT_TYPE_BYTES_MAX || !name.bytes().all(allowed) {
        return Err(Error::invalid(
            "event type",
            format!("{name:?} must be 1 to {EVENT_TYPE_BYTES_MAX} characters of [A-Za-z0-9_.-]"),
        ));
    }
    let size = event.payload.len() + event.metadata.bytes_len();
    if size > EVENT_BYTES_MAX {
        return Err(Error::invalid(
            "event size",
            format!("{name} is {size} bytes with metadata; at most {EVENT_BYTES_MAX}"),
        ));
    }
    let metadata = &event.metadata;
    for text in [
        &metadata.command_id,
        &metadata.actor,
        &metadata.correlation_id,
        &metadata.causation_id,
        &metadata.reason,
        &metadata.reference,
    ]
    .into_iter()
    .flatten()
    {
        if text.len() > METADATA_FIELD_BYTES_MAX {
            return Err(Error::invalid(
                "metadata",
                format!(
                    "a field of {name} is {} bytes; at most {METADATA_FIELD_BYTES_MAX}",
                    text.len()
                ),
            ));
        }
    }
    if let Some(at) = event.effective_at
        && at.timestamp_nanos_opt().is_none()
    {
        return Err(Error::invalid(
            "effective time",
            format!("{at} is outside the years 1677 to 2262"),
        ));
    }
    Ok(())
}

/// Where one appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedEvent {
    /// Global position.
    pub position: u64,
    /// Version within the stream.
    pub version: u64,
    /// The event's id.
    pub event_id: Uuid,
}

/// The answer to an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Where each event landed, in order.
    pub events: Vec<AppendedEvent>,
    /// True when this was a retry: the events were written by an earlier append with the same
    /// command id, and nothing was written now.
    pub duplicate: bool,
}

impl Appended {
    /// The position of the last event.
    pub fn last_position(&self) -> u64 {
        self.events.last().map_or(0, |event| event.position)
    }

    /// The stream's version after the append.
    pub fn stream_version(&self) -> u64 {
        self.events.last().map_or(0, |event| event.version)
    }
}

/// What [`Ledger::background_work`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackgroundWork {
    /// Memtable flushes queued or running.
    pub flushes: usize,
    /// Compactions running.
    pub compactions: usize,
}

impl BackgroundWork {
    /// Nothing queued or running.
    pub fn is_quiet(self) -> bool {
        self.flushes == 0 && self.compactions == 0
    }
}

/// Options for [`Ledger::open_with`].
#[derive(Clone)]
pub struct LedgerOptions {
    /// Stamps recorded times; the system clock by default.
    pub clock: Clock,
    /// Start the writer at open (the default). Off: the handle is a mirror of a replicated log
    /// ([`Ledger::apply_replicated`]) until [`Ledger::start_writer`].
    pub writer: bool,
}

impl Default for LedgerOptions {
    fn default() -> LedgerOptions {
        LedgerOptions {
            clock: Arc::new(Utc::now),
            writer: true,
        }
    }
}

impl LedgerOptions {
    /// The defaults without the writer: a mirror of a replicated log, or a store a replicated
    /// writer will start on once it has caught up.
    pub fn mirror() -> LedgerOptions {
        LedgerOptions {
            writer: false,
            ..LedgerOptions::default()
        }
    }
}

/// Verifies the log in `path` without starting a writer: works on a log whose last event is
/// damaged, which [`Ledger::open`] refuses to extend. Takes the directory lock like an open.
///
/// # Errors
/// [`Error::Locked`] when another process holds the directory; [`Error::UnsupportedFormat`];
/// [`Error::Storage`] when the store cannot be read at all. Damage is a finding in the report.
pub fn verify_path(path: impl AsRef<Path>) -> Result<VerifyReport> {
    verify_path_with_progress(path, &mut |_| {})
}

/// [`verify_path`], telling `progress` the position checked so far every few thousand events.
///
/// # Errors
/// As [`verify_path`].
pub fn verify_path_with_progress(
    path: impl AsRef<Path>,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport> {
    let path = path.as_ref();
    let _lock = store::lock_directory(path)?;
    let store = Store::open(path)?;
    verify::verify(&store, None, progress)
}

/// Decodes an envelope's stored bytes (see `envelope` for the layout) as the event at `position`,
/// checking every length and that the envelope names that position. It does not check the hash:
/// compare `hash` with SHA-256 of every byte but the last 32 (`envelope_hash`).
///
/// # Errors
/// [`Error::Corrupt`] naming what does not decode.
pub fn decode_envelope(position: u64, bytes: &[u8]) -> Result<RecordedEvent> {
    envelope::decode(position, bytes)
}

/// The hash an envelope's bytes should end with: SHA-256 of every byte before the last 32.
pub fn envelope_hash(bytes: &[u8]) -> Option<Hash> {
    envelope::recompute_hash(bytes)
}

/// A handle to an open log. Cheap to clone; the store closes when the last handle is dropped.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    store: Store,
    /// The writer's queue while a writer runs.
    queue: RwLock<Option<mpsc::Sender<writer::Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Taken by whoever starts or stops the writer or applies a replicated batch.
    role: Mutex<()>,
    clock: Clock,
    committed_tx: Arc<watch::Sender<u64>>,
    committed: watch::Receiver<u64>,
    stopped: Arc<Mutex<Option<String>>>,
    index_progress: Arc<index::IndexProgress>,
    identity: Uuid,
    /// Taken while the log tree catches up and its stream heads are read (`proofs`).
    log_tree: Mutex<()>,
    /// The writer's last committed events, for the log tree (`recent.rs`).
    recent: Arc<recent::RecentHeads>,
    /// The log tree's subtrees of a block or more computed so far (`proofs`).
    log_tree_nodes: Arc<Mutex<HashMap<(u64, u64), Hash>>>,
    _lock: store::DirectoryLock,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what it holds and exit; joining it means the
        // next open of the same directory, even in this process, finds it closed.
        self.queue.get_mut().expect("queue lock").take();
        if let Some(handle) = self.writer.get_mut().expect("writer lock").take() {
            let _ = handle.join();
        }
        // A clean close leaves no journal to replay at the next open.
        if let Err(error) = self.store.flush_for_close() {
            tracing::warn!(%error, "flushing the store at close; the next open replays its journal");
        }
    }
}

impl Ledger {
    /// Opens the log in `path`, creating it if needed.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the last event cannot be decoded: the chain cannot be extended
    /// (run [`verify_path`] to see where it breaks);
    /// [`Error::Locked`] at once when another process (or another handle in this one) holds
    /// the directory; [`Error::UnsupportedFormat`] for a store of another format;
    /// [`Error::Storage`] / [`Error::Io`] when fjall or the file system fails.
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger> {
        Ledger::open_with(path, LedgerOptions::default())
    }

    /// [`Ledger::open`] with options.
    ///
    /// # Errors
    /// As [`Ledger::open`].
    pub fn open_with(path: impl AsRef<Path>, options: LedgerOptions) -> Result<Ledger> {
        let path = path.as_ref().to_owned();
        let lock = store::lock_directory(&path)?;
        let store = Store::open(&path)?;
        let identity = store.identity()?;
        let stopped = Arc::new(Mutex::new(None));
        let (head, _, _) = store.head()?;
        // Before the writer starts: it trusts the index for every stream it has not written.
        let indexed_to = index::catch_up(&store, head)?;
        let index_progress = Arc::new(index::IndexProgress::new(indexed_to));
        let (committed_tx, committed_rx) = watch::channel(head);
        let ledger = Ledger {
            inner: Arc::new(Inner {
                path,
                store,
                queue: RwLock::new(None),
                writer: Mutex::new(None),
                role: Mutex::new(()),
                clock: options.clock,
                committed_tx: Arc::new(committed_tx),
                committed: committed_rx,
                stopped,
                index_progress,
                identity,
                log_tree: Mutex::new(()),
                recent: Arc::default(),
                log_tree_nodes: Arc::default(),
                _lock: lock,
            }),
        };
        if options.writer {
            ledger.start_writer(None)?;
        }
        Ok(ledger)
    }

    /// The store's identity: made when the store was first opened, kept forever. Two stores
    /// never share one, so whatever is derived from it (message ids, a service's claim on a NATS
    /// account) never collides.
    pub fn store_id(&self) -> Uuid {
        self.inner.identity
    }

    /// The identity of the log this store holds: the store's own ([`Ledger::store_id`]) unless
    /// it copies a replicated log, whose identity it adopted ([`Ledger::adopt_log_id`]). Every
    /// copy of one log names the same identity, so a checkpoint signed by any of them proves
    /// the same log.
    ///
    /// # Errors
    /// [`Error::Storage`] when the store cannot be read.
    pub fn log_id(&self) -> Result<String> {
        Ok(self
            .inner
            .store
            .log_id()?
            .unwrap_or_else(|| self.inner.identity.to_string()))
    }

    /// Records that this store copies the log `id` (a replicated log's identity), durably.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the store copies another log already; [`Error::Storage`].
    pub fn adopt_log_id(&self, id: &str) -> Result<()> {
        match self.inner.store.log_id()? {
            Some(kept) if kept == id => Ok(()),
            Some(kept) => Err(Error::invalid(
                "log_id",
                format!("this store copies the log {kept}, not {id}"),
            )),
            None => self.inner.store.set_log_id(id),
        }
    }

    /// Starts the single writer from the log's head, replicating each batch through
    /// `replicator` before its local commit when one is given.
    ///
    /// # Errors
    /// [`Error::Invalid`] when a writer runs already; [`Error::Storage`] / [`Error::Io`].
    pub fn start_writer(&self, replicator: Option<Arc<dyn Replicator>>) -> Result<()> {
        let _role = self.inner.role.lock().expect("role lock");
        let mut queue = self.inner.queue.write().expect("queue lock");
        if queue.is_some() {
            return Err(Error::invalid("writer", "a writer runs already"));
        }
        *self.inner.stopped.lock().expect("stopped flag lock") = None;
        let writer = writer::Writer::new(
            self.inner.store.clone(),
            self.inner.clock.clone(),
            self.inner.committed_tx.clone(),
            self.inner.stopped.clone(),
            self.inner.index_progress.clone(),
            replicator,
            self.inner.recent.clone(),
        )?;
        let (queue_tx, queue_rx) = mpsc::channel(APPEND_QUEUE_MAX);
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(queue_rx))
            .map_err(|source| Error::Io {
                path: self.inner.path.clone(),
                source,
            })?;
        *queue = Some(queue_tx);
        *self.inner.writer.lock().expect("writer lock") = Some(handle);
        Ok(())
    }

    /// Stops the writer, if one runs: what it holds is committed (or fails) and answered, then
    /// its threads end. Later appends fail with [`Error::NotWriter`] until [`Ledger::start_writer`].
    pub fn stop_writer(&self) {
        let _role = self.inner.role.lock().expect("role lock");
        self.inner.queue.write().expect("queue lock").take();
        let handle = self.inner.writer.lock().expect("writer lock").take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        *self.inner.stopped.lock().expect("stopped flag lock") = None;
    }

    /// Whether a writer runs (it may have stopped after a failure).
    pub fn is_writer(&self) -> bool {
        self.inner.queue.read().expect("queue lock").is_some()
    }

    /// The replicated log's sequence of the last batch in this store (0: none, or embedded).
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when the store cannot be read.
    pub fn replicated_sequence(&self) -> Result<u64> {
        let stored = self
            .inner
            .store
            .meta
            .get(store::REPLICATED_SEQUENCE_KEY)
            .map_err(Error::storage("reading the replicated sequence"))?;
        match stored {
            None => Ok(0),
            Some(bytes) => store::decode_u64(&bytes).ok_or_else(|| Error::Corrupt {
                position: 0,
                detail: "the replicated sequence is not 8 bytes".into(),
            }),
        }
    }

    /// Records that this store holds the replicated log up to batch `sequence` (after a
    /// migration relayed it there), durably.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn mark_replicated(&self, sequence: u64) -> Result<()> {
        let store = &self.inner.store;
        store
            .meta
            .insert(store::REPLICATED_SEQUENCE_KEY, sequence.to_be_bytes())
            .map_err(Error::storage("writing the replicated sequence"))?;
        store
            .db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(Error::storage("persisting the replicated sequence"))
    }

    /// The log from `from_position` to the committed head as replicated batches of at most
    /// `events_max` events and about `bytes_max` bytes, each carrying the dedup records of the
    /// appends that start in it: the writer's own bytes, for relaying an embedded store into a
    /// replicated log. An idempotent append's events never straddle two batches. Reads the
    /// command ids once, then the log one batch at a time.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when the store cannot be read.
    pub fn export_batches(
        &self,
        from_position: u64,
        events_max: usize,
        bytes_max: usize,
    ) -> Result<impl Iterator<Item = Result<WireBatch>> + use<>> {
        let store = self.inner.store.clone();
        let end = self.committed_position();
        let from = from_position.max(1);
        // Which command ids start where, and how many events their append holds.
        let mut records: StartingAppends = HashMap::new();
        for entry in store.dedup.iter() {
            let (key, value) = entry
                .into_inner()
                .map_err(Error::storage("reading the command ids"))?;
            let record = store::DedupRecord::decode(&value).ok_or_else(|| Error::Corrupt {
                position: 0,
                detail: "a dedup record is not 44 bytes".into(),
            })?;
            if record.first_position >= from && record.first_position <= end {
                records.entry(record.first_position).or_default().push((
                    String::from_utf8_lossy(&key).into_owned(),
                    record.encode(),
                    record.count,
                ));
            }
        }
        let mut next = from;
        let mut failed = false;
        Ok(std::iter::from_fn(move || {
            if failed || next > end {
                return None;
            }
            let batch = export_one(&store, &mut records, next, end, events_max, bytes_max);
            match &batch {
                Ok(batch) => next = batch.last_position + 1,
                Err(_) => failed = true,
            }
            Some(batch)
        }))
    }

    /// Applies one replicated batch (see [`replica`]) at the log's head, as a mirror: checks
    /// that its events continue the log (positions, the hash chain, each envelope's hash, each
    /// stream's next version) and its dedup records point into it, then writes it (to the OS,
    /// not fsync'd: the replicated log is the durable copy), indexes it and wakes subscribers. Writes nothing when any check fails.
    /// Returns the position of the batch's last event.
    ///
    /// # Errors
    /// [`Error::Invalid`] while a writer runs; [`Error::Corrupt`] naming the first position that
    /// does not follow; [`Error::Storage`].
    pub fn apply_replicated(&self, sequence: u64, bytes: &[u8]) -> Result<u64> {
        let _role = self.inner.role.lock().expect("role lock");
        if self.is_writer() {
            return Err(Error::invalid(
                "replicated batch",
                "this handle runs the writer; only a mirror applies batches",
            ));
        }
        let store = &self.inner.store;
        let (mut position, mut hash) = self.head()?;
        let corrupt = |position: u64, detail: String| Error::Corrupt { position, detail };
        let decoded = replica::decode(bytes).map_err(|detail| {
            corrupt(
                position + 1,
                format!("replicated batch {sequence}: {detail}"),
            )
        })?;
        if decoded.envelopes.is_empty() {
            return Err(corrupt(
                position + 1,
                format!("replicated batch {sequence} holds no event"),
            ));
        }
        let first = position + 1;
        // Not fsync'd: the batch is durable in the replicated log, and a mirror that loses a
        // suffix in a power failure applies it again from there (its sequence is in the batch).
        let mut items = store
            .db
            .batch()
            .durability(Some(fjall::PersistMode::Buffer));
        let mut versions: HashMap<String, u64> = HashMap::new();
        for bytes in decoded.envelopes {
            position += 1;
            let event = envelope::decode(position, bytes)?;
            let computed: Hash = Sha256::digest(&bytes[..bytes.len().saturating_sub(32)]).into();
            if event.prev_hash != hash || computed != event.hash {
                return Err(corrupt(
                    position,
                    format!("replicated batch {sequence} breaks the hash chain"),
                ));
            }
            let current = match versions.get(&event.stream) {
                Some(version) => *version,
                None => store.stream_version(&event.stream)?,
            };
            if event.version != current + 1 {
                return Err(corrupt(
                    position,
                    format!(
                        "replicated batch {sequence}: {} version {} follows version {current}",
                        event.stream, event.version
                    ),
                ));
            }
            versions.insert(event.stream.clone(), event.version);
            items.insert(&store.log, position.to_be_bytes(), bytes);
            hash = event.hash;
        }
        for (command_id, record) in decoded.records {
            let parsed = store::DedupRecord::decode(record).filter(|r| {
                r.first_position >= first
                    && r.count > 0
                    && r.first_position + u64::from(r.count) - 1 <= position
            });
            if parsed.is_none() {
                return Err(corrupt(
                    first,
                    format!(
                        "replicated batch {sequence}: the record of {command_id:?} points outside it"
                    ),
                ));
            }
            items.insert(&store.dedup, command_id.as_bytes(), record);
        }
        items.insert(
            &store.meta,
            store::REPLICATED_SEQUENCE_KEY,
            sequence.to_be_bytes(),
        );
        items.commit().map_err(Error::storage(format!(
            "writing replicated batch {sequence}"
        )))?;
        let indexed = index::catch_up(store, position)?;
        self.inner.index_progress.advance(indexed);
        self.inner.committed_tx.send_replace(position);
        Ok(position)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends events atomically and returns once they are fsync'd.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a broken limit, [`Error::VersionConflict`],
    /// [`Error::IdempotencyKeyReused`] (all with nothing written), and
    /// [`Error::WriterStopped`] when a write or fsync failed (nothing of it acknowledged).
    pub async fn append(&self, append: Append) -> Result<Appended> {
        append.validate()?;
        let (reply, answer) = oneshot::channel();
        self.queue()?
            .send(writer::Request { append, reply })
            .await
            .map_err(|_| self.stopped_error())?;
        answer.await.map_err(|_| self.stopped_error())?
    }

    /// [`Ledger::append`] for callers outside an async runtime. Must not be called from one.
    ///
    /// # Errors
    /// As [`Ledger::append`].
    pub fn append_blocking(&self, append: Append) -> Result<Appended> {
        append.validate()?;
        let (reply, answer) = oneshot::channel();
        self.queue()?
            .blocking_send(writer::Request { append, reply })
            .map_err(|_| self.stopped_error())?;
        answer.blocking_recv().map_err(|_| self.stopped_error())?
    }

    fn queue(&self) -> Result<mpsc::Sender<writer::Request>> {
        let queue = self.inner.queue.read().expect("queue lock");
        match queue.as_ref() {
            Some(queue) => Ok(queue.clone()),
            None if self
                .inner
                .stopped
                .lock()
                .expect("stopped flag lock")
                .is_some() =>
            {
                Err(self.stopped_error())
            }
            None => Err(Error::NotWriter {
                detail: "an append".into(),
            }),
        }
    }

    /// Why the writer stopped, when it failed (a write, an fsync or a replication); `None` while
    /// it runs, and after [`Ledger::stop_writer`] or a fresh [`Ledger::start_writer`].
    pub fn writer_stop_cause(&self) -> Option<String> {
        self.inner
            .stopped
            .lock()
            .expect("stopped flag lock")
            .clone()
    }

    fn stopped_error(&self) -> Error {
        let cause = self
            .inner
            .stopped
            .lock()
            .expect("stopped flag lock")
            .clone()
            .unwrap_or_else(|| "the log was closed".to_owned());
        Error::WriterStopped { cause }
    }

    /// Waits until the log holds `position` (acknowledged by the writer or applied by a mirror).
    /// Returns false when the log was closed first.
    pub async fn wait_for(&self, position: u64) -> bool {
        let mut committed = self.inner.committed.clone();
        loop {
            if *committed.borrow_and_update() >= position {
                return true;
            }
            if committed.changed().await.is_err() {
                return false;
            }
        }
    }

    /// The position of the last acknowledged event (0 when the log is empty).
    pub fn committed_position(&self) -> u64 {
        *self.inner.committed.borrow()
    }

    /// fjall's background work in progress on the log and the index: memtable flushes queued or
    /// running, and compactions running. Both at 0 means the store is quiet (a benchmark waits
    /// for that between rounds, so that no round pays for the one before).
    pub fn background_work(&self) -> BackgroundWork {
        let store = &self.inner.store;
        BackgroundWork {
            flushes: store.db.outstanding_flushes() + store.index_db.outstanding_flushes(),
            compactions: store.db.active_compactions() + store.index_db.active_compactions(),
        }
    }

    /// The version of a stream: the number of its events (0 when it has none).
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when the store cannot be read.
    /// [`Error::IndexStopped`] when the stream index stopped following the log.
    pub fn stream_version(&self, stream: &str) -> Result<u64> {
        self.index_current()?;
        self.inner.store.stream_version(stream)
    }

    /// Waits until the stream index holds every event committed when called (see `index`).
    fn index_current(&self) -> Result<()> {
        self.inner
            .index_progress
            .wait_for(self.committed_position())
    }

    /// The ids of every stream that starts with `prefix`, in byte order. One index seek per
    /// stream, not a walk over events.
    ///
    /// # Errors
    /// [`Error::Storage`] when the store cannot be read.
    /// [`Error::IndexStopped`] when the stream index stopped following the log.
    pub fn stream_ids(&self, prefix: &str) -> Result<Vec<String>> {
        self.index_current()?;
        let index = &self.inner.store.streams;
        let mut ids = Vec::new();
        let mut from: Vec<u8> = prefix.as_bytes().to_vec();
        while let Some(entry) = index.range(from.clone()..).next() {
            let key = entry.key().map_err(Error::storage("listing streams"))?;
            let Some(stream) = key.len().checked_sub(9).map(|end| &key[..end]) else {
                return Err(Error::Corrupt {
                    position: 0,
                    detail: "a stream index key is too short".into(),
                });
            };
            if !stream.starts_with(prefix.as_bytes()) {
                break;
            }
            ids.push(String::from_utf8_lossy(stream).into_owned());
            // Past every key of this stream: `stream, 0x00, …` < `stream, 0x01`.
            from = stream.to_vec();
            from.push(1);
        }
        Ok(ids)
    }

    /// The first answer to an idempotent append with this command id, with the content hash it
    /// was given, or `None` when the id was never used.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when the store cannot be read.
    pub fn command(&self, command_id: &str) -> Result<Option<(Hash, Appended)>> {
        match writer::read_dedup(&self.inner.store, command_id)? {
            None => Ok(None),
            Some(record) => {
                let appended = writer::appended_from_log(&self.inner.store, &record)?;
                Ok(Some((record.content_hash, appended)))
            }
        }
    }

    /// Up to `max` events of a stream, forward from `from_version` (1 for the start).
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when the store cannot be read.
    /// [`Error::IndexStopped`] when the stream index stopped following the log.
    pub fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.index_current()?;
        let store = &self.inner.store;
        let start = store::stream_key(stream, from_version.max(1));
        let end = store::stream_key(stream, u64::MAX);
        let positions = store
            .streams
            .range(start..=end)
            .take(max.min(READ_PAGE_MAX));
        self.events_at(stream, positions)
    }

    /// Up to `max` events of a stream, backward from `from_version` (`None`: from its end).
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when the store cannot be read.
    /// [`Error::IndexStopped`] when the stream index stopped following the log.
    pub fn read_stream_backward(
        &self,
        stream: &str,
        from_version: Option<u64>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.index_current()?;
        let store = &self.inner.store;
        let start = store::stream_key(stream, 1);
        let end = store::stream_key(stream, from_version.unwrap_or(u64::MAX));
        let positions = store
            .streams
            .range(start..=end)
            .rev()
            .take(max.min(READ_PAGE_MAX));
        self.events_at(stream, positions)
    }

    fn events_at(
        &self,
        stream: &str,
        index_entries: impl Iterator<Item = fjall::Guard>,
    ) -> Result<Vec<RecordedEvent>> {
        let store = &self.inner.store;
        let mut events = Vec::new();
        for entry in index_entries {
            let (key, value) = entry
                .into_inner()
                .map_err(Error::storage(format!("reading the index of {stream}")))?;
            let position = store::decode_u64(&value).ok_or_else(|| Error::Corrupt {
                position: 0,
                detail: format!("index entry {key:?} of {stream} is not 8 bytes"),
            })?;
            let event = store.event_at(position)?.ok_or_else(|| Error::Corrupt {
                position,
                detail: format!("the index of {stream} points at a missing event"),
            })?;
            // Validate after reading, as before writing: the index and the envelope must agree.
            assert_eq!(
                event.stream, stream,
                "stream index and envelope disagree at {position}"
            );
            events.push(event);
        }
        Ok(events)
    }

    /// Up to `max` events of the global log, from `from_position` (0 or 1 for the start), never
    /// past the last acknowledged one.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when the store cannot be read.
    pub fn read_all(&self, from_position: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.scan(from_position)
            .take(max.min(READ_PAGE_MAX))
            .collect()
    }

    /// The hashes of up to `max` events from `from_position` (at least 1) on, in position order,
    /// never past the last acknowledged one; read from the end of each envelope without decoding
    /// it (what the log tree is built from, several times faster than [`Ledger::read_all`]).
    ///
    /// # Errors
    /// [`Error::Storage`] when the store cannot be read, [`Error::Corrupt`] when an envelope is
    /// malformed or the log has a gap.
    pub fn event_hashes(&self, from_position: u64, max: usize) -> Result<Vec<Hash>> {
        let mut hashes = Vec::with_capacity(max.min(READ_PAGE_MAX));
        self.visit_heads(from_position, max, |_, _, _, hash| hashes.push(hash))?;
        Ok(hashes)
    }

    /// Calls `visit(position, stream, version, hash)` for up to `max` events from
    /// `from_position` (at least 1) on, never past the last acknowledged one, reading only the
    /// envelope's first and last bytes; returns how many it visited.
    pub(crate) fn visit_heads(
        &self,
        from_position: u64,
        max: usize,
        mut visit: impl FnMut(u64, &str, u64, Hash),
    ) -> Result<u64> {
        let from = from_position.max(1);
        let end = self.committed_position();
        if from > end || max == 0 {
            return Ok(0);
        }
        let last = end.min(from.saturating_add(max.min(READ_PAGE_MAX) as u64 - 1));
        let mut next = from;
        for entry in self
            .inner
            .store
            .log
            .range(from.to_be_bytes()..=last.to_be_bytes())
        {
            let (key, value) = entry
                .into_inner()
                .map_err(Error::storage("reading the log's hashes"))?;
            if store::decode_u64(&key) != Some(next) {
                break;
            }
            let (stream, version, hash) = envelope::stored_head(next, &value)?;
            visit(next, stream, version, hash);
            next += 1;
        }
        if next != last + 1 {
            return Err(Error::Corrupt {
                position: next,
                detail: "the log has no event here".into(),
            });
        }
        Ok(next - from)
    }

    /// Every acknowledged event from `from_position` on, as an iterator: the way to fold the whole
    /// log without holding it in memory. Ends at the position committed when it was created.
    ///
    /// It reads through one fjall iterator per `SCAN_CHUNK_EVENTS` events: an open iterator pins
    /// a snapshot, and fjall keeps every memtable written meanwhile (in any keyspace) until the
    /// snapshot is released, so a rebuild that writes one timeline entry per event through a
    /// single iterator held all of them (~200 bytes per event).
    pub fn scan(&self, from_position: u64) -> impl Iterator<Item = Result<RecordedEvent>> + use<> {
        let end = self.committed_position();
        let log = self.inner.store.log.clone();
        let mut next = from_position.max(1);
        // The open chunk and the position it was opened at.
        let mut chunk: Option<(u64, Box<dyn Iterator<Item = fjall::Guard>>)> = None;
        let mut failed = false;
        std::iter::from_fn(move || {
            loop {
                if failed {
                    return None;
                }
                if let Some((opened_at, entries)) = chunk.as_mut() {
                    if let Some(entry) = entries.next() {
                        let decoded = decode_entry(entry);
                        match &decoded {
                            Ok(event) => next = event.position + 1,
                            // A scan ends at its first error.
                            Err(_) => failed = true,
                        }
                        return Some(decoded);
                    }
                    let empty = *opened_at == next;
                    // Drop the iterator (and its snapshot) before opening the next one.
                    chunk = None;
                    if empty {
                        // Nothing where the dense log must have an event: end, never spin.
                        return None;
                    }
                }
                if next > end {
                    return None;
                }
                let last = end.min(next.saturating_add(limits::SCAN_CHUNK_EVENTS - 1));
                chunk = Some((
                    next,
                    Box::new(log.range(next.to_be_bytes()..=last.to_be_bytes())),
                ));
            }
        })
    }

    /// The same events as [`Ledger::scan`], in the same order, a chunk at a time, decoded by
    /// `readers` threads ahead of the caller (at most `readers × (SCAN_AHEAD_CHUNKS_QUEUED + 2)`
    /// chunks of `SCAN_AHEAD_CHUNK_EVENTS` in memory): for folds over a long stretch of the log,
    /// which otherwise wait on fjall and the envelope decode on one core. Ends at the position
    /// committed when it was created, or at its first error. Dropping it stops the readers.
    pub fn scan_ahead(&self, from_position: u64, readers: usize) -> ScanAhead {
        ScanAhead::start(
            self,
            from_position.max(1),
            self.committed_position(),
            readers,
        )
    }

    /// The envelope at `position` exactly as stored (its bytes end with its own hash): what a
    /// proof for a third party carries. `None` past the committed head.
    ///
    /// # Errors
    /// [`Error::Storage`] when the store cannot be read.
    pub fn envelope_bytes(&self, position: u64) -> Result<Option<Vec<u8>>> {
        if position == 0 || position > self.committed_position() {
            return Ok(None);
        }
        Ok(self
            .inner
            .store
            .log
            .get(position.to_be_bytes())
            .map_err(Error::storage("reading an envelope"))?
            .map(|bytes| bytes.to_vec()))
    }

    /// Every event from `from_position` on: first those already written, then each new one as it
    /// is acknowledged, in order, with no gap and no duplicate. Buffers at most one page.
    pub fn subscribe(&self, from_position: u64) -> Subscription {
        Subscription::new(
            self.clone(),
            from_position.max(1),
            self.inner.committed.clone(),
        )
    }

    /// The keyspace of projection `name` in this store (created when new).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad name; [`Error::Storage`] when fjall fails.
    pub fn projection_store(&self, name: &str) -> Result<ProjectionStore> {
        ProjectionStore::open(&self.inner.store.db, name)
    }

    /// The last acknowledged event's position and chain hash (0 and the genesis hash when empty).
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Corrupt`] when the store cannot be read.
    pub fn head(&self) -> Result<(u64, Hash)> {
        let position = self.committed_position();
        if position == 0 {
            return Ok((0, GENESIS_HASH));
        }
        let event = self
            .inner
            .store
            .event_at(position)?
            .ok_or_else(|| Error::Corrupt {
                position,
                detail: "the committed position is missing".into(),
            })?;
        Ok((position, event.hash))
    }

    /// Walks the log and its indexes; see [`VerifyReport`].
    ///
    /// # Errors
    /// [`Error::Storage`] when the store cannot be read at all. Corruption is a finding in the
    /// report, not an error. [`Error::IndexStopped`] when the stream index stopped following
    /// the log.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with_progress(&mut |_| {})
    }

    /// [`Ledger::verify`], telling `progress` the position checked so far every few thousand
    /// events.
    ///
    /// # Errors
    /// As [`Ledger::verify`].
    pub fn verify_with_progress(&self, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport> {
        self.index_current()?;
        verify::verify(&self.inner.store, Some(self.committed_position()), progress)
    }
}

/// Per first position, the idempotent appends that start there: command id, dedup record, events.
type StartingAppends = HashMap<u64, Vec<(String, [u8; 44], u32)>>;

/// The next exported batch from `first` (see [`Ledger::export_batches`]).
fn export_one(
    store: &Store,
    records: &mut StartingAppends,
    first: u64,
    end: u64,
    events_max: usize,
    bytes_max: usize,
) -> Result<WireBatch> {
    let mut wire = replica::WireBuilder::new();
    let mut events = 0usize;
    let mut last_hash = GENESIS_HASH;
    // The position up to which an idempotent append begun in this batch runs.
    let mut append_ends_at = 0u64;
    let mut position = first - 1;
    for entry in store.log.range(first.to_be_bytes()..=end.to_be_bytes()) {
        let (key, value) = entry
            .into_inner()
            .map_err(Error::storage("reading the log to export it"))?;
        if store::decode_u64(&key) != Some(position + 1) {
            return Err(Error::Corrupt {
                position: position + 1,
                detail: "the log has a gap".into(),
            });
        }
        let full = events >= events_max || wire.len() + value.len() + 256 > bytes_max;
        if events > 0 && full && position >= append_ends_at {
            break;
        }
        position += 1;
        let event = envelope::decode(position, &value)?;
        wire.push_event(&value);
        for (command_id, record, count) in records.remove(&position).into_iter().flatten() {
            wire.push_record(&command_id, &record);
            append_ends_at = append_ends_at.max(position + u64::from(count) - 1);
        }
        last_hash = event.hash;
        events += 1;
    }
    if events == 0 {
        return Err(Error::Corrupt {
            position: first,
            detail: "the log ends before its committed position".into(),
        });
    }
    Ok(WireBatch {
        first_position: first,
        last_position: position,
        last_hash,
        bytes: wire.finish(),
    })
}

/// One log entry read by `scan`: its key checked and its envelope decoded.
fn decode_entry(entry: fjall::Guard) -> Result<RecordedEvent> {
    let (key, value) = entry
        .into_inner()
        .map_err(Error::storage("scanning the log"))?;
    let position = store::decode_u64(&key).ok_or_else(|| Error::Corrupt {
        position: 0,
        detail: "log key is not 8 bytes".into(),
    })?;
    envelope::decode(position, &value)
}
