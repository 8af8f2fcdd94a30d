"""A small Hugging Face hub on 127.0.0.1 for download tests (a real HTTP server, no mocks).

It answers the requests ``huggingface_hub.hf_hub_download`` and ``get_hf_file_metadata`` make:
``HEAD`` and ``GET /{owner}/{name}/resolve/{revision}/{filename}``, with the headers the client
reads (``X-Repo-Commit``, ``ETag``, ``Content-Length``, ``Accept-Ranges`` and byte ranges on
``GET``) and, for misses, the ``X-Error-Code`` values it maps to its exceptions
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``). Every request is recorded.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote

__all__ = ["HubRepo", "LocalHub"]

_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class HubRepo:
    """One model repository: its files at a single commit."""

    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    """The 40-hex commit that ``main`` points at."""


@dataclass
class LocalHub:
    """Serve ``repos`` (``owner/name`` -> :class:`HubRepo`) on 127.0.0.1 in a thread.

    Use as a context manager; :attr:`endpoint` is the value for ``HF_ENDPOINT``.
    """

    repos: dict[str, HubRepo]
    requests: list[tuple[str, str]] = field(default_factory=list)
    """``(method, path)`` of every request served."""

    def __post_init__(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # quiet test output

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                hub._answer(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((h.command, h.path))
        m = _RESOLVE.match(unquote(h.path.split("?", 1)[0]))
        repo = self.repos.get(m.group(1)) if m else None
        if m is None or repo is None:
            return self._miss(h, "RepoNotFound", "Repository not found", None)
        revision, filename = m.group(2), m.group(3)
        if revision not in ("main", repo.commit):
            return self._miss(h, "RevisionNotFound", "Invalid rev id", repo.commit)
        data = repo.files.get(filename)
        if data is None:
            return self._miss(h, "EntryNotFound", "Entry not found", repo.commit)
        start, end = 0, len(data)
        status = 200
        ranged = _RANGE.match(h.headers.get("Range", ""))
        if body and ranged:
            start = int(ranged.group(1))
            end = int(ranged.group(2)) + 1 if ranged.group(2) else len(data)
            status = 206
        h.send_response(status)
        h.send_header("X-Repo-Commit", repo.commit)
        h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(end - start))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        h.end_headers()
        if body:
            h.wfile.write(data[start:end])

    def _miss(self, h: BaseHTTPRequestHandler, code: str, message: str,
              commit: str | None) -> None:
        h.send_response(404)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        if commit is not None:
            h.send_header("X-Repo-Commit", commit)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def __enter__(self) -> LocalHub:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
