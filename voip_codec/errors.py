"""Errors the user can fix, shared by every command (standard library only).

The CLI prints a :class:`UserError` as one line ``voip-codec: error: <message>`` and exits with
status 1, so each message says what went wrong and what to do, on one line.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["UserError", "check_output_path"]


class UserError(Exception):
    """Bad input or a missing resource the user can fix (one-line message, exit status 1)."""


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Check, before any work is done, that ``path`` can be created: its folder must exist.

    Args:
        path: file the command will write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        UserError: the folder does not exist, is not a folder, or ``path`` is a folder.
    """
    out = Path(path)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.exists():
        raise UserError(f"output folder {folder} does not exist (create it first, or write "
                        "somewhere else)")
    if not folder.is_dir():
        raise UserError(f"output folder {folder} is not a folder")
    if out.is_dir():
        raise UserError(f"output {out} is a folder; give a file name")
    return out
