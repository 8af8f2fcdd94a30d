"""Host ICE candidates on the loopback interface.

aioice leaves 127.0.0.1 out of its host candidates, so two aiortc peers on a machine without
another usable interface (a closed CI box, a network namespace with only ``lo``) cannot connect.
:func:`loopback_candidates` makes ICE gather 127.0.0.1 only, for calls that stay on this machine
(tests, the demo, calls through the local impairment relay).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aioice.ice

__all__ = ["loopback_candidates"]

_ORIGINAL = aioice.ice.get_host_addresses


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


@contextlib.contextmanager
def loopback_candidates() -> Iterator[None]:
    """While active, ICE gathers only a 127.0.0.1 host candidate (restored on exit)."""
    aioice.ice.get_host_addresses = _loopback_only
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = _ORIGINAL
