// The codec in a worker: the exported encoder and decoder steps (voip-codec export onnx) on
// onnxruntime-web (WASM, served by `voip-codec serve --web`, no CDN), plus the receive side's
// concealment, ported from voip_codec/codecs/plc.py (RepeatFadeConcealer + ConcealingDecoder):
// a lost frame re-decodes the last good payload's tokens (the decoder state keeps running),
// at -6 dB per lost frame, muted from the 4th lost frame on; gains ramp linearly over a frame.
//
// The page starts two of these, one per direction (encoder, decoder), so that sending never
// waits behind a decode and the two can run on two cores.
//
// Messages in:  {type: "init", model: "/model/", ort: "/ort/", sides: ["encoder", "decoder"],
//                graphOptimization: "all" (default) | "extended" | "basic" | "disabled"}
//               {type: "encode", id, pcm: Float32Array(chunk_size)}
//               {type: "decode", id, tokens: Int32Array(chunk_frames) | null}   (null = lost)
// Messages out: {type: "ready", manifest} | {type: "encoded", id, tokens, ms}
//               | {type: "decoded", id, pcm: Float32Array, ms, concealed} | {type: "error", message}

let ort = null;
let manifest = null;
const sides = {};

export const FADE_DB = 6.0;
export const MUTE_AFTER = 4;
const HISTORY = 8;

class Side {
  constructor(session, spec, mainIn, mainOut) {
    this.session = session;
    this.spec = spec;
    this.mainIn = mainIn;
    this.mainOut = mainOut;
    this.reset();
  }

  reset() {
    this.first = true;
    this.state = this.spec.state.map((s) => {
      const n = s.shape.reduce((a, b) => a * b, 1);
      const data = s.dtype === "int64" ? new BigInt64Array(n) : new Float32Array(n);
      return new ort.Tensor(s.dtype, data, s.shape);
    });
  }

  async run(input) {
    const feeds = { [this.mainIn]: input, first: new ort.Tensor("bool", new Uint8Array([this.first ? 1 : 0]), [1]) };
    this.spec.state.forEach((s, i) => { feeds[`in.${s.name}`] = this.state[i]; });
    const out = await this.session.run(feeds);
    this.state = this.spec.state.map((s) => out[`out.${s.name}`]);
    this.first = false;
    return out[this.mainOut];
  }
}

// ConcealingDecoder state
const history = [];
let lost = 0;
let gain = 1.0;

async function decodeTokens(tokens) {
  const t = new ort.Tensor("int32", Int32Array.from(tokens), [1, tokens.length]);
  const out = await sides.decoder.run(t);
  return new Float32Array(out.data);
}

async function decodeOrConceal(tokens) {
  const n = manifest.chunk_frames * manifest.hop_length;
  let pcm;
  let target;
  if (tokens) {
    pcm = await decodeTokens(tokens);
    history.push(tokens);
    if (history.length > HISTORY) history.shift();
    lost = 0;
    target = 1.0;
  } else {
    lost += 1;
    target = lost >= MUTE_AFTER ? 0.0 : 10 ** ((-FADE_DB * lost) / 20);
    pcm = history.length ? await decodeTokens(history[history.length - 1]) : new Float32Array(n);
  }
  const start = gain;
  gain = target;
  if (!(start === 1.0 && target === 1.0)) {
    for (let i = 0; i < n; i++) pcm[i] *= start + ((target - start) * i) / (n - 1);
  }
  return pcm;
}

async function init(msg) {
  ort = await import(`${msg.ort}ort.wasm.min.mjs`);
  ort.env.wasm.wasmPaths = msg.ort;
  ort.env.wasm.numThreads = 1; // no cross-origin isolation: no SharedArrayBuffer threads
  manifest = await (await fetch(`${msg.model}manifest.json`)).json();
  const load = async (side, mainIn, mainOut) => {
    const session = await ort.InferenceSession.create(`${msg.model}${manifest[side].file}`, {
      executionProviders: ["wasm"], graphOptimizationLevel: msg.graphOptimization || "all",
    });
    sides[side] = new Side(session, manifest[side], mainIn, mainOut);
  };
  const wanted = msg.sides || ["encoder", "decoder"];
  if (wanted.includes("encoder")) await load("encoder", "pcm", "tokens");
  if (wanted.includes("decoder")) await load("decoder", "tokens", "pcm");
  postMessage({ type: "ready", manifest });
}

// one message at a time: steps carry state, so they must not interleave
let queue = Promise.resolve();
onmessage = (event) => {
  const msg = event.data;
  queue = queue.then(async () => {
    try {
      if (msg.type === "init") {
        await init(msg);
      } else if (msg.type === "encode") {
        const t0 = performance.now();
        const out = await sides.encoder.run(new ort.Tensor("float32", msg.pcm, [1, msg.pcm.length]));
        postMessage({ type: "encoded", id: msg.id, tokens: Int32Array.from(out.data), ms: performance.now() - t0 });
      } else if (msg.type === "decode") {
        const t0 = performance.now();
        const pcm = await decodeOrConceal(msg.tokens);
        postMessage({ type: "decoded", id: msg.id, pcm, ms: performance.now() - t0, concealed: !msg.tokens }, [pcm.buffer]);
      }
    } catch (err) {
      postMessage({ type: "error", message: String(err && err.message ? err.message : err) });
    }
  });
};
