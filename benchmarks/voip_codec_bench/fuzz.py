"""Fuzzing of every parser that takes bytes from outside: one :data:`FUZZ_TARGETS` entry each.

A target turns one input (``bytes``) into a call of the real parser and lets only the parser's
documented error type through; anything else escaping is a defect. Two engines drive the same
table:

* ``mutation`` (in process, always available): deterministic mutations of valid messages (byte
  flips, interesting values, insertions, deletions, truncations, splices, repeats) plus purely
  random inputs; every undocumented exception is counted by type, with one example input;
* ``atheris`` (coverage-guided libFuzzer, ``pip install atheris``): one subprocess per target,
  the parser modules instrumented, seeded with the same valid messages; it stops at the first
  undocumented exception or crash and reports it.

Peak memory is the process's peak RSS (``ru_maxrss``) after each target (mutation) or the
libFuzzer ``rss`` figure (atheris).

To add a parser (a new packet version, the serial framing, an encrypted link's frames), append a
:class:`FuzzTarget` to :data:`FUZZ_TARGETS`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import random
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FUZZ_TARGETS",
    "FuzzMismatch",
    "FuzzResult",
    "FuzzTarget",
    "atheris_available",
    "fuzz_atheris",
    "fuzz_mutation",
    "mutate",
    "target_by_name",
]

Parser = Callable[[bytes], object]
"""One fuzz input in; returns on acceptance, raises the documented error on rejection."""


class FuzzMismatch(Exception):
    """An accepted input broke a property of its parser (e.g. the round trip to bytes)."""


@dataclass(frozen=True)
class FuzzTarget:
    """One parser under fuzzing."""

    name: str
    """Short name (table row, ``--fuzz-targets``)."""
    parser: str
    """The function(s) exercised, for the report."""
    error: str
    """Name of the documented error type."""
    build: Callable[[contextlib.ExitStack], tuple[Parser, tuple[type[BaseException], ...]]]
    """Imports the parser (lazily, so atheris can instrument it) and returns the input handler
    and the documented error types; resources go on the exit stack."""
    seeds: Callable[[], list[bytes]]
    """Valid (and a few nearly valid) messages that mutations start from."""
    max_len: int = 512
    """Longest generated input in bytes."""
    share: float = 1.0
    """Fraction of the requested inputs this target gets (slow parsers of legacy formats)."""
    json_seeds: bool = False
    """The seeds are JSON: half of the inputs replace, drop or add one value anywhere in a
    seed's tree (type confusion, extremes) instead of mutating bytes."""


# ------------------------------------------------------------------------------ the targets
def _audio_seeds() -> list[bytes]:
    from voip_codec.wire.packet import FLAG_END, FLAG_START, AudioPacket

    return [
        AudioPacket(codec_id=3, seq=7, frame_index=100, frames=(b"\x01\x02\x03\x04\x05",)
                    ).to_bytes(),
        AudioPacket(codec_id=0, seq=65535, frame_index=2**32 - 1, flags=FLAG_START,
                    frames=(b"ab", b"cd", b"ef"), redundant=(b"xy", b"zz")).to_bytes(),
        AudioPacket(codec_id=255, seq=1, frame_index=9, flags=FLAG_END,
                    frames=tuple(bytes([i]) * 11 for i in range(16)),
                    redundant=(b"r" * 11,) * 3).to_bytes(),
    ]


def _report_seeds() -> list[bytes]:
    from voip_codec.wire.packet import LossReport

    return [
        LossReport(report_seq=1, highest_seq=500, expected=12, received=11, loss_rate=1 / 12,
                   mean_burst=1.0, residual_loss=0.0, jitter_ms=17, playout_delay_ms=120
                   ).to_bytes(),
        LossReport(report_seq=65535, highest_seq=0, expected=65535, received=0, loss_rate=1.0,
                   mean_burst=255.99, residual_loss=1.0, jitter_ms=65535,
                   playout_delay_ms=65535).to_bytes(),
    ]


