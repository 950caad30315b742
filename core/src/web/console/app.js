// The console page: wires the screen, the keyboard and mouse, the power buttons and
// LEDs, paste and virtual media to the daemon. The logic that can be wrong in subtle
// ways (the JSIP client and its reconnect, key and pointer mapping) lives in jsip.js,
// keys.js and pointer.js, which node's test runner checks; this file is the DOM glue.
//
// What goes where:
// - video: JSIP INVITE to screen@stream with a WebRTC offer; MJPEG from /stream/v1/mjpeg
//   where WebRTC cannot play;
// - keyboard and mouse: JSIP INVITE to kbd@hid, then INFO with Content-Type hid;
// - LEDs: JSIP SUBSCRIBE (Event: led) to led@gpio, then NOTIFYs;
// - buttons, paste, media, people: the plugins' HTTP APIs on this port.
import { Jsip, randomId, SESSION_EXPIRE_S } from "./jsip.js";
import { Keyboard, COMBOS } from "./keys.js";
import { BUTTONS, pictureRect, absolute, Wheel, Moves } from "./pointer.js";

const $ = (id) => document.getElementById(id);
const user = document.body.dataset.user;
const role = document.body.dataset.role;
const canOperate = role === "operator" || role === "admin";
const isAdmin = role === "admin";
const screen = $("screen"), video = $("video"), mjpeg = $("mjpeg"), note = $("screen-note");

// What tests (and a curious person in the devtools) can read.
const seen = (window.jsipdConsole = {
  conn: "connecting", reconnects: 0, firstFrameAt: null, frames: 0,
  video: { mode: null, codec: null, width: 0, height: 0, error: null },
  leds: null, hidReady: false, keys: [], lastError: null,
});

// ---- HTTP ----------------------------------------------------------------------
async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    return { status: 0, msg: "the server cannot be reached", data: null };
  }
  let v = null;
  try { v = await r.json(); } catch { /* not JSON */ }
  return { status: r.status, msg: (v && v.msg) || r.statusText, data: v && v.data };
}

let messageTimer = null;
function flash(text, cls = "") {
  const el = $("message");
  el.textContent = text;
  el.className = cls;
  clearTimeout(messageTimer);
  messageTimer = setTimeout(() => { el.textContent = ""; }, 8000);
  if (cls === "bad") seen.lastError = text;
}

// ---- JSIP ----------------------------------------------------------------------
const tab = randomId("console-");
const proto = location.protocol === "https:" ? "wss:" : "ws:";
const jsip = new Jsip({
  url: `${proto}//${location.host}/rtc?tab=${tab}`,
  name: `${user}~${tab}`,
  WebSocket,
  onState: connectionState,
  onRequest: incoming,
  onConnected: connected,
});

seen.jsip = jsip;

function connectionState(state, detail) {
  seen.conn = state;
  const el = $("conn");
  el.dataset.state = state;
  if (state === "connected") {
    el.textContent = "Connected";
  } else if (state === "connecting") {
    el.textContent = detail && detail.attempt ? "Reconnecting…" : "Connecting…";
  } else {
    const secs = Math.max(1, Math.round(detail.retryInMs / 1000));
    el.textContent = `Connection lost${detail.code ? ` (${detail.code})` : ""}; reconnecting in ${secs} s`;
    // The server released every key and button when the socket went (hid's rule for
    // a vanished peer); forget them here too, so nothing is lifted twice or stays held.
    keyboard.forget();
    heldButtons.clear();
    seen.hidReady = false;
    hidDialog = null;
    note.textContent = "The connection to the KVM was lost. Reconnecting…";
    // A session that ended (idle timeout, sign-out elsewhere, a changed account) can
    // never reconnect: back to the sign-in form, which returns here.
    api("GET", "/auth/me").then((r) => { if (r.status === 401) location.assign("/"); });
  }
}

let hidDialog = null, ledDialog = null, ledRefresh = null, everConnected = false;
async function connected() {
  if (everConnected) seen.reconnects++;
  everConnected = true;
  if (note.textContent.startsWith("The connection")) note.textContent = "";
  subscribeLeds();
  if (canOperate) openHid();
  // A WebRTC session ends with the signalling socket it was set up on (the stream
  // plugin hangs up when its peer's socket closes): ask again on every connect.
  if (videoNeedsJsip() || !seen.video.mode) startVideo();
  people();
}

