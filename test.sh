#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Rust: installs what the tests
# need, then runs format and lint checks and every test (unit and end-to-end).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Every Debian package the build, the runtime and the tests need, from the one list in
# dist/debian-packages (install.sh reads the same list), installed with apt-get when
# missing (with sudo when not root).
source dist/prereqs.sh
jsipd_ensure_packages test.sh build runtime test
jsipd_check_rust test.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The plugin SDK's documentation, which plugin developers read: no broken links.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked -p jsipd-plugin-api
# The console page's own logic (JSIP client, reconnect, key and pointer mapping), offline.
(cd core/src/web/console && node --test test/*.test.js)
cargo test --workspace --locked