def _packet_target(stack: contextlib.ExitStack) -> tuple[Parser, tuple[type[BaseException], ...]]:
    from voip_codec.wire.packet import PacketError, parse_packet

    def run(data: bytes) -> object:
        msg = parse_packet(data)
        if msg.to_bytes() != data:
            raise FuzzMismatch("accepted message does not re-serialise to the same bytes")
        return msg

    return run, (PacketError,)


class Dropped(Exception):
    """Raised by the fuzz wrappers of parsers that never raise (a byte stream's framer, the
    encrypting link): the input was dropped and counted, which is their documented way of
    rejecting it."""


def _v2_seeds() -> list[bytes]:
    from voip_codec.wire.compact import CompactLossReport, to_compact
    from voip_codec.wire.packet import FLAG_END, FLAG_START, AudioPacket, LossReport

    report = LossReport(report_seq=3, highest_seq=4000, expected=12, received=10,
                        loss_rate=2 / 12, mean_burst=2.0, residual_loss=0.05, jitter_ms=31,
                        playout_delay_ms=60)
    return [
        to_compact(AudioPacket(codec_id=3, seq=7, frame_index=100, frames=(b"\x01" * 8,))
                   ).to_bytes(),
        to_compact(AudioPacket(codec_id=3, seq=4095, frame_index=2**32 - 1, flags=FLAG_START,
                               frames=(b"ab", b"cd", b"ef"), redundant=(b"xy", b"zz"))
                   ).to_bytes(),
        to_compact(AudioPacket(codec_id=40, seq=9, frame_index=9, flags=FLAG_END,
                               frames=tuple(bytes([i]) * 7 for i in range(16)),
                               redundant=(b"r" * 7,) * 3), report=report).to_bytes(),
        CompactLossReport.from_report(report).to_bytes(),
    ]


def _v2_target(stack: contextlib.ExitStack) -> tuple[Parser, tuple[type[BaseException], ...]]:
    from voip_codec.wire.compact import WireReader
    from voip_codec.wire.packet import PacketError

    reader = WireReader(3)  # one reader for all inputs: its counter state is fuzzed too

    def run(data: bytes) -> object:
        return reader.read(data)

    return run, (PacketError,)


def _kiss_seeds() -> list[bytes]:
    from voip_codec.wire.kiss import kiss_frame

    return [kiss_frame(b"\x80\x03\x00\x07" + b"\xc0\xdb" * 4),
            kiss_frame(b"hello") + kiss_frame(bytes(range(40))),
            b"\xc0\xc0" + kiss_frame(b"\xdb\xdc\xdd")[1:]]


def _kiss_target(stack: contextlib.ExitStack) -> tuple[Parser, tuple[type[BaseException], ...]]:
    from voip_codec.wire.kiss import KissDecoder

    decoder = KissDecoder(max_datagram=256)  # a byte stream: state carries across inputs

    def run(data: bytes) -> object:
        dropped = decoder.stats.dropped
        out = decoder.feed(data)
        if any(len(d) > 256 for d in out):
            raise FuzzMismatch("KISS decoder returned a datagram over its limit")
        if not out and decoder.stats.dropped > dropped:
            raise Dropped  # damage is counted, never raised
        return out

    return run, (Dropped,)


@functools.lru_cache(maxsize=1)
def _secure_keys() -> tuple[Any, Any]:
    """One key pair for seeds and parser alike, so the seeds are valid datagrams."""
    from voip_codec.transport.secure import KeyExchange

    a, b = KeyExchange("offerer"), KeyExchange("answerer")
    return a.derive(b.public), b.derive(a.public)


def _secure_seeds() -> list[bytes]:
    from voip_codec.transport.link import CallbackLink
    from voip_codec.transport.secure import SecureLink

    sent: list[bytes] = []
    keys_a, _ = _secure_keys()
    link = SecureLink(CallbackLink(sent.append, mtu=1200), keys_a)
    for payload in (b"\x80\x03\x00\x07" + b"\x01" * 8, b"x" * 40, b""):
        if payload:
            link.send(payload)
    return sent


