"""Delayed and bundled SACKs (voip_codec.webrtc.sctp) between real aiortc peers on 127.0.0.1.

Each test builds two ``RTCPeerConnection`` objects joined by an unordered ``maxRetransmits=0``
data channel (the call's settings), optionally through the loopback impairment relay, and tunes
the SCTP transport of neither, one or both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from voip_codec.transport.netsim import NetworkConditions, loss_model
from voip_codec.webrtc import sctp as sctp_module
from voip_codec.webrtc.contrib.loopback import loopback_candidates
from voip_codec.webrtc.contrib.relay import ImpairmentRelay
from voip_codec.webrtc.sctp import (
    SackTuning,
    SackTuningStats,
    SctpPacketCounter,
    sack_tuning_unsupported,
    tune_sctp,
)


@dataclass
class Side:
    """One peer: its connection, channel, what it received, its counters and tuning."""

    pc: RTCPeerConnection
    channel: RTCDataChannel | None = None
    received: list[bytes] = field(default_factory=list)
    counter: SctpPacketCounter | None = None
    tuning: SackTuning | None = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def attach(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        channel.on("message", lambda m: self.received.append(bytes(m)))
        if channel.readyState == "open":
            self.opened.set()
        channel.on("open", self.opened.set)

    def send(self, data: bytes) -> None:
        assert self.channel is not None
        self.channel.send(data)


def _setup(side: Side, tuned: bool) -> None:
    assert side.pc.sctp is not None
    if tuned:
        side.tuning = tune_sctp(side.pc.sctp)
        assert side.tuning is not None
    side.counter = SctpPacketCounter(side.pc.sctp)


@contextlib.asynccontextmanager
async def peers(offerer_tuned: bool, answerer_tuned: bool,
                relay: ImpairmentRelay | None = None) -> AsyncIterator[tuple[Side, Side]]:
    """A connected pair (offerer, answerer) with counters on both SCTP transports."""
    with loopback_candidates():
        a = Side(RTCPeerConnection(RTCConfiguration(iceServers=[])))
        b = Side(RTCPeerConnection(RTCConfiguration(iceServers=[])))
        b.pc.on("datachannel", b.attach)
        try:
            a.attach(a.pc.createDataChannel("test", ordered=False, maxRetransmits=0))
            _setup(a, offerer_tuned)
            await a.pc.setLocalDescription(await a.pc.createOffer())
            offer = a.pc.localDescription.sdp
            if relay is not None:
                await relay.start()
                offer = relay.rewrite(offer, "a")
            await b.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            _setup(b, answerer_tuned)
            await b.pc.setLocalDescription(await b.pc.createAnswer())
            answer = b.pc.localDescription.sdp
            if relay is not None:
                answer = relay.rewrite(answer, "b")
            await a.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await asyncio.wait_for(asyncio.gather(a.opened.wait(), b.opened.wait()), 15)
            await asyncio.sleep(0.3)  # let the channel-open exchange settle
            for side in (a, b):
                assert side.counter is not None
                side.counter.reset()
                if side.tuning is not None:
                    side.tuning.stats = SackTuningStats()
            yield a, b
        finally:
            for side in (a, b):
                if side.tuning is not None:
                    side.tuning.close()
            await a.pc.close()
            await b.pc.close()
            if relay is not None:
                relay.close()


async def exchange(a: Side, b: Side, n: int, interval_s: float, a_sends: bool = True,
                   b_sends: bool = True, settle_s: float = 0.5) -> None:
    """Both sides (or one) send ``n`` numbered messages, ``interval_s`` apart, half a period out
    of phase (as two independent callers would); then wait ``settle_s``."""
    t0 = time.monotonic()
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i * interval_s - time.monotonic()))
        if a_sends:
            a.send(b"a%04d" % i)
        await asyncio.sleep(max(0.0, t0 + (i + 0.5) * interval_s - time.monotonic()))
        if b_sends:
            b.send(b"b%04d" % i)
    await asyncio.sleep(settle_s)


def _counts(side: Side) -> sctp_module.SctpPacketStats:
    assert side.counter is not None
    return side.counter.stats


def test_full_duplex_bundles_sacks_and_delivers_everything() -> None:
    """Tuned <-> tuned vs stock <-> stock, same traffic: every message arrives both ways; the
    tuned pair sends (almost) no SACK-only packets, the stock pair one per received packet."""
    n = 40

    async def run(tuned: bool) -> tuple[Side, Side]:
        async with peers(tuned, tuned) as (a, b):
            await exchange(a, b, n, 0.04)
            return a, b

    stock_a, stock_b = asyncio.run(run(False))
    tuned_a, tuned_b = asyncio.run(run(True))
    for a, b in ((stock_a, stock_b), (tuned_a, tuned_b)):
        assert b.received == [b"a%04d" % i for i in range(n)]
        assert a.received == [b"b%04d" % i for i in range(n)]
    for side in (stock_a, stock_b):
        s = _counts(side)
        assert s.data_packets == n
        assert s.sack_packets >= n - 2  # one SACK per received DATA packet
        assert s.bundled_sacks == 0
    for side in (tuned_a, tuned_b):
        s = _counts(side)
        assert s.data_packets == n
        assert s.sack_packets <= 3, s  # the final delayed one
        # every second DATA chunk carries a SACK for the two packets received since the last
        assert n // 2 - 2 <= s.bundled_sacks <= n // 2 + 2, s
        assert side.tuning is not None and side.tuning.stats.bundled == s.bundled_sacks
    stock_total = _counts(stock_a).packets + _counts(stock_b).packets
    tuned_total = _counts(tuned_a).packets + _counts(tuned_b).packets
    assert tuned_total <= 0.6 * stock_total


@pytest.mark.parametrize("tuned_side", ["offerer", "answerer"])
def test_interop_with_stock_aiortc(tuned_side: str) -> None:
    """A tuned peer and a stock aiortc peer, each way round: full duplex, then each side alone
    sending. Everything arrives; the tuned side acknowledges one-way traffic every second
    packet, the stock side every packet."""
    n = 30

    async def run() -> None:
        async with peers(tuned_side == "offerer", tuned_side == "answerer") as (a, b):
            tuned, stock = (a, b) if tuned_side == "offerer" else (b, a)
            await exchange(a, b, n, 0.04)
            assert b.received == [b"a%04d" % i for i in range(n)]
            assert a.received == [b"b%04d" % i for i in range(n)]
            assert _counts(tuned).bundled_sacks >= n // 2 - 2
            assert _counts(tuned).sack_packets <= 3
            assert _counts(stock).sack_packets >= n - 2
            # one way: stock -> tuned, the tuned side SACKs every second packet
            for side in (a, b):
                assert side.counter is not None
                side.counter.reset()
                side.received.clear()
            await exchange(a, b, n, 0.04, a_sends=stock is a, b_sends=stock is b)
            assert tuned.received == [(b"a" if stock is a else b"b") + b"%04d" % i
                                      for i in range(n)]
            assert n // 2 - 1 <= _counts(tuned).sack_packets <= n // 2 + 2
            # one way: tuned -> stock, the stock side SACKs every packet
            for side in (a, b):
                assert side.counter is not None
                side.counter.reset()
                side.received.clear()
            await exchange(a, b, n, 0.04, a_sends=tuned is a, b_sends=tuned is b)
            assert len(stock.received) == n
            assert _counts(stock).sack_packets >= n - 1
            assert _counts(tuned).data_packets == n

    asyncio.run(run())


def test_delayed_sack_goes_out_after_the_delay() -> None:
    """A lone message is acknowledged by the delay timer, not at once and not by T3."""

    async def run() -> None:
        async with peers(False, True) as (a, b):
            assert b.tuning is not None
            sent_at = time.monotonic()
            a.send(b"x")
            assert a.pc.sctp is not None
            queue = a.pc.sctp._sent_queue
            while not b.received and time.monotonic() - sent_at < 2.0:
                await asyncio.sleep(0.005)
            while queue and time.monotonic() - sent_at < 2.0:
                await asyncio.sleep(0.005)
            acked_after = time.monotonic() - sent_at
            assert b.received == [b"x"]
            assert not queue
            assert b.tuning.stats.delayed == 1
            assert _counts(b).sack_packets == 1
            assert sctp_module.SACK_DELAY_S <= acked_after < 0.9  # T3 would take >= 1 s

    asyncio.run(run())


@pytest.mark.parametrize("tuned", ["both", "receiver", "sender"])
def test_loss_recovery_with_forward_tsn(tuned: str) -> None:
    """Messages lost on the link are abandoned (maxRetransmits=0: never resent), the sender
    moves the receiver past them with FORWARD TSN, and later messages keep arriving."""
    n = 60

    async def run() -> None:
        relay = ImpairmentRelay(NetworkConditions(loss=loss_model(0.2, 1.0), delay_ms=5.0),
                                NetworkConditions(delay_ms=5.0), seed=3)
        # the relay's "a" is the offerer; a -> b is lossy
        async with peers(tuned in ("both", "sender"), tuned in ("both", "receiver"),
                         relay) as (a, b):
            relay.impair(True)
            await exchange(a, b, n, 0.04, settle_s=0.0)
            relay.impair(False)
            # a few clean messages after the lossy ones reveal any trailing gap
            tail = [b"t%04d" % i for i in range(6)]
            for m in tail:
                a.send(m)
                await asyncio.sleep(0.04)
            assert a.pc.sctp is not None and b.pc.sctp is not None
            deadline = time.monotonic() + 0.8  # well before T3 (RTO >= 1 s)
            last_tsn = (a.pc.sctp._local_tsn - 1) % 2 ** 32
            while b.pc.sctp._last_received_tsn != last_tsn and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert b.pc.sctp._last_received_tsn == last_tsn  # nothing outstanding
            dropped = relay.stats["ab"].dropped
            got = [m for m in b.received if m.startswith(b"a")]
            assert dropped > 0
            assert n - dropped <= len(got) < n  # lost ones stay lost, the rest arrive
            assert b.received[-len(tail):] == tail
            assert _counts(a).forward_tsn_packets > 0
            assert _counts(a).data_packets == n + len(tail)  # no retransmission
            assert a.received == [b"b%04d" % i for i in range(n)]  # b -> a was clean
            await asyncio.sleep(0.3)
            assert not a.pc.sctp._sent_queue

    asyncio.run(run())


def test_version_guard(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
                       ) -> None:
    """Outside the tested aiortc range the transport is left alone, and that is said once."""
    assert sack_tuning_unsupported() is None  # the installed aiortc is the tested one
    assert sack_tuning_unsupported("1.16.3") is None
    for version in ("1.15.0", "1.17.0", "2.0.0", "garbage"):
        reason = sack_tuning_unsupported(version)
        assert reason is not None and ">= 1.16, < 1.17" in reason
    monkeypatch.setattr(sctp_module.aiortc, "__version__", "1.17.0")
    monkeypatch.setattr(sctp_module, "_warned", False)

    async def run() -> None:
        async with peers(False, False) as (a, b):
            assert a.pc.sctp is not None and b.pc.sctp is not None
            with caplog.at_level(logging.WARNING, logger="voip_codec.webrtc.sctp"):
                assert tune_sctp(a.pc.sctp) is None
                assert tune_sctp(b.pc.sctp) is None
            assert "_send_sack" not in vars(a.pc.sctp)
            await exchange(a, b, 6, 0.04)
            assert _counts(b).sack_packets >= 5  # still aiortc's SACK per packet

    asyncio.run(run())
    warnings = [r for r in caplog.records if "SACK tuning off" in r.getMessage()]
    assert len(warnings) == 1 and "1.17.0" in warnings[0].getMessage()


def test_tuning_twice_returns_the_same_tuning() -> None:
    async def run() -> None:
        async with peers(True, False) as (a, _):
            assert a.pc.sctp is not None
            assert tune_sctp(a.pc.sctp) is a.tuning
        with pytest.raises(ValueError, match="delay_s"):
            SackTuning(a.pc.sctp, delay_s=0.0)

    asyncio.run(run())


@pytest.mark.parametrize("enabled", [True, False])
def test_call_peers_tune_unless_told_not_to(enabled: bool) -> None:
    """CallPeer (demo, call) tunes both ends by default; ``sack_tuning=False`` (--stock-sctp)
    keeps aiortc's SCTP untouched."""
    from voip_codec.codecs.registry import get_codec
    from voip_codec.webrtc.call import CallOptions, CallPeer

    async def run() -> None:
        codec = get_codec("pcm16")
        options = CallOptions(sack_tuning=enabled)
        with loopback_candidates():
            a, b = CallPeer(codec, options, name="a"), CallPeer(codec, options, name="b")
            try:
                await a.accept_answer(await b.accept_offer(await a.create_offer()))
                await asyncio.gather(a.wait_open(), b.wait_open())
                for peer in (a, b):
                    assert peer.pc.sctp is not None
                    assert (peer.sack_tuning is not None) is enabled
                    assert ("_send_sack" in vars(peer.pc.sctp)) is enabled
                    if enabled:
                        assert peer.sack_tuning is not None
                        assert peer.sack_tuning.sctp is peer.pc.sctp
            finally:
                await a.close()
                await b.close()

    asyncio.run(run())
