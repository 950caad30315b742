// The console's JSIP client against a fake WebSocket and fake timers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Jsip, backoff, REQUEST_TIMEOUT_MS } from "../jsip.js";

/** Timers run by hand: `advance(ms)` fires what is due, in order. */
function clock() {
  let now = 0, next = 1;
  const timers = new Map();
  return {
    setTimeout: (fn, ms) => { const id = next++; timers.set(id, { at: now + ms, fn }); return id; },
    clearTimeout: (id) => timers.delete(id),
    advance(ms) {
      const until = now + ms;
      for (;;) {
        const due = [...timers.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = until;
    },
    pending: () => timers.size,
  };
}

/** A WebSocket class whose instances the test opens, feeds and closes. */
function sockets() {
  const made = [];
  class FakeSocket {
    constructor(url) { this.url = url; this.readyState = 0; this.sent = []; made.push(this); }
    send(text) { this.sent.push(JSON.parse(text)); }
    close(code = 1000, reason = "") { this.drop(code, reason); }
    // test side
    open() { this.readyState = 1; this.onopen && this.onopen(); }
    feed(m) { this.onmessage({ data: typeof m === "string" ? m : JSON.stringify(m) }); }
    drop(code = 1006, reason = "") { this.readyState = 3; this.onclose && this.onclose({ code, reason }); }
  }
  return { FakeSocket, made };
}

function client(extra = {}) {
  const c = clock(), s = sockets();
  const states = [];
  const jsip = new Jsip({
    url: "ws://kvm/rtc?tab=t1", name: "olga~t1", WebSocket: s.FakeSocket,
    setTimeout: c.setTimeout, clearTimeout: c.clearTimeout, random: () => 0,
    onState: (st, d) => states.push([st, d]), ...extra,
  });
  return { jsip, c, s, states };
}

const flush = () => new Promise((r) => setImmediate(r));

test("a request resolves with its final response, matched by dialog and CSeq", async () => {
  const { jsip, s } = client();
  jsip.start();
  s.made[0].open();
  const first = jsip.request({ Type: "INVITE", "Request-URI": "kbd@hid", DialogueID: "d1" });
  const second = jsip.request({ Type: "INFO", "Request-URI": "kbd@hid", DialogueID: "d1", Body: [] });
  const [inv, info] = s.made[0].sent;
  assert.equal(inv.From, "olga~t1");
  assert.equal(inv.To, "kbd@hid");
  assert.equal(inv.CSeq, 1);
  assert.equal(info.CSeq, 2);
  // Answers out of order, a provisional one first: each goes to its own request.
  s.made[0].feed({ Type: "RESPONSE", Code: 100, DialogueID: "d1", CSeq: 2 });
  s.made[0].feed({ Type: "RESPONSE", Code: 403, Reason: "viewer", DialogueID: "d1", CSeq: 2 });
  s.made[0].feed({ Type: "RESPONSE", Code: 200, DialogueID: "d1", CSeq: 1 });
  assert.equal((await first).Code, 200);
  assert.equal((await second).Code, 403);
});

test("a request with no answer fails after the timeout, and a late answer is ignored", async () => {
  const { jsip, s, c } = client();
  jsip.start();
  s.made[0].open();
  const r = jsip.request({ Type: "INFO", "Request-URI": "kbd@hid", DialogueID: "d" });
  c.advance(REQUEST_TIMEOUT_MS - 1);
  let failed = null;
  r.catch((e) => { failed = e; });
  await flush();
  assert.equal(failed, null);
  c.advance(1);
  await flush();
  assert.match(String(failed), /no answer/);
  s.made[0].feed({ Type: "RESPONSE", Code: 200, DialogueID: "d", CSeq: 1 }); // no throw
});

test("a request while disconnected fails at once instead of queueing", async () => {
  const { jsip } = client();
  jsip.start();
  await assert.rejects(jsip.request({ Type: "INFO", "Request-URI": "kbd@hid", DialogueID: "d" }), /not connected/);
});

test("a drop fails what is pending, reports lost, and reconnects with backoff to the same name", async () => {
  let connects = 0;
  const { jsip, s, c, states } = client({ onConnected: () => connects++ });
  jsip.start();
  s.made[0].open();
  assert.equal(connects, 1);
  const pending = jsip.request({ Type: "INFO", "Request-URI": "kbd@hid", DialogueID: "d" });
  s.made[0].drop(4001, "disconnected by an operator");
  await assert.rejects(pending, /lost/);
  const lost = states.at(-1);
  assert.equal(lost[0], "lost");
  assert.equal(lost[1].code, 4001);
  assert.equal(lost[1].retryInMs, 500);
  assert.equal(s.made.length, 1, "waits before trying again");
  c.advance(499);
  assert.equal(s.made.length, 1);
  c.advance(1);
  assert.equal(s.made.length, 2);
  assert.equal(s.made[1].url, "ws://kvm/rtc?tab=t1", "the same tab: the name keeps its dialogs");
  // That attempt fails too: the next wait is longer.
  s.made[1].drop();
  assert.equal(states.at(-1)[1].retryInMs, 1000);
  c.advance(1000);
  s.made[2].open();
  assert.equal(connects, 2);
  assert.equal(jsip.state, "connected");
  // After a good connection the backoff starts over.
  s.made[2].drop();
  assert.equal(states.at(-1)[1].retryInMs, 500);
});

test("stop() closes for good: no reconnect", () => {
  const { jsip, s, c } = client();
  jsip.start();
  s.made[0].open();
  jsip.stop();
  c.advance(60000);
  assert.equal(s.made.length, 1);
  assert.equal(c.pending(), 0);
});

test("requests from the server are answered with what the page returns", async () => {
  const seen = [];
  const { jsip, s } = client({ onRequest: (m) => { seen.push(m.Type); return m.Type === "BYE" ? 200 : 481; } });
  jsip.start();
  s.made[0].open();
  s.made[0].feed({ Type: "NOTIFY", From: "led@gpio", To: "olga~t1", DialogueID: "n1", CSeq: 1, Event: "led", Body: { pwr: true } });
  s.made[0].feed({ Type: "BYE", From: "screen@stream", To: "olga~t1", DialogueID: "v1", CSeq: 2 });
  s.made[0].feed("not json");
  await flush();
  assert.deepEqual(seen, ["NOTIFY", "BYE"]);
  const answers = s.made[0].sent.filter((m) => m.Type === "RESPONSE");
  assert.deepEqual(answers.map((m) => [m.DialogueID, m.CSeq, m.Code]), [["n1", 1, 481], ["v1", 2, 200]]);
  assert.equal(answers[0].From, "led@gpio", "From and To stay as the request had them");
});

test("backoff doubles to 8 s and adds at most 20% jitter", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 9].map((n) => backoff(n, () => 0)), [500, 1000, 2000, 4000, 8000, 8000, 8000]);
  assert.equal(backoff(0, () => 1), 600);
});

