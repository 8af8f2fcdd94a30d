"""What gets installed: a runtime wheel without the benchmarks, and a CLI that installs light.

The last two tests build from a copy of the source tree (so the checkout gets no
``build/`` or ``*.egg-info``): one builds the runtime wheel and lists it; one makes a fresh
virtual environment, installs only ``.[server]`` into it (pip fetches aiohttp and numpy from the
package index) and runs ``voip-codec --help``, ``serve --help``, ``codecs`` and a real ``serve``
answering HTTP on 127.0.0.1. The first test checks the same light import rule in-process, in a
second: parsers and ``codecs`` with torch, aiortc, av and aiohttp made unimportable.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_BLOCK_HEAVY = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "aiortc", "av", "aiohttp"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Block())
"""


def _run(*cmd: str | Path, cwd: Path | None = None, timeout: float = 120,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env, check=False)


def _source_copy(dest: Path) -> Path:
    """The project's source tree (no virtual environment, caches or build outputs) in ``dest``."""
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build",
                                    "dist", ".cache", ".*_cache", ".hypothesis", "runs",
                                    "bench-report")
    return Path(shutil.copytree(ROOT, dest / "src", ignore=ignore))


def test_parsers_and_codecs_need_no_heavy_imports() -> None:
    code = _BLOCK_HEAVY + """
from voip_codec.cli import build_parser, main
parser = build_parser()
assert parser.parse_args(["serve", "--port", "1"]).port == 1
assert parser.parse_args(["simulate", "--input", "a", "--output", "b"]).input == "a"
assert parser.parse_args(["encode", "a", "b"]).output == "b"
sys.exit(main(["codecs"]))
"""
    proc = _run(sys.executable, "-c", code, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "id   1" in lines["pcm16"] and "id  16" in lines["codec2-700c"]
    assert lines["focalcodec-default"].endswith(
        "unavailable: this needs the Python package 'torch', which is not installed: pip "
        "install torch==2.13.0 (the CPU build, see the README), then pip install "
        "'voip-codec[codec]'")
    assert "unavailable: Opus and AMR-NB need PyAV" in lines["opus-6k"]
    assert "Traceback" not in proc.stderr


def test_a_missing_package_is_one_line() -> None:
    code = _BLOCK_HEAVY + """
from voip_codec.cli import main
sys.exit(main(["info"]))
"""
    proc = _run(sys.executable, "-c", code, cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr == ("voip-codec: error: this needs the Python package 'torch', which is "
                           "not installed: pip install torch==2.13.0 (the CPU build, see the "
                           "README), then pip install 'voip-codec[codec]'\n")


def _plugin_site(tmp_path: Path, entry_points: str, modules: dict[str, str]) -> dict[str, str]:
    """A folder with an installed-distribution record declaring ``entry_points`` (what pip
    writes), plus plugin modules; returns an environment that puts it on the path."""
    dist = tmp_path / "site" / "voip_codec_test_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: voip-codec-test-plugin\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text(entry_points)
    for name, text in modules.items():
        (tmp_path / "site" / f"{name}.py").write_text(text)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}


def test_plugins_add_commands_through_entry_points(tmp_path: Path) -> None:
    plugin = (
        "def add_parser(subparsers):\n"
        "    p = subparsers.add_parser('hello', help='say hello')\n"
        "    p.add_argument('--name', required=True)\n"
        "    p.set_defaults(func=lambda args: print(f'hello {args.name}') or 0)\n"
        "    return p\n"
    )
    env = _plugin_site(tmp_path, "[voip_codec.cli_plugins]\n"
                                 "hello = hello_plugin:add_parser\n"
                                 "codecs = hello_plugin:add_parser\n"  # built-ins win
                                 "broken = no_such_module_here:add_parser\n",
                       {"hello_plugin": plugin})
    cli = [sys.executable, "-m", "voip_codec.cli"]
    proc = _run(*cli, "hello", "--name", "you", env=env, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "hello you\n"), proc.stderr
    proc = _run(*cli, "--help", env=env, cwd=tmp_path)
    assert "say hello" in proc.stdout and "list the codecs" in proc.stdout
    proc = _run(*cli, "broken", "x", "--y", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == ("voip-codec: error: the 'broken' command "
                           "(no_such_module_here:add_parser) failed to load: this needs the "
                           "Python package 'no_such_module_here', which is not installed\n")
    proc = _run(*cli, "codecs", env=env, cwd=tmp_path)
    assert proc.returncode == 0 and "pcm16" in proc.stdout


def test_runtime_wheel_holds_no_benchmarks(tmp_path: Path) -> None:
    src = _source_copy(tmp_path)
    # offline with this environment's setuptools when it is new enough for pyproject.toml's
    # metadata (>= 77); otherwise pip fetches one into an isolated build environment
    setuptools = _run(sys.executable, "-c", "import setuptools; print(setuptools.__version__)")
    recent = setuptools.returncode == 0 and int(setuptools.stdout.split(".")[0]) >= 77
    isolation = ["--no-build-isolation"] if recent else []
    proc = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet", "-w",
                tmp_path / "wheels", src, timeout=300)
    assert proc.returncode == 0, proc.stderr
    [wheel] = (tmp_path / "wheels").glob("voip_codec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"voip_codec", "signaling"}
    assert "voip_codec/codecs/av.py" in names and "voip_codec/cli.py" in names
    assert "voip_codec/codec/kernels.cpp" in names  # the own kernels build from it on first use
    assert not [n for n in names if "bench" in n.lower()], "benchmark code in the runtime wheel"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "voip_codec.cli_plugins" not in zipfile.ZipFile(wheel).read(entry_points).decode()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_extra_runs_cli_and_serve_without_torch(tmp_path: Path) -> None:
    src = _source_copy(tmp_path)
    venv = tmp_path / "venv"
    proc = _run(sys.executable, "-m", "venv", venv)
    assert proc.returncode == 0, proc.stderr
    py, cli = venv / "bin" / "python", venv / "bin" / "voip-codec"
    proc = _run(py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                f"{src}[server]", timeout=480)
    assert proc.returncode == 0, proc.stderr
    for heavy in ("torch", "aiortc", "av"):
        probe = _run(py, "-c", f"import importlib.util as u; assert u.find_spec({heavy!r}) is None")
        assert probe.returncode == 0, f"the server extra installed {heavy}"
    env = {k: v for k, v in os.environ.items() if k != "VOIP_CODEC_SIGNALING_SECRET"}
    scratch = tmp_path / "cwd"  # not the source tree: only the installed package may be found
    scratch.mkdir()

    proc = _run(cli, "--help", cwd=scratch, env=env)
    assert proc.returncode == 0 and "serve" in proc.stdout and "codecs" in proc.stdout
    proc = _run(cli, "serve", "--help", cwd=scratch, env=env)
    assert proc.returncode == 0 and "--port" in proc.stdout
    proc = _run(cli, "codecs", cwd=scratch, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "pcm16" in proc.stdout and "focalcodec-default   unavailable" in proc.stdout
    proc = _run(cli, "bench", "quality", cwd=scratch, env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("voip-codec: error: the benchmarks are not installed")
    assert len(proc.stderr.splitlines()) == 1

    port = _free_port()
    server = subprocess.Popen([str(cli), "serve", "--port", str(port), "--insecure-no-auth"],
                              cwd=scratch, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        body, deadline = None, time.monotonic() + 30
        while body is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.2)
        assert body is not None, f"serve did not answer: {server.poll()=}"
        assert '"status": "ok"' in body
    finally:
        server.terminate()
        try:
            server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