def _secure_target(stack: contextlib.ExitStack) -> tuple[Parser, tuple[type[BaseException], ...]]:
    from voip_codec.transport.link import CallbackLink
    from voip_codec.transport.secure import SecureLink

    _, keys_b = _secure_keys()
    inner = CallbackLink(lambda data: None, mtu=1200)
    link = SecureLink(inner, keys_b)
    opened: list[bytes] = []
    link.set_receiver(opened.append)

    def run(data: bytes) -> object:
        before = len(opened)
        inner.deliver(data)  # forged, replayed, truncated: counted in link.stats, never raised
        if len(opened) == before:
            if link.stats.rejected == 0:
                raise FuzzMismatch("a datagram vanished without being counted")
            raise Dropped
        return opened[-1]

    return run, (Dropped,)


_FUZZ_PSK = b"fuzz pre-shared secret"


def _hello_seeds() -> list[bytes]:
    from voip_codec.transport.handshake import Handshake

    out = []
    for kwargs in ({"encrypt": True}, {"encrypt": True, "psk": _FUZZ_PSK}, {"encrypt": False},
                   {"encrypt": False, "psk": _FUZZ_PSK}):
        peer = Handshake(**kwargs)  # type: ignore[arg-type]
        out.append(peer.hello())
        peer.peer_nonce = bytes(range(16))[:len(peer.nonce)]
        out.append(peer.hello())  # with an echo
    return out


def _hello_target(stack: contextlib.ExitStack) -> tuple[Parser, tuple[type[BaseException], ...]]:
    from voip_codec.transport.handshake import Handshake

    ends: list[Handshake] = []

    def fresh() -> Handshake:
        ends[:] = [Handshake(encrypt=True, psk=_FUZZ_PSK if len(ends) % 2 else None)]
        return ends[0]

    fresh()

    def run(data: bytes) -> object:
        hs = ends[0]
        if hs.done or hs.error is not None:  # finished or refused: the next input gets a new one
            hs = fresh()
        before = dataclasses.asdict(hs.stats)
        answer = hs.receive(data)
        if answer is not None:
            return answer
        if dataclasses.asdict(hs.stats) == before and hs.error is None and not hs.done:
            raise FuzzMismatch("a datagram vanished without being counted")
        raise Dropped

    return run, (Dropped,)


def _tokenfile_seeds() -> list[bytes]:
    import numpy as np

    from voip_codec.wire.tokenfile import TokenFile, write_token_file

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for bits, n, model_id in ((16, 12, "lucadellalib/focalcodec_50hz_65k_causal"),
                                  (11, 5, "m"), (1, 0, "")):
            tokens = np.arange(n, dtype=np.int64) % (1 << bits)
            path = Path(tmp) / "x.fct"
            write_token_file(path, TokenFile(tokens, bits, 16000, 24000, 1280 * n,
                                             b"\x00\x01\x02\x03\x04\x05\x06\x07", model_id))
            out.append(path.read_bytes())
    return out


def _tokenfile_target(stack: contextlib.ExitStack
                      ) -> tuple[Parser, tuple[type[BaseException], ...]]:
    from voip_codec.wire.tokenfile import TokenFileError, parse_token_file

    return (lambda data: parse_token_file(data, "fuzz.fct")), (TokenFileError,)


