//! `backend = qemu`: virtual media for a QEMU machine, over QMP.
//!
//! - CD-ROM: `blockdev-change-medium` on the guest's CD-ROM drive (config `cdrom`, the
//!   drive's qdev id), `eject` to take it out; the guest sees a medium change.
//! - USB stick: a `usb-storage` device hot-plugged with its own block node, unplugged
//!   with `device_del` (waiting for `DEVICE_DELETED`) and `blockdev-del`. The VM needs a
//!   USB controller (`-device qemu-xhci`).

use std::path::Path;
use std::time::Duration;

use jsipd_kvm_support::qmp::{Error as QmpError, Qmp};
use jsipd_plugin_api::serde_json::{json, Value};

use crate::media::{Media, MediaError, Presentation};

/// The qdev id and block node name of the hot-plugged USB stick.
const STICK: &str = "jsipd-stick";

pub struct Qemu {
    qmp: Qmp,
    cdrom: String,
}

impl Qemu {
    pub fn new(qmp: Qmp, cdrom: String) -> Qemu {
        Qemu { qmp, cdrom }
    }

    fn run(&self, command: &str, arguments: Value) -> Result<Value, MediaError> {
        self.qmp.execute(command, arguments).map_err(|e| match e {
            QmpError::Unreachable { .. } => MediaError::Unavailable(e.to_string()),
            QmpError::Command { ref desc, .. } if desc.contains("usb-bus") => {
                MediaError::Unavailable(format!(
                    "the VM has no USB controller for a stick (start QEMU with -device qemu-xhci): {e}"
                ))
            }
            QmpError::Command { ref desc, .. } if desc.contains(&self.cdrom) => {
                MediaError::Unavailable(format!(
                    "the VM has no CD-ROM drive {:?} (config [qemu] cdrom): {e}",
                    self.cdrom
                ))
            }
            other => MediaError::Failed(other.to_string()),
        })
    }
}

impl Media for Qemu {
    fn mount(&self, image: &Path, how: Presentation) -> Result<(), MediaError> {
        let filename = image.display().to_string();
        if how.cdrom {
            self.run(
                "blockdev-change-medium",
                json!({"id": self.cdrom, "filename": filename, "format": "raw",
                       "read-only-mode": "read-only"}),
            )?;
            return Ok(());
        }
        self.run(
            "blockdev-add",
            json!({"node-name": STICK, "driver": "raw", "read-only": how.readonly,
                   "file": {"driver": "file", "filename": filename, "read-only": how.readonly}}),
        )?;
        let plugged = self.run(
            "device_add",
            json!({"driver": "usb-storage", "id": STICK, "drive": STICK, "removable": true}),
        );
        if let Err(e) = plugged {
            let _ = self.run("blockdev-del", json!({"node-name": STICK}));
            return Err(e);
        }
        Ok(())
    }

    fn unmount(&self, how: Presentation) -> Result<(), MediaError> {
        if how.cdrom {
            self.run("eject", json!({"id": self.cdrom, "force": true}))?;
            return Ok(());
        }
        self.run("device_del", json!({"id": STICK}))?;
        let deleted = self
            .qmp
            .wait_event(
                "DEVICE_DELETED",
                |d| d["device"] == STICK,
                Duration::from_secs(10),
            )
            .map_err(|e| MediaError::Unavailable(e.to_string()))?;
        if deleted.is_none() {
            return Err(MediaError::Failed(
                "QEMU did not unplug the USB stick within 10 s".into(),
            ));
        }
        self.run("blockdev-del", json!({"node-name": STICK}))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "qemu (QMP {}, CD-ROM {:?})",
            self.qmp.path().display(),
            self.cdrom
        )
    }
}
