// The console's JSIP client: one WebSocket to the people's port's /rtc, requests matched
// to their final responses, incoming requests handed to the page, and a reconnect with
// backoff when the socket drops. Sans-DOM: the WebSocket class and the timer functions
// are passed in, so node's test runner drives it with fakes.

/** Delay before reconnect attempt `n` (0-based): 0.5 s doubling to 8 s, with up to 20%
 *  jitter so that many consoles cut at once do not come back in the same millisecond. */
export function backoff(n, random = Math.random) {
  const base = Math.min(8000, 500 * 2 ** Math.min(n, 4));
  return Math.round(base * (1 + 0.2 * random()));
}

/** How long a request waits for its final response before it fails. */
export const REQUEST_TIMEOUT_MS = 15000;

/** The session interval the console asks for in its INVITEs (JSIP `Expire`, seconds).
 *  The answering side ends a dialog with no refresh within it, so the page sends an
 *  UPDATE every third of it (JSIP.md §4, the calling side's keepalive). */
export const SESSION_EXPIRE_S = 120;

export class Jsip {
  /**
   * @param {object} o
   * @param {string} o.url         ws://host/rtc?tab=… (the tab stays the same on every
   *                               reconnect, so the name keeps its dialogs and queue)
   * @param {string} o.name        this socket's JSIP name (USER~TAB): From of requests
   * @param {Function} o.WebSocket the WebSocket class
   * @param {Function} [o.onState] (state, detail): "connecting" | "connected" | "lost"
   * @param {Function} [o.onRequest] (message): a request from the server; return a code
   *                               (default 200) or a Promise of one
   * @param {Function} [o.onConnected] called after every (re)connect
   */
  constructor(o) {
    this.url = o.url;
    this.name = o.name;
    this.WebSocket = o.WebSocket;
    this.onState = o.onState || (() => {});
    this.onRequest = o.onRequest || (() => 200);
    this.onConnected = o.onConnected || (() => {});
    this.setTimeout = o.setTimeout || globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = o.clearTimeout || globalThis.clearTimeout.bind(globalThis);
    this.random = o.random || Math.random;
    this.ws = null;
    this.attempt = 0;
    this.pending = new Map(); // "dialog/cseq" → {resolve, reject, timer}
    this.cseq = new Map(); // dialog → last CSeq sent
    this.stopped = false;
    this.retryTimer = null;
    this.state = "connecting";
    this.keepalives = new Map(); // dialog → timer
  }

  start() {
    this.stopped = false;
    this.open();
  }

  /** Closes for good (sign-out, page unload): no reconnect. */
  stop() {
    this.stopped = true;
    if (this.retryTimer) this.clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close(1000, "bye");
    this.failPending("the console closed");
  }

  get connected() {
    return this.state === "connected";
  }

  setState(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }

  open() {
    this.setState("connecting", { attempt: this.attempt });
    const ws = new this.WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.setState("connected");
      this.onConnected();
    };
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.received(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failPending("the connection was lost");
      if (this.stopped) return;
      const delay = backoff(this.attempt++, this.random);
      this.setState("lost", { code: ev.code, reason: ev.reason, retryInMs: delay });
      this.retryTimer = this.setTimeout(() => {
        this.retryTimer = null;
        if (!this.stopped) this.open();
      }, delay);
    };
  }

  /**
   * Keeps INVITE dialog `dialog` alive: an UPDATE every `expireS / 3` seconds. When an
   * UPDATE is refused (481: the server ended the dialog) or unanswered, `gone(reason)`
   * is called and the keepalive stops. Stops too with endKeepalive() and on a drop.
   */
  keepalive(dialog, uri, expireS, gone) {
    this.endKeepalive(dialog);
    const tick = () => {
      this.request({ Type: "UPDATE", "Request-URI": uri, DialogueID: dialog, Expire: expireS })
        .then((r) => {
          if (!this.keepalives.has(dialog)) return;
          if (r.Code >= 300) {
            this.keepalives.delete(dialog);
            gone(`${r.Code} ${r.Reason || ""}`.trim());
          } else {
            this.keepalives.set(dialog, this.setTimeout(tick, (expireS * 1000) / 3));
          }
        })
        .catch(() => {}); // the socket dropped: every keepalive stops with it
    };
    this.keepalives.set(dialog, this.setTimeout(tick, (expireS * 1000) / 3));
  }

  endKeepalive(dialog) {
    const t = this.keepalives.get(dialog);
    if (t !== undefined) this.clearTimeout(t);
    this.keepalives.delete(dialog);
  }

  failPending(why) {
    for (const t of this.keepalives.values()) this.clearTimeout(t);
    this.keepalives.clear();
    for (const p of this.pending.values()) {
      this.clearTimeout(p.timer);
      p.reject(new Error(why));
    }
    this.pending.clear();
  }

  nextCseq(dialog) {
    const n = (this.cseq.get(dialog) || 0) + 1;
    this.cseq.set(dialog, n);
    return n;
  }

  write(message) {
    if (!this.ws || this.ws.readyState !== 1) throw new Error("not connected");
    this.ws.send(JSON.stringify(message));
  }

  /**
   * Sends a request in `fields.DialogueID` and resolves with its final response (any
   * code; the caller decides what a 4xx means). Rejects when not connected, when the
   * socket drops first, or after REQUEST_TIMEOUT_MS.
   */
  request(fields) {
    const dialog = fields.DialogueID;
    const cseq = this.nextCseq(dialog);
    const message = { From: this.name, To: fields["Request-URI"], ...fields, CSeq: cseq };
    return new Promise((resolve, reject) => {
      try {
        this.write(message);
      } catch (e) {
        reject(e);
        return;
      }
      const key = `${dialog}/${cseq}`;
      const timer = this.setTimeout(() => {
        this.pending.delete(key);
        reject(new Error(`${message.Type} ${message["Request-URI"]}: no answer in ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(key, { resolve, reject, timer });
    });
  }

  /** A request that gets no response (ACK). */
  notify(fields) {
    const dialog = fields.DialogueID;
    this.write({ From: this.name, To: fields["Request-URI"], ...fields, CSeq: this.nextCseq(dialog) });
  }

  received(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      return; // the server only sends JSON; nothing to answer
    }
    if (m.Type === "RESPONSE") {
      if (typeof m.Code !== "number" || m.Code < 200) return; // provisional
      const key = `${m.DialogueID}/${m.CSeq}`;
      const p = this.pending.get(key);
      if (!p) return; // late, or answered already
      this.pending.delete(key);
      this.clearTimeout(p.timer);
      p.resolve(m);
      return;
    }
    if (m.Type === "ACK") return;
    Promise.resolve()
      .then(() => this.onRequest(m))
      .catch(() => 500)
      .then((code) => this.answer(m, typeof code === "number" ? code : 200));
  }

  answer(m, code) {
    if (!this.ws || this.ws.readyState !== 1) return;
    this.write({ Type: "RESPONSE", Code: code, From: m.From, To: m.To, DialogueID: m.DialogueID, CSeq: m.CSeq });
  }
}

/** A fresh id for a dialog or a tab. */
export function randomId(prefix, random = Math.random) {
  return prefix + Math.floor(random() * 2 ** 48).toString(36);
}