def _signaling_seeds() -> list[bytes]:
    from signaling.tokens import make_join_token

    token = make_join_token(_SECRET, "room-1", "alice", 3600, now=_NOW)
    messages: list[dict[str, Any]] = [
        {"type": "join", "room": "room-1", "peer_id": "alice", "token": token},
        {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"},
        {"type": "answer", "sdp": "v=0\r\n"},
        {"type": "candidate", "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
         "sdpMid": "0", "sdpMLineIndex": 0},
        {"type": "candidate", "candidate": None},
        {"type": "bye"},
        {"type": "ping"},
    ]
    return [json.dumps(m).encode("utf-8") for m in messages] + [b"[" * 1200, b'{"type":1}']


def _signaling_target(stack: contextlib.ExitStack
                      ) -> tuple[Parser, tuple[type[BaseException], ...]]:
    from signaling import protocol as p

    def run(data: bytes) -> object:
        # aiohttp hands text frames over as str (invalid UTF-8 closes the socket before us).
        msg = p.parse_client_message(data.decode("utf-8", "replace"), 1024)
        mtype = msg["type"]
        if mtype == p.JOIN:  # the checks the server makes before the token (fuzzed apart)
            return p.require_name(msg, "room"), p.require_name(msg, "peer_id")
        if mtype in p.RELAYED_TYPES:
            return p.relay_payload(msg)
        return msg

    return run, (p.ProtocolError,)


_SECRET = b"robustness-fuzz-secret-0123456789"
_NOW = 1_800_000_000.0


def _token_seeds() -> list[bytes]:
    from signaling.tokens import make_join_token

    return [make_join_token(_SECRET, "room-1", "alice", 3600, now=_NOW).encode(),
            make_join_token(_SECRET, "room-1", "alice", 1, now=_NOW - 10).encode(),
            make_join_token(_SECRET, "other", "bob", 60, now=_NOW).encode(),
            make_join_token(b"another-secret-of-32-bytes------", "room-1", "alice", 60,
                            now=_NOW).encode()]


def _token_target(stack: contextlib.ExitStack) -> tuple[Parser, tuple[type[BaseException], ...]]:
    from signaling.tokens import TokenError, peek_join_token, verify_join_token

    def run(data: bytes) -> object:
        token = data.decode("utf-8", "replace")
        try:
            peek_join_token(token)
        except TokenError:
            pass
        return verify_join_token(_SECRET, token, "room-1", "alice", now=_NOW)

    return run, (TokenError,)


_SCRATCH_ENV = "VOIP_CODEC_FUZZ_SCRATCH"
"""Folder for scratch files given to an atheris worker by its parent (libFuzzer ends the
worker with ``exit()``, so the worker's own clean-up never runs: the parent removes it)."""


def _tmpfs() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _scratch_file(stack: contextlib.ExitStack, name: str) -> Path:
    """A scratch file on tmpfs when there is one (the fuzzer rewrites it per input)."""
    given = os.environ.get(_SCRATCH_ENV)
    if given:
        return Path(given) / name
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="voip-fuzz-", dir=_tmpfs()))
    return Path(tmp) / name


def _weights_seeds() -> list[bytes]:
    import torch
    from safetensors.torch import save

    return [
        save({"decoder.proj.weight": torch.zeros(2, 3), "b": torch.arange(4, dtype=torch.int8)},
             metadata={"voip_codec.precision": "int8", "voip_codec.fingerprint": "00ff"}),
        save({"x": torch.ones(1, dtype=torch.bfloat16)}),
    ]


def _weights_target(stack: contextlib.ExitStack) -> tuple[Parser, tuple[type[BaseException], ...]]:
    from voip_codec.codec.loading import CheckpointError, read_weights

    path = _scratch_file(stack, "model.safetensors")

    def run(data: bytes) -> object:
        path.write_bytes(data)
        return read_weights(path)

    return run, (CheckpointError,)


def _pt_seeds() -> list[bytes]:
    import io

    import torch

    out = []
    for state in ({"decoder.proj.weight": torch.zeros(2, 3)},
                  {"a": torch.arange(3), "b": torch.ones(1, dtype=torch.bfloat16)}):
        buf = io.BytesIO()
        torch.save(state, buf)
        out.append(buf.getvalue())
    return out


def _pt_target(stack: contextlib.ExitStack) -> tuple[Parser, tuple[type[BaseException], ...]]:
    from voip_codec.codec.loading import CheckpointError, read_weights

    path = _scratch_file(stack, "model.pt")

    def run(data: bytes) -> object:
        path.write_bytes(data)
        return read_weights(path)

    return run, (CheckpointError,)


