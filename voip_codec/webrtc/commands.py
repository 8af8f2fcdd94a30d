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
from ..transport.jitter import JitterConfig

__all__ = ["add_call_parser", "add_demo_parser", "add_simulate_parser", "default_codec_name"]

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
    p.add_argument("--frames-per-packet", type=int, default=1, help="80 ms frames per packet")
    p.add_argument("--redundancy", type=int, default=1, help="initial K, 0..3 (default 1)")
    p.add_argument("--no-adaptive", action="store_true", help="keep K fixed")
    p.add_argument("--dtx", action="store_true",
                   help="discontinuous transmission: frames below -50 dBFS are not sent, but for "
                        "one keep-alive frame a second")
    p.add_argument("--playout-delay", type=playout_delay_ms, default=160.0, metavar="MS",
                   help="initial receiver playout delay, ms (default 160); it then adapts to the "
                        "measured jitter between min(80, MS) and 800 ms. 40 is a low-delay "
                        "profile for clean links")
    p.add_argument("--json", action="store_true", help="machine-readable output")


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
    """Receiver jitter-buffer settings for an initial playout delay in ms (``--playout-delay``)."""
    return JitterConfig(initial_delay_ms=playout_delay,
                        min_delay_ms=min(JitterConfig.min_delay_ms, playout_delay))


def check_input_path(path: str) -> None:
    """Fail in one line when a local input file is missing (URLs and devices are not checked).

    Raises:
        UserError: ``path`` names no file.
    """
    if "://" not in path and not Path(path).is_file():
        raise UserError(f"input file {path} does not exist")


def _get_codec(name: str | None, backend: str = "torch"):  # type: ignore[no-untyped-def]
    from ..codecs.registry import get_codec

    codec = get_codec(name or default_codec_name())
    if backend == "torch":
        return codec
    from ..export.backend import with_backend

    return with_backend(codec, backend)


def _print_demo(r: Any) -> None:
    s, rx, w = r.sender, r.receiver, r.wire
    print(f"codec            {r.codec} ({r.codec_kbps:.2f} kbps payload)")
    print(f"network          loss {r.network['loss']:.0%} burst {r.network['burst']} "
          f"delay {r.network['delay_ms']} ms jitter {r.network['jitter_ms']} ms "
          f"rate {r.network['rate_kbps'] or 'unlimited'}")
    print(f"audio            {r.input_seconds:.2f} s in -> {r.output_seconds:.2f} s out "
          f"({r.output})")
    print(f"sender           {s.get('frames')} frames, {s.get('packets')} packets, "
          f"K now {s.get('redundancy')}, {s.get('reports')} loss reports")
    print(f"receiver         {rx['frames_received']} frames received, "
          f"{rx['recovered_from_redundancy']} recovered from redundancy, {rx['concealed']} "
          f"concealed, {rx['late']} late, {rx['duplicate']} duplicate")
    print(f"playout          delay {rx['playout_delay_ms']} ms (target "
          f"{rx['target_delay_ms']} ms), jitter {rx['jitter_ms']} ms")
    print(f"rates            packets {w['packet_kbps']} kbps; on the wire "
          f"{w['forward_wire_kbps']} kbps forward, {w['reverse_wire_kbps']} kbps back "
          f"(DTLS+SCTP+UDP+IP, SACKs and ICE consent included)")


def run_demo_command(args: argparse.Namespace) -> int:
    """``voip-codec demo``."""
    from .call import CallError, CallOptions, run_demo

    check_input_path(args.input)
    if args.output is None:  # never litter the working folder
        args.output = str(Path(tempfile.mkdtemp(prefix="voip-codec-demo-")) / "demo-output.wav")
    check_output_path(args.output)
    codec = _get_codec(args.codec, args.backend)
    options = CallOptions(frames_per_packet=args.frames_per_packet, redundancy=args.redundancy,
                          adaptive=not args.no_adaptive, dtx=args.dtx,
                          jitter=jitter_config(args.playout_delay))
    if not args.json:
        print(f"demo: calling over WebRTC on 127.0.0.1 with {codec.info.name}: signaling server, "
              f"two peers, impairment relay; input {args.input}", file=sys.stderr)
    try:
        result = asyncio.run(run_demo(
            args.input, args.output, codec, options=options, loss=args.loss, burst=args.burst,
            delay_ms=args.delay, jitter_ms=args.jitter, rate_kbps=args.rate, seed=args.seed))
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
    _transport_args(p)
    _network_args(p)
    p.set_defaults(func=run_demo_command)


