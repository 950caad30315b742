//! The test guest: a real QEMU machine for the KVM plugins' end-to-end tests.
//!
//! `qemu-system-x86_64` (TCG) boots Debian's
//! `linux-image-amd64` kernel with an initramfs built here from Debian's static busybox.
//! The machine starts powered off (`-S`) and stays put after a guest power-off
//! (`-no-shutdown`), as a physical PC does, so a `gpio` power press is what boots it.
//!
//! What a test gets:
//! - QMP for the harness itself ([`Guest::qmp`]) and one more QMP socket per plugin
//!   ([`Guest::plugin_qmp`]): QEMU serves one client per monitor, and each plugin keeps
//!   its own connection;
//! - the serial port ([`Guest::serial`]): everything the guest prints, and a shell that
//!   reads commands from it;
//! - VNC on loopback, a 64 MiB IDE disk (`/dev/sda`), an empty IDE CD-ROM (qdev id `cd0`),
//!   a USB controller and an e1000 network card (qdev id `nic0`, `eth0`) with nothing
//!   behind it, whose link a test can pull with QMP `set_link`.
//!
//! Guest init (see [`INIT`]) loads the modules it needs, runs busybox `acpid` so the ACPI
//! power button powers off, a shell on tty1 (typed text can be made visible with
//! `cat > /dev/ttyS0`), a shell on the serial port, and a watcher that mounts a CD-ROM
//! when one is inserted and prints its `marker.txt` to serial.
//!
//! The initramfs is cached under `target/test-guest/`, keyed by the kernel, busybox and
//! init script, so later runs only start QEMU.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Kernel modules the guest needs (Debian builds them as modules), dependencies resolved
/// from `modules.dep`.
/// `xhci-pci`, `usbhid` and `hid-generic` are for the USB tablet (absolute pointer) and
/// the gadget's HID functions as the guest's own host side sees them.
const MODULES: &[&str] = &[
    "ata_piix",
    "sd_mod",
    "sr_mod",
    "isofs",
    "evdev",
    "button",
    "xhci-pci",
    "usbhid",
    // The network card (qdev id `nic0`) whose link gpio switches with QMP set_link.
    "e1000",
    "hid-generic",
    // A USB gadget on the guest's own dummy controller, for jsipd-gadget.
    "configfs",
    "libcomposite",
    "usb_f_hid",
    "usb_f_mass_storage",
    "dummy_hcd",
];

/// Modules in the guest but not loaded at boot: a test loads one with its dependencies
/// by `for m in $(cat /lib/modules/NAME.order); do insmod /lib/modules/$m.ko; done`.
/// `bochs` is the DRM driver of QEMU's std VGA: loading it switches the console from
/// 720x400 text mode to a 1024x768 framebuffer, a guest resolution change.
/// `vivid` is the kernel's virtual video capture device: a real V4L2 driver.
const ON_DEMAND_MODULES: &[&str] = &["bochs", "vivid"];

/// Console keymaps put in the guest as `/etc/NAME.bmap` (busybox `loadkmap` format),
/// made from the same XKB data the hid plugin reads: `ckbcomp NAME | loadkeys -u -b`.
const CONSOLE_KEYMAPS: &[&str] = &["de"];

/// A binary console keymap for XKB layout `layout`.
fn console_keymap(layout: &str) -> Vec<u8> {
    let source = Command::new("ckbcomp")
        .arg(layout)
        .stderr(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("ckbcomp (Debian console-setup): {e}"));
    assert!(source.status.success(), "ckbcomp {layout} failed");
    let mut loadkeys = Command::new("loadkeys")
        .args(["-u", "-b", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("loadkeys (Debian kbd): {e}"));
    loadkeys
        .stdin
        .take()
        .unwrap()
        .write_all(&source.stdout)
        .unwrap();
    let out = loadkeys.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.starts_with(b"bkeymap"),
        "loadkeys -b for {layout} failed"
    );
    out.stdout
}

