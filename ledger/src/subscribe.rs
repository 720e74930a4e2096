//! Catch-up subscriptions. Catch-up and live are one loop: read acknowledged events from the
//! store a page at a time; when none are left, wait for the writer to acknowledge more. The
//! writer only moves a watch value, so a slow subscriber costs the writer nothing and holds at
//! most one page; there is no hand-over, hence no gap and no duplicate at it.

use std::collections::VecDeque;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::limits::SUBSCRIPTION_PAGE_MAX;
use crate::{Ledger, RecordedEvent};

/// Events in global order from a position on; see [`Ledger::subscribe`].
pub struct Subscription {
    ledger: Ledger,
    next_position: u64,
    page: VecDeque<RecordedEvent>,
    committed: watch::Receiver<u64>,
}

impl Subscription {
    pub(crate) fn new(ledger: Ledger, next_position: u64, committed: watch::Receiver<u64>) -> Self {
        Subscription {
            ledger,
            next_position,
            page: VecDeque::new(),
            committed,
        }
    }

    /// The position the next event will have.
    pub fn next_position(&self) -> u64 {
        self.page
            .front()
            .map_or(self.next_position, |event| event.position)
    }

    /// The next event, waiting for it if it is not written yet.
    ///
    /// # Errors
    /// [`Error::WriterStopped`] when the writer stopped and no further event will come;
    /// [`Error::Storage`] or [`Error::Corrupt`] when the store cannot be read.
    pub async fn next(&mut self) -> Result<RecordedEvent> {
        loop {
            if let Some(event) = self.page.pop_front() {
                return Ok(event);
            }
            let committed = *self.committed.borrow_and_update();
            if committed >= self.next_position {
                let page = self
                    .ledger
                    .read_all(self.next_position, SUBSCRIPTION_PAGE_MAX)?;
                if let Some(last) = page.last() {
                    assert_eq!(
                        page[0].position, self.next_position,
                        "subscription found a gap in the log"
                    );
                    self.next_position = last.position + 1;
                }
                self.page.extend(page);
                continue;
            }
            if let Some(cause) = self.ledger.writer_stop_cause() {
                return Err(Error::WriterStopped { cause });
            }
            if self.committed.changed().await.is_err() {
                return Err(Error::WriterStopped {
                    cause: "the log was closed".into(),
                });
            }
        }
    }
}