async function openHid() {
  const dialog = randomId("hid-");
  const r = await jsip.request({ Type: "INVITE", "Request-URI": "kbd@hid", DialogueID: dialog, Expire: SESSION_EXPIRE_S })
    .catch((e) => ({ Code: 0, Reason: e.message }));
  if (r.Code === 200) {
    jsip.notify({ Type: "ACK", "Request-URI": "kbd@hid", DialogueID: dialog, RelatedID: r.CSeq });
    hidDialog = dialog;
    seen.hidReady = true;
    jsip.keepalive(dialog, "kbd@hid", SESSION_EXPIRE_S, () => hidGone(dialog));
  } else {
    flash(`Keyboard and mouse are not available: ${r.Code} ${r.Reason || ""}`, "bad");
  }
}

/** The server ended the keyboard session (hid reloaded, say): the server released its
 *  keys with it; open a new one. */
function hidGone(dialog) {
  if (hidDialog !== dialog) return;
  jsip.endKeepalive(dialog);
  hidDialog = null;
  seen.hidReady = false;
  keyboard.forget();
  heldButtons.clear();
  if (jsip.connected) openHid();
}

/** Sends hid events in the keyboard and mouse dialog; dropped while there is none. */
function hid(events) {
  if (!hidDialog || !events.length) return;
  const dialog = hidDialog;
  jsip.request({ Type: "INFO", "Request-URI": "kbd@hid", DialogueID: dialog, "Content-Type": "hid", Body: events })
    .then((r) => {
      if (r.Code === 481) hidGone(dialog); // the session ended on the server's side
      else if (r.Code >= 300) flash(`The target refused input: ${r.Code} ${r.Reason || ""}`, "bad");
    })
    .catch(() => {});
}

async function subscribeLeds() {
  ledDialog = ledDialog || randomId("led-");
  clearTimeout(ledRefresh);
  const r = await jsip.request({ Type: "SUBSCRIBE", "Request-URI": "led@gpio", DialogueID: ledDialog, Event: "led", Expire: 600 })
    .catch((e) => ({ Code: 0, Reason: e.message }));
  if (r.Code === 200) {
    ledRefresh = setTimeout(subscribeLeds, 480000);
  } else {
    $("led-pwr").title = $("led-hdd").title = `LEDs unknown: ${r.Code} ${r.Reason || ""}`;
  }
}

function showLeds(body) {
  const leds = typeof body === "string" ? JSON.parse(body) : body;
  seen.leds = leds;
  $("led-pwr").dataset.on = String(!!leds.pwr);
  $("led-hdd").dataset.on = String(!!leds.hdd);
}

function incoming(m) {
  if (m.Type === "NOTIFY" && m.Event === "led") {
    try { showLeds(m.Body); } catch { return 400; }
    return 200;
  }
  if (m.Type === "BYE" && m.DialogueID === hidDialog) {
    hidGone(m.DialogueID);
    return 200;
  }
  if (m.Type === "BYE" && m.DialogueID === videoDialog) {
    // The stream ended (its plugin was reloaded, or it stopped): ask again shortly.
    jsip.endKeepalive(m.DialogueID);
    videoDialog = null; // ended by the other side: no BYE back
    stopVideo();
    note.textContent = `The video ended (${m.Reason || "BYE"}); asking again…`;
    restartVideo(1000);
    return 200;
  }
  return 200;
}

// ---- video ---------------------------------------------------------------------
// One video at a time: each start bumps `videoGen`, and an attempt that finds the
// generation changed under it gives up (and hangs up a session it got meanwhile).
let pc = null, videoDialog = null, videoGen = 0, restartTimer = null, frameTimes = [];
const videoMode = $("video-mode");
videoMode.value = localStorage.getItem("jsipd.video") || "auto";
videoMode.onchange = () => {
  localStorage.setItem("jsipd.video", videoMode.value);
  startVideo();
};

function hangUp(dialog) {
  if (dialog) jsip.endKeepalive(dialog);
  if (dialog && jsip.connected) {
    jsip.request({ Type: "BYE", "Request-URI": "screen@stream", DialogueID: dialog }).catch(() => {});
  }
}

function stopVideo() {
  videoGen++;
  clearTimeout(restartTimer);
  if (pc) pc.close();
  pc = null;
  hangUp(videoDialog);
  videoDialog = null;
  mjpeg.onerror = null;
  mjpeg.removeAttribute("src");
  seen.video.mode = null;
  screen.dataset.video = "";
}

