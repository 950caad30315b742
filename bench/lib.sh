# Shared by the bench scripts: source it.

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# One JSON line from a `jsip-bench --json` summary: NAME OUT CPU_TICKS_BEFORE
# CPU_TICKS_AFTER SECS. Server CPU covers warm-up (2 s) + run, per completed round
# trip; warm-up trips are uncounted, hence the SECS/(SECS+2) scaling.
summarize() {
    python3 - "$@" <<'PY'
import json, sys
name, out, t0, t1, secs = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
cpu_us = (t1 - t0) / 100 * 1e6 / max(out["completed"], 1) * secs / (secs + 2)
print(json.dumps({"name": name, "throughput": out["throughput"], "p50_ms": out["latency_ms"]["p50"],
                  "p99_ms": out["latency_ms"]["p99"], "errors": out["errors"], "server_cpu_us": cpu_us}))
PY
}
