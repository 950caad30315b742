// The keyboard: browser key events to the hid plugin's events ({"key": code, "down"}).
//
// Keys go by KeyboardEvent.code, the physical key, not by the character: the target
// applies its own layout, as it would to a real keyboard plugged into it. That is what
// "the target's layout" means for typing; paste (which sends characters) names a layout.
//
// A keyboard that never sticks: every key that went down is remembered until it goes up,
// and releaseAll() lifts them (the page calls it when it loses focus, is hidden, or the
// connection drops). Auto-repeat events are not sent; the target repeats by itself.

/** Codes that are not keys the target can have. */
const NOT_KEYS = new Set(["", "Unidentified", "Fn", "FnLock"]);

/** Special keys a browser will not pass on, or a person cannot press without the local
 *  machine acting on them: pressed in order, released in reverse. */
export const COMBOS = {
  "Ctrl+Alt+Delete": ["ControlLeft", "AltLeft", "Delete"],
  "Ctrl+Alt+Backspace": ["ControlLeft", "AltLeft", "Backspace"],
  "Alt+Tab": ["AltLeft", "Tab"],
  "Alt+F4": ["AltLeft", "F4"],
  "Windows key": ["MetaLeft"],
  "Print Screen": ["PrintScreen"],
  "Ctrl+Alt+F1": ["ControlLeft", "AltLeft", "F1"],
  "Ctrl+Alt+F2": ["ControlLeft", "AltLeft", "F2"],
  "Ctrl+Alt+F7": ["ControlLeft", "AltLeft", "F7"],
  "Escape": ["Escape"],
};

/** The events of a combo: every key down in order, then up in reverse. */
export function comboEvents(codes) {
  return [
    ...codes.map((key) => ({ key, down: true })),
    ...[...codes].reverse().map((key) => ({ key, down: false })),
  ];
}

export class Keyboard {
  /** @param {Function} send (events[]) sends hid events to the target */
  constructor(send) {
    this.send = send;
    this.held = new Set();
  }

  /**
   * A keydown or keyup. Returns true when the event belongs to the target (the page
   * should preventDefault it), false when it is nothing the target can get.
   */
  handle(ev) {
    const code = ev.code;
    if (NOT_KEYS.has(code)) return false;
    const down = ev.type === "keydown";
    if (down) {
      if (this.held.has(code)) return true; // auto-repeat
      this.held.add(code);
    } else {
      if (!this.held.has(code)) return true; // went down elsewhere, or released already
      this.held.delete(code);
    }
    this.send([{ key: code, down }]);
    return true;
  }

  /** Lifts every held key; returns how many were held. */
  releaseAll() {
    const held = [...this.held];
    this.held.clear();
    if (held.length) this.send(held.map((key) => ({ key, down: false })));
    return held.length;
  }

  /** Forgets held keys without sending (the server released them: socket lost). */
  forget() {
    this.held.clear();
  }

  combo(codes) {
    this.releaseAll();
    this.send(comboEvents(codes));
  }
}
