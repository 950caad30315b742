// The mouse: where the pointer is on the picture, in the hid plugin's absolute range,
// and the buttons and wheel.

/** The hid plugin's absolute range: 0..=32767 on both axes. */
export const ABS_MAX = 32767;

/** MouseEvent.button → the hid plugin's button names. */
export const BUTTONS = ["left", "middle", "right", "back", "forward"];

/**
 * Where the picture is drawn inside an element of `box` size when it is scaled to fit
 * with its aspect kept (CSS object-fit: contain): {left, top, width, height}.
 */
export function pictureRect(box, pictureWidth, pictureHeight) {
  if (!pictureWidth || !pictureHeight || !box.width || !box.height) return null;
  const scale = Math.min(box.width / pictureWidth, box.height / pictureHeight);
  const width = pictureWidth * scale;
  const height = pictureHeight * scale;
  return {
    left: box.left + (box.width - width) / 2,
    top: box.top + (box.height - height) / 2,
    width,
    height,
  };
}

/**
 * The absolute position {x, y} (0..=ABS_MAX) of a pointer at client (cx, cy) over a
 * picture drawn at `rect`; null outside the picture (over the black bars).
 */
export function absolute(cx, cy, rect) {
  if (!rect) return null;
  const fx = (cx - rect.left) / rect.width;
  const fy = (cy - rect.top) / rect.height;
  if (fx < 0 || fx > 1 || fy < 0 || fy > 1) return null;
  return { x: Math.round(fx * ABS_MAX), y: Math.round(fy * ABS_MAX) };
}

/**
 * Wheel deltas to whole notches (up > 0), keeping the remainder: a touchpad sends many
 * small deltas, a mouse wheel one of about 100 pixels per notch.
 */
export class Wheel {
  constructor() {
    this.rest = 0;
  }

  /** @returns {number} notches to send now (0 when not a whole one yet) */
  add(deltaY, deltaMode) {
    const pixels = deltaMode === 1 ? deltaY * 33 : deltaMode === 2 ? deltaY * 400 : deltaY;
    this.rest -= pixels; // DOM: down > 0; hid: up > 0
    const notches = Math.trunc(this.rest / 100);
    this.rest -= notches * 100;
    return Math.max(-127, Math.min(127, notches)) || 0; // never -0
  }
}

/**
 * Pointer moves coalesced to at most one message per flush: the newest absolute
 * position, or the sum of relative moves (each capped to the hid range).
 */
export class Moves {
  constructor() {
    this.abs = null;
    this.dx = 0;
    this.dy = 0;
  }

  moveTo(p) {
    this.abs = p;
  }

  moveBy(dx, dy) {
    this.dx += dx;
    this.dy += dy;
  }

  /** The events to send now, and nothing remembered after. */
  take() {
    const out = [];
    if (this.abs) out.push(this.abs);
    if (this.dx || this.dy) {
      const cap = (v) => Math.max(-32767, Math.min(32767, Math.round(v)));
      out.push({ dx: cap(this.dx), dy: cap(this.dy) });
    }
    this.abs = null;
    this.dx = 0;
    this.dy = 0;
    return out;
  }
}
