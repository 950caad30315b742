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
    for kvm in ["gpio", "storage", "hid", "stream", "serial"] {
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
        ("/apim/v1/stream.v1?file=stream.so", "stream.v1"),
    ] {
        let r = jsipd_e2e::http::request(d.api, "POST", path, &[], "");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.json()["data"]["name"], name);
    }
    // The installed plugins are release builds: there too, each takes the host's
    // allocator and, built by the daemon's compiler, gets its messages moved whole,
    // not lent (an optimiser must not undo what the debug builds of the other tests
    // show).
    let slps = jsipd_e2e::http::get(d.api, "/slpm/v1/slps").json();
    for name in ["demo", "hid"] {
        let slp = slps["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {slps}"));
        assert_eq!(slp["generations"][0]["messages"], "moved", "{name}: {slp}");
    }
    let v = jsipd_e2e::http::get(d.api, "/demo/v1/hello").json();
    assert_eq!(v["greeting"], "hello from demo", "{v}");
    assert_eq!(v["path"], "/hello");
    let rooms = jsipd_e2e::http::get(d.api, "/chatroom/v1/rooms").json();
    // The shipped chatroom.ini opens any room on demand (none is open yet).
    assert_eq!(rooms["data"]["rooms"], serde_json::json!([]), "{rooms}");
    assert_eq!(rooms["data"]["allowed"], serde_json::Value::Null, "{rooms}");
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
    // serial has no default target: loading it says what to set.
    let r = jsipd_e2e::http::request(d.api, "POST", "/apim/v1/serial.v1?file=serial.so", &[], "");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("set backend"), "{}", r.body);
    // stream ships with its test source: a snapshot works out of the box.
    let shot = jsipd_e2e::http::get(d.api, "/stream/v1/snapshot");
    assert_eq!(shot.status, 200, "{}", shot.body);
    assert!(shot.bytes.starts_with(&[0xff, 0xd8]), "a JPEG");
    let r = jsipd_e2e::http::request(d.api, "POST", "/hid/v1/keys", &[], r#"{"keys":"a"}"#);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("jsipd-gadget up"), "{}", r.body);
}

/// A folder with install.sh and what it reads before building (dist/prereqs.sh, the
/// package list, Cargo.toml), with `edit` applied to the copies: install.sh's checks run
/// for real, against this machine's dpkg and rustc, and never reach cargo.
fn install_kit(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let kit = tempfile::tempdir().unwrap();
    std::fs::set_permissions(kit.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(kit.path().join("dist")).unwrap();
    for f in [
        "install.sh",
        "Cargo.toml",
        "dist/prereqs.sh",
        "dist/debian-packages",
    ] {
        std::fs::copy(repo_root().join(f), kit.path().join(f)).unwrap();
    }
    edit(kit.path());
    kit
}

/// The README's first command, as a user who may not install packages, on a machine
/// missing one: it stops at once, before building, with the exact line to run.
#[test]
fn install_sh_as_a_user_without_root_stops_at_once_with_the_exact_apt_line() {
    // `hello` is a real Debian package this machine has no reason to have installed.
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "hello"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&installed.stdout).contains("install ok installed"),
        "this test needs the Debian package 'hello' not to be installed"
    );
    let kit = install_kit(|kit| {
        let list = kit.join("dist/debian-packages");
        let mut text = std::fs::read_to_string(&list).unwrap();
        text.push_str("runtime  hello  # missing on purpose\n");
        std::fs::write(list, text).unwrap();
    });
    let prefix = kit.path().join("tree");
    // As root, drop to nobody first: the check must be the one a plain user meets.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "bash",
        ]);
        c
    } else {
        Command::new("bash")
    };
    let started = std::time::Instant::now();
    let out = cmd
        .arg(kit.path().join("install.sh"))
        .arg(format!("--prefix={}", prefix.display()))
        .env("HOME", kit.path())
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines()
            .any(|l| l.trim() == "sudo apt-get install -y --no-install-recommends hello"),
        "{err}"
    );
    assert!(err.contains("--no-deps"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("building"),
        "it must stop before building"
    );
    assert!(!prefix.exists(), "nothing is laid out");
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
}

