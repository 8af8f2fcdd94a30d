"""``voip-codec bench wire --quick``: real full-duplex calls on 127.0.0.1, bytes counted at the
sockets (stock vs tuned data channel, ICE/UDP) or on the simulated serial line."""

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
    assert {r["link"] for r in quick["rows"]} == set(LINKS)
    assert quick["pending"] == []
    for r in quick["rows"]:
        if not r["link"].startswith("datachannel"):
            continue
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


def test_encrypted_ice_fits_5_kbit_per_direction(quick: dict[str, Any]) -> None:
    """Issue 12: <= 5 kbit/s per direction with IPv4 + UDP headers, loss reports and consent:
    49 bytes per packet (28 + 4 + 8 + 1 counter byte + 8-byte tag) x 12.5/s = 4.9 kbit/s, the
    reports riding on audio, and no STUN once encryption keeps consent."""
    r = _row(quick, "ice-udp")
    assert r["e2e"] is True
    for d in ("forward", "back"):
        x = r[d]
        assert x["consent"] == "authenticated-traffic"
        assert x["stun_kbps"] == 0 and x["counts"]["stun_datagrams"] == 0
        assert x["wire_kbps"] == pytest.approx(x["data_kbps"])
        packets = x["counts"]["by_kind"]["data"][0]
        assert packets > 0
        # every datagram: 28 + 12 (+ 8 bytes of report on one in 12) + 9 bytes of encryption
        # (a report sent alone, 18 + 28 bytes, would pull the mean down by about one byte)
        per_datagram = x["counts"]["udp_bytes"] / packets + 28
        assert 48 <= per_datagram <= 49 + 8 * 2 / 12 + 0.5
        # the 5 kbit/s budget at the nominal 12.5 packets/s (a 3 s window sees one packet
        # more or less at its edges, so the rate itself is checked per packet)
        assert per_datagram * 8 * 12.5 / 1000 <= 5.0


def test_serial_row_has_line_rate_and_lowest_rate(quick: dict[str, Any]) -> None:
    """Encrypted, one 8-byte frame per packet: 4 + 8 + 8 bytes (no counter on an in-order
    line) + KISS framing = 24 bytes per 80 ms = 3.0 kbit/s of 8N1 line; it holds at 3600 bit/s,
    not at 2400."""
    r = _row(quick, "serial")
    assert r["e2e"] is True
    for d in ("forward", "back"):
        x = r[d]
        assert 2.6 <= x["wire_kbps"] <= 3.3
        assert x["lowest_rate"] == 3600
        assert x["stun_kbps"] == 0


def test_table_lists_every_link(quick: dict[str, Any]) -> None:
    table = format_table(quick)
    for name in LINKS:
        assert name in table
    assert "SACK-only" in table and "3600 bit/s" in table


@pytest.mark.parametrize("argv,message", [
    (["--seconds", "0"], "--seconds must be > 0"),
    (["--redundancy", "5"], "--redundancy 0..3"),
])
def test_bad_options_fail_in_one_line(argv: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "wire", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
