"""``voip-codec demo``, ``voip-codec simulate`` and ``voip-codec call``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from signaling.tokens import SECRET_ENV

from ..errors import UserError, check_output_path
from ..threads import add_threads_argument, apply_threads
from ..transport.jitter import JitterConfig

__all__ = ["add_call_parser", "add_demo_parser", "add_simulate_parser", "default_codec_name"]

TURN_USERNAME_ENV = "VOIP_CODEC_TURN_USERNAME"
TURN_PASSWORD_ENV = "VOIP_CODEC_TURN_PASSWORD"
"""Environment variables with the ``--turn`` server's credentials (kept out of the process
list)."""

PSK_ENV = "VOIP_CODEC_PSK"
"""Environment variable with an optional pre-shared secret for the end-to-end keys of
``call`` (an environment variable, so it does not show in the process list)."""

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SAMPLE_SPEECH = ASSETS / "sample_speech.flac"


def default_codec_name() -> str:
    """The bundled FocalCodec model when it is installed, else Codec2 700C."""
    if (ASSETS / "default_model" / "config.json").is_file():
        return "focalcodec-default"
    return "codec2-700c"


def _network_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loss", type=float, default=0.0, help="loss rate 0..1 (default 0)")
    p.add_argument("--burst", type=float, default=1.0,
                   help="mean loss burst in packets; 1 = random (Bernoulli), >1 = "
                        "Gilbert-Elliott bursts (default 1)")
    p.add_argument("--delay", type=float, default=40.0, help="one-way delay, ms (default 40)")
    p.add_argument("--jitter", type=float, default=0.0,
                   help="jitter scale, ms (half-normal extra delay; default 0)")
    p.add_argument("--rate", type=float, default=None, help="rate cap, kbit/s (default none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the network model")


def _transport_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--codec", default=None,
                   help="codec name (default: the bundled FocalCodec model if installed, else "
                        "codec2-700c); see `voip-codec codecs`")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="what computes a FocalCodec codec: torch (default) or onnxruntime "
                        "(the model exported once into the cache; faster at 1 thread, needs "
                        "the onnx extra)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8", "int4"), default=None,
                   help="compute precision of a FocalCodec codec (default: as stored; the "
                        "full-size models run in real time at int8, see README 'Speed'); "
                        "tokens, and so the peer, do not depend on it; onnx: fp32 or int8")
    p.add_argument("--frames-per-packet", type=int, default=1, help="80 ms frames per packet")
    p.add_argument("--redundancy", type=int, default=1, help="initial K, 0..3 (default 1)")
    p.add_argument("--no-adaptive", action="store_true", help="keep K fixed")
    p.add_argument("--no-duplicates", action="store_true",
                   help="never send packets twice (by default, while the receiver reports 4 %% "
                        "loss or more, every packet goes out twice: fewer concealed frames at "
                        "no extra delay, twice the packets; never on serial lines)")
    p.add_argument("--dtx", action="store_true",
                   help="discontinuous transmission: frames below -50 dBFS are not sent, but for "
                        "one keep-alive frame a second")
    p.add_argument("--playout-delay", type=playout_delay_ms, default=DEFAULT_PLAYOUT_DELAY_MS,
                   metavar="MS",
                   help="initial receiver playout delay, ms (default 0: start low); it then "
                        "follows the network between min(80, MS) and 800 ms, growing at once "
                        "for late frames and losses, shrinking in silence")
    add_threads_argument(p)
    p.add_argument("--no-e2e", action="store_true",
                   help="turn end-to-end encryption off (both peers must; for measurements)")
    p.add_argument("--packet-version", type=int, choices=(1, 2), default=2,
                   help="packet version sent: 2 (compact, default) or 1 (16-byte header, what "
                        "the browser page reads today); both are always received")
    p.add_argument("--json", action="store_true", help="machine-readable output")


DEFAULT_PLAYOUT_DELAY_MS = 0.0
"""Initial playout delay of ``demo``, ``simulate`` and ``call``: start low, follow the network."""


def playout_delay_ms(text: str) -> float:
    """argparse type of ``--playout-delay``: milliseconds in 0..800."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if not 0.0 <= value <= 800.0:
        raise argparse.ArgumentTypeError(f"playout delay must be in 0..800 ms, got {text}")
    return value


def jitter_config(playout_delay: float) -> JitterConfig:
    """Receiver jitter-buffer settings for an initial playout delay in ms (``--playout-delay``):
    the target starts there and never drops below ``min(80, playout_delay)`` (0 by default)."""
    return JitterConfig(initial_delay_ms=playout_delay,
                        min_delay_ms=min(80.0, playout_delay))


