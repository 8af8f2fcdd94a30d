"""A call over real links, driven by the event loop's clock: one SendSession and one
ReceiveSession per side, the same classes every other call uses.

:func:`run_link_call` ticks every frame period (optionally faster than real time: the sessions
then see a scaled clock, so delays and jitter on the link count ``speed`` times more). It takes
already encoded payloads, so the codec's speed does not limit how fast links can be measured;
with ``decode=True`` the receivers also decode (or conceal) every frame they play.

Used by the link tests (serial, ICE: the same loss and jitter behaviour as over memory links)
and to measure what a full-duplex call needs of a narrow link.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..codecs.base import Codec
from .jitter import FrameSource, JitterConfig, PlayoutFrame
from .link import Link
from .session import EncodedFrame, ReceiveSession, SendSession

__all__ = ["CallSide", "run_link_call"]


@dataclass
class CallSide:
    """One end of a :func:`run_link_call`: its link, what it sends, what it played."""

    link: Link
    """This side's link."""
    payloads: list[bytes] | None = None
    """Encoded frames to send, one per frame period (None: this side only listens)."""
    send: SendSession | None = None
    receive: ReceiveSession | None = None
    played: list[tuple[PlayoutFrame, np.ndarray | None]] = field(default_factory=list)
    """Every tick's frame (and its PCM when decoding; None for buffering or ended ticks)."""

    def to_dict(self) -> dict[str, Any]:
        """Sender and receiver counters as a JSON-ready dict."""
        return {"sender": self.send.stats.to_dict() if self.send is not None else None,
                "receiver": self.receive.stats.to_dict() if self.receive is not None else None}


def _receiver(session: ReceiveSession, clock: Callable[[], float]) -> Callable[[bytes], None]:
    def on_datagram(data: bytes) -> None:
        session.on_datagram(data, clock())
    return on_datagram


async def run_link_call(codec: Codec, sides: tuple[CallSide, CallSide], *,
                        frames_per_packet: int = 1, redundancy: int = 0,
                        jitter: JitterConfig | None = None, report_interval: int = 12,
                        extra_ticks: int = 10, speed: float = 1.0,
                        decode: bool = False) -> tuple[CallSide, CallSide]:
    """Run a call between two sides until both have sent everything and played it out.

    Each side's sender ends its stream (``END`` flag) with its last payload; each receiver
    reports losses back over its link every ``report_interval`` played frames, and its paired
    sender applies the reports of the other side.

    Args:
        codec: the codec (its info sizes the packets; its decoder runs when ``decode``).
        sides: the two ends; their links must be connected to each other.
        frames_per_packet: frames bundled per packet.
        redundancy: K (fixed).
        jitter: receiver jitter buffer settings.
        report_interval: played frames between loss reports.
        extra_ticks: frame periods to keep ticking after the last frame was sent.
        speed: time scale (2.0: twice as fast as real time).
        decode: decode or conceal each played frame (else only the transport runs).

    Returns:
        The sides, with their sessions and what they played.
    """
    info = codec.info
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    def now() -> float:
        return (loop.time() - t0) * speed

    for side in sides:
        side.receive = ReceiveSession(info, codec.new_decoder(), side.link, jitter=jitter,
                                      report_interval=report_interval, name=side.link.name)
        if side.payloads is not None:
            side.send = SendSession(info, codec.new_encoder(), side.link,
                                    frames_per_packet=frames_per_packet, redundancy=redundancy,
                                    name=side.link.name)
            side.receive.sender = side.send
        side.link.set_receiver(_receiver(side.receive, now))
    period = info.frame_ms / 1000
    frames = max(len(s.payloads or []) for s in sides)
    for k in range(frames + extra_ticks):
        wait = t0 + (k + 1) * period / speed - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        for side in sides:
            if side.send is not None and side.payloads is not None and k < len(side.payloads):
                side.send.send_frame(EncodedFrame(side.payloads[k], False),
                                     end=k == len(side.payloads) - 1)
        for side in sides:
            assert side.receive is not None
            played = side.receive.tick(now())
            pcm = None
            if decode and played.source not in (FrameSource.BUFFERING, FrameSource.ENDED):
                pcm = side.receive.decode(played)
            side.played.append((played, pcm))
    return sides
