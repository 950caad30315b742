#!/usr/bin/env bash
# Plugin-system figures of issue 4, each against a baseline measured in the same run:
#   1. the cost of the .so boundary: MESSAGE round trips through the compiled-in `echo`
#      SLP against the same logic as a plugin (`plugins/echo`, loaded as `pecho`), same
#      client, same shapes (1x1 for latency, 16x1 for throughput);
#   2. time to load a plugin: POST /slpm/v1/NAME?file=echo.so, each a new generation
#      that replaces (and unloads) the previous one, against a GET of the listing on the
#      same port (the HTTP round trip alone).
# Machines here are shared and noisy: trust the ratios over the absolute numbers.
#
# Usage: bench/plugins.sh [SECONDS_PER_RUN] [LOADS]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$here/bench/lib.sh"
secs=${1:-10}
loads=${2:-100}
cargo build --release --locked -p jsipd -p jsip-bench -p jsipd-echo --manifest-path "$here/Cargo.toml" >&2
bin=$here/target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/conf" "$work/logs" "$work/plugins"
cp "$bin/libecho.so" "$work/plugins/echo.so"
cp "$bin/libecho.so" "$work/plugins/echo-b.so"
chmod 0644 "$work"/plugins/*.so
cat > "$work/conf/jsipd.ini" <<INI
loglevel = info
logfile = logs/jsipd.log
[APIServer]
listen = 127.0.0.1:28290
accesslog = off
[RTCServer]
auth = none
listen = 127.0.0.1:28291
[JSIPStack]
builtin_slps = echo
INI
"$bin/jsipd" -p "$work" & jsipd=$!
until (exec 3<>/dev/tcp/127.0.0.1/28291) 2>/dev/null; do :; done
api=http://127.0.0.1:28290
curl -sf -XPOST "$api/slpm/v1/pecho?file=echo.so" >/dev/null

run() { # name uri conns
    local t0 t1 out
    t0=$(cpu_ticks $jsipd)
    out=$("$bin/jsip-bench" message --url ws://127.0.0.1:28291/rtc --uri "$2" --connections "$3" --depth 1 --duration "$secs" --warmup 2 --json)
    t1=$(cpu_ticks $jsipd)
    summarize "$1" "$out" "$t0" "$t1" "$secs"
}
results=()
for conns in 1 16; do
    results+=("$(run "compiled-in echo ${conns}x1" bench@echo "$conns")")
    results+=("$(run "plugin echo ${conns}x1" bench@pecho "$conns")")
done

# Load time: each POST opens a new image (the files alternate, so identical bytes are
# not shared) and retires the previous generation.
curl_ms() { curl -s -o /dev/null -w '%{time_total}\n' "$@"; }
load_times=$work/load.txt; get_times=$work/get.txt
for i in $(seq "$loads"); do
    f=echo.so; ((i % 2)) && f=echo-b.so
    curl_ms -XPOST "$api/slpm/v1/pecho?file=$f" >> "$load_times"
    curl_ms "$api/slpm/v1/slps" >> "$get_times"
done
unmapped=$(grep -c "its image left memory" "$work/logs/jsipd.log" || true)
results+=("$(python3 - "$load_times" "$get_times" "$unmapped" <<'PY'
import json, statistics, sys
load = sorted(float(x) * 1000 for x in open(sys.argv[1]))
get = sorted(float(x) * 1000 for x in open(sys.argv[2]))
print(json.dumps({"name": "load", "loads": len(load), "load_median_ms": statistics.median(load),
                  "load_p90_ms": load[int(len(load) * 0.9) - 1], "get_median_ms": statistics.median(get),
                  "unmapped_logged": int(sys.argv[3])}))
PY
)")

printf '%s\n' "${results[@]}" > "$work/results.jsonl"
python3 - "$work/results.jsonl" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
by = {x["name"]: x for x in r}
for x in r:
    print(json.dumps(x))
for c in (1, 16):
    a, b = by[f"compiled-in echo {c}x1"], by[f"plugin echo {c}x1"]
    print(f"{c}x1: plugin/compiled-in throughput {b['throughput'] / a['throughput']:.3f}, "
          f"p50 {a['p50_ms']:.3f} -> {b['p50_ms']:.3f} ms (+{(b['p50_ms'] - a['p50_ms']) * 1000:.1f} us), "
          f"server CPU {a['server_cpu_us']:.1f} -> {b['server_cpu_us']:.1f} us per round trip "
          f"(+{b['server_cpu_us'] - a['server_cpu_us']:.1f} us)")
l = by["load"]
print(f"load: median {l['load_median_ms']:.2f} ms (p90 {l['load_p90_ms']:.2f}) per load+replace, "
      f"vs {l['get_median_ms']:.2f} ms for a GET on the same port; {l['unmapped_logged']} old images left memory")
PY
