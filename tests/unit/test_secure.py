"""End-to-end encryption: key exchange, SAS, SDP transport of keys, the SecureLink wrapper
(round trip, tampering, replay, truncation, wrong keys, counter wrap and rekeying), and the
sessions over SecureLink(MemoryLink) under loss and jitter."""

from __future__ import annotations

import numpy as np
import pytest

from voip_codec.codecs.registry import get_codec
from voip_codec.transport.jitter import FrameSource
from voip_codec.transport.link import CallbackLink, Link, MemoryLink, memory_link_pair
from voip_codec.transport.netsim import NetworkConditions, loss_model
from voip_codec.transport.redundancy import RedundancyController
from voip_codec.transport.secure import (
    E2E_OVERHEAD,
    ORDERED_SEARCH,
    E2EKeys,
    KeyExchange,
    SecureLink,
    sdp_take_e2e_key,
    sdp_with_e2e_key,
)
from voip_codec.transport.session import ReceiveSession, SendSession

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP x\r\n"


def pair_keys(psk_a: bytes | None = None, psk_b: bytes | None = None) -> tuple[E2EKeys,
                                                                              E2EKeys]:
    offerer, answerer = KeyExchange("offerer", psk_a), KeyExchange("answerer", psk_b)
    return offerer.derive(answerer.public), answerer.derive(offerer.public)


def secure_pair(ka: E2EKeys, kb: E2EKeys, **kwargs: int) -> tuple[SecureLink, SecureLink,
                                                                  MemoryLink, MemoryLink]:
    a, b = memory_link_pair()
    return SecureLink(a, ka, **kwargs), SecureLink(b, kb, **kwargs), a, b


def collect(link: Link) -> list[bytes]:
    got: list[bytes] = []
    link.set_receiver(got.append)
    return got


def test_both_ends_derive_mirrored_keys_and_the_same_sas() -> None:
    ka, kb = pair_keys()
    assert ka.send == kb.receive and ka.receive == kb.send and ka.send != ka.receive
    assert ka.sas == kb.sas and len(ka.sas) == 9 and ka.sas[4] == " "
    assert ka.sas.replace(" ", "").isdigit()
    kc, _ = pair_keys()
    assert kc.send.base_key != ka.send.base_key  # fresh key pairs per call


def test_psk_changes_keys_and_sas() -> None:
    ka, kb = pair_keys(b"horse battery", b"horse battery")
    assert ka.sas == kb.sas and ka.psk and ka.send == kb.receive
    ka2, kb2 = pair_keys(b"horse battery", b"other")
    assert ka2.sas != kb2.sas and ka2.send != kb2.receive


def test_swapped_keys_show_different_sas() -> None:
    """A relay that swaps the public keys (man in the middle) holds a different secret with
    each end: the SAS values differ."""
    alice, bob = KeyExchange("offerer"), KeyExchange("answerer")
    mallory_to_alice, mallory_to_bob = KeyExchange("answerer"), KeyExchange("offerer")
    alice_keys = alice.derive(mallory_to_alice.public)
    bob_keys = bob.derive(mallory_to_bob.public)
    assert alice_keys.sas != bob_keys.sas


def test_bad_public_keys_are_rejected() -> None:
    ex = KeyExchange("offerer")
    with pytest.raises(ValueError, match="32 bytes"):
        ex.derive(b"\x01" * 31)
    with pytest.raises(ValueError, match="unusable X25519"):
        ex.derive(b"\x00" * 32)  # a low-order point
    with pytest.raises(ValueError, match="role"):
        KeyExchange("relay")  # type: ignore[arg-type]


def test_sdp_carries_the_key() -> None:
    ex = KeyExchange("offerer")
    sdp = sdp_with_e2e_key(SDP, ex.public)
    assert "a=x-voip-codec-e2e:" in sdp and sdp.index("a=x-voip") < sdp.index("m=")
    clean, key = sdp_take_e2e_key(sdp)
    assert clean == SDP and key == ex.public
    assert sdp_take_e2e_key(SDP) == (SDP, None)
    with pytest.raises(ValueError, match="32"):
        sdp_take_e2e_key(sdp_with_e2e_key(SDP, b"\x01" * 16))
    with pytest.raises(ValueError, match="bad end-to-end key"):
        sdp_take_e2e_key(SDP.replace("t=0 0", "t=0 0\r\na=x-voip-codec-e2e:!!!"))
    with pytest.raises(ValueError, match="2 end-to-end keys"):
        sdp_take_e2e_key(sdp_with_e2e_key(sdp, ex.public))


