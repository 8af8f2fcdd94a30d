// Wire format version 1 of voip-codec (voip_codec/wire/packet.py): audio packets and loss
// reports, big-endian, and the MSB-first token packing of voip_codec/wire/bitpack.py.
// One module, so a later packet version is one more parser here. The golden packet files in
// tests/unit/golden/packets are the contract (test/wire.test.mjs).

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
  const q16 = (x) => Math.round(Math.min(Math.max(x, 0), 1) * 0xffff);
  const u16 = (x) => Math.min(Math.max(Math.round(x), 0), 0xffff);
  v.setUint16(4, r.reportSeq & 0xffff); v.setUint16(6, r.highestSeq & 0xffff);
  v.setUint16(8, u16(r.expected)); v.setUint16(10, u16(r.received));
  v.setUint16(12, q16(r.lossRate)); v.setUint16(14, Math.min(Math.round(r.meanBurst * 256), 0xffff));
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
