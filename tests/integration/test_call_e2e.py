"""Two ``voip-codec call`` processes through a real signaling server, end-to-end encrypted: both
print the same SAS; with different pre-shared secrets the SAS differ and no audio gets through
(every datagram is rejected and counted, none reaches the decoder)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_cli_errors import ROOT, SECRET, WAITING, cli_env
from tests.integration.test_cli_errors import server as server  # noqa: F401 - the fixture

SAS_LINE = "voip-codec: end-to-end encrypted"
SPEECH = ROOT / "voip_codec" / "assets" / "sample_speech.flac"


def _call_pair(url: str, room: str, psk_a: str, psk_b: str,
               tmp_path: Path) -> tuple[dict, str, str]:
    """Listener A waits in the room, B sends the sample speech; returns A's stats and both
    stderr texts."""
    common = ["call", "--room", room, "--server", url, "--codec", "codec2-700c", "--loopback",
              "--json"]
    a_err = (tmp_path / "a.err").open("w+")
    listener = subprocess.Popen(
        [sys.executable, "-m", "voip_codec.cli", *common, "--duration", "4"],
        cwd=ROOT, env=cli_env(VOIP_CODEC_SIGNALING_SECRET=SECRET, VOIP_CODEC_PSK=psk_a),
        stdout=subprocess.PIPE, stderr=a_err, text=True)
    try:
        deadline = time.monotonic() + 30
        while WAITING not in (tmp_path / "a.err").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        caller = subprocess.run(
            [sys.executable, "-m", "voip_codec.cli", *common, "--input", str(SPEECH)],
            cwd=ROOT, env=cli_env(VOIP_CODEC_SIGNALING_SECRET=SECRET, VOIP_CODEC_PSK=psk_b),
            capture_output=True, text=True, timeout=90)
        out, _ = listener.communicate(timeout=60)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        a_err.close()
    assert listener.returncode == 0 and caller.returncode == 0, caller.stderr
    return json.loads(out), (tmp_path / "a.err").read_text(), caller.stderr


def _sas(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith(SAS_LINE)]
    assert len(lines) == 1, stderr
    return lines[0].rsplit(": ", 1)[1]


@pytest.mark.parametrize("same_psk", [True, False], ids=["same-psk", "different-psk"])
def test_call_prints_the_sas_and_rejects_a_wrong_psk(server: tuple[str, int],  # noqa: F811
                                                     tmp_path: Path, same_psk: bool) -> None:
    url, _ = server
    stats, a_err, b_err = _call_pair(url, f"e2e-{same_psk}", "correct horse",
                                     "correct horse" if same_psk else "wrong horse", tmp_path)
    sas_a, sas_b = _sas(a_err), _sas(b_err)
    assert len(sas_a) == 9 and "Traceback" not in a_err + b_err
    e2e = stats["e2e"]
    assert e2e["sas"] == sas_a
    if same_psk:
        assert sas_a == sas_b
        assert stats["receiver"]["frames_received"] > 20
        assert e2e["link"]["received"] > 20 and e2e["link"]["forged"] == 0
    else:
        assert sas_a != sas_b
        assert stats["receiver"]["frames_received"] == 0
        assert stats["receiver"]["invalid"] == 0  # nothing unauthenticated reached the session
        assert e2e["link"]["received"] == 0 and e2e["link"]["forged"] > 20
