import { test } from "node:test";
import assert from "node:assert/strict";
import { Keyboard, COMBOS, comboEvents } from "../keys.js";

const ev = (type, code, extra = {}) => ({ type, code, ...extra });

test("keys go by physical code, once per press; auto-repeat is not sent", () => {
  const sent = [];
  const k = new Keyboard((e) => sent.push(...e));
  assert.equal(k.handle(ev("keydown", "KeyQ", { key: "a" })), true, "an AZERTY 'a' is the Q key");
  assert.equal(k.handle(ev("keydown", "KeyQ", { repeat: true })), true);
  assert.equal(k.handle(ev("keyup", "KeyQ")), true);
  assert.deepEqual(sent, [{ key: "KeyQ", down: true }, { key: "KeyQ", down: false }]);
});

test("no key sticks: releaseAll lifts what is held, in one batch, once", () => {
  const batches = [];
  const k = new Keyboard((e) => batches.push(e));
  k.handle(ev("keydown", "ShiftLeft"));
  k.handle(ev("keydown", "KeyA"));
  assert.equal(k.releaseAll(), 2);
  assert.deepEqual(batches.at(-1), [{ key: "ShiftLeft", down: false }, { key: "KeyA", down: false }]);
  assert.equal(k.releaseAll(), 0);
  // A keyup for a key already released (focus came back while it was held) sends nothing.
  const before = batches.length;
  k.handle(ev("keyup", "KeyA"));
  assert.equal(batches.length, before);
});

test("forget() drops held keys without sending: the server released them already", () => {
  const sent = [];
  const k = new Keyboard((e) => sent.push(...e));
  k.handle(ev("keydown", "ControlLeft"));
  k.forget();
  assert.equal(k.releaseAll(), 0);
  assert.equal(sent.length, 1);
});

test("codes that are no key are left to the browser", () => {
  const sent = [];
  const k = new Keyboard((e) => sent.push(...e));
  assert.equal(k.handle(ev("keydown", "")), false);
  assert.equal(k.handle(ev("keydown", "Unidentified")), false);
  assert.equal(sent.length, 0);
});

test("a combo presses in order and releases in reverse, after lifting held keys", () => {
  assert.deepEqual(comboEvents(COMBOS["Ctrl+Alt+Delete"]), [
    { key: "ControlLeft", down: true }, { key: "AltLeft", down: true }, { key: "Delete", down: true },
    { key: "Delete", down: false }, { key: "AltLeft", down: false }, { key: "ControlLeft", down: false },
  ]);
  const batches = [];
  const k = new Keyboard((e) => batches.push(e));
  k.handle(ev("keydown", "KeyX"));
  k.combo(COMBOS["Alt+Tab"]);
  assert.deepEqual(batches[1], [{ key: "KeyX", down: false }]);
  assert.equal(batches[2].length, 4);
});
