"""Regenerate the golden packet files of version 2 in ``tests/unit/golden/packets_v2`` (not run by
the tests).

Usage: ``python tests/unit/golden/make_golden_packets_v2.py``. The tests compare against the
committed bytes, so run this only when the v2 wire format changes on purpose.
"""

from __future__ import annotations

from pathlib import Path

from voip_codec.wire.compact import CompactAudioPacket, CompactLossReport
from voip_codec.wire.packet import FLAG_END, FLAG_SILENCE, FLAG_START

OUT = Path(__file__).resolve().parent / "packets_v2"


def build() -> dict[str, bytes]:
    """File name -> bytes of every golden v2 packet."""
    common = CompactAudioPacket(seq=0xABC, frame_index=0x123, frames=(b"\x5a\xa5",)).to_bytes()
    start = CompactAudioPacket(seq=4095, frame_index=4094, frames=(b"\x13" * 7,),
                               redundant=(b"\x11" * 7, b"\x12" * 7),
                               flags=FLAG_START | FLAG_SILENCE, codec_id=16).to_bytes()
    report = CompactLossReport(report_seq=3, expected=12, received=10, loss_q=43, burst_q=32,
                               residual_q=0, jitter_ms=17, playout_4ms=40)
    bundle = CompactAudioPacket(seq=7, frame_index=12, frames=(b"\xab" * 6, b"\xcd" * 6,
                                                               b"\xef" * 6),
                                flags=FLAG_END, report=report).to_bytes()
    alone = report.to_bytes()
    return {
        "v2_audio_valid.bin": common,
        "v2_audio_start_valid.bin": start,
        "v2_audio_bundle_report_valid.bin": bundle,
        "v2_report_valid.bin": alone,
        "v2_audio_header_truncated.bin": common[:3],
        "v2_audio_truncated.bin": start[:8],
        "v2_audio_bad_length.bin": bundle + b"\x00",
        "v2_ext_truncated.bin": start[:4],
        "v2_codec_truncated.bin": start[:5],
        "v2_bundle_truncated.bin": bundle[:5],
        "v2_piggyback_truncated.bin": bundle[:10],
        "v2_report_truncated.bin": alone[:-1],
        "v2_report_bad_length.bin": alone + b"\x00",
        "v2_report_reserved_bits.bin": b"\xa1" + alone[1:],
        "v2_ext_reserved_bits.bin": start[:4] + bytes([start[4] | 0x01]) + start[5:],
        "v2_ext_empty.bin": start[:4] + b"\x00" + start[5:],
        "v2_bundle_of_one.bin": bytes([common[0] | 0x10]) + common[1:4]
        + b"\x10\x00" + common[4:],
        "v2_bundle_reserved_bits.bin": bundle[:5] + bytes([bundle[5] | 0x20]) + bundle[6:],
        "v2_start_without_codec.bin": start[:4] + b"\x80" + start[6:],
        "v2_unknown_version.bin": bytes([0xC0]) + common[1:],
    }


def main() -> None:
    """Write every golden file."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in build().items():
        (OUT / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes {data.hex()}")


if __name__ == "__main__":
    main()
