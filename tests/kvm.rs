//! The KVM plugins `gpio` and `storage`, end to end: the real daemon, the real `.so`
//! files, and for the QEMU backends a real (virtual) machine, the test guest.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use jsipd_e2e::guest::{self, Guest, BOOT_TIMEOUT};
use jsipd_e2e::http::{head, read_response, request};
use jsipd_e2e::ws::Ws;
use jsipd_e2e::{loopback_config, Daemon, Prefix};
use serde_json::{json, Value};

fn start() -> (Prefix, Daemon) {
    // NOTIFYs go to `USER@kvm.test`: this node's realm, so to the user's own socket.
    let p = Prefix::with_config(&(loopback_config("") + "[JSIPStack]\nrealm = kvm.test\n"));
    p.add_plugin("gpio", "gpio.so");
    p.add_plugin("storage", "storage.so");
    let d = Daemon::start(&p);
    (p, d)
}

fn call(d: &Daemon, method: &str, path: &str, body: &str) -> (u16, Value) {
    let r = request(d.api, method, path, &[], body);
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn load(d: &Daemon, what: &str) {
    let (status, v) = call(d, "POST", what, "");
    assert_eq!(status, 200, "{what}: {v}");
}

fn leds(d: &Daemon) -> Value {
    let (status, v) = call(d, "GET", "/gpio/v1/led", "");
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

/// Waits until GET /gpio/v1/led satisfies `want`.
fn wait_leds(d: &Daemon, what: &str, timeout: Duration, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let now = leds(d);
        if want(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "LEDs never got {what}; last {now}"
        );
        // The LED state is only observable by asking; ask every 10 ms.
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn subscribe(ws: &mut Ws, who: &str, dialog: &str, expire: u64) {
    ws.send(&json!({"Type": "SUBSCRIBE", "Request-URI": "led@gpio.test", "From": format!("{who}@kvm.test"),
        "To": "led@gpio.test", "DialogueID": dialog, "CSeq": 1, "Expire": expire, "Event": "led",
        "P-Asserted-Identity": format!("{who}@kvm.test")}));
}

/// The next NOTIFY's Body, answered 200 (other messages are skipped).
fn next_notify(ws: &mut Ws) -> Value {
    loop {
        let m = ws.recv();
        if m["Type"] == "NOTIFY" {
            assert_eq!(m["Event"], "led", "{m}");
            ws.send(
                &json!({"Type": "RESPONSE", "Code": 200, "From": m["From"], "To": m["To"],
                "DialogueID": m["DialogueID"], "CSeq": m["CSeq"]}),
            );
            return m["Body"].clone();
        }
    }
}

#[test]
fn gpio_sim_presses_validates_refuses_a_second_press_and_notifies_led_changes() {
    let (p, d) = start();
    // A broken config refuses the load with the file and line, and loses nothing.
    p.write_plugin_conf("gpio", "backend = sim\n[qemu]\nqmp_socket = /x\n");
    let (status, v) = call(&d, "POST", "/apim/v1/gpio.v1?file=gpio.so", "");
    assert!(status >= 400, "{v}");
    assert!(v.to_string().contains("gpio.ini line 3"), "{v}");
    p.write_plugin_conf("gpio", "backend = sim\n");
    load(&d, "/apim/v1/gpio.v1?file=gpio.so");
    load(&d, "/slpm/v1/gpio?file=gpio.so");

    assert_eq!(leds(&d), json!({"pwr": false, "hdd": false, "busy": false}));
    let mut ws = Ws::connect(d.rtc.unwrap(), "alice");
    subscribe(&mut ws, "alice", "sub-1", 60);
    let ok = ws.recv();
    assert_eq!(
        (ok["Code"].as_u64(), ok["Expire"].as_u64()),
        (Some(200), Some(60)),
        "{ok}"
    );
    assert_eq!(next_notify(&mut ws), json!({"pwr": false, "hdd": false}));

    // Bad durations and bodies: 400, and nothing is pressed.
    for body in [
        r#"{"duration":49}"#,
        r#"{"duration":30001}"#,
        r#"{"duration":"long"}"#,
        "not json",
    ] {
        let (status, v) = call(&d, "POST", "/gpio/v1/power", body);
        assert_eq!(status, 400, "{body}: {v}");
    }
    assert_eq!(call(&d, "GET", "/gpio/v1/power", "").0, 405);
    assert_eq!(call(&d, "GET", "/gpio/v1/fan", "").0, 404);
    assert!(!leds(&d)["pwr"].as_bool().unwrap());

    // Power on: NOTIFY pwr and the boot's disk activity, then the disk going quiet.
    let (status, v) = call(&d, "POST", "/gpio/v1/power", "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["duration"], 800, "the default press");
    assert_eq!(next_notify(&mut ws), json!({"pwr": true, "hdd": true}));
    assert_eq!(next_notify(&mut ws), json!({"pwr": true, "hdd": false}));

    // A press while another is held: 409.
    let api = d.api;
    let long = std::thread::spawn(move || {
        request(api, "POST", "/gpio/v1/power", &[], r#"{"duration":1500}"#).status
    });
    wait_leds(&d, "busy", Duration::from_secs(5), |l| l["busy"] == true);
    let (status, v) = call(&d, "POST", "/gpio/v1/reset", "");
    assert_eq!(status, 409, "{v}");
    assert_eq!(long.join().unwrap(), 200);
    assert_eq!(next_notify(&mut ws), json!({"pwr": false, "hdd": false}));

    // A subscription that is not refreshed ends.
    let mut bob = Ws::connect(d.rtc.unwrap(), "bob");
    subscribe(&mut bob, "bob", "sub-2", 1);
    assert_eq!(bob.recv()["Code"], 200);
    next_notify(&mut bob);
    d.wait_log(
        "bob@kvm.test's led subscription expired",
        Duration::from_secs(10),
    );
    // Unsubscribing twice: the second is 481.
    ws.send(
        &json!({"Type": "SUBSCRIBE", "Request-URI": "led@gpio.test", "From": "alice@kvm.test",
        "To": "led@gpio.test", "DialogueID": "sub-3", "CSeq": 1, "Expire": 0, "Event": "led",
        "P-Asserted-Identity": "alice@kvm.test"}),
    );
    assert_eq!(ws.recv()["Code"], 200);
    ws.send(
        &json!({"Type": "SUBSCRIBE", "Request-URI": "led@gpio.test", "From": "alice@kvm.test",
        "To": "led@gpio.test", "DialogueID": "sub-4", "CSeq": 1, "Expire": 0, "Event": "led",
        "P-Asserted-Identity": "alice@kvm.test"}),
    );
    assert_eq!(ws.recv()["Code"], 481);
}

fn upload(d: &Daemon, name: &str, data: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(d.api).unwrap();
    s.write_all(
        head(
            "POST",
            &format!("/storage/v1/images/{name}"),
            &[],
            data.len(),
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(data).unwrap();
    let r = read_response(&mut s);
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

fn image_names(d: &Daemon) -> Vec<String> {
    let (status, v) = call(d, "GET", "/storage/v1/images", "");
    assert_eq!(status, 200, "{v}");
    v["data"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

fn folder_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn storage_uploads_lists_refuses_bad_names_and_cut_uploads_and_says_why_it_cannot_mount() {
    let (p, d) = start();
    load(&d, "/apim/v1/storage.v1?file=storage.so");
    let images = p.path().join("images");

    assert_eq!(upload(&d, "boot.iso", b"0123456789").0, 201);
    assert_eq!(upload(&d, "boot.iso", b"again").0, 409, "no overwrite");
    assert_eq!(image_names(&d), ["boot.iso"]);

    // Names that leave the folder.
    std::fs::write(p.path().join("secret.txt"), "x").unwrap();
    std::os::unix::fs::symlink(p.path().join("secret.txt"), images.join("out.iso")).unwrap();
    for bad in [
        "..",
        "%2E%2E",
        "%2Fetc%2Fpasswd",
        "a%2F..%2F..%2Fsecret.txt",
        ".hidden",
    ] {
        let (status, v) = upload(&d, bad, b"x");
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (status, v) = call(&d, "POST", "/storage/v1/mount", r#"{"file":"out.iso"}"#);
    assert_eq!(status, 400, "a link out of the folder: {v}");
    assert_eq!(call(&d, "DELETE", "/storage/v1/images/out.iso", "").0, 400);
    assert_eq!(
        call(&d, "POST", "/storage/v1/mount", r#"{"file":"none.iso"}"#).0,
        404
    );

    // A cut-off upload leaves nothing behind.
    let mut s = TcpStream::connect(d.api).unwrap();
    s.write_all(head("POST", "/storage/v1/images/cut.iso", &[], 1 << 20).as_bytes())
        .unwrap();
    s.write_all(&[7u8; 4096]).unwrap();
    drop(s);
    d.wait_log("upload of \"cut.iso\" failed", Duration::from_secs(10));
    assert_eq!(folder_entries(&images), ["boot.iso", "out.iso"]);

    // The shipped config's gadget backend on a machine without a UDC: 503 and why.
    let (status, v) = call(
        &d,
        "POST",
        "/storage/v1/mount",
        r#"{"file":"boot.iso","cdrom":true}"#,
    );
    assert_eq!(status, 503, "{v}");
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("no USB device controller"),
        "{v}"
    );
    assert_eq!(
        call(&d, "GET", "/storage/v1/mounted", "").1["data"]["mounted"],
        Value::Null
    );
    assert_eq!(call(&d, "POST", "/storage/v1/unmount", "").0, 409);

    assert_eq!(call(&d, "DELETE", "/storage/v1/images/boot.iso", "").0, 200);
    assert_eq!(call(&d, "DELETE", "/storage/v1/images/boot.iso", "").0, 404);
    assert!(image_names(&d).is_empty());
}

fn rss_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

#[test]
fn a_two_gib_upload_grows_the_server_by_less_than_64_mib() {
    let (p, d) = start();
    load(&d, "/apim/v1/storage.v1?file=storage.so");
    let before = rss_kib(d.pid(), "VmRSS:");
    const SIZE: u64 = 2 << 30;
    let mut s = TcpStream::connect(d.api).unwrap();
    s.write_all(head("POST", "/storage/v1/images/big.img", &[], SIZE as usize).as_bytes())
        .unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..SIZE / chunk.len() as u64 {
        s.write_all(&chunk).unwrap();
    }
    let r = read_response(&mut s);
    assert_eq!(r.status, 201, "{}", r.body);
    let peak = rss_kib(d.pid(), "VmHWM:");
    let growth_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    eprintln!("2 GiB upload: RSS {before} KiB before, peak {peak} KiB, growth {growth_mib:.1} MiB");
    assert!(growth_mib < 64.0, "RSS grew {growth_mib:.1} MiB");
    let meta = std::fs::metadata(p.path().join("images/big.img")).unwrap();
    assert_eq!(meta.len(), SIZE);
    let mut f = std::fs::File::open(p.path().join("images/big.img")).unwrap();
    let mut tail = [0u8; 4];
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::End(-4)).unwrap();
    f.read_exact(&mut tail).unwrap();
    assert_eq!(tail, [0x5a; 4]);
}

#[test]
fn qemu_guest_power_reset_leds_and_virtual_media() {
    guest::available().expect("the test guest needs its packages (see test.sh)");
    let mut g = Guest::start(&["gpio", "storage"]);
    let (p, d) = start();
    p.write_plugin_conf(
        "gpio",
        &format!(
            "backend = qemu\n[qemu]\nqmp = {}\n",
            g.plugin_qmp("gpio").display()
        ),
    );
    p.write_plugin_conf(
        "storage",
        &format!(
            "backend = qemu\n[qemu]\nqmp = {}\ncdrom = cd0\n",
            g.plugin_qmp("storage").display()
        ),
    );
    load(&d, "/apim/v1/gpio.v1?file=gpio.so");
    load(&d, "/apim/v1/storage.v1?file=storage.so");
    let serial = g.serial();

    // Off at the start (-S); a press boots it.
    assert_eq!(leds(&d)["pwr"], false);
    assert_eq!(call(&d, "POST", "/gpio/v1/power", "").0, 200);
    wait_leds(&d, "pwr on", Duration::from_secs(5), |l| l["pwr"] == true);
    serial.wait_for("jsipd-guest: ready", BOOT_TIMEOUT);

    // Disk I/O in the guest lights hdd; idle, it goes dark.
    wait_leds(&d, "hdd dark", Duration::from_secs(20), |l| {
        l["hdd"] == false
    });
    serial.run("dd if=/dev/sda of=/dev/null bs=4k count=16384 && echo dd-done");
    wait_leds(&d, "hdd lit", Duration::from_secs(30), |l| l["hdd"] == true);
    serial.wait_for("dd-done", Duration::from_secs(60));

    // Virtual media: upload an ISO, mount it, the guest prints its marker.
    let iso = std::fs::read(guest::iso_with_marker(g.dir(), "marker-7f3a")).unwrap();
    assert_eq!(upload(&d, "marker.iso", &iso).0, 201);
    let (status, v) = call(
        &d,
        "POST",
        "/storage/v1/mount",
        r#"{"file":"marker.iso","cdrom":true}"#,
    );
    assert_eq!(status, 200, "{v}");
    serial.wait_for(
        "jsipd-guest: cdrom mounted: marker-7f3a",
        Duration::from_secs(30),
    );
    assert_eq!(
        call(&d, "GET", "/storage/v1/mounted", "").1["data"]["mounted"]["file"],
        "marker.iso"
    );
    assert_eq!(
        call(&d, "POST", "/storage/v1/mount", r#"{"file":"marker.iso"}"#).0,
        409
    );
    assert_eq!(
        call(&d, "DELETE", "/storage/v1/images/marker.iso", "").0,
        409,
        "mounted"
    );
    assert_eq!(call(&d, "POST", "/storage/v1/unmount", "").0, 200);
    serial.wait_for("jsipd-guest: cdrom gone", Duration::from_secs(30));
    let block = g.qmp().execute("query-block", json!({}));
    let cd = block
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["qdev"] == "cd0")
        .cloned()
        .unwrap();
    assert!(cd.get("inserted").is_none(), "the drive is empty: {cd}");

    // The same image as a USB stick: a usb-storage device is plugged into the VM's xHCI
    // controller, and unplugged again.
    let (status, v) = call(
        &d,
        "POST",
        "/storage/v1/mount",
        r#"{"file":"marker.iso","cdrom":false,"readonly":true}"#,
    );
    assert_eq!(status, 200, "{v}");
    let usb = g.qmp().execute("query-block", json!({}));
    assert!(
        usb.to_string().contains("jsipd-stick"),
        "the stick's drive: {usb}"
    );
    assert_eq!(call(&d, "POST", "/storage/v1/unmount", "").0, 200);
    let usb = g.qmp().execute("query-block", json!({}));
    assert!(!usb.to_string().contains("jsipd-stick"), "and gone: {usb}");
    assert_eq!(
        call(&d, "DELETE", "/storage/v1/images/marker.iso", "").0,
        200
    );

    // Reset reboots: a second boot on serial.
    assert_eq!(call(&d, "POST", "/gpio/v1/reset", "").0, 200);
    serial.wait_for_count("jsipd-guest: ready", 2, BOOT_TIMEOUT);

    // A short press is the ACPI power button: the guest powers itself off.
    assert_eq!(call(&d, "POST", "/gpio/v1/power", "").0, 200);
    serial.wait_for("jsipd-guest: acpi power button", Duration::from_secs(30));
    wait_leds(&d, "pwr off", Duration::from_secs(30), |l| {
        l["pwr"] == false
    });
    assert_eq!(g.status(), "shutdown");

    // On again, then a long press forces it off without asking the guest.
    assert_eq!(call(&d, "POST", "/gpio/v1/power", "").0, 200);
    serial.wait_for_count("jsipd-guest: ready", 3, BOOT_TIMEOUT);
    let (status, v) = call(&d, "POST", "/gpio/v1/power", r#"{"duration":5000}"#);
    assert_eq!(status, 200, "{v}");
    wait_leds(&d, "pwr off", Duration::from_secs(5), |l| l["pwr"] == false);
    assert_eq!(
        serial.count("jsipd-guest: acpi power button"),
        1,
        "forced, not ACPI"
    );
    assert_ne!(g.status(), "running");
}
