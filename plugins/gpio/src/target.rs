//! What every gpio backend is: a target machine with two buttons and two LEDs.

use std::time::Duration;

/// The target's front-panel buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Power,
    Reset,
}

impl Button {
    pub fn name(self) -> &'static str {
        match self {
            Button::Power => "power",
            Button::Reset => "reset",
        }
    }
}

/// The target's front-panel LEDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leds {
    /// Power: the machine is on (for QEMU: running).
    pub pwr: bool,
    /// Disk activity (for QEMU: block I/O in the last 100 ms).
    pub hdd: bool,
}

/// A press at least this long forces an ATX machine off, as holding the button does.
pub const FORCE_OFF: Duration = Duration::from_millis(5000);

/// A target machine. Implementations block: `press` returns when the button is let go.
pub trait Target: Send + Sync {
    /// Holds `button` for `hold`, then lets go. An `Err` is the reason, for a `503`.
    fn press(&self, button: Button, hold: Duration) -> Result<(), String>;

    /// The LEDs now; called by the board's watcher every few milliseconds.
    fn leds(&self) -> Result<Leds, String>;

    /// One line for the log: the backend and what it drives.
    fn describe(&self) -> String;

    /// Whether the target's network card has its link up. Only a backend that owns the
    /// card can say (QEMU's `set_link`); the others answer why not, for a `503`.
    fn network_link(&self) -> Result<bool, String> {
        Err(format!(
            "{} cannot switch the target's network link",
            self.describe()
        ))
    }

    /// Plugs (`up`) or unplugs the target's network cable.
    fn set_network_link(&self, _up: bool) -> Result<(), String> {
        Err(format!(
            "{} cannot switch the target's network link",
            self.describe()
        ))
    }
}
