//! Typing: a paste, or a key combination, as a paced sequence of whole keyboard states.
//!
//! One paste types at a time. A second one gets 409, or, with `queue`, waits its turn;
//! turns are served first come, first served (a ticket lock, because `std`'s mutex makes
//! no promise of order). `POST /reset` stops whatever is typing: the typist checks the
//! reset count between reports and gives up, and the reset itself releases the keys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::keymap::{Stroke, ALTGR, SHIFT};
use crate::state::Hid;

/// The holder name paste and `/keys` press as.
pub const HOLDER: &str = "typist";

#[derive(Default)]
pub struct Turns {
    /// (next ticket, ticket being served)
    tickets: Mutex<(u64, u64)>,
    changed: Condvar,
    /// Bumped by `POST /reset`.
    resets: AtomicU64,
}

/// The right to type, until dropped.
pub struct Turn<'a> {
    turns: &'a Turns,
    resets_at_start: u64,
}

impl Turns {
    /// A turn now; with `wait`, the next free one in order, else `None` when busy.
    pub fn enter(&self, wait: bool) -> Option<Turn<'_>> {
        let mut t = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        if !wait && t.0 != t.1 {
            return None;
        }
        let mine = t.0;
        t.0 += 1;
        while t.1 != mine {
            t = self.changed.wait(t).unwrap_or_else(|p| p.into_inner());
        }
        Some(Turn {
            turns: self,
            resets_at_start: self.resets.load(Ordering::SeqCst),
        })
    }

    /// The next turn in order, waiting for it.
    pub fn wait(&self) -> Turn<'_> {
        self.enter(true)
            .expect("a waiting enter always gets a turn")
    }

    /// Typing in progress or queued.
    pub fn busy(&self) -> bool {
        let t = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        t.0 != t.1
    }

    pub fn reset(&self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut t = self.turns.tickets.lock().unwrap_or_else(|p| p.into_inner());
        t.1 += 1;
        self.turns.changed.notify_all();
    }
}

impl Turn<'_> {
    fn was_reset(&self) -> bool {
        self.turns.resets.load(Ordering::SeqCst) != self.resets_at_start
    }
}

/// Why typing stopped early.
#[derive(Debug, PartialEq)]
pub enum Stopped {
    /// `POST /reset` came, after this many strokes.
    Reset(usize),
    /// The device failed (everything was released).
    Device(String),
}

/// The usages held for a stroke: its modifiers, then its key.
fn stroke_usages(s: &Stroke) -> Vec<u8> {
    let mut u = Vec::with_capacity(3);
    if s.mods & SHIFT != 0 {
        u.push(0xe1);
    }
    if s.mods & ALTGR != 0 {
        u.push(0xe6);
    }
    u.push(s.key.usage);
    u
}

/// Types `strokes`: each is pressed (modifiers with it) and released, with `interval`
/// after every report. Returns how long it took.
pub fn type_strokes(
    hid: &Mutex<Hid>,
    turn: &Turn<'_>,
    strokes: &[Stroke],
    interval: Duration,
) -> Result<Duration, Stopped> {
    let started = Instant::now();
    for (done, s) in strokes.iter().enumerate() {
        for usages in [stroke_usages(s), Vec::new()] {
            if turn.was_reset() {
                return Err(Stopped::Reset(done));
            }
            lock(hid).hold(HOLDER, &usages).map_err(Stopped::Device)?;
            if !interval.is_zero() {
                std::thread::sleep(interval);
            }
        }
    }
    Ok(started.elapsed())
}

/// Presses `usages` one after another, then releases them in reverse (a key combination
/// as a person plays it: Ctrl, Alt, Delete, then Delete, Alt, Ctrl up).
pub fn chord(
    hid: &Mutex<Hid>,
    turn: &Turn<'_>,
    usages: &[u8],
    interval: Duration,
) -> Result<(), Stopped> {
    let steps = (1..=usages.len()).chain((0..usages.len()).rev());
    for n in steps {
        if turn.was_reset() {
            return Err(Stopped::Reset(0));
        }
        lock(hid)
            .hold(HOLDER, &usages[..n])
            .map_err(Stopped::Device)?;
        if !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
    Ok(())
}

pub fn lock(hid: &Mutex<Hid>) -> std::sync::MutexGuard<'_, Hid> {
    hid.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::Recorder;
    use std::sync::Arc;

    #[test]
    fn turns_are_exclusive_and_in_order() {
        let turns = Arc::new(Turns::default());
        let first = turns.enter(false).unwrap();
        assert!(turns.enter(false).is_none(), "busy without queue");
        assert!(turns.busy());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..3 {
            let (mine, order) = (turns.clone(), order.clone());
            waiting.push(std::thread::spawn(move || {
                let _t = mine.enter(true).unwrap();
                order.lock().unwrap().push(i);
            }));
            // Wait until this one holds its ticket, so tickets go out in order.
            while turns.tickets.lock().unwrap().0 != i + 2 {
                std::thread::yield_now();
            }
        }
        drop(first);
        for w in waiting {
            w.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        assert!(!turns.busy());
    }

    #[test]
    fn chords_press_in_order_and_release_in_reverse_and_reset_stops_typing() {
        let r = Recorder::default();
        let hid = Mutex::new(Hid::new(Box::new(r.clone())));
        let turns = Turns::default();
        let turn = turns.enter(false).unwrap();
        chord(&hid, &turn, &[0xe0, 0xe2, 0x4c], Duration::ZERO).unwrap();
        assert_eq!(
            std::mem::take(&mut *r.log.lock().unwrap()),
            [
                "kbd 01 []",
                "kbd 05 []",
                "kbd 05 [4c]",
                "kbd 05 []",
                "kbd 01 []",
                "kbd 00 []"
            ]
        );
        turns.reset();
        let e = chord(&hid, &turn, &[0x04], Duration::ZERO).unwrap_err();
        assert_eq!(e, Stopped::Reset(0));
    }
}
