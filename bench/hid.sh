#!/usr/bin/env bash
# hid figures of issue 7, each against a baseline measured in the same run:
#   - JSIP round trips that type a key: a MESSAGE with Content-Type hid and Body
#     [KeyA down, KeyA up] to the `hid` plugin, whose 200 is sent after both boot
#     keyboard reports were written to the gadget device, against the same MESSAGE
#     round trip through the compiled-in `echo` SLP (no device). 1x1 closed loop for
#     latency, an open loop at a fixed rate, and 16x1 for throughput;
#   - the plugin's own latency from an input's arrival at the plugin to its report being
#     written (GET /hid/v1/stats, over the last 8192 reports).
# The gadget devices are FIFOs drained by `cat`, standing in for /dev/hidg0..2 (this
# machine has no USB device controller); a real f_hid write also waits for the host's
# poll (1 ms or less at high speed), which FIFOs do not.
#
# Usage: bench/hid.sh [SECONDS_PER_RUN] [RATE]   (defaults 8 and 2000)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$here/bench/lib.sh"
secs=${1:-8}
rate=${2:-2000}
cargo build --release --locked -p jsipd -p jsip-bench -p jsipd-hid --manifest-path "$here/Cargo.toml" >&2
bin=$here/target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/conf/hid" "$work/logs" "$work/plugins" "$work/dev"
cp "$bin/libhid.so" "$work/plugins/hid.so"
chmod 0644 "$work"/plugins/*.so
for n in 0 1 2; do
    mkfifo "$work/dev/hidg$n"
    cat "$work/dev/hidg$n" > /dev/null &
    exec {keep}>"$work/dev/hidg$n" # a writer of our own, so cat never sees end-of-file
done
mkfifo "$work/dev/leds" # the host's LED reports (none here); hidg0 itself on a real gadget
cat > "$work/conf/hid/hid.ini" <<INI
backend = gadget
[gadget]
leds = $work/dev/leds
keyboard = $work/dev/hidg0
mouse = $work/dev/hidg1
tablet = $work/dev/hidg2
INI
cat > "$work/conf/jsipd.ini" <<INI
loglevel = info
logfile = logs/jsipd.log
[APIServer]
listen = 127.0.0.1:28292
accesslog = off
[RTCServer]
auth = none
listen = 127.0.0.1:28293
[JSIPStack]
builtin_slps = echo
INI
"$bin/jsipd" -p "$work" & jsipd=$!
until (exec 3<>/dev/tcp/127.0.0.1/28293) 2>/dev/null; do :; done
api=http://127.0.0.1:28292
curl -sf -XPOST "$api/slpm/v1/hid?file=hid.so" >/dev/null
curl -sf -XPOST "$api/apim/v1/hid.v1?file=hid.so" >/dev/null

keystroke='[{"key":"KeyA","down":true},{"key":"KeyA","down":false}]'
run() { # name uri conns [extra jsip-bench options...]
    local name=$1 uri=$2 conns=$3 t0 t1 out
    shift 3
    t0=$(cpu_ticks $jsipd)
    out=$("$bin/jsip-bench" message --url ws://127.0.0.1:28293/rtc --uri "$uri" --connections "$conns" \
        --duration "$secs" --warmup 2 --json "$@")
    t1=$(cpu_ticks $jsipd)
    summarize "$name" "$out" "$t0" "$t1" "$secs"
}
results=()
results+=("$(run "echo 1x1" bench@echo 1)")
results+=("$(run "hid 1x1" bench@hid 1 --content-type hid --body "$keystroke")")
results+=("$(run "echo ${rate}/s" bench@echo 16 --rate "$rate")")
results+=("$(run "hid ${rate}/s" bench@hid 16 --rate "$rate" --content-type hid --body "$keystroke")")
results+=("$(run "echo 16x1" bench@echo 16)")
results+=("$(run "hid 16x1" bench@hid 16 --content-type hid --body "$keystroke")")
results+=("$(curl -sf "$api/hid/v1/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(json.dumps({"name":"plugin","latency_us":d["latency_us"],"keyboard_reports":d["keyboard_reports"],"failures":d["failures"]}))')")

printf '%s\n' "${results[@]}" > "$work/results.jsonl"
python3 - "$work/results.jsonl" "$rate" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
by = {x["name"]: x for x in r}
for x in r:
    print(json.dumps(x))
for run in ("1x1", f"{sys.argv[2]}/s", "16x1"):
    a, b = by[f"echo {run}"], by[f"hid {run}"]
    print(f"{run}: hid/echo throughput {b['throughput'] / a['throughput']:.3f}, "
          f"p50 {a['p50_ms']:.3f} -> {b['p50_ms']:.3f} ms, p99 {a['p99_ms']:.3f} -> {b['p99_ms']:.3f} ms, "
          f"server CPU {a['server_cpu_us']:.1f} -> {b['server_cpu_us']:.1f} us per round trip, "
          f"errors {b['errors']['total']}")
p = by["plugin"]
l = p["latency_us"]
print(f"in the plugin, input arrival -> report written: p50 {l['p50']} us, p99 {l['p99']} us, "
      f"max {l['max']} us over the last {l['samples']} reports ({p['keyboard_reports']} written, {p['failures']} failures)")
PY
