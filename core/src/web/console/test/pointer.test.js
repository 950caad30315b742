import { test } from "node:test";
import assert from "node:assert/strict";
import { pictureRect, absolute, Wheel, Moves, ABS_MAX, BUTTONS } from "../pointer.js";

test("a 4:3 picture in a wide box has bars left and right, and maps corner to corner", () => {
  const r = pictureRect({ left: 0, top: 40, width: 1366, height: 680 }, 1024, 768);
  assert.equal(r.height, 680);
  assert.ok(Math.abs(r.width - 906.67) < 0.01);
  assert.ok(Math.abs(r.left - 229.67) < 0.01);
  assert.deepEqual(absolute(r.left, r.top, r), { x: 0, y: 0 });
  assert.deepEqual(absolute(r.left + r.width, r.top + r.height, r), { x: ABS_MAX, y: ABS_MAX });
  assert.deepEqual(absolute(r.left + r.width / 2, r.top + r.height / 2, r), { x: 16384, y: 16384 });
  assert.equal(absolute(100, 300, r), null, "over the black bar");
});

test("no picture yet: no position", () => {
  assert.equal(pictureRect({ left: 0, top: 0, width: 800, height: 600 }, 0, 0), null);
  assert.equal(absolute(10, 10, null), null);
});

test("wheel: one notch per 100 px, up is positive, small deltas add up", () => {
  const w = new Wheel();
  assert.equal(w.add(100, 0), -1);
  assert.equal(w.add(-40, 0), 0);
  assert.equal(w.add(-40, 0), 0);
  assert.equal(w.add(-40, 0), 1);
  assert.equal(w.add(3, 1), 0, "lines: 3 × 33 px is not yet a notch after the remainder");
  assert.equal(new Wheel().add(-100000, 0), 127, "capped to the report's range");
});

test("moves coalesce: the newest absolute position, relative moves summed", () => {
  const m = new Moves();
  m.moveTo({ x: 1, y: 1 });
  m.moveTo({ x: 5, y: 6 });
  m.moveBy(3, -2);
  m.moveBy(4, 1);
  assert.deepEqual(m.take(), [{ x: 5, y: 6 }, { dx: 7, dy: -1 }]);
  assert.deepEqual(m.take(), []);
  m.moveBy(99999, 0);
  assert.deepEqual(m.take(), [{ dx: 32767, dy: 0 }]);
});

test("MouseEvent.button numbers name the hid buttons", () => {
  assert.deepEqual(BUTTONS.slice(0, 3), ["left", "middle", "right"]);
});
