#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Rust: installs what the tests
# need, then runs format and lint checks and every test (unit and end-to-end).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Debian packages the end-to-end tests call: logrotate (log rotation test) and curl
# (TLS test).
packages=(logrotate curl)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
