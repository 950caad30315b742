//! `install.sh` into a temporary prefix, twice: the tree is complete and runnable, and
//! an operator's edits survive the second run.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use jsipd_e2e::repo_root;

fn install(prefix: &Path) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("install.sh"))
        .arg(format!("--prefix={}", prefix.display()))
        .output()
        .expect("run install.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh failed:\n{text}");
    text
}

#[test]
fn install_twice_gives_a_complete_tree_and_keeps_edited_config() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("jsipd");
    install(&prefix);

    for d in ["bin", "conf", "certs", "logs", "plugins", "sdk", "share"] {
        assert!(prefix.join(d).is_dir(), "{d}/ missing");
    }
    let bin = prefix.join("bin/jsipd");
    assert!(std::fs::metadata(&bin).unwrap().permissions().mode() & 0o111 != 0);
    assert!(prefix.join("conf/jsipd.ini").is_file());
    assert!(prefix.join("certs/jsipd.crt").is_file());
    assert_eq!(
        std::fs::metadata(prefix.join("certs/jsipd.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let unit = std::fs::read_to_string(prefix.join("share/jsipd.service")).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart={}/bin/jsipd -p {}",
            prefix.display(),
            prefix.display()
        )),
        "{unit}"
    );
    let rotate = std::fs::read_to_string(prefix.join("share/logrotate")).unwrap();
    assert!(
        rotate.contains(&format!(
            "{}/bin/jsipd -p {} -s reopen",
            prefix.display(),
            prefix.display()
        )),
        "{rotate}"
    );
    assert!(!rotate.contains("@PREFIX@") && !unit.contains("@PREFIX@"));

    // The installed binary finds its tree without -p (the folder above bin/).
    let out = Command::new(&bin).arg("-t").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains(&prefix.join("conf/jsipd.ini").display().to_string()));

    // Edit the config and the certificate, install again: both survive.
    let conf = prefix.join("conf/jsipd.ini");
    let edited = format!(
        "loglevel = debug\n{}",
        std::fs::read_to_string(&conf).unwrap()
    );
    std::fs::write(&conf, &edited).unwrap();
    let cert_before = std::fs::read(prefix.join("certs/jsipd.crt")).unwrap();
    let second = install(&prefix);
    assert!(second.contains("kept existing conf/jsipd.ini"), "{second}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);
    assert_eq!(
        std::fs::read(prefix.join("certs/jsipd.crt")).unwrap(),
        cert_before
    );
    assert!(prefix.join("conf/jsipd.ini.default").is_file());
    let out = Command::new(&bin).arg("-t").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pcompile --new demo && pcompile demo` in an installed tree builds offline against its
/// `sdk/`, and the installed jsipd loads the result (and the shipped example plugins).
#[test]
fn pcompile_builds_a_new_plugin_offline_from_an_installed_tree() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("jsipd");
    install(&prefix);
    assert!(prefix.join("plugins/echo.so").is_file());
    assert!(prefix.join("plugins/chatroom.so").is_file());
    assert!(prefix.join("conf/chatroom/chatroom.ini").is_file());
    for kvm in ["gpio", "storage", "hid"] {
        assert!(prefix.join(format!("plugins/{kvm}.so")).is_file());
        assert!(prefix.join(format!("conf/{kvm}/{kvm}.ini")).is_file());
    }
    assert!(prefix.join("sdk/plugin-api/src/lib.rs").is_file());
    assert!(prefix.join("bin/jsipd-gadget").is_file());

    let pcompile = prefix.join("bin/pcompile");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&pcompile)
            .args(args)
            .current_dir(&work)
            // Offline for real: no registry, only the vendored sdk.
            .env("CARGO_NET_OFFLINE", "true")
            .env("CARGO_TARGET_DIR", work.join("target"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pcompile {args:?} failed:\n{text}");
        text
    };
    run(&["--new", "demo"]);
    let built = run(&["--debug", "demo"]);
    assert!(built.contains("wrote"), "{built}");
    assert!(prefix.join("plugins/demo.so").is_file());
    assert_eq!(
        std::fs::read_to_string(prefix.join("conf/demo/greeting.txt")).unwrap(),
        "hello from demo\n"
    );

    std::fs::write(
        prefix.join("conf/jsipd.ini"),
        jsipd_e2e::loopback_config(""),
    )
    .unwrap();
    let d = jsipd_e2e::Daemon::start_in(&prefix, None);
    for (path, name) in [
        ("/slpm/v1/demo?file=demo.so", "demo"),
        ("/apim/v1/demo.v1?file=demo.so", "demo.v1"),
        ("/apim/v1/chatroom.v1?file=chatroom.so", "chatroom.v1"),
        ("/apim/v1/gpio.v1?file=gpio.so", "gpio.v1"),
        ("/apim/v1/storage.v1?file=storage.so", "storage.v1"),
        ("/apim/v1/hid.v1?file=hid.so", "hid.v1"),
        ("/slpm/v1/hid?file=hid.so", "hid"),
    ] {
        let r = jsipd_e2e::http::request(d.api, "POST", path, &[], "");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.json()["data"]["name"], name);
    }
    let v = jsipd_e2e::http::get(d.api, "/demo/v1/hello").json();
    assert_eq!(v["greeting"], "hello from demo", "{v}");
    assert_eq!(v["path"], "/hello");
    let rooms = jsipd_e2e::http::get(d.api, "/chatroom/v1/rooms").json();
    assert_eq!(rooms["data"]["rooms"][0]["name"], "888", "{rooms}");
    // The shipped KVM config works without the hardware: gpio simulates a target, and
    // storage lists images but says why it cannot mount.
    let led = jsipd_e2e::http::get(d.api, "/gpio/v1/led").json();
    assert_eq!(led["data"]["pwr"], false, "{led}");
    assert_eq!(
        jsipd_e2e::http::get(d.api, "/storage/v1/images").json()["data"]["images"],
        serde_json::json!([])
    );
    assert!(
        prefix.join("images").is_dir(),
        "the images folder is in the tree"
    );
    let r = jsipd_e2e::http::request(
        d.api,
        "POST",
        "/storage/v1/mount",
        &[],
        r#"{"file":"none.iso"}"#,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // hid ships for the USB gadget; with no gadget here, a key press says what is missing.
    let layouts = jsipd_e2e::http::get(d.api, "/hid/v1/layouts").json();
    assert_eq!(
        layouts["data"]["layouts"].as_array().unwrap().len(),
        7,
        "{layouts}"
    );
    let r = jsipd_e2e::http::request(d.api, "POST", "/hid/v1/keys", &[], r#"{"keys":"a"}"#);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("jsipd-gadget up"), "{}", r.body);
}
