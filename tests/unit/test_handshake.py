"""The in-band handshake of links without signaling: both ends agree on keys and a SAS over a
lossy link, a pre-shared secret keeps strangers and replayed hellos out, mismatched settings
stop with one line, and after it forged and replayed datagrams are dropped and counted."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from voip_codec.transport.handshake import (
    Handshake,
    HandshakeError,
    HandshakeLink,
    handshake_link,
    hello_size,
)
from voip_codec.transport.link import CallbackLink, Link
from voip_codec.transport.secure import SecureLink


def async_pair(loss: Callable[[str, bytes], bool] | None = None, delay_s: float = 0.005,
               mtu: int = 255) -> tuple[CallbackLink, CallbackLink, list[bytes], list[bytes]]:
    """Two callback links joined through the event loop; ``loss(direction, data)`` drops a
    datagram when true. Also returns what each direction carried."""
    loop = asyncio.get_running_loop()
    carried: dict[str, list[bytes]] = {"ab": [], "ba": []}
    ends: dict[str, CallbackLink] = {}

    def sender(direction: str, to: str) -> Callable[[bytes], None]:
        def send(data: bytes) -> None:
            carried[direction].append(bytes(data))
            if loss is None or not loss(direction, data):
                loop.call_later(delay_s, ends[to].deliver, bytes(data))
        return send

    ends["a"] = CallbackLink(sender("ab", "b"), name="a", mtu=mtu)
    ends["b"] = CallbackLink(sender("ba", "a"), name="b", mtu=mtu)
    return ends["a"], ends["b"], carried["ab"], carried["ba"]


def inner_handshake(link: Link) -> HandshakeLink:
    inner = link.inner if isinstance(link, SecureLink) else link
    assert isinstance(inner, HandshakeLink)
    return inner


async def both(a: Link, b: Link, **kwargs: object) -> tuple[Link | BaseException,
                                                           Link | BaseException]:
    ra, rb = await asyncio.gather(handshake_link(a, **kwargs),  # type: ignore[arg-type]
                                  handshake_link(b, **kwargs),  # type: ignore[arg-type]
                                  return_exceptions=True)
    return ra, rb


def test_keys_sas_and_roles_agree_and_audio_flows_both_ways() -> None:
    async def main() -> None:
        a, b, ab, ba = async_pair()
        sa, sb = await both(a, b, interval_s=0.05, timeout_s=5)
        assert isinstance(sa, SecureLink) and isinstance(sb, SecureLink)
        ha, hb = inner_handshake(sa).handshake, inner_handshake(sb).handshake
        assert {ha.role, hb.role} == {"offerer", "answerer"}
        assert ha.keys is not None and hb.keys is not None
        assert ha.keys.sas == hb.keys.sas and ha.keys.send == hb.keys.receive
        assert sa.counter_bytes == 1 and sa.overhead == 9
        # both started at once: first hellos cross, each answers, each confirms (3 + 3)
        assert len(ab) + len(ba) <= 6
        assert all(len(h) == hello_size(True, False) == 53 for h in ab + ba)
        got_a: list[bytes] = []
        got_b: list[bytes] = []
        sa.set_receiver(got_a.append)
        sb.set_receiver(got_b.append)
        for i in range(20):
            sa.send(b"a%d" % i)
            sb.send(b"b%d" % i)
        await asyncio.sleep(0.05)
        assert got_b == [b"a%d" % i for i in range(20)]
        assert got_a == [b"b%d" % i for i in range(20)]
        assert sa.stats.rejected == sb.stats.rejected == 0
        sa.close()
        sb.close()

    asyncio.run(main())


def test_fresh_keys_every_call() -> None:
    async def main() -> tuple[bytes, bytes]:
        a, b, _, _ = async_pair()
        sa, sb = await both(a, b, interval_s=0.05, timeout_s=5)
        assert isinstance(sa, SecureLink) and isinstance(sb, SecureLink)
        return sa.keys.send.base_key, sb.keys.send.base_key

    first, second = asyncio.run(main()), asyncio.run(main())
    assert len(set(first + second)) == 4


def test_completes_through_heavy_loss_including_every_first_message() -> None:
    rng = random.Random(1)
    seen = {"ab": 0, "ba": 0}

    def loss(direction: str, data: bytes) -> bool:
        seen[direction] += 1
        return seen[direction] <= 3 or rng.random() < 0.5

    async def main() -> None:
        a, b, _, _ = async_pair(loss)
        sa, sb = await both(a, b, interval_s=0.02, timeout_s=10)
        assert isinstance(sa, SecureLink) and isinstance(sb, SecureLink)
        assert sa.keys.sas == sb.keys.sas

    asyncio.run(main())


def test_the_last_message_lost_is_answered_after_completion() -> None:
    """Alice completes on Bob's answer; her final hello is lost, so Bob keeps asking and
    Alice's HandshakeLink answers his second hello (the first may have crossed her final one),
    without passing his hellos to her receiver."""
    hs_a, hs_b = Handshake(), Handshake()
    answer = hs_b.receive(hs_a.hello())  # Bob learns Alice and answers echoing her
    assert answer is not None and not hs_b.done
    final = hs_a.receive(answer)
    assert hs_a.done and final is not None  # ...lost on the way
    sent: list[bytes] = []
    got: list[bytes] = []
    link = CallbackLink(sent.append, name="alice")
    after = HandshakeLink(link, hs_a)
    after.set_receiver(got.append)
    link.deliver(hs_b.hello())  # Bob's periodic hello: it may have crossed Alice's final one
    assert sent == [] and got == []
    link.deliver(hs_b.hello())  # the next one: Bob did miss it
    assert len(sent) == 1 and got == []
    assert hs_b.receive(sent[0]) is None and hs_b.done  # Alice's done-hello: no more answers
    link.deliver(hs_b.hello())  # a late periodic one from Bob, now done: not answered
    assert len(sent) == 1
    link.deliver(b"\x10audio")
    assert got == [b"\x10audio"]
    assert hs_a.keys is not None and hs_b.keys is not None
    assert hs_a.keys.sas == hs_b.keys.sas


@pytest.mark.parametrize("psk_a, psk_b, message", [
    (b"horse battery", b"other", "failed the pre-shared secret check"),
    (b"horse battery", None, "set the same VOIP_CODEC_PSK"),
])
def test_wrong_or_missing_psk_fails_with_one_line(psk_a: bytes, psk_b: bytes | None,
                                                  message: str) -> None:
    async def main() -> tuple[object, object]:
        a, b, _, _ = async_pair()
        return await both_psk(a, b, psk_a, psk_b)

    ra, rb = asyncio.run(main())
    errors = [r for r in (ra, rb) if isinstance(r, HandshakeError)]
    assert len(errors) == 2
    assert any(message in str(e) for e in errors)
    assert all("\n" not in str(e) for e in errors)


async def both_psk(a: Link, b: Link, psk_a: bytes | None,
                   psk_b: bytes | None) -> tuple[object, object]:
    ra, rb = await asyncio.gather(
        handshake_link(a, psk=psk_a, interval_s=0.02, timeout_s=0.4),
        handshake_link(b, psk=psk_b, interval_s=0.02, timeout_s=0.4), return_exceptions=True)
    return ra, rb


def test_same_psk_agrees_and_macs_every_hello() -> None:
    async def main() -> None:
        a, b, ab, ba = async_pair()
        sa, sb = await both_psk(a, b, b"horse battery", b"horse battery")
        assert isinstance(sa, SecureLink) and isinstance(sb, SecureLink)
        assert sa.keys.psk and sa.keys.sas == sb.keys.sas
        assert all(len(h) == hello_size(True, True) == 69 for h in ab + ba)

    asyncio.run(main())


def test_stranger_and_tampered_hellos_are_dropped_and_counted_with_a_psk() -> None:
    alice = Handshake(psk=b"secret")
    stranger = Handshake()  # no psk: its hellos carry no MAC
    assert alice.receive(stranger.hello()) is None
    bob = Handshake(psk=b"secret")
    good = bytearray(bob.hello())
    good[10] ^= 1  # tamper with the nonce: the MAC no longer matches
    assert alice.receive(bytes(good)) is None
    wrong = Handshake(psk=b"guess")
    assert alice.receive(wrong.hello()) is None
    assert alice.stats.unauthenticated == 3 and alice.stats.hellos_received == 0
    assert alice.error is None and not alice.done
    # Bob's real hello still gets through after all that
    assert alice.receive(bob.hello()) is not None and alice.stats.hellos_received == 1


def test_a_replayed_hello_of_an_earlier_call_never_completes() -> None:
    """An attacker recorded Bob's hellos (MACed with the right psk) in an earlier call,
    including the one that completed that call; replayed to Alice's new call they cannot echo
    her fresh nonce."""
    old_alice, old_bob = Handshake(psk=b"s"), Handshake(psk=b"s")
    recorded = [old_bob.hello()]
    answer = old_bob.receive(old_alice.hello())
    assert answer is not None
    recorded.append(answer)
    recorded.append(old_bob.hello())
    alice = Handshake(psk=b"s")
    for hello in recorded * 3:
        alice.receive(hello)
    assert not alice.done and alice.keys is None and alice.stats.hellos_received == 9


def test_a_looped_line_times_out_counting_reflections() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        def echo(data: bytes) -> None:
            loop.call_soon(link.deliver, bytes(data))

        link = CallbackLink(echo, name="loop")
        with pytest.raises(HandshakeError, match="nothing arrived") as err:
            await handshake_link(link, interval_s=0.02, timeout_s=0.2)
        assert "\n" not in str(err.value)

    asyncio.run(main())
    hs = Handshake()
    assert hs.receive(hs.hello()) is None and hs.stats.reflected == 1


@pytest.mark.parametrize("encrypt_a", [True, False])
def test_one_sided_no_e2e_fails_on_both_ends(encrypt_a: bool) -> None:
    async def main() -> tuple[object, object]:
        a, b, _, _ = async_pair()
        ra, rb = await asyncio.gather(
            handshake_link(a, encrypt=encrypt_a, interval_s=0.02, timeout_s=1),
            handshake_link(b, encrypt=not encrypt_a, interval_s=0.02, timeout_s=1),
            return_exceptions=True)
        return ra, rb

    ra, rb = asyncio.run(main())
    assert isinstance(ra, HandshakeError) and isinstance(rb, HandshakeError)
    for err in (ra, rb):
        assert "both peers must turn it off or neither" in str(err)


def test_both_plain_agree_without_keys() -> None:
    async def main() -> None:
        a, b, ab, ba = async_pair()
        la, lb = await both(a, b, encrypt=False, interval_s=0.05, timeout_s=5)
        assert isinstance(la, HandshakeLink) and isinstance(lb, HandshakeLink)
        assert la.handshake.keys is None and la.handshake.done and lb.handshake.done
        assert all(len(h) == hello_size(False, False) == 21 for h in ab + ba)
        got: list[bytes] = []
        lb.set_receiver(got.append)
        la.send(b"plain")
        await asyncio.sleep(0.02)
        assert got == [b"plain"]

    asyncio.run(main())


def test_forged_and_replayed_datagrams_after_the_handshake_are_dropped_and_counted() -> None:
    async def main() -> None:
        a, b, ab, _ = async_pair()
        sa, sb = await both(a, b, interval_s=0.05, timeout_s=5)
        assert isinstance(sa, SecureLink) and isinstance(sb, SecureLink)
        got: list[bytes] = []
        sb.set_receiver(got.append)
        start = len(ab)
        sa.send(b"frame one")
        sa.send(b"frame two")
        await asyncio.sleep(0.02)
        audio = ab[start:]
        assert got == [b"frame one", b"frame two"]
        b.deliver(audio[0])  # replayed
        forged = bytearray(audio[1])
        forged[0] = 0x50  # a counter not seen yet (else it counts as a replay)
        forged[3] ^= 0x40
        b.deliver(bytes(forged))  # tampered
        b.deliver(b"\x60" + bytes(19))  # garbage of a stranger
        b.deliver(b"xx")  # shorter than counter + tag
        assert got == [b"frame one", b"frame two"]
        st = sb.stats
        assert st.replayed == 1 and st.forged == 2 and st.truncated == 1 and st.received == 2

    asyncio.run(main())


def test_timeout_messages_say_what_arrived() -> None:
    async def main() -> None:
        a, _, _, _ = async_pair()
        asyncio.get_running_loop().call_later(0.01, a.deliver, b"\x10some audio")
        with pytest.raises(HandshakeError, match="1 datagrams arrived but no handshake"):
            await handshake_link(a, interval_s=0.02, timeout_s=0.1)

    asyncio.run(main())
    with pytest.raises(ValueError, match="must be > 0"):
        asyncio.run(handshake_link(CallbackLink(lambda d: None), timeout_s=0))
