//! The events the writer committed last — position, stream, version, hash — handed to the log
//! tree in memory, so that a checkpoint a second under load need not read back every envelope it
//! just wrote (`proofs::log_tree`). Off until the first log tree is asked for in this process:
//! a process that never checkpoints pays nothing. Bounded; whatever it no longer holds (or never
//! held: a gap, a restart, a replicated mirror's batches) is read from the log as before.
//!
//! Not the truth: a hint of what is durable. Only committed batches are pushed, after their
//! fsync, in order; any break in positions empties it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Hash;
use crate::limits::RECENT_HEADS_MAX;

/// One committed event, as the log tree needs it.
pub(crate) type RecentEvent = (Arc<str>, u64, Hash);

#[derive(Default)]
pub(crate) struct RecentHeads {
    enabled: AtomicBool,
    state: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    /// The position of `events[0]`.
    first: u64,
    events: VecDeque<RecentEvent>,
}

impl RecentHeads {
    /// Starts keeping events, from the next committed batch on.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// A committed batch's events, the first at `first_position`, in order.
    pub fn push(&self, first_position: u64, events: impl Iterator<Item = RecentEvent>) {
        let mut recent = self.state.lock().expect("recent heads lock");
        if recent.first + recent.events.len() as u64 != first_position {
            recent.events.clear();
            recent.first = first_position;
        }
        recent.events.extend(events);
        let over = recent.events.len().saturating_sub(RECENT_HEADS_MAX);
        if over > 0 {
            recent.events.drain(..over);
            recent.first += over as u64;
        }
    }

    /// Up to `max` events from position `from` on, taken out (with every one before `from`);
    /// `None` when it does not hold `from`.
    pub fn take(&self, from: u64, max: usize) -> Option<Vec<RecentEvent>> {
        let mut recent = self.state.lock().expect("recent heads lock");
        if from < recent.first || from >= recent.first + recent.events.len() as u64 {
            return None;
        }
        let skip = (from - recent.first) as usize;
        recent.events.drain(..skip);
        let count = max.min(recent.events.len());
        let taken: Vec<RecentEvent> = recent.events.drain(..count).collect();
        recent.first = from + count as u64;
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(n: u64) -> impl Iterator<Item = RecentEvent> {
        (0..n).map(|i| (Arc::<str>::from("s"), i + 1, [i as u8; 32]))
    }

    #[test]
    fn hands_over_in_order_and_forgets_on_a_gap() {
        let recent = RecentHeads::default();
        recent.push(1, events(3));
        recent.push(4, events(2));
        let taken = recent.take(2, 3).unwrap();
        assert_eq!(taken.len(), 3, "positions 2, 3, 4");
        assert_eq!(taken[0].2, [1; 32]);
        assert!(recent.take(2, 1).is_none(), "taken out");
        assert_eq!(recent.take(5, 10).unwrap().len(), 1);
        // A gap (a batch it never saw): what it held is no use.
        recent.push(10, events(1));
        assert!(recent.take(6, 10).is_none());
        assert_eq!(recent.take(10, 10).unwrap().len(), 1);
    }
}