/// An older Rust than the workspace's rust-version is named, with what to do, before
/// anything is built; --no-deps skips the package check.
#[test]
fn install_sh_names_the_rust_version_it_needs() {
    let kit = install_kit(|kit| {
        let toml = kit.join("Cargo.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        assert!(text.contains("rust-version = \""), "{text}");
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with("rust-version") {
                    "rust-version = \"99.0\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(toml, text).unwrap();
        // A missing package would stop it first; --no-deps must skip that check.
        let list = kit.join("dist/debian-packages");
        let mut text = std::fs::read_to_string(&list).unwrap();
        text.push_str("runtime  hello\n");
        std::fs::write(list, text).unwrap();
    });
    let out = Command::new("bash")
        .arg(kit.path().join("install.sh"))
        .arg("--no-deps")
        .arg(format!("--prefix={}", kit.path().join("tree").display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is older than Rust 99.0"), "{err}");
    assert!(err.contains("rustup update"), "{err}");
    assert!(!err.contains("packages are missing"), "{err}");
}

/// Runs a command that must succeed, showing its output when it does not.
fn run_ok(program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn package_status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "jsipd"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package and stops a daemon it started, even when the test fails midway.
struct Installed {
    daemon: Option<std::process::Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        if !package_status().is_empty() {
            let _ = Command::new("dpkg").args(["-P", "jsipd"]).output();
        }
    }
}

/// A key's value in the installed systemd unit.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit:\n{unit}"))
}

/// Polls the management API until it answers (the daemon is starting) or time runs out.
fn wait_for_api(api: std::net::SocketAddr, daemon: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(api).is_err() {
        if let Some(status) = daemon.try_wait().unwrap() {
            panic!("the packaged jsipd exited before its API answered: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{api} did not answer in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `install.sh --deb` makes a package that installs with dpkg, runs as its own user the
/// way its systemd unit says, answers its API, survives `jsipd -s reload`, and leaves
/// its config behind on `dpkg -r` (and nothing on `dpkg -P`).
#[test]
fn the_deb_installs_runs_as_its_own_user_reloads_and_removes_keeping_config() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test installs a .deb with dpkg and starts it as the jsipd user: run it as root"
    );
    let api: std::net::SocketAddr = "127.0.0.1:2539".parse().unwrap();
    assert!(
        std::net::TcpListener::bind(api).is_ok()
            && std::net::TcpListener::bind("0.0.0.0:8080").is_ok(),
        "the packaged jsipd listens on its default ports 2539 and 8080: free them for this test"
    );
    assert!(
        package_status().is_empty() || package_status().contains("not-installed"),
        "a jsipd package is installed already ({}); this test installs and purges its own",
        package_status()
    );

    let out = Command::new("bash")
        .arg(repo_root().join("install.sh"))
        .arg("--deb")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "install.sh --deb failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = text
        .lines()
        .find_map(|l| l.strip_prefix("built "))
        .unwrap_or_else(|| panic!("no 'built' line:\n{text}"))
        .to_string();
    assert!(
        deb.ends_with("_amd64.deb") && deb.contains("/jsipd_"),
        "{deb}"
    );

    let info = Command::new("dpkg-deb")
        .args(["-f", &deb, "Depends"])
        .output()
        .unwrap();
    let depends = String::from_utf8_lossy(&info.stdout);
    for runtime in ["libxkbcommon0", "xkb-data", "libx11-data", "libc6 (>= 2."] {
        assert!(depends.contains(runtime), "Depends: {depends}");
    }
    let listing = Command::new("dpkg-deb")
        .args(["-c", &deb])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for shipped in [
        "./usr/lib/jsipd/bin/jsipd",
        "./usr/lib/jsipd/bin/jsipd-gadget",
        "./usr/lib/jsipd/bin/pcompile",
        "./usr/lib/jsipd/plugins/hid.so",
        "./usr/lib/jsipd/plugins/stream.so",
        "./usr/lib/jsipd/plugins/serial.so",
        "./usr/lib/jsipd/sdk/plugin-api/src/lib.rs",
        "./lib/systemd/system/jsipd.service",
        "./etc/logrotate.d/jsipd",
        "./etc/jsipd/jsipd.ini",
        "./etc/jsipd/hid/hid.ini",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(shipped)),
            "{shipped} is not in the package"
        );
    }
    assert!(
        !listing.contains("jsipd.key"),
        "a package must not ship a private key"
    );

    let mut installed = Installed { daemon: None };
    run_ok("dpkg", &["-i", &deb]);
    assert!(package_status().contains("install ok installed"));
    let rotate = run_ok("logrotate", &["-d", "/etc/logrotate.d/jsipd"]);
    assert!(
        String::from_utf8_lossy(&rotate.stderr).contains("/var/log/jsipd/*.log"),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );
    let key = std::fs::metadata("/etc/jsipd/certs/jsipd.key").unwrap();
    assert_eq!(
        key.permissions().mode() & 0o777,
        0o640,
        "the key is the service's to read"
    );

    // Start it as the unit would: its user and group, ExecStartPre, then ExecStart.
    let unit = std::fs::read_to_string("/lib/systemd/system/jsipd.service").unwrap();
    let user = unit_value(&unit, "User");
    let group = unit_value(&unit, "Group");
    assert_eq!(user, "jsipd");
    let as_service = |command_line: &str| {
        let mut words = command_line.split_whitespace();
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={user}"))
            .arg(format!("--regid={group}"))
            .arg("--init-groups")
            .arg(words.next().unwrap())
            .args(words);
        c
    };
    let check = as_service(unit_value(&unit, "ExecStartPre"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let daemon = installed.daemon.insert(
        as_service(unit_value(&unit, "ExecStart"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_api(api, daemon);
    let pid = daemon.id();
    let stats = jsipd_e2e::http::get(api, "/runtime/v1/stats");
    assert_eq!(stats.status, 200, "{}", stats.body);
    let uid = String::from_utf8(
        Command::new("id")
            .args(["-u", user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let real_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(real_uid, uid.trim(), "the daemon runs as {user}");

    // As that user it loads a shipped plugin (its staging copy goes to /var/lib/jsipd)
    // with its config from /etc/jsipd.
    let r = jsipd_e2e::http::request(
        api,
        "POST",
        "/apim/v1/chatroom.v1?file=chatroom.so",
        &[],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let rooms = jsipd_e2e::http::get(api, "/chatroom/v1/rooms").json();
    assert_eq!(rooms["data"]["max_rooms"], 1000, "{rooms}");
    assert!(std::path::Path::new("/var/lib/jsipd/plugins.state").is_file());

    let reload = Command::new("/usr/bin/jsipd")
        .args(["-s", "reload"])
        .output()
        .unwrap();
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string("/var/log/jsipd/jsipd.log")
        .unwrap()
        .contains("SIGHUP: config reloaded")
    {
        assert!(std::time::Instant::now() < deadline, "no reload in the log");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "it survives the reload"
    );
    assert_eq!(jsipd_e2e::http::get(api, "/runtime/v1/stats").status, 200);
    assert_eq!(jsipd_e2e::http::get(api, "/chatroom/v1/rooms").status, 200);

    let quit = Command::new("/usr/bin/jsipd")
        .args(["-s", "quit"])
        .output()
        .unwrap();
    assert!(
        quit.status.success(),
        "{}",
        String::from_utf8_lossy(&quit.stderr)
    );
    let exited = daemon.wait().unwrap();
    assert!(exited.success(), "graceful stop: {exited}");
    installed.daemon = None;

    // dpkg -r: the programs go, the configuration stays (as Debian does).
    let ini_before = std::fs::read_to_string("/etc/jsipd/jsipd.ini").unwrap();
    run_ok("dpkg", &["-r", "jsipd"]);
    assert!(
        package_status().contains("config-files"),
        "{}",
        package_status()
    );
    for gone in [
        "/usr/lib/jsipd/bin/jsipd",
        "/usr/bin/jsipd",
        "/lib/systemd/system/jsipd.service",
    ] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{gone} is still there"
        );
    }
    assert_eq!(
        std::fs::read_to_string("/etc/jsipd/jsipd.ini").unwrap(),
        ini_before
    );
    assert!(std::path::Path::new("/etc/jsipd/chatroom/chatroom.ini").is_file());
    // dpkg -P: nothing is left.
    run_ok("dpkg", &["-P", "jsipd"]);
    for gone in [
        "/etc/jsipd",
        "/var/lib/jsipd",
        "/var/log/jsipd",
        "/usr/lib/jsipd",
    ] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{gone} is still there after purge"
        );
    }
    assert!(package_status().is_empty() || package_status().contains("not-installed"));
}