/// Guest init: PID 1, a busybox shell script.
pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /mnt /tmp /bin /sbin /usr/bin /usr/sbin /etc/acpi /var/log /var/run
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko; done
mount -t configfs none /sys/kernel/config
echo 1 > /proc/sys/kernel/printk
n=0
while ! grep -q 'Power Button' /proc/bus/input/devices && [ $n -lt 50 ]; do usleep 100000; n=$((n+1)); done
# ACPI power button -> power off (busybox acpid maps KEY_POWER to PWRF).
printf '#!/bin/sh\necho "jsipd-guest: acpi power button" > /dev/ttyS0\npoweroff -f\n' > /etc/acpi/power
chmod +x /etc/acpi/power
echo "PWRF power" > /etc/acpid.conf
acpid -f -c /etc/acpi -a /etc/acpid.conf > /dev/ttyS0 2>&1 &
acpid=$!
# "ready" must mean a power button press is heard: wait until acpid has its devices open.
n=0
while ! ls -l /proc/$acpid/fd 2>/dev/null | grep -q /dev/input/event && [ $n -lt 50 ]; do usleep 100000; n=$((n+1)); done
# CD-ROM watcher: mount on insert, print the marker; notice an eject.
(
    mounted=
    while true; do
        if [ -z "$mounted" ]; then
            if mount -t iso9660 -o ro /dev/sr0 /mnt 2>/dev/null; then
                mounted=1
                echo "jsipd-guest: cdrom mounted: $(cat /mnt/marker.txt 2>/dev/null)"
            fi
        elif ! dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>/dev/null; then
            umount -l /mnt; mounted=
            echo "jsipd-guest: cdrom gone"
        fi
        sleep 1
    done
) > /dev/ttyS0 2>&1 &
# The network card, up: a test reads /sys/class/net/eth0/carrier through the serial shell.
ip link set eth0 up 2>/dev/null
# A shell on tty1 (the console keyboard), and one on the serial port for the tests.
# `setsid -c` makes the tty the new session's controlling terminal (TIOCSCTTY), so
# Ctrl+C typed there interrupts the command running in it. The loop is started by
# start-stop-daemon, not with `&`: a shell without job control starts `&` lists with
# SIGINT and SIGQUIT ignored, and every command under them would inherit that.
start-stop-daemon -S -b -p /var/run/tty1.pid -x /bin/sh -- -c \
    'while true; do setsid -c sh -i < /dev/tty1 > /dev/tty1 2>&1; done'
(while true; do setsid sh -c 'exec sh -i < /dev/ttyS0 > /dev/ttyS0 2>&1'; done) &
(while true; do setsid -c sh -i < /dev/ttyS1 > /dev/ttyS1 2>&1; done) &
echo "jsipd-guest: ready, boot $(cat /proc/sys/kernel/random/boot_id)" > /dev/ttyS0
while true; do sleep 3600; done
"#;