def _config_seeds() -> list[bytes]:
    from voip_codec.codec.config import FocalCodecConfig, tiny_config

    full = tiny_config().to_dict()
    small = {"quantizer_name": full["quantizer_name"],
             "quantizer_config": {"codebook_size": 4096}}
    return [json.dumps(full).encode(), json.dumps(small).encode(),
            json.dumps(FocalCodecConfig().to_dict()).encode(), b"{}"]


def _config_target(stack: contextlib.ExitStack) -> tuple[Parser, tuple[type[BaseException], ...]]:
    from voip_codec.codec.config import ConfigError, FocalCodecConfig

    path = _scratch_file(stack, "config.json")

    def run(data: bytes) -> object:
        path.write_bytes(data)
        return FocalCodecConfig.from_json(path)

    return run, (ConfigError,)


FUZZ_TARGETS: tuple[FuzzTarget, ...] = (
    FuzzTarget("audio-packet", "wire.packet.parse_packet (v1 audio)", "PacketError",
               _packet_target, _audio_seeds, 320),
    FuzzTarget("loss-report", "wire.packet.parse_packet (v1 report)", "PacketError",
               _packet_target, _report_seeds, 64),
    FuzzTarget("audio-packet-v2", "wire.compact.WireReader.read (v2 audio + reports, and v1)",
               "PacketError", _v2_target, _v2_seeds, 320),
    FuzzTarget("serial-framing", "wire.kiss.KissDecoder.feed (byte stream, state kept)",
               "Dropped (counted)", _kiss_target, _kiss_seeds, 600),
    FuzzTarget("e2e-datagram", "transport.secure.SecureLink receive (AES-GCM, replay window)",
               "Dropped (counted)", _secure_target, _secure_seeds, 256),
    FuzzTarget("handshake-hello", "transport.handshake.Handshake.receive (in-band key exchange)",
               "Dropped (counted, or a one-line error)", _hello_target, _hello_seeds, 160),
    FuzzTarget("token-file", "wire.tokenfile.parse_token_file", "TokenFileError",
               _tokenfile_target, _tokenfile_seeds, 256),
    FuzzTarget("signaling-message", "signaling.protocol.parse_client_message + field checks",
               "ProtocolError", _signaling_target, _signaling_seeds, 1400, json_seeds=True),
    FuzzTarget("join-token", "signaling.tokens.verify_join_token / peek_join_token",
               "TokenError", _token_target, _token_seeds, 1200),
    FuzzTarget("checkpoint-weights", "codec.loading.read_weights (safetensors header + tensors)",
               "CheckpointError", _weights_target, _weights_seeds, 512),
    FuzzTarget("checkpoint-pt", "codec.loading.read_weights (legacy .pt, weights_only)",
               "CheckpointError", _pt_target, _pt_seeds, 2048, share=0.1),
    FuzzTarget("checkpoint-config", "codec.config.FocalCodecConfig.from_json", "ConfigError",
               _config_target, _config_seeds, 4096, json_seeds=True),
)
"""Every parser of outside bytes, one entry each."""


def target_by_name(name: str) -> FuzzTarget:
    """The :data:`FUZZ_TARGETS` entry called ``name``.

    Raises:
        ValueError: no such target (the message lists them).
    """
    for target in FUZZ_TARGETS:
        if target.name == name:
            return target
    raise ValueError(f"unknown fuzz target {name!r}; choose from "
                     f"{', '.join(t.name for t in FUZZ_TARGETS)}")


# --------------------------------------------------------------------------- mutation engine
_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x10, 0x20, 0x40, 0x03, 0x02)


