"""``voip-codec bench wire --quick``: real full-duplex calls on 127.0.0.1, bytes counted at the
sockets, stock vs tuned data channel."""

from __future__ import annotations

import json
from typing import Any

import pytest

from voip_codec.cli import main
from voip_codec_bench.wire_bench import LINKS, format_table


@pytest.fixture(scope="module")
def quick() -> dict[str, Any]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["bench", "wire", "--quick", "--json"]) == 0
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def _row(result: dict[str, Any], link: str) -> dict[str, Any]:
    rows = [r for r in result["rows"] if r["link"] == link]
    assert len(rows) == 1
    return rows[0]


def test_quick_run_measures_both_data_channels(quick: dict[str, Any]) -> None:
    assert quick["full_duplex"] is True
    assert {r["link"] for r in quick["rows"]} == {"datachannel-stock", "datachannel-tuned"}
    assert {p["link"] for p in quick["pending"]} == {"ice-udp", "serial"}
    for r in quick["rows"]:
        assert (r["frames_per_packet"], r["redundancy"]) == (1, 0)
        for d in ("forward", "back"):
            x = r[d]
            # 12.5 packets/s of one 80 ms frame (fewer when a loaded machine slows the encoder
            # down), header included: a few kbit/s
            assert 6.0 <= x["packets_per_s"] <= 13.5
            assert 1.0 < x["packet_kbps"] < 4.0
            assert x["wire_kbps"] > 3 * x["packet_kbps"]
            # the split adds up to what the sockets saw
            parts = x["data_kbps"] + x["sack_kbps"] + x["stun_kbps"] + x["other_kbps"]
            assert parts == pytest.approx(x["wire_kbps"], abs=0.02)
            # the other peer's sockets received what this one's sent (loopback loses nothing;
            # a datagram may be in flight at either end of the window)
            c = x["counts"]
            assert abs(c["delivered_datagrams"] - c["datagrams"]) <= 3
            # DTLS adds the same bytes to every record (37 with AES-GCM)
            assert float(x["dtls_overhead_bytes"]).is_integer()
            assert 20 <= x["dtls_overhead_bytes"] <= 64


def test_tuned_channel_sends_no_sack_only_packets(quick: dict[str, Any]) -> None:
    stock, tuned = _row(quick, "datachannel-stock"), _row(quick, "datachannel-tuned")
    for d in ("forward", "back"):
        s, t = stock[d], tuned[d]
        data_packets = s["counts"]["by_kind"]["data"][0]
        assert s["sack_packets"] >= 0.9 * data_packets  # aiortc: a SACK per packet
        assert s["bundled_sacks"] == 0
        tuned_data_packets = t["counts"]["by_kind"]["data"][0]
        assert t["sack_packets"] <= 2 + 0.1 * tuned_data_packets  # measured: 0
        assert t["bundled_sacks"] >= 0.3 * tuned_data_packets  # measured: every second one
        # wire bytes per audio packet (loss reports, SACKs and consent included): 232 stock,
        # 139 tuned in the 10 s runs of docs/transport.md
        per_packet = {k: r[d]["wire_kbps"] * 1000 / 8 / r[d]["packets_per_s"]
                      for k, r in (("stock", stock), ("tuned", tuned))}
        assert per_packet["tuned"] < 0.8 * per_packet["stock"]
        assert per_packet["tuned"] <= 160


def test_table_lists_every_link(quick: dict[str, Any]) -> None:
    table = format_table(quick)
    for name in LINKS:
        assert name in table
    assert "pending" in table and "SACK-only" in table


@pytest.mark.parametrize("argv,message", [
    (["--seconds", "0"], "--seconds must be > 0"),
    (["--redundancy", "5"], "--redundancy 0..3"),
])
def test_bad_options_fail_in_one_line(argv: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "wire", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
