//! The seam between the log and where its batches are made durable. Embedded, a batch is durable
//! when fjall's `SyncAll` returned; replicated, the committer first hands the batch to a
//! [`Replicator`] (a JetStream R3 publish, in `tools`) and writes it locally only once that
//! returned. Everything above this step (stager, dedup, hash chain, index, subscriptions) is the
//! same code for both. Not a network client: this module knows bytes, positions and hashes only.
//!
//! A replicated batch is one message, the writer's own bytes (all integers big-endian):
//! `"CLB1" | events u32 | events × (len u32 | envelope) | records u32 |
//!  records × (id len u16 | command id | dedup record [44])`.
//! A mirror applies it with [`crate::Ledger::apply_replicated`], which checks every position,
//! every envelope's hash and its link to the one before, and each stream's next version, and
//! writes nothing when any of it is wrong.

use crate::envelope::Hash;

/// The first bytes of every replicated batch (format 1).
pub const WIRE_MAGIC: &[u8; 4] = b"CLB1";

/// A bound on one event's share of a replicated batch beyond its payload and metadata: the
/// envelope's fixed fields, its stream id and type, the length prefix, and a dedup record.
pub(crate) const WIRE_EVENT_OVERHEAD: usize = 512;

/// Makes each committed batch durable elsewhere before the local commit.
pub trait Replicator: Send + Sync {
    /// Called by the committer, on its own thread (it may block), once per batch and in order.
    /// Returns the replicated log's sequence for the batch (stored beside the batch, so that a
    /// mirror knows where to resume). An error stops the writer for good: nothing of the batch
    /// is acknowledged or written locally.
    ///
    /// # Errors
    /// The cause, for the log's callers: e.g. another writer appended (fenced), or no quorum.
    fn replicate(&self, batch: &WireBatch) -> Result<u64, String>;

    /// The largest batch, in bytes, one call may carry (e.g. the server's max_payload less
    /// headroom for headers).
    fn batch_bytes_max(&self) -> usize;

    /// How many batches may be submitted and not yet written locally. Above 1, the committer
    /// calls [`Replicator::submit`] for each batch as soon as it is ready, and waits on the
    /// returned [`Pending`] values in order. 1 (the default): [`Replicator::replicate`] each.
    fn window(&self) -> usize {
        1
    }

    /// Starts replicating `batch` after every batch submitted before it, without waiting for
    /// the outcome. The default replicates at once.
    fn submit(&self, batch: WireBatch) -> Pending {
        Pending::ready(self.replicate(&batch))
    }
}

/// A submitted batch's outcome, to wait for: its sequence in the replicated log, or the cause.
pub struct Pending(Box<dyn FnOnce() -> Result<u64, String> + Send>);

impl Pending {
    /// An outcome known already.
    pub fn ready(outcome: Result<u64, String>) -> Pending {
        Pending(Box::new(move || outcome))
    }

    /// An outcome that `wait` produces (it may block).
    pub fn new(wait: impl FnOnce() -> Result<u64, String> + Send + 'static) -> Pending {
        Pending(Box::new(wait))
    }

    /// Blocks until the outcome is known.
    ///
    /// # Errors
    /// The replication's failure.
    pub fn wait(self) -> Result<u64, String> {
        (self.0)()
    }
}

/// One group-committed batch as it is replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireBatch {
    /// The position of its first event.
    pub first_position: u64,
    /// The position of its last event.
    pub last_position: u64,
    /// The hash of its last event.
    pub last_hash: Hash,
    /// The encoding above.
    pub bytes: Vec<u8>,
}

/// Builds a batch's bytes as the stager stages it.
pub(crate) struct WireBuilder {
    events: Vec<u8>,
    event_count: u32,
    records: Vec<u8>,
    record_count: u32,
}

impl WireBuilder {
    pub fn new() -> WireBuilder {
        WireBuilder {
            events: Vec::new(),
            event_count: 0,
            records: Vec::new(),
            record_count: 0,
        }
    }

    pub fn push_event(&mut self, envelope: &[u8]) {
        let len = u32::try_from(envelope.len()).expect("events are limited to 1 MiB");
        self.events.extend_from_slice(&len.to_be_bytes());
        self.events.extend_from_slice(envelope);
        self.event_count += 1;
    }

    pub fn push_record(&mut self, command_id: &str, record: &[u8; 44]) {
        let len = u16::try_from(command_id.len()).expect("command ids are limited to 200 bytes");
        self.records.extend_from_slice(&len.to_be_bytes());
        self.records.extend_from_slice(command_id.as_bytes());
        self.records.extend_from_slice(record);
        self.record_count += 1;
    }

    pub fn len(&self) -> usize {
        12 + self.events.len() + self.records.len()
    }

    pub fn finish(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(WIRE_MAGIC);
        out.extend_from_slice(&self.event_count.to_be_bytes());
        out.extend_from_slice(&self.events);
        out.extend_from_slice(&self.record_count.to_be_bytes());
        out.extend_from_slice(&self.records);
        out
    }
}

/// The hash of a batch's last event, when the bytes are a well-formed batch with events.
pub fn last_hash(bytes: &[u8]) -> Option<Hash> {
    let decoded = decode(bytes).ok()?;
    let last = decoded.envelopes.last()?;
    last.get(last.len().checked_sub(32)?..)?.try_into().ok()
}

/// A batch's parts, borrowed from its bytes.
pub(crate) struct Decoded<'a> {
    pub envelopes: Vec<&'a [u8]>,
    pub records: Vec<(&'a str, &'a [u8])>,
}

/// Splits a batch into envelopes and dedup records, or says what is malformed.
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded<'_>, String> {
    let mut at = 0usize;
    let mut take = |len: usize| -> Result<&[u8], String> {
        let end = at
            .checked_add(len)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| format!("truncated batch ({} bytes)", bytes.len()))?;
        let slice = &bytes[at..end];
        at = end;
        Ok(slice)
    };
    if take(4)? != WIRE_MAGIC {
        return Err("not a replicated ledger batch (magic)".into());
    }
    let u32_of = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
    let count = u32_of(take(4)?);
    let mut envelopes = Vec::new();
    for _ in 0..count {
        let len = u32_of(take(4)?) as usize;
        envelopes.push(take(len)?);
    }
    let count = u32_of(take(4)?);
    let mut records = Vec::new();
    for _ in 0..count {
        let len = u16::from_be_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
        let id = std::str::from_utf8(take(len)?).map_err(|_| "a command id is not UTF-8")?;
        records.push((id, take(44)?));
    }
    if at != bytes.len() {
        return Err("bytes left over after the batch".into());
    }
    Ok(Decoded { envelopes, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_decodes_to_what_was_pushed_and_rejects_damage() {
        let mut wire = WireBuilder::new();
        wire.push_event(b"first");
        wire.push_event(b"second!");
        wire.push_record("cmd-1", &[7; 44]);
        let bytes = wire.finish();
        assert_eq!(bytes.len(), wire.len());
        let decoded = decode(&bytes).expect("decodes");
        assert_eq!(decoded.envelopes, vec![&b"first"[..], &b"second!"[..]]);
        assert_eq!(decoded.records, vec![("cmd-1", &[7u8; 44][..])]);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(b"XXXX\0\0\0\0\0\0\0\0").is_err());
    }
}