def run_simulate_command(args: argparse.Namespace) -> int:
    """``voip-codec simulate``: the packet/jitter/concealment path in memory, seeded."""
    from ..audio import read_audio, write_audio
    from ..transport.netsim import NetworkConditions, loss_model
    from ..transport.pipeline import simulate
    from ..transport.redundancy import RedundancyController

    check_output_path(args.output)
    codec = _get_codec(args.codec, args.backend)
    pcm, _ = read_audio(args.input, codec.info.input_sample_rate)
    net = NetworkConditions(loss=loss_model(args.loss, args.burst), delay_ms=args.delay,
                            jitter_ms=args.jitter,
                            rate_bps=None if args.rate is None else args.rate * 1000)
    adaptive = None if args.no_adaptive else RedundancyController(initial=args.redundancy)
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
        "packets_sent": res.packets_sent, "packet_kbps": round(res.bitrate_bps / 1000, 3),
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


async def _call(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    from aiortc.contrib.media import MediaPlayer, MediaRecorder

    from signaling.client import SignalingClient, SignalingClosed, SignalingError

    from .call import CallError, CallOptions, CallPeer, collect, recv_message
    from .contrib.devices import microphone_track, play_to_speaker
    from .contrib.loopback import loopback_candidates

    codec = _get_codec(args.codec, args.backend)
    source = None
    if args.input == "mic":
        source = microphone_track()
    elif args.input:
        source = MediaPlayer(args.input).audio
    options = CallOptions(frames_per_packet=args.frames_per_packet, redundancy=args.redundancy,
                          adaptive=not args.no_adaptive, dtx=args.dtx,
                          jitter=jitter_config(args.playout_delay))
    secret = os.environ.get(SECRET_ENV)
    ctx = loopback_candidates() if args.loopback else contextlib.nullcontext()
    client = SignalingClient(args.server, args.room, args.peer,
                             secret=secret.encode() if secret else None)
    peer: CallPeer | None = None
    with ctx:
        try:
            peer = CallPeer(codec, options, source=source, name=args.peer)
            try:
                await client.connect()
                role = await client.join()
            except (SignalingError, SignalingClosed, aiohttp.ClientError, OSError) as exc:
                raise UserError(_signaling_message(exc, args)) from None
            try:
                if role == "offerer":
                    await client.send({"type": "offer", "sdp": await peer.create_offer()})
                    try:
                        answer = await recv_message(client, "answer", 60)
                    except TimeoutError:
                        raise UserError(f"the other peer in room {args.room} did not answer "
                                        "within 60 s") from None
                    await peer.accept_answer(answer["sdp"])
                else:
                    notice = asyncio.ensure_future(_announce_waiting(args))
                    try:
                        offer = await recv_message(client, "offer", args.wait)
                    except TimeoutError:
                        raise UserError(f"no peer joined room {args.room} on {args.server} "
                                        f"within {args.wait:g} s (start the other side with "
                                        "the same --room and --server, or raise --wait)"
                                        ) from None
                    finally:
                        notice.cancel()
                    await client.send({"type": "answer",
                                       "sdp": await peer.accept_offer(offer["sdp"])})
                await peer.wait_open()
            except (SignalingError, SignalingClosed) as exc:
                raise UserError(_signaling_message(exc, args)) from None
            except CallError as exc:
                raise UserError(str(exc)) from None
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
            try:
                if peer.sender is not None and args.duration is None:
                    await peer.sender.finished.wait()
                    await asyncio.sleep(1.5)
                else:
                    await asyncio.sleep(args.duration or 30.0)
            finally:
                stop.set()
                if recorder is not None:
                    await recorder.stop()
                for t in tasks:
                    with contextlib.suppress(Exception):
                        await t
            return {"role": role, "codec": codec.info.name, "receiver": peer.track.stats(),
                    "sender": peer.sender.stats.to_dict() if peer.sender else None}
        finally:
            # always leave the room and release the sockets, also on errors and Ctrl-C, so no
            # "unclosed session" noise follows the one-line error
            with contextlib.suppress(Exception):
                await client.close()
            if peer is not None:
                with contextlib.suppress(Exception):
                    await peer.close()


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
    p.add_argument("--room", required=True)
    p.add_argument("--server", required=True, help="signaling WebSocket URL, e.g. "
                                                   "ws://127.0.0.1:8765/ws")
    p.add_argument("--peer", default="peer-" + os.urandom(3).hex(), help="this peer's id")
    p.add_argument("--input", default=None, help="audio file to send, 'mic', or nothing to "
                                                 "only listen")
    p.add_argument("--output", default=None, help="file to record to, 'speaker', or nothing")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds to stay in the call (default: until the input ends, or 30 s)")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the other "
                                                             "peer's offer")
    p.add_argument("--loopback", action="store_true",
                   help="gather 127.0.0.1 ICE candidates only (both peers on this machine)")
    _transport_args(p)
    p.set_defaults(func=run_call_command)
