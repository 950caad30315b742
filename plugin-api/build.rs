//! Records the compiler that builds this crate, for `ffi::MESSAGE_LAYOUT`: a plugin and
//! the daemon move a `Message` across the `.so` boundary whole only when both were
//! built by the same compiler, for the same target, from the same `Message`.

use std::process::Command;

fn main() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    // `rustc -vV` names the release, its commit and its LLVM: what decides how a
    // type is laid out. Unknown (the command failed): empty, and no message moves.
    let version = Command::new(rustc)
        .arg("-vV")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=JSIPD_BUILT_BY={version}");
    println!("cargo:rustc-env=JSIPD_BUILT_FOR={target}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
