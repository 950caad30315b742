#!/usr/bin/env bash
# Runs the property tests of the JSIP parser and stack (core/src/jsip/fuzz.rs) for a
# fixed time with fresh random seeds, in release mode, and reports how many cases ran.
#
#   bench/fuzz.sh [SECONDS]     (default 600)
#
# Any failure stops the run; proptest prints the minimal failing input and stores its
# seed in core/proptest-regressions/, which later `cargo test` runs replay.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
cases_per_round=20000
cargo test --release -p jsipd --lib --no-run --locked 2>/dev/null
end=$(( $(date +%s) + secs ))
rounds=0
start=$(date +%s)
while [ "$(date +%s)" -lt "$end" ]; do
  PROPTEST_CASES=$cases_per_round cargo test --release -q -p jsipd --lib --locked jsip::fuzz >/tmp/jsipd-fuzz.$$ 2>&1 || {
    cat /tmp/jsipd-fuzz.$$; rm -f /tmp/jsipd-fuzz.$$; echo "fuzz: FAILED after $rounds rounds"; exit 1; }
  rounds=$((rounds + 1))
done
rm -f /tmp/jsipd-fuzz.$$
elapsed=$(( $(date +%s) - start ))
echo "fuzz: $rounds rounds x 3 properties x $cases_per_round cases = $((rounds * 3 * cases_per_round)) cases in ${elapsed}s, no failure"
