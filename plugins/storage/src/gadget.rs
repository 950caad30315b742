//! `backend = gadget`: the USB mass-storage function of a configfs gadget, as on PiKVM
//! and NanoKVM boards: the target sees a USB CD-ROM or stick.
//!
//! Only the LUN's attributes change (`forced_eject`, `cdrom`, `ro`, `file`); the gadget
//! stays bound, so the keyboard and mouse functions of the same gadget never drop. The
//! LUN must be `removable` (jsipd-gadget makes it so), or the kernel refuses a new file
//! while bound.

use std::path::{Path, PathBuf};

use crate::media::{Media, MediaError, Presentation};

#[derive(Debug, Clone, PartialEq)]
pub struct Gadget {
    /// `/sys/kernel/config/usb_gadget/jsipd`
    pub gadget: PathBuf,
    /// `mass_storage.usb0`
    pub function: String,
    pub lun: u32,
    /// `/sys/class/udc`: where the kernel lists USB device controllers.
    pub udc_class: PathBuf,
}

impl Gadget {
    fn lun_dir(&self) -> PathBuf {
        self.gadget
            .join("functions")
            .join(&self.function)
            .join(format!("lun.{}", self.lun))
    }

    /// Checks the chain the target's USB port needs, and says where it breaks.
    fn ready(&self) -> Result<PathBuf, MediaError> {
        let unavailable = |why: String| Err(MediaError::Unavailable(why));
        let udcs = std::fs::read_dir(&self.udc_class)
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        if udcs == 0 {
            return unavailable(format!(
                "no USB device controller ({} is empty or missing): this board cannot act as a USB device",
                self.udc_class.display()
            ));
        }
        if !self.gadget.is_dir() {
            return unavailable(format!(
                "no USB gadget at {} (is configfs mounted, and was the gadget created with jsipd-gadget?)",
                self.gadget.display()
            ));
        }
        let lun = self.lun_dir();
        if !lun.join("file").exists() {
            return unavailable(format!(
                "the gadget has no mass-storage LUN at {}",
                lun.display()
            ));
        }
        let udc = std::fs::read_to_string(self.gadget.join("UDC")).unwrap_or_default();
        if udc.trim().is_empty() {
            return unavailable(format!(
                "the gadget {} is not bound to a USB device controller (its UDC is empty)",
                self.gadget.display()
            ));
        }
        Ok(lun)
    }
}

fn write(lun: &Path, attribute: &str, value: &str) -> Result<(), MediaError> {
    std::fs::write(lun.join(attribute), format!("{value}\n")).map_err(|e| {
        MediaError::Failed(format!(
            "writing {value:?} to {}: {e}",
            lun.join(attribute).display()
        ))
    })
}

impl Media for Gadget {
    fn mount(&self, image: &Path, how: Presentation) -> Result<(), MediaError> {
        let lun = self.ready()?;
        // `cdrom` and `ro` can only change while the LUN is empty.
        self.eject(&lun)?;
        write(&lun, "cdrom", if how.cdrom { "1" } else { "0" })?;
        write(
            &lun,
            "ro",
            if how.readonly || how.cdrom { "1" } else { "0" },
        )?;
        write(&lun, "file", &image.display().to_string())
    }

    fn unmount(&self, _: Presentation) -> Result<(), MediaError> {
        let lun = self.ready()?;
        self.eject(&lun)
    }

    fn describe(&self) -> String {
        format!("gadget ({})", self.lun_dir().display())
    }
}

