//! The board: one target, one press at a time, and the LED history the SLP notifies from.
//!
//! A watcher thread (started by the plugin) calls [`Board::poll`] every [`POLL`]; each
//! change of the LEDs gets a sequence number, so a subscriber that was told about
//! change N is told about N+1, N+2, … in order, and none is lost between two timer ticks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jsipd_plugin_api::tracing;

use crate::target::{Button, Leds, Target};

/// How often the watcher reads the LEDs.
pub const POLL: Duration = Duration::from_millis(20);

/// Changes kept for subscribers that have not caught up yet.
const KEPT_CHANGES: usize = 256;

pub struct Board {
    target: Box<dyn Target>,
    pressing: AtomicBool,
    leds: Mutex<LedLog>,
}

#[derive(Debug, Default)]
struct LedLog {
    /// Sequence number of the latest change (0: never read).
    seq: u64,
    now: Option<Leds>,
    /// Why the last read failed, while it fails.
    error: Option<String>,
    changes: VecDeque<(u64, Leds)>,
}

#[derive(Debug, PartialEq)]
pub enum PressError {
    /// Another press is still held.
    Busy,
    /// The backend could not press: the reason.
    Backend(String),
}

impl Board {
    pub fn new(target: Box<dyn Target>) -> Board {
        Board {
            target,
            pressing: AtomicBool::new(false),
            leds: Mutex::default(),
        }
    }

    pub fn describe(&self) -> String {
        self.target.describe()
    }

    /// The target's network cable: the board only passes it on, it has no panel state.
    pub fn target(&self) -> &dyn Target {
        &*self.target
    }

    fn log(&self) -> MutexGuard<'_, LedLog> {
        self.leds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Presses `button` for `hold`; one press at a time, for both buttons (a person has
    /// one finger on the panel, and QEMU's power and reset must not interleave).
    pub fn press(&self, button: Button, hold: Duration) -> Result<(), PressError> {
        if self
            .pressing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(PressError::Busy);
        }
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _release = Release(&self.pressing);
        tracing::info!("{} pressed for {} ms", button.name(), hold.as_millis());
        self.target.press(button, hold).map_err(PressError::Backend)
    }

    /// Is a button held right now?
    pub fn busy(&self) -> bool {
        self.pressing.load(Ordering::Acquire)
    }

    /// Reads the LEDs once and records a change.
    pub fn poll(&self) {
        let read = self.target.leds();
        let mut log = self.log();
        match read {
            Ok(leds) => {
                if log.error.take().is_some() {
                    tracing::info!("LEDs readable again: {}", self.target.describe());
                }
                if log.now != Some(leds) {
                    log.seq += 1;
                    let seq = log.seq;
                    log.now = Some(leds);
                    if log.changes.len() == KEPT_CHANGES {
                        log.changes.pop_front();
                    }
                    log.changes.push_back((seq, leds));
                    tracing::debug!("LEDs #{seq}: pwr {} hdd {}", leds.pwr, leds.hdd);
                }
            }
            Err(e) => {
                if log.error.as_ref() != Some(&e) {
                    tracing::warn!("cannot read the LEDs: {e}");
                }
                log.error = Some(e);
            }
        }
    }

    /// The LEDs as last read, with their sequence number; `Err` while they cannot be read.
    pub fn leds(&self) -> Result<(u64, Leds), String> {
        let log = self.log();
        if let Some(e) = &log.error {
            return Err(e.clone());
        }
        log.now
            .map(|l| (log.seq, l))
            .ok_or_else(|| "the LEDs have not been read yet".to_string())
    }

    /// Changes after `seq`, oldest first. A subscriber that fell further behind than the
    /// kept history gets the oldest kept ones (the latest state is always among them).
    pub fn changes_since(&self, seq: u64) -> Vec<(u64, Leds)> {
        self.log()
            .changes
            .iter()
            .filter(|(s, _)| *s > seq)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Scripted {
        leds: Mutex<Result<Leds, String>>,
        held: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    impl Target for Arc<Scripted> {
        fn press(&self, _: Button, _: Duration) -> Result<(), String> {
            if let Some(rx) = self.held.lock().unwrap().take() {
                let _ = rx.recv();
            }
            Ok(())
        }
        fn leds(&self) -> Result<Leds, String> {
            self.leds.lock().unwrap().clone()
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    #[test]
    fn changes_are_numbered_and_errors_reported_until_reads_work_again() {
        let t = Arc::new(Scripted {
            leds: Mutex::new(Err("QMP down".into())),
            held: Mutex::new(None),
        });
        let board = Board::new(Box::new(t.clone()));
        board.poll();
        assert_eq!(board.leds(), Err("QMP down".into()));
        *t.leds.lock().unwrap() = Ok(Leds::default());
        board.poll();
        board.poll();
        *t.leds.lock().unwrap() = Ok(Leds {
            pwr: true,
            hdd: false,
        });
        board.poll();
        assert_eq!(
            board.leds(),
            Ok((
                2,
                Leds {
                    pwr: true,
                    hdd: false
                }
            ))
        );
        assert_eq!(
            board.changes_since(1),
            [(
                2,
                Leds {
                    pwr: true,
                    hdd: false
                }
            )]
        );
        assert_eq!(board.changes_since(0).len(), 2);
    }

    #[test]
    fn a_second_press_while_one_is_held_is_refused() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = Arc::new(Scripted {
            leds: Mutex::new(Ok(Leds::default())),
            held: Mutex::new(Some(rx)),
        });
        let board = Arc::new(Board::new(Box::new(t)));
        let b = board.clone();
        let first = std::thread::spawn(move || b.press(Button::Power, Duration::ZERO));
        // Wait for the first press to hold the board (a real condition: the flag).
        while !board.pressing.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        assert_eq!(
            board.press(Button::Reset, Duration::ZERO),
            Err(PressError::Busy)
        );
        tx.send(()).unwrap();
        assert_eq!(first.join().unwrap(), Ok(()));
        assert_eq!(board.press(Button::Reset, Duration::ZERO), Ok(()));
    }
}
