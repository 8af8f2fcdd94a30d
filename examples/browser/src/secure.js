// End-to-end encryption of datagrams, the browser's port of voip_codec/transport/secure.py
// (WebCrypto only: X25519, HKDF-SHA256, HMAC-SHA256, AES-128-GCM with a 64-bit tag).
//
// Keys: each peer makes an X25519 key pair per call and puts its public key into its SDP
// (a=x-voip-codec-e2e:<base64>). HKDF-SHA256 over the shared secret, salt SHA-256("voip-codec
// e2e psk" || psk) or none, info "voip-codec e2e v1" || SHA-256("voip-codec e2e v1" || offerer
// public || answerer public), gives 93 bytes: per direction (offerer -> answerer first) a
// 32-byte base key and a 12-byte nonce salt, then 5 bytes for the 8-digit SAS.
// Per datagram: counter low bytes (2, big-endian; the associated data) || ciphertext || 8-byte
// tag; nonce = salt XOR (direction, 0, 0, 0, 64-bit counter); the AES key of epoch e =
// HMAC-SHA256(base key, "voip-codec e2e epoch" || e as 8 bytes)[:16], e = counter / 2**24.
// Receiving restores the counter nearest the highest authenticated one (then tries 16 spans
// ahead), keeps a 64-packet replay window and drops (and counts) anything that does not
// authenticate. tests/unit/golden/e2e_vectors.json (from the Python code) is the contract:
// test/secure.test.mjs.

// browsers and node >= 19 have WebCrypto as globalThis.crypto, node 18 only as node:crypto's;
// a page served over plain http from another host than localhost has no crypto.subtle
const subtle = globalThis.crypto ? globalThis.crypto.subtle ?? null : (await import("node:crypto")).webcrypto.subtle;
const text = (s) => new TextEncoder().encode(s);
const LABEL = text("voip-codec e2e v1");
export const TAG_BYTES = 8;
export const COUNTER_BYTES = 2;
export const REPLAY_WINDOW = 64;
export const DEFAULT_REKEY_INTERVAL = 2 ** 24;
export const MAX_PACKETS = 2 ** 48;
export const COUNTER_SEARCH = 16;
export const SDP_ATTRIBUTE = "x-voip-codec-e2e";
// PKCS#8 wrapping of a raw X25519 private key (RFC 8410), for importing fixed test keys
const PKCS8_X25519 = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b,
  0x65, 0x6e, 0x04, 0x22, 0x04, 0x20]);

const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
};
const sha256 = async (data) => new Uint8Array(await subtle.digest("SHA-256", data));
const u64 = (n) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
};

/** One direction's keys: {baseKey (32 bytes), nonceSalt (12), direction (0 or 1)}. */
export class DirectionKeys {
  constructor(baseKey, nonceSalt, direction) {
    Object.assign(this, { baseKey, nonceSalt, direction });
    this.hmac = null;
  }

  /** The 16-byte AES key of a key epoch. */
  async epochKey(epoch) {
    this.hmac ??= await subtle.importKey("raw", this.baseKey, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const mac = await subtle.sign("HMAC", this.hmac, concat(text("voip-codec e2e epoch"), u64(epoch)));
    return new Uint8Array(mac).slice(0, 16);
  }

  /** The 12-byte GCM nonce of a packet counter. */
  nonce(counter) {
    const block = concat(Uint8Array.from([this.direction, 0, 0, 0]), u64(counter));
    return block.map((b, i) => b ^ this.nonceSalt[i]);
  }
}

/** Keys of one end from the X25519 shared secret: {send, receive, sas, psk}. */
export async function deriveKeys(shared, offererPublic, answererPublic, role, psk = null) {
  if (role !== "offerer" && role !== "answerer") throw new Error(`role must be offerer or answerer, got ${role}`);
  const transcript = await sha256(concat(LABEL, offererPublic, answererPublic));
  const salt = psk && psk.length ? await sha256(concat(text("voip-codec e2e psk"), psk)) : new Uint8Array(0);
  const ikm = await subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
  const okm = new Uint8Array(await subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt, info: concat(LABEL, transcript) }, ikm, 8 * (2 * (32 + 12) + 5)));
  const forward = new DirectionKeys(okm.slice(0, 32), okm.slice(32, 44), 0);
  const backward = new DirectionKeys(okm.slice(44, 76), okm.slice(76, 88), 1);
  let number = 0;
  for (const b of okm.slice(88, 93)) number = number * 256 + b;
  number %= 10 ** 8;
  const sas = `${String(Math.floor(number / 10 ** 4)).padStart(4, "0")} ${String(number % 10 ** 4).padStart(4, "0")}`;
  const [send, receive] = role === "offerer" ? [forward, backward] : [backward, forward];
  return { send, receive, sas, psk: Boolean(psk && psk.length) };
}

