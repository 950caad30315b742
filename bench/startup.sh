#!/usr/bin/env bash
# Start-up time to listening, and idle memory, of an installed (release) jsipd.
#
# Baseline, measured in the same run with the same harness: a minimal Python listener
# (bind + listen on one port), so the ratio shows what jsipd's start-up costs over
# "a process that opens a port". Machines here are shared: trust the ratio over the ms.
#
# Usage: bench/startup.sh [PREFIX]   (default: a fresh ./install.sh into a temp dir)
set -euo pipefail
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${1:-}
if [[ -z $prefix ]]; then
    prefix=$(mktemp -d)/jsipd
    "$here/install.sh" --prefix="$prefix" >/dev/null
fi
api=25391 rtc=28091
work=$(mktemp -d)
mkdir -p "$work/conf" "$work/logs"
printf 'logfile = logs/jsipd.log\n[APIServer]\nlisten = 127.0.0.1:%s\n[RTCServer]\nlisten = 127.0.0.1:%s\nauth = none\n' $api $rtc > "$work/conf/jsipd.ini"
cp -r "$prefix/certs" "$work/"

# Each run: start, spin until the RTC port (bound last) accepts, then kill.
wait_port='until (exec 3<>/dev/tcp/127.0.0.1/'$rtc') 2>/dev/null; do :; done'
jsipd_run="$prefix/bin/jsipd -p $work & p=\$!; $wait_port; kill -9 \$p; wait \$p 2>/dev/null || true; rm -f $work/logs/jsipd.pid"
py=$(command -v /usr/bin/python3 || command -v python3)
py_run="$py -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", $rtc)); s.listen(); time.sleep(60)' & p=\$!; $wait_port; kill -9 \$p; wait \$p 2>/dev/null || true"
hyperfine --shell=bash --warmup 3 --runs 30 --export-json "$work/startup.json" \
    -n "python3 listener (baseline)" "$py_run" -n "jsipd start to listening" "$jsipd_run"
python3 - "$work/startup.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
base, j = r["python3 listener (baseline)"], r["jsipd start to listening"]
print(f"start-up to listening: jsipd {j['mean']*1000:.1f} ms (median {j['median']*1000:.1f}), "
      f"baseline {base['mean']*1000:.1f} ms, ratio {j['mean']/base['mean']:.2f}")
PY

# Idle RSS: after start-up, and after one API request and one RTC refusal.
"$prefix/bin/jsipd" -p "$work" & pid=$!
eval "$wait_port"
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
idle=$(rss)
curl -s "http://127.0.0.1:$api/runtime/v1/stats" >/dev/null
curl -s "http://127.0.0.1:$rtc/rtc" >/dev/null
served=$(rss)
kill -QUIT $pid; wait $pid || true
echo "idle RSS: ${idle} KiB after start-up, ${served} KiB after serving requests"
rm -rf "$work"