test("a dialog is kept alive with an UPDATE every third of Expire, until it is gone", async () => {
  const { jsip, s, c } = client();
  jsip.start();
  s.made[0].open();
  const gone = [];
  jsip.keepalive("h1", "kbd@hid", 120, (why) => gone.push(why));
  c.advance(39999);
  assert.equal(s.made[0].sent.length, 0);
  c.advance(1);
  const first = s.made[0].sent.at(-1);
  assert.deepEqual([first.Type, first.DialogueID, first.Expire, first["Request-URI"]], ["UPDATE", "h1", 120, "kbd@hid"]);
  s.made[0].feed({ Type: "RESPONSE", Code: 200, DialogueID: "h1", CSeq: first.CSeq });
  await flush();
  c.advance(40000);
  const second = s.made[0].sent.at(-1);
  assert.equal(second.Type, "UPDATE");
  assert.equal(second.CSeq, first.CSeq + 1);
  // The server ended the dialog: the page hears of it once, and the UPDATEs stop.
  s.made[0].feed({ Type: "RESPONSE", Code: 481, Reason: "no such dialog", DialogueID: "h1", CSeq: second.CSeq });
  await flush();
  assert.deepEqual(gone, ["481 no such dialog"]);
  const sent = s.made[0].sent.length;
  c.advance(200000);
  assert.equal(s.made[0].sent.length, sent);
});

test("keepalives stop when asked and when the socket drops", () => {
  const { jsip, s, c } = client();
  jsip.start();
  s.made[0].open();
  jsip.keepalive("a", "kbd@hid", 120, () => {});
  jsip.keepalive("b", "screen@stream", 120, () => {});
  jsip.endKeepalive("a");
  s.made[0].drop();
  c.advance(40000); // the reconnect happens; no UPDATE for either dialog
  s.made[1].open();
  c.advance(200000);
  assert.equal(s.made[0].sent.length + s.made[1].sent.length, 0);
});
