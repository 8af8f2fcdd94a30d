"""Official FocalCodec-Stream checkpoints: their names, the local Hugging Face cache, downloads.

Nothing here imports torch: ``voip-codec models list`` only reads the cache folders, and
``voip-codec models pull`` needs only the optional ``huggingface_hub`` (the ``hub`` extra).

The official causal checkpoints are hub repositories holding ``config.json`` and
``model.safetensors`` (older ones ``model.pt``). :func:`pull` downloads exactly those two files
with ``huggingface_hub`` into the standard cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``), where :func:`find_cached` and so
:func:`voip_codec.codec.loading.from_pretrained` find them by short name or repo id. The
endpoint is huggingface_hub's own (``$HF_ENDPOINT``, default ``https://huggingface.co``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

__all__ = [
    "BUNDLED_MODEL_DIR",
    "CONFIG_FILE",
    "OFFICIAL_MODELS",
    "WEIGHTS_FILES",
    "CachedCheckpoint",
    "OfficialModel",
    "PullError",
    "find_cached",
    "hub_cache_dirs",
    "pull",
]

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default_model"
"""The small model shipped inside the package (``--model default``), when this build has it."""

CONFIG_FILE = "config.json"
WEIGHTS_FILES = ("model.safetensors", "model.pt")
"""Weights file names of a checkpoint, in the order they are tried (as the official loader)."""


@dataclass(frozen=True)
class OfficialModel:
    """One released causal checkpoint."""

    name: str
    """Short name used on the command line, e.g. ``focalcodec-65k``."""
    repo_id: str
    """Hugging Face repository, ``owner/name``."""
    kbps: float
    """Token bitrate in kbit/s (50 tokens/s)."""


OFFICIAL_MODELS: dict[str, OfficialModel] = {
    m.name: m for m in (
        OfficialModel("focalcodec-65k", "lucadellalib/focalcodec_50hz_65k_causal", 0.80),
        OfficialModel("focalcodec-4k", "lucadellalib/focalcodec_50hz_4k_causal", 0.60),
        OfficialModel("focalcodec-2k", "lucadellalib/focalcodec_50hz_2k_causal", 0.55),
    )
}
"""The official causal checkpoints by short name."""


class PullError(UserError):
    """A download failed: offline, endpoint unreachable, or repository or file missing."""


@dataclass(frozen=True)
class CachedCheckpoint:
    """A checkpoint present on disk."""

    config: Path
    """Its ``config.json``."""
    weights: Path
    """Its weights file."""

    @property
    def folder(self) -> Path:
        """The folder holding both files (a cache snapshot, or the bundled model's folder)."""
        return self.config.parent

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of config and weights (cache symlinks followed)."""
        return self.config.stat().st_size + self.weights.stat().st_size


def hub_cache_dirs() -> list[Path]:
    """Where the Hugging Face cache may be, in huggingface_hub's own order of precedence.

    Returns:
        ``$HF_HUB_CACHE`` (or its old name ``$HUGGINGFACE_HUB_CACHE``), ``$HF_HOME/hub``,
        ``$XDG_CACHE_HOME/huggingface/hub`` and
        ``~/.cache/huggingface/hub``, those that are set, without repeats. The first is where
        :func:`pull` writes.
    """
    dirs = [Path(os.path.expandvars(os.environ[var]))
            for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE") if os.environ.get(var)]
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    if os.environ.get("XDG_CACHE_HOME"):
        dirs.append(Path(os.environ["XDG_CACHE_HOME"]) / "huggingface" / "hub")
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    unique: list[Path] = []
    for d in dirs:
        d = d.expanduser()
        if d not in unique:
            unique.append(d)
    return unique


def _complete(folder: Path) -> CachedCheckpoint | None:
    if not (folder / CONFIG_FILE).is_file():
        return None
    for name in WEIGHTS_FILES:
        if (folder / name).is_file():
            return CachedCheckpoint(folder / CONFIG_FILE, folder / name)
    return None


def find_cached(repo_id: str, looked: list[str] | None = None) -> CachedCheckpoint | None:
    """Find a complete checkpoint of a hub repository in the local cache, without the network.

    The snapshot that ``refs/main`` names is preferred; otherwise any complete snapshot.

    Args:
        repo_id: ``owner/name``.
        looked: when given, each folder searched is appended (for error messages).

    Returns:
        The checkpoint, or None when no cache holds both files.
    """
    folder = "models--" + repo_id.replace("/", "--")
    for cache in hub_cache_dirs():
        root = cache / folder
        snaps = root / "snapshots"
        if looked is not None:
            looked.append(str(snaps / "*"))
        if not snaps.is_dir():
            continue
        candidates = []
        ref = root / "refs" / "main"
        if ref.is_file():
            candidates.append(snaps / ref.read_text().strip())
        candidates += sorted(p for p in snaps.iterdir() if p.is_dir())
        for snap in candidates:
            found = _complete(snap)
            if found is not None:
                return found
    return None


def bundled() -> CachedCheckpoint | None:
    """The bundled default model, or None when this build has none."""
    return _complete(BUNDLED_MODEL_DIR)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (huggingface_hub's span several)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__


def _explain(exc: Exception, repo_id: str, filename: str, revision: str, endpoint: str) -> str:
    """One line saying why fetching ``filename`` of ``repo_id`` failed and what to do."""
    from huggingface_hub import errors

    if isinstance(exc, errors.OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it and try again"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{endpoint} has no repository {repo_id} (or it is private)"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{repo_id} on {endpoint} has no revision {revision!r}"
    if isinstance(exc, errors.EntryNotFoundError) and not isinstance(
            exc, errors.LocalEntryNotFoundError):
        return f"{repo_id} on {endpoint} has no file {filename} (revision {revision!r})"
    if isinstance(exc, errors.HfHubHTTPError) and exc.response is not None:
        return (f"{endpoint} answered HTTP {exc.response.status_code} for {repo_id}/{filename}; "
                "try again later")
    cause = exc.__cause__ or exc
    return (f"cannot reach the model hub at {endpoint} to download {repo_id} "
            f"({_one_line(cause)}); check the network connection (or HF_ENDPOINT and proxy "
            "settings) and try again")


def _human(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def pull(name: str, *, revision: str = "main", progress: bool = True,
         log: Callable[[str], None] | None = None) -> CachedCheckpoint:
    """Download an official checkpoint into the Hugging Face cache (a no-op when up to date).

    Args:
        name: a short name of :data:`OFFICIAL_MODELS`.
        revision: branch, tag or commit of the repository.
        progress: show huggingface_hub's progress bars (on stderr).
        log: called with a one-line note before downloading (e.g. ``print`` to stderr).

    Returns:
        The cached checkpoint (a snapshot folder of the cache).

    Raises:
        ValueError: ``name`` is not an official model.
        PullError: huggingface_hub is missing, the hub cannot be reached, or the repository,
            revision or a file is not there.
    """
    if name not in OFFICIAL_MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(OFFICIAL_MODELS)}")
    repo_id = OFFICIAL_MODELS[name].repo_id
    try:
        import huggingface_hub as hf
        from huggingface_hub import errors
    except ImportError:
        raise PullError("downloading models needs huggingface_hub: pip install "
                        "'voip-codec[hub]'") from None
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    endpoint = hf.constants.ENDPOINT

    def metadata(filename: str) -> int | None:
        url = hf.hf_hub_url(repo_id, filename, revision=revision)
        # no retries here: an unreachable hub is reported at once, not after a minute of backoff
        return hf.get_hf_file_metadata(url).size

    sizes: dict[str, int | None] = {}
    weights_name = None
    try:
        sizes[CONFIG_FILE] = metadata(CONFIG_FILE)
        for candidate in WEIGHTS_FILES:
            try:
                sizes[candidate] = metadata(candidate)
            except errors.EntryNotFoundError as exc:
                if isinstance(exc, errors.LocalEntryNotFoundError):
                    raise
                continue
            weights_name = candidate
            break
    # the network errors differ between huggingface_hub's HTTP back ends (requests, httpx):
    # every failure becomes one line naming the endpoint, the repository and the file
    except Exception as exc:  # noqa: BLE001
        failed = next((f for f in (CONFIG_FILE, *WEIGHTS_FILES) if f not in sizes), CONFIG_FILE)
        raise PullError(_explain(exc, repo_id, failed, revision, endpoint)) from exc
    if weights_name is None:
        raise PullError(f"{repo_id} on {endpoint} has neither {' nor '.join(WEIGHTS_FILES)} "
                        f"(revision {revision!r})")
    total = sum(s or 0 for s in sizes.values())
    if log is not None:
        log(f"pulling {name} ({repo_id}, {_human(total)}) from {endpoint} into "
            f"{hf.constants.HF_HUB_CACHE}")
    if not progress:
        disable_progress_bars()
    paths = {}
    try:
        for filename in (CONFIG_FILE, weights_name):
            try:
                paths[filename] = Path(hf.hf_hub_download(repo_id, filename, revision=revision))
            except Exception as exc:  # noqa: BLE001 - as above
                raise PullError(_explain(exc, repo_id, filename, revision, endpoint)) from exc
    finally:
        if not progress:
            enable_progress_bars()
    return CachedCheckpoint(paths[CONFIG_FILE], paths[weights_name])
