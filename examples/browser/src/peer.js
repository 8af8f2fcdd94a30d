// The browser peer: signaling (our WebSocket relay, join token), one RTCPeerConnection with
// one unordered, no-retransmit data channel labelled "voip-codec/<codec>", microphone ->
// 16 kHz AudioWorklet -> 80 ms chunks -> codec worker -> our packets (version 2 by default, K
// redundant copies adapted from loss reports, end-to-end encrypted by default: secure.js), and
// packets -> the Python session's receive rules (jitter.js Receiver: adaptive playout, loss
// reports) -> decode or conceal -> 24 kHz AudioWorklet.
// State and figures for people and tests: window.voip (see `snapshot()`).
import { Receiver, jitterConfigFor } from "./jitter.js";
import { SecureChannel, keyExchange, sdpTakeE2eKey, sdpWithE2eKey } from "./secure.js";
import { Sender } from "./sender.js";
import { packTokens, unpackTokens } from "./wire.js";

const LABEL_PREFIX = "voip-codec/";
const VAD_DBFS = -50; // voip_codec.transport.session.DEFAULT_VAD_DBFS

const $ = (id) => document.getElementById(id);
const log = (line) => { $("log").textContent += `${new Date().toISOString().slice(11, 23)} ${line}\n`; };

export const voip = {
  state: "idle", error: null, role: null, config: null, manifest: null,
  encodeMs: [], decodeMs: [], sent: 0, received: [], receivedIndex: [], receivedSource: [], unheard: [], receiver: null, sender: null, secure: null, sas: null,
  keepCaptured: new URLSearchParams(location.search).get("keep") === "1", captured: [],
};
window.voip = voip;

function setState(state) { voip.state = state; $("state").textContent = state; }

function fail(message) {
  voip.error = message;
  setState("failed");
  log(`error: ${message}`);
}

function percentile(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((q / 100) * s.length))];
}

function snapshot() {
  return {
    state: voip.state, error: voip.error, role: voip.role, sent: voip.sent,
    encode_ms: { p50: percentile(voip.encodeMs, 50), p95: percentile(voip.encodeMs, 95), n: voip.encodeMs.length },
    decode_ms: { p50: percentile(voip.decodeMs, 50), p95: percentile(voip.decodeMs, 95), n: voip.decodeMs.length },
    receive: voip.receiver ? { ...voip.receiver.stats, reports_sent: voip.receiver.reportsSent } : null,
    send: voip.sender ? { packet_version: voip.sender.version, redundancy: voip.sender.k, reports: voip.sender.reports } : null,
    sas: voip.sas, e2e: voip.secure ? { ...voip.secure.stats } : null,
    received_samples: voip.received.reduce((n, b) => n + b.length, 0),
  };
}
voip.snapshot = snapshot;

/** Audio blocks as base64 of float32 little-endian, for tests: the decoded audio (24 kHz) or,
 * with ?keep=1, the captured microphone audio the page encoded (16 kHz). */
