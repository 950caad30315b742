//! The QEMU test guest itself: it boots on `cont`, prints on serial, runs the serial
//! shell, and powers off through the ACPI power button.

use std::time::{Duration, Instant};

use jsipd_e2e::guest::{self, Guest, BOOT_TIMEOUT};
use serde_json::json;

#[test]
fn the_guest_boots_runs_commands_and_powers_off_on_the_acpi_button() {
    guest::available().expect("the test guest needs its packages (see test.sh)");
    let mut g = Guest::start(&[]);
    assert_eq!(g.status(), "prelaunch", "the machine starts powered off");
    let started = Instant::now();
    g.qmp().execute("cont", json!({}));
    g.serial().wait_for("jsipd-guest: ready", BOOT_TIMEOUT);
    eprintln!("guest booted in {:?}", started.elapsed());
    g.serial().run("echo sum=$((40+2))");
    g.serial().wait_for("sum=42", Duration::from_secs(20));
    g.qmp().execute("system_powerdown", json!({}));
    g.serial()
        .wait_for("jsipd-guest: acpi power button", Duration::from_secs(30));
    g.wait_status("shutdown", Duration::from_secs(30));
}
