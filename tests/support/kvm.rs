//! A daemon for the KVM plugins on the QEMU test guest, as the console and the NanoKVM
//! facade tests both need it: the people's port with sessions and two accounts, each
//! plugin configured for its own QMP socket of the guest, and their APIs loaded.

use crate::guest::Guest;
use crate::http::request;
use crate::{loopback_config, Daemon, Prefix};

/// The accounts the prefix has: (user, role, password).
pub const ADMIN: (&str, &str, &str) = ("ada", "admin", "admin-password-1");
pub const VIEWER: (&str, &str, &str) = ("vic", "viewer", "viewer-password-1");

/// The four KVM plugins, in the order they are loaded.
pub const PLUGINS: [&str; 4] = ["stream", "hid", "gpio", "storage"];

/// A prefix whose `stream`, `hid`, `gpio` and `storage` drive `g` (and `extra` plugins
/// copied in too), with `auth = session` and the accounts above.
pub fn guest_prefix(g: &Guest, extra: &[&str]) -> Prefix {
    let p = Prefix::with_config(&loopback_config("").replace("auth = none\n", "auth = session\n"));
    for (user, role, password) in [ADMIN, VIEWER] {
        p.add_user(user, role, password);
    }
    for plugin in PLUGINS.iter().chain(extra) {
        p.add_plugin(plugin, &format!("{plugin}.so"));
    }
    let qmp = |name| {
        format!(
            "backend = qemu\n[qemu]\nqmp = {}\n",
            g.plugin_qmp(name).display()
        )
    };
    p.write_plugin_conf("hid", &qmp("hid"));
    p.write_plugin_conf("gpio", &(qmp("gpio") + "nic = nic0\n"));
    p.write_plugin_conf("storage", &(qmp("storage") + "cdrom = cd0\n"));
    p.write_plugin_conf(
        "stream",
        &format!(
            "source = qemu\nfps = 30\n[qemu]\nvnc = {}\n[webrtc]\naddresses = 127.0.0.1\n",
            g.vnc().display()
        ),
    );
    p
}

/// Loads each plugin's API (`/apim/v1/NAME.v1`), or each one's SLP with `slp`.
pub fn load(d: &Daemon, plugins: &[&str], slp: bool) {
    for plugin in plugins {
        let path = if slp {
            format!("/slpm/v1/{plugin}?file={plugin}.so")
        } else {
            format!("/apim/v1/{plugin}.v1?file={plugin}.so")
        };
        let r = request(d.api, "POST", &path, &[], "");
        assert_eq!(r.status, 200, "POST {path}: {}", r.body);
    }
}
