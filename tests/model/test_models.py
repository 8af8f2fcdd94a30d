"""``voip-codec models list|pull`` against a real HTTP hub on 127.0.0.1 (``HF_ENDPOINT``).

The CLI runs in subprocesses with ``HF_HOME`` in a temporary folder, so huggingface_hub reads
the endpoint and cache from the environment exactly as for a user.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub  # noqa: F401 - the `hub` extra: these tests need the real client
import pytest

from tests._shared import conformance_dir
from voip_codec.cli import main
from voip_codec.wire.tokenfile import read_token_file

from .hub_server import HubRepo, LocalHub

ROOT = Path(__file__).resolve().parents[2]
REPO_4K = "lucadellalib/focalcodec_50hz_4k_causal"
SAMPLE_SPEECH = ROOT / "voip_codec" / "assets" / "sample_speech.flac"


def run_cli(home: Path, endpoint: str, *args: str,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_")) and k != "XDG_CACHE_HOME"}
    env.update(HF_HOME=str(home), HF_ENDPOINT=endpoint, OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT), **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "voip_codec.cli", *args], capture_output=True,
                          text=True, timeout=180, cwd=ROOT, env=env)


def checkpoint_files() -> dict[str, bytes]:
    """The tiny official-format checkpoint, as a hub repo holds it."""
    d = conformance_dir()
    return {"config.json": (d / "config.json").read_bytes(),
            "model.safetensors": (d / "model.safetensors").read_bytes(),
            "README.md": b"not downloaded by pull\n"}


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("voip-codec: error: ")
    return lines[0]


def test_pull_then_list_load_and_encode_by_name(tmp_path: Path) -> None:
    files = checkpoint_files()
    repo = HubRepo(files)
    with LocalHub({REPO_4K: repo}) as hub:
        proc = run_cli(tmp_path, hub.endpoint, "models", "pull", "focalcodec-4k")
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        snap = tmp_path / "hub" / f"models--{REPO_4K.replace('/', '--')}" / "snapshots" / repo.commit
        for name in ("config.json", "model.safetensors"):
            assert (snap / name).read_bytes() == files[name]
            assert ("GET", f"/{REPO_4K}/resolve/main/{name}") in hub.requests
        assert not (snap / "README.md").exists()  # only the checkpoint's two files
        assert (tmp_path / "hub" / f"models--{REPO_4K.replace('/', '--')}" / "refs"
                / "main").read_text() == repo.commit
        assert f"{snap}" in proc.stdout and "--model focalcodec-4k" in proc.stdout
        assert hub.endpoint in proc.stderr  # the one-line note says where from

        # a second pull finds the files current: metadata only, nothing downloaded again
        def downloads() -> int:
            return sum(1 for method, path in hub.requests if method == "GET" and "/resolve/" in path)

        before = downloads()
        again = run_cli(tmp_path, hub.endpoint, "models", "pull", "focalcodec-4k", "-q")
        assert again.returncode == 0, again.stderr
        assert downloads() == before == 2

    # from here on the hub is gone: everything below runs from the cache
    listing = run_cli(tmp_path, "http://127.0.0.1:9", "models", "list")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert rows["focalcodec-4k"].split()[2] == "cached"
    assert str(snap) in rows["focalcodec-4k"]
    size_mb = (len(files["config.json"]) + len(files["model.safetensors"])) / 1e6
    assert f"{size_mb:.1f} MB" in rows["focalcodec-4k"]
    assert rows["focalcodec-65k"].split()[2] == "missing"
    assert "voip-codec models pull focalcodec-65k" in rows["focalcodec-65k"]
    assert rows["default"].split()[2] in ("bundled", "missing")

    info = run_cli(tmp_path, "http://127.0.0.1:9", "info", "--model", "focalcodec-4k")
    assert info.returncode == 0, info.stderr
    assert REPO_4K in info.stdout and "2.09 M" in info.stdout
    out = tmp_path / "speech.fct"
    enc = run_cli(tmp_path, "http://127.0.0.1:9", "encode", str(SAMPLE_SPEECH), str(out),
                  "--model", "focalcodec-4k", "-q")
    assert enc.returncode == 0, enc.stderr
    tokens = read_token_file(out)
    assert tokens.model_id == REPO_4K
    assert len(tokens.tokens) > 150  # 3.79 s at 50 tokens/s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pull_with_the_hub_down_is_one_line(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    line = one_error_line(run_cli(tmp_path, endpoint, "models", "pull", "focalcodec-65k"))
    assert f"cannot reach the model hub at {endpoint}" in line
    assert not (tmp_path / "hub" / "models--lucadellalib--focalcodec_50hz_65k_causal"
                / "snapshots").exists()


def test_pull_of_missing_repo_file_or_offline_is_one_line(tmp_path: Path) -> None:
    only_config = {"config.json": checkpoint_files()["config.json"]}
    with LocalHub({"lucadellalib/focalcodec_50hz_2k_causal": HubRepo(only_config)}) as hub:
        line = one_error_line(run_cli(tmp_path, hub.endpoint, "models", "pull",
                                      "focalcodec-65k"))
        assert "has no repository lucadellalib/focalcodec_50hz_65k_causal" in line
        line = one_error_line(run_cli(tmp_path, hub.endpoint, "models", "pull",
                                      "focalcodec-2k"))
        assert "has neither model.safetensors nor model.pt" in line
        line = one_error_line(run_cli(tmp_path, hub.endpoint, "models", "pull", "focalcodec-2k",
                                      "--revision", "v9"))
        assert "has no revision 'v9'" in line
        before = len(hub.requests)
        line = one_error_line(run_cli(tmp_path, hub.endpoint, "models", "pull", "focalcodec-2k",
                                      extra_env={"HF_HUB_OFFLINE": "1"}))
        assert "HF_HUB_OFFLINE" in line
        assert not any("/resolve/" in path for _, path in hub.requests[before:])


def test_unknown_model_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["models", "pull", "focalcodec-1k"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'focalcodec-1k'" in err and "focalcodec-65k" in err


def test_missing_official_model_says_how_to_pull(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["info", "--model", "focalcodec-2k"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("voip-codec: error: ") and err.count("\n") == 1
    assert "voip-codec models pull focalcodec-2k" in err and str(tmp_path / "hub") in err
    assert main(["models", "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [row.split()[0] for row in rows] == ["NAME", "default", "focalcodec-65k",
                                                "focalcodec-4k", "focalcodec-2k"]
    assert all(row.split()[2] == "missing" for row in rows[2:])
