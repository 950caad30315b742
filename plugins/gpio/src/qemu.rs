//! `backend = qemu`: a QEMU virtual machine's front panel, over QMP.
//!
//! Start QEMU with `-no-shutdown` (a guest power-off then stops the machine instead of
//! ending QEMU, as a PC stays plugged in) and usually `-S` (it starts off). Then:
//! - power, short, when off: `system_reset` + `cont` boots the machine;
//! - power, short, when on: `system_powerdown`, the ACPI power button; the guest OS
//!   decides what to do with it;
//! - power, at least 5 s: `stop` + `system_reset` when the hold ends, a forced off;
//! - reset: `system_reset`, when the machine is on;
//! - the pwr LED is QEMU's run state `running`; the hdd LED is lit when the block
//!   devices' operation counters (`query-blockstats`) moved in the last 100 ms;
//! - the network link (with `[qemu] nic = ID`, the `-device …,id=ID` of the target's
//!   card): `set_link`. QMP offers no query of a link, so its state is the one this
//!   plugin last set; QEMU starts every card with its link up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsipd_kvm_support::qmp::Qmp;
use jsipd_plugin_api::serde_json::{json, Value};

use crate::target::{Button, Leds, Target, FORCE_OFF};

/// How long the disk LED stays lit after the last block operation.
const DISK_LIT: Duration = Duration::from_millis(100);

pub struct Qemu {
    qmp: Qmp,
    nic: Option<String>,
    disk: Mutex<Disk>,
    /// The link state last set with `set_link`; up until then.
    link_up: Mutex<bool>,
}

#[derive(Default)]
struct Disk {
    operations: Option<u64>,
    last_change: Option<Instant>,
}

impl Qemu {
    pub fn new(qmp: Qmp, nic: Option<String>) -> Qemu {
        Qemu {
            qmp,
            nic,
            disk: Mutex::default(),
            link_up: Mutex::new(true),
        }
    }

    /// The card's qdev id, or why the link cannot be switched.
    fn nic(&self) -> Result<&str, String> {
        self.nic.as_deref().ok_or_else(|| {
            "gpio's qemu backend has no [qemu] nic = ID (the -device …,id=ID of the target's network card), so it cannot switch the link".to_string()
        })
    }

    fn run(&self, command: &str) -> Result<Value, String> {
        self.qmp
            .execute(command, json!({}))
            .map_err(|e| e.to_string())
    }

    fn running(&self) -> Result<bool, String> {
        Ok(self.run("query-status")?["status"] == "running")
    }
}

/// All read, write and flush operations of all block devices so far.
fn operations(blockstats: &Value) -> u64 {
    blockstats
        .as_array()
        .into_iter()
        .flatten()
        .map(|dev| {
            let s = &dev["stats"];
            ["rd_operations", "wr_operations", "flush_operations"]
                .iter()
                .map(|k| s[k].as_u64().unwrap_or(0))
                .sum::<u64>()
        })
        .sum()
}

impl Target for Qemu {
    fn press(&self, button: Button, hold: Duration) -> Result<(), String> {
        match button {
            Button::Power if hold >= FORCE_OFF => {
                std::thread::sleep(hold);
                self.run("stop")?;
                self.run("system_reset")?;
                return Ok(());
            }
            Button::Power => {
                if self.running()? {
                    self.run("system_powerdown")?;
                } else {
                    self.run("system_reset")?;
                    self.run("cont")?;
                }
            }
            Button::Reset => {
                if self.running()? {
                    self.run("system_reset")?;
                }
            }
        }
        std::thread::sleep(hold);
        Ok(())
    }

    fn leds(&self) -> Result<Leds, String> {
        let pwr = self.running()?;
        let ops = operations(&self.run("query-blockstats")?);
        let now = Instant::now();
        let mut disk = self.disk.lock().unwrap_or_else(|p| p.into_inner());
        if disk.operations.is_some_and(|before| before != ops) {
            disk.last_change = Some(now);
        }
        disk.operations = Some(ops);
        let hdd = disk
            .last_change
            .is_some_and(|t| now.duration_since(t) < DISK_LIT);
        Ok(Leds { pwr, hdd })
    }

    fn describe(&self) -> String {
        match &self.nic {
            Some(nic) => format!(
                "qemu (QMP {}, network card {nic})",
                self.qmp.path().display()
            ),
            None => format!("qemu (QMP {})", self.qmp.path().display()),
        }
    }

    fn network_link(&self) -> Result<bool, String> {
        self.nic()?;
        Ok(*self.link_up.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn set_network_link(&self, up: bool) -> Result<(), String> {
        let nic = self.nic()?;
        let mut link_up = self.link_up.lock().unwrap_or_else(|p| p.into_inner());
        self.qmp
            .execute("set_link", json!({"name": nic, "up": up}))
            .map_err(|e| e.to_string())?;
        *link_up = up;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_operations_are_summed_over_devices() {
        let stats = json!([
            {"device": "hd0", "stats": {"rd_operations": 5, "wr_operations": 2, "flush_operations": 1}},
            {"device": "cd0", "stats": {"rd_operations": 10, "wr_operations": 0}},
        ]);
        assert_eq!(operations(&stats), 18);
        assert_eq!(operations(&json!({})), 0);
    }

    #[test]
    fn without_a_nic_the_link_is_refused_with_the_key_to_set() {
        let q = Qemu::new(Qmp::new("/nonexistent/qmp.sock"), None);
        assert!(q.network_link().unwrap_err().contains("[qemu] nic = ID"));
        assert!(q
            .set_network_link(false)
            .unwrap_err()
            .contains("[qemu] nic = ID"));
        // With a card but no QEMU, the switch fails and the remembered state stays.
        let q = Qemu::new(Qmp::new("/nonexistent/qmp.sock"), Some("nic0".into()));
        assert!(q.set_network_link(false).is_err());
        assert_eq!(q.network_link(), Ok(true));
    }
}
