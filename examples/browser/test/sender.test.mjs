// The page's packetizer (src/sender.js): what Packetizer + SendSession write, in both versions.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Sender } from "../src/sender.js";
import { FLAG_START, WireReader, parseAny } from "../src/wire.js";

const frame = (i) => Uint8Array.from([i, i, i]);
const report = { kind: "report", reportSeq: 5, highestSeq: 0, expected: 12, received: 9, lossRate: 0.25,
  meanBurst: 1.5, residualLoss: 0.1, jitterMs: 12, playoutDelayMs: 200 };

for (const version of [2, 1]) {
  test(`version ${version}: START and codec on the first packet, K copies, counters, reports`, () => {
    const sender = new Sender({ codecId: 35, version, redundancy: 2 });
    const reader = new WireReader(35);
    const packets = [0, 1, 2, 3].map((i) => reader.read(sender.packet(frame(i), { silent: i === 3 })));
    assert.ok(packets.every((p) => p.version === version && p.audio.codecId === 35));
    assert.deepEqual(packets.map((p) => p.audio.flags & FLAG_START), [FLAG_START, 0, 0, 0]);
    assert.deepEqual(packets.map((p) => p.audio.redundant.length), [0, 1, 2, 2]);
    assert.deepEqual(packets.map((p) => p.audio.frameIndex), [0, 1, 2, 3]);
    assert.deepEqual(Array.from(packets[3].audio.redundant[0]), [1, 1, 1]);
    assert.equal(packets[3].audio.flags & 0x02, 0x02); // SILENCE
    if (version === 2) {
      assert.equal(parseAny(sender.packet(frame(4))).codecId, null); // only START names the codec
      assert.ok(sender.canPiggyback());
      sender.piggyback(report);
      const carried = reader.read(sender.packet(frame(5)));
      assert.equal(carried.report.lossRate, 64 / 255);
      assert.equal(carried.report.playoutDelayMs, 200);
      assert.equal(reader.read(sender.packet(frame(6))).report, null); // sent once
    } else {
      assert.equal(sender.canPiggyback(), false);
    }
  });
}

test("K follows the other end's loss reports (RedundancyController's hysteresis)", () => {
  const sender = new Sender({ codecId: 35, redundancy: 1 });
  sender.onReport({ ...report, reportSeq: 1, lossRate: 0.2, meanBurst: 1 });
  assert.equal(sender.k, 3);
  for (let i = 2; i <= 4; i++) sender.onReport({ ...report, reportSeq: i, lossRate: 0, meanBurst: 0 });
  assert.equal(sender.k, 2); // one step down after 3 calm reports
  assert.equal(sender.reports, 4);
});

test("duplicates from 4 % loss, off after 3 reports under 2 % (RedundancyController.duplicates)", () => {
  const sender = new Sender({ codecId: 35, redundancy: 1 });
  assert.equal(sender.duplicates, false);
  sender.onReport({ ...report, reportSeq: 1, lossRate: 0.05, meanBurst: 1 });
  assert.equal(sender.duplicates, true);
  const rates = [0.03, 0, 0, 0]; // 3 % is under the threshold but not under half of it
  const still = [true, true, true, false];
  rates.forEach((lossRate, i) => {
    sender.onReport({ ...report, reportSeq: 2 + i, lossRate, meanBurst: 0 });
    assert.equal(sender.duplicates, still[i], `report ${2 + i}`);
  });
  const never = new Sender({ codecId: 35, duplicates: false });
  never.onReport({ ...report, reportSeq: 1, lossRate: 0.3, meanBurst: 1 });
  assert.equal(never.duplicates, false);
});