def test_round_trip_both_ways_and_overhead() -> None:
    ka, kb = pair_keys()
    sa, sb, a, b = secure_pair(ka, kb)
    got_a, got_b = collect(sa), collect(sb)
    wire: list[bytes] = []
    deliver = b._handler
    assert deliver is not None

    def watch(data: bytes) -> None:  # see what crosses the wire, then pass it on
        wire.append(data)
        deliver(data)

    b.set_receiver(watch)
    for i in range(5):
        sa.send(b"hello %d" % i)
        sb.send(b"back %d" % i)
    b.deliver(0.0)
    a.deliver(0.0)
    assert got_b == [b"hello %d" % i for i in range(5)]
    assert got_a == [b"back %d" % i for i in range(5)]
    assert all(len(w) == len(b"hello 0") + E2E_OVERHEAD for w in wire)
    assert all(b"hello" not in w for w in wire)
    assert wire[3][:2] == b"\x00\x03"  # the counter's low bits, in clear
    assert sa.mtu == a.mtu - 10 and sa.name == "e2e+memory:a"
    with pytest.raises(ValueError, match="MTU"):
        sa.send(b"\0" * (sa.mtu + 1))
    assert sb.stats.received == 5 and sb.stats.rejected == 0 and sa.stats.sent == 5


def _sent_datagrams(keys: E2EKeys, payloads: list[bytes], **kwargs: int) -> list[bytes]:
    """What a SecureLink with these keys puts on the wire for each payload."""
    out: list[bytes] = []
    link = SecureLink(CallbackLink(out.append), keys, **kwargs)
    for p in payloads:
        link.send(p)
    return out


def _receiver(keys: E2EKeys, **kwargs: int) -> tuple[CallbackLink, SecureLink, list[bytes]]:
    inner = CallbackLink(lambda d: None)
    link = SecureLink(inner, keys, **kwargs)
    return inner, link, collect(link)


def test_tampered_truncated_and_garbage_are_dropped_and_counted() -> None:
    ka, kb = pair_keys()
    wire = _sent_datagrams(ka, [b"frame-%d" % i for i in range(4)])
    inner, rx, got = _receiver(kb)
    flipped = bytearray(wire[0])
    flipped[4] ^= 0x01  # one ciphertext bit
    inner.deliver(bytes(flipped))
    tag = bytearray(wire[0])
    tag[-1] ^= 0x80  # one tag bit
    inner.deliver(bytes(tag))
    counter = bytearray(wire[0])
    counter[1] ^= 0x01  # the counter (associated data and nonce)
    inner.deliver(bytes(counter))
    inner.deliver(wire[0][:-1])  # cut inside: fails authentication
    inner.deliver(wire[0][:9])  # shorter than counter + tag
    inner.deliver(b"")
    inner.deliver(b"\x80\x00\x00\x00" + b"\x5a" * 8)  # a plaintext v2 packet
    assert got == []
    assert (rx.stats.forged, rx.stats.truncated) == (5, 2)
    inner.deliver(wire[0])  # the genuine one still passes afterwards
    assert got == [b"frame-0"] and rx.stats.received == 1


def test_replay_window() -> None:
    ka, kb = pair_keys()
    wire = _sent_datagrams(ka, [b"p%d" % i for i in range(200)])
    inner, rx, got = _receiver(kb)
    inner.deliver(wire[10])
    inner.deliver(wire[10])  # replay
    inner.deliver(wire[5])  # older, inside the window, first time: accepted
    inner.deliver(wire[5])  # replay
    inner.deliver(wire[150])
    inner.deliver(wire[100])  # 50 behind: inside the 64-packet window
    inner.deliver(wire[80])  # 70 behind: outside
    inner.deliver(wire[10])
    inner.deliver(wire[150])
    assert got == [b"p10", b"p5", b"p150", b"p100"]
    assert (rx.stats.replayed, rx.stats.stale, rx.stats.forged) == (3, 2, 0)


