"""Faults in real aiortc calls on 127.0.0.1.

* ``peer_killed``: two ``voip-codec call`` processes and a signaling server process; one peer
  is killed (SIGKILL) mid-call. The survivor must keep playing (silence) and end the call,
  saying the peer left, within 3 s.
* ``signaling_restart``: the same call; the signaling server is stopped and started again
  mid-call. The established call must go on to its end (every input frame received).
* ``outage``: two in-process peers through an :class:`ImpairmentRelay`; every datagram one way
  is dropped for 5 s. The receiving track must never stall (20 ms frames keep coming) and play
  frames from packets again within 1 s of the outage's end.
* ``fast_sender``: a peer whose source runs at twice real time. The receiver's playout delay
  stays bounded by the jitter buffer's maximum, and the frames it cannot keep are dropped and
  counted (resyncs, skipped).
* :func:`run_long_aiortc_call`: a real call of N minutes at 10% loss carrying eval speech with
  pauses; every 10 s the process's RSS and CPU time, the frames sent, played and concealed, the
  resyncs, the receiver's output queue (decoded audio waiting to be played) and the output
  track's drift against the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError

from voip_codec.testing import (
    free_port,
    start_call_peer,
    start_signaling_server,
    stop_processes,
    wait_call_established,
)

from .sources import FRAME, RATE, PacedTrack

__all__ = ["run_faults", "run_long_aiortc_call"]

_SECRET = "robustness-faults-secret-0123456789"
_CODEC = "pcm16"


# ------------------------------------------------------------------------ process-level calls
def _env() -> dict[str, str]:
    from signaling.tokens import SECRET_ENV

    # the subprocesses import the same voip_codec and signaling as this process
    path = os.pathsep.join(p for p in sys.path if p)
    return dict(os.environ, **{SECRET_ENV: _SECRET, "PYTHONPATH": path})


def _start_server(port: int) -> subprocess.Popen[bytes]:
    return start_signaling_server(port, _env())


def _start_peer(port: int, room: str, peer: str, wav: Path, duration: float
                ) -> subprocess.Popen[str]:
    return start_call_peer(port, room, peer, wav, duration, _env(), codec=_CODEC,
                           extra_args=("--wait", "60"))


def _speech_wav(directory: Path, seconds: float) -> Path:
    """A WAV of a voiced test signal (pitch glides with pauses), 16 kHz mono."""
    import soundfile as sf

    t = np.arange(int(seconds * 16000)) / 16000
    gate = (np.sin(2 * np.pi * 0.5 * t) > -0.5).astype(np.float32)
    x = 0.3 * gate * np.sin(2 * np.pi * (150 + 50 * np.sin(2 * np.pi * 0.3 * t)) * t)
    path = directory / "input.wav"
    sf.write(path, x.astype(np.float32), 16000)
    return path


def _result_json(out: str) -> dict[str, Any] | None:
    start = out.find("{")
    if start < 0:
        return None
    try:
        data: dict[str, Any] = json.loads(out[start:])
        return data
    except ValueError:
        return None


def _peer_killed(tmp: Path, duration: float) -> dict[str, Any]:
    port = free_port()
    server = _start_server(port)
    wav = _speech_wav(tmp, duration)
    a = _start_peer(port, "kill", "survivor", wav, duration + 10)
    b = _start_peer(port, "kill", "victim", wav, duration + 10)
    try:
        if not wait_call_established(port, 40.0):
            return {"established": False}
        time.sleep(min(4.0, duration / 3))  # media flowing
        b.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        b.wait()
        try:
            out, err = a.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            a.kill()
            out, err = a.communicate()
            return {"established": True, "survivor_ended_s": None,
                    "error": "the survivor did not end within 20 s"}
        ended = time.monotonic() - killed
        data = _result_json(out) or {}
        return {"established": True, "survivor_exit": a.returncode,
                "survivor_ended_s": round(ended, 2), "end": data.get("end"),
                "survivor_frames_played": data.get("receiver", {}).get("frames_played"),
                "stderr_tail": err.strip().splitlines()[-1:] if a.returncode else []}
    finally:
        stop_processes(server, a, b)


def _signaling_restart(tmp: Path, duration: float) -> dict[str, Any]:
    port = free_port()
    server = _start_server(port)
    wav = _speech_wav(tmp, duration)
    a = _start_peer(port, "restart", "a", wav, duration + 3)
    b = _start_peer(port, "restart", "b", wav, duration + 3)
    frames_in = int(np.ceil(duration * 1000 / 80))
    try:
        if not wait_call_established(port, 40.0):
            return {"established": False}
        time.sleep(min(3.0, duration / 4))
        server.terminate()
        server.wait()
        time.sleep(1.0)
        server = _start_server(port)
        results = []
        for proc in (a, b):
            try:
                out, _ = proc.communicate(timeout=duration + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            data = _result_json(out) or {}
            results.append((proc.returncode, data))
        received = [d.get("receiver", {}).get("frames_received", 0) for _, d in results]
        return {"established": True, "exit_codes": [rc for rc, _ in results],
                "ends": [d.get("end") for _, d in results], "input_frames": frames_in,
                "frames_received": received}
    finally:
        stop_processes(server, a, b)


# ---------------------------------------------------------------------- in-process calls
class _ToneTrack(PacedTrack):
    """A 220 Hz tone for ``seconds``, paced at ``speed`` x real time."""

    def __init__(self, seconds: float, speed: float = 1.0) -> None:
        super().__init__(int(seconds * 50), speed)

    def frame_pcm(self, index: int) -> np.ndarray:
        t = (np.arange(FRAME) + index * FRAME) / RATE
        return 0.3 * np.sin(2 * np.pi * 220 * t)


class _LoopTrack(PacedTrack):
    """Frames cut from ``pcm`` (16 kHz, looped) for ``seconds``, paced at real time."""

    def __init__(self, pcm: np.ndarray, seconds: float) -> None:
        super().__init__(int(seconds * 50))
        x = np.asarray(pcm, dtype=np.float32).reshape(-1)
        # 16 -> 48 kHz by linear interpolation: enough for a benchmark's source
        self.pcm = np.interp(np.arange(3 * x.shape[0]) / 3, np.arange(x.shape[0]), x)

    def frame_pcm(self, index: int) -> np.ndarray:
        start = (index * FRAME) % (self.pcm.shape[0] - FRAME)
        return self.pcm[start:start + FRAME]


async def _pair(source: Any, a_to_b: Any = None, adaptive: bool = True,
                codec_name: str = _CODEC) -> tuple[Any, Any, Any]:
    from voip_codec.codecs.registry import get_codec
    from voip_codec.webrtc.call import CallOptions, CallPeer
    from voip_codec.webrtc.contrib.relay import ImpairmentRelay

    codec = get_codec(codec_name)
    relay = ImpairmentRelay(a_to_b)
    await relay.start()
    alice = CallPeer(codec, CallOptions(adaptive=adaptive), source=source, name="alice")
    bob = CallPeer(codec, CallOptions(adaptive=adaptive), name="bob")
    offer = await bob.create_offer()
    answer = await alice.accept_offer(relay.rewrite(offer, "b"))
    await bob.accept_answer(relay.rewrite(answer, "a"))
    await asyncio.gather(alice.wait_open(), bob.wait_open())
    return alice, bob, relay


async def _read_track(track: Any, stop: asyncio.Event, times: list[float]) -> None:
    while not stop.is_set():
        try:
            await track.recv()
        except MediaStreamError:
            return
        times.append(time.monotonic())


async def _outage(outage_s: float = 5.0) -> dict[str, Any]:
    from voip_codec.transport.netsim import BernoulliLoss, NetworkConditions
    from voip_codec.webrtc.contrib.loopback import loopback_candidates

    before, after = 3.0, 4.0
    with loopback_candidates():
        source = _ToneTrack(before + outage_s + after + 2)
        alice, bob, relay = await _pair(
            source, NetworkConditions(loss=BernoulliLoss(1.0), delay_ms=0.0))
        stop = asyncio.Event()
        times: list[float] = []
        reader = asyncio.ensure_future(_read_track(bob.track, stop, times))
        try:
            await asyncio.sleep(before)
            relay.impair(True)
            start = time.monotonic()
            await asyncio.sleep(outage_s)
            relay.impair(False)
            end = time.monotonic()
            played0 = bob.track.buffer.stats.played
            resync: float | None = None
            while time.monotonic() < end + after:
                if resync is None and bob.track.buffer.stats.played > played0:
                    resync = time.monotonic() - end
                await asyncio.sleep(0.01)
            stop.set()
            await reader
            gaps = np.diff([t for t in times if t > start - 1.0])
            stats = bob.track.stats()
        finally:
            stop.set()
            await alice.close()
            await bob.close()
            relay.close()
    return {"outage_s": outage_s, "resync_s": None if resync is None else round(resync, 3),
            "max_output_gap_ms": round(float(gaps.max()) * 1000, 1) if gaps.size else None,
            "concealed": stats["concealed"], "resyncs": bob.track.buffer.stats.resyncs}


async def _fast_sender(seconds: float = 10.0) -> dict[str, Any]:
    from voip_codec.webrtc.contrib.loopback import loopback_candidates
    from voip_codec.wire.packet import MAX_NEW_FRAMES

    with loopback_candidates():
        source = _ToneTrack(seconds * 2, speed=2.0)
        alice, bob, relay = await _pair(source, adaptive=False)
        stop = asyncio.Event()
        times: list[float] = []
        reader = asyncio.ensure_future(_read_track(bob.track, stop, times))
        delays: list[float] = []
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                # audio held between arrival and the ear: frames in the jitter buffer ahead of
                # playout plus the decoded output queue (the transit-based playout delay is
                # meaningless for a sender faster than real time)
                session = bob.track.session
                delays.append(session.buffer.held_frames * session.buffer.config.frame_ms
                              + session.output.queued_seconds * 1000)
                await asyncio.sleep(0.1)
            stop.set()
            await reader
            s = bob.track.buffer.stats
            cfg = bob.track.buffer.config
            sent = alice.sender.stats.frames if alice.sender is not None else 0
            result = {"seconds": seconds, "frames_sent": sent,
                      "frames_received": s.frames_received, "frames_played": s.played,
                      "max_playout_delay_ms": round(max(delays), 1),  # held audio, ms
                      # the buffer resyncs once a frame is more than max_delay_ms plus one
                      # largest bundle (16 frames) ahead of playout, and the output queue
                      # holds at most max_delay_ms (decoded frames waiting to be heard)
                      "max_delay_bound_ms": (math.ceil(cfg.max_delay_ms / cfg.frame_ms)
                                             + MAX_NEW_FRAMES + 1) * cfg.frame_ms
                                            + cfg.max_delay_ms + cfg.frame_ms,
                      "resyncs": s.resyncs, "skipped": s.skipped, "late": s.late,
                      "dropped_counted": s.frames_received - s.played}
        finally:
            stop.set()
            await alice.close()
            await bob.close()
            relay.close()
    return result


def run_faults(quick: bool = False) -> dict[str, Any]:
    """All four fault scenarios; ``failures`` lists the bounds missed."""
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="voip-faults-") as tmp:
        killed = _peer_killed(Path(tmp), 12.0 if quick else 20.0)
        restart = _signaling_restart(Path(tmp), 10.0 if quick else 16.0)
    outage = asyncio.run(_outage(5.0))
    fast = asyncio.run(_fast_sender(6.0 if quick else 10.0))
    if killed.get("survivor_ended_s") is None or killed["survivor_ended_s"] > 3.0:
        failures.append(f"peer killed: the survivor ended after {killed.get('survivor_ended_s')}"
                        " s (bound 3 s)")
    if not restart.get("established") or any(restart.get("exit_codes", [1])) or min(
            restart.get("frames_received", [0])) < 0.9 * restart.get("input_frames", 1):
        failures.append(f"signaling restart: the call did not go on ({restart})")
    if outage["resync_s"] is None or outage["resync_s"] >= 1.0:
        failures.append(f"outage: resync {outage['resync_s']} s (bound 1 s)")
    if outage["max_output_gap_ms"] is None or outage["max_output_gap_ms"] > 200:
        failures.append(f"outage: the track stalled {outage['max_output_gap_ms']} ms")
    if fast["max_playout_delay_ms"] > fast["max_delay_bound_ms"] or not fast["resyncs"]:
        failures.append(f"fast sender: playout delay {fast['max_playout_delay_ms']} ms")
    return {"peer_killed": killed, "signaling_restart": restart, "outage": outage,
            "fast_sender": fast, "failures": failures}


# -------------------------------------------------------------------------- long real call
def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class _OutputCounter:
    """Reads a track until ``stop``; keeps the number of frames and the time of the first (a
    list of every frame's time would itself grow by 50 floats a second)."""

    def __init__(self) -> None:
        self.frames = 0
        self.first: float | None = None

    async def read(self, track: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await track.recv()
            except MediaStreamError:
                return
            if self.first is None:
                self.first = time.monotonic()
            self.frames += 1


def _call_sample(start: float, cpu0: float, alice: Any, bob: Any, out: _OutputCounter,
                 queue_max_ms: float) -> dict[str, float]:
    """One 10 s sample of the long call: memory, CPU, counters and the receiver's queues."""
    from .long_call import rss_mb

    now = time.monotonic()
    session = bob.track.session
    buf = session.buffer
    elapsed = now - start
    return {"t": round(elapsed, 1), "rss_mb": round(rss_mb(), 1),
            "cpu_s": round(_cpu_seconds() - cpu0, 2),
            "sent": alice.sender.stats.frames if alice.sender is not None else 0,
            "played": session.frames_played, "concealed": buf.stats.concealed,
            "resyncs": buf.stats.resyncs, "skipped": buf.stats.skipped,
            "stretched": buf.stats.stretched,
            # decoded audio waiting for the ear, now and the most since the last sample
            "queue_ms": round(session.output.queued_seconds * 1000, 1),
            "queue_max_ms": round(queue_max_ms, 1),
            "held_frames": buf.held_frames,
            "playout_delay_ms": round(buf.stats.current_delay_ms, 1),
            # 20 ms output frames handed out minus the wall time since the first: the output
            # track's pace against the clock (negative: it fell behind)
            "output_drift_ms": round(out.frames * 20.0 - (now - out.first) * 1000, 1)
            if out.first is not None else 0.0}


async def _long_call(minutes: float, loss: float, clip_dir: Path | None) -> dict[str, Any]:
    from voip_codec.transport.netsim import BernoulliLoss, NetworkConditions
    from voip_codec.webrtc.commands import default_codec_name
    from voip_codec.webrtc.contrib.loopback import loopback_candidates

    from .long_call import speech_loop

    seconds = minutes * 60
    with loopback_candidates():
        # speech with pauses, as in a call: the playout delay grows by stretching concealment
        # and shrinks only in silence (a continuous tone has none, so its delay only grows)
        source = _LoopTrack(speech_loop(clip_dir), seconds + 5)
        # the codec calls use by default: PCM's 2.5 kB frames would be split into several
        # SCTP chunks, and losing any one loses the frame
        alice, bob, relay = await _pair(
            source, NetworkConditions(loss=BernoulliLoss(loss), delay_ms=20.0, jitter_ms=10.0),
            codec_name=default_codec_name())
        relay.impair(True)
        stop = asyncio.Event()
        out = _OutputCounter()
        reader = asyncio.ensure_future(out.read(bob.track, stop))
        samples: list[dict[str, float]] = []
        try:
            start = time.monotonic()
            cpu0 = _cpu_seconds()
            next_sample = start
            queue_max = 0.0
            while time.monotonic() < start + seconds:
                queue_max = max(queue_max, bob.track.session.output.queued_seconds * 1000)
                if time.monotonic() >= next_sample:
                    samples.append(_call_sample(start, cpu0, alice, bob, out, queue_max))
                    queue_max = 0.0
                    next_sample += 10.0
                await asyncio.sleep(0.2)
            samples.append(_call_sample(start, cpu0, alice, bob, out, queue_max))
            stop.set()
            await reader
            stats = bob.track.stats()
            buf = bob.track.buffer.stats
            output = bob.track.session.output
            sent = alice.sender.stats.frames if alice.sender is not None else 0
        finally:
            stop.set()
            await alice.close()
            await bob.close()
            relay.close()
    rss = np.array([s["rss_mb"] for s in samples])
    t = np.array([s["t"] for s in samples])
    # the slope leaves out the first minute (model and aiortc warm-up)
    later = t >= 60.0 if t[-1] >= 180.0 else t > 0
    slope = float(np.polyfit(t[later], rss[later], 1)[0]) * 60 if later.sum() > 3 else 0.0
    cpu = [s["cpu_s"] for s in samples]
    queue = [s["queue_max_ms"] for s in samples[1:]] or [0.0]
    return {"minutes": minutes, "loss": loss, "codec": default_codec_name(), "samples": samples,
            "rss_start_mb": float(rss[0]), "rss_after_1min_mb": float(rss[t >= 60.0][0])
            if (t >= 60.0).any() else float(rss[-1]), "rss_end_mb": float(rss[-1]),
            "rss_slope_mb_per_min": round(slope, 3),
            "cpu_percent": round(100 * (cpu[-1] - cpu[0]) / max(1e-9, t[-1] - t[0]), 1)
            if len(cpu) > 1 else None,
            "frames_sent": sent, "frames_received": buf.frames_received,
            "frames_played": stats["frames_played"], "concealed": stats["concealed"],
            "concealed_fraction": round(stats["concealed"] / max(1, stats["frames_played"]), 4),
            "late": buf.late, "resyncs": buf.resyncs, "skipped": buf.skipped,
            "stretched": buf.stretched,
            "underrun_ms": round(output.underrun_samples / output.sample_rate * 1000, 1),
            "trimmed_ms": round(output.trimmed_samples / output.sample_rate * 1000, 1),
            "output_queue_ms_max": max(queue),
            "output_queue_ms_median": float(np.median(queue)),
            "output_drift_ms": samples[-1]["output_drift_ms"],
            "output_frames_20ms": out.frames,
            "source": "eval speech with pauses" if clip_dir is not None
            else "synthetic voiced signal with pauses"}


def run_long_aiortc_call(minutes: float, loss: float = 0.10,
                         clip_dir: Path | None = None) -> dict[str, Any]:
    """A real aiortc call of ``minutes`` at ``loss`` random loss, carrying eval speech from
    ``clip_dir`` with pauses (None: a synthetic voiced signal with pauses); ``failures`` when
    RSS grows by more than 1 MB per minute after the first minute."""
    result = asyncio.run(_long_call(minutes, loss, clip_dir))
    failures = []
    if minutes >= 1 and result["rss_slope_mb_per_min"] > 1.0:
        failures.append(f"long aiortc call: RSS grows {result['rss_slope_mb_per_min']} MB/min")
    result["failures"] = failures
    return result