def check_input_path(path: str) -> None:
    """Fail in one line when a local input file is missing (URLs and devices are not checked).

    Raises:
        UserError: ``path`` names no file.
    """
    if "://" not in path and not Path(path).is_file():
        raise UserError(f"input file {path} does not exist")


LINK_HELP = ("what carries the call: webrtc (aiortc data channel, default), ice (our packets "
             "straight on the UDP path ICE finds: no DTLS/SCTP overhead, end-to-end encrypted), "
             "or serial:DEVICE[@BAUD] (a serial port or radio modem, 8N1, default 2400 bit/s)")


DEMO_LINK_HELP = ("what carries the call: webrtc (default), ice, or serial[@BAUD] (a serial "
                  "line simulated between two pseudo-terminals, 8N1, default 2400 bit/s)")


@dataclasses.dataclass(frozen=True)
class LinkChoice:
    """A parsed ``--link``."""

    kind: str
    """``webrtc``, ``ice`` or ``serial``."""
    device: str | None = None
    """The serial device (``call`` only)."""
    baud: int = 2400
    """The serial line rate, bit/s."""


def parse_link(text: str, *, demo: bool) -> LinkChoice:
    """Parse ``--link`` of ``call`` (``demo=False``) or ``demo``.

    ``call`` takes ``webrtc``, ``ice`` or ``serial:DEVICE[@BAUD]``; ``demo`` takes ``webrtc``,
    ``ice`` or ``serial[@BAUD]`` (it simulates the line between two pseudo-terminals).

    Raises:
        UserError: an unknown link, a serial spec without a device (``call``) or with one
            (``demo``), or a bad baud rate; one line each.
    """
    from ..transport.serial import SerialLinkError, parse_serial_spec

    if text in ("webrtc", "ice"):
        return LinkChoice(text)
    if text == "serial" or text.startswith(("serial:", "serial@")):
        rest = text.removeprefix("serial")
        if demo:
            if rest.startswith(":"):
                raise UserError(f"demo simulates its own serial line between two "
                                f"pseudo-terminals; use --link serial or serial@BAUD, not "
                                f"{text} (call --link {text} uses a real device)")
            spec = rest or "@2400"
            try:
                return LinkChoice("serial", None, parse_serial_spec("pty" + spec).baud)
            except SerialLinkError as exc:
                raise UserError(str(exc).replace("serial:pty", "serial")) from None
        if not rest.startswith(":"):
            raise UserError(f"--link {text} names no device; write it as "
                            "serial:/dev/ttyUSB0@2400")
        try:
            spec_ = parse_serial_spec(rest[1:])
        except SerialLinkError as exc:
            raise UserError(str(exc)) from None
        return LinkChoice("serial", spec_.device, spec_.baud)
    example = "serial@2400" if demo else "serial:/dev/ttyUSB0@2400"
    raise UserError(f"unknown link {text!r}: use webrtc, ice or {example}")


def _get_codec(name: str | None, threads: int,  # type: ignore[no-untyped-def]
               backend: str = "torch", precision: str | None = None):
    from ..codecs.registry import get_codec

    codec = get_codec(name or default_codec_name())
    apply_threads(threads)  # torch is loaded only if the codec needed it
    if backend == "torch" and precision is None:
        return codec
    from ..export.backend import with_backend

    return with_backend(codec, backend, precision)


