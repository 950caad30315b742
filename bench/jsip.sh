#!/usr/bin/env bash
# JSIP figures of issue 3, each against a baseline measured in the same run:
#   1. MESSAGE round trips/s through the compiled-in `echo` SLP, against jsip-bench's raw
#      tokio-tungstenite echo server, same client, same connection count;
#   2. server memory per idle connection with N connections (default 10,000), for jsipd
#      and for the raw echo server.
# Machines here are shared and noisy: trust the ratios over the absolute numbers.
#
# Usage: bench/jsip.sh [SECONDS_PER_RUN] [IDLE_CONNECTIONS]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$here/bench/lib.sh"
secs=${1:-10}
idle=${2:-10000}
ulimit -n "$(ulimit -Hn)"
cargo build --release --locked -p jsipd -p jsip-bench --manifest-path "$here/Cargo.toml" >&2
bin=$here/target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/conf" "$work/logs"
cat > "$work/conf/jsipd.ini" <<INI
loglevel = warn
logfile = logs/jsipd.log
[APIServer]
listen = 127.0.0.1:0
accesslog = off
[RTCServer]
auth = none
listen = 127.0.0.1:28191
[JSIPStack]
builtin_slps = echo
INI
"$bin/jsipd" -p "$work" & jsipd=$!
"$bin/jsip-bench" echo-server --listen 127.0.0.1:28192 > "$work/echo.out" & echo_pid=$!
until (exec 3<>/dev/tcp/127.0.0.1/28191) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/28192) 2>/dev/null; do :; done


run() { # name pid url conns depth
    local t0 t1 out
    t0=$(cpu_ticks "$2")
    out=$("$bin/jsip-bench" message --url "$3" --connections "$4" --depth "$5" --duration "$secs" --warmup 2 --json)
    t1=$(cpu_ticks "$2")
    summarize "$1" "$out" "$t0" "$t1" "$secs"
}

results=()
for shape in "16 1" "64 4"; do
    set -- $shape
    results+=("$(run "raw echo ${1}x$2" $echo_pid ws://127.0.0.1:28192/ "$1" "$2")")
    results+=("$(run "jsipd echo SLP ${1}x$2" $jsipd ws://127.0.0.1:28191/rtc "$1" "$2")")
done

idle_run() { # name pid url
    local before after
    before=$(rss_kib "$2")
    "$bin/jsip-bench" idle --url "$3" --connections "$idle" --duration 0 > "$work/idle.out" & local c=$!
    until grep -q '"open"' "$work/idle.out" 2>/dev/null; do
        kill -0 $c 2>/dev/null || { echo "idle client failed" >&2; cat "$work/idle.out" >&2; exit 1; }
        sleep 0.2
    done
    after=$(rss_kib "$2")
    kill $c; wait $c 2>/dev/null || true
    python3 -c "import json,sys; print(json.dumps({'name': sys.argv[1], 'connections': int(sys.argv[2]), 'rss_before_kib': int(sys.argv[3]), 'rss_after_kib': int(sys.argv[4]), 'kib_per_connection': (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[2])}))" "$1" "$idle" "$before" "$after"
}
results+=("$(idle_run "raw echo idle" $echo_pid ws://127.0.0.1:28192/)")
results+=("$(idle_run "jsipd idle" $jsipd ws://127.0.0.1:28191/rtc)")

printf '%s\n' "${results[@]}" > "$work/results.jsonl"
python3 - "$work/results.jsonl" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
by = {x["name"]: x for x in r}
for x in r:
    print(json.dumps(x))
for shape in ("16x1", "64x4"):
    raw, j = by["raw echo " + shape], by["jsipd echo SLP " + shape]
    print("MESSAGE %s: jsipd %.0f/s vs raw echo %.0f/s = %.2f; server CPU %.1f us vs %.1f us per round trip; p99 %.2f ms vs %.2f ms"
          % (shape, j["throughput"], raw["throughput"], j["throughput"] / raw["throughput"],
             j["server_cpu_us"], raw["server_cpu_us"], j["p99_ms"], raw["p99_ms"]))
a, b = by["jsipd idle"], by["raw echo idle"]
print("idle %d: jsipd %.2f KiB/connection vs raw echo %.2f KiB/connection"
      % (a["connections"], a["kib_per_connection"], b["kib_per_connection"]))
PY
