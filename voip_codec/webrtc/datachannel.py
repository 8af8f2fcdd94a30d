"""An aiortc data channel as a :class:`~voip_codec.transport.link.Link`.

Open the channel with ``ordered=False, maxRetransmits=0`` so that it behaves like a datagram
path (late is lost, never retransmitted). Our messages are binary: a text message is dropped at
the link and counted in :attr:`DataChannelLink.text_dropped`.
"""

from __future__ import annotations

import logging

from aiortc import RTCDataChannel

from ..transport.link import LinkBase

__all__ = ["DATACHANNEL_MTU", "DataChannelLink"]

logger = logging.getLogger(__name__)

DATACHANNEL_MTU = 65536
"""Largest message every WebRTC peer accepts: the SCTP ``max-message-size`` a peer is assumed
to support when it does not announce one (RFC 8841)."""


class DataChannelLink(LinkBase):
    """Sends and receives datagrams on one data channel.

    Sending before the channel is open or after it closed drops the datagram and counts it in
    :attr:`dropped` (a closing connection must not stop the audio loop).

    Args:
        channel: the aiortc data channel (open or still connecting).
    """

    def __init__(self, channel: RTCDataChannel) -> None:
        super().__init__(f"datachannel:{channel.label}", DATACHANNEL_MTU)
        self.channel = channel
        self.text_dropped = 0
        """Text messages received and dropped."""
        channel.on("message", self._on_message)

    def send(self, data: bytes) -> None:
        """Send one datagram if the channel is open (else drop and count it)."""
        self._check_size(data)
        if self.channel.readyState != "open":
            self.dropped += 1
            return
        self.channel.send(data)

    def close(self) -> None:
        """Close the channel."""
        super().close()
        self.channel.close()

    def _on_message(self, data: bytes | str) -> None:
        if isinstance(data, str):
            self.text_dropped += 1
            logger.debug("%s: dropping a text message", self.name)
            return
        self._receive(data)
