// The send side of voip_codec/transport (packetizer.py + SendSession's report handling): one
// encoded frame per packet with K copies of the frames before it, packet version 2 (compact,
// the default: a loss report for the other direction rides on the next packet) or 1, and K
// adapted from the other end's loss reports (RedundancyController).
import { DUPLICATE_LOSS, RedundancyController } from "./jitter.js";
import {
  FLAG_END, FLAG_SILENCE, FLAG_START, MAX_REDUNDANCY, audioPacketToBytes, compactAudioToBytes,
  compactFromReport,
} from "./wire.js";

export class Sender {
  constructor({ codecId, version = 2, redundancy = 1, adaptive = true, duplicates = true }) {
    if (version !== 1 && version !== 2) throw new Error(`packet version must be 1 or 2, got ${version}`);
    Object.assign(this, { codecId, version });
    this.controller = adaptive
      ? new RedundancyController({ initial: redundancy, duplicateLoss: duplicates ? DUPLICATE_LOSS : null })
      : null;
    this.k = redundancy;
    this.seq = 0;
    this.frameIndex = 0;
    this.sent = [];
    this.report = null;
    this.reports = 0;
    this.ended = false;
    this.first = true;
  }

  canPiggyback() { return this.version === 2 && !this.ended; }

  /** Whether each packet should go out twice now (the controller asks for it from 4 % loss). */
  get duplicates() { return Boolean(this.controller && this.controller.duplicates); }

  piggyback(report) { this.report = report; }

  onReport(report) {
    this.reports++;
    if (this.controller) this.k = this.controller.onReport(report);
  }

  /** The packet of one frame (Packetizer.push with one frame per packet). */
  packet(payload, { silent = false, end = false } = {}) {
    const k = Math.min(this.k, this.sent.length, MAX_REDUNDANCY);
    const redundant = this.sent.slice(this.sent.length - k);
    const flags = (this.first ? FLAG_START : 0) | (silent ? FLAG_SILENCE : 0) | (end ? FLAG_END : 0);
    let data;
    if (this.version === 2) {
      data = compactAudioToBytes({ seq: this.seq & 0xfff, frameIndex: this.frameIndex & 0xfff, frames: [payload], redundant,
        flags, codecId: flags & FLAG_START ? this.codecId : null, report: this.report ? compactFromReport(this.report) : null });
      this.report = null;
    } else {
      data = audioPacketToBytes({ codecId: this.codecId, seq: this.seq, frameIndex: this.frameIndex, frames: [payload], redundant, flags });
    }
    this.sent.push(payload);
    if (this.sent.length > MAX_REDUNDANCY) this.sent.shift();
    this.seq = (this.seq + 1) & 0xffff;
    this.frameIndex = (this.frameIndex + 1) >>> 0;
    this.ended = end;
    this.first = false;
    return data;
  }
}