function restartVideo(ms) {
  clearTimeout(restartTimer);
  restartTimer = setTimeout(startVideo, ms);
}

/** Whether the video rides on the JSIP socket (and so ends with it). */
function videoNeedsJsip() {
  return videoMode.value === "webrtc" || (videoMode.value === "auto" && !!window.RTCPeerConnection && seen.video.mode !== "mjpeg");
}

function startVideo() {
  stopVideo();
  const mode = videoMode.value;
  if (mode === "mjpeg" || (mode === "auto" && !window.RTCPeerConnection)) return startMjpeg("");
  if (!jsip.connected) return; // connected() starts it
  const gen = videoGen;
  webrtc(gen).catch((e) => {
    if (gen !== videoGen) return;
    seen.video.error = String(e.message || e);
    stopVideo();
    if (mode === "auto") startMjpeg(`WebRTC did not play (${seen.video.error}); showing MJPEG`);
    else note.textContent = `The video did not start: ${seen.video.error}`;
  });
}

async function webrtc(gen) {
  note.textContent = "Asking for the video…";
  const dialog = (videoDialog = randomId("video-"));
  const mine = (pc = new RTCPeerConnection({ iceServers: [] }));
  mine.addTransceiver("video", { direction: "recvonly" });
  mine.ontrack = (ev) => { video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
  mine.getReceivers().forEach((r) => {
    // The newest frame, not a smooth one: no jitter buffer beyond what decoding needs.
    if ("jitterBufferTarget" in r) r.jitterBufferTarget = 0;
    if ("playoutDelayHint" in r) r.playoutDelayHint = 0;
  });
  await mine.setLocalDescription(await mine.createOffer());
  if (mine.iceGatheringState !== "complete") {
    // A complete offer (JSIP has no trickle); host candidates take milliseconds.
    await new Promise((done) => {
      mine.addEventListener("icegatheringstatechange", () => mine.iceGatheringState === "complete" && done());
      setTimeout(done, 3000);
    });
  }
  if (gen !== videoGen) return;
  const r = await jsip.request({ Type: "INVITE", "Request-URI": "screen@stream", DialogueID: dialog, Expire: SESSION_EXPIRE_S, "Content-Type": "sdp", Body: mine.localDescription.sdp });
  if (r.Code === 200) {
    jsip.notify({ Type: "ACK", "Request-URI": "screen@stream", DialogueID: dialog, RelatedID: r.CSeq });
    jsip.keepalive(dialog, "screen@stream", SESSION_EXPIRE_S, () => {
      if (dialog === videoDialog) { videoDialog = null; restartVideo(500); }
    });
  }
  if (gen !== videoGen) {
    if (r.Code === 200) hangUp(dialog);
    return;
  }
  if (r.Code !== 200) throw new Error(`${r.Code} ${r.Reason || ""}`.trim());
  seen.video.dialog = dialog;
  const codec = /a=rtpmap:\d+ ([A-Za-z0-9]+)\/90000/.exec(r.Body);
  seen.video.codec = codec ? codec[1] : null;
  await mine.setRemoteDescription({ type: "answer", sdp: r.Body });
  seen.video.mode = "webrtc";
  screen.dataset.video = "webrtc";
  await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("no picture within 10 s")), 10000);
    video.requestVideoFrameCallback(() => { clearTimeout(timer); ok(); });
    mine.addEventListener("connectionstatechange", () => {
      if (mine.connectionState === "failed") { clearTimeout(timer); fail(new Error("the connection failed")); }
    });
  });
  if (gen !== videoGen) return;
  note.textContent = "";
  seen.video.error = null;
  mine.addEventListener("connectionstatechange", () => {
    if (gen === videoGen && mine.connectionState === "failed") {
      note.textContent = "The video connection failed; asking again…";
      stopVideo();
      restartVideo(1000);
    }
  });
}

