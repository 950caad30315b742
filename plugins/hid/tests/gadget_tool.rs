//! `jsipd-gadget up` against a folder laid out like configfs (this machine has no configfs
//! and no USB device controller; on real configfs the kernel adds the attribute files).

use std::path::{Path, PathBuf};
use std::process::Command;

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jsipd-gadget-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jsipd-gadget"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn up_creates_the_functions_with_the_plugins_descriptors_and_binds() {
    let d = tempdir("up");
    let configfs = d.join("config");
    let udcs = d.join("udc");
    let cfs = configfs.to_str().unwrap();
    let udc = udcs.to_str().unwrap();

    let (ok, out) = run(&["up", "--configfs", cfs, "--udc-class", udc]);
    assert!(!ok);
    assert!(out.contains("mount configfs"), "{out}");

    std::fs::create_dir_all(configfs.join("usb_gadget")).unwrap();
    std::fs::create_dir_all(&udcs).unwrap();
    let (ok, out) = run(&["up", "--configfs", cfs, "--udc-class", udc]);
    assert!(!ok);
    assert!(out.contains("no USB device controller"), "{out}");
    assert!(
        !configfs.join("usb_gadget/jsipd").exists(),
        "nothing is half made"
    );

    std::fs::create_dir_all(udcs.join("dummy_udc.0")).unwrap();
    let (ok, out) = run(&["up", "--configfs", cfs, "--udc-class", udc]);
    assert!(ok, "{out}");
    let g = configfs.join("usb_gadget/jsipd");
    assert_eq!(read(&g.join("UDC")), b"dummy_udc.0");
    for (f, desc, len, proto) in [
        ("hid.usb0", hid::gadget::KEYBOARD_DESCRIPTOR, "8", "1"),
        ("hid.usb1", hid::gadget::MOUSE_DESCRIPTOR, "4", "2"),
        ("hid.usb2", hid::gadget::TABLET_DESCRIPTOR, "6", "0"),
    ] {
        let dir = g.join("functions").join(f);
        assert_eq!(read(&dir.join("report_desc")), desc, "{f}");
        assert_eq!(read(&dir.join("report_length")), len.as_bytes(), "{f}");
        assert_eq!(read(&dir.join("protocol")), proto.as_bytes(), "{f}");
        assert_eq!(
            std::fs::read_link(g.join("configs/c.1").join(f)).unwrap(),
            dir
        );
    }
    let storage = g.join("functions/mass_storage.usb0");
    assert_eq!(read(&storage.join("lun.0/removable")), b"1");
    assert_eq!(
        std::fs::read_link(g.join("configs/c.1/mass_storage.usb0")).unwrap(),
        storage
    );

    let (ok, out) = run(&["up", "--configfs", cfs, "--udc-class", udc]);
    assert!(!ok);
    assert!(out.contains("exists already"), "{out}");
    let (ok, out) = run(&["show", "--configfs", cfs]);
    assert!(ok && out.contains("bound to: dummy_udc.0"), "{out}");
    let (ok, out) = run(&[
        "press",
        "ctrl+a",
        "--dev",
        d.join("nodev").to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("jsipd-gadget up"), "{out}");
    let (ok, out) = run(&["press", "ctrl+banana"]);
    assert!(!ok && out.contains("banana"), "{out}");
    let (ok, out) = run(&["sideways"]);
    assert!(!ok && out.contains("usage:"), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}
