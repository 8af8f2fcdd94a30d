"""Faults in a two-process ``voip-codec call``: a killed peer, a restarted signaling server.

Regression (found by ``voip-codec bench robustness``): when the other peer's process was
killed, the survivor went on playing concealment until its own input or ``--duration`` ran
out; it now ends the call within 3 s, when the signaling server reports ``peer_left``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.integration.test_cli_errors import ROOT, SECRET, cli_env, free_port


def start_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "signaling.server", "--port", str(port),
                             "--log-level", "ERROR"], cwd=ROOT,
                            env=cli_env(VOIP_CODEC_SIGNALING_SECRET=SECRET),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("signaling server did not start")


def health(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
        data: dict[str, int] = json.loads(r.read())
        return data


@pytest.fixture()
def tone(tmp_path: Path) -> Path:
    t = np.arange(16000 * 12) / 16000
    path = tmp_path / "tone.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    return path


def call(port: int, peer: str, wav: Path, duration: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "voip_codec.cli", "call", "--room", "faults", "--server",
         f"ws://127.0.0.1:{port}/ws", "--peer", peer, "--input", str(wav), "--codec", "pcm16",
         "--loopback", "--json", "--duration", str(duration)], cwd=ROOT,
        env=cli_env(VOIP_CODEC_SIGNALING_SECRET=SECRET), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def wait_established(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        h = health(port)
        if h["peers"] == 2 and h["relayed"] >= 2:
            time.sleep(2.0)  # media flowing
            return
        time.sleep(0.1)
    raise AssertionError("the call was not set up within 60 s")


@pytest.fixture()
def port() -> Iterator[int]:
    yield free_port()


def test_survivor_ends_within_3_s_when_the_peer_is_killed(port: int, tone: Path) -> None:
    server = start_server(port)
    survivor, victim = call(port, "survivor", tone, 30), call(port, "victim", tone, 30)
    try:
        wait_established(port)
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        out, err = survivor.communicate(timeout=25)
        ended = time.monotonic() - killed
        assert survivor.returncode == 0, err
        assert ended < 3.0
        result = json.loads(out)
        assert result["end"] == "peer_left"
        assert result["receiver"]["frames_received"] > 10  # the call did carry audio
        assert "the other peer left the call" in err
    finally:
        for proc in (survivor, victim):
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        server.terminate()
        server.wait()


def test_call_goes_on_when_the_signaling_server_restarts(port: int, tone: Path) -> None:
    server = start_server(port)
    a, b = call(port, "a", tone, 9), call(port, "b", tone, 9)
    try:
        wait_established(port)
        started = time.monotonic()
        server.terminate()
        server.wait()
        server = start_server(port)
        results = [p.communicate(timeout=40) for p in (a, b)]
        assert time.monotonic() - started > 4.0  # ran to --duration, not cut at the restart
        for proc, (out, err) in zip((a, b), results, strict=True):
            assert proc.returncode == 0, err
            data = json.loads(out)
            assert data["end"] == "done"
            # frames kept arriving after the restart: most of the 9 s call was received
            assert data["receiver"]["frames_received"] > 60
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        server.terminate()
        server.wait()
