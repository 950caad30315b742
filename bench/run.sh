#!/usr/bin/env bash
# The benchmark suite of issue 5: installs jsipd into a temporary tree (install.sh, so
# the installed binaries and plugins are what is measured), builds a second echo.so
# with pcompile for the hot-reload run, then runs bench/suite.py, which starts the
# installed jsipd and jsip-bench's raw echo server on loopback, measures each figure
# against its baseline in the same run, and writes BENCHMARKS.md.
#
# Usage: bench/run.sh [SECONDS_PER_RUN] [IDLE_CONNECTIONS] [ROUNDS]   (defaults 8, 10000, 3)
# Takes about 6 minutes on 2 cores with the defaults (bench/stream.sh adds one).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${1:-8}
idle=${2:-10000}
rounds=${3:-3}
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/install.sh" --prefix="$work/install" > "$work/install.log" 2>&1 || {
    cat "$work/install.log" >&2
    exit 1
}
# The same plugin, built again with another marker: the "new build" the hot-reload run
# swaps in under the same file name.
mkdir -p "$work/second/plugins" "$work/second/conf"
JSIPD_ECHO_MARKER=second-build "$here/pcompile" --prefix "$work/second" "$here/plugins/echo" >&2
python3 "$here/bench/suite.py" --install "$work/install" --second "$work/second/plugins/echo.so" \
    --secs "$secs" --idle "$idle" --rounds "$rounds" --out "$here/BENCHMARKS.md"
# The stream and serial plugins' figures, appended as sections of their own.
{ echo; "$here/bench/stream.sh" "$secs"; echo; "$here/bench/serial.sh" "$secs"; echo; "$here/bench/people.sh" "$secs"; } >> "$here/BENCHMARKS.md"