/// How long a boot may take under TCG on a loaded 2-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Is this machine able to run the guest? `Err` says what is missing.
pub fn available() -> Result<(), String> {
    for tool in ["qemu-system-x86_64", "busybox"] {
        if which(tool).is_none() {
            return Err(format!(
                "{tool} not found (Debian qemu-system-x86, busybox-static)"
            ));
        }
    }
    kernel().map(|_| ())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

/// The newest Debian kernel in /boot: (vmlinuz, modules dir).
fn kernel() -> Result<(PathBuf, PathBuf), String> {
    let mut found: Vec<String> = std::fs::read_dir("/boot")
        .map_err(|e| format!("/boot: {e}"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(String::from))
        .filter(|v| {
            Path::new("/lib/modules")
                .join(v)
                .join("modules.dep")
                .exists()
        })
        .collect();
    found.sort();
    let version = found
        .pop()
        .ok_or("no /boot/vmlinuz-* with /lib/modules/*/modules.dep (Debian linux-image-amd64)")?;
    Ok((
        PathBuf::from(format!("/boot/vmlinuz-{version}")),
        Path::new("/lib/modules").join(version),
    ))
}

/// Builds (or finds cached) the initramfs; returns (kernel, initramfs).
fn image() -> (PathBuf, PathBuf) {
    let (vmlinuz, modules) = kernel().unwrap_or_else(|e| panic!("test guest: {e}"));
    let busybox = which("busybox").expect("busybox");
    let dep = std::fs::read_to_string(modules.join("modules.dep")).unwrap();
    let order = module_order(&dep, MODULES);
    let on_demand: Vec<(&str, Vec<String>)> = ON_DEMAND_MODULES
        .iter()
        .map(|name| {
            let extra = module_order(&dep, &[name]);
            (
                *name,
                extra.into_iter().filter(|m| !order.contains(m)).collect(),
            )
        })
        .collect();
    let keymaps: Vec<(&str, Vec<u8>)> = CONSOLE_KEYMAPS
        .iter()
        .map(|name| (*name, console_keymap(name)))
        .collect();

    let mut key = std::collections::hash_map::DefaultHasher::new();
    use std::hash::{Hash, Hasher};
    (
        INIT,
        &order,
        &on_demand,
        vmlinuz.to_str(),
        modules.to_str(),
        &keymaps,
    )
        .hash(&mut key);
    std::fs::metadata(&busybox).unwrap().len().hash(&mut key);
    let dir = super::target_dir().join("test-guest");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("initramfs-{:016x}.cpio", key.finish()));
    if path.exists() {
        return (vmlinuz, path);
    }

    let mut cpio = Cpio::default();
    for d in ["bin", "lib", "lib/modules", "dev", "etc"] {
        cpio.dir(d);
    }
    cpio.file("init", 0o755, INIT.as_bytes());
    for (name, bmap) in &keymaps {
        cpio.file(&format!("etc/{name}.bmap"), 0o644, bmap);
    }
    cpio.file("bin/busybox", 0o755, &std::fs::read(&busybox).unwrap());
    // Each list's modules go in as /lib/modules/NAME.ko, their names into its order file.
    let mut add = |rels: &[String], order_file: &str| {
        let mut names = Vec::new();
        for rel in rels {
            let name = Path::new(rel)
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let data = std::fs::read(modules.join(rel)).unwrap();
            assert!(
                rel.ends_with(".ko"),
                "{rel}: compressed modules are not handled; the guest's busybox insmod wants plain .ko"
            );
            cpio.file(&format!("lib/modules/{name}.ko"), 0o644, &data);
            names.push(name);
        }
        cpio.file(
            &format!("lib/modules/{order_file}"),
            0o644,
            (names.join("\n") + "\n").as_bytes(),
        );
    };
    add(&order, "order");
    for (name, rels) in &on_demand {
        add(rels, &format!("{name}.order"));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, cpio.finish()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    (vmlinuz, path)
}

/// `wanted` and their dependencies, each after everything it needs.
fn module_order(modules_dep: &str, wanted: &[&str]) -> Vec<String> {
    let deps: std::collections::HashMap<&str, Vec<&str>> = modules_dep
        .lines()
        .filter_map(|l| {
            let (m, d) = l.split_once(':')?;
            Some((m, d.split_whitespace().collect()))
        })
        .collect();
    let by_name = |name: &str| {
        deps.keys()
            .find(|k| {
                Path::new(k).file_stem().and_then(|s| s.to_str()) == Some(name)
                    || Path::new(k).file_stem().and_then(|s| s.to_str())
                        == Some(&format!("{name}.ko"))
            })
            .unwrap_or_else(|| panic!("module {name} is not in modules.dep"))
            .to_string()
    };
    fn visit(
        m: &str,
        deps: &std::collections::HashMap<&str, Vec<&str>>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(m.to_string()) {
            return;
        }
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, seen, out);
        }
        out.push(m.to_string());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        visit(&by_name(w), &deps, &mut seen, &mut out);
    }
    out
}

/// A `newc` cpio archive, which the kernel unpacks as the initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// A running QEMU machine; killed when dropped.
pub struct Guest {
    child: Child,
    dir: tempfile::TempDir,
    serial: Serial,
    qmp: Qmp,
}

impl Guest {
    /// Starts QEMU, powered off, with one QMP socket for each name in `plugin_monitors`.
    pub fn start(plugin_monitors: &[&str]) -> Guest {
        Guest::start_with(plugin_monitors, &[])
    }