function blocksBase64(blocks) {
  const all = new Float32Array(blocks.reduce((n, b) => n + b.length, 0));
  let o = 0;
  for (const b of blocks) { all.set(b, o); o += b.length; }
  const bytes = new Uint8Array(all.buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}
voip.receivedBase64 = () => blocksBase64(voip.received);
/** The decoded audio placed by frame index (for tests that compare it with the sender's audio
 * frame by frame): stretch ticks are left out, silent frames skipped to shrink the delay are
 * there as decoded (not heard), never-played frames are silence. */
voip.decodedByIndexBase64 = () => {
  const n = voip.received.length ? voip.received[0].length : 0;
  const indices = voip.receivedIndex.filter((i) => i !== null);
  const last = indices.length ? Math.max(...indices) : -1;
  const out = new Float32Array(Math.min(last + 1, 1 << 16) * n);
  voip.received.forEach((block, i) => {
    const index = voip.receivedIndex[i];
    if (index !== null && index >= 0 && (index + 1) * n <= out.length) out.set(block, index * n);
  });
  for (const { index, pcm } of voip.unheard) {
    if (index >= 0 && (index + 1) * n <= out.length) out.set(pcm, index * n);
  }
  return blocksBase64([out]);
};
/** Frame indices the page concealed (given up on: lost or too late), ascending. */
voip.concealedIndices = () => voip.receivedIndex
  .filter((index, i) => index !== null && voip.receivedSource[i] === "concealed")
  .sort((a, b) => a - b);
voip.capturedBase64 = () => blocksBase64(voip.captured);

function renderStats() {
  const s = snapshot();
  const fmt = (x) => (x === null ? "-" : x.toFixed(1));
  $("stats").textContent = [
    `role            ${s.role ?? "-"}`,
    `packets sent    ${s.sent}`,
    `encode ms       p50 ${fmt(s.encode_ms.p50)}  p95 ${fmt(s.encode_ms.p95)}  (${s.encode_ms.n} chunks of 80 ms)`,
    `decode ms       p50 ${fmt(s.decode_ms.p50)}  p95 ${fmt(s.decode_ms.p95)}  (${s.decode_ms.n})`,
    `sending         ${s.send ? `packet version ${s.send.packet_version}, K ${s.send.redundancy} (${s.send.reports} loss reports)` : "-"}`,
    `received        ${s.receive ? `${s.receive.packets_received} packets, ${s.receive.frames_played} played, ${s.receive.recovered_from_redundancy} from redundancy, ${s.receive.concealed} concealed, ${s.receive.late} late` : "-"}`,
    `playout delay   ${s.receive ? `${fmt(s.receive.playout_delay_ms)} ms (target ${fmt(s.receive.target_delay_ms)}), jitter ${fmt(s.receive.jitter_ms)} ms` : "-"}`,
    `encryption      ${s.e2e ? `end to end, ${s.e2e.received} accepted, ${s.e2e.forged + s.e2e.replayed + s.e2e.stale + s.e2e.truncated} dropped` : "off (DTLS hop by hop only)"}`,
  ].join("\n");
}

// ------------------------------------------------------------------ codec worker
function startWorker(config, sides, graphOptimization = "all") {
  const worker = new Worker(new URL("./codec-worker.js", import.meta.url), { type: "module" });
  const pending = new Map();
  let nextId = 0;
  const ready = new Promise((resolve, reject) => {
    worker.onmessage = (e) => {
      const m = e.data;
      if (m.type === "ready") resolve(m.manifest);
      else if (m.type === "error") { reject(new Error(m.message)); fail(`codec: ${m.message}`); }
      else { pending.get(m.id)?.(m); pending.delete(m.id); }
    };
  });
  worker.postMessage({ type: "init", model: config.model, ort: config.ort, sides, graphOptimization });
  const call = (msg, transfer) => new Promise((resolve) => {
    const id = nextId++;
    pending.set(id, resolve);
    worker.postMessage({ ...msg, id }, transfer || []);
  });
  return { ready, call };
}

// ------------------------------------------------------------------ signaling + WebRTC
function waitIceComplete(pc) {
  // aiortc does not trickle candidates: offers and answers carry all of them
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

function connectSignaling(url, room, peerId, token) {
  const ws = new WebSocket(url);
  const inbox = [];
  const waiters = [];
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === "error") log(`signaling error: ${msg.code}: ${msg.message}`);
    const w = waiters.findIndex((x) => x.types.includes(msg.type));
    if (w >= 0) waiters.splice(w, 1)[0].resolve(msg);
    else inbox.push(msg);
  };
  const next = (...types) => {
    const i = inbox.findIndex((m) => types.includes(m.type));
    if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0]);
    return new Promise((resolve) => waiters.push({ types, resolve }));
  };
  const opened = new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`cannot reach the signaling server at ${url}`));
    ws.onclose = (e) => { if (voip.state !== "in call") log(`signaling closed (${e.code} ${e.reason})`); };
  });
  const send = (msg) => ws.send(JSON.stringify(msg));
  return { opened, send, next, join: async () => {
    await opened;
    const join = { type: "join", room, peer_id: peerId };
    if (token) join.token = token;
    send(join);
    const reply = await next("joined", "error");
    if (reply.type === "error") throw new Error(`${reply.code}: ${reply.message}`);
    return reply.role;
  } };
}

