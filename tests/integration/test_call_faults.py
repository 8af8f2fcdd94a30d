"""Faults in a two-process ``voip-codec call``: a killed peer, a restarted signaling server.

Regression (found by ``voip-codec bench robustness``): when the other peer's process was
killed, the survivor went on playing concealment until its own input or ``--duration`` ran
out; it now ends the call within 3 s, when the signaling server reports ``peer_left``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.integration.test_cli_errors import ROOT, SECRET, cli_env
from voip_codec.testing import (
    free_port,
    start_call_peer,
    start_signaling_server,
    stop_processes,
    wait_call_established,
)

ENV = cli_env(VOIP_CODEC_SIGNALING_SECRET=SECRET)


def start_server(port: int) -> subprocess.Popen[bytes]:
    return start_signaling_server(port, ENV, cwd=ROOT)


@pytest.fixture()
def tone(tmp_path: Path) -> Path:
    t = np.arange(16000 * 12) / 16000
    path = tmp_path / "tone.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    return path


def call(port: int, peer: str, wav: Path, duration: float) -> subprocess.Popen[str]:
    return start_call_peer(port, "faults", peer, wav, duration, ENV, cwd=ROOT)


def wait_established(port: int) -> None:
    assert wait_call_established(port, 60.0), "the call was not set up within 60 s"
    time.sleep(2.0)  # media flowing


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
        stop_processes(server, survivor, victim)


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
        stop_processes(server, a, b)
