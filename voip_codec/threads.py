"""Torch thread count of the commands that run the model (``--threads``).

The bundled model is small: one 80 ms frame takes a few milliseconds on one core, and more
threads only add synchronisation. On a loaded 2-core machine 2 threads made ``voip-codec
encode`` 12 times slower than 1 (55.8 s against 4.7 s for 8 s of audio) and ``conformance``
stall, because each thread waits for the other at every operation while the other is
descheduled. Every command that runs the model therefore defaults to 1 thread; ``--threads N``
gives more to a large model on an idle machine.

This module imports no torch: commands that end up without the model (Codec2, Opus) never load
it.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["DEFAULT_THREADS", "add_threads_argument", "apply_threads", "thread_count"]

DEFAULT_THREADS = 1
"""Torch threads of every command that runs the model, unless ``--threads`` says otherwise."""


def thread_count(text: str) -> int:
    """argparse type of ``--threads``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of threads: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--threads must be >= 1, got {text}")
    return value


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads`` (default :data:`DEFAULT_THREADS`)."""
    parser.add_argument("--threads", type=thread_count, default=DEFAULT_THREADS,
                        help=f"torch threads for the model (default {DEFAULT_THREADS}: the "
                             "small model is fastest on one core, and more threads stall on a "
                             "loaded machine)")


def apply_threads(threads: int, *, load_torch: bool = False) -> None:
    """Set torch's intra-op thread count.

    Args:
        threads: the count (>= 1).
        load_torch: import torch to set it; otherwise it is set only if torch is loaded
            already (a command whose codec needs no torch does not pay for importing it).
    """
    if load_torch or "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