def test_wrong_key_or_psk_is_rejected() -> None:
    ka, _ = pair_keys()
    _, kb_other = pair_keys()
    wire = _sent_datagrams(ka, [b"secret"] * 3)
    inner, rx, got = _receiver(kb_other)
    for d in wire:
        inner.deliver(d)
    assert got == [] and rx.stats.forged == 3
    ka, kb = pair_keys(b"one", b"two")
    inner, rx, got = _receiver(kb)
    for d in _sent_datagrams(ka, [b"x"] * 3):
        inner.deliver(d)
    assert got == [] and rx.stats.forged == 3
    # own direction's packets reflected back are not accepted either (per-direction keys)
    inner, rx, got = _receiver(ka)
    for d in _sent_datagrams(ka, [b"x"] * 3):
        inner.deliver(d)
    assert got == [] and rx.stats.forged == 3


@pytest.mark.parametrize("counter_bytes, burst", [(2, 1000), (2, 40_000), (1, 100),
                                                   (1, 1000)])
def test_counter_wraps_and_keys_rotate(counter_bytes: int, burst: int) -> None:
    """The counter bits on the wire wrap many times; the receiver restores the full counter,
    also after a loss burst longer than half the counter span (40k packets with 2 bytes, 1000
    with 1), and the key epoch advances every 4096 packets."""
    ka, kb = pair_keys()
    start = 65536 - 3000
    n = 6000 + burst
    tx_out: list[bytes] = []
    tx = SecureLink(CallbackLink(tx_out.append), ka, rekey_interval=4096, first_counter=start,
                    counter_bytes=counter_bytes)
    inner, rx, got = _receiver(kb, rekey_interval=4096, counter_bytes=counter_bytes)
    epochs = set()
    for i in range(n):
        epochs.add(tx.epoch)
        tx.send(i.to_bytes(4, "big"))
    assert all(len(d) == 4 + counter_bytes + 8 for d in tx_out)
    rx._highest = start - 1  # the receiver has followed the stream from counter 0 so far
    for i, d in enumerate(tx_out):
        if 2000 <= i < 2000 + burst:
            continue  # a burst of lost packets across the wrap at 65536
        inner.deliver(d)
    kept = [i for i in range(n) if not 2000 <= i < 2000 + burst]
    assert [int.from_bytes(g, "big") for g in got] == kept and rx.stats.rejected == 0
    assert tx.send_counter == start + n > 65536
    assert {15, 16} <= epochs and ka.send.epoch_key(15) != ka.send.epoch_key(16)
    # the same counter in two epochs never gives the same ciphertext: keys differ
    c1 = _sent_datagrams(ka, [b"same"], rekey_interval=4096, first_counter=5)
    c2 = _sent_datagrams(ka, [b"same"], rekey_interval=8192, first_counter=4096 + 5)
    assert c1[0][2:] != c2[0][2:]


def test_a_burst_beyond_the_search_is_lost_not_misread() -> None:
    """With one counter byte, 16 spans ahead cover 4096 lost packets; after a longer silence the
    datagrams fail authentication (counted as forged), they are never accepted wrongly."""
    ka, kb = pair_keys()
    wire = _sent_datagrams(ka, [b"x%d" % i for i in range(6000)], counter_bytes=1)
    inner, rx, got = _receiver(kb, counter_bytes=1)
    inner.deliver(wire[0])
    inner.deliver(wire[4500])  # 148 + 256 * 16 = 4244 < 4500: beyond the search
    assert got == [b"x0"] and rx.stats.forged == 1
    inner.deliver(wire[3000])  # within the search: accepted
    assert got == [b"x0", b"x3000"]


