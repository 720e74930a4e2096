//! `verify`: walks the whole log in global order and checks everything that can be checked from
//! the store alone: dense positions, strict decoding, each envelope's hash, the chain of
//! previous hashes, dense stream versions, non-decreasing recorded times, and that the `streams`
//! and `dedup` indexes say exactly what the log says. The stream index follows the log (see
//! `index`): it is checked up to its checkpoint, and the checkpoint must name an event of this
//! log; events past it are the tail the next open indexes. It stops at the first problem and
//! names its position. Not a repair tool: it writes nothing.

use std::collections::HashMap;

use crate::envelope::{self, GENESIS_HASH, Hash};
use crate::error::{Error, Result};
use crate::store::{self, DedupRecord, Store};

/// The outcome of [`crate::Ledger::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events whose envelope was checked.
    pub events_checked: u64,
    /// Streams seen.
    pub streams_checked: u64,
    /// The last position checked.
    pub last_position: u64,
    /// The hash of the last event checked: the chain's head.
    pub last_hash: Hash,
    /// The first inconsistency, if any.
    pub problem: Option<VerifyProblem>,
}

/// An inconsistency found by `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyProblem {
    /// The first bad global position (for an index entry, the position it concerns).
    pub position: u64,
    /// What is wrong there.
    pub detail: String,
}

impl VerifyReport {
    /// True when nothing was found.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// `committed`: the position the writer acknowledged last, when a writer runs.
/// Events checked between two progress reports.
const VERIFY_PROGRESS_EVERY: u64 = 16_384;

pub(crate) fn verify(
    store: &Store,
    committed: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        events_checked: 0,
        streams_checked: 0,
        last_position: 0,
        last_hash: GENESIS_HASH,
        problem: None,
    };
    let mut stream_versions: HashMap<String, u64> = HashMap::new();
    let mut last_recorded = i64::MIN;
    let (indexed_to, indexed_hash) = store.indexed_to()?;
    let problem = |position: u64, detail: String| Some(VerifyProblem { position, detail });

    for entry in store.log.iter() {
        let (key, value) = entry
            .into_inner()
            .map_err(Error::storage("reading the log for verify"))?;
        let expected_position = report.last_position + 1;
        if expected_position.is_multiple_of(VERIFY_PROGRESS_EVERY) {
            progress(report.last_position);
        }
        let Some(position) = store::decode_u64(&key) else {
            report.problem = problem(expected_position, "a log key is not 8 bytes".into());
            return Ok(report);
        };
        if position != expected_position {
            report.problem = problem(
                expected_position,
                format!("position {expected_position} is missing (next stored is {position})"),
            );
            return Ok(report);
        }
        let event = match envelope::decode(position, &value) {
            Ok(event) => event,
            Err(error) => {
                report.problem = problem(position, error.to_string());
                return Ok(report);
            }
        };
        if envelope::recompute_hash(&value) != Some(event.hash) {
            report.problem = problem(
                position,
                "the envelope's bytes do not match its hash".into(),
            );
            return Ok(report);
        }
        if event.prev_hash != report.last_hash {
            report.problem = problem(
                position,
                "the previous-hash link does not match the event before it".into(),
            );
            return Ok(report);
        }
        let stream_version = stream_versions.entry(event.stream.clone()).or_insert(0);
        if event.version != *stream_version + 1 {
            report.problem = problem(
                position,
                format!(
                    "stream {} jumps from version {} to {}",
                    event.stream, stream_version, event.version
                ),
            );
            return Ok(report);
        }
        *stream_version = event.version;
        let recorded = event.recorded_at.timestamp_nanos_opt().unwrap_or(i64::MIN);
        if recorded < last_recorded {
            report.problem = problem(position, "recorded time goes backwards".into());
            return Ok(report);
        }
        last_recorded = recorded;
        if position == indexed_to && event.hash != indexed_hash {
            report.problem = problem(
                position,
                "the stream index's checkpoint names another event here".into(),
            );
            return Ok(report);
        }
        if position > indexed_to {
            report.events_checked += 1;
            report.last_position = position;
            report.last_hash = event.hash;
            continue;
        }
        let indexed = store
            .streams
            .get(store::stream_key(&event.stream, event.version))
            .map_err(Error::storage("reading the stream index for verify"))?;
        if indexed.as_deref().and_then(store::decode_u64) != Some(position) {
            report.problem = problem(
                position,
                format!(
                    "the stream index has no entry for {} version {} at this position",
                    event.stream, event.version
                ),
            );
            return Ok(report);
        }
        report.events_checked += 1;
        report.last_position = position;
        report.last_hash = event.hash;
    }
    report.streams_checked = stream_versions.len() as u64;

    if let Some(committed) = committed
        && report.last_position != committed
    {
        report.problem = problem(
            report.last_position.min(committed) + 1,
            format!(
                "the log ends at {} but {committed} was acknowledged",
                report.last_position
            ),
        );
        return Ok(report);
    }
    if indexed_to > report.last_position {
        report.problem = problem(
            report.last_position + 1,
            format!(
                "the stream index claims events up to {indexed_to}; the log ends at {}",
                report.last_position
            ),
        );
        return Ok(report);
    }
    if let Some(found) = check_indexes(store, &stream_versions, report.last_position)? {
        report.problem = Some(found);
    }
    Ok(report)
}

/// Every `streams` and `dedup` entry must be backed by the log.
fn check_indexes(
    store: &Store,
    stream_versions: &HashMap<String, u64>,
    last_position: u64,
) -> Result<Option<VerifyProblem>> {
    for entry in store.streams.iter() {
        let (key, value) = entry
            .into_inner()
            .map_err(Error::storage("reading the stream index for verify"))?;
        let position = store::decode_u64(&value).unwrap_or(0);
        let split = key.len().saturating_sub(9);
        let stream = String::from_utf8_lossy(&key[..split]).into_owned();
        let version = store::decode_u64(&key[split + 1..]).unwrap_or(0);
        if version > stream_versions.get(&stream).copied().unwrap_or(0) {
            return Ok(Some(VerifyProblem {
                position,
                detail: format!(
                    "the stream index has {stream} version {version}, which the log lacks"
                ),
            }));
        }
    }
    for entry in store.dedup.iter() {
        let (key, value) = entry
            .into_inner()
            .map_err(Error::storage("reading the dedup index for verify"))?;
        let command_id = String::from_utf8_lossy(&key).into_owned();
        let Some(record) = DedupRecord::decode(&value) else {
            return Ok(Some(VerifyProblem {
                position: 0,
                detail: format!("the dedup record of {command_id:?} is not 44 bytes"),
            }));
        };
        let last = record.first_position + u64::from(record.count).saturating_sub(1);
        if record.count == 0 || record.first_position == 0 || last > last_position {
            return Ok(Some(VerifyProblem {
                position: record.first_position,
                detail: format!("the dedup record of {command_id:?} points past the log"),
            }));
        }
    }
    Ok(None)
}