def mutate(rng: random.Random, seeds: list[bytes], max_len: int) -> bytes:
    """One generated input: a random byte string (1 in 8) or 1..4 mutations of a seed.

    Args:
        rng: the random source (the run is reproducible from its seed).
        seeds: valid messages to start from.
        max_len: the result is cut to this many bytes.
    """
    if rng.random() < 0.125 or not seeds:
        return rng.randbytes(rng.randrange(min(max_len, 64) + 1))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        n = len(data)
        if op == 0 and n:  # flip bits
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # an interesting byte value
            data[rng.randrange(n)] = rng.choice(_INTERESTING)
        elif op == 2 and n:  # a random byte
            data[rng.randrange(n)] = rng.randrange(256)
        elif op == 3:  # insert a few bytes
            at = rng.randrange(n + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and n:  # delete a run
            at = rng.randrange(n)
            del data[at:at + rng.randint(1, 8)]
        elif op == 5:  # truncate
            del data[rng.randrange(n + 1):]
        elif op == 6:  # splice with another seed
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            data = data[:rng.randrange(n + 1)] + bytearray(other[cut:])
        elif n:  # repeat a chunk, or write a big-endian extreme integer
            at = rng.randrange(n)
            if rng.random() < 0.5:
                data[at:at] = data[at:at + rng.randint(1, 16)] * rng.randint(1, 4)
            else:
                data[at:at + 4] = struct.pack(">I", rng.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF,
                                                                0x80000000, 0xFFFF)))
    return bytes(data[:max_len])


_JSON_VALUES: tuple[object, ...] = (
    None, True, False, 0, -1, 1, 3, 2**31, 2**64, -(2**63), 1.5, -0.0, 1e308, float("inf"),
    float("nan"), "", "x", "9" * 40, "\u0000", "\ud800", [], {}, [1, 2, 3], [-1], ["a"],
    {"a": 1}, [[[]]], "room-1",
)


def mutate_json(rng: random.Random, seeds: list[bytes]) -> bytes:
    """One seed (a JSON document) with one value replaced, removed or added, re-encoded.

    Args:
        rng: the random source.
        seeds: JSON documents (UTF-8).
    """
    doc = json.loads(rng.choice(seeds))
    containers: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, (dict, list)):
            containers.append(node)
            for child in (node.values() if isinstance(node, dict) else node):
                walk(child)

    walk(doc)
    if not containers:
        return json.dumps(rng.choice(_JSON_VALUES)).encode()
    node = rng.choice(containers)
    value = rng.choice(_JSON_VALUES)
    op = rng.randrange(4)
    if isinstance(node, dict):
        keys = list(node)
        if op == 0 or not keys:
            node[rng.choice(("type", "x", "sdp", "room", "dim", "__proto__"))] = value
        elif op == 1:
            del node[rng.choice(keys)]
        else:
            node[rng.choice(keys)] = value
    elif node and op:
        node[rng.randrange(len(node))] = value
    else:
        node.append(value)
    return json.dumps(doc).encode("utf-8", "surrogatepass")


