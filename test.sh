#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Rust: installs what the tests
# need, then runs format and lint checks and every test (unit and end-to-end).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Debian packages the end-to-end tests call: logrotate (log rotation test), curl (TLS
# test), and the QEMU test guest of the KVM plugins: qemu-system-x86, a kernel
# (linux-image-amd64), busybox-static for its initramfs, xorriso for the ISO images.
# The hid plugin links libxkbcommon (libxkbcommon-dev) and reads the XKB layouts
# (xkb-data) and the compose table (libx11-data); the guest's German console keymap is
# made with ckbcomp (console-setup) and loadkeys (kbd).
packages=(logrotate curl qemu-system-x86 linux-image-amd64 busybox-static xorriso
    libxkbcommon-dev xkb-data libx11-data console-setup kbd)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
