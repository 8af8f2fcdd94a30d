"""Process helpers for tests and benchmarks that run real calls on 127.0.0.1.

A signaling server process, ``voip-codec call`` peer processes, waiting until the two peers have
set the call up, and cleaning up: the integration tests (``tests/integration``) and the fault
benchmark (``voip_codec_bench.faults``) both drive calls this way. Nothing here is imported by
the package itself; it needs only the standard library.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "free_port",
    "signaling_health",
    "start_call_peer",
    "start_signaling_server",
    "stop_processes",
    "wait_call_established",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def signaling_health(port: int, timeout_s: float = 2.0) -> dict[str, Any]:
    """``GET /health`` of the signaling server on 127.0.0.1:``port``.

    Raises:
        OSError: the server does not answer (``urllib.error.URLError`` is one).
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout_s) as r:
        data: dict[str, Any] = json.loads(r.read())
        return data


def start_signaling_server(port: int, env: Mapping[str, str], *, cwd: Path | None = None,
                           timeout_s: float = 20.0) -> subprocess.Popen[bytes]:
    """Start ``python -m signaling.server`` on 127.0.0.1:``port`` (log level ERROR) and wait
    until ``/health`` answers.

    Args:
        port: TCP port to listen on.
        env: environment of the process (it must hold the signaling secret).
        cwd: working folder of the process.
        timeout_s: how long to wait for ``/health``.

    Returns:
        The running server process.

    Raises:
        RuntimeError: ``/health`` did not answer within ``timeout_s`` (the process is killed).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "signaling.server", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "ERROR"], cwd=cwd, env=dict(env), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            signaling_health(port, timeout_s=1.0)
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the signaling server on port {port} did not start in {timeout_s:g} s")


def start_call_peer(port: int, room: str, peer: str, wav: Path, duration_s: float,
                    env: Mapping[str, str], *, codec: str = "pcm16", cwd: Path | None = None,
                    extra_args: Sequence[str] = ()) -> subprocess.Popen[str]:
    """Start ``voip-codec call --loopback --json`` as ``peer`` of ``room`` against the server on
    127.0.0.1:``port``, sending ``wav``; stdout and stderr are pipes (text).

    Args:
        port: the signaling server's port.
        room: room to join.
        peer: this peer's id.
        wav: input audio file.
        duration_s: ``--duration`` of the call, seconds.
        env: environment of the process (it must hold the signaling secret).
        codec: ``--codec``.
        cwd: working folder of the process.
        extra_args: further ``call`` options.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "voip_codec.cli", "call", "--room", room, "--server",
         f"ws://127.0.0.1:{port}/ws", "--peer", peer, "--input", str(wav), "--codec", codec,
         "--loopback", "--json", "--duration", str(duration_s), *extra_args],
        cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_call_established(port: int, timeout_s: float = 60.0) -> bool:
    """Wait until two peers are in a room of the server on ``port`` and the offer and the
    answer were relayed; False when that did not happen within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            h = signaling_health(port)
        except OSError:
            h = {}
        if h.get("peers", 0) >= 2 and h.get("relayed", 0) >= 2:
            return True
        time.sleep(0.1)
    return False


def stop_processes(server: subprocess.Popen[Any] | None, *peers: subprocess.Popen[Any]) -> None:
    """Kill the peers still running (reaping their pipes), then stop the server (SIGTERM)."""
    for proc in peers:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    if server is not None and server.poll() is None:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
