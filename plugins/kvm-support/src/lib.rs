//! What the KVM plugins (`gpio`, `storage`, later `hid` and `kvm`) share.
//!
//! - [`qmp`]: a blocking client for QEMU's machine protocol, which every QEMU backend
//!   drives. Plugins run on host-owned threads and may block (plugin-api), so a plain
//!   socket with a mutex is all the machinery this needs; no async runtime is linked into
//!   the `.so` files.
//! - [`ini`]: the `conf/<plugin>/<plugin>.ini` reader, with errors that name the file,
//!   the line and the key.
//!
//! This is an `rlib` linked into each plugin; it is not a plugin itself.

pub mod ini;
pub mod qmp;
