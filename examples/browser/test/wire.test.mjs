// The JS wire module against the golden packet files of the Python tests (node --test).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  FLAG_END, FLAG_SILENCE, FLAG_START, PacketError, WireReader, audioPacketToBytes, compactAudioToBytes,
  compactFromReport, compactReportToBytes, lossReportToBytes, packTokens, parseAny, parseCompact,
  parsePacket, unpackTokens, unwrap,
} from "../src/wire.js";

const here = dirname(fileURLToPath(import.meta.url));
const golden = process.env.VOIP_GOLDEN_PACKETS || join(here, "../../../tests/unit/golden/packets");
const goldenV2 = process.env.VOIP_GOLDEN_PACKETS_V2 || join(here, "../../../tests/unit/golden/packets_v2");
const readV2 = (name) => new Uint8Array(readFileSync(join(goldenV2, name)));

test("golden files: valid ones round-trip byte for byte, the others are rejected", () => {
  const names = readdirSync(golden).filter((n) => n.endsWith(".bin"));
  assert.ok(names.length >= 10, `golden packets in ${golden}`);
  for (const name of names) {
    const data = new Uint8Array(readFileSync(join(golden, name)));
    if (name.endsWith("_valid.bin")) {
      const p = parsePacket(data);
      const again = p.kind === "audio" ? audioPacketToBytes(p) : lossReportToBytes(p);
      assert.deepEqual(again, data, name);
    } else {
      assert.throws(() => parsePacket(data), PacketError, name);
    }
  }
});

test("the golden audio packet's fields", () => {
  const p = parsePacket(new Uint8Array(readFileSync(join(golden, "audio_valid.bin"))));
  assert.equal(p.codecId, 16);
  assert.equal(p.seq, 65535);
  assert.equal(p.frameIndex, 0xfffffffe);
  assert.equal(p.frames.length, 1);
  assert.equal(p.redundant.length, 2);
  assert.equal(p.flags, 1);
  assert.deepEqual(Array.from(p.frames[0]), Array(7).fill(0x13));
});

test("tokens pack MSB first like voip_codec.wire.bitpack", () => {
  // 4 x 16-bit: big-endian bytes; 4 x 11-bit: 44 bits in 6 bytes, zero-padded
  assert.deepEqual(Array.from(packTokens([0x1234, 0xabcd, 0, 0xffff], 16)),
    [0x12, 0x34, 0xab, 0xcd, 0, 0, 0xff, 0xff]);
  const t11 = [2047, 0, 1024, 5];
  const packed = packTokens(t11, 11);
  assert.equal(packed.length, 6);
  assert.deepEqual(Array.from(unpackTokens(packed, 11, 4)), t11);
  assert.deepEqual(Array.from(packed), [0xff, 0xe0, 0x02, 0x00, 0x00, 0x50]); // = pack_tokens([2047, 0, 1024, 5], 11)
});

test("unwrap of 16- and 32-bit counters", () => {
  assert.equal(unwrap(0, 65535, 16), 65536);
  assert.equal(unwrap(65535, 65536, 16), 65535);
  assert.equal(unwrap(3, 4294967295, 32), 4294967299);
});

test("golden v2 files: valid ones round-trip byte for byte, the others are rejected", () => {
  const names = readdirSync(goldenV2).filter((n) => n.endsWith(".bin"));
  assert.ok(names.length >= 20, `golden v2 packets in ${goldenV2}`);
  for (const name of names) {
    const data = readV2(name);
    if (name.endsWith("_valid.bin")) {
      const p = parseCompact(data);
      const again = p.kind === "audio" ? compactAudioToBytes(p) : compactReportToBytes(p);
      assert.deepEqual(again, data, name);
      assert.equal(parseAny(data).kind, p.kind, name);
    } else {
      assert.throws(() => parseCompact(data), PacketError, name);
      assert.throws(() => parseAny(data), PacketError, name);
    }
  }
});

test("the golden v2 packets' fields (make_golden_packets_v2.py)", () => {
  const common = parseCompact(readV2("v2_audio_valid.bin"));
  assert.equal(common.seq, 0xabc);
  assert.equal(common.frameIndex, 0x123);
  assert.equal(common.codecId, null);
  assert.deepEqual(Array.from(common.frames[0]), [0x5a, 0xa5]);
  assert.equal(readV2("v2_audio_valid.bin").length, 4 + 2);
  const start = parseCompact(readV2("v2_audio_start_valid.bin"));
  assert.equal(start.seq, 4095);
  assert.equal(start.frameIndex, 4094);
  assert.equal(start.flags, FLAG_START | FLAG_SILENCE);
  assert.equal(start.codecId, 16);
  assert.deepEqual(start.redundant.map((f) => f[0]), [0x11, 0x12]);
  const bundle = parseCompact(readV2("v2_audio_bundle_report_valid.bin"));
  assert.equal(bundle.flags, FLAG_END);
  assert.equal(bundle.frames.length, 3);
  assert.deepEqual({ ...bundle.report }, { kind: "report", version: 2, reportSeq: 3, expected: 12,
    received: 10, lossQ: 43, burstQ: 32, residualQ: 0, jitterMs: 17, playout4ms: 40 });
  assert.deepEqual(compactReportToBytes(bundle.report), readV2("v2_report_valid.bin"));
});

test("WireReader restores 12-bit counters across the wrap, like compact.WireReader", () => {
  const reader = new WireReader(35);
  const frame = new Uint8Array([1, 2, 3]);
  const send = (seq, frameIndex, extra = {}) => reader.read(compactAudioToBytes({ seq: seq & 0xfff, frameIndex: frameIndex & 0xfff, frames: [frame], ...extra }));
  const first = send(4094, 4094, { flags: FLAG_START, codecId: 35 }).audio;
  assert.equal(first.seq, 4094);
  assert.equal(first.frameIndex, 4094);
  const wrapped = send(4096 + 1, 4096 + 1).audio; // 4095 lost
  assert.equal(wrapped.seq, 4097);
  assert.equal(wrapped.frameIndex, 4097);
  assert.equal(wrapped.codecId, 35);
  const late = send(4095, 4095).audio; // reordered behind the wrap
  assert.equal(late.seq, 4095);
  const withReport = reader.read(compactAudioToBytes({ seq: 2, frameIndex: 2, frames: [frame],
    report: compactFromReport({ reportSeq: 300, expected: 12, received: 11, lossRate: 1 / 12,
      meanBurst: 1, residualLoss: 0, jitterMs: 3.4, playoutDelayMs: 161 }) }));
  assert.equal(withReport.audio.seq, 4098);
  assert.equal(withReport.report.reportSeq, 300 & 0xff);
  assert.equal(withReport.report.playoutDelayMs, 160);
  assert.equal(withReport.report.lossRate, 21 / 255);
  const v1 = reader.read(audioPacketToBytes({ codecId: 35, seq: 9, frameIndex: 9, frames: [frame] }));
  assert.equal(v1.version, 1);
  assert.equal(v1.audio.seq, 9);
  assert.throws(() => reader.read(new Uint8Array([0xc0, 0, 0, 0, 1])), PacketError);
});

test("a compact packet says no more than it must: 4-byte header for the common case", () => {
  const p = compactAudioToBytes({ seq: 1, frameIndex: 1, frames: [new Uint8Array(3)] });
  assert.equal(p.length, 7);
  assert.throws(() => compactAudioToBytes({ seq: 0, frameIndex: 0, frames: [new Uint8Array(3)], flags: FLAG_START }), PacketError);
});
