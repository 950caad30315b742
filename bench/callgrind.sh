#!/usr/bin/env bash
# Instructions per MESSAGE round trip, counted by valgrind's callgrind (issue 19): a
# figure that does not move with the machine's load, unlike the timed suite, which it
# explains rather than replaces. Three servers, the same client (jsip-bench, not under
# valgrind), one socket, one request in flight:
#   raw echo      jsip-bench echo-server: tokio-tungstenite, the frame straight back
#                 (4 KiB read buffer, the timed suite's baseline; and again with
#                 jsipd's 512 bytes, since tungstenite zero-fills it before each read)
#   compiled-in   jsipd's echo SLP built into the daemon (`builtin_slps = echo`)
#   echo.so       the echo plugin loaded from plugins/echo.so
# Each server runs twice, for SMALL and for BIG round trips; the difference of its total
# instructions divided by BIG-SMALL is the cost of one round trip, with start-up,
# connecting and stopping cancelled out. Prints a Markdown section, with the top
# functions by inclusive cost on echo.so's path.
# Usage: bench/callgrind.sh [SMALL] [BIG]   (defaults 1000, 6000; about 15 s after the build)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
small=${1:-1000}
big=${2:-6000}
source "$here/dist/prereqs.sh"
command -v valgrind >/dev/null || jsipd_ensure_packages bench/callgrind.sh test
cargo build --release --locked -p jsipd -p jsipd-echo -p jsip-bench --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release
work=$(mktemp -d)
# CALLGRIND_KEEP=1 keeps the callgrind files (and says where) for callgrind_annotate.
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; if [[ -n ${CALLGRIND_KEEP:-} ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi' EXIT
mkdir -p "$work/conf" "$work/logs" "$work/plugins"
install -m 0644 "$bin/libecho.so" "$work/plugins/echo.so"
api=127.0.0.1:28594 rtc=127.0.0.1:28595 raw=127.0.0.1:28596
cat > "$work/conf/jsipd.ini" <<INI
logfile = logs/jsipd.log
loglevel = warn
[APIServer]
listen = $api
accesslog = off
[RTCServer]
listen = $rtc
auth = none
[JSIPStack]
builtin_slps = echo
INI
vg=(valgrind --tool=callgrind --quiet --dump-instr=no --compress-strings=no)

# wait_port HOST:PORT: until something listens there.
wait_port() { until (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; do sleep 0.1; done; }

# run NAME N: instructions of one server process that answered N round trips.
run() {
    local name=$1 n=$2 out="$work/$1-$2.out" url uri=bench@echo
    case $name in
        raw|raw512)
            local buffer=4096
            [[ $name == raw512 ]] && buffer=512
            "${vg[@]}" --callgrind-out-file="$out" "$bin/jsip-bench" echo-server --listen "$raw" \
                --read-buffer "$buffer" >/dev/null &
            url="ws://$raw/" ;;
        *)
            # A fresh start each time: no plugin restored from the last run's state.
            rm -f "$work/conf/.plugins"
            "${vg[@]}" --callgrind-out-file="$out" "$bin/jsipd" -p "$work" &
            url="ws://$rtc/rtc" ;;
    esac
    local server=$!
    if [[ $name == raw* ]]; then wait_port "$raw"; else wait_port "$rtc"; wait_port "$api"; fi
    if [[ $name == so ]]; then
        curl -sf -XPOST "http://$api/slpm/v1/pecho?file=echo.so" >/dev/null
        uri=bench@pecho
    fi
    "$bin/jsip-bench" message --url "$url" --connections 1 --messages "$n" --duration 600 \
        --uri "$uri" --json > "$work/$name-$n.json"
    # TERM: both exit at once (jsipd by its own handler), and callgrind writes its file.
    kill -TERM "$server"
    wait "$server" || true
    local done
    done=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['completed'])" "$work/$name-$n.json")
    echo "$done $(sed -n 's/^summary: //p' "$out")" > "$work/$name-$n.result"
}

declare -A per
for name in raw raw512 builtin so; do
    run "$name" "$small"
    run "$name" "$big"
    read -r n1 ir1 < "$work/$name-$small.result"
    read -r n2 ir2 < "$work/$name-$big.result"
    per[$name]=$(( (ir2 - ir1) / (n2 - n1) ))
    echo "$name: $n1 round trips $ir1 Ir, $n2 round trips $ir2 Ir -> ${per[$name]} per round trip" >&2
done

echo "## Instructions per round trip (\`bench/callgrind.sh $small $big\`)"
echo
echo "valgrind --tool=callgrind on the server only; (Ir at $big round trips - Ir at $small) / $((big - small)); one socket, one MESSAGE in flight."
echo
echo "| server | instructions per round trip | vs raw echo | vs compiled-in |"
echo "|---|---|---|---|"
python3 - "${per[raw]}" "${per[builtin]}" "${per[so]}" "${per[raw512]}" <<'PY'
import sys
raw, builtin, so, raw512 = (int(x) for x in sys.argv[1:5])
print(f"| raw echo (jsip-bench echo-server) | {raw:,} | 1.00 | |")
print(f"| raw echo, jsipd's 512-byte read buffer (`--read-buffer 512`) | {raw512:,} | {raw512 / raw:.2f} | |")
print(f"| compiled-in echo SLP | {builtin:,} | {builtin / raw:.2f} | 1.00 |")
print(f"| echo.so | {so:,} | {so / raw:.2f} | {so / builtin:.2f} |")
PY
echo
echo "Where echo.so's round trip goes: inclusive instructions per round trip, from the same"
echo "difference of the two runs (so loading the plugin cancels out), jsipd's and the plugin's"
echo "own functions (the runtime's frames left out), echo.so against the compiled-in echo:"
echo
echo '```'
python3 - "$work" "$small" "$big" <<'PY'
import re, subprocess, sys
work, small, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def costs(f):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=yes", f],
                         capture_output=True, text=True).stdout
    d = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+(?:\S+:)?(\S.*?)(?: \[(.*)\])?$", line)
        # One line per function and object file (callgrind_annotate also prints
        # call-edge lines, "=>", and lines without the object; those are not counted).
        if m and m.group(3) and not m.group(2).startswith("=>"):
            obj = m.group(3).rsplit("/", 1)[-1].replace("echo.1.so", "echo.so")
            key = f"{m.group(2)} [{obj}]"
            d[key] = d.get(key, 0) + int(m.group(1).replace(",", ""))
    return d

def per_trip(name):
    a, b = costs(f"{work}/{name}-{small}.out"), costs(f"{work}/{name}-{big}.out")
    return {k: (b.get(k, 0) - a.get(k, 0)) / (big - small) for k in set(a) | set(b)}

so, builtin = per_trip("so"), per_trip("builtin")
keep = re.compile(r"jsipd|echo|plugin_api|Message|mi_|malloc|free|memcpy|serde")
# The runtime's and the runner's generic frames (polls, iterators) say nothing of the path.
skip = re.compile(r"tokio::runtime|thread_start|begin_short_backtrace|call_once|PROGRAM|start_thread"
                  r"|^(poll|run|set|run_task|\{\{closure\}\})('\d+)? \[|Future>::poll|from_iter|FlatMap")
rows = sorted(((v, k) for k, v in so.items() if keep.search(k) and not skip.search(k)), reverse=True)
print(f"{'echo.so':>9} {'built-in':>9}  function")
for v, k in rows[:30]:
    print(f"{v:9.0f} {builtin.get(k, 0):9.0f}  {k[:110]}")
PY
echo '```'
