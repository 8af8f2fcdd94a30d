// The JS wire module against the golden packet files of the Python tests (node --test).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  PacketError, audioPacketToBytes, lossReportToBytes, packTokens, parsePacket, unpackTokens, unwrap,
} from "../src/wire.js";

const here = dirname(fileURLToPath(import.meta.url));
const golden = process.env.VOIP_GOLDEN_PACKETS || join(here, "../../../tests/unit/golden/packets");

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