def _print_demo(r: Any) -> None:
    s, rx, w = r.sender, r.receiver, r.wire
    print(f"codec            {r.codec} ({r.codec_kbps:.2f} kbps payload)")
    link = getattr(r, "link", "webrtc")
    if link == "serial":
        print(f"line             {r.network['baud']} bit/s 8N1, bit error rate "
              f"{r.network['bit_error_rate']:g}, byte drop rate {r.network['byte_drop_rate']:g}")
    else:
        print(f"network          loss {r.network['loss']:.0%} burst {r.network['burst']} "
              f"delay {r.network['delay_ms']} ms jitter {r.network['jitter_ms']} ms "
              f"rate {r.network['rate_kbps'] or 'unlimited'}")
    print(f"audio            {r.input_seconds:.2f} s in -> {r.output_seconds:.2f} s out "
          f"({r.output})")
    twice = f" ({s['duplicates']} sent twice: loss >= 4%)" if s.get("duplicates") else ""
    print(f"sender           {s.get('frames')} frames, {s.get('packets')} packets{twice}, "
          f"K now {s.get('redundancy')}, {s.get('reports')} loss reports")
    print(f"receiver         {rx['frames_received']} frames received, "
          f"{rx['recovered_from_redundancy']} recovered from redundancy, {rx['concealed']} "
          f"concealed, {rx['late']} late, {rx['duplicate']} duplicate")
    print(f"playout          delay {rx['playout_delay_ms']} ms (target "
          f"{rx['target_delay_ms']} ms), jitter {rx['jitter_ms']} ms")
    if link == "serial":
        print(f"serial line      {r.network['baud']} bit/s 8N1: {w['forward_line_kbps']} kbit/s "
              f"forward ({w['forward_line_utilisation']:.0%} of the line), "
              f"{w['reverse_line_kbps']} kbit/s back (KISS framing and CRC included); "
              f"{w['bits_flipped']} bits flipped, {w['bytes_dropped']} bytes dropped, "
              f"{w['receiver_link']['rx']['dropped']} bad frames dropped")
        print(f"rates            packets {w['packet_kbps']} kbps; "
              f"{w['sender_link']['backlog_drops']} packets dropped for want of line rate")
    else:
        headers = ("UDP+IP and ICE consent checks included" if link == "ice"
                   else "DTLS+SCTP+UDP+IP, SACKs and ICE consent included")
        print(f"rates            packets {w['packet_kbps']} kbps; on the wire "
              f"{w['forward_wire_kbps']} kbps forward, {w['reverse_wire_kbps']} kbps back "
              f"({headers})")
    if r.e2e is None:
        why = {"webrtc": "(--no-e2e); DTLS hop by hop only"}
        print(f"encryption       end to end OFF {why.get(r.link, '(--no-e2e)')}")
    else:
        bob = r.e2e["bob"] or {}
        print(f"encryption       end to end on, SAS {r.e2e['sas']} (same on both peers: "
              f"{'yes' if r.e2e['sas_match'] else 'NO'}); receiver accepted "
              f"{bob.get('received')} datagrams, rejected {bob.get('forged', 0)} forged, "
              f"{bob.get('replayed', 0)} replayed")


def run_demo_command(args: argparse.Namespace) -> int:
    """``voip-codec demo``."""
    from .call import CallError, CallOptions, run_demo

    link = parse_link(args.link, demo=True)
    if link.kind == "serial" and (args.loss or args.jitter or args.rate is not None):
        raise UserError("--loss, --jitter and --rate impair IP links; a serial line takes "
                        "--bit-errors and --byte-drops")
    if link.kind != "serial" and (args.bit_errors or args.byte_drops):
        raise UserError("--bit-errors and --byte-drops apply to --link serial only")
    for flag, rate in (("--bit-errors", args.bit_errors), ("--byte-drops", args.byte_drops)):
        if not 0.0 <= rate < 1.0:
            raise UserError(f"{flag} is a probability in [0, 1), got {rate:g}")
    check_input_path(args.input)
    if args.output is None:  # never litter the working folder
        args.output = str(Path(tempfile.mkdtemp(prefix="voip-codec-demo-")) / "demo-output.wav")
    check_output_path(args.output)
    codec = _get_codec(args.codec, args.threads, args.backend, args.precision)
    options = CallOptions(frames_per_packet=args.frames_per_packet, redundancy=args.redundancy,
                          adaptive=not args.no_adaptive, duplicates=not args.no_duplicates,
                          dtx=args.dtx,
                          jitter=jitter_config(args.playout_delay), e2e=not args.no_e2e,
                          packet_version=args.packet_version,
                          sack_tuning=not args.stock_sctp)
    if not args.json:
        how = {"webrtc": "over WebRTC on 127.0.0.1", "ice": "over ICE/UDP on 127.0.0.1",
               "serial": f"over a {link.baud} bit/s serial line between two pseudo-terminals"}
        parts = ("two peers, line simulator" if link.kind == "serial"
                 else "signaling server, two peers, impairment relay")
        print(f"demo: calling {how[link.kind]} with {codec.info.name}: {parts}; input "
              f"{args.input}", file=sys.stderr)
    try:
        if link.kind == "webrtc":
            result = asyncio.run(run_demo(
                args.input, args.output, codec, options=options, loss=args.loss,
                burst=args.burst, delay_ms=args.delay, jitter_ms=args.jitter,
                rate_kbps=args.rate, seed=args.seed))
        else:
            from .linkcall import run_link_demo

            result = asyncio.run(run_link_demo(
                args.input, args.output, codec, link.kind, options=options, loss=args.loss,
                burst=args.burst, delay_ms=args.delay, jitter_ms=args.jitter,
                rate_kbps=args.rate, baud=link.baud, bit_error_rate=args.bit_errors,
                byte_drop_rate=args.byte_drops, seed=args.seed))
    except CallError as exc:
        raise UserError(f"the demo call failed: {exc}") from None
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2))
    else:
        _print_demo(result)
    return 0


