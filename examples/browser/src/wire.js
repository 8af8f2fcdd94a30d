// The wire formats of voip-codec: version 1 (voip_codec/wire/packet.py: 16-byte audio header,
// 22-byte loss reports), the compact version 2 (voip_codec/wire/compact.py: 4-byte audio header,
// 12-bit counters, loss reports piggybacked on audio) and the reader that restores v2's short
// counters (WireReader), plus the MSB-first token packing of voip_codec/wire/bitpack.py.
// The golden packet files in tests/unit/golden/packets and packets_v2 are the contract
// (test/wire.test.mjs).

export const MAGIC0 = 0x56; // "V"
export const MAGIC1 = 0x43; // "C"
export const VERSION = 1;
export const TYPE_AUDIO = 1;
export const TYPE_LOSS_REPORT = 2;
export const FLAG_START = 0x01;
export const FLAG_SILENCE = 0x02;
export const FLAG_END = 0x04;
const KNOWN_FLAGS = FLAG_START | FLAG_SILENCE | FLAG_END;
export const AUDIO_HEADER_SIZE = 16;
export const LOSS_REPORT_SIZE = 22;
export const MAX_NEW_FRAMES = 16;
export const MAX_REDUNDANCY = 3;

export class PacketError extends Error {}

/** Python's round(): halves go to the even neighbour (so quantised reports match byte for byte). */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Serialise an audio packet: {codecId, seq, frameIndex, frames: Uint8Array[], redundant, flags}. */
export function audioPacketToBytes(p) {
  const redundant = p.redundant || [];
  const all = [...redundant, ...p.frames];
  const size = p.frames[0].length;
  if (p.frames.length < 1 || p.frames.length > MAX_NEW_FRAMES) throw new PacketError("bad new-frame count");
  if (redundant.length > MAX_REDUNDANCY) throw new PacketError("bad redundancy count");
  if (all.some((f) => f.length !== size)) throw new PacketError("frame payloads differ in size");
  const out = new Uint8Array(AUDIO_HEADER_SIZE + all.length * size);
  const v = new DataView(out.buffer);
  out[0] = MAGIC0; out[1] = MAGIC1; out[2] = VERSION; out[3] = TYPE_AUDIO;
  out[4] = p.codecId; out[5] = p.flags || 0;
  v.setUint16(6, p.seq & 0xffff);
  v.setUint32(8, p.frameIndex >>> 0);
  v.setUint16(12, size);
  out[14] = p.frames.length; out[15] = redundant.length;
  all.forEach((f, i) => out.set(f, AUDIO_HEADER_SIZE + i * size));
  return out;
}

/** Serialise a loss report (fields as in voip_codec.wire.packet.LossReport). */
export function lossReportToBytes(r) {
  const out = new Uint8Array(LOSS_REPORT_SIZE);
  const v = new DataView(out.buffer);
  out[0] = MAGIC0; out[1] = MAGIC1; out[2] = VERSION; out[3] = TYPE_LOSS_REPORT;
  const q16 = (x) => roundHalfEven(Math.min(Math.max(x, 0), 1) * 0xffff);
  const u16 = (x) => Math.min(Math.max(roundHalfEven(x), 0), 0xffff);
  v.setUint16(4, r.reportSeq & 0xffff); v.setUint16(6, r.highestSeq & 0xffff);
  v.setUint16(8, u16(r.expected)); v.setUint16(10, u16(r.received));
  v.setUint16(12, q16(r.lossRate)); v.setUint16(14, Math.min(roundHalfEven(r.meanBurst * 256), 0xffff));
  v.setUint16(16, q16(r.residualLoss || 0)); v.setUint16(18, u16(r.jitterMs || 0));
  v.setUint16(20, u16(r.playoutDelayMs || 0));
  return out;
}

