//! Deadlines of the sans-IO stack.
//!
//! The stack never sleeps: it records when it wants to be woken (`next_deadline`) and
//! the driver calls `Stack::handle_timeout` with the current time. Timers are keyed by
//! `(deadline, sequence)` in a `BTreeMap`, so the earliest is the first entry and a
//! timer that is no longer wanted is removed by its key in O(log n).

use std::collections::BTreeMap;
use std::time::Instant;

/// Names one armed timer, for cancelling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerId(Instant, u64);

pub struct Timers<T> {
    armed: BTreeMap<TimerId, T>,
    next_seq: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            armed: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<T> Timers<T> {
    pub fn set(&mut self, at: Instant, what: T) -> TimerId {
        self.next_seq += 1;
        let id = TimerId(at, self.next_seq);
        self.armed.insert(id, what);
        id
    }

    pub fn cancel(&mut self, id: Option<TimerId>) {
        if let Some(id) = id {
            self.armed.remove(&id);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.armed.keys().next().map(|id| id.0)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerId, T)> {
        let first = *self.armed.keys().next()?;
        if first.0 > now {
            return None;
        }
        self.armed.remove(&first).map(|t| (first, t))
    }

    pub fn len(&self) -> usize {
        self.armed.len()
    }
}