function startMjpeg(why) {
  seen.video.mode = "mjpeg";
  seen.video.codec = "MJPEG";
  screen.dataset.video = "mjpeg";
  note.textContent = why || "Loading the video…";
  mjpeg.onload = () => {
    if (!seen.firstFrameAt) seen.firstFrameAt = Date.now();
    if (note.textContent === "Loading the video…") note.textContent = "";
    // Why WebRTC did not play stays readable for a moment, then leaves the picture
    // free (it stays in the footer's tooltip).
    if (why) {
      $("video-info").title = why;
      const shown = note.textContent;
      setTimeout(() => { if (note.textContent === shown) note.textContent = ""; }, 6000);
      why = "";
    }
    seen.video.width = mjpeg.naturalWidth;
    seen.video.height = mjpeg.naturalHeight;
  };
  mjpeg.onerror = () => {
    note.textContent = "No video: is the stream plugin loaded? Trying again…";
    const gen = videoGen;
    setTimeout(() => { if (gen === videoGen && seen.video.mode === "mjpeg") mjpeg.src = `/stream/v1/mjpeg?t=${Date.now()}`; }, 3000);
  };
  mjpeg.src = `/stream/v1/mjpeg?t=${Date.now()}`;
}

function onFrame(now, meta) {
  seen.frames++;
  if (!seen.firstFrameAt) seen.firstFrameAt = Date.now();
  seen.video.width = meta.width;
  seen.video.height = meta.height;
  frameTimes.push(now);
  while (frameTimes.length && now - frameTimes[0] > 1000) frameTimes.shift();
  video.requestVideoFrameCallback(onFrame);
}
video.requestVideoFrameCallback(onFrame);
setInterval(() => {
  const v = seen.video;
  if (!v.mode) { $("video-info").textContent = ""; return; }
  const fps = v.mode === "webrtc" ? ` · ${frameTimes.length} fps` : "";
  $("video-info").textContent = `${v.codec || v.mode} ${v.width}×${v.height}${fps}`;
}, 1000);

// ---- keyboard and mouse -----------------------------------------------------------
const keyboard = new Keyboard(hid);
const heldButtons = new Set();
const moves = new Moves(), wheel = new Wheel();
const mouseMode = $("mouse-mode");
mouseMode.value = localStorage.getItem("jsipd.mouse") || "absolute";
mouseMode.onchange = () => localStorage.setItem("jsipd.mouse", mouseMode.value);
let moveTimer = null;

function hint() {
  const h = $("capture-hint");
  if (!canOperate) h.textContent = "View only: your role cannot type or point";
  else if (document.activeElement === screen) h.textContent = mouseMode.value === "relative" && !document.pointerLockElement
    ? "Keys go to the target · click to lock the pointer (Esc frees it)"
    : "Keys and mouse go to the target · click outside to stop";
  else h.textContent = "Click the screen to type and point on the target";
  screen.classList.toggle("capturing", canOperate && document.activeElement === screen);
}

function releaseEverything() {
  keyboard.releaseAll();
  const buttons = [...heldButtons].map((button) => ({ button, down: false }));
  heldButtons.clear();
  hid(buttons);
}

function flushMoves() {
  moveTimer = null;
  hid(moves.take());
}

if (canOperate) {
  screen.addEventListener("keydown", (ev) => {
    if (keyboard.handle(ev)) {
      ev.preventDefault();
      if (!ev.repeat) {
        seen.keys.push({ code: ev.code, key: ev.key, at: Date.now() });
        if (seen.keys.length > 1000) seen.keys.shift();
      }
    }
  });
  screen.addEventListener("keyup", (ev) => { if (keyboard.handle(ev)) ev.preventDefault(); });
  screen.addEventListener("blur", () => { releaseEverything(); hint(); });
  screen.addEventListener("focus", hint);
  document.addEventListener("visibilitychange", () => { if (document.hidden) releaseEverything(); });
  window.addEventListener("pagehide", releaseEverything);

  const picture = () => seen.video.mode === "mjpeg"
    ? pictureRect(mjpeg.getBoundingClientRect(), mjpeg.naturalWidth, mjpeg.naturalHeight)
    : pictureRect(video.getBoundingClientRect(), video.videoWidth, video.videoHeight);
  screen.addEventListener("mousemove", (ev) => {
    if (mouseMode.value === "relative") {
      if (document.pointerLockElement !== screen) return;
      moves.moveBy(ev.movementX, ev.movementY);
    } else {
      const p = absolute(ev.clientX, ev.clientY, picture());
      if (!p) return;
      moves.moveTo(p);
    }
    if (!moveTimer) moveTimer = setTimeout(flushMoves, 10);
  });
  screen.addEventListener("mousedown", (ev) => {
    screen.focus();
    if (mouseMode.value === "relative" && document.pointerLockElement !== screen) {
      screen.requestPointerLock();
      return;
    }
    const button = BUTTONS[ev.button];
    if (!button) return;
    ev.preventDefault();
    if (mouseMode.value === "absolute") {
      const p = absolute(ev.clientX, ev.clientY, picture());
      if (p) moves.moveTo(p);
    }
    clearTimeout(moveTimer);
    moveTimer = null;
    heldButtons.add(button);
    hid([...moves.take(), { button, down: true }]);
  });
  window.addEventListener("mouseup", (ev) => {
    const button = BUTTONS[ev.button];
    if (!heldButtons.delete(button)) return;
    clearTimeout(moveTimer);
    moveTimer = null;
    hid([...moves.take(), { button, down: false }]);
  });
  screen.addEventListener("contextmenu", (ev) => ev.preventDefault());
  screen.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const n = wheel.add(ev.deltaY, ev.deltaMode);
    if (n) hid([{ wheel: n }]);
  }, { passive: false });
  document.addEventListener("pointerlockchange", hint);

  const combo = $("combo");
  for (const name of Object.keys(COMBOS)) combo.add(new Option(name, name));
  combo.onchange = () => {
    if (COMBOS[combo.value]) keyboard.combo(COMBOS[combo.value]);
    combo.value = "";
    screen.focus();
  };
  $("release").onclick = async () => {
    releaseEverything();
    const r = await api("POST", "/hid/v1/reset");
    flash(r.status === 200 ? "Every key and button is up." : `Release: ${r.msg}`, r.status === 200 ? "good" : "bad");
  };
}
hint();