def test_no_counter_bytes_on_an_in_order_link() -> None:
    """counter_bytes=0 (serial lines: never reordered): 8 bytes of overhead; the receiver
    finds the counter after loss bursts up to ORDERED_SEARCH, across key epochs; replays and
    forgeries are dropped and counted; a burst beyond the search is lost, never misread."""
    ka, kb = pair_keys()
    wire = _sent_datagrams(ka, [b"p%d" % i for i in range(2200)], counter_bytes=0,
                           rekey_interval=256)
    assert all(len(d) == len(b"p%d" % i) + 8 for i, d in enumerate(wire))
    inner, rx, got = _receiver(kb, counter_bytes=0, rekey_interval=256)
    kept = [0, 1, 2, 5, 6, 6 + ORDERED_SEARCH]  # bursts of 2 and ORDERED_SEARCH - 1 lost
    for i in kept:
        inner.deliver(wire[i])
    assert got == [b"p%d" % i for i in kept] and rx.stats.rejected == 0
    inner.deliver(wire[6 + ORDERED_SEARCH])  # replayed
    tampered = bytearray(wire[7 + ORDERED_SEARCH])
    tampered[0] ^= 1
    inner.deliver(bytes(tampered))
    inner.deliver(wire[8 + 2 * ORDERED_SEARCH])  # beyond the search: lost
    assert rx.stats.replayed == 1 and rx.stats.forged == 2 and len(got) == len(kept)
    inner.deliver(wire[7 + ORDERED_SEARCH])  # the stream goes on
    assert got[-1] == b"p%d" % (7 + ORDERED_SEARCH)


def test_sender_stops_before_the_counter_ends() -> None:
    ka, _ = pair_keys()
    out: list[bytes] = []
    tx = SecureLink(CallbackLink(out.append), ka, first_counter=2**48 - 1)
    tx.send(b"last")
    tx.send(b"never")
    assert len(out) == 1 and tx.stats.exhausted == 1 and tx.dropped == 1


def test_small_mtu_is_rejected() -> None:
    ka, _ = pair_keys()
    a, _ = memory_link_pair(mtu=10)
    with pytest.raises(ValueError, match="no room"):
        SecureLink(a, ka)


@pytest.mark.parametrize("version", [1, 2])
def test_sessions_over_secure_memory_links_with_loss_and_jitter(version: int) -> None:
    """The loss/jitter session test, full duplex, over SecureLink(MemoryLink): what arrives
    decodes, losses are concealed, reports adapt K, and nothing is rejected by the crypto."""
    codec = get_codec("codec2-700c")
    cond = NetworkConditions(loss=loss_model(0.1, 2.0), delay_ms=40.0, jitter_ms=15.0)
    a, b = memory_link_pair(cond, cond, seed=5)
    ka, kb = pair_keys(b"psk", b"psk")
    sa, sb = SecureLink(a, ka), SecureLink(b, kb)
    tx_a = SendSession(codec.info, codec.new_encoder(), sa, packet_version=version,
                       controller=RedundancyController(initial=0))
    tx_b = SendSession(codec.info, codec.new_encoder(), sb, packet_version=version)
    rx_a = ReceiveSession(codec.info, codec.new_decoder(), sa)
    rx_b = ReceiveSession(codec.info, codec.new_decoder(), sb)
    rx_a.sender, rx_b.sender = tx_a, tx_b
    sa.set_receiver(lambda d: rx_a.on_datagram(d, a.clock.now))
    sb.set_receiver(lambda d: rx_b.on_datagram(d, b.clock.now))
    rng = np.random.default_rng(0)
    n_in = codec.info.input_frame_samples
    period = codec.info.frame_ms / 1000
    played = 0
    for i in range(250):
        now = i * period
        for tx in (tx_a, tx_b):
            tx.send_frame(tx.encode_frame(rng.standard_normal(n_in).astype(np.float32) * 0.1))
        a.deliver(now)
        b.deliver(now)
        for rx in (rx_a, rx_b):
            frame = rx.tick(now)
            if frame.source not in (FrameSource.BUFFERING, FrameSource.ENDED):
                assert rx.decode(frame).shape == (codec.info.output_frame_samples,)
                played += rx is rx_b
    assert played > 230
    assert rx_b.stats.packets_received > 180 and rx_b.stats.concealed > 0
    assert rx_b.stats.invalid == 0 and rx_a.stats.invalid == 0
    assert sa.stats.rejected == 0 and sb.stats.rejected == 0
    assert tx_a.stats.reports > 10 and tx_a.stats.redundancy >= 1  # K adapted to the loss
