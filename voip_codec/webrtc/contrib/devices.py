"""Microphone and speaker through the optional ``sounddevice`` package."""

from __future__ import annotations

import asyncio
import fractions

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..frames import recv_audio

__all__ = ["AudioDeviceError", "microphone_track", "play_to_speaker"]


class AudioDeviceError(RuntimeError):
    """No usable audio device (or sounddevice is not installed)."""


def _sounddevice():  # type: ignore[no-untyped-def]
    try:
        import sounddevice  # optional: pip install sounddevice (needs PortAudio)
    except (ImportError, OSError) as exc:
        raise AudioDeviceError(
            "microphone/speaker need the optional 'sounddevice' package and PortAudio: "
            "pip install sounddevice (Debian: apt-get install libportaudio2)"
        ) from exc
    try:
        sounddevice.query_devices(kind="input")
    except Exception as exc:  # noqa: BLE001 - PortAudio raises its own error types
        raise AudioDeviceError(f"no audio device available: {exc}") from exc
    return sounddevice


class _MicrophoneTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, rate: int = 48000, block: int = 960) -> None:
        super().__init__()
        sd = _sounddevice()
        self._queue: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=50)
        loop = asyncio.get_event_loop()

        def callback(indata, frames, time_info, status):  # type: ignore[no-untyped-def]
            loop.call_soon_threadsafe(self._put, indata[:, 0].copy())

        self._stream = sd.InputStream(samplerate=rate, channels=1, dtype="int16",
                                      blocksize=block, callback=callback)
        self._stream.start()
        self._rate = rate
        self._pts = 0

    def _put(self, block: np.ndarray) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # drop the oldest rather than grow latency
        self._queue.put_nowait(block)

    async def recv(self):  # type: ignore[no-untyped-def]
        import av

        if self.readyState != "live":
            raise MediaStreamError
        block = await self._queue.get()
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self._rate)
        self._pts += block.shape[0]
        return frame

    def stop(self) -> None:
        super().stop()
        self._stream.stop()
        self._stream.close()


def microphone_track() -> MediaStreamTrack:
    """A live 48 kHz mono microphone track.

    Raises:
        AudioDeviceError: sounddevice missing or no input device.
    """
    return _MicrophoneTrack()


async def play_to_speaker(track: MediaStreamTrack, stop: asyncio.Event) -> None:
    """Play a track's frames on the default output device until ``stop`` is set."""
    sd = _sounddevice()
    with sd.OutputStream(samplerate=48000, channels=1, dtype="int16") as out:
        while not stop.is_set():
            frame = await recv_audio(track)
            if frame is None:
                break
            await asyncio.to_thread(out.write, frame.to_ndarray().reshape(-1, 1))
