//! `GET /api/vm/info`: facts of this host, read where the system keeps them. Nothing is
//! made up: a fact the host does not have is an empty string.

use jsipd_plugin_api::serde_json::{json, Value};

/// NanoKVM's `vm/info` data, from this host.
pub fn vm_info() -> Value {
    let ips = addresses();
    let ip = ips
        .iter()
        .find(|(_, a, v4)| *v4 && !a.is_empty())
        .map(|(_, a, _)| a.clone())
        .unwrap_or_default();
    json!({
        "ip": ip,
        "ips": ips.iter().map(|(name, addr, v4)| json!({
            "name": name, "addr": addr, "version": if *v4 { "IPv4" } else { "IPv6" },
        })).collect::<Vec<_>>(),
        "mdns": mdns_name(),
        "image": os_name(),
        "firmware": format!("jsipd {}", env!("CARGO_PKG_VERSION")),
        "application": env!("CARGO_PKG_VERSION"),
        "deviceKey": read_trimmed("/etc/machine-id"),
    })
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `PRETTY_NAME` of `/etc/os-release`: the system image this host runs.
fn os_name() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default()
}

/// `HOSTNAME.local` when an mDNS responder (Avahi) runs here, else "".
fn mdns_name() -> String {
    let avahi = std::path::Path::new("/run/avahi-daemon/pid").exists();
    let host = read_trimmed("/proc/sys/kernel/hostname");
    if avahi && !host.is_empty() {
        format!("{host}.local")
    } else {
        String::new()
    }
}

/// The host's addresses other than loopback: (interface, address, is IPv4).
fn addresses() -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return out;
    }
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs made.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name of the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `ifa_addr` points to a sockaddr whose family says its type.
        let addr = unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*entry.ifa_addr.cast::<libc::sockaddr_in>();
                    Some(std::net::IpAddr::from(
                        u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                libc::AF_INET6 => {
                    let a = &*entry.ifa_addr.cast::<libc::sockaddr_in6>();
                    Some(std::net::IpAddr::from(a.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        if let Some(a) = addr.filter(|a| !a.is_loopback()) {
            out.push((name, a.to_string(), a.is_ipv4()));
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(list) };
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_facts_are_this_hosts() {
        let v = super::vm_info();
        assert_eq!(
            v["deviceKey"].as_str().unwrap(),
            std::fs::read_to_string("/etc/machine-id")
                .unwrap_or_default()
                .trim()
        );
        assert!(v["firmware"].as_str().unwrap().starts_with("jsipd "));
        for ip in v["ips"].as_array().unwrap() {
            let addr: std::net::IpAddr = ip["addr"].as_str().unwrap().parse().unwrap();
            assert!(!addr.is_loopback());
        }
    }
}
