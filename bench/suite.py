#!/usr/bin/env python3
"""The benchmark suite (issue 5), run by bench/run.sh against an installed jsipd.

Every jsipd figure is divided by a baseline measured in the same run with the same
client: jsip-bench's raw tokio-tungstenite echo server, or the compiled-in echo SLP for
the cost of the .so boundary. Machines here are shared and noisy: the ratios are the
figures to trust. The figures the goals are judged on are measured in rounds: each round
runs the jsipd case and its baseline back to back, so a burst of noise from a neighbour
hits one round rather than one side, and the goal takes the median round. Writes
BENCHMARKS.md.
"""

import argparse
import json
import statistics
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

API, RTC, ECHO = 28590, 28591, 28592


def ticks(pid):
    """CPU time of a process in clock ticks (utime + stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


HZ = os.sysconf("SC_CLK_TCK")


def wait_port(port, proc, what):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


class Suite:
    def __init__(self, a):
        self.a = a
        self.bin = os.path.join(a.install, "bin")
        self.work = os.path.join(os.path.dirname(a.install), "run")
        self.results = {}
        # name -> every round's result, for the figures measured in rounds
        self.rounds = {}
        self.commands = []

    # --- processes -------------------------------------------------------------------

    def start(self):
        w = self.work
        for d in ("conf/chatroom", "logs", "plugins"):
            os.makedirs(os.path.join(w, d), exist_ok=True)
        for so in ("echo.so", "chatroom.so"):
            shutil.copy(os.path.join(self.a.install, "plugins", so), os.path.join(w, "plugins", so))
        shutil.copy(os.path.join(w, "plugins", "echo.so"), os.path.join(w, "plugins", "echo-first.so"))
        shutil.copy(self.a.second, os.path.join(w, "plugins", "echo-second.so"))
        for f in os.listdir(os.path.join(w, "plugins")):
            os.chmod(os.path.join(w, "plugins", f), 0o644)
        with open(os.path.join(w, "conf/chatroom/chatroom.ini"), "w") as f:
            f.write("rooms = 888\n")
        with open(os.path.join(w, "conf/jsipd.ini"), "w") as f:
            f.write(f"""loglevel = warn
