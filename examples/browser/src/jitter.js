// The receive side of voip_codec/transport, ported rule for rule so that the page plays,
// stretches, skips and conceals exactly where a Python peer would (tools/replay.mjs and
// tests/integration/test_browser_js.py replay one packet trace through both):
//
// - JitterBuffer: jitter.py (frames slotted by unwrapped index, redundant copies, duplicates,
//   late frames, the adaptive NetEQ-like target delay from the percentile of transit times, the
//   late-frame floor, the wait for redundant copies, stretch/skip, resync, FLAG_END, restarts);
// - LossStatistics: redundancy.py's receiver statistics for loss reports;
// - RedundancyController: redundancy.py's choice of K from the reports (sender side);
// - Receiver: session.py's ReceiveSession.on_datagram/tick (one WireReader for both packet
//   versions, a loss report every 12 played frames, handed to a paired sender or sent alone).
// Times are seconds on the caller's clock, as in Python.
import { FLAG_END, FLAG_SILENCE, FLAG_START, MAX_NEW_FRAMES, MAX_REDUNDANCY, PacketError, WireReader, roundHalfEven,
  compactFromReport, compactReportToBytes, lossReportToBytes, unwrap } from "./wire.js";

export const LATE_HALF_LIFE = 25;
export const DELAY_HISTORY = 4096;
const EPS = 1e-9;

/** JitterConfig's defaults (jitter.py); `initialDelayMs`/`minDelayMs` as `voip-codec call`
 * sets them from --playout-delay (jitterConfigFor). */
export const JITTER_DEFAULTS = {
  frameMs: 80, initialDelayMs: 0, minDelayMs: 0, maxDelayMs: 800, percentile: 95, history: 250,
  warmupFrames: 10, waitForRedundancy: true, redundancyWaitPackets: 1, codecId: null, frameBytes: null,
};

/** commands.jitter_config: the target starts at `playoutDelayMs`, never below min(80, it). */
export function jitterConfigFor(playoutDelayMs, extra = {}) {
  return { ...JITTER_DEFAULTS, initialDelayMs: playoutDelayMs, minDelayMs: Math.min(80, playoutDelayMs), ...extra };
}

