"""Links: what moves datagrams between two endpoints, knowing nothing of codecs.

A :class:`Link` sends ``bytes`` and hands every datagram it receives to one handler set with
:meth:`Link.set_receiver`. Sending is best effort, like UDP: a datagram the link cannot send now
(closed, not yet open) is dropped and counted by the link, never raised. The sessions in
:mod:`voip_codec.transport.session` run over any link:

* :class:`MemoryLink`: the two ends of an in-memory path (:func:`memory_link_pair`), optionally
  through a seeded :class:`~voip_codec.transport.netsim.NetworkSimulator` per direction, driven
  by a :class:`SimClock` the caller advances (deterministic; used by ``simulate`` and tests);
* :class:`CallbackLink`: a send function plus datagrams the owner hands in with
  :meth:`CallbackLink.deliver` (for code that already has both, e.g. a socket's callbacks);
* :class:`~voip_codec.webrtc.datachannel.DataChannelLink`: an aiortc data channel.

A new transport (UDP, serial, an encrypting wrapper around another link) is one class with these
five members; every session test can then run over it.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .netsim import NetworkConditions, NetworkSimulator

__all__ = [
    "CallbackLink",
    "DatagramHandler",
    "Link",
    "LinkBase",
    "MemoryLink",
    "SimClock",
    "memory_link_pair",
]

logger = logging.getLogger(__name__)

DatagramHandler = Callable[[bytes], None]
"""Called with each received datagram."""

MAX_DATAGRAM = 65507
"""Largest UDP payload over IPv4; the default MTU of the in-memory and callback links."""


@runtime_checkable
class Link(Protocol):
    """A datagram path to one peer."""

    @property
    def name(self) -> str:
        """Short name for logs and stats (e.g. ``"datachannel:voip-codec/pcm16"``)."""
        ...

    @property
    def mtu(self) -> int:
        """Largest datagram, in bytes, this link carries."""
        ...

    def send(self, data: bytes) -> None:
        """Send one datagram, best effort (dropped and counted, never raised, when it cannot
        go out now).

        Raises:
            ValueError: ``data`` is longer than :attr:`mtu`.
        """
        ...

    def set_receiver(self, handler: DatagramHandler | None) -> None:
        """Hand every received datagram to ``handler`` (None: drop them)."""
        ...

    def close(self) -> None:
        """Stop sending and receiving (idempotent)."""
        ...


class LinkBase:
    """What every link here shares: its name and MTU, the receiver, the closed flag and the
    count of datagrams it could not send.

    Args:
        name: name for logs.
        mtu: largest datagram in bytes.
    """

    def __init__(self, name: str, mtu: int) -> None:
        self._name = name
        self._mtu = mtu
        self._handler: DatagramHandler | None = None
        self.closed = False
        self.dropped = 0
        """Datagrams not sent (link closed or not open, or the transport failed)."""

    @property
    def name(self) -> str:
        """See :class:`Link`."""
        return self._name

    @property
    def mtu(self) -> int:
        """See :class:`Link`."""
        return self._mtu

    def set_receiver(self, handler: DatagramHandler | None) -> None:
        """See :class:`Link`."""
        self._handler = handler

    def close(self) -> None:
        """See :class:`Link`."""
        self.closed = True

    def _check_size(self, data: bytes) -> None:
        if len(data) > self._mtu:
            raise ValueError(f"{self._name}: datagram of {len(data)} bytes exceeds the link "
                             f"MTU of {self._mtu}")

    def _receive(self, data: bytes) -> None:
        """Hand one received datagram to the receiver (dropped when none is set or closed)."""
        if self._handler is not None and not self.closed:
            self._handler(data)


class SimClock:
    """Simulated time in seconds, shared by the ends of a memory link pair.

    Args:
        now: start time in seconds.
    """

    def __init__(self, now: float = 0.0) -> None:
        self.now = now


class MemoryLink(LinkBase):
    """One end of an in-memory datagram path (make pairs with :func:`memory_link_pair`).

    A datagram sent at ``clock.now`` goes through this end's outgoing :attr:`path` (if any) and
    waits in the other end's inbox until that end's :meth:`deliver` reaches its arrival time.

    Args:
        name: name for logs.
        clock: the pair's shared clock.
        path: impairments of the outgoing direction (None: arrives at the send time).
        mtu: largest datagram in bytes.
    """

    def __init__(self, name: str, clock: SimClock, path: NetworkSimulator | None = None,
                 mtu: int = MAX_DATAGRAM) -> None:
        super().__init__(name, mtu)
        self.clock = clock
        self.path = path
        """The outgoing direction's simulator (its ``stats`` count what the network did)."""
        self.peer: MemoryLink | None = None
        self._inbox: list[tuple[float, int, bytes]] = []  # heap of (arrival, order, datagram)
        self._order = 0

    def send(self, data: bytes) -> None:
        """Send one datagram at ``clock.now`` (see :class:`Link`); after either end closed it
        is dropped and counted."""
        self._check_size(data)
        peer = self.peer
        if self.closed or peer is None or peer.closed:
            self.dropped += 1
            return
        now = self.clock.now
        deliveries = self.path.send(now, bytes(data)) if self.path is not None else [
            (now, bytes(data))]
        for when, datagram in deliveries:
            heapq.heappush(peer._inbox, (when, peer._order, datagram))
            peer._order += 1

    def deliver(self, until: float) -> int:
        """Hand the datagrams that arrive by ``until`` to the receiver, in arrival order.

        While the receiver handles a datagram, ``clock.now`` is that datagram's arrival time;
        afterwards it is ``until``.

        Args:
            until: simulated time in seconds.

        Returns:
            The number of datagrams delivered (or dropped, when no receiver is set).
        """
        count = 0
        while self._inbox and self._inbox[0][0] <= until + 1e-9:
            when, _, datagram = heapq.heappop(self._inbox)
            count += 1
            self.clock.now = when
            self._receive(datagram)
        self.clock.now = until
        return count

    @property
    def in_flight(self) -> int:
        """Datagrams waiting in this end's inbox."""
        return len(self._inbox)

    def close(self) -> None:
        """See :class:`Link`; datagrams still in flight to this end are discarded."""
        super().close()
        self._inbox.clear()


