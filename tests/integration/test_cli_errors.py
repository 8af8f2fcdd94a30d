"""Bad input to ``call``, ``serve``, ``demo`` and the file commands, tried as a new user would.

Each case runs the real CLI in a subprocess (against a real signaling server on 127.0.0.1 where
one is needed) and checks the exit status and that stderr is one clear line, never a traceback.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
SECRET = secrets.token_urlsafe(32)
WAITING = "voip-codec: waiting for a peer in room"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VOIP_CODEC_SIGNALING_SECRET"}
    # PYTHONPATH: this checkout's package, also when the command runs in another folder
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return env


def run_cli(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voip_codec.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=cli_env(**env))


def error_line(proc: subprocess.CompletedProcess[str], *, notices: str | None = None) -> str:
    """The single error line of a failed run (``notices`` lines before it are allowed)."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines()
             if notices is None or not ln.startswith(notices)]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("voip-codec: error: "), proc.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    """``voip-codec serve --port 0`` with a secret; yields its URL and port."""
    proc = subprocess.Popen([sys.executable, "-m", "voip_codec.cli", "serve", "--port", "0"],
                            cwd=ROOT, env=cli_env(VOIP_CODEC_SIGNALING_SECRET=SECRET),
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the first line is logged once the port is bound
        assert "Signaling listening on ws://127.0.0.1:" in line, line
        url = line.strip().rsplit(" ", 1)[1]
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert port > 0
        yield url, port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=30) == 0  # Ctrl-C is a clean shutdown for the server
        finally:
            if proc.poll() is None:
                proc.kill()


def test_serve_on_a_busy_port_is_one_line_and_never_says_listening(
        server: tuple[str, int]) -> None:
    _, port = server
    proc = run_cli("serve", "--port", str(port), VOIP_CODEC_SIGNALING_SECRET=SECRET)
    line = error_line(proc)
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in line
    assert "listening" not in proc.stderr.lower()


def test_call_without_or_with_a_wrong_secret(server: tuple[str, int]) -> None:
    url, _ = server
    line = error_line(run_cli("call", "--room", "r1", "--server", url, "--codec", "pcm16"))
    assert f"signaling server at {url} requires a join token" in line
    assert "VOIP_CODEC_SIGNALING_SECRET" in line
    line = error_line(run_cli("call", "--room", "r1", "--server", url, "--codec", "pcm16",
                              VOIP_CODEC_SIGNALING_SECRET=secrets.token_urlsafe(32)))
    assert "refused the join token" in line and "differs from the server's secret" in line
    line = error_line(run_cli("call", "--room", "r1", "--server", url, "--codec", "pcm16",
                              VOIP_CODEC_SIGNALING_SECRET="short"))
    assert "secret must be at least" in line


def test_call_to_no_server_is_one_line() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    line = error_line(run_cli("call", "--room", "r1", "--server", url, "--codec", "pcm16",
                              VOIP_CODEC_SIGNALING_SECRET=SECRET))
    assert f"cannot reach the signaling server at {url} (connection refused)" in line


def test_lone_call_says_it_waits_then_gives_up_in_one_line(server: tuple[str, int]) -> None:
    url, _ = server
    proc = run_cli("call", "--room", "lonely", "--server", url, "--codec", "pcm16", "--wait", "2",
                   VOIP_CODEC_SIGNALING_SECRET=SECRET)
    line = error_line(proc, notices=WAITING)
    assert f"no peer joined room lonely on {url} within 2 s" in line
    first = proc.stderr.splitlines()[0]
    assert first == f"{WAITING} lonely on {url} (Ctrl-C to stop)"