// ------------------------------------------------------------------ the call
async function start() {
  $("start").disabled = true;
  const params = new URLSearchParams(location.search);
  const room = $("room").value;
  const peerId = $("peer").value;
  const token = $("token").value || null;
  try {
    setState("loading model");
    const config = await (await fetch("/web-config.json")).json();
    voip.config = config;
    const encoder = startWorker(config, ["encoder"]);
    const codec = startWorker(config, ["decoder"]);
    const [manifest] = await Promise.all([codec.ready, encoder.ready]);
    voip.manifest = manifest;
    const bits = manifest.bits_per_token;
    const frameBytes = Math.ceil((manifest.chunk_frames * bits) / 8);
    log(`model ${manifest.model_id}: ${bits}-bit tokens, ${frameBytes}-byte frames, codec ${config.codec} (id ${config.codec_id})`);

    setState("microphone");
    const stream = await navigator.mediaDevices.getUserMedia({ audio: {
      echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 } });
    const worklets = new URL("./worklets.js", import.meta.url);
    const captureCtx = new AudioContext({ sampleRate: manifest.sample_rate_input });
    const playCtx = new AudioContext({ sampleRate: manifest.sample_rate_output });
    await captureCtx.audioWorklet.addModule(worklets);
    await playCtx.audioWorklet.addModule(worklets);
    const capture = new AudioWorkletNode(captureCtx, "capture");
    capture.port.onmessage = () => {}; // until the call is up, captured audio is dropped
    const mute = captureCtx.createGain();
    mute.gain.value = 0;
    captureCtx.createMediaStreamSource(stream).connect(capture).connect(mute).connect(captureCtx.destination);
    const playback = new AudioWorkletNode(playCtx, "playback", { outputChannelCount: [1] });
    playback.connect(playCtx.destination);

    setState("signaling");
    const sig = connectSignaling(config.ws || `ws://${location.host}/ws`, room, peerId, token);
    voip.role = await sig.join();
    log(`joined room ${room} as ${voip.role}`);
    const pc = new RTCPeerConnection({ iceServers: [] });
    const label = LABEL_PREFIX + config.codec;
    // end-to-end keys: our public key rides in our SDP, the other peer's comes in theirs
    const e2e = params.get("e2e") !== "0";
    const psk = params.get("psk") ? new TextEncoder().encode(params.get("psk")) : null;
    let exchange = null;
    let keys = null;
    const localSdp = async (role) => {
      const sdp = pc.localDescription.sdp;
      if (!e2e) return sdp;
      exchange ??= await keyExchange(role, { psk });
      return sdpWithE2eKey(sdp, exchange.public);
    };
    const remoteSdp = async (sdp, role) => {
      const { sdp: clean, key } = sdpTakeE2eKey(sdp);
      if (e2e && key === null) throw new Error("the other peer does not encrypt end to end; open this page with &e2e=0 to call it (or start it without --no-e2e)");
      if (!e2e && key !== null) throw new Error("the other peer encrypts end to end but this page was opened with e2e=0; both peers must turn it off or neither");
      if (key !== null) {
        exchange ??= await keyExchange(role, { psk });
        keys = await exchange.derive(key);
        voip.sas = keys.sas;
        $("sas").textContent = `${keys.sas}  (read it to the other user: it must match theirs)`;
        log(`end-to-end encryption on, SAS ${keys.sas}`);
      }
      return clean;
    };
    const channelReady = new Promise((resolve) => {
      pc.ondatachannel = (e) => resolve(e.channel);
    });
    let channel;
    if (voip.role === "offerer") {
      channel = pc.createDataChannel(label, { ordered: false, maxRetransmits: 0 });
      await pc.setLocalDescription(await pc.createOffer());
      await waitIceComplete(pc);
      sig.send({ type: "offer", sdp: await localSdp("offerer") });
      const answer = await sig.next("answer");
      await pc.setRemoteDescription({ type: "answer", sdp: await remoteSdp(answer.sdp, "offerer") });
    } else {
      setState("waiting for the other peer");
      const offer = await sig.next("offer");
      await pc.setRemoteDescription({ type: "offer", sdp: await remoteSdp(offer.sdp, "answerer") });
      await pc.setLocalDescription(await pc.createAnswer());
      await waitIceComplete(pc);
      sig.send({ type: "answer", sdp: await localSdp("answerer") });
      channel = await channelReady;
      if (channel.label !== label) throw new Error(`the other peer sends codec ${channel.label.slice(LABEL_PREFIX.length)}, this page speaks ${config.codec}`);
    }
    channel.binaryType = "arraybuffer";
    if (channel.readyState !== "open") await new Promise((resolve) => { channel.onopen = resolve; });
    setState("in call");
    log("data channel open");

    const secure = keys ? new SecureChannel(keys) : null;
    voip.secure = secure;
    let sendQueue = Promise.resolve();
    const transmit = (bytes) => { // in order: sealing is asynchronous
      sendQueue = sendQueue.then(async () => {
        const datagram = secure ? await secure.seal(bytes) : bytes;
        if (datagram && channel.readyState === "open") { channel.send(datagram); return true; }
        return false;
      });
      return sendQueue;
    };
    const sender = new Sender({ codecId: config.codec_id, version: Number(params.get("packet") || 2),
      redundancy: Number(params.get("redundancy") ?? 1) });
    voip.sender = sender;

    // receive: datagrams -> (decrypt) -> the Python session's rules; one tick per frame period
    // -> decode or conceal
    const period = 1000 * manifest.chunk_size / manifest.sample_rate_input;
    const receiver = new Receiver({ codecId: config.codec_id, frameBytes,
      jitter: jitterConfigFor(Number(params.get("delay") ?? 160), { frameMs: period }),
      sendReport: (bytes) => { transmit(bytes); }, sender });
    voip.receiver = receiver;
    channel.onmessage = (e) => {
      const now = performance.now() / 1000;
      if (typeof e.data === "string") { receiver.garbage++; return; }
      if (!secure) { receiver.onDatagram(new Uint8Array(e.data), now); return; }
      secure.open(e.data).then((plain) => { if (plain) receiver.onDatagram(plain, now); });
    };
    const t0 = performance.now();
    let ticks = 0;
    const tick = async () => {
      if (voip.state !== "in call") return;
      const played = receiver.tick(performance.now() / 1000);
      if (played.source !== "buffering" && played.source !== "ended") {
        const skippedPayloads = played.skippedPayloads || [];
        for (let k = 0; k < skippedPayloads.length; k++) {
          // not heard (dropped to shrink the delay), but the stateful decoder must see it
          const unheard = await codec.call({ type: "decode", tokens: unpackTokens(skippedPayloads[k], bits, manifest.chunk_frames) });
          voip.unheard.push({ index: played.skippedIndices[k], pcm: unheard.pcm.slice() });
        }
        const tokens = played.payload ? unpackTokens(played.payload, bits, manifest.chunk_frames) : null;
        const out = await codec.call({ type: "decode", tokens });
        voip.decodeMs.push(out.ms);
        voip.received.push(out.pcm.slice());
        voip.receivedIndex.push(played.index);
        voip.receivedSource.push(played.source);
        playback.port.postMessage(out.pcm, [out.pcm.buffer]);
      }
      ticks += 1;
      setTimeout(tick, Math.max(0, t0 + ticks * period - performance.now()));
    };
    setTimeout(tick, period);

    // send: 16 kHz blocks -> 80 ms chunks -> tokens -> packets (K copies, piggybacked reports)
    const chunk = new Float32Array(manifest.chunk_size);
    let filled = 0;
    let encoding = Promise.resolve();
    const vadLevel = 10 ** (VAD_DBFS / 20);
    capture.port.onmessage = (e) => {
      let block = e.data;
      while (block.length) {
        const n = Math.min(block.length, chunk.length - filled);
        chunk.set(block.subarray(0, n), filled);
        filled += n;
        block = block.subarray(n);
        if (filled === chunk.length) {
          const pcm = chunk.slice();
          filled = 0;
          if (voip.keepCaptured) voip.captured.push(pcm.slice());
          let energy = 0;
          for (const x of pcm) energy += x * x;
          const silent = Math.sqrt(energy / pcm.length) < vadLevel;
          encoding = encoding.then(async () => {
            const out = await encoder.call({ type: "encode", pcm }, [pcm.buffer]);
            voip.encodeMs.push(out.ms);
            const packet = sender.packet(packTokens(out.tokens, bits), { silent });
            if (await transmit(packet)) voip.sent += 1;
            // under loss, a second datagram (sealed with its own counter: not a replay)
            if (sender.duplicates && packet.length <= 256 && await transmit(packet)) {
              voip.duplicates = (voip.duplicates || 0) + 1; // 256: session.py DUPLICATE_MAX_BYTES
            }
          });
        }
      }
    };
    setInterval(renderStats, 500);
    pc.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(pc.connectionState)) { setState("ended"); log(`connection ${pc.connectionState}`); }
    };
  } catch (err) {
    fail(String(err && err.message ? err.message : err));
  }
}

