//! Reading a long stretch of the log with read-ahead threads. A fold over the whole log (a
//! rebuild) spends most of its time in fjall, reading and checking blocks, and in decoding
//! envelopes; on one thread the machine's other cores stay idle. `Ledger::scan_ahead` hands out
//! the same events in the same order as `Ledger::scan`, a chunk at a time, decoded by reader
//! threads a few chunks ahead of the caller.
//!
//! Chunks go back to the reader that filled them once the caller is done with them, and the
//! reader decodes the next envelopes into the same events (`envelope::decode_into`): after the
//! first few chunks a scan allocates nothing per event, and no event is freed on a thread other
//! than the one that allocated it. Both cost more than the decode itself when they were not
//! avoided.

use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use crate::envelope::{self, RecordedEvent};
use crate::error::{Error, Result};
use crate::limits::{SCAN_AHEAD_CHUNK_EVENTS, SCAN_AHEAD_CHUNKS_QUEUED};
use crate::{Ledger, store};

/// A decoded chunk: its events are the first `.1` of the vector (the rest are spare events kept
/// for their allocations). A chunk that failed carries the first error.
type Chunk = Result<(Vec<RecordedEvent>, usize)>;

/// One reader thread as the consumer sees it.
struct ReaderEnds {
    chunks: Receiver<Chunk>,
    /// Where the consumer returns a chunk's events to be decoded into again.
    spent: Sender<Vec<RecordedEvent>>,
    thread: JoinHandle<()>,
}

/// The log from a position to the committed head, a chunk at a time (`Ledger::scan_ahead`).
/// Dropping it stops its readers, each at its next hand-over, and waits for them: each holds a
/// handle on the ledger, and the last handle closes the store, which must happen on the
/// caller's thread and before the caller can open the directory again.
pub struct ScanAhead {
    /// Chunk `i` comes from reader `i % readers.len()`.
    readers: Vec<ReaderEnds>,
    next_chunk: usize,
    /// The chunk handed out last, with the reader it goes back to.
    held: Option<(usize, Vec<RecordedEvent>, usize)>,
    done: bool,
}

impl ScanAhead {
    /// Reads positions `from..=end` with `readers` threads (at least one).
    pub(crate) fn start(ledger: &Ledger, from: u64, end: u64, readers: usize) -> ScanAhead {
        let count = readers.max(1);
        let readers = (0..count)
            .map(|reader| {
                let (chunk_sender, chunks) = sync_channel(SCAN_AHEAD_CHUNKS_QUEUED);
                let (spent, spent_receiver) = channel();
                let ledger = ledger.clone();
                let range = Range {
                    from,
                    end,
                    reader,
                    readers: count,
                };
                let thread = std::thread::Builder::new()
                    .name(format!("ledger-scan-{reader}"))
                    .spawn(move || read_chunks(&ledger, range, &chunk_sender, &spent_receiver))
                    .expect("spawning a scan reader");
                ReaderEnds {
                    chunks,
                    spent,
                    thread,
                }
            })
            .collect();
        ScanAhead {
            readers,
            next_chunk: 0,
            held: None,
            done: from > end,
        }
    }

    /// The next events in position order (never an empty slice), an error (after which the
    /// scan ends), or `None` at the end. The events handed out before are given back to their
    /// reader.
    pub fn next_chunk(&mut self) -> Option<Result<&[RecordedEvent]>> {
        if let Some((reader, events, _)) = self.held.take() {
            // A reader that has ended no longer needs them.
            let _ = self.readers[reader].spent.send(events);
        }
        if self.done {
            return None;
        }
        let reader = self.next_chunk % self.readers.len();
        self.next_chunk += 1;
        match self.readers[reader].chunks.recv() {
            Ok(Ok((events, len))) => {
                let (_, events, len) = self.held.insert((reader, events, len));
                Some(Ok(&events[..*len]))
            }
            Ok(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            // The reader ended: its chunks, and so the scan, are done.
            Err(_) => {
                self.done = true;
                None
            }
        }
    }
}

impl Drop for ScanAhead {
    fn drop(&mut self) {
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut self.readers)
            .into_iter()
            .map(|ReaderEnds { thread, .. }| thread)
            .collect();
        // Every queue is closed now: a reader waiting to hand over a chunk, or finishing one,
        // finds its consumer gone and ends.
        for thread in threads {
            if let Err(panic) = thread.join()
                && !std::thread::panicking()
            {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Which chunks of `from..=end` one reader decodes: `reader`, `reader + readers`, ….
#[derive(Clone, Copy)]
struct Range {
    from: u64,
    end: u64,
    reader: usize,
    readers: usize,
}

/// Decodes this reader's chunks and queues each, in order, until the end, an error, or the
/// consumer is gone.
fn read_chunks(
    ledger: &Ledger,
    range: Range,
    chunks: &SyncSender<Chunk>,
    spent: &Receiver<Vec<RecordedEvent>>,
) {
    let mut chunk = range.reader as u64;
    loop {
        let Some(first) = chunk
            .checked_mul(SCAN_AHEAD_CHUNK_EVENTS)
            .and_then(|offset| range.from.checked_add(offset))
            .filter(|first| *first <= range.end)
        else {
            return;
        };
        let last = range.end.min(first + SCAN_AHEAD_CHUNK_EVENTS - 1);
        let events = spent
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(SCAN_AHEAD_CHUNK_EVENTS as usize));
        let decoded = read_chunk(ledger, first, last, events);
        let failed = decoded.is_err();
        if chunks.send(decoded).is_err() || failed {
            return;
        }
        chunk += range.readers as u64;
    }
}

/// Positions `first..=last` decoded into `events`; the log is dense, so a missing position is
/// corruption.
fn read_chunk(ledger: &Ledger, first: u64, last: u64, mut events: Vec<RecordedEvent>) -> Chunk {
    let mut next = first;
    let mut len = 0;
    for entry in ledger
        .inner
        .store
        .log
        .range(first.to_be_bytes()..=last.to_be_bytes())
    {
        let (key, value) = entry
            .into_inner()
            .map_err(Error::storage("scanning the log"))?;
        if store::decode_u64(&key) != Some(next) {
            break;
        }
        match events.get_mut(len) {
            Some(event) => envelope::decode_into(next, &value, event)?,
            None => events.push(envelope::decode(next, &value)?),
        }
        len += 1;
        next += 1;
    }
    if next != last + 1 {
        return Err(Error::Corrupt {
            position: next,
            detail: "the log has no event here".into(),
        });
    }
    Ok((events, len))
}
