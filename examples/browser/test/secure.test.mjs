// The JS end-to-end encryption against the Python code's known answers
// (tests/unit/golden/e2e_vectors.json, made by tests/unit/golden/make_e2e_vectors.py): keys,
// SAS, nonces and datagrams byte for byte; then the receive rules (replay window, stale,
// forged, counter restore after a long burst) between two JS ends.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { SecureChannel, deriveKeys, keyExchange, sdpTakeE2eKey, sdpWithE2eKey } from "../src/secure.js";

const here = dirname(fileURLToPath(import.meta.url));
const vectors = JSON.parse(readFileSync(process.env.VOIP_E2E_VECTORS || join(here, "../../../tests/unit/golden/e2e_vectors.json"), "utf8"));
const hex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

async function checkDirection(got, want) {
  assert.equal(toHex(got.baseKey), want.base_key);
  assert.equal(toHex(got.nonceSalt), want.nonce_salt);
  assert.equal(got.direction, want.direction);
  assert.deepEqual(await Promise.all([0, 1, 7].map(async (e) => toHex(await got.epochKey(e)))), want.epoch_keys);
  for (const [counter, nonce] of Object.entries(want.nonces)) assert.equal(toHex(got.nonce(Number(counter))), nonce, counter);
}

async function ends() {
  const offerer = await keyExchange("offerer", { privateKey: hex(vectors.offerer_private) });
  const answerer = await keyExchange("answerer", { privateKey: hex(vectors.answerer_private) });
  return { offerer, answerer };
}

test("X25519 public keys and both ends' keys and SAS equal the Python ones", async () => {
  const { offerer, answerer } = await ends();
  assert.equal(toHex(offerer.public), vectors.offerer_public);
  assert.equal(toHex(answerer.public), vectors.answerer_public);
  const a = await offerer.derive(answerer.public);
  const b = await answerer.derive(offerer.public);
  for (const [got, want] of [[a, vectors.offerer], [b, vectors.answerer]]) {
    await checkDirection(got.send, want.send);
    await checkDirection(got.receive, want.receive);
    assert.equal(got.sas, want.sas);
  }
  assert.equal(a.sas, b.sas);
  const withPsk = await deriveKeys(hex(vectors.shared), offerer.public, answerer.public, "offerer", hex(vectors.psk));
  await checkDirection(withPsk.send, vectors.offerer_psk.send);
  assert.equal(withPsk.sas, vectors.offerer_psk.sas);
  assert.notEqual(withPsk.sas, a.sas);
});

test("datagrams equal SecureLink's byte for byte, and open on the other end", async () => {
  const { offerer, answerer } = await ends();
  const keys = { offerer: await offerer.derive(answerer.public), answerer: await answerer.derive(offerer.public) };
  for (const stream of vectors.streams) {
    const opts = { counterBytes: stream.counter_bytes, rekeyInterval: stream.rekey_interval };
    const sender = new SecureChannel(keys[stream.sender], { ...opts, firstCounter: stream.first_counter });
    const receiver = new SecureChannel(keys[stream.sender === "offerer" ? "answerer" : "offerer"], opts);
    for (const [i, plain] of stream.plaintexts.entries()) {
      const datagram = await sender.seal(hex(plain));
      assert.equal(toHex(datagram), stream.datagrams[i], `${stream.sender} ${stream.first_counter}+${i}`);
      assert.equal(toHex(await receiver.open(hex(stream.datagrams[i]))), plain);
    }
    assert.equal(receiver.stats.received, stream.datagrams.length);
    assert.equal(receiver.stats.forged, 0);
  }
});

test("receive rules: replayed, stale, forged and truncated are dropped; long bursts are bridged", async () => {
  const { offerer, answerer } = await ends();
  const a = new SecureChannel(await offerer.derive(answerer.public), { counterBytes: 1 });
  const b = new SecureChannel(await answerer.derive(offerer.public), { counterBytes: 1 });
  const sent = [];
  for (let i = 0; i < 100; i++) sent.push(await a.seal(Uint8Array.from([i])));
  assert.deepEqual(Array.from(await b.open(sent[0])), [0]);
  assert.equal(await b.open(sent[0]), null); // replayed
  assert.deepEqual(Array.from(await b.open(sent[99])), [99]);
  assert.deepEqual(Array.from(await b.open(sent[50])), [50]); // reordered, inside the window
  assert.equal(await b.open(sent[50]), null); // replayed
  assert.equal(await b.open(sent[20]), null); // stale: 79 behind
  const tampered = sent[98].slice();
  tampered[2] ^= 1;
  assert.equal(await b.open(tampered), null); // forged
  assert.equal(await b.open(sent[98].slice(0, 5)), null); // truncated
  // a burst of 300 lost packets (more than half of the 1-byte span)
  for (let i = 0; i < 300; i++) await a.seal(new Uint8Array(1));
  assert.deepEqual(Array.from(await b.open(await a.seal(Uint8Array.from([7])))), [7]);
  assert.deepEqual(b.stats, { sent: 0, received: 4, truncated: 1, forged: 1, replayed: 2, stale: 1, exhausted: 0 });
});

test("the public key travels in the SDP and comes out again", async () => {
  const { offerer } = await ends();
  const sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n";
  const withKey = sdpWithE2eKey(sdp, offerer.public);
  assert.match(withKey, /t=0 0\r\na=x-voip-codec-e2e:[A-Za-z0-9+/=]{44}\r\nm=application/);
  const { sdp: clean, key } = sdpTakeE2eKey(withKey);
  assert.equal(clean, sdp);
  assert.equal(toHex(key), vectors.offerer_public);
  assert.deepEqual(sdpTakeE2eKey(sdp), { sdp, key: null });
  assert.throws(() => sdpTakeE2eKey(withKey.replace(/(e2e:)\S+/, "$1AAAA")), /3 bytes, expected 32/);
});