def add_demo_parser(sub: Any) -> None:
    """Register ``demo``."""
    p = sub.add_parser("demo", help="a complete loopback call: signaling server, two aiortc "
                                    "peers, impairment relay, speech in, recording out")
    p.add_argument("--input", default=str(SAMPLE_SPEECH),
                   help="speech to send (default: the bundled LibriSpeech sample)")
    p.add_argument("--output", default=None,
                   help="recording of the received audio (48 kHz WAV; default: "
                        "demo-output.wav in a new temporary folder, whose path is printed)")
    p.add_argument("--link", default="webrtc", help=DEMO_LINK_HELP)
    _transport_args(p)
    p.add_argument("--stock-sctp", action="store_true",
                   help="keep aiortc's SCTP acknowledgements (a SACK packet per received "
                        "packet) instead of delayed SACKs bundled with our audio")
    _network_args(p)
    p.add_argument("--bit-errors", type=float, default=0.0, metavar="RATE",
                   help="--link serial: probability that a bit is flipped on the line "
                        "(default 0)")
    p.add_argument("--byte-drops", type=float, default=0.0, metavar="RATE",
                   help="--link serial: probability that a byte is lost (default 0)")
    p.set_defaults(func=run_demo_command)


def run_simulate_command(args: argparse.Namespace) -> int:
    """``voip-codec simulate``: the packet/jitter/concealment path in memory, seeded."""
    from ..audio import read_audio, write_audio
    from ..transport.netsim import NetworkConditions, loss_model
    from ..transport.pipeline import simulate
    from ..transport.redundancy import DUPLICATE_LOSS, RedundancyController

    check_output_path(args.output)
    codec = _get_codec(args.codec, args.threads, args.backend, args.precision)
    pcm, _ = read_audio(args.input, codec.info.input_sample_rate)
    net = NetworkConditions(loss=loss_model(args.loss, args.burst), delay_ms=args.delay,
                            jitter_ms=args.jitter,
                            rate_bps=None if args.rate is None else args.rate * 1000)
    adaptive = None if args.no_adaptive else RedundancyController(
        initial=args.redundancy, duplicate_loss=None if args.no_duplicates else DUPLICATE_LOSS)
    res = simulate(pcm, codec, network=net, seed=args.seed,
                   frames_per_packet=args.frames_per_packet, redundancy=args.redundancy,
                   adaptive=adaptive, jitter=jitter_config(args.playout_delay), dtx=args.dtx)
    write_audio(args.output, res.audio, res.sample_rate)
    j = res.jitter
    summary = {
        "codec": codec.info.name, "input": str(args.input), "output": str(args.output),
        "input_seconds": round(len(pcm) / codec.info.input_sample_rate, 3),
        "output_seconds": round(len(res.audio) / res.sample_rate, 3),
        "frames": res.frames, "concealed": res.concealed_frames,
        "concealed_fraction": round(res.concealed_fraction, 4),
        "recovered_from_redundancy": j.recovered_from_redundancy, "late": j.late,
        "skipped": j.skipped, "dtx_frames": res.dtx_frames,
        "duplicate": j.duplicate, "playout_delay_ms": round(j.current_delay_ms, 1),
        "packets_sent": res.packets_sent, "duplicates_sent": res.duplicates_sent,
        "packet_kbps": round(res.bitrate_bps / 1000, 3),
        "codec_kbps": codec.info.bitrate / 1000,
        "network": {"loss": args.loss, "burst": args.burst, "delay_ms": args.delay,
                    "jitter_ms": args.jitter, "rate_kbps": args.rate, "seed": args.seed,
                    "lost_packets": res.network.lost},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:26s} {value}")
    return 0


def add_simulate_parser(sub: Any) -> None:
    """Register ``simulate``."""
    p = sub.add_parser("simulate", help="run a file through the codec, packets, a seeded "
                                        "network model, the jitter buffer and concealment")
    p.add_argument("--input", required=True, help="speech file (any format)")
    p.add_argument("--output", required=True, help="decoded audio file")
    _transport_args(p)
    _network_args(p)
    p.set_defaults(func=run_simulate_command)


WAIT_NOTICE_S = 10.0
"""Seconds between the "waiting for a peer" lines of a ``call`` that is alone in its room."""

