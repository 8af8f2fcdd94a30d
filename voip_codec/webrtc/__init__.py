"""The aiortc plugin: codec frames over an unordered, no-retransmit WebRTC data channel.

``CodecSender`` turns any aiortc audio track into 80 ms codec frames (encoded off the event loop)
and sends them as packets with redundancy; ``CodecReceiverTrack`` is an aiortc audio track that
plays them back through the jitter buffer and the stateful decoder with concealment.
"""
