"""An aiortc data channel as a :class:`~voip_codec.transport.link.Link`.

Open the channel with ``ordered=False, maxRetransmits=0`` so that it behaves like a datagram
path (late is lost, never retransmitted). Our messages are binary: a text message is dropped at
the link and counted in :attr:`DataChannelLink.text_dropped`.
"""

from __future__ import annotations

import logging

from aiortc import RTCDataChannel

from ..transport.link import DatagramHandler

__all__ = ["DATACHANNEL_MTU", "DataChannelLink"]

logger = logging.getLogger(__name__)

DATACHANNEL_MTU = 65536
"""Largest message every WebRTC peer accepts: the SCTP ``max-message-size`` a peer is assumed
to support when it does not announce one (RFC 8841)."""


class DataChannelLink:
    """Sends and receives datagrams on one data channel.

    Sending before the channel is open or after it closed drops the datagram and counts it in
    :attr:`dropped` (a closing connection must not stop the audio loop).

    Args:
        channel: the aiortc data channel (open or still connecting).
    """

    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self._handler: DatagramHandler | None = None
        self.dropped = 0
        """Datagrams not sent because the channel was not open."""
        self.text_dropped = 0
        """Text messages received and dropped."""
        channel.on("message", self._on_message)

    @property
    def name(self) -> str:
        """``datachannel:<label>``."""
        return f"datachannel:{self.channel.label}"

    @property
    def mtu(self) -> int:
        """See :data:`DATACHANNEL_MTU`."""
        return DATACHANNEL_MTU

    def send(self, data: bytes) -> None:
        """Send one datagram if the channel is open (else drop and count it)."""
        if len(data) > DATACHANNEL_MTU:
            raise ValueError(f"{self.name}: datagram of {len(data)} bytes exceeds the link MTU "
                             f"of {DATACHANNEL_MTU}")
        if self.channel.readyState != "open":
            self.dropped += 1
            return
        self.channel.send(data)

    def set_receiver(self, handler: DatagramHandler | None) -> None:
        """See :class:`~voip_codec.transport.link.Link`."""
        self._handler = handler

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def _on_message(self, data: bytes | str) -> None:
        if isinstance(data, str):
            self.text_dropped += 1
            logger.debug("%s: dropping a text message", self.name)
            return
        if self._handler is not None:
            self._handler(data)