// ---- power buttons ------------------------------------------------------------
/** A button that acts on its second click within 4 s: the first one only arms it. */
function confirmed(button, act) {
  const label = button.textContent;
  let armed = null;
  button.onclick = async () => {
    if (!armed) {
      button.classList.add("armed");
      button.textContent = button.dataset.confirm;
      armed = setTimeout(disarm, 4000);
      return;
    }
    disarm();
    button.disabled = true;
    try { await act(); } finally { button.disabled = false; }
  };
  function disarm() {
    clearTimeout(armed);
    armed = null;
    button.classList.remove("armed");
    button.textContent = label;
  }
}

async function press(path, duration, what) {
  flash(`${what}…`);
  const r = await api("POST", path, { duration });
  flash(r.status === 200 ? `${what}: done.` : `${what}: ${r.msg}`, r.status === 200 ? "good" : "bad");
}
if (canOperate) {
  confirmed($("power"), () => press("/gpio/v1/power", 800, "Power button pressed"));
  confirmed($("power-long"), () => press("/gpio/v1/power", 8000, "Power button held for 8 s"));
  confirmed($("reset"), () => press("/gpio/v1/reset", 300, "Reset pressed"));
}

// ---- panels: paste and media ----------------------------------------------------
function toggle(panel, button) {
  const open = panel.hidden;
  for (const p of document.querySelectorAll(".panel")) p.hidden = true;
  for (const b of [$("open-paste"), $("open-media")]) b.setAttribute("aria-pressed", "false");
  panel.hidden = !open;
  button.setAttribute("aria-pressed", String(open));
  return open;
}

if (canOperate) {
  $("open-paste").onclick = () => { if (toggle($("paste-panel"), $("open-paste"))) layouts(); };
  $("open-media").onclick = () => { if (toggle($("media-panel"), $("open-media"))) media(); };
}

async function layouts() {
  const select = $("paste-layout");
  if (select.options.length) return;
  const r = await api("GET", "/hid/v1/layouts");
  if (r.status !== 200) return result("paste-result", `Layouts: ${r.msg}`, "bad");
  const saved = localStorage.getItem("jsipd.layout");
  for (const l of r.data.layouts) select.add(new Option(l.name, l.name));
  select.value = r.data.layouts.some((l) => l.name === saved) ? saved : r.data.default;
  select.onchange = () => localStorage.setItem("jsipd.layout", select.value);
}

function result(id, text, cls = "") {
  const el = $(id);
  el.textContent = text;
  el.className = `result ${cls}`;
}

