"""Regenerate the golden packet files in ``tests/golden/packets`` (not run by the tests).

Usage: ``python tests/golden/make_golden_packets.py``. The tests compare against the committed
bytes, so run this only when the wire format changes on purpose (and bump its version).
"""

from __future__ import annotations

from pathlib import Path

from voip_codec.wire.packet import FLAG_START, AudioPacket, LossReport

OUT = Path(__file__).resolve().parent / "packets"


def build() -> dict[str, bytes]:
    """File name -> bytes of every golden packet."""
    frames = [bytes([0x10 + i] * 7) for i in range(4)]
    audio = AudioPacket(codec_id=16, seq=65535, frame_index=0xFFFFFFFE, frames=(frames[3],),
                        redundant=(frames[1], frames[2]), flags=FLAG_START).to_bytes()
    bundle = AudioPacket(codec_id=32, seq=7, frame_index=12, frames=(b"\xab" * 6, b"\xcd" * 6,
                         b"\xef" * 6)).to_bytes()
    report = LossReport(report_seq=3, highest_seq=1234, expected=12, received=10,
                        loss_rate=2 / 12, mean_burst=2.0, residual_loss=0.0, jitter_ms=17,
                        playout_delay_ms=160).to_bytes()
    return {
        "audio_valid.bin": audio,
        "audio_bundle_valid.bin": bundle,
        "report_valid.bin": report,
        "audio_truncated.bin": audio[:-3],
        "audio_header_truncated.bin": audio[:10],
        "audio_bad_length.bin": audio + b"\x00",
        "audio_wrong_version.bin": audio[:2] + b"\x02" + audio[3:],
        "audio_bad_magic.bin": b"RT" + audio[2:],
        "audio_bad_redundancy.bin": audio[:15] + b"\x04" + audio[16:],
        "audio_reserved_flags.bin": audio[:5] + b"\x81" + audio[6:],
        "unknown_type.bin": audio[:3] + b"\x09" + audio[4:],
        "report_truncated.bin": report[:-1],
        "report_bad_length.bin": report + b"\x00\x00",
        "empty_truncated.bin": b"VC",
    }


def main() -> None:
    """Write every golden file."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in build().items():
        (OUT / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
