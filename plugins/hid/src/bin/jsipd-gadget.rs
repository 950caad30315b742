//! `jsipd-gadget`: creates (and removes) the USB gadget the KVM plugins drive.
//!
//! ```text
//! jsipd-gadget up   [--configfs DIR] [--udc NAME]   create the gadget and bind it
//! jsipd-gadget down [--configfs DIR]                unbind and remove it
//! jsipd-gadget show [--configfs DIR]                print its functions and binding
//! jsipd-gadget press KEYS [--dev DIR]              press and release KEYS (ctrl+alt+del)
//! jsipd-gadget leds [--dev DIR]                    the LED report the host sent last
//! ```
//!
//! `press` types through the hid plugin's own gadget code without the daemon: for a
//! rescue (Ctrl+Alt+Del with jsipd stopped) and to check that the host reads the
//! keyboard (it fails after 500 ms when nobody does).
//!
//! The gadget `usb_gadget/jsipd` has four functions in one configuration:
//! - `hid.usb0` → `/dev/hidg0`: boot keyboard (protocol 1), 8-byte reports;
//! - `hid.usb1` → `/dev/hidg1`: boot mouse (protocol 2), relative, 4-byte reports;
//! - `hid.usb2` → `/dev/hidg2`: absolute mouse, 6-byte reports;
//! - `mass_storage.usb0` with a removable `lun.0`, for the storage plugin.
//!
//! The report descriptors are the hid plugin's own ([`hid::gadget`]), so the reports it
//! writes always match what the host was told. Needs root, configfs mounted
//! (`mount -t configfs none /sys/kernel/config`), `libcomposite` and a USB device
//! controller in `/sys/class/udc`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use hid::gadget::{
    KEYBOARD_DESCRIPTOR, KEYBOARD_REPORT, MOUSE_DESCRIPTOR, MOUSE_REPORT, TABLET_DESCRIPTOR,
    TABLET_REPORT,
};

const NAME: &str = "jsipd";
const USAGE: &str =
    "usage: jsipd-gadget up|down|show [--configfs DIR] [--udc NAME] [--udc-class DIR]";

/// One HID function: directory name, protocol, subclass, report length, descriptor.
const HID_FUNCTIONS: [(&str, u8, u8, usize, &[u8]); 3] = [
    ("hid.usb0", 1, 1, KEYBOARD_REPORT, KEYBOARD_DESCRIPTOR),
    ("hid.usb1", 2, 1, MOUSE_REPORT, MOUSE_DESCRIPTOR),
    ("hid.usb2", 0, 0, TABLET_REPORT, TABLET_DESCRIPTOR),
];
const STORAGE: &str = "mass_storage.usb0";

