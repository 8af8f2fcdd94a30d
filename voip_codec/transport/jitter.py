"""Jitter buffer: packets in, exactly one frame (or None) out per frame tick.

The buffer is driven by explicit times (``now`` in seconds, any monotonic clock), so it can be
tested without sleeping. Packets go in with :meth:`JitterBuffer.push` (raw bytes; bad packets are
logged, counted and dropped) and the playout clock calls :meth:`JitterBuffer.tick` once per frame
period; each tick returns one :class:`PlayoutFrame` whose ``payload`` goes to
``FrameDecoder.decode`` (``None`` means "conceal one frame").

Frames are keyed by their frame index (32-bit on the wire, unwrapped here to an unbounded
integer), so reordering, duplicates (same sequence number seen before), late frames (their tick
has passed) and wrap-around of both counters are handled by index arithmetic. A frame missing
from its own packet is taken from the redundant copies in the next packets (``REDUNDANT``).

Playout delay (NetEQ-like):

* Each new frame ``f`` arriving at ``t`` gives a transit sample ``x = t - f * T`` (``T`` the
  frame duration). Over the last ``history`` frames, ``ref = min(x)`` is the fastest transit and
  ``x - ref`` the frame's *relative delay*; the *target delay* is the ``percentile``-th
  percentile of relative delays, clamped to ``[min_delay_ms, max_delay_ms]`` (until
  ``warmup_frames`` samples exist, ``initial_delay_ms`` is used). When packets carry K
  redundant copies, the time those copies need to arrive (``ceil(K / n_new)`` packet intervals)
  is added (during warm-up: the larger of the two), so that a frame lost in transit can still be
  recovered before its tick.
* The *current delay* of the frame due at a tick is ``now - (ref + f * T)``. Playout starts when
  the first frame's current delay reaches the target; from then on one frame is played per tick.
* Delay changes are applied only where they cannot be heard as a click:

  - **grow** (stretch): when the due frame is missing and the current delay is below the target,
    the tick returns None without advancing (``STRETCH``): the decoder is concealing anyway, and
    the frame gets one more frame period to arrive;
  - **shrink** (skip): when the current delay exceeds the target by at least one frame, a due
    frame is dropped without being played only if it is missing while the previous tick was
    already concealed (the output is faded; the next good frame ramps back in) or if its packet
    was flagged ``SILENCE`` by the sender;
  - frames more than ``max_delay_ms`` (plus one bundle) ahead of playout force a resync (the
    buffer jumps forward; counted in ``resyncs``);
  - ``BEHIND_RESYNC_PACKETS`` packets in a row whose newest frame is already behind playout (a
    sender that stalled and went on from where it was) restart the timeline from the packet in
    hand (also counted in ``resyncs``).
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..wire.compact import WireReader
from ..wire.packet import (
    FLAG_END,
    FLAG_SILENCE,
    FLAG_START,
    MAX_NEW_FRAMES,
    AudioPacket,
    PacketError,
)

__all__ = ["DELAY_HISTORY", "FrameSource", "JitterBuffer", "JitterConfig", "JitterStats", "PlayoutFrame", "unwrap"]

DELAY_HISTORY = 4096
"""Ticks of playout-delay history kept in :attr:`JitterStats.delay_samples_ms` (at least)."""

LATE_HALF_LIFE = 25
"""Frames (2 s at 80 ms) over which the target floor set by a late frame halves."""

BEHIND_RESYNC_PACKETS = 3
"""Packets in a row whose newest frame is already behind playout after which the buffer starts
the stream's timeline again from the packet in hand. A sender that stalled (a blocked capture
or event loop) goes on from where it was, so every frame it sends afterwards comes late; without
a resync they would all be dropped as late for the rest of the call."""

logger = logging.getLogger(__name__)


def unwrap(value: int, reference: int, bits: int) -> int:
    """Extend a wrapped ``bits``-bit counter to the unbounded integer closest to ``reference``.

    Args:
        value: the counter as carried on the wire, ``0 <= value < 2**bits``.
        reference: an unbounded counter value known to be near ``value``.
        bits: counter width (16 for sequence numbers, 32 for frame indices).

    Returns:
        ``e`` with ``e % 2**bits == value`` and ``-2**(bits-1) <= e - reference < 2**(bits-1)``.
    """
    span = 1 << bits
    half = span >> 1
    return reference + ((value - reference + half) % span) - half


class FrameSource(enum.Enum):
    """What a tick handed to the decoder."""

    BUFFERING = "buffering"
    """Playout has not started yet (payload None; output silence, no decoder call needed)."""
    PRIMARY = "primary"
    """The frame from its own packet."""
    REDUNDANT = "redundant"
    """The frame recovered from a redundant copy in a later packet."""
    CONCEALED = "concealed"
    """The due frame never arrived in time: payload None, decoder conceals it."""
    STRETCH = "stretch"
    """Inserted frame to grow the delay while the due frame is missing (payload None)."""
    ENDED = "ended"
    """The sender ended the stream (``FLAG_END``) and its last frame has been played (payload
    None; output silence, no decoder call, not counted as concealment)."""


@dataclass(frozen=True)
class PlayoutFrame:
    """Result of one tick."""

    payload: bytes | None
    """The frame's payload, or None (decoder must conceal, or output silence while buffering)."""
    source: FrameSource
    """Where the payload came from."""
    index: int | None
    """Unwrapped frame index played or concealed (None while buffering or stretching)."""
    skipped: int = 0
    """Frames dropped just before this one to shrink the delay."""
    skipped_payloads: tuple[bytes, ...] = ()
    """Payloads of the silent frames among them, in order: not heard, but a stateful decoder
    must still see them to stay in step with the sender's encoder."""


