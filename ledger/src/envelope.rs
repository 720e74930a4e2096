//! The envelope: one event as stored in the `log` keyspace, with its canonical byte encoding and
//! its place in the SHA-256 hash chain. Not a serde format: the bytes are hashed, so the
//! encoding is written out field by field and never depends on a library's choices.
//!
//! Layout (all integers big-endian), envelope format 1:
//! `format u8 | position u64 | version u64 | stream str16 | event_id [16] | type str16 |
//!  schema_version u32 | recorded_at i64 ns | effective_at opt(i64 ns) | metadata 6 × opt(str32) |
//!  payload bytes32 | prev_hash [32] | hash [32]`
//! where `hash = SHA-256(every byte before it)`, which includes `prev_hash`.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The envelope encoding this build writes and reads.
pub const ENVELOPE_FORMAT: u8 = 1;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The hash before the first event.
pub const GENESIS_HASH: Hash = [0; 32];

/// Who asked for an event and why. Opaque to the log apart from `command_id`, which the log
/// does not interpret either: idempotency uses the id given to `append`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The command that produced the event.
    pub command_id: Option<String>,
    /// Who asked.
    pub actor: Option<String>,
    /// The conversation the command belongs to.
    pub correlation_id: Option<String>,
    /// The message that caused the command.
    pub causation_id: Option<String>,
    /// Why (free text).
    pub reason: Option<String>,
    /// An external reference: a ticket, an invoice, a timesheet id.
    pub reference: Option<String>,
}

impl Metadata {
    fn fields(&self) -> [&Option<String>; 6] {
        [
            &self.command_id,
            &self.actor,
            &self.correlation_id,
            &self.causation_id,
            &self.reason,
            &self.reference,
        ]
    }

    pub(crate) fn bytes_len(&self) -> usize {
        self.fields()
            .iter()
            .map(|f| f.as_ref().map_or(0, String::len))
            .sum()
    }
}

/// An event to append: the caller's part of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The event's type name, e.g. `credits_converted`.
    pub event_type: String,
    /// The version of the payload's schema, for upcasters.
    pub schema_version: u32,
    /// When it happened in the business, if the event has such a time.
    pub effective_at: Option<DateTime<Utc>>,
    /// Who and why.
    pub metadata: Metadata,
    /// The event itself: opaque bytes.
    pub payload: Vec<u8>,
}

impl NewEvent {
    /// An event with a type and payload, schema version 1, no effective time and no metadata.
    pub fn new(event_type: impl Into<String>, payload: impl Into<Vec<u8>>) -> NewEvent {
        NewEvent {
            event_type: event_type.into(),
            schema_version: 1,
            effective_at: None,
            metadata: Metadata::default(),
            payload: payload.into(),
        }
    }
}

/// An event as stored: the caller's part plus its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Dense global position, from 1.
    pub position: u64,
    /// The stream it belongs to.
    pub stream: String,
    /// Dense version within the stream, from 1.
    pub version: u64,
    /// UUID v7, unique.
    pub event_id: Uuid,
    /// Type name.
    pub event_type: String,
    /// Payload schema version.
    pub schema_version: u32,
    /// When the log appended it. Never decreases along the global order.
    pub recorded_at: DateTime<Utc>,
    /// When it happened in the business.
    pub effective_at: Option<DateTime<Utc>>,
    /// Who and why.
    pub metadata: Metadata,
    /// The event itself.
    pub payload: Vec<u8>,
    /// The hash of the event before it in the global order.
    pub prev_hash: Hash,
    /// SHA-256 over this envelope's canonical bytes, `prev_hash` included.
    pub hash: Hash,
}

/// The fields of an envelope known before its hash is computed.
pub(crate) struct EnvelopeParts<'a> {
    pub position: u64,
    pub stream: &'a str,
    pub version: u64,
    pub event_id: Uuid,
    pub recorded_at_nanos: i64,
    pub event: &'a NewEvent,
    pub prev_hash: &'a Hash,
}

/// Encodes an envelope and returns its bytes and hash.
pub(crate) fn encode(parts: &EnvelopeParts<'_>) -> (Vec<u8>, Hash) {
    let event = parts.event;
    let mut out = Vec::with_capacity(160 + event.payload.len() + event.metadata.bytes_len());
    out.push(ENVELOPE_FORMAT);
    out.extend_from_slice(&parts.position.to_be_bytes());
    out.extend_from_slice(&parts.version.to_be_bytes());
    put_str16(&mut out, parts.stream);
    out.extend_from_slice(parts.event_id.as_bytes());
    put_str16(&mut out, &event.event_type);
    out.extend_from_slice(&event.schema_version.to_be_bytes());
    out.extend_from_slice(&parts.recorded_at_nanos.to_be_bytes());
    match event.effective_at {
        Some(at) => {
            out.push(1);
            let nanos = at
                .timestamp_nanos_opt()
                .expect("effective_at range is validated before encoding");
            out.extend_from_slice(&nanos.to_be_bytes());
        }
        None => out.push(0),
    }
    for field in event.metadata.fields() {
        match field {
            Some(text) => {
                out.push(1);
                put_bytes32(&mut out, text.as_bytes());
            }
            None => out.push(0),
        }
    }
    put_bytes32(&mut out, &event.payload);
    out.extend_from_slice(parts.prev_hash);
    let hash: Hash = Sha256::digest(&out).into();
    out.extend_from_slice(&hash);
    (out, hash)
}