struct Options {
    /// Where the hidg devices are (`/dev`).
    dev: PathBuf,
    configfs: PathBuf,
    udc: Option<String>,
    udc_class: PathBuf,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let keys = if command == "press" {
        args.next()
    } else {
        None
    };
    let mut o = Options {
        dev: PathBuf::from("/dev"),
        configfs: PathBuf::from("/sys/kernel/config"),
        udc: None,
        udc_class: PathBuf::from("/sys/class/udc"),
    };
    while let Some(flag) = args.next() {
        let value = args.next();
        match (flag.as_str(), value) {
            ("--configfs", Some(v)) => o.configfs = v.into(),
            ("--udc", Some(v)) => o.udc = Some(v),
            ("--udc-class", Some(v)) => o.udc_class = v.into(),
            ("--dev", Some(v)) => o.dev = v.into(),
            _ => {
                eprintln!("jsipd-gadget: bad option {flag}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let result = match command.as_str() {
        "up" => up(&o),
        "down" => down(&o),
        "show" => show(&o),
        "leds" => leds(&o),
        "press" => match keys {
            Some(k) => press(&o, &k),
            None => Err(format!(
                "press needs the keys, such as ctrl+alt+delete\n{USAGE}"
            )),
        },
        _ => Err(format!("unknown command {command}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jsipd-gadget: {e}");
            ExitCode::FAILURE
        }
    }
}

fn gadget_dir(o: &Options) -> PathBuf {
    o.configfs.join("usb_gadget").join(NAME)
}

fn write(path: &Path, value: impl AsRef<[u8]>) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn mkdir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn up(o: &Options) -> Result<(), String> {
    let root = o.configfs.join("usb_gadget");
    if !root.is_dir() {
        return Err(format!(
            "{} is missing: mount configfs (mount -t configfs none {}) and load libcomposite",
            root.display(),
            o.configfs.display()
        ));
    }
    let g = gadget_dir(o);
    if g.exists() {
        return Err(format!(
            "{} exists already; run jsipd-gadget down first",
            g.display()
        ));
    }
    let udc = match &o.udc {
        Some(u) => u.clone(),
        None => first_udc(&o.udc_class)?,
    };
    mkdir(&g)?;
    // Linux Foundation, Multifunction Composite Gadget: the IDs the kernel's own
    // composite examples use.
    write(&g.join("idVendor"), "0x1d6b")?;
    write(&g.join("idProduct"), "0x0104")?;
    write(&g.join("bcdDevice"), "0x0100")?;
    write(&g.join("bcdUSB"), "0x0200")?;
    let strings = g.join("strings/0x409");
    mkdir(&strings)?;
    write(&strings.join("manufacturer"), "jsipd")?;
    write(&strings.join("product"), "jsipd KVM")?;
    write(&strings.join("serialnumber"), serial())?;
    let config = g.join("configs/c.1");
    mkdir(&config.join("strings/0x409"))?;
    write(
        &config.join("strings/0x409/configuration"),
        "keyboard, mouse, storage",
    )?;
    write(&config.join("MaxPower"), "250")?;

    for (name, protocol, subclass, length, descriptor) in HID_FUNCTIONS {
        let f = g.join("functions").join(name);
        mkdir(&f)?;
        write(&f.join("protocol"), protocol.to_string())?;
        write(&f.join("subclass"), subclass.to_string())?;
        write(&f.join("report_length"), length.to_string())?;
        write(&f.join("report_desc"), descriptor)?;
        link(&f, &config.join(name))?;
    }
    let storage = g.join("functions").join(STORAGE);
    mkdir(&storage.join("lun.0"))?;
    write(&storage.join("stall"), "0")?;
    // Removable, so the storage plugin can change the medium while the gadget is bound.
    write(&storage.join("lun.0/removable"), "1")?;
    link(&storage, &config.join(STORAGE))?;

    write(&g.join("UDC"), &udc)?;
    println!(
        "gadget {} bound to {udc}: /dev/hidg0 keyboard, /dev/hidg1 mouse, /dev/hidg2 tablet, {STORAGE} lun.0",
        g.display()
    );
    Ok(())
}

fn link(target: &Path, at: &Path) -> Result<(), String> {
    std::os::unix::fs::symlink(target, at)
        .map_err(|e| format!("cannot link {} to {}: {e}", at.display(), target.display()))
}

fn first_udc(class: &Path) -> Result<String, String> {
    let mut names: Vec<String> = std::fs::read_dir(class)
        .map_err(|e| {
            format!(
                "cannot list {}: {e} (is a USB device controller driver loaded?)",
                class.display()
            )
        })?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().next().ok_or_else(|| {
        format!(
            "no USB device controller in {} (the board needs a USB OTG port in device mode, or load dummy_hcd to try)",
            class.display()
        )
    })
}

/// The machine's id, so a host sees the same device across reboots.
fn serial() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().chars().take(16).collect())
        .unwrap_or_else(|_| "jsipd".into())
}

/// Configfs is taken apart in the reverse order of its making; each step is `rmdir` or
/// `unlink`, and configfs removes the attribute files itself.
fn down(o: &Options) -> Result<(), String> {
    let g = gadget_dir(o);
    if !g.exists() {
        return Err(format!("no gadget at {}", g.display()));
    }
    let _ = std::fs::write(g.join("UDC"), "\n");
    let config = g.join("configs/c.1");
    let rm = |p: PathBuf| -> Result<(), String> {
        if p.is_symlink() {
            std::fs::remove_file(&p)
        } else {
            std::fs::remove_dir(&p)
        }
        .map_err(|e| format!("cannot remove {}: {e}", p.display()))
    };
    for (name, ..) in HID_FUNCTIONS {
        rm(config.join(name))?;
    }
    rm(config.join(STORAGE))?;
    rm(config.join("strings/0x409"))?;
    rm(config)?;
    for (name, ..) in HID_FUNCTIONS {
        rm(g.join("functions").join(name))?;
    }
    rm(g.join("functions").join(STORAGE))?;
    rm(g.join("strings/0x409"))?;
    rm(g.clone())?;
    println!("gadget {} removed", g.display());
    Ok(())
}

fn show(o: &Options) -> Result<(), String> {
    let g = gadget_dir(o);
    if !g.exists() {
        return Err(format!("no gadget at {}", g.display()));
    }
    let udc = std::fs::read_to_string(g.join("UDC")).unwrap_or_default();
    println!("gadget {}", g.display());
    println!(
        "bound to: {}",
        if udc.trim().is_empty() {
            "(nothing)"
        } else {
            udc.trim()
        }
    );
    for (name, ..) in HID_FUNCTIONS {
        let f = g.join("functions").join(name);
        let dev = std::fs::read_to_string(f.join("dev")).unwrap_or_default();
        println!("{name}: dev {}", dev.trim());
    }
    let file = std::fs::read_to_string(g.join("functions").join(STORAGE).join("lun.0/file"))
        .unwrap_or_default();
    println!("{STORAGE} lun.0: {}", file.trim());
    Ok(())
}

/// Presses `spec` in order and releases it in reverse, through the plugin's `Hid` and
/// `Gadget`, as `POST /hid/v1/keys` does.
fn press(o: &Options, spec: &str) -> Result<(), String> {
    let usages = hid::keys::parse_combination(spec)?;
    let device = hid::gadget::Gadget::new(
        o.dev.join("hidg0"),
        o.dev.join("hidg1"),
        o.dev.join("hidg2"),
        Duration::from_millis(500),
    );
    let board = Mutex::new(hid::state::Hid::new(Box::new(device)));
    let turns = hid::paste::Turns::default();
    let turn = turns.enter(false).expect("nobody else types here");
    hid::paste::chord(&board, &turn, &usages, Duration::from_millis(10)).map_err(|e| match e {
        hid::paste::Stopped::Device(e) => e,
        hid::paste::Stopped::Reset(_) => "stopped".into(),
    })?;
    println!("pressed {spec}");
    Ok(())
}

/// Prints the newest keyboard LED report waiting on hidg0 (reading consumes them: the
/// hid plugin reads the same reports while it runs).
fn leds(o: &Options) -> Result<(), String> {
    use hid::device::{led, Device};
    let mut device = hid::gadget::Gadget::new(
        o.dev.join("hidg0"),
        o.dev.join("hidg1"),
        o.dev.join("hidg2"),
        Duration::from_millis(500),
    );
    match device.leds() {
        Some(l) => {
            let state = |bit: u8| if l & bit != 0 { "on" } else { "off" };
            println!(
                "num_lock {}, caps_lock {}, scroll_lock {}",
                state(led::NUM_LOCK),
                state(led::CAPS_LOCK),
                state(led::SCROLL_LOCK)
            );
        }
        None => println!("no LED report waiting"),
    }
    Ok(())
}