_SIGNALING_HINTS = {
    "auth_required": "the signaling server at {url} requires a join token: set {env} to the "
                     "secret the server was started with",
    "invalid_token": "the signaling server at {url} refused the join token: {env} differs "
                     "from the server's secret",
    "token_expired": "the signaling server at {url} says the join token has expired (are "
                     "this machine's and the server's clocks right?)",
    "room_full": "room {room} on {url} already holds two peers; pick another --room",
    "peer_id_taken": "another peer in room {room} already uses the id {peer}; pass another "
                     "--peer",
    "server_full": "the signaling server at {url} has no room left; try again later",
}


def _signaling_message(exc: Exception, args: argparse.Namespace) -> str:
    """One line for a failure to reach or use the signaling server."""
    from signaling.client import SignalingClosed, SignalingError

    if isinstance(exc, SignalingError):
        hint = _SIGNALING_HINTS.get(exc.code)
        if hint is not None:
            return hint.format(url=args.server, room=args.room, peer=args.peer, env=SECRET_ENV)
        return f"the signaling server at {args.server} refused: {exc.code}: {exc.message}"
    if isinstance(exc, SignalingClosed):
        return f"the signaling server at {args.server} closed the connection"
    reason = str(exc)
    if isinstance(getattr(exc, "os_error", None), ConnectionRefusedError):
        reason = "connection refused"  # aiohttp's text repeats host, port and "ssl:default"
    return (f"cannot reach the signaling server at {args.server} ({reason}); is `voip-codec "
            "serve` running there?")


async def _announce_waiting(args: argparse.Namespace) -> None:
    """Say every WAIT_NOTICE_S seconds that this peer is alone in its room."""
    while True:
        print(f"voip-codec: waiting for a peer in room {args.room} on {args.server} "
              "(Ctrl-C to stop)", file=sys.stderr, flush=True)
        await asyncio.sleep(WAIT_NOTICE_S)


async def _call_time(peer: Any, args: argparse.Namespace) -> None:
    """How long a call lasts when nobody leaves: until the input ends, or ``--duration``."""
    if peer.sender is not None and args.duration is None:
        await peer.sender.finished.wait()
        await asyncio.sleep(1.5)
    else:
        await asyncio.sleep(args.duration or 30.0)


async def _watch_peer(client: Any, peer_left: asyncio.Event) -> None:
    """Set ``peer_left`` when the server says the other peer left (``bye``, or its connection
    dropped: a killed process). Losing the signaling connection itself does not end the call:
    the media path is peer to peer, so a restarted signaling server does not cut it."""
    from signaling.client import SignalingClosed, SignalingError

    while True:
        try:
            msg = await client.recv(timeout_s=3600.0)
        except TimeoutError:
            continue
        except (SignalingClosed, SignalingError, OSError) as exc:
            logging.getLogger(__name__).warning(
                "signaling connection lost (%s); the call goes on", exc)
            return
        if msg.get("type") == "peer_left":
            peer_left.set()
            return


