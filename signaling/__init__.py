"""WebSocket signaling server and client for voip-codec calls (no torch needed).

Modules:

* :mod:`signaling.protocol`: message types, error codes and field checks (stdlib only).
* :mod:`signaling.tokens`: HMAC-SHA256 join tokens (stdlib only).
* :mod:`signaling.server`: aiohttp relay with two-peer rooms, ``/ws`` and ``/health``.
* :mod:`signaling.client`: async :class:`~signaling.client.SignalingClient` for peers.

Only aiohttp and the standard library are needed (the ``server`` extra); importing this
package never pulls in torch, numpy, aiortc or av. See docs/signaling.md.
"""