// ------------------------------------------------------------------ speed, without a call
/** ?bench=N: N encoder steps on a synthetic voiced signal, then N decoder steps on their tokens,
 * in one worker, one after the other (pure step time: nothing else runs); the result goes to
 * window.voip.bench and the page. ?opt= sets onnxruntime's graph optimisation level. */
async function bench(n, opt) {
  setState("loading model");
  const config = await (await fetch("/web-config.json")).json();
  const worker = startWorker(config, ["encoder", "decoder"], opt);
  const manifest = await worker.ready;
  setState("benchmark");
  const encodeMs = [];
  const decodeMs = [];
  const tokens = [];
  const warmup = 5;
  for (let i = 0; i < n + warmup; i++) {
    const pcm = new Float32Array(manifest.chunk_size);
    for (let j = 0; j < pcm.length; j++) {
      const t = (i * pcm.length + j) / manifest.sample_rate_input;
      pcm[j] = 0.2 * Math.sin(2 * Math.PI * 140 * t) + 0.1 * Math.sin(2 * Math.PI * 900 * t) + 0.01 * Math.sin(12345.678 * t * t);
    }
    const out = await worker.call({ type: "encode", pcm }, [pcm.buffer]);
    if (i >= warmup) encodeMs.push(out.ms);
    tokens.push(out.tokens);
  }
  for (let i = 0; i < tokens.length; i++) {
    const out = await worker.call({ type: "decode", tokens: tokens[i] });
    if (i >= warmup) decodeMs.push(out.ms);
  }
  const stat = (xs) => ({ p50: percentile(xs, 50), p95: percentile(xs, 95), n: xs.length });
  voip.bench = { encode_ms: stat(encodeMs), decode_ms: stat(decodeMs), graph_optimization: opt,
    model: manifest.model_id, fingerprint: manifest.fingerprint || null };
  $("stats").textContent = JSON.stringify(voip.bench, null, 1);
  setState("benchmark done");
}

function setup() {
  const params = new URLSearchParams(location.search);
  $("room").value = params.get("room") || "demo";
  $("peer").value = params.get("peer") || `browser-${Math.random().toString(36).slice(2, 8)}`;
  $("token").value = params.get("token") || "";
  $("start").onclick = start;
  if (params.get("bench")) bench(Number(params.get("bench")), params.get("opt") || "all").catch((err) => fail(String(err.message || err)));
  else if (params.get("autostart") === "1") start();
}

setup();
