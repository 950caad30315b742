#!/usr/bin/env bash
# The serial plugin's figures (issue 17), each against a baseline measured in the same
# run, printed as a Markdown section (bench/run.sh appends it to BENCHMARKS.md):
#   1. echo latency: a keystroke sent as an INFO until its echo comes back in an INFO,
#      through a backend that echoes at once (cat on a pty, whose line discipline
#      echoes), against a MESSAGE round trip to the compiled-in echo SLP of the same
#      daemon (the JSIP path alone);
#   2. throughput to 1 and to 10 clients from a backend that writes text at a steady
#      2 MiB/s (about 180 times what a 115200-baud UART carries), against that rate:
#      what each client receives per second, and the bytes it was told it lost.
# Usage: bench/serial.sh [SECONDS_PER_RUN]   (default 5)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${1:-5}
cargo build --release --locked -p jsipd -p jsipd-serial --manifest-path "$here/Cargo.toml" >&2
cargo build --release --locked -p jsipd-e2e --bin serial-bench --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/conf/serial" "$work/logs" "$work/plugins"
install -m 0644 "$bin/libserial.so" "$work/plugins/serial.so"
cat > "$work/conf/jsipd.ini" <<INI
logfile = logs/jsipd.log
[APIServer]
listen = 127.0.0.1:28294
accesslog = off
[RTCServer]
auth = none
listen = 127.0.0.1:28295
[JSIPStack]
builtin_slps = echo
INI
ini() { printf 'backend = command\n[command]\nrun = %s\n' "$1" > "$work/conf/serial/serial.ini"; }
"$bin/jsipd" -p "$work" & jsipd=$!
until (exec 3<>/dev/tcp/127.0.0.1/28294) 2>/dev/null; do sleep 0.05; done
api=127.0.0.1:28294 rtc=127.0.0.1:28295

ini /bin/cat
curl -sf -XPOST "http://$api/slpm/v1/serial?file=serial.so" >/dev/null
curl -sf -XPOST "http://$api/apim/v1/serial.v1?file=serial.so" >/dev/null
echo=$("$bin/serial-bench" echo "$rtc" 300)

# The other backend, switched live with SIGHUP: a steady 2 MiB/s of text.
rate=$((2 * 1024 * 1024))
cat > "$work/pace.py" <<'PACE'
import sys, time
rate = int(sys.argv[1])
line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
block = line * (rate // 32 // len(line))
start = time.time()
for n in range(1 << 30):
    sys.stdout.buffer.write(block)
    sys.stdout.flush()
    time.sleep(max(0.0, start + (n + 1) / 32 - time.time()))
PACE
ini "/usr/bin/python3 $work/pace.py $rate"
kill -HUP $jsipd
until curl -sf "http://$api/serial/v1/status" | grep -q 'pace.py'; do sleep 0.1; done
one=$("$bin/serial-bench" fanout "$rtc" 1 "$secs")
ten=$("$bin/serial-bench" fanout "$rtc" 10 "$secs")
src=$((rate / 1024))

python3 - "$echo" "$one" "$ten" "$src" "$secs" <<'PY'
import json, sys
echo, one, ten = (json.loads(a) for a in sys.argv[1:4])
src, secs = int(sys.argv[4]), sys.argv[5]
print("## serial (bench/serial.sh)\n")
print(f"`bench/serial.sh {secs}`: the plugin's `command` backend on a pty; JSIP clients over "
      "WebSocket on loopback; each figure beside its baseline from the same run.\n")
print("| figure | measured | baseline | ratio |")
print("|---|---|---|---|")
print(f"| keystroke → echo at the client, p50 / p99 ({echo['keystrokes']} keys) | {echo['echo_p50_ms']} / {echo['echo_p99_ms']} ms "
      f"| MESSAGE to the compiled-in echo: {echo['jsip_echo_p50_ms']} / {echo['jsip_echo_p99_ms']} ms | {echo['echo_p50_ms']/echo['jsip_echo_p50_ms']:.1f} (p50) |")
print(f"| output to 1 client | {one['total_kib_s']} KiB/s, lost {one['lost_bytes']} B | the source writes {src} KiB/s | {one['total_kib_s']/src:.2f} |")
print(f"| output to 10 clients | {ten['per_client_min_kib_s']} KiB/s each at least, {ten['total_kib_s']} KiB/s in all, lost {ten['lost_bytes']} B | the source writes {src} KiB/s | {ten['per_client_min_kib_s']/src:.2f} (each) |")
PY