    /// As [`Guest::start`], with `extra` files (guest path, contents; mode 0755) in a
    /// second cpio archive after the cached one (the kernel unpacks both).
    pub fn start_with(plugin_monitors: &[&str], extra: &[(&str, Vec<u8>)]) -> Guest {
        let (kernel, mut initramfs) = image();
        let dir = tempfile::Builder::new()
            .prefix("jsipd-guest-")
            .tempdir()
            .unwrap();
        if !extra.is_empty() {
            let mut cpio = Cpio::default();
            let mut dirs = BTreeSet::new();
            for (path, _) in extra {
                let mut parent = Path::new(path.trim_start_matches('/'));
                while let Some(p) = parent.parent().filter(|p| !p.as_os_str().is_empty()) {
                    dirs.insert(p.to_str().unwrap().to_string());
                    parent = p;
                }
            }
            // BTreeSet order puts every parent before its children.
            for d in &dirs {
                cpio.dir(d);
            }
            for (path, data) in extra {
                cpio.file(path.trim_start_matches('/'), 0o755, data);
            }
            let mut both = std::fs::read(&initramfs).unwrap();
            both.extend_from_slice(&cpio.finish());
            initramfs = dir.path().join("initramfs.cpio");
            std::fs::write(&initramfs, both).unwrap();
        }
        let disk = dir.path().join("disk.img");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let sock = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        let mut cmd = Command::new("qemu-system-x86_64");
        // TCG, not KVM: a host may offer /dev/kvm that cannot run a guest (nested, no
        // VMX), and QEMU does not fall back once KVM opened. JSIPD_GUEST_ACCEL=kvm to try.
        let accel = std::env::var("JSIPD_GUEST_ACCEL").unwrap_or_else(|_| "tcg".into());
        cmd.args(["-machine", "pc", "-accel", &accel, "-m", "256"])
            .args(["-nodefaults", "-no-user-config", "-no-shutdown", "-S"])
            .args(["-vga", "std", "-display", "none"])
            // The display, for the stream plugin's VNC source.
            .args(["-vnc", &format!("unix:{}", sock("vnc.sock"))])
            // A network card with no network behind it: only its link matters.
            .args(["-device", "e1000,id=nic0"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initramfs)
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=serial0,path={},server=on,wait=off",
                sock("serial.sock")
            ))
            .args(["-serial", "chardev:serial0"])
            // A second serial port (ttyS1, a shell on it) for the serial plugin.
            .arg("-chardev")
            .arg(format!(
                "socket,id=serial1,path={},server=on,wait=off",
                sock("serial1.sock")
            ))
            .args(["-serial", "chardev:serial1"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=qmp0,path={},server=on,wait=off",
                sock("qmp.sock")
            ))
            .args(["-mon", "chardev=qmp0,mode=control"]);
        for name in plugin_monitors {
            cmd.arg("-chardev")
                .arg(format!(
                    "socket,id=qmp-{name},path={},server=on,wait=off",
                    sock(&format!("qmp-{name}.sock"))
                ))
                .args(["-mon", &format!("chardev=qmp-{name},mode=control")]);
        }
        cmd.arg("-drive")
            .arg(format!("if=none,id=hd0,file={},format=raw", disk.display()))
            .args(["-device", "ide-hd,drive=hd0,bus=ide.0,id=disk0"])
            .args(["-drive", "if=none,id=cd0drive,media=cdrom"])
            .args(["-device", "ide-cd,drive=cd0drive,bus=ide.1,id=cd0"])
            .args(["-device", "qemu-xhci,id=usb"])
            // An absolute pointer, as a KVM's USB gadget tablet is.
            .args(["-device", "usb-tablet,bus=usb.0,id=tablet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("qemu.log")).unwrap(),
            ));
        let child = cmd.spawn().expect("spawn qemu-system-x86_64");
        let mut child = child;
        let qmp = Qmp::connect(&dir.path().join("qmp.sock"), &mut child, dir.path());
        let serial = Serial::connect(&dir.path().join("serial.sock"));
        Guest {
            child,
            dir,
            serial,
            qmp,
        }
    }

    /// The guest's second serial port (ttyS1, a shell on it), for the serial plugin.
    pub fn serial1(&self) -> PathBuf {
        self.dir.path().join("serial1.sock")
    }

    /// QEMU's VNC server (the guest's screen).
    pub fn vnc(&self) -> PathBuf {
        self.dir.path().join("vnc.sock")
    }

    /// The QMP socket made for a plugin (see [`Guest::start`]).
    pub fn plugin_qmp(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("qmp-{name}.sock"))
    }

    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// The serial port; a handle that can be kept while the guest is used otherwise.
    pub fn serial(&self) -> Serial {
        Serial {
            writer: self
                .serial
                .writer
                .try_clone()
                .expect("clone the serial socket"),
            bytes: self.serial.bytes.clone(),
        }
    }

    /// QEMU's run state: `prelaunch`, `running`, `shutdown`, `paused`, …
    pub fn status(&mut self) -> String {
        self.qmp.execute("query-status", json!({}))["status"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until QEMU's run state is `want`.
    pub fn wait_status(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.status();
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "QEMU status stayed {now}, not {want}, for {timeout:?}; serial:\n{}",
                self.serial.text()
            );
            // QMP has events, but a run state can change between connect and subscribe;
            // polling the state itself is the condition.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A folder that lives as long as the guest (for images and files the test makes).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- guest serial ---\n{}", self.serial.text());
            if let Ok(log) = std::fs::read_to_string(self.dir.path().join("qemu.log")) {
                eprintln!("--- qemu stderr ---\n{log}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The harness's QMP connection: the plugins' own client (`jsipd-kvm-support`), with
/// failures turned into test panics.
pub struct Qmp(jsipd_kvm_support::qmp::Qmp);

impl Qmp {
    fn connect(path: &Path, child: &mut Child, dir: &Path) -> Qmp {
        let qmp = jsipd_kvm_support::qmp::Qmp::new(path);
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = qmp.execute("query-status", json!({})) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "qemu exited ({status}): {}",
                    std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "{e}");
            // The socket appears once QEMU has parsed its options.
            std::thread::sleep(Duration::from_millis(20));
        }
        Qmp(qmp)
    }

    /// Runs a command; panics on a QMP error.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Value {
        self.0
            .execute(command, arguments)
            .unwrap_or_else(|e| panic!("QMP {command}: {e}"))
    }
}

/// The guest's serial port: all output, kept, and a way to type into the serial shell.
pub struct Serial {
    writer: UnixStream,
    bytes: Arc<(Mutex<Vec<u8>>, Condvar)>,
}

impl Serial {
    fn connect(path: &Path) -> Serial {
        let stream = UnixStream::connect(path).expect("serial socket");
        let mut reader = stream.try_clone().unwrap();
        let bytes = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let shared = bytes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let (bytes, grew) = &*shared;
                // Bytes, not text: a UTF-8 character may be split across two reads.
                lock(bytes).extend_from_slice(&buf[..n]);
                grew.notify_all();
            }
        });
        Serial {
            writer: stream,
            bytes,
        }
    }

    /// Everything the guest printed so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.bytes.0)).into_owned()
    }

    /// How many bytes the guest printed so far.
    pub fn len(&self) -> usize {
        lock(&self.bytes.0).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How often `needle` appears in the output so far.
    pub fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }

    /// Waits until `done` finds what it looks for in all output so far, or `timeout`;
    /// on timeout, the output for the caller to show.
    fn wait_on<T>(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let (lock, grew) = &*self.bytes;
        let mut bytes = lock.lock().unwrap();
        loop {
            if let Some(found) = done(&bytes) {
                return Ok(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(bytes.clone());
            }
            bytes = grew.wait_timeout(bytes, deadline - now).unwrap().0;
        }
    }

    /// Waits until at least `n` bytes came after offset `from`, or `timeout`; returns the
    /// bytes after `from` (fewer than `n` on timeout, for the caller to show).
    pub fn bytes_after(&self, from: usize, n: usize, timeout: Duration) -> Vec<u8> {
        let after = |bytes: &[u8]| bytes[from.min(bytes.len())..].to_vec();
        self.wait_on(timeout, |bytes| {
            (bytes.len() >= from + n).then(|| after(bytes))
        })
        .unwrap_or_else(|all| after(&all))
    }

    /// Waits until what came after offset `from`, the serial shell's prompts left out,
    /// ends with `expected`, or `timeout`; returns it, for the caller to check and show.
    ///
    /// The serial shell prints its prompt after each command it ran, whenever it gets
    /// to it: before, inside or after the bytes another writer on the port (`cat` on
    /// tty1) sends meanwhile.
    pub fn wait_for_ending(&self, from: usize, expected: &[u8], timeout: Duration) -> Vec<u8> {
        let after = |bytes: &[u8]| without_prompts(&bytes[from.min(bytes.len())..]);
        self.wait_on(timeout, |bytes| {
            Some(after(bytes)).filter(|got| got.ends_with(expected))
        })
        .unwrap_or_else(|all| after(&all))
    }

    /// Waits until `needle` appears `count` times in all output; returns the output.
    pub fn wait_for_count(&self, needle: &str, count: usize, timeout: Duration) -> String {
        self.wait_on(timeout, |bytes| {
            let text = String::from_utf8_lossy(bytes);
            (text.matches(needle).count() >= count).then(|| text.into_owned())
        })
        .unwrap_or_else(|all| {
            let seen = String::from_utf8_lossy(&all);
            panic!("serial: {needle:?} ×{count} not seen within {timeout:?}; serial:\n{seen}")
        })
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_count(needle, 1, timeout)
    }

    /// Starts printing the guest's USB tablet events on this port, one hex line per
    /// `struct input_event`, and returns once the reader has the device open (events
    /// sent before that would be lost).
    pub fn watch_tablet(&self) {
        self.run(
            "ev=$(grep -A5 'QEMU USB Tablet' /proc/bus/input/devices | grep -o 'event[0-9]*'); \
             dd if=/dev/input/$ev bs=24 2>/dev/null | hexdump -v -e '24/1 \"%02x\" \"\\n\"' & \
             while ! ls -l /proc/[0-9]*/fd 2>/dev/null | grep -q input/$ev; do usleep 10000; done; \
             echo tablet-$((5*5))-open",
        );
        self.wait_for("tablet-25-open", Duration::from_secs(20));
    }

    /// Types a line into the serial shell.
    pub fn run(&self, command: &str) {
        (&self.writer)
            .write_all(format!("{command}\n").as_bytes())
            .unwrap();
    }
}