/** numpy.percentile's default (linear interpolation between closest ranks). */
export function percentile(values, q) {
  const a = Float64Array.from(values).sort();
  const rank = (q / 100) * (a.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return lo === hi ? a[lo] : a[lo] + (a[hi] - a[lo]) * (rank - lo);
}

const minOf = (xs) => xs.reduce((m, x) => (x < m ? x : m), Infinity);

export class JitterBuffer {
  constructor(config = {}) {
    this.config = { ...JITTER_DEFAULTS, ...config };
    this.period = this.config.frameMs / 1000;
    this.stats = { packets_received: 0, frames_received: 0, invalid: 0, duplicate: 0, late: 0,
      played: 0, recovered_from_redundancy: 0, concealed: 0, lost: 0, stretched: 0, skipped: 0,
      resyncs: 0, jitter_ms: 0, target_delay_ms: this.config.initialDelayMs, current_delay_ms: 0 };
    this.slots = new Map();
    this.transits = [];
    this.next = null;
    this.frameRef = null;
    this.seqRef = null;
    this.seen = new Set();
    this.lastTransit = null;
    this.prevConcealed = false;
    this.origin = null;
    this.redundancyWait = 0;
    this.end = null;
    this.lateFloorMs = 0;
    this.lateFloorUntil = -1;
    this.lossUntil = -1;
    this.stretchedIndex = null;
    this.lostRecent = [];
    this.baseTargetMs = this.config.initialDelayMs;
  }

  restart() {
    this.slots.clear();
    this.transits = [];
    this.next = null;
    this.frameRef = null;
    this.seqRef = null;
    this.seen.clear();
    this.lastTransit = null;
    this.prevConcealed = false;
    this.origin = null;
    this.end = null;
    this.lateFloorMs = 0;
    this.lateFloorUntil = -1;
    this.lossUntil = -1;
    this.lostRecent = [];
    this.behind = 0;
    this.stats.resyncs++;
  }

  get ended() { return this.end !== null && this.next !== null && this.next > this.end; }
  get started() { return this.next !== null; }

  unwrapIndex(frameIndex) { return this.frameRef === null ? frameIndex : unwrap(frameIndex, this.frameRef, 32); }

  maxFrames() { return Math.ceil(this.config.maxDelayMs / this.config.frameMs) + MAX_NEW_FRAMES; }

  /** Accept one parsed (full-width) audio packet; false when it was dropped. */
  push(packet, now) {
    const cfg = this.config;
    if (cfg.codecId !== null && packet.codecId !== cfg.codecId) { this.stats.invalid++; return false; }
    if (cfg.frameBytes !== null && packet.frames[0].length !== cfg.frameBytes) { this.stats.invalid++; return false; }
    let seq = this.seqRef === null ? packet.seq : unwrap(packet.seq, this.seqRef, 16);
    if (this.seen.has(seq)) { this.stats.duplicate++; return false; }
    if (packet.flags & FLAG_START && this.next !== null) {
      const gap = unwrap(packet.frameIndex, this.next, 32) - this.next;
      if (this.ended || !(-this.maxFrames() <= gap && gap <= this.maxFrames())) {
        this.restart();
        seq = packet.seq;
      }
    } else if (this.next !== null && !this.ended) {
      // jitter.py BEHIND_RESYNC_PACKETS: a stalled sender's frames all come late afterwards
      const ref0 = this.frameRef !== null ? this.frameRef : packet.frameIndex;
      if (unwrap(packet.frameIndex, ref0, 32) + packet.frames.length - 1 < this.next) {
        this.behind = (this.behind || 0) + 1;
        if (this.behind >= 3) { this.restart(); seq = packet.seq; }
      } else {
        this.behind = 0;
      }
    }
    this.seen.add(seq);
    this.seqRef = this.seqRef === null ? seq : Math.max(this.seqRef, seq);
    if (this.seen.size > 8192) {
      const floor = this.seqRef - 4096;
      for (const s of this.seen) if (s < floor) this.seen.delete(s);
    }
    this.stats.packets_received++;

    const first = unwrap(packet.frameIndex, this.frameRef !== null ? this.frameRef : packet.frameIndex, 32);
    const nNew = packet.frames.length;
    const last = first + nNew - 1;
    this.frameRef = this.frameRef === null ? last : Math.max(this.frameRef, last);
    this.resyncIfFarAhead(last);
    if (packet.flags & FLAG_END) this.end = last;
    else if (this.end !== null && last > this.end) this.end = null;

    if (this.origin === null) this.origin = first;
    const transit = now - (last - this.origin) * this.period;
    if (this.lastTransit !== null) {
      const d = Math.abs(transit - this.lastTransit) * 1000;
      this.stats.jitter_ms += (d - this.stats.jitter_ms) / 16;
    }
    this.lastTransit = transit;
    const silence = Boolean(packet.flags & FLAG_SILENCE);
    packet.frames.forEach((payload, i) => {
      const index = first + i;
      const transitI = now - (index - this.origin) * this.period;
      this.transits.push(transitI);
      if (this.transits.length > cfg.history) this.transits.shift();
      if (this.next !== null && (index < this.next || index === this.stretchedIndex)) {
        const lateMs = (transitI - minOf(this.transits)) * 1000;
        this.lateFloorMs = Math.max(this.lateFloorMs, lateMs);
        this.lateFloorUntil = index + cfg.history;
      }
      if (this.next !== null && index < this.next) { this.stats.late++; return; }
      this.stats.frames_received++;
      const slot = this.slots.get(index);
      if (!slot || slot.redundant) this.slots.set(index, { payload, redundant: false, silence });
    });
    const nRed = packet.redundant.length;
    packet.redundant.forEach((payload, j) => {
      const index = first - nRed + j;
      if (this.next !== null && index < this.next) {
        if (this.lostRecent.includes(index)) this.lossUntil = last + cfg.history;
        return;
      }
      if (this.slots.has(index)) return;
      this.lossUntil = last + cfg.history;
      this.slots.set(index, { payload, redundant: true, silence: false });
    });
    const packets = Math.min(cfg.redundancyWaitPackets, Math.ceil(nRed / nNew));
    this.redundancyWait = nRed ? packets * nNew * cfg.frameMs : 0;
    this.updateTarget();
    return true;
  }

  resyncIfFarAhead(last) {
    if (this.next === null || last - this.next <= this.maxFrames()) return;
    const newNext = last - Math.ceil(this.stats.target_delay_ms / this.config.frameMs);
    for (const k of [...this.slots.keys()]) if (k < newNext) this.slots.delete(k);
    this.next = newNext;
    this.stats.resyncs++;
  }

  updateTarget() {
    const cfg = this.config;
    let base;
    if (this.transits.length < cfg.warmupFrames) {
      base = cfg.initialDelayMs;
    } else {
      const lo = minOf(this.transits);
      base = percentile(this.transits.map((x) => (x - lo) * 1000), cfg.percentile);
    }
    if (this.frameRef !== null && this.frameRef <= this.lateFloorUntil) {
      const age = this.frameRef - (this.lateFloorUntil - cfg.history);
      base = Math.max(base, this.lateFloorMs * 0.5 ** (Math.max(0, age) / LATE_HALF_LIFE));
    } else {
      this.lateFloorMs = 0;
    }
    this.baseTargetMs = base;
    const lossSeen = this.frameRef !== null && this.frameRef <= this.lossUntil;
    const wait = cfg.waitForRedundancy && lossSeen ? this.redundancyWait : 0;
    this.stats.target_delay_ms = Math.min(Math.max(base + wait, cfg.minDelayMs), cfg.maxDelayMs);
  }

  stretchTarget() {
    const cfg = this.config;
    const wait = cfg.waitForRedundancy ? this.redundancyWait : 0;
    return Math.max(this.stats.target_delay_ms,
      Math.min(Math.max(this.baseTargetMs + wait, cfg.minDelayMs), cfg.maxDelayMs)) / 1000;
  }

  currentDelay(index, now) {
    const ref = minOf(this.transits);
    const origin = this.origin !== null ? this.origin : index;
    return now - (ref + (index - origin) * this.period);
  }

  /** The frame for this tick: {payload, source: "buffering"|"primary"|"redundant"|"concealed"|
   * "stretch"|"ended", index, skipped, skippedPayloads} (payload null: conceal, or silence while
   * buffering; skippedPayloads / skippedIndices: the silent frames dropped just before it, which
   * the decoder must still see to stay in step with the sender's encoder). */
  tick(now) {
    if (this.ended) return { payload: null, source: "ended", index: null, skipped: 0 };
    const target = this.stats.target_delay_ms / 1000;
    const period = this.period;
    if (this.next === null) {
      if (!this.slots.size) return { payload: null, source: "buffering", index: null, skipped: 0 };
      const start = Math.min(...this.slots.keys());
      if (this.currentDelay(start, now) + EPS < target) return { payload: null, source: "buffering", index: null, skipped: 0 };
      this.next = start;
    }
    let index = this.next;
    let delay = this.currentDelay(index, now);
    let skipped = 0;
    const skippedPayloads = [];
    const skippedIndices = [];
    while (delay - period + EPS >= target) {
      const slot = this.slots.get(index);
      const droppable = (!slot && this.prevConcealed) || (slot && slot.silence);
      if (!droppable || !this.slots.has(index + 1)) break;
      if (!slot) this.stats.lost++;
      else {
        this.slots.delete(index);
        skippedPayloads.push(slot.payload);
        skippedIndices.push(index);
      }
      index += 1;
      skipped += 1;
      delay -= period;
    }
    this.stats.skipped += skipped;
    this.next = index;
    this.stats.current_delay_ms = delay * 1000;
    const slot = this.slots.get(index);
    if (slot) {
      this.slots.delete(index);
      this.next = index + 1;
      this.prevConcealed = false;
      this.stats.played++;
      if (slot.redundant) this.stats.recovered_from_redundancy++;
      return { payload: slot.payload, source: slot.redundant ? "redundant" : "primary", index, skipped, skippedPayloads, skippedIndices };
    }
    this.prevConcealed = true;
    this.stats.concealed++;
    if (delay + EPS < this.stretchTarget() && delay + period <= this.config.maxDelayMs / 1000 + EPS) {
      this.stats.stretched++;
      this.stretchedIndex = index;
      return { payload: null, source: "stretch", index: null, skipped, skippedPayloads, skippedIndices };
    }
    this.next = index + 1;
    this.lostRecent.push(index);
    if (this.lostRecent.length > 64) this.lostRecent.shift();
    this.stats.lost++;
    return { payload: null, source: "concealed", index, skipped, skippedPayloads, skippedIndices };
  }
}

// ------------------------------------------------------------------ loss statistics and K
const THRESHOLDS = [0.01, 0.04, 0.12];

export function wantedRedundancy(lossRate, meanBurst, scale = 1, kMax = MAX_REDUNDANCY) {
  let k = THRESHOLDS.filter((t) => lossRate >= t * scale).length;
  if (lossRate >= THRESHOLDS[0] * scale && meanBurst > 0) k = Math.max(k, Math.ceil(meanBurst - 1e-9));
  return Math.min(k, kMax);
}

export class LossStatistics {
  constructor(reorderMargin = 2) {
    this.reorderMargin = reorderMargin;
    this.received = new Set();
    this.doubled = new Set(); // sequence numbers whose second datagram came too (duplicates)
    this.highest = null;
    this.from = null;
    this.ticks = 0;
    this.concealed = 0;
    this.reportSeq = 0;
  }

  onPacket(seq) {
    const ext = this.highest === null ? seq : unwrap(seq, this.highest, 16);
    if (this.from === null) this.from = ext;
    if (ext < this.from) return;
    this.received.add(ext);
    this.highest = this.highest === null ? ext : Math.max(this.highest, ext);
  }

  /** The second datagram of a sequence number already seen (the sender duplicates packets). */
  onDuplicate(seq) {
    if (this.highest === null || this.from === null) return;
    const ext = unwrap(seq, this.highest, 16);
    if (ext >= this.from) this.doubled.add(ext);
  }

  onTick(concealed) { this.ticks++; this.concealed += concealed ? 1 : 0; }

  /** A v1-style report of the interval since the last one, or null. */
  makeReport(jitterMs = 0, playoutDelayMs = 0) {
    if (this.highest === null || this.from === null) return null;
    const end = this.highest - this.reorderMargin;
    if (end < this.from) return null;
    const expected = end - this.from + 1;
    let received = 0;
    let lost = 0;
    let runs = 0;
    let inRun = false;
    for (let s = this.from; s <= end; s++) {
      if (this.received.has(s)) { received++; inRun = false; } else { lost++; runs += inRun ? 0 : 1; inRun = true; }
    }
    let doubled = 0;
    for (const s of this.doubled) if (s <= end) doubled++;
    // with duplicates, 2 datagrams per sequence number: the loss rate stays per datagram
    const lossRate = doubled ? (2 * expected - received - doubled) / (2 * expected) : lost / expected;
    for (const s of [...this.received]) if (s <= end) this.received.delete(s);
    for (const s of [...this.doubled]) if (s <= end) this.doubled.delete(s);
    this.from = end + 1;
    const residual = this.ticks ? this.concealed / this.ticks : 0;
    this.ticks = this.concealed = 0;
    const report = {
      kind: "report", reportSeq: this.reportSeq & 0xffff, highestSeq: this.highest & 0xffff,
      expected: Math.min(expected, 0xffff), received: Math.min(received, 0xffff), lossRate,
      meanBurst: runs ? Math.min(lost / runs, 255) : 0, residualLoss: residual,
      jitterMs: Math.min(roundHalfEven(jitterMs), 0xffff), playoutDelayMs: Math.min(roundHalfEven(playoutDelayMs), 0xffff),
    };
    this.reportSeq++;
    return report;
  }
}

export const DUPLICATE_LOSS = 0.04;

export class RedundancyController {
  constructor({ initial = 1, kMin = 0, kMax = MAX_REDUNDANCY, holdReports = 3, duplicateLoss = null } = {}) {
    Object.assign(this, { k: initial, kMin, kMax, holdReports, duplicateLoss });
    this.duplicates = false; // send every packet twice (redundancy.py: duplicates)
    this.dupCalm = 0;
    this.calm = 0;
    this.lastReport = null;
    this.history = [];
  }

  onReport(report) {
    if (this.lastReport !== null) {
      const ext = unwrap(report.reportSeq, this.lastReport, 16);
      if (ext <= this.lastReport) return this.k;
      this.lastReport = ext;
    } else {
      this.lastReport = report.reportSeq;
    }
    const up = wantedRedundancy(report.lossRate, report.meanBurst, 1, this.kMax);
    const down = wantedRedundancy(report.lossRate, report.meanBurst, 0.5, this.kMax);
    if (up > this.k) { this.k = up; this.calm = 0; } else if (down < this.k) {
      this.calm++;
      if (this.calm >= this.holdReports) { this.k--; this.calm = 0; }
    } else {
      this.calm = 0;
    }
    this.k = Math.min(Math.max(this.k, this.kMin), this.kMax);
    if (this.duplicateLoss !== null) {
      if (report.lossRate >= this.duplicateLoss) { this.duplicates = true; this.dupCalm = 0; } else if (this.duplicates && report.lossRate < this.duplicateLoss / 2) {
        this.dupCalm++;
        if (this.dupCalm >= this.holdReports) { this.duplicates = false; this.dupCalm = 0; }
      } else {
        this.dupCalm = 0;
      }
    }
    this.history.push(this.k);
    return this.k;
  }
}

// ------------------------------------------------------------------ the receive session
/** ReceiveSession's datagram and tick rules. `sendReport(bytes)` sends a standalone report
 * (null: no reports, as ReceiveSession without a link);
 * `sender` (optional) is {canPiggyback(): bool, piggyback(report), onReport(report)}. */
export class Receiver {
  constructor({ codecId, frameBytes, jitter = {}, reportInterval = 12, sendReport = null, sender = null }) {
    this.buffer = new JitterBuffer({ ...jitter, codecId, frameBytes });
    this.loss = new LossStatistics();
    this.reader = new WireReader(codecId);
    Object.assign(this, { reportInterval, sendReport, sender });
    this.framesPlayed = 0;
    this.garbage = 0;
    this.reportsSent = 0;
    this.lastReport = null;
    this.peerVersion = 1;
  }

  /** One received (decrypted) datagram at `now` seconds; garbage is counted, never thrown. */
  onDatagram(data, now) {
    let read;
    try {
      read = this.reader.read(data);
    } catch (err) {
      if (!(err instanceof PacketError)) throw err;
      this.garbage++;
      return;
    }
    if (read.report && this.sender) this.sender.onReport(read.report);
    if (!read.audio) return;
    this.peerVersion = read.version;
    const duplicates = this.buffer.stats.duplicate;
    if (this.buffer.push(read.audio, now)) this.loss.onPacket(read.audio.seq);
    else if (this.buffer.stats.duplicate > duplicates) this.loss.onDuplicate(read.audio.seq);
  }

  /** The frame for this frame period (call once per period): see JitterBuffer.tick. */
  tick(now) {
    const played = this.buffer.tick(now);
    if (played.source === "buffering" || played.source === "ended") return played;
    this.framesPlayed++;
    this.loss.onTick(played.payload === null);
    if (this.sendReport && this.framesPlayed % this.reportInterval === 0) this.report();
    return played;
  }

  report() {
    const s = this.buffer.stats;
    const report = this.loss.makeReport(s.jitter_ms, Math.max(0, s.current_delay_ms));
    if (report === null) return;
    if (this.sender && this.sender.canPiggyback()) this.sender.piggyback(report);
    else if (this.sendReport && this.peerVersion === 2) this.sendReport(compactReportToBytes(compactFromReport(report)));
    else this.sendReport(lossReportToBytes(report));
    this.reportsSent++;
    this.lastReport = report;
  }

  /** ReceiveStats' fields. */
  get stats() {
    const s = this.buffer.stats;
    return {
      packets_received: s.packets_received, frames_received: s.frames_received,
      recovered_from_redundancy: s.recovered_from_redundancy, concealed: s.concealed, late: s.late,
      duplicate: s.duplicate, invalid: s.invalid + this.garbage, playout_delay_ms: s.current_delay_ms,
      target_delay_ms: s.target_delay_ms, jitter_ms: s.jitter_ms, frames_played: this.framesPlayed,
      stretched: s.stretched, skipped: s.skipped, lost: s.lost, ended: this.buffer.ended,
    };
  }
}