/** This end's X25519 key pair for one call. `privateKey`: raw 32 bytes (tests), else a new pair. */
export async function keyExchange(role, { psk = null, privateKey = null } = {}) {
  if (!subtle) throw new Error("end-to-end encryption needs WebCrypto, which browsers give only to secure pages: open the page as http://127.0.0.1 or localhost, or over https");
  let priv;
  let publicBytes;
  if (privateKey) {
    priv = await subtle.importKey("pkcs8", concat(PKCS8_X25519, privateKey), { name: "X25519" }, true, ["deriveBits"]);
    const jwk = await subtle.exportKey("jwk", priv);
    publicBytes = Uint8Array.from(atob(jwk.x.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  } else {
    const pair = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    priv = pair.privateKey;
    publicBytes = new Uint8Array(await subtle.exportKey("raw", pair.publicKey));
  }
  return {
    role, public: publicBytes,
    /** The call's keys from the other end's raw public key; throws on an unusable key. */
    async derive(peerPublic) {
      if (peerPublic.length !== 32) throw new Error(`an X25519 public key has 32 bytes, got ${peerPublic.length}`);
      const peer = await subtle.importKey("raw", peerPublic, { name: "X25519" }, true, []);
      let shared;
      try {
        shared = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: peer }, priv, 256));
      } catch (err) {
        throw new Error(`unusable X25519 public key from the other peer: ${err.message || err}`);
      }
      if (!shared.some((b) => b)) throw new Error("unusable X25519 public key from the other peer (all-zero secret)");
      const [offerer, answerer] = role === "offerer" ? [publicBytes, peerPublic] : [peerPublic, publicBytes];
      return deriveKeys(shared, offerer, answerer, role, psk);
    },
  };
}

const toBase64 = (bytes) => btoa(String.fromCharCode(...bytes));

/** The SDP with this end's public key as a session attribute (before the first m= line). */
export function sdpWithE2eKey(sdp, publicKey) {
  const newline = sdp.includes("\r\n") ? "\r\n" : "\n";
  const lines = sdp.split(newline);
  let at = lines.findIndex((l) => l.startsWith("m="));
  if (at < 0) at = lines.length;
  lines.splice(at, 0, `a=${SDP_ATTRIBUTE}:${toBase64(publicKey)}`);
  return lines.join(newline);
}

/** {sdp: the SDP without the key line, key: the raw 32-byte key or null}; throws on a bad key. */
export function sdpTakeE2eKey(sdp) {
  const newline = sdp.includes("\r\n") ? "\r\n" : "\n";
  const kept = [];
  const keys = [];
  const prefix = `a=${SDP_ATTRIBUTE}:`;
  for (const line of sdp.split(newline)) {
    if (line.startsWith(prefix)) keys.push(line.slice(prefix.length).trim());
    else kept.push(line);
  }
  if (!keys.length) return { sdp, key: null };
  if (keys.length > 1) throw new Error(`the SDP carries ${keys.length} end-to-end keys, expected one`);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(keys[0])) throw new Error("bad end-to-end key in the SDP: not base64");
  const key = Uint8Array.from(atob(keys[0]), (c) => c.charCodeAt(0));
  if (key.length !== 32) throw new Error(`bad end-to-end key in the SDP: ${key.length} bytes, expected 32`);
  return { sdp: kept.join(newline), key };
}

/** Encrypts outgoing and authenticates incoming datagrams of one call end (SecureLink's rules).
 * `seal` and `open` are async; `open` runs one datagram at a time, in arrival order. */
export class SecureChannel {
  constructor(keys, { counterBytes = COUNTER_BYTES, rekeyInterval = DEFAULT_REKEY_INTERVAL, firstCounter = 0 } = {}) {
    if (counterBytes !== 1 && counterBytes !== 2) throw new Error(`counterBytes must be 1 or 2, got ${counterBytes}`);
    Object.assign(this, { keys, counterBytes, rekeyInterval });
    this.overhead = counterBytes + TAG_BYTES;
    this.span = 2 ** (8 * counterBytes);
    this.counter = firstCounter;
    this.highest = null;
    this.window = 0n; // bit i: counter (highest - i) was accepted
    this.epochs = { send: null, receive: null }; // {epoch, key: CryptoKey}
    this.queue = Promise.resolve();
    this.stats = { sent: 0, received: 0, truncated: 0, forged: 0, replayed: 0, stale: 0, exhausted: 0 };
  }

