#!/usr/bin/env bash
# The people's port's figures (issue 22), each against a baseline of the same run,
# printed as a Markdown section (bench/run.sh appends it to BENCHMARKS.md):
#   1. a sign-in: POST /auth/login (argon2id verification included) one after another,
#      against GET /auth/me with the session (the same HTTP exchange without a hash);
#   2. the session check per request: GET /echo/v1/x on the people's port with the
#      session cookie (cookie lookup, session and account check, caller handed to the
#      plugin, the plugin's role check) against the same route of the same echo.so on
#      the API port, with wrk, in interleaved rounds.
# Usage: bench/people.sh [SECONDS_PER_RUN] [ROUNDS]   (defaults 5, 3)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${1:-5}
rounds=${2:-3}
source "$here/dist/prereqs.sh"
command -v wrk >/dev/null || jsipd_ensure_packages bench/people.sh test
cargo build --release --locked -p jsipd -p jsipd-echo --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/conf" "$work/logs" "$work/plugins"
install -m 0644 "$bin/libecho.so" "$work/plugins/echo.so"
cat > "$work/conf/jsipd.ini" <<INI
logfile = logs/jsipd.log
[APIServer]
listen = 127.0.0.1:28394
accesslog = off
[RTCServer]
listen = 127.0.0.1:28395
INI
api=127.0.0.1:28394 people=127.0.0.1:28395
password=bench-password-1
echo "$password" | "$bin/jsipd" -p "$work" user add bench --role viewer --password-stdin >/dev/null 2>&1
"$bin/jsipd" -p "$work" & jsipd=$!
until (exec 3<>/dev/tcp/127.0.0.1/28394) 2>/dev/null; do sleep 0.05; done
curl -sf -XPOST "http://$api/apim/v1/echo.v1?file=echo.so" >/dev/null

login() {
    curl -s -o /dev/null -D - -H 'content-type: application/json' \
        -d "{\"username\":\"bench\",\"password\":\"$password\"}" "http://$people/auth/login"
}
cookie=$(login | sed -n 's/^set-cookie: \([^;]*\);.*/\1/ip')
[[ -n $cookie ]] || { echo "bench/people.sh: no session" >&2; exit 1; }

# 1. Sign-ins, one at a time, against /auth/me.
n=20
ms() { local t0 t1; t0=$(date +%s%N); "$@"; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }
logins_us=$(ms bash -c "for i in \$(seq $n); do curl -s -o /dev/null -H 'content-type: application/json' -d '{\"username\":\"bench\",\"password\":\"$password\"}' http://$people/auth/login; done")
me_us=$(ms bash -c "for i in \$(seq $n); do curl -s -o /dev/null -H 'cookie: $cookie' http://$people/auth/me; done")

# 2. The same plugin route on both ports, interleaved rounds.
rate() { wrk -t1 -c8 -d"${secs}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
api_rates=() people_rates=()
for r in $(seq "$rounds"); do
    api_rates+=("$(rate "http://$api/echo/v1/x")")
    people_rates+=("$(rate -H "cookie: $cookie" "http://$people/echo/v1/x")")
done
# 3. The session check alone: GET /auth/me with the cookie (found, checked, answered
#    200) against without one (401 at once), same port, same answer size class.
me_rates=() anon_rates=()
for r in $(seq "$rounds"); do
    me_rates+=("$(rate -H "cookie: $cookie" "http://$people/auth/me")")
    anon_rates+=("$(rate "http://$people/auth/me")")
done
# Check that the session route really answered 200 (wrk counts any answer).
status=$(curl -s -o /dev/null -w '%{http_code}' -H "cookie: $cookie" "http://$people/echo/v1/x")
[[ $status == 200 ]] || { echo "bench/people.sh: the people's route answered $status" >&2; exit 1; }

python3 - "$n" "$logins_us" "$me_us" "${api_rates[*]}" "${people_rates[*]}" "${me_rates[*]}" "${anon_rates[*]}" <<'PY'
import sys
n, logins, me = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rates = lambda i: [float(x) for x in sys.argv[i].split()]
api, people, signed, anon = rates(4), rates(5), rates(6), rates(7)

def median_pair(xs, base):
    ratios = [x / b for x, b in zip(xs, base)]
    i = sorted(range(len(ratios)), key=lambda k: ratios[k])[len(ratios) // 2]
    return xs[i], base[i], ratios

p, a, ratios = median_pair(people, api)
s, u, me_ratios = median_pair(signed, anon)
print("## The people's port (`bench/people.sh`)")
print()
print("| figure | people's port | baseline, same run | |")
print("|---|---|---|---|")
print(f"| sign-in (`POST /auth/login`, argon2id m=19456 KiB, t=2, p=1), one after another | {logins / n / 1000:.1f} ms | `GET /auth/me` {me / n / 1000:.1f} ms | hash ≈ {(logins - me) / n / 1000:.1f} ms |")
print(f"| `GET /echo/v1/x` with the session cookie, wrk 1 thread 8 connections (median of {len(ratios)} rounds) | {p:,.0f} req/s | API port {a:,.0f} req/s | {p / a:.2f} |")
print(f"| the same, per request | {1e6 / p:.1f} µs | {1e6 / a:.1f} µs | {1e6 / p - 1e6 / a:+.1f} µs |")
print(f"| `GET /auth/me` with the session (cookie, session and account checked) | {s:,.0f} req/s | without a cookie (401) {u:,.0f} req/s | {1e6 / s - 1e6 / u:+.1f} µs per request |")
print()
print("Rounds (people/API): " + ", ".join(f"{r:.2f}" for r in ratios)
      + "; (with/without session): " + ", ".join(f"{r:.2f}" for r in me_ratios) + ".")
print("A plugin API request runs on a thread of its own (about 100 µs here), so the session")
print("check is lost in its noise; the /auth/me pair isolates it.")
PY
