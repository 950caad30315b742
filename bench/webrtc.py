#!/usr/bin/env python3
"""The stream plugin's WebRTC figures (issue 21), printed as a Markdown section.

Starts the release jsipd with stream.so (testsrc) as API and SLP, a viewer account, and
headless Chromium through chromedriver's WebDriver HTTP API (no client library). Each
Chromium tab signs in on the people's port, opens /stream/v1/webrtc, and reads the
frame stamps back from decoded frames; the age of each stamp is glass-to-glass
latency: testsrc's capture time to the decoded frame in the browser, on one clock.

Figures:
  1. glass to glass p50/p95 at 720p30 and 1080p30, VP8 and H.264;
  2. the daemon's CPU with 3 viewers of one codec against 1 viewer (goal: < 1.3x);
  3. the encoder's time per frame, from GET /stream/v1/status.

Usage: bench/webrtc.py BIN_DIR [SECONDS]
"""
import json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

bin_dir = sys.argv[1]
secs = float(sys.argv[2]) if len(sys.argv) > 2 else 8.0
work = tempfile.mkdtemp()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


api, people = free_port(), free_port()
os.makedirs(f"{work}/conf/stream")
os.makedirs(f"{work}/plugins")
os.makedirs(f"{work}/logs")
shutil.copy(f"{bin_dir}/libstream.so", f"{work}/plugins/stream.so")
open(f"{work}/conf/jsipd.ini", "w").write(
    f"logfile = logs/jsipd.log\n[APIServer]\nlisten = 127.0.0.1:{api}\naccesslog = off\n"
    f"[RTCServer]\nlisten = 127.0.0.1:{people}\nauth = session\n")
open(f"{work}/conf/stream/stream.ini", "w").write(
    "fps = 30\nwidth = 1280\nheight = 720\n[webrtc]\naddresses = 127.0.0.1\n")
subprocess.run([f"{bin_dir}/jsipd", "-p", work, "user", "add", "bench", "--role", "viewer",
                "--password-stdin"], input=b"bench-password\n", check=True, capture_output=True)
daemon = subprocess.Popen([f"{bin_dir}/jsipd", "-p", work])
driver = subprocess.Popen(["chromedriver", f"--port={(dport := free_port())}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
profile = tempfile.mkdtemp()
session = None  # the WebDriver session, ended in `finally` so no Chromium outlives a failed run


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def wait_port(port):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


try:
    wait_port(api)
    wait_port(dport)
    for what in ("/apim/v1/stream.v1?file=stream.so", "/slpm/v1/stream?file=stream.so"):
        http("POST", f"http://127.0.0.1:{api}{what}")
    wd = f"http://127.0.0.1:{dport}"
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "pageLoadStrategy": "eager",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1366,768", f"--user-data-dir={profile}",
                "--allow-loopback-in-peer-connection",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--autoplay-policy=no-user-gesture-required"]}}}}
    sid = http("POST", f"{wd}/session", caps)["value"]["sessionId"]
    s = session = f"{wd}/session/{sid}"
    js = lambda script: http("POST", f"{s}/execute/sync", {"script": script, "args": []})["value"]
    def settle(cond, timeout=30):
        t = time.time()
        while not js(f"return {cond}"):
            if time.time() - t > timeout:
                sys.exit(f"timed out: {cond}")
            time.sleep(0.1)

    site = f"http://127.0.0.1:{people}"
    http("POST", f"{s}/url", {"url": f"{site}/"})
    settle("!!document.querySelector('#signin')")
    signed_in = js("return fetch('/auth/login', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                   " body: JSON.stringify({username: 'bench', password: 'bench-password'})}).then(r => r.status)")
    if signed_in != 200:
        sys.exit(f"sign-in answered {signed_in}")

    def pct(v, p):
        v = sorted(v)
        return v[round((len(v) - 1) * p)]

    rows, cpu = [], {}
    for (w, h) in ((1280, 720), (1920, 1080)):
        http("POST", f"http://127.0.0.1:{api}/stream/v1/settings", {"width": w, "height": h})
        for codec in ("vp8", "h264"):
            http("POST", f"{s}/url", {"url": f"{site}/stream/v1/webrtc?codec={codec}"})
            settle("window.stamps && window.stamps.length >= 30")
            js("window.stamps = []; return 1")
            time.sleep(secs)
            st = js("return window.stamps")
            ages = [x["age"] for x in st if x["width"] == w]
            status = http("GET", f"http://127.0.0.1:{api}/stream/v1/status")["data"]
            enc = status["webrtc"]["encoders"][0]
            rows.append((f"{codec.upper()} {w}x{h}", pct(ages, 0.5), pct(ages, 0.95), len(ages) / secs,
                         enc["encode_ms"]["mean"], js("return window.rtc.jitterBufferMs")))
            if w == 1920 and codec == "vp8":
                # CPU with 1 viewer, then with 3 tabs watching the same encoder.
                t0 = cpu_ticks(daemon.pid); time.sleep(secs); cpu[1] = (cpu_ticks(daemon.pid) - t0) / secs
                tabs = []
                for _ in range(2):
                    handle = http("POST", f"{s}/window/new", {"type": "tab"})["value"]["handle"]
                    http("POST", f"{s}/window", {"handle": handle})
                    http("POST", f"{s}/url", {"url": f"{site}/stream/v1/webrtc?codec=vp8"})
                    settle("window.stamps && window.stamps.length >= 30")
                    tabs.append(handle)
                t0 = cpu_ticks(daemon.pid); time.sleep(secs); cpu[3] = (cpu_ticks(daemon.pid) - t0) / secs
                for handle in tabs:
                    http("POST", f"{s}/window", {"handle": handle})
                    http("DELETE", f"{s}/window")
                first = http("GET", f"{s}/window/handles")["value"][0]
                http("POST", f"{s}/window", {"handle": first})
    print("## stream over WebRTC (bench/webrtc.py, via bench/stream.sh)\n")
    print(f"Release build, testsrc at 30 fps, headless Chromium on the same 2 cores (it decodes and")
    print(f"renders while jsipd captures and encodes). {secs:.0f} s per row.\n")
    print("| codec, size | glass to glass p50 | p95 | frames/s decoded | encode ms/frame (mean) | Chromium's jitter buffer (mean) |")
    print("|---|---|---|---|---|---|")
    for name, p50, p95, fps, enc, jb in rows:
        print(f"| {name} | {p50} ms | {p95} ms | {fps:.1f} | {enc} | {jb} ms |")
    print(f"\nDaemon CPU at 1080p30 VP8: 1 viewer {cpu[1]:.0f} %, 3 viewers {cpu[3]:.0f} % "
          f"({cpu[3] / max(cpu[1], 1):.2f}x one; goal < 1.3x): one shared encoder.")
finally:
    if session:
        try:
            http("DELETE", session)
        except OSError as e:
            print(f"ending the browser session: {e}", file=sys.stderr)
    driver.terminate()
    daemon.terminate()
    daemon.wait()
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(profile, ignore_errors=True)
