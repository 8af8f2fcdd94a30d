"""The aiortc sender and receiver track run through the one SendSession / ReceiveSession pair."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import soundfile as sf

from tests.unit.test_session import speech_with_pause
from voip_codec.codecs.registry import get_codec
from voip_codec.transport.link import Link
from voip_codec.transport.secure import SecureLink
from voip_codec.transport.session import ReceiveSession, SendSession


@pytest.mark.parametrize("e2e, version", [(True, 2), (False, 1)], ids=["e2e-v2", "plain-v1"])
def test_aiortc_call_runs_through_the_same_sessions(tmp_path: Path, e2e: bool,
                                                    version: int) -> None:
    """A real loopback call: Alice's CodecSender and Bob's CodecReceiverTrack hold the session
    classes; Bob's loss reports come back over the data channel to Alice's SendSession. With
    end-to-end encryption (the default) both peers derive the same SAS and every datagram
    crosses the channel encrypted and authenticated. Without it, the same call in packet
    version 1."""
    from aiortc.contrib.media import MediaPlayer

    from voip_codec.webrtc.call import CallOptions, CallPeer, collect
    from voip_codec.webrtc.contrib.loopback import loopback_candidates
    from voip_codec.webrtc.datachannel import DataChannelLink

    wav = tmp_path / "in.wav"
    sf.write(wav, speech_with_pause(8, 4)[:int(1.6 * 16000)], 16000)
    codec = get_codec("codec2-700c")

    async def main() -> tuple[CallPeer, CallPeer]:
        with loopback_candidates():
            player = MediaPlayer(str(wav))
            options = CallOptions(e2e=e2e, packet_version=version)
            alice = CallPeer(codec, options, source=player.audio, name="alice")
            bob = CallPeer(codec, options, name="bob")
            try:
                await alice.accept_answer(await bob.accept_offer(await alice.create_offer()))
                await asyncio.wait_for(asyncio.gather(alice.wait_open(), bob.wait_open()), 15)
                stop = asyncio.Event()
                recording = asyncio.ensure_future(collect(bob.track, stop))
                assert alice.sender is not None
                await asyncio.wait_for(alice.sender.finished.wait(), 15)
                for _ in range(100):  # at most 2 s to play out the rest
                    if bob.track.ended:
                        break
                    await asyncio.sleep(0.02)
                stop.set()
                await recording
            finally:
                await alice.close()
                await bob.close()
        return alice, bob

    alice, bob = asyncio.run(main())
    assert alice.sender is not None
    assert isinstance(alice.sender.session, SendSession)
    assert alice.sender.session.packetizer.version == version
    assert isinstance(bob.track.session, ReceiveSession)
    assert isinstance(alice.link, Link) and isinstance(alice.channel_link, DataChannelLink)
    if e2e:
        assert isinstance(alice.link, SecureLink) and isinstance(bob.link, SecureLink)
        assert alice.link.inner is alice.channel_link
        assert alice.sas is not None and alice.sas == bob.sas
        assert bob.link.stats.received == 21  # every packet of Alice, authenticated
        assert bob.link.stats.rejected == 0 and alice.link.stats.rejected == 0
        assert alice.link.stats.sent == 21 and bob.link.stats.sent >= 1  # bob: reports only
    else:
        assert alice.link is alice.channel_link and alice.sas is None
    assert alice.track.session.sender is alice.sender.session
    assert alice.sender.session.link is alice.link
    sent = alice.sender.stats
    rx = bob.track.session.stats
    assert sent.frames == 20 and sent.packets == 21  # 1.6 s + the end-of-stream frame
    assert rx.frames_received == 21 and rx.ended and rx.invalid == 0
    # Bob's reports crossed the channel, were classified by Alice's receive session and
    # reached her send session
    assert bob.track.session.reports_sent >= 1
    assert sent.reports == bob.track.session.reports_sent
    assert bob.track.stats() == rx.to_dict()


def test_e2e_must_be_on_at_both_ends_or_neither() -> None:
    from voip_codec.webrtc.call import CallError, CallOptions, CallPeer

    codec = get_codec("codec2-700c")

    async def main(offerer_e2e: bool) -> str:
        alice = CallPeer(codec, CallOptions(e2e=offerer_e2e), name="alice")
        bob = CallPeer(codec, CallOptions(e2e=not offerer_e2e), name="bob")
        try:
            with pytest.raises(CallError) as info:
                await bob.accept_offer(await alice.create_offer())
            return str(info.value)
        finally:
            await alice.close()
            await bob.close()

    assert "does not encrypt end to end" in asyncio.run(main(False))
    assert "with --no-e2e" in asyncio.run(main(True))