async def _converse(peer: Any, args: argparse.Namespace, client: Any = None) -> str:
    """Play and record until the input ends (+1.5 s), ``--duration`` is over, or (with a
    signaling ``client``) the server says the other peer left; returns ``"done"`` or
    ``"peer_left"``."""
    from aiortc.contrib.media import MediaRecorder

    from .call import collect
    from .contrib.devices import play_to_speaker

    recorder = None
    stop = asyncio.Event()
    tasks: list[asyncio.Future[Any]] = []
    if args.output == "speaker":
        tasks.append(asyncio.ensure_future(play_to_speaker(peer.track, stop)))
    elif args.output:
        recorder = MediaRecorder(args.output)
        recorder.addTrack(peer.track)
        await recorder.start()
    else:
        tasks.append(asyncio.ensure_future(collect(peer.track, stop)))
    peer_left = asyncio.Event()
    watchers: list[asyncio.Future[Any]] = []
    if client is not None:
        watchers.append(asyncio.ensure_future(_watch_peer(client, peer_left)))
    call = asyncio.ensure_future(_call_time(peer, args))
    left = asyncio.ensure_future(peer_left.wait())
    try:
        await asyncio.wait({call, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (*watchers, call, left):
            task.cancel()
        stop.set()
        if recorder is not None:
            await recorder.stop()
        for t in tasks:
            with contextlib.suppress(Exception):
                await t
    if peer_left.is_set():
        print("voip-codec: the other peer left the call", file=sys.stderr, flush=True)
        return "peer_left"
    return "done"


async def _wait_for_offer(args: argparse.Namespace, wait: Any) -> Any:
    """Await ``wait`` (the answerer's wait for an offer), saying meanwhile that this peer is
    alone in its room; a timeout is one line."""
    notice = asyncio.ensure_future(_announce_waiting(args))
    try:
        return await wait
    except TimeoutError:
        raise UserError(f"no peer joined room {args.room} on {args.server} within "
                        f"{args.wait:g} s (start the other side with the same --room and "
                        "--server, or raise --wait)") from None
    finally:
        notice.cancel()


async def _call(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    from aiortc.contrib.media import MediaPlayer

    from signaling.client import SignalingClient, SignalingClosed, SignalingError

    from ..transport.ice import MARKER as ICE_MARKER
    from .call import CallError, CallOptions, CallPeer
    from .contrib.devices import microphone_track
    from .contrib.loopback import loopback_candidates
    from .linkcall import LinkPeer

    link = parse_link(args.link, demo=False)
    if link.kind != "serial" and (args.room is None or args.server is None):
        raise UserError(f"call --link {args.link} needs --room and --server (the signaling "
                        "server both peers join)")
    servers = ice_servers(args, link.kind)
    codec = _get_codec(args.codec, args.threads, args.backend, args.precision)
    source = None
    if args.input == "mic":
        source = microphone_track()
    elif args.input:
        source = MediaPlayer(args.input).audio
    psk = os.environ.get(PSK_ENV)
    options = CallOptions(frames_per_packet=args.frames_per_packet, redundancy=args.redundancy,
                          adaptive=not args.no_adaptive, duplicates=not args.no_duplicates,
                          dtx=args.dtx,
                          jitter=jitter_config(args.playout_delay), e2e=not args.no_e2e,
                          packet_version=args.packet_version,
                          psk=psk.encode() if psk else None,
                          sack_tuning=not args.stock_sctp)
    if link.kind == "serial":
        return await _serial_call(args, link, codec, options, source)
    secret = os.environ.get(SECRET_ENV)
    ctx = loopback_candidates() if args.loopback else contextlib.nullcontext()
    client = SignalingClient(args.server, args.room, args.peer,
                             secret=secret.encode() if secret else None)
    peer: CallPeer | LinkPeer | None = None
    with ctx:
        try:
            try:
                await client.connect()
                role = await client.join()
            except (SignalingError, SignalingClosed, aiohttp.ClientError, OSError) as exc:
                raise UserError(_signaling_message(exc, args)) from None
            try:
                if link.kind == "ice":
                    peer = await _ice_peer(args, client, role, codec, options, source, servers)
                else:
                    webrtc_peer: CallPeer = await _webrtc_peer(args, client, role, codec,
                                                               options, source, ICE_MARKER)
                    peer = webrtc_peer
                    if webrtc_peer.sas is not None:
                        how = " with a pre-shared secret" if psk else ""
                        print(f"voip-codec: end-to-end encrypted{how}; read this code to the "
                              f"other user, it must match theirs: {webrtc_peer.sas}",
                              file=sys.stderr, flush=True)
                    else:
                        print("voip-codec: end-to-end encryption is OFF (--no-e2e): the "
                              "signaling server and relays could read the audio",
                              file=sys.stderr, flush=True)
            except (SignalingError, SignalingClosed) as exc:
                raise UserError(_signaling_message(exc, args)) from None
            except CallError as exc:
                raise UserError(str(exc)) from None
            end = await _converse(peer, args, client)
            return {"role": role, "link": link.kind, "codec": codec.info.name, "end": end,
                    "receiver": peer.track.stats(),
                    "sender": peer.sender.stats.to_dict() if peer.sender else None,
                    "e2e": _e2e_report(peer)}
        finally:
            # always leave the room and release the sockets, also on errors and Ctrl-C, so no
            # "unclosed session" noise follows the one-line error
            with contextlib.suppress(Exception):
                await client.close()
            if peer is not None:
                with contextlib.suppress(Exception):
                    await peer.close()


async def _webrtc_peer(args: argparse.Namespace, client: Any, role: str, codec: Any,
                       options: Any, source: Any, ice_marker: str) -> Any:
    from .call import CallPeer, recv_message

    peer = CallPeer(codec, options, source=source, name=args.peer)
    try:
        if role == "offerer":
            await client.send({"type": "offer", "sdp": await peer.create_offer()})
            try:
                answer = await recv_message(client, "answer", 60)
            except TimeoutError:
                raise UserError(f"the other peer in room {args.room} did not answer within "
                                "60 s") from None
            if answer["sdp"].startswith(ice_marker):
                raise UserError("the other peer uses --link ice; start both peers with the "
                                "same --link")
            await peer.accept_answer(answer["sdp"])
        else:
            offer = await _wait_for_offer(args, recv_message(client, "offer", args.wait))
            if offer["sdp"].startswith(ice_marker):
                # answer with a line its ICE parser rejects, so it stops waiting too
                await client.send({"type": "answer", "sdp": "a=voip-codec-link:webrtc\r\n"})
                raise UserError("the other peer uses --link ice; start both peers with the "
                                "same --link")
            await client.send({"type": "answer", "sdp": await peer.accept_offer(offer["sdp"])})
        await peer.wait_open()
    except BaseException:
        with contextlib.suppress(Exception):
            await peer.close()
        raise
    return peer


def _e2e_report(peer: Any) -> dict[str, Any] | None:
    """The SAS and the encrypting link's counters of a call's peer (None: not encrypted)."""
    from ..transport.secure import SecureLink
    from .call import CallPeer

    if isinstance(peer, CallPeer):
        return None if peer.sas is None else {"sas": peer.sas, "link": peer.e2e_stats()}
    link = getattr(peer, "link", None)
    if isinstance(link, SecureLink):
        return {"sas": link.keys.sas, "link": link.stats.to_dict()}
    return None


def ice_servers(args: argparse.Namespace, link_kind: str) -> Any:
    """The ``--stun`` / ``--turn`` servers of ``call`` (credentials from the environment), or
    None when neither is given.

    Raises:
        UserError: a bad ``HOST:PORT``, a server option on another link than ICE, or ``--turn``
            without both credential variables.
    """
    stun, turn = getattr(args, "stun", None), getattr(args, "turn", None)
    if stun is None and turn is None:
        return None
    if link_kind != "ice":
        raise UserError("--stun and --turn apply to --link ice (the WebRTC link uses aiortc's "
                        "own ICE configuration; a serial line has no ICE)")
    from ..transport.ice import IceServers, parse_server

    try:
        stun_addr = parse_server(stun, "--stun") if stun is not None else None
        turn_addr = parse_server(turn, "--turn") if turn is not None else None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    username = os.environ.get(TURN_USERNAME_ENV)
    password = os.environ.get(TURN_PASSWORD_ENV)
    if turn_addr is not None and not (username and password):
        raise UserError(f"--turn needs the server's credentials in {TURN_USERNAME_ENV} and "
                        f"{TURN_PASSWORD_ENV}")
    return IceServers(stun=stun_addr, turn=turn_addr, turn_username=username,
                      turn_password=password)


async def _ice_peer(args: argparse.Namespace, client: Any, role: str, codec: Any,
                    options: Any, source: Any, servers: Any = None) -> Any:
    from ..transport.ice import IceLinkError, connect_ice, secure_ice
    from ..transport.secure import KeyExchange
    from .linkcall import LinkPeer

    exchange = KeyExchange(role, options.psk) if options.e2e else None  # type: ignore[arg-type]
    try:
        connecting = connect_ice(client, role, codec.info.name, answer_timeout_s=60,
                                 offer_timeout_s=args.wait, exchange=exchange,
                                 servers=servers)
        if role == "offerer":
            try:
                ice = await connecting
            except TimeoutError:
                raise UserError(f"the other peer in room {args.room} did not answer within "
                                "60 s") from None
        else:
            ice = await _wait_for_offer(args, connecting)
    except IceLinkError as exc:
        raise UserError(str(exc)) from None
    for wanted, kind, what in ((servers is not None and servers.stun, "srflx", "--stun"),
                               (servers is not None and servers.turn, "relay", "--turn")):
        if wanted and kind not in ice.candidate_types:
            print(f"voip-codec: the {what} server gave no {kind} candidate (unreachable, or "
                  "wrong credentials); the call uses the other candidates",
                  file=sys.stderr, flush=True)
    peer = LinkPeer(codec, secure_ice(ice), options, source=source, name=args.peer)
    peer.start()
    if ice.e2e_keys is not None:
        how = " with a pre-shared secret" if options.psk else ""
        print(f"voip-codec: end-to-end encrypted{how}; read this code to the other user, it "
              f"must match theirs: {ice.e2e_keys.sas}", file=sys.stderr, flush=True)
    else:
        print("voip-codec: end-to-end encryption is OFF (--no-e2e): the signaling server and "
              "relays could read the audio", file=sys.stderr, flush=True)
    return peer


async def _serial_call(args: argparse.Namespace, link: LinkChoice, codec: Any, options: Any,
                       source: Any) -> dict[str, Any]:
    from ..transport.handshake import (
        HandshakeError,
        HandshakeLink,
        handshake_interval_s,
        handshake_link,
    )
    from ..transport.secure import SecureLink
    from ..transport.serial import SerialLinkError, open_serial_link
    from .linkcall import LinkPeer

    assert link.device is not None
    try:
        serial_link = open_serial_link(f"{link.device}@{link.baud}")
    except SerialLinkError as exc:
        raise UserError(str(exc)) from None
    print(f"call: {link.device} open at {link.baud} bit/s (8N1); waiting up to {args.wait:g} s "
          "for the other end's handshake", file=sys.stderr, flush=True)
    try:
        call_link = await handshake_link(
            serial_link, encrypt=options.e2e, psk=options.psk, timeout_s=args.wait,
            interval_s=handshake_interval_s(link.baud, options.e2e, options.psk is not None),
            counter_bytes=0)  # a serial line never reorders: no counter on the wire
    except HandshakeError as exc:
        serial_link.close()
        raise UserError(str(exc)) from None
    except BaseException:
        serial_link.close()
        raise
    peer = LinkPeer(codec, call_link, options, source=source, name=args.peer)
    try:
        peer.start()
        _print_e2e(call_link, options.psk is not None)
        await _converse(peer, args)
        after = call_link.inner if isinstance(call_link, SecureLink) else call_link
        assert isinstance(after, HandshakeLink)
        return {"role": "serial", "link": "serial", "codec": codec.info.name,
                "receiver": peer.track.stats(),
                "sender": peer.sender.stats.to_dict() if peer.sender else None,
                "serial": serial_link.stats(), "e2e": _e2e_report(peer),
                "handshake": after.handshake.stats.to_dict()}
    finally:
        with contextlib.suppress(Exception):
            await peer.close()


def _print_e2e(link: Any, psk: bool) -> None:
    """Tell the user (stderr) the SAS to compare, or that encryption is off."""
    from ..transport.secure import SecureLink

    if isinstance(link, SecureLink):
        how = " with a pre-shared secret" if psk else ""
        print(f"voip-codec: end-to-end encrypted{how}; read this code to the other user, it "
              f"must match theirs: {link.keys.sas}", file=sys.stderr, flush=True)
    else:
        print("voip-codec: end-to-end encryption is OFF (--no-e2e): anyone on the line could "
              "hear the audio", file=sys.stderr, flush=True)


def run_call_command(args: argparse.Namespace) -> int:
    """``voip-codec call``."""
    logging.basicConfig(level=logging.WARNING)
    if args.input not in (None, "mic"):
        check_input_path(args.input)
    if args.output not in (None, "speaker"):
        check_output_path(args.output)
    stats = asyncio.run(_call(args))
    print(json.dumps(stats, indent=2) if args.json else stats)
    return 0


def add_call_parser(sub: Any) -> None:
    """Register ``call``."""
    p = sub.add_parser("call", help="join a room on a signaling server and call the other peer")
    p.add_argument("--room", default=None, help="signaling room (webrtc and ice links)")
    p.add_argument("--server", default=None, help="signaling WebSocket URL, e.g. "
                                                  "ws://127.0.0.1:8765/ws (webrtc and ice links)")
    p.add_argument("--link", default="webrtc", help=LINK_HELP)
    p.add_argument("--peer", default="peer-" + os.urandom(3).hex(), help="this peer's id")
    p.add_argument("--input", default=None, help="audio file to send, 'mic', or nothing to "
                                                 "only listen")
    p.add_argument("--output", default=None, help="file to record to, 'speaker', or nothing")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds to stay in the call (default: until the input ends, or 30 s)")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the other "
                   "peer's offer (serial: for its handshake)")
    p.add_argument("--loopback", action="store_true",
                   help="gather 127.0.0.1 ICE candidates only (both peers on this machine)")
    p.add_argument("--stun", default=None, metavar="HOST:PORT",
                   help="--link ice: a STUN server, for this peer's address as seen from "
                        "outside its NAT")
    p.add_argument("--turn", default=None, metavar="HOST:PORT",
                   help=f"--link ice: a TURN server (UDP) to relay through when no direct "
                        f"path works; credentials from ${TURN_USERNAME_ENV} and "
                        f"${TURN_PASSWORD_ENV}")
    _transport_args(p)
    p.add_argument("--stock-sctp", action="store_true",
                   help="keep aiortc's SCTP acknowledgements (a SACK packet per received "
                        "packet) instead of delayed SACKs bundled with our audio")
    p.set_defaults(func=run_call_command)