@dataclass(frozen=True)
class JitterConfig:
    """Jitter buffer settings."""

    frame_ms: float = 80.0
    """Frame duration in milliseconds (the tick period)."""
    initial_delay_ms: float = 0.0
    """Playout delay used until ``warmup_frames`` delay samples exist (start low: a late frame
    raises the target at once, see the module docstring)."""
    min_delay_ms: float = 0.0
    """Lower bound of the target delay."""
    max_delay_ms: float = 800.0
    """Upper bound of the target delay."""
    percentile: float = 95.0
    """Percentile of recent relative delays the target covers (NetEQ uses 97)."""
    history: int = 250
    """Number of recent frames (20 s at 80 ms) for the delay statistics."""
    warmup_frames: int = 10
    """Delay samples needed before the measured percentile replaces ``initial_delay_ms``."""
    wait_for_redundancy: bool = True
    """While packets carry redundant copies and a loss was seen in the last ``history`` frames,
    add the time the copies need to arrive (``min(redundancy_wait_packets, ceil(K / n_new))``
    packet intervals) to the target, so that frames lost in transit can be recovered; a frame
    missing at its tick while packets carry copies grows the delay (a stretch) instead of being
    given up, so the first loss already raises the delay."""
    redundancy_wait_packets: int = 1
    """Packet intervals waited for redundant copies (1 recovers single losses; K packets would
    recover bursts of K at K times the delay)."""
    codec_id: int | None = None
    """If set, packets of any other codec id are dropped (counted as invalid)."""
    frame_bytes: int | None = None
    """If set, packets with another payload size are dropped (counted as invalid)."""

    def __post_init__(self) -> None:
        if self.frame_ms <= 0:
            raise ValueError(f"frame_ms must be > 0, got {self.frame_ms}")
        if not 0 <= self.min_delay_ms <= self.max_delay_ms:
            raise ValueError(f"need 0 <= min_delay_ms <= max_delay_ms, got {self.min_delay_ms} "
                             f"and {self.max_delay_ms}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.history < 1 or self.warmup_frames < 1:
            raise ValueError("history and warmup_frames must be >= 1")
        if self.redundancy_wait_packets < 0:
            raise ValueError(f"redundancy_wait_packets must be >= 0, got "
                             f"{self.redundancy_wait_packets}")


@dataclass
class JitterStats:
    """Counters and gauges of a jitter buffer."""

    packets_received: int = 0
    """Valid audio packets accepted (duplicates excluded)."""
    frames_received: int = 0
    """New frames accepted into the buffer in time."""
    invalid: int = 0
    """Datagrams dropped as unparsable or for another codec."""
    duplicate: int = 0
    """Packets whose sequence number had been seen already."""
    late: int = 0
    """New frames that arrived after their tick had passed."""
    played: int = 0
    """Ticks that handed a real payload to the decoder (primary or redundant)."""
    recovered_from_redundancy: int = 0
    """Played frames that came from a redundant copy only."""
    concealed: int = 0
    """Ticks after playout start that returned None (lost frames plus stretches)."""
    lost: int = 0
    """Frames given up on (concealed or skipped while missing)."""
    stretched: int = 0
    """Ticks inserted to grow the delay."""
    skipped: int = 0
    """Frames dropped to shrink the delay."""
    resyncs: int = 0
    """Forced jumps after the sender got far ahead."""
    jitter_ms: float = 0.0
    """Smoothed inter-arrival jitter (RFC 3550 style), milliseconds."""
    target_delay_ms: float = 0.0
    """Current target playout delay, milliseconds."""
    current_delay_ms: float = 0.0
    """Playout delay of the last frame due, milliseconds."""
    delay_samples_ms: list[float] = field(default_factory=list, repr=False)
    """Current delay at the most recent ticks after start (for plots and tests): the last
    ``DELAY_HISTORY`` ticks at least (about 5.5 min at 80 ms), at most twice that, so a long call
    does not grow it without bound."""


@dataclass
class _Slot:
    payload: bytes
    redundant: bool
    silence: bool


class JitterBuffer:
    """Reorders packets by frame index and hands out one frame per tick.

    Args:
        config: settings (defaults: 80 ms frames, no initial delay, 0..800 ms bounds).
        name: prefix for log messages.
    """

    def __init__(self, config: JitterConfig | None = None, name: str = "jitter") -> None:
        self.config = config if config is not None else JitterConfig()
        self.name = name
        self.stats = JitterStats()
        self._period = self.config.frame_ms / 1000.0
        self._slots: dict[int, _Slot] = {}
        self._transits: deque[float] = deque(maxlen=self.config.history)
        self._next: int | None = None  # unwrapped index of the frame due next (after start)
        self._frame_ref: int | None = None  # unwrapped highest frame index seen
        self._seq_ref: int | None = None
        self._seen_seqs: set[int] = set()
        self._reader: WireReader | None = None  # parses the raw datagrams given to push()
        self._last_transit: float | None = None
        self._prev_concealed = False
        self._origin: int | None = None  # unwrapped index that transit times are relative to
        self._redundancy_wait = 0.0
        self._end: int | None = None  # unwrapped index of the stream's last frame (FLAG_END)
        self._late_floor_ms = 0.0  # target floor set by the latest late frame
        self._late_floor_until = -1  # frame index up to which that floor holds
        self._loss_until = -1  # frame index up to which the redundancy wait is in the target
        self._stretched: int | None = None  # index of the frame the last stretch waited for
        self._lost_recent: deque[int] = deque(maxlen=64)  # indices given up on lately
        self._behind = 0  # packets in a row whose newest frame was behind playout
        self._base_target_ms = self.config.initial_delay_ms  # target without redundancy wait
        self.stats.target_delay_ms = self.config.initial_delay_ms

    def _restart(self) -> None:
        """Forget the stream position (a new stream begins); counters are kept."""
        self._slots.clear()
        self._transits.clear()
        self._next = None
        self._frame_ref = None
        self._seq_ref = None
        self._seen_seqs.clear()
        self._last_transit = None
        self._prev_concealed = False
        self._origin = None
        self._end = None
        self._late_floor_ms = 0.0
        self._late_floor_until = -1
        self._loss_until = -1
        self._lost_recent.clear()
        self._behind = 0
        self.stats.resyncs += 1

    @property
    def ended(self) -> bool:
        """Whether the sender ended the stream and every frame up to its end has been played."""
        return self._end is not None and self._next is not None and self._next > self._end

    @property
    def started(self) -> bool:
        """Whether playout has started."""
        return self._next is not None

    @property
    def playable(self) -> bool:
        """Whether the frame due next is here (before playout starts: whether any frame is), so
        that a tick now would hand out a payload rather than conceal."""
        if self._next is None:
            return bool(self._slots)
        return self._next in self._slots

    @property
    def held_frames(self) -> int:
        """Frame periods from the frame due next to the newest frame received (0 before
        playout starts): what the buffer holds ahead of playout, lost frames included."""
        if self._next is None or self._frame_ref is None:
            return 0
        return max(0, self._frame_ref + 1 - self._next)

    def unwrap_index(self, frame_index: int) -> int:
        """A frame index as carried on the wire, unwrapped near the highest index seen."""
        if self._frame_ref is None:
            return frame_index
        return unwrap(frame_index, self._frame_ref, 32)

    @property
    def next_index(self) -> int | None:
        """Unwrapped index of the frame due at the next tick (None before start)."""
        return self._next

    def push(self, data: bytes, now: float) -> AudioPacket | None:
        """Accept one datagram.

        Args:
            data: raw packet bytes, of either packet version (a v2 packet's 12-bit counters are
                restored by this buffer's own :class:`~voip_codec.wire.compact.WireReader`, so
                feed one stream's datagrams in arrival order).
            now: arrival time in seconds.

        Returns:
            The parsed packet if it was accepted, else None (bad, foreign, duplicate, or a
            loss report, which the caller should route elsewhere).
        """
        if self._reader is None:
            self._reader = WireReader(self.config.codec_id or 0)
        try:
            packet, _report = self._reader.read(data)
        except PacketError as exc:
            self.stats.invalid += 1
            logger.debug("%s: dropping bad packet: %s", self.name, exc)
            return None
        if packet is None:
            self.stats.invalid += 1
            logger.debug("%s: dropping a loss report (not audio)", self.name)
            return None
        return packet if self.push_packet(packet, now) else None

    def push_packet(self, packet: AudioPacket, now: float) -> bool:
        """Accept one parsed packet; returns False when it was dropped."""
        cfg = self.config
        if cfg.codec_id is not None and packet.codec_id != cfg.codec_id:
            self.stats.invalid += 1
            logger.debug("%s: dropping packet of codec %d (expected %d)", self.name,
                         packet.codec_id, cfg.codec_id)
            return False
        if cfg.frame_bytes is not None and packet.frame_bytes != cfg.frame_bytes:
            self.stats.invalid += 1
            logger.debug("%s: dropping packet with %d-byte frames (expected %d)", self.name,
                         packet.frame_bytes, cfg.frame_bytes)
            return False
        seq = packet.seq if self._seq_ref is None else unwrap(packet.seq, self._seq_ref, 16)
        if seq in self._seen_seqs:
            self.stats.duplicate += 1
            return False
        if packet.flags & FLAG_START and self._next is not None:
            gap = unwrap(packet.frame_index, self._next, 32) - self._next
            if self.ended or not -self._max_frames() <= gap <= self._max_frames():
                logger.info("%s: sender restarted (frame %d), resetting", self.name,
                            packet.frame_index)
                self._restart()
                seq = packet.seq
        elif self._next is not None and not self.ended:
            ref0 = self._frame_ref if self._frame_ref is not None else packet.frame_index
            if unwrap(packet.frame_index, ref0, 32) + len(packet.frames) - 1 < self._next:
                self._behind += 1
                if self._behind >= BEHIND_RESYNC_PACKETS:
                    logger.info("%s: %d packets in a row behind playout (the sender stalled?), "
                                "resync", self.name, self._behind)
                    self._restart()
                    seq = packet.seq
            else:
                self._behind = 0
        self._seen_seqs.add(seq)
        self._seq_ref = seq if self._seq_ref is None else max(self._seq_ref, seq)
        if len(self._seen_seqs) > 8192:
            floor = self._seq_ref - 4096
            self._seen_seqs = {s for s in self._seen_seqs if s >= floor}
        self.stats.packets_received += 1

        ref = self._frame_ref if self._frame_ref is not None else packet.frame_index
        first = unwrap(packet.frame_index, ref, 32)
        n_new = len(packet.frames)
        last = first + n_new - 1
        self._frame_ref = last if self._frame_ref is None else max(self._frame_ref, last)
        self._resync_if_far_ahead(last)
        if packet.flags & FLAG_END:
            self._end = last
        elif self._end is not None and last > self._end:
            self._end = None  # frames after the announced end: the stream goes on after all

        if self._origin is None:
            self._origin = first
        transit = now - (last - self._origin) * self._period
        if self._last_transit is not None:
            d = abs(transit - self._last_transit) * 1000.0
            self.stats.jitter_ms += (d - self.stats.jitter_ms) / 16.0
        self._last_transit = transit
        silence = bool(packet.flags & FLAG_SILENCE)
        for i, payload in enumerate(packet.frames):
            index = first + i
            transit_i = now - (index - self._origin) * self._period
            self._transits.append(transit_i)
            if self._next is not None and (index < self._next or index == self._stretched):
                # it came after its deadline (given up, or waited for with a stretch): grow the
                # target at once, so that the next frame this late is neither lost nor stretched
                late_ms = (transit_i - min(self._transits)) * 1000.0
                self._late_floor_ms = max(self._late_floor_ms, late_ms)
                self._late_floor_until = index + self.config.history
            if self._next is not None and index < self._next:
                self.stats.late += 1
                continue
            self.stats.frames_received += 1
            slot = self._slots.get(index)
            if slot is None or slot.redundant:
                self._slots[index] = _Slot(payload, redundant=False, silence=silence)
        for j, payload in enumerate(packet.redundant):
            index = first - len(packet.redundant) + j
            if self._next is not None and index < self._next:
                if index in self._lost_recent:  # a copy came, too late: wait for copies
                    self._loss_until = last + self.config.history
                continue
            if index in self._slots:
                continue
            self._loss_until = last + self.config.history
            self._slots[index] = _Slot(payload, redundant=True, silence=False)
        n_red = len(packet.redundant)
        packets = min(self.config.redundancy_wait_packets, math.ceil(n_red / n_new))
        self._redundancy_wait = packets * n_new * self.config.frame_ms if n_red else 0.0
        self._update_target()
        return True

    def _max_frames(self) -> int:
        return int(np.ceil(self.config.max_delay_ms / self.config.frame_ms)) + MAX_NEW_FRAMES

    def _resync_if_far_ahead(self, last: int) -> None:
        if self._next is None or last - self._next <= self._max_frames():
            return
        new_next = last - int(np.ceil(self.stats.target_delay_ms / self.config.frame_ms))
        logger.info("%s: sender %d frames ahead, resync from %d to %d", self.name,
                    last - self._next, self._next, new_next)
        self._slots = {k: v for k, v in self._slots.items() if k >= new_next}
        self._next = new_next
        self.stats.resyncs += 1

    def _update_target(self) -> None:
        cfg = self.config
        if len(self._transits) < cfg.warmup_frames:
            base = cfg.initial_delay_ms
        else:
            arr = np.fromiter(self._transits, dtype=np.float64)
            rel = (arr - arr.min()) * 1000.0
            base = float(np.percentile(rel, cfg.percentile))
        if self._frame_ref is not None and self._frame_ref <= self._late_floor_until:
            # the floor a late frame set halves every LATE_HALF_LIFE frames
            age = self._frame_ref - (self._late_floor_until - cfg.history)
            base = max(base, self._late_floor_ms * 0.5 ** (max(0, age) / LATE_HALF_LIFE))
        else:
            self._late_floor_ms = 0.0
        self._base_target_ms = base
        loss_seen = self._frame_ref is not None and self._frame_ref <= self._loss_until
        wait = self._redundancy_wait if cfg.wait_for_redundancy and loss_seen else 0.0
        self.stats.target_delay_ms = min(max(base + wait, cfg.min_delay_ms), cfg.max_delay_ms)

    def _stretch_target(self) -> float:
        """Target (seconds) below which a missing due frame is waited for: the target, or, when
        packets carry copies, at least the time its copy needs to arrive."""
        cfg = self.config
        wait = self._redundancy_wait if cfg.wait_for_redundancy else 0.0
        ms = max(self.stats.target_delay_ms,
                 min(max(self._base_target_ms + wait, cfg.min_delay_ms), cfg.max_delay_ms))
        return ms / 1000.0

    def _current_delay(self, index: int, now: float) -> float:
        """Delay in seconds of frame ``index`` if played at ``now``."""
        ref = min(self._transits)
        origin = self._origin if self._origin is not None else index
        return now - (ref + (index - origin) * self._period)

    def tick(self, now: float) -> PlayoutFrame:
        """Hand out the frame for this tick; call once per frame period.

        Args:
            now: tick time in seconds (same clock as :meth:`push`).

        Returns:
            One :class:`PlayoutFrame`; ``payload`` None means conceal (or silence while
            ``source`` is ``BUFFERING``).
        """
        if self.ended:
            return PlayoutFrame(None, FrameSource.ENDED, None)
        target = self.stats.target_delay_ms / 1000.0
        period = self._period
        eps = 1e-9
        if self._next is None:
            if not self._slots:
                return PlayoutFrame(None, FrameSource.BUFFERING, None)
            start = min(self._slots)
            if self._current_delay(start, now) + eps < target:
                return PlayoutFrame(None, FrameSource.BUFFERING, None)
            self._next = start
        index = self._next
        delay = self._current_delay(index, now)
        skipped = 0
        skipped_payloads: list[bytes] = []
        # Shrink: drop due frames while the delay is a frame too long and dropping is inaudible.
        while delay - period + eps >= target:
            slot = self._slots.get(index)
            droppable = ((slot is None and self._prev_concealed) or
                         (slot is not None and slot.silence))
            if not droppable or (index + 1) not in self._slots:
                break
            if slot is None:
                self.stats.lost += 1
            else:
                del self._slots[index]
                skipped_payloads.append(slot.payload)
            index += 1
            skipped += 1
            delay -= period
        self.stats.skipped += skipped
        self._next = index
        self.stats.current_delay_ms = delay * 1000.0
        samples = self.stats.delay_samples_ms
        samples.append(self.stats.current_delay_ms)
        if len(samples) > 2 * DELAY_HISTORY:
            del samples[:-DELAY_HISTORY]
        slot = self._slots.pop(index, None)
        if slot is not None:
            self._next = index + 1
            self._prev_concealed = False
            self.stats.played += 1
            if slot.redundant:
                self.stats.recovered_from_redundancy += 1
                return PlayoutFrame(slot.payload, FrameSource.REDUNDANT, index, skipped,
                                    tuple(skipped_payloads))
            return PlayoutFrame(slot.payload, FrameSource.PRIMARY, index, skipped,
                                tuple(skipped_payloads))
        self._prev_concealed = True
        self.stats.concealed += 1
        max_delay = self.config.max_delay_ms / 1000.0
        if (delay + eps < self._stretch_target()
                and delay + period <= max_delay + eps):
            self.stats.stretched += 1
            self._stretched = index
            return PlayoutFrame(None, FrameSource.STRETCH, None, skipped, tuple(skipped_payloads))
        self._next = index + 1
        self._lost_recent.append(index)
        self.stats.lost += 1
        return PlayoutFrame(None, FrameSource.CONCEALED, index, skipped, tuple(skipped_payloads))
