"""The ``serve`` command's arguments, importable without aiohttp.

``voip-codec`` builds its parser from here, so ``voip-codec --help`` works whatever is installed;
the server itself (:mod:`signaling.server`, which needs aiohttp) is imported only when ``serve``
runs.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from . import protocol as p
from .tokens import SECRET_ENV

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DESCRIPTION", "add_arguments", "add_parser"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8765
DESCRIPTION: Final = "WebSocket signaling relay for voip-codec calls (two peers per room)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server options (host, port, secret, limits) to ``parser``."""
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default: {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--secret-file",
        help=f"file holding the shared token secret (default: ${SECRET_ENV}); "
        "kept off the command line so it does not show in process lists",
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="accept joins without tokens (trusted networks and local tests only)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=p.DEFAULT_MAX_MESSAGE_BYTES,
        help="largest client message",
    )
    parser.add_argument("--max-rooms", type=int, default=1000, help="rooms open at once")
    parser.add_argument("--max-connections", type=int, default=2000, help="WebSockets open at once")
    parser.add_argument("--join-timeout", type=float, default=10.0, help="seconds to send 'join'")
    parser.add_argument(
        "--idle-timeout", type=float, default=300.0, help="seconds a joined peer may be silent"
    )
    parser.add_argument(
        "--heartbeat", type=float, default=20.0, help="WebSocket ping interval in seconds"
    )
    parser.add_argument(
        "--web",
        nargs="?",
        const="",
        default=None,
        metavar="PAGE_DIR",
        help="also serve the browser page (default: examples/browser of this checkout, after "
        "`npm ci` there), its codec model and onnxruntime-web; the log prints the page URL",
    )
    parser.add_argument(
        "--web-model",
        default=None,
        metavar="DIR",
        help="exported model the page runs (`voip-codec export onnx`); default: the bundled "
        "model, exported once into ~/.cache/voip-codec/onnx (needs torch and onnx)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def _serve(args: argparse.Namespace) -> int:
    from .server import serve

    return serve(args)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` sub-command to a parent CLI.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The new sub-parser; its ``func`` runs :func:`signaling.server.serve`, which raises
        ValueError / OSError for configuration errors (the parent CLI prints them).
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="run the WebSocket signaling server", description=DESCRIPTION
    )
    add_arguments(parser)
    parser.set_defaults(func=_serve)
    return parser
