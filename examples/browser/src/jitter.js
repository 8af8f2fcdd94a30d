// Receive-side jitter buffer, a port of the core rules of voip_codec/transport/jitter.py:
// frames are slotted by their unwrapped 32-bit index; a new frame replaces a redundant copy,
// a redundant copy never replaces a frame; frames older than the playout point are late;
// duplicate sequence numbers are dropped; foreign codec ids and frame sizes are invalid.
// Playout starts once the first frame has waited the playout delay, then one frame per tick:
// the slot's payload, or null (conceal) when it is missing. Not ported (yet): the adaptive
// target delay (percentile of transit times), stretching and shrinking, FLAG_END handling and
// loss reports; the delay stays at its initial value.
import { unwrap } from "./wire.js";

export class JitterBuffer {
  constructor({ codecId, frameBytes, frameMs = 80, delayMs = 160 }) {
    Object.assign(this, { codecId, frameBytes, frameMs, delayMs });
    this.slots = new Map();
    this.seen = new Set();
    this.seqRef = null;
    this.frameRef = null;
    this.next = null;
    this.firstArrival = null;
    this.stats = { packets: 0, frames: 0, duplicate: 0, late: 0, invalid: 0, played: 0,
      recovered: 0, concealed: 0 };
  }

  push(p, now) {
    if (p.codecId !== this.codecId || p.frameBytes !== this.frameBytes) { this.stats.invalid++; return false; }
    const seq = this.seqRef === null ? p.seq : unwrap(p.seq, this.seqRef, 16);
    if (this.seen.has(seq)) { this.stats.duplicate++; return false; }
    this.seen.add(seq);
    this.seqRef = this.seqRef === null ? seq : Math.max(this.seqRef, seq);
    if (this.seen.size > 8192) for (const s of this.seen) if (s < this.seqRef - 4096) this.seen.delete(s);
    this.stats.packets++;
    const first = unwrap(p.frameIndex, this.frameRef === null ? p.frameIndex : this.frameRef, 32);
    const last = first + p.frames.length - 1;
    this.frameRef = this.frameRef === null ? last : Math.max(this.frameRef, last);
    if (this.firstArrival === null) this.firstArrival = now;
    p.frames.forEach((payload, i) => {
      const index = first + i;
      if (this.next !== null && index < this.next) { this.stats.late++; return; }
      this.stats.frames++;
      const slot = this.slots.get(index);
      if (!slot || slot.redundant) this.slots.set(index, { payload, redundant: false });
    });
    p.redundant.forEach((payload, j) => {
      const index = first - p.redundant.length + j;
      if ((this.next !== null && index < this.next) || this.slots.has(index)) return;
      this.slots.set(index, { payload, redundant: true });
    });
    return true;
  }

  /** The payload for this tick: {source: "buffering"|"primary"|"redundant"|"concealed", payload}. */
  tick(now) {
    if (this.next === null) {
      if (!this.slots.size || now - this.firstArrival < this.delayMs) return { source: "buffering", payload: null };
      this.next = Math.min(...this.slots.keys());
    }
    const index = this.next++;
    const slot = this.slots.get(index);
    if (slot) {
      this.slots.delete(index);
      this.stats.played++;
      if (slot.redundant) this.stats.recovered++;
      return { source: slot.redundant ? "redundant" : "primary", payload: slot.payload, index };
    }
    this.stats.concealed++;
    return { source: "concealed", payload: null, index };
  }
}