/** Parse one datagram; returns {kind: "audio", ...} or {kind: "report", ...}, throws PacketError. */
export function parsePacket(data) {
  const raw = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (raw.length < 4) throw new PacketError(`truncated: ${raw.length} bytes, a message has at least 4`);
  if (raw[0] !== MAGIC0 || raw[1] !== MAGIC1) throw new PacketError("bad magic");
  if (raw[2] !== VERSION) throw new PacketError(`unsupported version ${raw[2]}, expected ${VERSION}`);
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (raw[3] === TYPE_AUDIO) {
    if (raw.length < AUDIO_HEADER_SIZE) throw new PacketError("truncated audio header");
    const flags = raw[5];
    if (flags & ~KNOWN_FLAGS) throw new PacketError(`reserved flag bits set in 0x${flags.toString(16)}`);
    const frameBytes = v.getUint16(12);
    const nNew = raw[14];
    const nRed = raw[15];
    if (frameBytes === 0) throw new PacketError("bad frame size 0");
    if (nNew < 1 || nNew > MAX_NEW_FRAMES) throw new PacketError(`bad new-frame count ${nNew}`);
    if (nRed > MAX_REDUNDANCY) throw new PacketError(`bad redundancy count ${nRed}`);
    const want = AUDIO_HEADER_SIZE + (nNew + nRed) * frameBytes;
    if (raw.length < want) throw new PacketError(`truncated audio packet: ${raw.length} bytes, header announces ${want}`);
    if (raw.length > want) throw new PacketError(`bad length: ${raw.length} bytes, header announces ${want}`);
    const chunk = (i) => raw.slice(AUDIO_HEADER_SIZE + i * frameBytes, AUDIO_HEADER_SIZE + (i + 1) * frameBytes);
    const all = Array.from({ length: nRed + nNew }, (_, i) => chunk(i));
    return {
      kind: "audio", codecId: raw[4], flags, seq: v.getUint16(6), frameIndex: v.getUint32(8),
      frameBytes, redundant: all.slice(0, nRed), frames: all.slice(nRed),
    };
  }
  if (raw[3] === TYPE_LOSS_REPORT) {
    if (raw.length < LOSS_REPORT_SIZE) throw new PacketError("truncated loss report");
    if (raw.length > LOSS_REPORT_SIZE) throw new PacketError("bad length of a loss report");
    return {
      kind: "report", reportSeq: v.getUint16(4), highestSeq: v.getUint16(6),
      expected: v.getUint16(8), received: v.getUint16(10), lossRate: v.getUint16(12) / 0xffff,
      meanBurst: v.getUint16(14) / 256, residualLoss: v.getUint16(16) / 0xffff,
      jitterMs: v.getUint16(18), playoutDelayMs: v.getUint16(20),
    };
  }
  throw new PacketError(`unknown message type ${raw[3]}`);
}

/** Tokens (ints < 2**bits) -> bytes, MSB first, no padding between tokens, last byte zero-padded. */
export function packTokens(tokens, bits) {
  const out = new Uint8Array(Math.ceil((tokens.length * bits) / 8));
  let pos = 0;
  for (const t of tokens) {
    for (let b = bits - 1; b >= 0; b--, pos++) {
      if ((t >>> b) & 1) out[pos >> 3] |= 0x80 >> (pos & 7);
    }
  }
  return out;
}

/** The inverse of packTokens: `count` tokens of `bits` bits. */
export function unpackTokens(data, bits, count) {
  const out = new Int32Array(count);
  let pos = 0;
  for (let i = 0; i < count; i++) {
    let t = 0;
    for (let b = 0; b < bits; b++, pos++) t = (t << 1) | ((data[pos >> 3] >> (7 - (pos & 7))) & 1);
    out[i] = t;
  }
  return out;
}

/** Unwrap a wrapping `bits`-bit counter to the integer nearest `reference` (jitter.unwrap). */
export function unwrap(value, reference, bits) {
  const span = 2 ** bits;
  const half = span / 2;
  const d = (((value - reference + half) % span) + span) % span;
  return reference + d - half;
}

// ------------------------------------------------------------------ version 2 (compact)
const V2_MASK = 0xc0;
const V2_BITS = 0x80;
const V2_TYPE_REPORT = 0x20;
const V2_X = 0x10;
const V2_R = 0x08;
const V2_S = 0x04;
const EXT_START = 0x80;
const EXT_END = 0x40;
const EXT_CODEC = 0x20;
const EXT_BUNDLE = 0x10;
const EXT_KNOWN = EXT_START | EXT_END | EXT_CODEC | EXT_BUNDLE;
export const COMPACT_HEADER_SIZE = 4;
export const COMPACT_REPORT_SIZE = 9;
const REPORT_BODY = 8;
const MOD12 = 0xfff;
const REPORT_FIELDS = ["reportSeq", "expected", "received", "lossQ", "burstQ", "residualQ", "jitterMs", "playout4ms"];

const q8 = (x) => Math.min(255, Math.max(0, roundHalfEven(x * 255)));

/** A v1-style report (fractions, ms) quantised to v2 (CompactLossReport.from_report). */
export function compactFromReport(r) {
  return {
    kind: "report", version: 2, reportSeq: r.reportSeq & 0xff, expected: Math.min(r.expected, 255),
    received: Math.min(r.received, 255), lossQ: q8(r.lossRate),
    burstQ: Math.min(255, roundHalfEven(r.meanBurst * 16)), residualQ: q8(r.residualLoss || 0),
    jitterMs: Math.min(roundHalfEven(r.jitterMs || 0), 255),
    playout4ms: Math.min(255, roundHalfEven((r.playoutDelayMs || 0) / 4)),
  };
}