def memory_link_pair(forward: NetworkConditions | None = None,
                     reverse: NetworkConditions | None = None, *, seed: int = 0,
                     clock: SimClock | None = None,
                     mtu: int = MAX_DATAGRAM) -> tuple[MemoryLink, MemoryLink]:
    """Two connected in-memory link ends ``(a, b)``.

    Args:
        forward: impairments of ``a -> b`` (None: instant and lossless).
        reverse: impairments of ``b -> a`` (None: instant and lossless).
        seed: seed of the ``a -> b`` simulator; ``b -> a`` uses ``seed + 1``.
        clock: the shared clock (default: a new one at 0 s).
        mtu: largest datagram in bytes.

    Returns:
        The two ends; ``a.clock is b.clock``.
    """
    clock = clock if clock is not None else SimClock()
    a = MemoryLink("memory:a", clock,
                   NetworkSimulator(forward, seed=seed) if forward is not None else None, mtu)
    b = MemoryLink("memory:b", clock,
                   NetworkSimulator(reverse, seed=seed + 1) if reverse is not None else None,
                   mtu)
    a.peer, b.peer = b, a
    return a, b


class CallbackLink(LinkBase):
    """A link made of a send function and datagrams handed in by its owner.

    Args:
        send: sends one datagram (e.g. a socket's or channel's send); an exception it raises
            is logged and counted in :attr:`dropped`, so a closing transport cannot stop the
            audio loop.
        name: name for logs.
        mtu: largest datagram in bytes.
    """

    def __init__(self, send: Callable[[bytes], None], *, name: str = "callback",
                 mtu: int = MAX_DATAGRAM) -> None:
        super().__init__(name, mtu)
        self._send = send

    def send(self, data: bytes) -> None:
        """See :class:`Link`."""
        self._check_size(data)
        if self.closed:
            self.dropped += 1
            return
        try:
            self._send(data)
        except Exception as exc:  # noqa: BLE001 - best effort: a failed send is a lost datagram
            self.dropped += 1
            logger.debug("%s: send failed: %s", self._name, exc)

    def deliver(self, data: bytes) -> None:
        """Hand one received datagram to the receiver (dropped when none is set or closed)."""
        self._receive(data)
