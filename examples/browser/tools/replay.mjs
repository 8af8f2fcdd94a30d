// Replays a recorded packet arrival trace through the page's receive logic (src/jitter.js
// Receiver) and prints what it played, for tests/integration/test_browser_js.py to compare
// with Python's ReceiveSession on the same trace.
// Usage: node tools/replay.mjs TRACE.json   (TRACE: {codec_id, frame_bytes, jitter: {...},
//        arrivals: [[t_seconds, hex], ...], ticks: [t_seconds, ...]})
import { readFileSync } from "node:fs";

import { Receiver } from "../src/jitter.js";

const trace = JSON.parse(readFileSync(process.argv[2], "utf8"));
const hex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
const reports = [];
const receiver = new Receiver({ codecId: trace.codec_id, frameBytes: trace.frame_bytes, jitter: trace.jitter,
  sendReport: (bytes) => reports.push(Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")) });
const events = [...trace.arrivals.map(([t, data]) => ({ t, order: 0, data })), ...trace.ticks.map((t) => ({ t, order: 1 }))];
events.sort((a, b) => a.t - b.t || a.order - b.order);
const sources = [];
for (const e of events) {
  if (e.order === 0) receiver.onDatagram(hex(e.data), e.t);
  else sources.push(receiver.tick(e.t).source);
}
console.log(JSON.stringify({ stats: receiver.stats, sources, reports }));