@dataclass
class FuzzResult:
    """What one target's run found."""

    target: str
    parser: str
    error: str
    engine: str
    inputs: int = 0
    accepted: int = 0
    """Inputs the parser accepted."""
    rejected: int = 0
    """Inputs rejected with the documented error."""
    unexpected: int = 0
    """Inputs that raised anything else (defects)."""
    crashes: int = 0
    """Runs that died (signal, libFuzzer crash) instead of finishing."""
    peak_rss_mb: float = 0.0
    seconds: float = 0.0
    coverage: int | None = None
    """libFuzzer coverage counter (atheris only)."""
    examples: dict[str, str] = field(default_factory=dict)
    """Undocumented exception (``Type: message``) -> hex of the first input that raised it."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in vars(self).items()}


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fuzz_mutation(target: FuzzTarget, inputs: int, seed: int = 0) -> FuzzResult:
    """Run ``inputs`` generated inputs through ``target`` in this process.

    Args:
        target: the parser.
        inputs: how many inputs (times ``target.share``).
        seed: random seed (same seed, same inputs).

    Returns:
        The counts; ``unexpected`` > 0 means a defect (see ``examples``).
    """
    inputs = max(1, round(inputs * target.share))
    rng = random.Random(seed)
    result = FuzzResult(target.name, target.parser, target.error, "mutation", inputs=inputs)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        run, errors = target.build(stack)
        seeds = target.seeds()
        json_seeds = [s for s in seeds if _is_json(s)] if target.json_seeds else []
        found: Counter[str] = Counter()
        for _ in range(inputs):
            if target.json_seeds and rng.random() < 0.5:
                data = mutate_json(rng, json_seeds)[:target.max_len]
            else:
                data = mutate(rng, seeds, target.max_len)
            try:
                run(data)
            except errors:
                result.rejected += 1
                continue
            except Exception as exc:  # noqa: BLE001 - counting what escapes is the point
                key = f"{type(exc).__name__}: {str(exc)[:120]}"
                found[key] += 1
                result.examples.setdefault(key, data[:200].hex())
                continue
            result.accepted += 1
    result.unexpected = sum(found.values())
    result.seconds = time.perf_counter() - start
    result.peak_rss_mb = _peak_rss_mb()
    return result


# ---------------------------------------------------------------------------- atheris engine
def atheris_available() -> bool:
    """Whether ``import atheris`` works in this interpreter."""
    import importlib.util

    return importlib.util.find_spec("atheris") is not None


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_RSS = re.compile(r"rss: (\d+)Mb")
_COV = re.compile(r"cov: (\d+)")


def fuzz_atheris(target: FuzzTarget, inputs: int, seed: int = 0,
                 timeout_s: float = 3600.0) -> FuzzResult:
    """Run ``target`` under atheris (coverage-guided) in a subprocess.

    Args:
        target: the parser.
        inputs: libFuzzer ``-runs`` (times ``target.share``).
        seed: libFuzzer ``-seed`` (+1, since 0 means "random" there).
        timeout_s: wall-clock limit of the subprocess.

    Returns:
        The counts: ``unexpected`` is 1 when libFuzzer stopped on an undocumented exception
        (the message is in ``examples``), ``crashes`` 1 when the process died otherwise.
    """
    inputs = max(1, round(inputs * target.share))
    result = FuzzResult(target.name, target.parser, target.error, "atheris", inputs=inputs)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="voip-atheris-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        for i, data in enumerate(target.seeds()):
            (corpus / f"seed{i}").write_bytes(data)
        cmd = [sys.executable, "-m", "voip_codec_bench.fuzz", target.name, f"-runs={inputs}",
               f"-seed={seed + 1}", f"-max_len={target.max_len}", "-rss_limit_mb=2048",
               "-timeout=20", f"-artifact_prefix={tmp}/", "-print_final_stats=1", str(corpus)]
        stack_dir = tempfile.mkdtemp(prefix="voip-fuzz-", dir=_tmpfs())
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
                   **{_SCRATCH_ENV: stack_dir})
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                  env=env, check=False)
            log, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            log, rc = str(exc.stderr or ""), -1
        finally:
            shutil.rmtree(stack_dir, ignore_errors=True)
    result.seconds = time.perf_counter() - start
    done = _DONE.search(log)
    rss = _RSS.findall(log)
    cov = _COV.findall(log)
    result.peak_rss_mb = float(max(map(int, rss))) if rss else 0.0
    result.coverage = int(cov[-1]) if cov else None
    if rc == 0 and done:
        result.inputs = int(done.group(1))
        return result
    marker = "Uncaught Python exception"
    if marker in log:
        result.unexpected = 1
        tail = log[log.index(marker):].splitlines()
        last = next((ln for ln in reversed(tail[:40]) if re.match(r"^\w+(Error|Exception|Mismatch)", ln)),
                    tail[-1] if tail else "?")
        result.examples[last[:160]] = "(see the libFuzzer artifact)"
    else:
        result.crashes = 1
        result.examples[f"exit status {rc}"] = log[-400:]
    return result


def _atheris_main(argv: list[str]) -> None:
    """Subprocess entry: ``python -m voip_codec_bench.fuzz TARGET [libFuzzer flags] CORPUS``."""
    import atheris

    target = target_by_name(argv[1])
    stack = contextlib.ExitStack()
    with atheris.instrument_imports(include=["voip_codec", "signaling"]):
        run, errors = target.build(stack)

    def one(data: bytes) -> None:
        try:
            run(data)
        except errors:
            pass

    atheris.Setup([argv[0], *argv[2:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    _atheris_main(sys.argv)