fn put_str16(out: &mut Vec<u8>, text: &str) {
    let len = u16::try_from(text.len()).expect("string lengths are validated against limits");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_bytes32(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("byte lengths are validated against limits");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The hash an envelope's bytes should carry: SHA-256 of all but the last 32 bytes.
pub(crate) fn recompute_hash(bytes: &[u8]) -> Option<Hash> {
    let body = bytes.len().checked_sub(32)?;
    Some(Sha256::digest(&bytes[..body]).into())
}

/// What the log tree needs of an envelope stored under `position`, read without decoding the
/// rest: its stream, its version and the hash it ends with. Checks the format byte, the position
/// it names and the lengths it reads.
pub(crate) fn stored_head(position: u64, bytes: &[u8]) -> Result<(&str, u64, Hash)> {
    let corrupt = |detail: &str| Error::Corrupt {
        position,
        detail: detail.to_owned(),
    };
    // format, position, version, stream length: 19 bytes; then the stream; the hash at the end.
    if bytes.len() < 19 + 32 {
        return Err(corrupt("envelope too short"));
    }
    if bytes[0] != ENVELOPE_FORMAT {
        return Err(corrupt(&format!(
            "envelope format {}, this build reads {ENVELOPE_FORMAT}",
            bytes[0]
        )));
    }
    if bytes[1..9] != position.to_be_bytes() {
        return Err(corrupt("the envelope names another position"));
    }
    let version = u64::from_be_bytes(bytes[9..17].try_into().expect("8 bytes"));
    let len = usize::from(u16::from_be_bytes([bytes[17], bytes[18]]));
    let stream = bytes
        .get(19..19 + len)
        .filter(|_| 19 + len + 32 <= bytes.len())
        .ok_or_else(|| corrupt("truncated stream id"))?;
    let stream = std::str::from_utf8(stream).map_err(|_| corrupt("stream id is not UTF-8"))?;
    let hash: Hash = bytes[bytes.len() - 32..]
        .try_into()
        .expect("the last 32 bytes");
    Ok((stream, version, hash))
}

/// Decodes an envelope stored under `position`. Strict: every length is checked, no byte may be
/// left over, and the envelope's own position must match its key.
pub(crate) fn decode(position: u64, bytes: &[u8]) -> Result<RecordedEvent> {
    let mut event = RecordedEvent {
        position: 0,
        stream: String::new(),
        version: 0,
        event_id: Uuid::nil(),
        event_type: String::new(),
        schema_version: 0,
        recorded_at: DateTime::UNIX_EPOCH,
        effective_at: None,
        metadata: Metadata::default(),
        payload: Vec::new(),
        prev_hash: [0; 32],
        hash: [0; 32],
    };
    decode_into(position, bytes, &mut event)?;
    Ok(event)
}

/// `decode` into an event decoded before, reusing the allocations of its strings and payload:
/// a scan that recycles its events allocates nothing per event once they have grown. On an
/// error `event` holds a mix of both envelopes.
pub(crate) fn decode_into(position: u64, bytes: &[u8], event: &mut RecordedEvent) -> Result<()> {
    let corrupt = |detail: &str| Error::Corrupt {
        position,
        detail: detail.to_owned(),
    };
    let mut reader = Reader { bytes, at: 0 };
    let format = reader.u8().ok_or_else(|| corrupt("empty envelope"))?;
    if format != ENVELOPE_FORMAT {
        return Err(corrupt(&format!(
            "envelope format {format}, this build reads {ENVELOPE_FORMAT}"
        )));
    }
    let truncated = || corrupt("truncated envelope");
    let stored_position = reader.u64().ok_or_else(truncated)?;
    if stored_position != position {
        return Err(corrupt(&format!(
            "envelope says position {stored_position}, stored under {position}"
        )));
    }
    event.position = position;
    event.version = reader.u64().ok_or_else(truncated)?;
    let stream = reader
        .str16()
        .ok_or_else(truncated)?
        .map_err(|()| corrupt("stream id is not UTF-8"))?;
    set_text(&mut event.stream, stream);
    event.event_id = Uuid::from_bytes(reader.array::<16>().ok_or_else(truncated)?);
    let event_type = reader
        .str16()
        .ok_or_else(truncated)?
        .map_err(|()| corrupt("event type is not UTF-8"))?;
    set_text(&mut event.event_type, event_type);
    event.schema_version = reader.u32().ok_or_else(truncated)?;
    event.recorded_at = DateTime::from_timestamp_nanos(reader.i64().ok_or_else(truncated)?);
    event.effective_at = match reader.u8().ok_or_else(truncated)? {
        0 => None,
        1 => Some(DateTime::from_timestamp_nanos(
            reader.i64().ok_or_else(truncated)?,
        )),
        _ => return Err(corrupt("bad effective_at flag")),
    };
    let metadata = &mut event.metadata;
    for field in [
        &mut metadata.command_id,
        &mut metadata.actor,
        &mut metadata.correlation_id,
        &mut metadata.causation_id,
        &mut metadata.reason,
        &mut metadata.reference,
    ] {
        match reader.u8().ok_or_else(truncated)? {
            0 => *field = None,
            1 => {
                let raw = reader.bytes32().ok_or_else(truncated)?;
                let text =
                    std::str::from_utf8(raw).map_err(|_| corrupt("metadata is not UTF-8"))?;
                match field {
                    Some(held) => set_text(held, text),
                    None => *field = Some(text.to_owned()),
                }
            }
            _ => return Err(corrupt("bad metadata flag")),
        }
    }
    let payload = reader.bytes32().ok_or_else(truncated)?;
    event.payload.clear();
    event.payload.extend_from_slice(payload);
    event.prev_hash = reader.array::<32>().ok_or_else(truncated)?;
    event.hash = reader.array::<32>().ok_or_else(truncated)?;
    if reader.at != bytes.len() {
        return Err(corrupt("bytes left over after the envelope"));
    }
    Ok(())
}

fn set_text(held: &mut String, text: &str) {
    held.clear();
    held.push_str(text);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)
            .map(|s| s.try_into().expect("take returns N bytes"))
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }
    /// `None` when truncated; `Some(Err)` when not UTF-8.
    fn str16(&mut self) -> Option<Result<&'a str, ()>> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        let raw = self.take(len)?;
        Some(std::str::from_utf8(raw).map_err(|_| ()))
    }
    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(u32::from_be_bytes(self.array()?)).ok()?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_event() -> NewEvent {
        NewEvent {
            event_type: "credits_purchased".into(),
            schema_version: 3,
            effective_at: Some("2026-01-01T00:00:00.123456789Z".parse().unwrap()),
            metadata: Metadata {
                command_id: Some("cmd-1".into()),
                actor: Some("finance@contoso".into()),
                correlation_id: None,
                causation_id: Some("x".into()),
                reason: None,
                reference: Some("INV-7".into()),
            },
            payload: br#"{"quantity":"100"}"#.to_vec(),
        }
    }

    #[test]
    fn the_head_read_without_decoding_matches_the_decoded_envelope() {
        let event = sample_event();
        let (bytes, hash) = encode(&EnvelopeParts {
            position: 9,
            stream: "contract-Ü-1",
            version: 4,
            event_id: Uuid::now_v7(),
            recorded_at_nanos: 1_767_225_600_000_000_001,
            event: &event,
            prev_hash: &GENESIS_HASH,
        });
        assert_eq!(stored_head(9, &bytes).unwrap(), ("contract-Ü-1", 4, hash));
        assert!(stored_head(8, &bytes).is_err(), "another position");
        assert!(stored_head(9, &bytes[..40]).is_err(), "truncated");
    }

    #[test]
    fn round_trips_every_field_and_chains_the_hash() {
        let event = sample_event();
        let prev = [7u8; 32];
        let (bytes, hash) = encode(&EnvelopeParts {
            position: 42,
            stream: "contract-C-1001",
            version: 5,
            event_id: Uuid::now_v7(),
            recorded_at_nanos: 1_767_225_600_000_000_001,
            event: &event,
            prev_hash: &prev,
        });
        let decoded = decode(42, &bytes).unwrap();
        assert_eq!(decoded.stream, "contract-C-1001");
        assert_eq!(decoded.version, 5);
        assert_eq!(decoded.event_type, event.event_type);
        assert_eq!(decoded.schema_version, 3);
        assert_eq!(decoded.effective_at, event.effective_at);
        assert_eq!(decoded.metadata, event.metadata);
        assert_eq!(decoded.payload, event.payload);
        assert_eq!(decoded.prev_hash, prev);
        assert_eq!(decoded.hash, hash);
        assert_eq!(recompute_hash(&bytes), Some(hash));
    }

    #[test]
    fn rejects_wrong_key_truncation_and_trailing_bytes() {
        let event = sample_event();
        let (bytes, _) = encode(&EnvelopeParts {
            position: 9,
            stream: "s",
            version: 1,
            event_id: Uuid::now_v7(),
            recorded_at_nanos: 0,
            event: &event,
            prev_hash: &GENESIS_HASH,
        });
        assert!(matches!(
            decode(10, &bytes),
            Err(Error::Corrupt { position: 10, .. })
        ));
        assert!(decode(9, &bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(9, &longer).is_err());
    }
}