def test_ctrl_c_while_waiting_exits_130_quietly(server: tuple[str, int]) -> None:
    url, _ = server
    proc = subprocess.Popen([sys.executable, "-m", "voip_codec.cli", "call", "--room", "ctrlc",
                             "--server", url, "--codec", "pcm16"], cwd=ROOT,
                            env=cli_env(VOIP_CODEC_SIGNALING_SECRET=SECRET),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith(WAITING)  # joined and waiting
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "nclosed" not in err
    assert err.strip().splitlines() in ([], ["voip-codec: interrupted"]) and out == ""


def test_output_in_a_missing_folder_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # in-process: the same main() as the console script, without five interpreter start-ups
    from voip_codec.cli import main

    missing = tmp_path / "no-such-folder"
    sf.write(tmp_path / "in.wav", np.zeros(16000, dtype=np.float32), 16000)
    cases = [
        ["encode", str(tmp_path / "in.wav"), str(missing / "x.fct")],
        ["decode", str(tmp_path / "t.fct"), str(missing / "x.wav")],
        ["simulate", "--input", str(tmp_path / "in.wav"), "--output", str(missing / "x.wav"),
         "--codec", "pcm16"],
        ["demo", "--codec", "pcm16", "--output", str(missing / "x.wav")],
        ["call", "--room", "r", "--server", "ws://127.0.0.1:9/ws", "--output",
         str(missing / "x.wav")],
    ]
    for args in cases:
        capsys.readouterr()
        assert main(args) == 1, args
        err = capsys.readouterr().err
        assert err == f"voip-codec: error: output folder {missing} does not exist (create it " \
                      "first, or write somewhere else)\n", args
        assert not missing.exists()
    assert main(["call", "--room", "r", "--server", "ws://127.0.0.1:9/ws", "--input",
                 str(missing / "in.wav")]) == 1
    err = capsys.readouterr().err
    assert err == f"voip-codec: error: input file {missing / 'in.wav'} does not exist\n"


def test_demo_leaves_the_working_folder_clean(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "in.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    proc = run_cli("demo", "--codec", "pcm16", "--input", str(tmp_path / "in.wav"), "--json",
                   cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert list(work.iterdir()) == []
    output = Path(json.loads(proc.stdout)["output"])
    assert output.is_absolute() and output.name == "demo-output.wav"
    folder = output.parent
    assert folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith(
        "voip-codec-demo-")
    try:
        assert sf.info(output).duration == pytest.approx(1.0, abs=0.05)
    finally:
        shutil.rmtree(folder)  # only the demo's own temp folder, checked just above


def test_bad_link_specs_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--link`` of ``call`` and ``demo``: unknown links, missing devices, bad baud rates,
    options that do not fit the link; in-process, like the console script."""
    from voip_codec.cli import main

    sig = ["--room", "r", "--server", "ws://127.0.0.1:9/ws"]
    cases = [
        (["call", "--link", "pigeon", *sig], "unknown link 'pigeon': use webrtc, ice or "
                                             "serial:/dev/ttyUSB0@2400"),
        (["call", "--link", "serial"], "--link serial names no device; write it as "
                                       "serial:/dev/ttyUSB0@2400"),
        (["call", "--link", "serial:/nonexistent/ttyUSB7@2400"],
         "serial device /nonexistent/ttyUSB7 does not exist (is the modem plugged in? "
         "`ls /dev/tty*` lists the ports)"),
        (["call", "--link", "serial:/dev/ttyUSB0@fast"],
         "bad baud rate 'fast' in serial:/dev/ttyUSB0@fast: give a whole number of bit/s, "
         "e.g. serial:/dev/ttyUSB0@2400"),
        (["call", "--link", "serial:/dev/ttyUSB0@12"],
         "bad baud rate 12 in serial:/dev/ttyUSB0@12: it must be in 50..4000000 bit/s"),
        (["call", "--link", "serial:@2400"], "serial link '@2400' names no device; write it "
                                             "as serial:/dev/ttyUSB0@2400"),
        (["call", "--link", "ice"], "call --link ice needs --room and --server (the signaling "
                                    "server both peers join)"),
        (["call", "--link", "serial:" + str(tmp_path / "plain-file") + "@2400"],
         f"{tmp_path / 'plain-file'} is not a serial device"),
        (["demo", "--link", "serial:/dev/ttyUSB0"],
         "demo simulates its own serial line between two pseudo-terminals; use --link serial "
         "or serial@BAUD, not serial:/dev/ttyUSB0 (call --link serial:/dev/ttyUSB0 uses a real "
         "device)"),
        (["demo", "--link", "serial@abc"], "bad baud rate 'abc' in serial@abc: give a whole "
                                           "number of bit/s, e.g. serial:/dev/ttyUSB0@2400"),
        (["demo", "--link", "serial", "--loss", "0.1"],
         "--loss, --jitter and --rate impair IP links; a serial line takes --bit-errors and "
         "--byte-drops"),
        (["demo", "--link", "ice", "--bit-errors", "0.001"],
         "--bit-errors and --byte-drops apply to --link serial only"),
        (["demo", "--link", "serial", "--byte-drops", "1.5"],
         "--byte-drops is a probability in [0, 1), got 1.5"),
    ]
    (tmp_path / "plain-file").write_bytes(b"")
    for args, message in cases:
        capsys.readouterr()
        assert main([*args, "--codec", "codec2-700c"]) == 1, args
        err = capsys.readouterr().err
        assert err == f"voip-codec: error: {message}\n", args


def test_serial_permission_denied_and_busy_messages() -> None:
    """The messages for errors this root test box cannot provoke (pyserial's exceptions carry
    the errno of the failed open)."""
    import errno

    import serial

    from voip_codec.transport.serial import SerialSpec, _open_error

    spec = SerialSpec("/dev/ttyUSB0", 2400)
    denied = serial.SerialException(errno.EACCES, "could not open port /dev/ttyUSB0: "
                                                  "[Errno 13] Permission denied")
    assert _open_error(spec, denied) == (
        "permission denied on serial device /dev/ttyUSB0 (add your user to the group that "
        "owns it, e.g. `sudo usermod -aG dialout $USER`, then log in again)")
    busy = serial.SerialException(errno.EBUSY, "could not exclusively lock port")
    assert _open_error(spec, busy) == "serial device /dev/ttyUSB0 is in use by another program"