$("paste-send").onclick = async () => {
  const content = $("paste-text").value;
  if (!content) return result("paste-result", "Nothing to type.", "bad");
  $("paste-send").disabled = true;
  result("paste-result", `Typing ${content.length} characters…`);
  const r = await api("POST", "/hid/v1/paste", { content, layout: $("paste-layout").value || undefined, queue: true });
  $("paste-send").disabled = false;
  if (r.status === 200) result("paste-result", `Typed ${r.data.chars} characters in ${(r.data.ms / 1000).toFixed(1)} s.`, "good");
  else result("paste-result", r.msg, "bad");
};

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function small(label, act, confirm) {
  const b = document.createElement("button");
  b.textContent = label;
  if (confirm) { b.dataset.confirm = confirm; confirmed(b, act); } else b.onclick = act;
  return b;
}

async function media() {
  const [list, mounted] = await Promise.all([api("GET", "/storage/v1/images"), api("GET", "/storage/v1/mounted")]);
  if (list.status !== 200) return result("media-result", `Images: ${list.msg}`, "bad");
  const now = mounted.status === 200 ? mounted.data.mounted : null;
  const box = $("mounted");
  box.classList.toggle("on", !!now);
  box.replaceChildren();
  if (now) {
    box.append(`Plugged in: ${now.file}, as ${now.cdrom ? "a CD-ROM" : "a USB stick"}${now.readonly ? " (read-only)" : ""} `);
    box.append(small("Unplug", () => mediaAction("/storage/v1/unmount", undefined, `${now.file} unplugged.`)));
  } else box.textContent = "Nothing is plugged in.";
  const ul = $("images");
  ul.replaceChildren();
  for (const image of list.data.images) {
    const li = document.createElement("li");
    li.dataset.name = image.name;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = image.name;
    const sz = document.createElement("span");
    sz.className = "size";
    sz.textContent = size(image.size);
    const actions = document.createElement("div");
    actions.className = "actions";
    if (!now) {
      actions.append(
        small("Plug in as CD", () => mediaAction("/storage/v1/mount", { file: image.name, cdrom: true }, `${image.name} is in the CD drive.`)),
        small("as USB stick", () => mediaAction("/storage/v1/mount", { file: image.name, cdrom: false }, `${image.name} is plugged in as a USB stick.`)),
      );
    }
    if (isAdmin && !(now && now.file === image.name)) {
      actions.append(small("Delete", () => mediaAction(`/storage/v1/images/${encodeURIComponent(image.name)}`, null, `${image.name} deleted.`, "DELETE"), "Delete it?"));
    }
    li.append(name, sz, actions);
    ul.append(li);
  }
  if (!list.data.images.length) ul.innerHTML = '<li class="hint">No images yet.</li>';
}

async function mediaAction(path, body, done, method = "POST") {
  const r = await api(method, path, body === null ? undefined : body);
  result("media-result", r.status === 200 ? done : r.msg, r.status === 200 ? "good" : "bad");
  await media();
}

if (isAdmin) {
  $("upload-file").onchange = () => {
    const file = $("upload-file").files[0];
    if (!file) return;
    const bar = $("upload-progress");
    bar.hidden = false;
    bar.value = 0;
    result("upload-percent", "0%");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/storage/v1/images/${encodeURIComponent(file.name)}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (ev) => {
      if (!ev.lengthComputable) return;
      const pct = Math.floor((ev.loaded / ev.total) * 100);
      bar.value = pct;
      result("upload-percent", `${pct}%`);
    };
    xhr.onload = () => {
      let msg = xhr.statusText;
      try { msg = JSON.parse(xhr.responseText).msg || msg; } catch { /* not JSON */ }
      if (xhr.status === 201 || xhr.status === 200) {
        bar.value = 100;
        result("upload-percent", "100%", "good");
        result("media-result", `${file.name} uploaded (${size(file.size)}).`, "good");
      } else {
        result("upload-percent", "failed", "bad");
        result("media-result", `Upload: ${msg}`, "bad");
      }
      $("upload-file").value = "";
      media();
    };
    xhr.onerror = () => result("media-result", "Upload: the connection failed.", "bad");
    xhr.send(file);
  };
}

// ---- who else is here ------------------------------------------------------------
async function people() {
  const r = await api("GET", "/auth/people");
  if (r.status !== 200) return;
  const list = r.data.people;
  const el = $("people");
  el.textContent = list.length === 1
    ? "Only you are here."
    : `${list.length} people here: ` + list.map((p) => `${p.user} (${p.role || "?"}${p.tabs > 1 ? `, ${p.tabs} tabs` : ""})`).join(", ");
  seen.people = list;
}
setInterval(() => { if (jsip.connected) people(); }, 5000);

jsip.start();
