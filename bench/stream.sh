#!/usr/bin/env bash
# The stream plugin's figures (issue 20), each against a baseline measured in the same
# run, printed as a Markdown section (bench/run.sh appends it to BENCHMARKS.md):
#   1. JPEG encode time per frame at 720p and 1080p: the plugin's encoder against
#      libjpeg-turbo called directly on the same frames with the same settings (the limit);
#   2. MJPEG at 1080p30 with 1 and with 10 viewers: frames/s each viewer gets, and the
#      daemon's CPU (goal: 10 viewers cost less than 1.3x one viewer);
#   3. the first frame's delay after a viewer connects (the capture starts for it);
#   4. the daemon's CPU with no viewer (the capture stopped), against a listening daemon
#      before the plugin ever captured;
#   5. frames/s read from a QEMU guest's VNC display whose console scrolls without pause;
#   6. WebRTC: VP8 and H.264 encode time against the codecs alone, and bench/webrtc.py:
#      glass to glass in Chromium at 720p30 and 1080p30, CPU for 1 and 3 viewers.
# Machines here are shared and noisy: trust the ratios over the absolute numbers.
#
# Usage: bench/stream.sh [SECONDS_PER_RUN]   (default 5)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$here/bench/lib.sh"
secs=${1:-5}
cargo build --release --locked -p jsipd -p jsipd-stream --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/conf/stream" "$work/logs" "$work/plugins"
install -m 0644 "$bin/libstream.so" "$work/plugins/stream.so"
cat > "$work/conf/jsipd.ini" <<INI
logfile = logs/jsipd.log
[APIServer]
listen = 127.0.0.1:28292
accesslog = off
[RTCServer]
auth = none
listen = 127.0.0.1:28293
INI
printf 'fps = 30\nwidth = 1920\nheight = 1080\n' > "$work/conf/stream/stream.ini"
"$bin/jsipd" -p "$work" & jsipd=$!
until (exec 3<>/dev/tcp/127.0.0.1/28292) 2>/dev/null; do sleep 0.05; done
api=127.0.0.1:28292
cpu_pct() { python3 -c "import sys; print(round((int(sys.argv[2]) - int(sys.argv[1])) / float(sys.argv[3]), 1))" "$@"; }
idle_run() { local t0; t0=$(cpu_ticks $jsipd); sleep "$secs"; cpu_pct "$t0" "$(cpu_ticks $jsipd)" "$secs"; }

before=$(idle_run)
curl -sf -XPOST "http://$api/apim/v1/stream.v1?file=stream.so" >/dev/null
encode=$("$bin/stream-bench" encode 30)
watch() { # viewers -> JSON with the daemon's CPU % (100 = one core)
    local t0 out
    t0=$(cpu_ticks $jsipd)
    out=$("$bin/stream-bench" mjpeg "$api" /stream/v1/mjpeg "$1" "$secs")
    python3 -c "import json,sys; d=json.loads(sys.argv[1]); d['cpu_pct']=round((int(sys.argv[3])-int(sys.argv[2]))/float(sys.argv[4]),1); print(json.dumps(d))" \
        "$out" "$t0" "$(cpu_ticks $jsipd)" "$secs"
}
one=$(watch 1)
ten=$(watch 10)
until curl -sf "http://$api/stream/v1/status" | grep -q '"capturing":false'; do sleep 0.1; done
after=$(idle_run)

# A guest whose text console scrolls without pause: every VNC refresh has changes.
guest=$work/guest
mkdir -p "$guest/root/bin" "$guest/root/dev"
cp "$(command -v busybox)" "$guest/root/bin/busybox"
cat > "$guest/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
n=0
while true; do n=$((n+1)); /bin/busybox echo "jsipd stream bench, line $n: the quick brown fox jumps over the lazy dog" > /dev/tty1; done
INIT
chmod 0755 "$guest/root/init"
(cd "$guest/root" && find . | busybox cpio -o -H newc 2>/dev/null) > "$guest/initrd"
kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n 1)
qemu-system-x86_64 -machine pc -accel tcg -m 128 -nodefaults -no-user-config -vga std -display none \
    -vnc "unix:$guest/vnc.sock" -kernel "$kernel" -initrd "$guest/initrd" -append "quiet" \
    > "$guest/qemu.log" 2>&1 & qemu=$!
until [[ -S $guest/vnc.sock ]]; do sleep 0.05; done
# Wait until the guest has booted to its scrolling loop: a second with 10+ updates.
for _ in $(seq 60); do
    warm=$("$bin/stream-bench" vnc "$guest/vnc.sock" 1)
    python3 -c "import json,sys; sys.exit(0 if json.loads(sys.argv[1])['vnc_fps'] >= 10 else 1)" "$warm" && break
done
vnc=$("$bin/stream-bench" vnc "$guest/vnc.sock" "$secs")
# The guest's loop keeps a core busy under TCG: stop it before the encoders are timed.
kill "$qemu"; wait "$qemu" 2>/dev/null || true

python3 - "$encode" "$one" "$ten" "$before" "$after" "$vnc" "$secs" <<'PY'
import json, sys
enc, one, ten = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
before, after, vnc, secs = float(sys.argv[4]), float(sys.argv[5]), json.loads(sys.argv[6]), sys.argv[7]
print("## stream (bench/stream.sh)\n")
print(f"`bench/stream.sh {secs}`: testsrc at 1920x1080, 30 fps, JPEG quality 80; CPU is the daemon's, "
      "100% = one core; each figure beside its baseline from the same run.\n")
print("| figure | measured | baseline | ratio |")
print("|---|---|---|---|")
for e in enc:
    print(f"| JPEG encode per frame, {e['size']} ({e['jpeg_bytes']} bytes) | {e['plugin_us']} µs | libjpeg-turbo alone: {e['turbojpeg_us']} µs | {e['ratio']} |")
ratio = ten["cpu_pct"] / one["cpu_pct"] if one["cpu_pct"] else float("nan")
print(f"| MJPEG 1080p30, 10 viewers: CPU | {ten['cpu_pct']}% (each viewer ≥ {ten['fps_min']} fps) | 1 viewer: {one['cpu_pct']}% ({one['fps_min']} fps) | {ratio:.2f} (goal < 1.3) |")
print(f"| first frame after connect (capture starting) | {one['first_frame_ms_median']} ms | | |")
print(f"| first frame, 10 viewers at once (median) | {ten['first_frame_ms_median']} ms | | |")
print(f"| CPU with no viewer, after watching | {after}% | before the first viewer: {before}% | |")
print(f"| VNC frames/s from a QEMU guest ({vnc['size']}, console scrolling) | {vnc['vnc_fps']} fps | QEMU refreshes every 30 ms: 33 fps | {vnc['vnc_fps']/33.3:.2f} |")
PY

# WebRTC (issue 21): the encoders against the codecs alone, then Chromium end to end.
video=$("$bin/stream-bench" video 30 2>/dev/null)
python3 - "$video" <<'PY'
import json, sys
rows = json.loads(sys.argv[1])
print("\n### WebRTC encoding per frame (`stream-bench video`)\n")
print("| codec, size | plugin's path (I420 conversion + encode) | codec alone, same frames | of which conversion | ratio |")
print("|---|---|---|---|---|")
for r in rows:
    print(f"| {r['codec']} {r['size']} | {r['plugin_us']/1000:.1f} ms | {r['codec_alone_us']/1000:.1f} ms | {r['convert_us']/1000:.1f} ms | {r['ratio']:.2f} |")
PY
echo
python3 "$here/bench/webrtc.py" "$bin" "$secs"
