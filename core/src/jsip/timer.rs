//! Deadlines of the sans-IO stack.
//!
//! The stack never sleeps: it records when it wants to be woken (`next_deadline`) and
//! the driver calls `Stack::handle_timeout` with the current time.
//!
//! Nearly every timer is cancelled, not fired: each transaction arms one and its answer
//! cancels it, a few microseconds later. So setting and cancelling must be cheap, and
//! they are an indexed binary heap's: entries live in slots that are reused, the heap
//! orders slot numbers by (deadline, sequence), and each entry knows its place in the
//! heap, so cancelling removes it there in O(log n). Once the slots and the heap have
//! grown to the number of timers armed at once, nothing is allocated. (A `BTreeMap`
//! allocated and freed a node whenever its only timer came and went: about 650
//! instructions per message under callgrind.)

use std::time::Instant;

/// Names one armed timer, for cancelling it. The sequence number is never reused, so
/// the id of a timer that fired or was cancelled names nothing, even once its slot
/// holds another timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerId {
    slot: u32,
    seq: u64,
}

struct Entry<T> {
    at: Instant,
    seq: u64,
    /// Where this entry's slot number is in `Timers::heap`.
    heap_at: usize,
    what: T,
}

pub struct Timers<T> {
    slots: Vec<Option<Entry<T>>>,
    /// Empty slots, for the next `set`.
    free: Vec<u32>,
    /// Slot numbers, a min-heap on (deadline, sequence): the earliest first, and two
    /// timers due at the same instant in the order they were set.
    heap: Vec<u32>,
    next_seq: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            slots: Vec::new(),
            free: Vec::new(),
            heap: Vec::new(),
            next_seq: 0,
        }
    }
}

impl<T> Timers<T> {
    pub fn set(&mut self, at: Instant, what: T) -> TimerId {
        self.next_seq += 1;
        let seq = self.next_seq;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 timers armed")
            }
        };
        self.slots[slot as usize] = Some(Entry {
            at,
            seq,
            heap_at: self.heap.len(),
            what,
        });
        self.heap.push(slot);
        self.sift_up(self.heap.len() - 1);
        TimerId { slot, seq }
    }

    /// Cancels a timer; one that already fired or was cancelled is left alone.
    pub fn cancel(&mut self, id: Option<TimerId>) {
        if let Some(id) = id {
            if self.entry(id.slot).is_some_and(|e| e.seq == id.seq) {
                self.remove(id.slot);
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.first().map(|&s| self.at(s))
    }

    /// Removes and returns the earliest timer due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerId, T)> {
        let &first = self.heap.first()?;
        if self.at(first) > now {
            return None;
        }
        let e = self.remove(first);
        Some((
            TimerId {
                slot: first,
                seq: e.seq,
            },
            e.what,
        ))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    fn entry(&self, slot: u32) -> Option<&Entry<T>> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn at(&self, slot: u32) -> Instant {
        self.entry(slot).expect("the heap holds armed slots").at
    }

    /// The ordering key of the heap's `i`th entry.
    fn key(&self, i: usize) -> (Instant, u64) {
        let e = self
            .entry(self.heap[i])
            .expect("the heap holds armed slots");
        (e.at, e.seq)
    }

    /// Takes an armed slot's entry out of the heap and frees the slot.
    fn remove(&mut self, slot: u32) -> Entry<T> {
        let e = self.slots[slot as usize].take().expect("an armed slot");
        self.free.push(slot);
        let i = e.heap_at;
        let last = self.heap.pop().expect("the heap holds this slot");
        if i < self.heap.len() {
            // The last entry fills the hole, then moves to its place.
            self.heap[i] = last;
            self.place(i);
            self.sift_up(i);
            self.sift_down(i);
        }
        e
    }

    /// Tells the entry at heap position `i` where it is.
    fn place(&mut self, i: usize) {
        let slot = self.heap[i] as usize;
        if let Some(e) = self.slots[slot].as_mut() {
            e.heap_at = i;
        }
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.heap.swap(i, j);
        self.place(i);
        self.place(j);
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.key(i) >= self.key(parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.key(l) < self.key(least) {
                least = l;
            }
            if r < self.heap.len() && self.key(r) < self.key(least) {
                least = r;
            }
            if least == i {
                break;
            }
            self.swap(i, least);
            i = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn fired(t: &mut Timers<u32>, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| t.pop_due(now).map(|(_, w)| w)).collect()
    }

    #[test]
    fn timers_fire_by_deadline_then_in_the_order_they_were_set() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for (ms, what) in [(30, 1), (10, 2), (20, 3), (10, 4), (30, 5)] {
            t.set(t0 + Duration::from_millis(ms), what);
        }
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert!(fired(&mut t, t0 + Duration::from_millis(9)).is_empty());
        assert_eq!(fired(&mut t, t0 + Duration::from_millis(20)), [2, 4, 3]);
        assert_eq!(fired(&mut t, t0 + Duration::from_millis(99)), [1, 5]);
        assert_eq!((t.len(), t.next_deadline()), (0, None));
    }

    #[test]
    fn the_id_of_a_timer_that_is_gone_cancels_nothing_even_when_its_slot_is_reused() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let a = t.set(t0, 1);
        t.cancel(Some(a));
        let b = t.set(t0, 2);
        assert_eq!(a.slot, b.slot, "the slot is reused");
        t.cancel(Some(a));
        assert_eq!(t.pop_due(t0), Some((b, 2)));
        t.cancel(Some(b));
        assert_eq!(t.len(), 0);
    }

    proptest! {
        /// Against a sorted list, over random sets, cancels (of live and gone timers)
        /// and pops.
        #[test]
        fn the_heap_agrees_with_a_sorted_list(ops in proptest::collection::vec((0u8..3, 0u64..50, any::<prop::sample::Index>()), 1..200)) {
            let t0 = Instant::now();
            let mut t = Timers::default();
            let mut model: Vec<(u64, u64, TimerId)> = Vec::new();
            let mut ids: Vec<TimerId> = Vec::new();
            let mut seq = 0;
            for (op, ms, pick) in ops {
                match op {
                    0 => {
                        seq += 1;
                        let id = t.set(t0 + Duration::from_millis(ms), seq);
                        model.push((ms, seq, id));
                        ids.push(id);
                    }
                    1 if !ids.is_empty() => {
                        let id = ids[pick.index(ids.len())];
                        t.cancel(Some(id));
                        model.retain(|m| m.2 != id);
                    }
                    _ => {
                        model.sort_by_key(|m| (m.0, m.1));
                        let now = t0 + Duration::from_millis(ms);
                        let due: Vec<u64> = model.iter().filter(|m| m.0 <= ms).map(|m| m.1).collect();
                        model.retain(|m| m.0 > ms);
                        let got: Vec<u64> = std::iter::from_fn(|| t.pop_due(now).map(|(_, w)| w)).collect();
                        prop_assert_eq!(got, due);
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                let earliest = model.iter().map(|m| m.0).min().map(|ms| t0 + Duration::from_millis(ms));
                prop_assert_eq!(t.next_deadline(), earliest);
            }
        }
    }
}