logfile = logs/jsipd.log
[APIServer]
listen = 127.0.0.1:{API}
accesslog = off
[RTCServer]
auth = none
listen = 127.0.0.1:{RTC}
[JSIPStack]
realm = bench.test
builtin_slps = echo
qsize = 4096
[Plugins]
drain_timeout = 10s
""")
        self.jsipd = subprocess.Popen([os.path.join(self.bin, "jsipd"), "-p", w])
        self.echo = subprocess.Popen([os.path.join(self.bin, "jsip-bench"), "echo-server",
                                      "--listen", f"127.0.0.1:{ECHO}"], stdout=subprocess.DEVNULL)
        wait_port(RTC, self.jsipd, "jsipd")
        wait_port(ECHO, self.echo, "echo-server")
        for name in ("pecho", "chatroom"):
            self.post(f"/slpm/v1/{name}?file={'echo' if name == 'pecho' else 'chatroom'}.so")

    def stop(self):
        for p in (self.jsipd, self.echo):
            p.terminate()
            p.wait()

    def post(self, path):
        req = urllib.request.Request(f"http://127.0.0.1:{API}{path}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    # --- one jsip-bench run ------------------------------------------------------------

    def bench(self, name, server, scenario, *args, secs=None, warmup=2.0):
        """Runs jsip-bench; server CPU is sampled over the measured window only."""
        secs = secs or self.a.secs
        url = f"ws://127.0.0.1:{ECHO}/" if server is self.echo else f"ws://127.0.0.1:{RTC}/rtc"
        cmd = ["jsip-bench", scenario, "--url", url, *map(str, args),
               "--duration", str(secs), "--warmup", str(warmup), "--json"]
        if name not in dict(self.commands):
            self.commands.append((name, " ".join(cmd)))
        p = subprocess.Popen([os.path.join(self.bin, cmd[0]), *cmd[1:]], stdout=subprocess.PIPE, text=True)
        time.sleep(warmup + 0.2)
        t0 = ticks(server.pid)
        time.sleep(secs - 0.4)
        t1 = ticks(server.pid)
        out, _ = p.communicate(timeout=secs + 30)
        if p.returncode != 0:
            sys.exit(f"{name}: jsip-bench exited with {p.returncode}: {out}")
        r = json.loads(out)
        r["server_cpu_us"] = (t1 - t0) / HZ * 1e6 / max(r["throughput"] * (secs - 0.4), 1)
        r["name"] = name
        self.results[name] = r
        self.rounds.setdefault(name, []).append(r)
        print(f"{name}: {r['throughput']:.0f}/s p99 {r['latency_ms']['p99']:.3f} ms "
              f"server CPU {r['server_cpu_us']:.1f} us errors {r['errors']['total']}", file=sys.stderr)
        return r

    def idle(self, name, server):
        url = f"ws://127.0.0.1:{ECHO}/" if server is self.echo else f"ws://127.0.0.1:{RTC}/rtc"
        cmd = ["jsip-bench", "idle", "--url", url, "--connections", str(self.a.idle),
               "--duration", "0", "--userid", "idle"]
        self.commands.append((name, " ".join(cmd)))
        before = rss_kib(server.pid)
        p = subprocess.Popen([os.path.join(self.bin, cmd[0]), *cmd[1:]], stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if '"open"' not in line:
            p.kill()
            sys.exit(f"{name}: idle client failed: {line}")
        time.sleep(1)
        after = rss_kib(server.pid)
        p.kill()
        p.wait()
        r = {"name": name, "connections": self.a.idle, "rss_before_kib": before,
             "rss_after_kib": after, "kib_per_connection": (after - before) / self.a.idle}
        self.results[name] = r
        print(f"{name}: {r['kib_per_connection']:.2f} KiB per connection", file=sys.stderr)
        # Let the server forget them before the next run.
        time.sleep(2)
        return r

    def in_rounds(self, runs, key, rounds=None, secs=None, warmup=2.0):
        """Runs every run once per round, back to back; each name's reported result is
        then its median round by `key`. A run is (name, server, scenario, *args), or
        (name, callable) for one that needs more than `bench`."""
        for _ in range(rounds or self.a.rounds):
            for name, *run in runs:
                if callable(run[0]):
                    run[0]()
                else:
                    self.bench(name, *run, secs=secs, warmup=warmup)
        for name, *_ in runs:
            by = sorted(self.rounds[name], key=key)
            self.results[name] = by[(len(by) - 1) // 2]

    def spread(self, a, b):
        """The lowest and highest of the rounds' a/b throughput ratios."""
        rs = [x["throughput"] / y["throughput"] for x, y in zip(self.rounds[a], self.rounds[b])]
        return min(rs), max(rs)

    def ratio(self, a, b):
        """a's throughput over b's: the median of the rounds' ratios when both ran in
        rounds (each round's pair ran back to back), else the single runs' ratio."""
        ra, rb = self.rounds.get(a, []), self.rounds.get(b, [])
        if len(ra) > 1 and len(ra) == len(rb):
            return statistics.median(x["throughput"] / y["throughput"] for x, y in zip(ra, rb))
        return self.results[a]["throughput"] / self.results[b]["throughput"]

    # --- the suite ---------------------------------------------------------------------

    def run(self):
        self.start()
        try:
            # 1. Throughput: raw echo vs the echo SLP as a .so, and the compiled-in echo
            #    for the plugin boundary's cost. 16x1 is a goal: in rounds.
            throughput = lambda r: r["throughput"]
            #    Many short rounds, interleaved (raw, .so, compiled-in, raw, ...), so that
            #    a noisy minute hits all three alike; the spread is reported.
            self.in_rounds([
                ("raw echo 16x1", self.echo, "message", "--connections", 16),
                ("echo.so 16x1", self.jsipd, "message", "--connections", 16, "--uri", "bench@pecho"),
                ("compiled-in echo 16x1", self.jsipd, "message", "--connections", 16),
            ], throughput, rounds=self.a.boundary_rounds, secs=self.a.boundary_secs, warmup=0.5)
            self.bench("raw echo 64x4", self.echo, "message", "--connections", 64, "--depth", 4)
            self.bench("echo.so 64x4", self.jsipd, "message", "--connections", 64, "--depth", 4,
                       "--uri", "bench@pecho")
            # 2. Latency at half the measured maximum (open loop), jsipd and raw echo.
            half = int(self.results["echo.so 16x1"]["throughput"] / 2)
            self.half = half
            # 3. Hot reload under load: the same file name, a new build, once a second;
            #    in the same rounds, so each is compared with the steady run before it.
            self.in_rounds([
                ("raw echo half load", self.echo, "message", "--rate", half),
                ("echo.so half load", self.jsipd, "message", "--rate", half, "--uri", "bench@pecho"),
                ("echo.so half load, reloading every second", lambda: self.reload_run(half)),
            ], lambda r: r["latency_ms"]["p99"])
            # 4. Calls and chat fan-out.
            self.bench("call echo.so", self.jsipd, "call", "--connections", 16, "--uri", "bench@pecho")
            self.in_rounds([
                ("chat 100 members", self.jsipd, "chat", "--connections", 100,
                 "--uri", "room:888@bench.test", "--router", "bench.test;type=chatroom",
                 "--userid", "member"),
            ], lambda r: r["relays_per_s"])
            # 5. Connection storm, against the raw echo server's accept rate.
            self.bench("raw echo connect", self.echo, "connect", "--connections", 4, secs=5)
            self.bench("jsipd connect", self.jsipd, "connect", "--connections", 4, secs=5)
            # 6. Memory per idle connection.
            self.idle("raw echo idle", self.echo)
            self.idle("jsipd idle", self.jsipd)
        finally:
            self.stop()

    def reload_run(self, rate):
        plugins = os.path.join(self.work, "plugins")
        stop = threading.Event()
        reloads = []

        def reloader():
            n = 0
            while not stop.wait(1.0):
                n += 1
                src = "echo-second.so" if n % 2 else "echo-first.so"
                tmp = os.path.join(plugins, "echo.so.new")
                shutil.copy(os.path.join(plugins, src), tmp)
                os.chmod(tmp, 0o644)
                os.rename(tmp, os.path.join(plugins, "echo.so"))
                t0 = time.time()
                r = self.post("/slpm/v1/pecho?file=echo.so")
                reloads.append({"generation": r["data"]["generation"]["generation"],
                                "ms": (time.time() - t0) * 1000})

        t = threading.Thread(target=reloader)
        t.start()
        try:
            r = self.bench("echo.so half load, reloading every second", self.jsipd, "message",
                           "--rate", rate, "--uri", "bench@pecho", secs=max(self.a.secs, 10))
        finally:
            stop.set()
            t.join()
        r["reloads"] = len(reloads)
        r["reload_ms_max"] = max((x["ms"] for x in reloads), default=0)
        r["generations"] = [x["generation"] for x in reloads]

    # --- the report --------------------------------------------------------------------

    def write(self, path):
        R = self.results
        cpu = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        ratio = self.ratio
        lines = [
            "# Benchmarks",
            "",
            "Written by `bench/run.sh` (which calls `bench/suite.py`); do not edit by hand.",
            f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {os.cpu_count()} cores, "
            f"{cpu}, Linux {platform.release()}. Client (jsip-bench) and servers share the cores, "
            f"on loopback. Each run: 2 s warm-up, then {self.a.secs} s measured; the 16×1 runs "
            f"(raw, echo.so, compiled-in) ran interleaved in {self.a.boundary_rounds} short rounds "
            f"(0.5 s warm-up, {self.a.boundary_secs:g} s measured), the half-load runs and chat in "
            f"{self.a.rounds} rounds (each round's runs back to back); their rows show the median "
            f"round, and their ratios are the median of the rounds' ratios.",
            "",
            "Baselines are measured in the same run with the same client: `jsip-bench echo-server` "
            "(raw tokio-tungstenite echo: the frame comes straight back) and, for the plugin "
            "boundary, jsipd's compiled-in echo SLP. Server CPU is the server process's CPU time "
            "over the measured window divided by the round trips in it. These machines are shared "
            "and noisy: trust the ratios over the absolute figures.",
            "",
            "## Goals",
            "",
            "| goal | measured | verdict |",
            "|---|---|---|",
        ]
        so, raw = R["echo.so 16x1"], R["raw echo 16x1"]
        r16 = ratio("echo.so 16x1", "raw echo 16x1")
        half_p99 = R["echo.so half load"]["latency_ms"]["p99"]
        rl = R["echo.so half load, reloading every second"]
        rls = self.rounds["echo.so half load, reloading every second"]
        failed = sum(r["errors"]["total"] for r in rls)
        completed = sum(r["completed"] for r in rls)
        reloads = sum(r["reloads"] for r in rls)
        gens = [g for r in rls for g in r["generations"]]
        idle_kib = R["jsipd idle"]["kib_per_connection"]
        chat = R["chat 100 members"]
        verdict = lambda ok: "met" if ok else "**missed**"
        r16c = ratio("echo.so 16x1", "compiled-in echo 16x1")
        lo, hi = self.spread("echo.so 16x1", "raw echo 16x1")
        loc, hic = self.spread("echo.so 16x1", "compiled-in echo 16x1")
        lines += [
            f"| `message` through echo.so ≥ 0.85 of raw echo at 16×1 (median of "
            f"{len(self.rounds['echo.so 16x1'])} interleaved rounds) | {r16:.2f} (rounds {lo:.2f}–{hi:.2f}) "
            f"| {verdict(r16 >= 0.85)} |",
            f"| echo.so ≥ 0.9 of the compiled-in echo at 16×1 | {r16c:.2f} (rounds {loc:.2f}–{hic:.2f}) "
            f"| {verdict(r16c >= 0.9)} |",
            f"| `message` through echo.so ≥ 70% of raw echo at 16×1 | {r16:.0%} "
            f"({so['throughput']:.0f}/s vs {raw['throughput']:.0f}/s); server CPU "
            f"{so['server_cpu_us']:.1f} µs vs {raw['server_cpu_us']:.1f} µs per round trip | {verdict(r16 >= 0.7)} |",
            f"| p99 ≤ 2 ms at half the maximum rate ({self.half}/s) | {half_p99:.3f} ms "
            f"(raw echo at the same rate: {R['raw echo half load']['latency_ms']['p99']:.3f} ms) | {verdict(half_p99 <= 2)} |",
            f"| idle: ≤ 5 KiB per connection ({self.a.idle} connections) | {idle_kib:.2f} KiB "
            f"(raw echo: {R['raw echo idle']['kib_per_connection']:.2f} KiB) | {verdict(idle_kib <= 5)} |",
            f"| hot reload under load: 0 failed, p99 ≤ 2× steady | {failed} failed of "
            f"{completed}, {reloads} reloads in {len(rls)} rounds; p99 {rl['latency_ms']['p99']:.3f} ms vs steady "
            f"{half_p99:.3f} ms ({rl['latency_ms']['p99'] / max(half_p99, 1e-9):.2f}×) | "
            f"{verdict(failed == 0 and rl['latency_ms']['p99'] <= 2 * half_p99 and reloads > 0)} |",
            f"| chat, 100 members: ≥ 100,000 relays/s | {chat['relays_per_s']:.0f} relays/s "
            f"({chat['throughput']:.0f} MESSAGEs/s × 99) | {verdict(chat['relays_per_s'] >= 100000)} |",
            "",
            "## All figures",
            "",
            "| run | throughput /s | baseline | ratio | p50 ms | p99 ms | p99.9 ms | server CPU µs | errors |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        baseline = {
            "echo.so 16x1": "raw echo 16x1", "echo.so 64x4": "raw echo 64x4",
            "compiled-in echo 16x1": "raw echo 16x1", "echo.so half load": "raw echo half load",
            "jsipd connect": "raw echo connect",
        }
        for name, r in R.items():
            if "throughput" not in r:
                continue
            b = baseline.get(name)
            lines.append(
                f"| {name} | {r['throughput']:.0f} | {b or ''} | {f'{ratio(name, b):.2f}' if b else ''} | "
                f"{r['latency_ms']['p50']:.3f} | {r['latency_ms']['p99']:.3f} | {r['latency_ms']['p99.9']:.3f} | "
                f"{r['server_cpu_us']:.1f} | {r['errors']['total']} |")
        comp = R["compiled-in echo 16x1"]
        each = lambda name, f: ", ".join(f(r) for r in self.rounds[name])
        lines += [
            "",
            "- Rounds, echo.so / raw echo at 16×1: " + ", ".join(
                f"{a['throughput'] / b['throughput']:.2f}"
                for a, b in zip(self.rounds["echo.so 16x1"], self.rounds["raw echo 16x1"]))
            + "; server CPU µs per round trip, echo.so: "
            + each("echo.so 16x1", lambda r: f"{r['server_cpu_us']:.1f}")
            + "; raw echo: " + each("raw echo 16x1", lambda r: f"{r['server_cpu_us']:.1f}") + ".",
            "- Rounds, p99 ms at half load, echo.so: "
            + each("echo.so half load", lambda r: f"{r['latency_ms']['p99']:.3f}")
            + "; raw echo: " + each("raw echo half load", lambda r: f"{r['latency_ms']['p99']:.3f}")
            + "; echo.so reloading every second: "
            + each("echo.so half load, reloading every second", lambda r: f"{r['latency_ms']['p99']:.3f}")
            + ". Chat relays/s: " + each("chat 100 members", lambda r: f"{r['relays_per_s']:.0f}") + ".",
            f"- The plugin boundary: echo.so vs the compiled-in echo at 16×1: "
            f"{ratio('echo.so 16x1', 'compiled-in echo 16x1'):.2f} of the throughput, "
            f"{so['server_cpu_us'] - comp['server_cpu_us']:+.1f} µs server CPU per round trip.",
            f"- Calls (INVITE/200/ACK, BYE/200, no hold) through echo.so: "
            f"{R['call echo.so']['throughput']:.0f} calls/s; setup p99 {R['call echo.so']['latency_ms']['p99']:.3f} ms.",
            f"- Chat: {chat['relays']} relays delivered in the window ({chat['relays_expected']} expected "
            f"for the MESSAGEs answered in it); MESSAGE p99 {chat['latency_ms']['p99']:.3f} ms.",
            f"- Hot reload: generations {gens[0] if gens else '-'}–{gens[-1] if gens else '-'} "
            f"over all rounds, slowest load+replace {max(r['reload_ms_max'] for r in rls):.1f} ms "
            f"(the loader and retire threads run at nice 10).",
            f"- Idle: RSS {R['jsipd idle']['rss_before_kib']} → {R['jsipd idle']['rss_after_kib']} KiB for "
            f"{self.a.idle} connections (raw echo {R['raw echo idle']['rss_before_kib']} → "
            f"{R['raw echo idle']['rss_after_kib']} KiB).",
            "",
            "## Commands",
            "",
            f"jsipd: `bin/jsipd -p RUN` with realm `bench.test`, the compiled-in `echo`, and "
            f"`plugins/echo.so` loaded as SLP `pecho`, `chatroom.so` as `chatroom`. Raw echo: "
            f"`jsip-bench echo-server --listen 127.0.0.1:{ECHO}`.",
            "",
            "```",
            *[f"# {n}\n{c}" for n, c in self.commands],
            "```",
            "",
            "Raw results, every round (JSON lines):",
            "",
            "```",
            *[json.dumps(r, sort_keys=True) for rs in self.rounds.values() for r in rs],
            "```",
            "",
        ]
        with open(path, "w") as f:
            f.write("\n".join(lines))
        print("\n".join(lines[:20]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--install", required=True)
    p.add_argument("--second", required=True)
    p.add_argument("--secs", type=float, default=8)
    p.add_argument("--idle", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=3)
    # The .so boundary's 16x1 runs: more, shorter rounds (issue 19).
    p.add_argument("--boundary-rounds", type=int, default=9)
    p.add_argument("--boundary-secs", type=float, default=3)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    s = Suite(a)
    s.run()
    s.write(a.out)


if __name__ == "__main__":
    main()
