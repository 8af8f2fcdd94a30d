"""Browsers in the call: the page of examples/browser in headless Chromium (Selenium).

One `voip-codec serve --web` (with a secret: every peer joins with a token) serves the page,
an export of the bundled model and onnxruntime-web. Chromium's fake microphone plays a speech
file (its processing switched off by the page); the Python peer is `voip-codec call`.

- browser -> Python: the Python recording against the same codec's offline decode of the
  microphone file, STOI >= 0.9;
- Python -> browser: the audio the page decoded (handed back through Selenium), STOI >= 0.9;
- browser <-> browser: both directions, STOI >= 0.9 each;
- both speak what the Python peers speak by default: packet version 2 and end-to-end
  encryption (the same SAS on both ends, every datagram authenticated, loss reports both ways);
- the page's per-chunk encode and decode times (reported, and below the 80 ms real-time
  bound at p50).

Needs Chromium, chromedriver (Debian packages), selenium and `npm ci` in examples/browser; in
CI (``CI=true``) their absence fails the tests, elsewhere it skips them.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from pystoi import stoi

from signaling.tokens import make_join_token
from tests._shared import in_ci, speech_clips
from voip_codec.audio import read_audio, resample
from voip_codec.codec.loading import from_pretrained
from voip_codec.export.onnx import export_onnx

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "examples" / "browser"
CHROMIUM = Path("/usr/lib/chromium/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SECRET = b"browser-test-secret-0123456789abcdef"
SECONDS = 8.0
MIN_STOI = 0.9
MIN_STOI_TO_PAGE = 0.85
"""Floor for what the page decodes of a Python peer's packets, against the offline torch decode
of the file. Measured 0.903 (default model v5; v4 0.910), with one 2 s window at 0.85: the Python
peer encodes the file in real time through onnxruntime and the page decodes in WASM, and the
window after a delay-shrinking skip differs most. A page that decodes wrongly scores below 0.5."""


def _missing_tools() -> list[str]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not (PAGE / "node_modules" / "onnxruntime-web" / "dist").is_dir():
        missing.append("examples/browser/node_modules (npm ci)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    return missing


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    missing = _missing_tools()
    if missing:
        message = "browser tests need " + ", ".join(missing)
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Speech:
    pcm: np.ndarray
    """16 kHz input, SECONDS long."""
    wav16: Path
    """It as a 16 kHz WAV (the Python peer's input)."""
    wav48: Path
    """It as a 48 kHz 16-bit WAV (Chromium's fake microphone, which loops it)."""
    reference: np.ndarray
    """The bundled model's offline decode of it, at 16 kHz."""


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    folder = tmp_path_factory.mktemp("speech")
    clips = [c for c in speech_clips("eval") if "librispeech-dev-clean" in str(c)]
    pcm = np.concatenate([read_audio(c, 16000)[0] for c in clips[:6]])
    pcm = pcm[:int(SECONDS * 16000)].astype(np.float32)
    sf.write(folder / "in16.wav", pcm, 16000, subtype="PCM_16")
    sf.write(folder / "in48.wav", resample(pcm, 16000, 48000), 48000, subtype="PCM_16")
    pcm = read_audio(folder / "in16.wav", 16000)[0]  # what the peers read: 16-bit rounded
    model = from_pretrained("default")
    with torch.inference_mode():
        decoded = model.sig_to_sig(torch.from_numpy(pcm)[None])[0].numpy()
    return Speech(pcm, folder / "in16.wav", folder / "in48.wav",
                  resample(decoded, 24000, 16000))


@pytest.fixture(scope="module")
def offline() -> Any:
    """The bundled model's offline resynthesis, 16 kHz in and out."""
    model = from_pretrained("default")

    def decode(pcm: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model.sig_to_sig(torch.from_numpy(np.ascontiguousarray(pcm))[None])[0]
        return resample(out.numpy(), 24000, 16000)

    return decode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp: Path) -> dict[str, str]:
    return dict(os.environ, VOIP_CODEC_SIGNALING_SECRET=SECRET.decode(), OMP_NUM_THREADS="1",
                XDG_CACHE_HOME=str(tmp / "cache"), PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``voip-codec serve --web`` on a free port; yields the port."""
    tmp = tmp_path_factory.mktemp("server")
    export_onnx(from_pretrained("default"), tmp / "model")
    port = _free_port()
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voip_codec.cli", "serve", "--port", str(port), "--web",
         "--web-model", str(tmp / "model")], env=_env(tmp), stderr=log, stdout=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("serve --web did not start: "
                                + (tmp / "server.log").read_text()[-2000:])
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _browser(fake_mic: Path, profile: Path) -> Any:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={fake_mic}",
                 "--autoplay-policy=no-user-gesture-required",
                 "--allow-loopback-in-peer-connection", "--window-size=900,700"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def _page_url(port: int, room: str, peer: str) -> str:
    token = make_join_token(SECRET, room, peer, 600)
    return (f"http://127.0.0.1:{port}/?room={room}&peer={peer}&token={token}&autostart=1"
            "&keep=1")


def _snapshot(driver: Any) -> dict[str, Any]:
    snap: dict[str, Any] | None = driver.execute_script(
        "return window.voip ? window.voip.snapshot() : null")
    return snap or {"state": "loading", "error": None}


def _wait_state(driver: Any, wanted: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        snap = _snapshot(driver)
        if snap["state"] == wanted:
            return snap
        if snap["state"] == "failed" or time.monotonic() > deadline:
            log = driver.find_element("id", "log").text
            pytest.fail(f"page state {snap['state']!r} (wanted {wanted!r}): {snap['error']}\n{log}")
        time.sleep(0.2)


def _decoded(driver: Any) -> np.ndarray:
    """The audio the page decoded, at 16 kHz, each frame at its frame index's place: the
    page's playout adaptation (stretching, skipping silent frames) changes when a frame is
    heard, not what it sounds like; the adaptation itself is the parity test's subject
    (test_browser_js.py)."""
    raw = base64.b64decode(driver.execute_script("return window.voip.decodedByIndexBase64()"))
    return resample(np.frombuffer(raw, dtype="<f4").copy(), 24000, 16000)


def _captured(driver: Any) -> np.ndarray:
    """The microphone audio the page encoded, in order (16 kHz)."""
    raw = base64.b64decode(driver.execute_script("return window.voip.capturedBase64()"))
    return np.frombuffer(raw, dtype="<f4").copy()


def _best_offset(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Where ``needle`` fits best in ``haystack``: the peak of the cross-correlation normalised
    by the energy of each stretch of ``haystack`` it is laid on (unnormalised, a loud stretch
    elsewhere can win over the right, quieter one)."""
    n = len(haystack) + len(needle)
    m = len(haystack) - len(needle)
    corr = np.fft.irfft(np.fft.rfft(haystack, 2 * n) * np.conj(np.fft.rfft(needle, 2 * n)))[:m]
    energy = np.concatenate([[0.0], np.cumsum(haystack.astype(np.float64) ** 2)])
    local = energy[len(needle):len(needle) + m] - energy[:m]
    return int(np.argmax(corr / np.sqrt(np.maximum(local, 1e-9 * max(float(local.max()), 1e-12)))))


def looped_stoi(received: np.ndarray, reference: np.ndarray, window_s: float = 2.0,
                loops: int = 3, max_shift_s: float = 0.5, median: bool = False) -> float:
    """Mean STOI of 2 s windows of ``received`` (from its second 1 to its end), each against
    the matching stretch of the looped reference (the fake microphone loops its file and starts
    anywhere in it, and the receiver's playout adaptation may shift later windows by a frame
    or more: each window is aligned on its own, the first anywhere, each later one within
    +-``max_shift_s`` of where the one before it ended, so that a loud stretch elsewhere in
    the reference cannot pull it away). With ``median`` the median window's score instead of
    the mean: a window in which the receiver's playout delay moved (silence inserted or dropped,
    a stretch) is misaligned in its second part and scores low however right the audio is."""
    w, shift = int(window_s * 16000), int(max_shift_s * 16000)
    starts = range(16000, len(received) - w + 1, w)
    assert len(starts) >= 2, f"only {len(received) / 16000:.2f} s received"
    tiled = np.concatenate([reference] * loops)
    scores = []
    offset: int | None = None
    for start in starts:
        piece = received[start:start + w]
        if offset is None:
            offset = _best_offset(tiled, piece)
        else:
            lo = max(0, offset + w - shift)
            near = tiled[lo:min(len(tiled), offset + w + shift + w + 1)]
            if len(near) <= w:
                break  # the reference ends here
            offset = lo + _best_offset(near, piece)
        scores.append(float(stoi(tiled[offset:offset + w], piece, 16000)))
    return float(np.median(scores) if median else np.mean(scores))


RECOVERY_FRAMES = 6
"""Frames after a concealed one during which the decoder's state still differs from an
uninterrupted decode's (0.48 s): windows that reach back into them are not scored."""


def _concealed_frames(driver: Any) -> set[int]:
    """Frame indices the page concealed (lost, or given up on as too late)."""
    return set(driver.execute_script("return window.voip.concealedIndices()"))


def indexed_stoi(received: np.ndarray, reference: np.ndarray, window_s: float = 2.0,
                 max_shift_s: float = 0.25, concealed: set[int] | None = None) -> float:
    """Mean STOI of 2 s windows of ``received`` (from its second 1), where ``received`` holds
    each decoded frame at its frame index's place (:func:`_decoded`): each window is compared
    with the stretch of ``reference`` at the same place, aligned within +-``max_shift_s`` (the
    codec's own delay).

    With ``concealed`` (:func:`_concealed_frames`), a window is not scored if a frame in it or in
    the ``RECOVERY_FRAMES`` before it was concealed: this checks that the page decodes right;
    what concealment sounds like, and when it happens, is the subject of the parity test
    (test_browser_js.py), not of this comparison with an uninterrupted decode. At least two
    windows must be scored."""
    w, shift = int(window_s * 16000), int(max_shift_s * 16000)
    frame = 1280  # 80 ms at 16 kHz
    starts = [start for start in range(16000, min(len(received), len(reference)) - w + 1, w)
              if concealed is None or not any(
                  f in concealed for f in range(max(0, start // frame - RECOVERY_FRAMES),
                                                (start + w - 1) // frame + 1))]
    assert len(starts) >= 2, (f"only {len(starts)} windows to score in "
                              f"{len(received) / 16000:.2f} s received")
    scores = []
    for start in starts:
        piece = received[start:start + w]
        lo = max(0, start - shift)
        near = reference[lo:min(len(reference), start + shift + w + 1)]
        offset = lo + _best_offset(near, piece)
        scores.append(float(stoi(reference[offset:offset + w], piece, 16000)))
    return float(np.mean(scores))


@dataclass
class DuplexCall:
    python_recording: np.ndarray
    """What the Python peer recorded (16 kHz)."""
    page_decoded: np.ndarray
    """What the page decoded (16 kHz)."""
    page_concealed_frames: set[int]
    """Frames the page concealed (:func:`_concealed_frames`)."""
    page_captured: np.ndarray
    """What the page's microphone gave it and it encoded (16 kHz)."""
    page: dict[str, Any]
    """The page's snapshot after the call."""
    python: dict[str, Any]
    """The Python peer's --json report."""
    screenshot: Path


@pytest.fixture(scope="module")
def duplex_call(server: int, speech: Speech, tmp_path_factory: pytest.TempPathFactory
                ) -> DuplexCall:
    """One call: the page (fake microphone) and `voip-codec call` (speech file) both talk."""
    tmp = tmp_path_factory.mktemp("duplex")
    driver = _browser(speech.wav48, tmp / "profile")
    try:
        driver.get(_page_url(server, "duplex", "browser"))
        _wait_state(driver, "waiting for the other peer", 60)
        python = subprocess.Popen(
            [sys.executable, "-m", "voip_codec.cli", "call", "--room", "duplex", "--server",
             f"ws://127.0.0.1:{server}/ws", "--peer", "python", "--input", str(speech.wav16),
             "--output", str(tmp / "python.wav"), "--duration", str(SECONDS), "--loopback",
             "--backend", "onnx", "--json"], env=_env(tmp), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            _wait_state(driver, "in call", 60)
            time.sleep(SECONDS * 0.75)
            shot = tmp / "call.png"  # mid-call, for the README
            driver.save_screenshot(str(shot))
            out, err = python.communicate(timeout=120)
        finally:
            if python.poll() is None:
                python.kill()
                python.wait()
        assert python.returncode == 0, err[-2000:]
        print(out)
        report = json.loads(out)
        page = _snapshot(driver)
        assert page["state"] == "in call", page
        decoded, captured = _decoded(driver), _captured(driver)
        concealed_frames = _concealed_frames(driver)
    finally:
        driver.quit()
    rec, rate = sf.read(tmp / "python.wav", dtype="float32", always_2d=True)
    return DuplexCall(resample(rec.mean(axis=1), rate, 16000), decoded, concealed_frames,
                      captured, page, report, shot)


def test_browser_to_python(duplex_call: DuplexCall, speech: Speech, offline: Any) -> None:
    """The page's microphone is the speech file (looped), and the Python peer hears the same
    model's offline decode of what the page captured."""
    mic = looped_stoi(duplex_call.page_captured, speech.pcm)
    # what the Python peer played, in real time: its playout delay adapts (in silence), which
    # shifts the audio within a window; 1 s windows, the median one scored
    score = looped_stoi(duplex_call.python_recording, offline(duplex_call.page_captured), loops=1,
                        window_s=1.0, median=True)
    print(f"browser -> python STOI vs offline decode: {score:.3f} (microphone vs file {mic:.3f})")
    assert mic >= 0.98
    assert score >= MIN_STOI


def test_python_to_browser(duplex_call: DuplexCall, speech: Speech) -> None:
    score = indexed_stoi(duplex_call.page_decoded, speech.reference,
                         concealed=duplex_call.page_concealed_frames)
    print(f"python -> browser STOI vs offline decode: {score:.3f}; page receive "
          f"{duplex_call.page['receive']}")
    assert score >= MIN_STOI_TO_PAGE
    receive = duplex_call.page["receive"]
    assert receive["packets_received"] >= SECONDS / 0.08 * 0.9 and receive["invalid"] == 0


def test_browser_and_python_speak_v2_end_to_end_encrypted(duplex_call: DuplexCall) -> None:
    """No --packet-version 1 --no-e2e on the Python side: the page sends version 2, both ends
    show the same SAS, every datagram authenticates, and loss reports flow both ways (the
    Python sender counts the page's piggybacked reports, and the page the Python ones)."""
    page, python = duplex_call.page, duplex_call.python
    print(f"page: SAS {page['sas']}, e2e {page['e2e']}, send {page['send']}; python: "
          f"{python['e2e']}, sender reports {python['sender']['reports']}")
    assert page["sas"] is not None and page["sas"] == python["e2e"]["sas"]
    assert page["e2e"]["received"] >= SECONDS / 0.08 * 0.9
    assert page["e2e"]["forged"] == page["e2e"]["replayed"] == page["e2e"]["truncated"] == 0
    assert python["e2e"]["link"]["forged"] == 0 and python["e2e"]["link"]["received"] > 0
    assert page["send"]["packet_version"] == 2
    assert python["sender"]["reports"] >= 3 and page["send"]["reports"] >= 3


def test_page_reports_codec_times(duplex_call: DuplexCall) -> None:
    """The page's per-chunk times: reported for every chunk, real time at p50 (the 40 ms
    target for encode + decode p95 is measured, not asserted: this box is shared)."""
    enc, dec = duplex_call.page["encode_ms"], duplex_call.page["decode_ms"]
    print(f"page encode ms p50 {enc['p50']:.1f} p95 {enc['p95']:.1f} (n {enc['n']}); "
          f"decode ms p50 {dec['p50']:.1f} p95 {dec['p95']:.1f} (n {dec['n']})")
    assert enc["n"] >= SECONDS / 0.08 * 0.8 and dec["n"] >= SECONDS / 0.08 * 0.8
    assert enc["p50"] + dec["p50"] < 80.0
    assert duplex_call.screenshot.stat().st_size > 10_000


def test_browser_to_browser(server: int, speech: Speech, offline: Any, tmp_path: Path
                            ) -> None:
    """Two pages in one room: each hears the offline decode of what the other captured."""
    first = _browser(speech.wav48, tmp_path / "profile-a")
    second = None
    try:
        first.get(_page_url(server, "b2b", "alice"))
        _wait_state(first, "waiting for the other peer", 60)
        second = _browser(speech.wav48, tmp_path / "profile-b")
        second.get(_page_url(server, "b2b", "bob"))
        _wait_state(second, "in call", 60)
        _wait_state(first, "in call", 30)
        time.sleep(SECONDS)
        heard = [_decoded(d) for d in (first, second)]
        concealed = [_concealed_frames(d) for d in (first, second)]
        spoken = [_captured(d) for d in (first, second)]
        snaps = [_snapshot(d) for d in (first, second)]
    finally:
        first.quit()
        if second is not None:
            second.quit()
    scores = [indexed_stoi(heard[0], offline(spoken[1]), concealed=concealed[0]),
              indexed_stoi(heard[1], offline(spoken[0]), concealed=concealed[1])]
    print(f"browser <-> browser STOI: {scores[0]:.3f} / {scores[1]:.3f}; receive "
          f"{snaps[0]['receive']} / {snaps[1]['receive']}")
    assert [s["role"] for s in snaps] == ["answerer", "offerer"]
    assert snaps[0]["sas"] is not None and snaps[0]["sas"] == snaps[1]["sas"]
    assert all(s["e2e"]["forged"] == 0 and s["e2e"]["received"] > 0 for s in snaps)
    assert min(scores) >= MIN_STOI


def test_page_benchmark_mode(server: int, speech: Speech, tmp_path: Path) -> None:
    """``?bench=N`` times N encoder and N decoder steps in one worker without a call (no other
    work competes, so levers such as the graph optimisation level or an int8 export can be
    compared); the figures are printed, and each step must run in real time at p50."""
    driver = _browser(speech.wav48, tmp_path / "profile")
    try:
        driver.get(f"http://127.0.0.1:{server}/?bench=40&opt=all")
        _wait_state(driver, "benchmark done", 90)
        bench = driver.execute_script("return window.voip.bench")
    finally:
        driver.quit()
    print(f"page benchmark (no call): encode ms {bench['encode_ms']}, decode ms "
          f"{bench['decode_ms']}")
    assert bench["encode_ms"]["n"] == bench["decode_ms"]["n"] == 40
    assert bench["graph_optimization"] == "all" and bench["model"] == "voip-codec/default"
    assert bench["encode_ms"]["p50"] < 80.0 and bench["decode_ms"]["p50"] < 80.0