/// The serial shell's prompt: busybox ash's `/ # `, then the cursor-position query its
/// line editor sends.
const SHELL_PROMPT: &[u8] = b"/ # \x1b[6n";

fn without_prompts(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.starts_with(SHELL_PROMPT) {
            rest = &rest[SHELL_PROMPT.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A host binary and the shared libraries it loads (from `ldd`), as (guest path, bytes)
/// for [`Guest::start_with`]; the binary goes to `/bin/NAME`.
pub fn binary_for_the_guest(binary: &Path) -> Vec<(String, Vec<u8>)> {
    let ldd = Command::new("ldd").arg(binary).output().unwrap();
    let name = binary.file_name().unwrap().to_str().unwrap();
    let mut files = vec![(format!("/bin/{name}"), std::fs::read(binary).unwrap())];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux… (0x…)"
        let path = line
            .split("=>")
            .last()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap_or("");
        if path.starts_with('/') {
            let real = std::fs::canonicalize(path).unwrap();
            files.push((path.to_string(), std::fs::read(real).unwrap()));
        }
    }
    files
}

/// Builds `marker.iso` in `dir` (Debian xorriso), its `marker.txt` holding `marker`: the
/// guest's CD watcher prints that file when the image is inserted. Returns its path.
pub fn iso_with_marker(dir: &Path, marker: &str) -> PathBuf {
    let root = dir.join("iso-root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("marker.txt"), marker).unwrap();
    let iso = dir.join("marker.iso");
    let out = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-R", "-J", "-V", "JSIPD", "-o"])
        .arg(&iso)
        .arg(&root)
        .output()
        .expect("run xorriso (Debian xorriso)");
    assert!(
        out.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}
