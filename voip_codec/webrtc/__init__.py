"""The aiortc plugin: codec frames over an unordered, no-retransmit WebRTC data channel.

``CodecSender`` turns any aiortc audio track into 80 ms codec frames (encoded off the event loop)
and hands them to a ``SendSession``; ``CodecReceiverTrack`` is an aiortc audio track that plays
what its ``ReceiveSession`` (jitter buffer, stateful decoder with concealment) gives it. The data
channel is a ``Link`` (``datachannel.DataChannelLink``); see ``voip_codec.transport.session``.
"""