  async aesKey(which, counter) {
    const epoch = Math.floor(counter / this.rekeyInterval);
    const cached = this.epochs[which];
    if (cached && cached.epoch === epoch) return cached.key;
    const direction = which === "send" ? this.keys.send : this.keys.receive;
    const key = await subtle.importKey("raw", await direction.epochKey(epoch), "AES-GCM", false, ["encrypt", "decrypt"]);
    if (which === "send" || !cached || epoch >= cached.epoch) this.epochs[which] = { epoch, key };
    return key;
  }

  header(counter) {
    const low = counter % this.span;
    return this.counterBytes === 2 ? Uint8Array.from([low >> 8, low & 0xff]) : Uint8Array.from([low]);
  }

  /** The datagram for one plaintext, or null when the counter is exhausted. */
  async seal(plain) {
    const counter = this.counter;
    if (counter >= MAX_PACKETS) { this.stats.exhausted++; return null; }
    this.counter += 1;
    const header = this.header(counter);
    const key = await this.aesKey("send", counter);
    const body = await subtle.encrypt({ name: "AES-GCM", iv: this.keys.send.nonce(counter),
      additionalData: header, tagLength: 8 * TAG_BYTES }, key, plain);
    this.stats.sent++;
    return concat(header, new Uint8Array(body));
  }

  /** The plaintext of one received datagram, or null (dropped and counted). */
  open(datagram) {
    const result = this.queue.then(() => this.openNow(new Uint8Array(datagram)));
    this.queue = result.catch(() => {});
    return result;
  }

  async tryOpen(counter, data) {
    try {
      const key = await this.aesKey("receive", counter);
      const plain = await subtle.decrypt({ name: "AES-GCM", iv: this.keys.receive.nonce(counter),
        additionalData: data.subarray(0, this.counterBytes), tagLength: 8 * TAG_BYTES }, key, data.subarray(this.counterBytes));
      return new Uint8Array(plain);
    } catch {
      return null;
    }
  }

  async openNow(data) {
    if (data.length < this.overhead) { this.stats.truncated++; return null; }
    let low = 0;
    for (let i = 0; i < this.counterBytes; i++) low = low * 256 + data[i];
    const nearest = this.restore(low);
    const verdict = this.windowVerdict(nearest);
    let plain = verdict === null ? await this.tryOpen(nearest, data) : null;
    let counter = nearest;
    if (plain === null && this.highest !== null) {
      // after a loss burst longer than half the span the nearest guess is wrong: try ahead
      let ahead = nearest + this.span;
      while (ahead <= this.highest) ahead += this.span;
      for (let j = 0; j < COUNTER_SEARCH && plain === null; j++) {
        plain = await this.tryOpen(ahead + j * this.span, data);
        if (plain !== null) counter = ahead + j * this.span;
      }
    }
    if (plain === null) {
      if (verdict === "replayed") this.stats.replayed++;
      else if (verdict === "stale") this.stats.stale++;
      else this.stats.forged++;
      return null;
    }
    const mask = (1n << BigInt(REPLAY_WINDOW)) - 1n;
    if (this.highest === null || counter > this.highest) {
      const shift = this.highest === null ? 0 : counter - this.highest;
      this.window = shift >= REPLAY_WINDOW ? 1n : ((this.window << BigInt(shift)) | 1n) & mask;
      this.highest = counter;
    } else {
      this.window |= 1n << BigInt(this.highest - counter);
    }
    this.stats.received++;
    return plain;
  }

  windowVerdict(counter) {
    if (this.highest === null || counter > this.highest) return null;
    const age = this.highest - counter;
    if (age >= REPLAY_WINDOW) return "stale";
    return (this.window >> BigInt(age)) & 1n ? "replayed" : null;
  }

  restore(low) {
    const reference = this.highest ?? 0;
    let delta = (((low - reference) % this.span) + this.span) % this.span;
    if (delta >= this.span / 2) delta -= this.span;
    const counter = reference + delta;
    return counter >= 0 ? counter : counter + this.span;
  }
}