impl Gadget {
    /// Ejects even when the host has the medium locked (`forced_eject`, Linux 4.x+);
    /// older kernels only have `file`, cleared.
    fn eject(&self, lun: &Path) -> Result<(), MediaError> {
        let current = std::fs::read_to_string(lun.join("file")).unwrap_or_default();
        if current.trim().is_empty() {
            return Ok(());
        }
        if lun.join("forced_eject").exists() {
            write(lun, "forced_eject", "1")?;
        }
        // The kernel clears `file` on forced_eject; a plain file (or an old kernel)
        // needs it written.
        let after = std::fs::read_to_string(lun.join("file")).unwrap_or_default();
        if !after.trim().is_empty() {
            write(lun, "file", "")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Against a temporary folder laid out like configfs (this machine has no UDC).
    use super::*;

    fn layout(tag: &str, udc: Option<&str>) -> (PathBuf, Gadget) {
        let root = std::env::temp_dir().join(format!("jsipd-gadget-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let g = Gadget {
            gadget: root.join("usb_gadget/jsipd"),
            function: "mass_storage.usb0".into(),
            lun: 0,
            udc_class: root.join("class/udc"),
        };
        std::fs::create_dir_all(&g.udc_class).unwrap();
        let lun = g.lun_dir();
        std::fs::create_dir_all(&lun).unwrap();
        for (attr, value) in [
            ("file", "\n"),
            ("cdrom", "0\n"),
            ("ro", "0\n"),
            ("forced_eject", ""),
            ("removable", "1\n"),
        ] {
            std::fs::write(lun.join(attr), value).unwrap();
        }
        std::fs::write(g.gadget.join("UDC"), "\n").unwrap();
        if let Some(name) = udc {
            std::fs::create_dir_all(g.udc_class.join(name)).unwrap();
            std::fs::write(g.gadget.join("UDC"), format!("{name}\n")).unwrap();
        }
        (root, g)
    }

    fn attr(g: &Gadget, name: &str) -> String {
        std::fs::read_to_string(g.lun_dir().join(name)).unwrap()
    }

    #[test]
    fn no_udc_is_unavailable_with_the_reason() {
        let (root, g) = layout("noudc", None);
        let e = g
            .mount(
                Path::new("/img/a.iso"),
                Presentation {
                    cdrom: true,
                    readonly: true,
                },
            )
            .unwrap_err();
        assert_eq!(e.status(), 503);
        assert!(e.reason().starts_with("no USB device controller"), "{e:?}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unbound_gadget_and_missing_lun_are_named() {
        let (root, g) = layout("unbound", Some("dummy_udc.0"));
        std::fs::write(g.gadget.join("UDC"), "\n").unwrap();
        let how = Presentation {
            cdrom: false,
            readonly: false,
        };
        let e = g.mount(Path::new("/img/a.img"), how).unwrap_err();
        assert!(e.reason().contains("not bound"), "{e:?}");
        let other = Gadget {
            lun: 3,
            ..g.clone()
        };
        let e = other.mount(Path::new("/img/a.img"), how).unwrap_err();
        assert!(e.reason().contains("lun.3"), "{e:?}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn mount_sets_the_lun_and_swaps_without_touching_the_gadget_binding() {
        let (root, g) = layout("mount", Some("fe980000.usb"));
        g.mount(
            Path::new("/img/a.iso"),
            Presentation {
                cdrom: true,
                readonly: false,
            },
        )
        .unwrap();
        assert_eq!(attr(&g, "file"), "/img/a.iso\n");
        assert_eq!(attr(&g, "cdrom"), "1\n");
        assert_eq!(attr(&g, "ro"), "1\n", "a CD-ROM is read-only");
        g.unmount(Presentation {
            cdrom: true,
            readonly: true,
        })
        .unwrap();
        assert_eq!(attr(&g, "forced_eject"), "1\n");
        assert_eq!(attr(&g, "file"), "\n");
        g.mount(
            Path::new("/img/b.img"),
            Presentation {
                cdrom: false,
                readonly: false,
            },
        )
        .unwrap();
        assert_eq!(
            (
                attr(&g, "file").as_str(),
                attr(&g, "cdrom").as_str(),
                attr(&g, "ro").as_str()
            ),
            ("/img/b.img\n", "0\n", "0\n")
        );
        assert_eq!(
            std::fs::read_to_string(g.gadget.join("UDC")).unwrap(),
            "fe980000.usb\n",
            "the gadget stays bound: keyboard and mouse keep working"
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
