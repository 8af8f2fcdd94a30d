"""Reading audio frames from any aiortc track."""

from __future__ import annotations

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = ["recv_audio"]


async def recv_audio(track: MediaStreamTrack) -> av.AudioFrame | None:
    """The track's next audio frame, or None when the track has ended.

    Raises:
        TypeError: the track gave something other than audio frames (a video track).
    """
    try:
        frame = await track.recv()
    except MediaStreamError:
        return None
    if not isinstance(frame, av.AudioFrame):
        raise TypeError(f"the track gave {type(frame).__name__}, not audio frames")
    return frame