/** A v2 report as a v1-style report (highestSeq 0: v2 does not carry it). */
export function reportFromCompact(c, reportSeq = c.reportSeq) {
  return {
    kind: "report", reportSeq, highestSeq: 0, expected: c.expected, received: c.received,
    lossRate: c.lossQ / 255, meanBurst: c.burstQ / 16, residualLoss: c.residualQ / 255,
    jitterMs: c.jitterMs, playoutDelayMs: c.playout4ms * 4,
  };
}

function reportBody(c) {
  return REPORT_FIELDS.map((name) => {
    const v = c[name];
    if (!Number.isInteger(v) || v < 0 || v > 255) throw new PacketError(`compact report field ${name} must be in 0..255, got ${v}`);
    return v;
  });
}

/** Serialise a v2 loss report on its own (9 bytes). */
export function compactReportToBytes(c) {
  return Uint8Array.from([V2_BITS | V2_TYPE_REPORT, ...reportBody(c)]);
}

/** Serialise a v2 audio packet: {seq, frameIndex (both mod 4096), frames, redundant, flags,
 * codecId (null: the stream's codec; required with FLAG_START), report (compact or null)}. */
export function compactAudioToBytes(p) {
  const redundant = p.redundant || [];
  const flags = p.flags || 0;
  const codecId = p.codecId ?? null;
  if (p.seq < 0 || p.seq > MOD12 || p.frameIndex < 0 || p.frameIndex > MOD12) throw new PacketError("compact counters are 12 bits");
  if (p.frames.length < 1 || p.frames.length > MAX_NEW_FRAMES) throw new PacketError("bad new-frame count");
  if (redundant.length > MAX_REDUNDANCY) throw new PacketError("bad redundancy count");
  if (flags & ~KNOWN_FLAGS) throw new PacketError(`unknown flag bits in 0x${flags.toString(16)}`);
  if (flags & FLAG_START && codecId === null) throw new PacketError("a START packet must carry its codec id");
  const all = [...redundant, ...p.frames];
  const size = all[0].length;
  if (size < 1 || all.some((f) => f.length !== size)) throw new PacketError("frame payloads must be non-empty and of one size");
  const ext = (flags & FLAG_START ? EXT_START : 0) | (flags & FLAG_END ? EXT_END : 0)
    | (codecId !== null ? EXT_CODEC : 0) | (p.frames.length > 1 ? EXT_BUNDLE : 0);
  const head = [V2_BITS | (ext ? V2_X : 0) | (p.report ? V2_R : 0) | (flags & FLAG_SILENCE ? V2_S : 0) | redundant.length];
  const counters = (p.seq << 12) | p.frameIndex;
  head.push((counters >>> 16) & 0xff, (counters >>> 8) & 0xff, counters & 0xff);
  if (ext) head.push(ext);
  if (codecId !== null) head.push(codecId);
  if (p.frames.length > 1) head.push(p.frames.length - 1);
  if (p.report) head.push(...reportBody(p.report));
  const out = new Uint8Array(head.length + all.length * size);
  out.set(head);
  all.forEach((f, i) => out.set(f, head.length + i * size));
  return out;
}

function parseReportBody(raw, at) {
  const c = { kind: "report", version: 2 };
  REPORT_FIELDS.forEach((name, i) => { c[name] = raw[at + i]; });
  return c;
}

