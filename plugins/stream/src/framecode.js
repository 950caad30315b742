"use strict";
// Reads the frame stamp the test source paints (plugins/stream/src/framecode.rs): 80
// squares across the top, 4 sync, 32 bits of frame number, 40 bits of capture time in
// ms since the epoch modulo 2^40, and a 4-bit check. Arithmetic, not bit operators,
// because JS bit operators work on 32 bits.
function readStamp(rgba, width) {
  const side = Math.max(1, Math.floor(width / 80));
  const bit = (i) => {
    const x = i * side + Math.floor(side / 2), y = Math.floor(side / 2);
    const p = (y * width + x) * 4;
    return (rgba[p] + rgba[p + 1] + rgba[p + 2]) / 3 >= 128 ? 1 : 0;
  };
  const sync = [1, 0, 1, 0];
  for (let i = 0; i < 4; i++) if (bit(i) !== sync[i]) return null;
  const field = (from, len) => { let v = 0; for (let i = from; i < from + len; i++) v = v * 2 + bit(i); return v; };
  const ones = (v) => { let n = 0; while (v > 0) { n += v % 2; v = Math.floor(v / 2); } return n; };
  const frame = field(4, 32), time = field(36, 40);
  if (field(76, 4) !== (ones(frame) + ones(time)) % 16) return null;
  return { frame, time };
}