/** Parse one v2 message (the rules of voip_codec.wire.compact.parse_compact); throws PacketError. */
export function parseCompact(data) {
  const raw = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (!raw.length) throw new PacketError("truncated: empty datagram");
  const b0 = raw[0];
  if ((b0 & V2_MASK) !== V2_BITS) throw new PacketError(`not a version 2 message: first byte 0x${b0.toString(16)}`);
  if (b0 & V2_TYPE_REPORT) {
    if (b0 & 0x1f) throw new PacketError("reserved bits set in report type byte");
    if (raw.length < COMPACT_REPORT_SIZE) throw new PacketError("truncated loss report");
    if (raw.length > COMPACT_REPORT_SIZE) throw new PacketError("bad length of a loss report");
    return parseReportBody(raw, 1);
  }
  if (raw.length < COMPACT_HEADER_SIZE) throw new PacketError("truncated audio header");
  const counters = (raw[1] << 16) | (raw[2] << 8) | raw[3];
  let at = COMPACT_HEADER_SIZE;
  let ext = 0;
  if (b0 & V2_X) {
    if (raw.length <= at) throw new PacketError("truncated audio header: extension byte missing");
    ext = raw[at++];
    if (ext & ~EXT_KNOWN) throw new PacketError("reserved extension bits set");
    if (ext === 0) throw new PacketError("empty extension byte");
  }
  let codecId = null;
  if (ext & EXT_CODEC) {
    if (raw.length <= at) throw new PacketError("truncated audio header: codec id missing");
    codecId = raw[at++];
  }
  let nNew = 1;
  if (ext & EXT_BUNDLE) {
    if (raw.length <= at) throw new PacketError("truncated audio header: bundle byte missing");
    const bundle = raw[at++];
    if (bundle & 0xf0) throw new PacketError("reserved bundle bits set");
    if (bundle === 0) throw new PacketError("bundle byte for a single frame");
    nNew = bundle + 1;
  }
  let report = null;
  if (b0 & V2_R) {
    if (raw.length < at + REPORT_BODY) throw new PacketError("truncated piggybacked report");
    report = parseReportBody(raw, at);
    at += REPORT_BODY;
  }
  const flags = (ext & EXT_START ? FLAG_START : 0) | (ext & EXT_END ? FLAG_END : 0) | (b0 & V2_S ? FLAG_SILENCE : 0);
  if (flags & FLAG_START && codecId === null) throw new PacketError("START packet without codec id");
  const nRed = b0 & 0x03;
  const count = nRed + nNew;
  const body = raw.length - at;
  if (body < count) throw new PacketError(`truncated audio packet: ${body} payload bytes for ${count} frames`);
  if (body % count) throw new PacketError(`bad length: ${body} payload bytes do not split into ${count} equal frames`);
  const size = body / count;
  const all = Array.from({ length: count }, (_, i) => raw.slice(at + i * size, at + (i + 1) * size));
  return {
    kind: "audio", version: 2, seq: counters >>> 12, frameIndex: counters & MOD12, codecId, flags,
    frameBytes: size, redundant: all.slice(0, nRed), frames: all.slice(nRed), report,
  };
}

/** Parse a message of either version, told apart by its first byte. */
export function parseAny(data) {
  const raw = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (raw.length && (raw[0] & V2_MASK) === V2_BITS) return parseCompact(raw);
  if (raw.length && raw[0] !== MAGIC0) throw new PacketError(`unknown packet version: first byte 0x${raw[0].toString(16)}`);
  return { ...parsePacket(raw), version: 1 };
}

/** Datagrams of either version -> full-width v1-style objects for one stream (the rules of
 * voip_codec.wire.compact.WireReader): v2's 12-bit counters (8-bit report numbers) are restored
 * to the values nearest the highest seen; packets that name no codec get the stream's. */
export class WireReader {
  constructor(codecId = 0) {
    this.codecId = codecId;
    this.seqRef = null;
    this.indexRef = null;
    this.reportRef = null;
  }

  /** {audio, report, version}: either may be null; throws PacketError for garbage. */
  read(data) {
    const m = parseAny(data);
    if (m.version === 1) return m.kind === "audio" ? { audio: m, report: null, version: 1 } : { audio: null, report: m, version: 1 };
    if (m.kind === "report") return { audio: null, report: this.restoreReport(m), version: 2 };
    return { audio: this.restoreAudio(m), report: m.report ? this.restoreReport(m.report) : null, version: 2 };
  }

  restoreReport(c) {
    const ext = this.reportRef === null ? c.reportSeq : unwrap(c.reportSeq, this.reportRef, 8);
    this.reportRef = this.reportRef === null ? ext : Math.max(this.reportRef, ext);
    return reportFromCompact(c, ext & 0xffff);
  }

  restoreAudio(p) {
    const seq = this.seqRef === null ? p.seq : unwrap(p.seq, this.seqRef, 12);
    const index = this.indexRef === null ? p.frameIndex : unwrap(p.frameIndex, this.indexRef, 12);
    this.seqRef = this.seqRef === null ? seq : Math.max(this.seqRef, seq);
    const last = index + p.frames.length - 1;
    this.indexRef = this.indexRef === null ? last : Math.max(this.indexRef, last);
    return {
      kind: "audio", version: 2, codecId: p.codecId ?? this.codecId, flags: p.flags,
      seq: ((seq % 0x10000) + 0x10000) % 0x10000, frameIndex: ((index % 2 ** 32) + 2 ** 32) % 2 ** 32,
      frameBytes: p.frameBytes, frames: p.frames, redundant: p.redundant,
    };
  }
}
