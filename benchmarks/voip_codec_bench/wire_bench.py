"""``voip-codec bench wire``: what a full-duplex call costs on the wire, per link and setting.

For each link (one entry of :data:`LINKS`), frames per packet and redundancy K, two peers in this
process call each other over 127.0.0.1, both sending speech (the bundled sample, looped) for a
fixed time after a warm-up, and every UDP datagram each peer sends is counted at its socket.
Reported per direction (both directions are measured; they differ only by timing):

* ``packet_kbps``: our packets as handed to the link (codec payload + our packet header + K
  copies), the codec's own rate being ``codec_kbps``;
* ``wire_kbps``: all UDP datagrams the peer sent, + 28 bytes of IPv4 and UDP header each;
* its split: ``data_kbps`` (packets that carry our audio or loss reports, with any SACK
  bundled in them), ``sack_kbps`` (SACK-only packets), ``stun_kbps`` (ICE consent checks and
  their answers), ``other_kbps`` (FORWARD TSN, heartbeats and other SCTP control).

Data-channel links: the SCTP packets are classified as they enter DTLS
(:class:`~voip_codec.webrtc.sctp.SctpPacketCounter`) and the DTLS application-data datagrams are
counted at the socket; the per-record DTLS overhead (``dtls_overhead_bytes``, 37 with AES-GCM) is
the measured difference, so the split adds up to the measured total.

This module stays light (no aiortc, av or torch at import) so that ``voip-codec --help`` does
not load them; each link's measurement lives in its own module (``wire_datachannel``).

ICE/UDP (:mod:`.wire_links`): every datagram of each peer's ICE agent is counted at its
socket, split into our datagrams (``data_kbps``) and STUN (``stun_kbps``: consent checks and
answers; none when end-to-end encryption keeps consent).

Serial (:mod:`.wire_links`): the "wire" is the line: bytes as the simulated UART delivers them
(KISS framing, CRC and stuffing included) at 10 bits per byte (8N1), so ``wire_kbps`` is the
line rate the direction occupies, and ``lowest_rate`` the lowest usual serial rate at which the
full-duplex call holds.

Encryption: each configuration runs with end-to-end encryption on (the default of every call)
and, with ``--e2e on off``, off as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from voip_codec.codecs.base import Codec

__all__ = ["LINKS", "CountingSocket", "DirectionCounts", "WireConfig", "WireLink", "measure",
           "run"]

IP_UDP_BYTES = 28
"""IPv4 (20) + UDP (8) header bytes added to every datagram."""

STUN_COOKIE = bytes.fromhex("2112a442")
"""Bytes 4..7 of every STUN message (RFC 5389)."""


@dataclass(frozen=True)
class WireConfig:
    """One configuration of a call."""

    frames_per_packet: int = 1
    redundancy: int = 0
    seconds: float = 10.0
    """Measured time (after the warm-up)."""
    warmup_s: float = 1.0
    """Seconds of the call before counting starts (handshake, jitter-buffer start)."""
    e2e: bool = True
    """End-to-end encryption."""


@dataclass
class DirectionCounts:
    """Bytes and datagrams one peer sent in the measured window."""

    datagrams: int = 0
    udp_bytes: int = 0
    stun_datagrams: int = 0
    stun_bytes: int = 0
    dtls_app_datagrams: int = 0
    dtls_app_bytes: int = 0
    other_datagrams: int = 0
    other_bytes: int = 0
    by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)
    """SCTP (or link) packet kind -> (packets, bytes before DTLS)."""
    packets: int = 0
    """Our packets handed to the link."""
    packet_bytes: int = 0
    delivered_datagrams: int = 0
    """Datagrams the other peer's sockets received (a cross-check of ``datagrams``)."""
    delivered_bytes: int = 0
    consent: str = ""
    """ICE: how consent was kept (``stun`` or ``authenticated-traffic``)."""
    lowest_rate: int | None = None
    """Serial: the lowest line rate (bit/s) at which the call held (None: not found)."""


class CountingSocket:
    """Stands in for a datagram protocol's transport (an aioice ``StunProtocol``'s): counts
    what is sent, by kind, and what is received.

    Use :meth:`install`, which also wraps the protocol's ``datagram_received``.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.datagrams = 0
        self.bytes = 0
        self.stun = [0, 0]
        self.dtls_app = [0, 0]
        self.other = [0, 0]
        self.received = [0, 0]

    @classmethod
    def install(cls, protocol: Any) -> CountingSocket:
        """Count everything ``protocol`` (an ``asyncio.DatagramProtocol`` with a
        ``transport`` attribute) sends and receives from now on."""
        counting = cls(protocol.transport)
        protocol.transport = counting
        inner_received = protocol.datagram_received

        def datagram_received(data: bytes, addr: Any) -> None:
            counting.received[0] += 1
            counting.received[1] += len(data)
            inner_received(data, addr)

        protocol.datagram_received = datagram_received
        return counting

    def reset(self) -> None:
        self.datagrams = self.bytes = 0
        self.stun, self.dtls_app, self.other = [0, 0], [0, 0], [0, 0]
        self.received = [0, 0]

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.datagrams += 1
        self.bytes += len(data)
        first = data[0] if data else 255
        # RFC 7983 demultiplexing: 0-3 STUN, 20-63 DTLS (23: application data); STUN also has
        # its magic cookie (an encrypted datagram of ours may start with any byte)
        stun = first < 4 and data[4:8] == STUN_COOKIE
        bucket = self.stun if stun else self.dtls_app if first == 23 else self.other
        bucket[0] += 1
        bucket[1] += len(data)
        self._inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


Measure = Callable[[Codec, WireConfig], Awaitable[dict[str, DirectionCounts]]]


@dataclass(frozen=True)
class WireLink:
    """One link of the benchmark table."""

    name: str
    description: str
    measure: Measure | None
    """Runs one configuration; None while the link is not in this tree."""
    pending: str = ""
    """Why there is no measurement yet (when ``measure`` is None)."""
    header_bytes: int = IP_UDP_BYTES
    """Bytes the network adds to every datagram (0 on a serial line: framing is counted)."""
    bits_per_byte: int = 8
    """Line bits per byte (10 on an 8N1 serial line)."""


async def _stock(codec: Codec, config: WireConfig) -> dict[str, DirectionCounts]:
    from .wire_datachannel import measure_datachannel

    return await measure_datachannel(codec, config, sack_tuning=False)


async def _tuned(codec: Codec, config: WireConfig) -> dict[str, DirectionCounts]:
    from .wire_datachannel import measure_datachannel

    return await measure_datachannel(codec, config, sack_tuning=True)


async def _ice(codec: Codec, config: WireConfig) -> dict[str, DirectionCounts]:
    from .wire_links import measure_ice

    return await measure_ice(codec, config)


async def _serial(codec: Codec, config: WireConfig) -> dict[str, DirectionCounts]:
    from .wire_links import measure_serial

    return await measure_serial(codec, config)


LINKS: dict[str, WireLink] = {link.name: link for link in (
    WireLink("datachannel-stock", "WebRTC data channel, aiortc's SCTP (a SACK per packet)",
             _stock),
    WireLink("datachannel-tuned", "WebRTC data channel, delayed SACKs bundled with DATA "
             "(voip_codec.webrtc.sctp)", _tuned),
    WireLink("ice-udp", "ICE/UDP without DTLS and SCTP", _ice),
    WireLink("serial", "KISS-framed serial line, 8N1 (line bits)", _serial, header_bytes=0,
             bits_per_byte=10),
)}
"""The links, in table order. A new link is one entry with its ``measure`` function."""


def _kbps(nbytes: float, seconds: float, bits_per_byte: int = 8) -> float:
    return round(bits_per_byte * nbytes / seconds / 1000, 3)


def summarize(counts: DirectionCounts, seconds: float,
              link: WireLink | None = None) -> dict[str, Any]:
    """Per-direction figures (kbit/s, packets/s) of one measured window."""
    header = link.header_bytes if link is not None else IP_UDP_BYTES
    bits = link.bits_per_byte if link is not None else 8
    sctp_bytes = sum(b for kind, (_, b) in counts.by_kind.items() if kind != "bundled_sacks")
    sctp_packets = sum(n for kind, (n, _) in counts.by_kind.items() if kind != "bundled_sacks")
    overhead = ((counts.dtls_app_bytes - sctp_bytes) / sctp_packets
                if sctp_packets and counts.dtls_app_datagrams else 0.0)

    def wire(kind: str) -> float:
        n, b = counts.by_kind.get(kind, (0, 0))
        return b + n * (overhead + header)

    other = (wire("forward_tsn") + wire("control")
             + counts.other_bytes + header * counts.other_datagrams)
    return {
        "packet_kbps": _kbps(counts.packet_bytes, seconds),
        "wire_kbps": _kbps(counts.udp_bytes + header * counts.datagrams, seconds, bits),
        "delivered_wire_kbps": _kbps(counts.delivered_bytes
                                     + header * counts.delivered_datagrams, seconds, bits),
        "data_kbps": _kbps(wire("data"), seconds, bits),
        "sack_kbps": _kbps(wire("sack"), seconds),
        "stun_kbps": _kbps(counts.stun_bytes + header * counts.stun_datagrams, seconds),
        "other_kbps": _kbps(other, seconds),
        "consent": counts.consent,
        "lowest_rate": counts.lowest_rate,
        "datagrams_per_s": round(counts.datagrams / seconds, 2),
        "packets_per_s": round(counts.packets / seconds, 2),
        "sack_packets": counts.by_kind.get("sack", (0, 0))[0],
        "bundled_sacks": counts.by_kind.get("bundled_sacks", (0, 0))[0],
        "dtls_overhead_bytes": round(overhead, 2),
        "counts": asdict(counts),
    }


async def measure(codec: Codec, links: list[str], frames_per_packet: list[int],
                  redundancy: list[int], seconds: float,
                  progress: Callable[[str], None] | None = None,
                  e2e: tuple[bool, ...] = (True,)) -> dict[str, Any]:
    """Run every configuration of every link; pending links are listed, not run."""
    rows: list[dict[str, Any]] = []
    pending: list[dict[str, str]] = []
    for name in links:
        link = LINKS[name]
        if link.measure is None:
            pending.append({"link": name, "description": link.description,
                            "reason": link.pending})
            continue
        for encrypt in e2e:
            for fpp in frames_per_packet:
                for k in redundancy:
                    config = WireConfig(frames_per_packet=fpp, redundancy=k, seconds=seconds,
                                        e2e=encrypt)
                    if progress is not None:
                        progress(f"{name}: {fpp} frame(s) per packet, K = {k}, encryption "
                                 f"{'on' if encrypt else 'off'}, {seconds:g} s")
                    counts = await link.measure(codec, config)
                    rows.append({"link": name, "frames_per_packet": fpp, "redundancy": k,
                                 "e2e": encrypt, "seconds": seconds,
                                 **{d: summarize(c, seconds, link)
                                    for d, c in counts.items()}})
    return {"codec": codec.info.name, "codec_kbps": round(codec.info.bitrate / 1000, 3),
            "full_duplex": True, "ip_udp_bytes_per_datagram": IP_UDP_BYTES,
            "rows": rows, "pending": pending}


def format_table(result: dict[str, Any]) -> str:
    """The human-readable table of :func:`measure`'s result."""
    lines = [f"full-duplex call, {result['codec']} ({result['codec_kbps']:g} kbps codec "
             "payload); kbit/s per direction (forward / back), IPv4 + UDP headers included "
             "(serial: line bits, 8N1, framing included; lowest rate at which the call holds)",
             f"{'link':18s} {'fpp':>3s} {'K':>2s} {'e2e':>3s} {'packets':>11s} {'wire':>11s} "
             f"{'data':>11s} {'SACK-only':>11s} {'STUN':>9s} {'other':>9s}  lowest"]

    def pair(row: dict[str, Any], key: str, width: int) -> str:
        return f"{row['forward'][key]:.2f}/{row['back'][key]:.2f}".rjust(width)

    for r in result["rows"]:
        lowest = r["forward"].get("lowest_rate")
        lines.append(f"{r['link']:18s} {r['frames_per_packet']:3d} {r['redundancy']:2d} "
                     f"{'on' if r.get('e2e', True) else 'off':>3s} "
                     f"{pair(r, 'packet_kbps', 11)} {pair(r, 'wire_kbps', 11)} "
                     f"{pair(r, 'data_kbps', 11)} {pair(r, 'sack_kbps', 11)} "
                     f"{pair(r, 'stun_kbps', 9)} {pair(r, 'other_kbps', 9)}"
                     + (f"  {lowest} bit/s" if r["link"] == "serial" and lowest else
                        "  none" if r["link"] == "serial" else ""))
    for p in result["pending"]:
        lines.append(f"{p['link']:18s} pending: {p['reason']}")
    return "\n".join(lines)


def format_markdown(result: dict[str, Any]) -> str:
    """:func:`measure`'s result as a Markdown table (the README's), forward / back."""
    lines = ["| link | frames/packet | K | e2e | packets/s | packet kbps | wire kbps | "
             "of it STUN | lowest line rate |", "|---|---|---|---|---|---|---|---|---|"]

    def pair(row: dict[str, Any], key: str) -> str:
        return f"{row['forward'][key]:.2f} / {row['back'][key]:.2f}"

    for r in result["rows"]:
        lowest = r["forward"].get("lowest_rate")
        rate = (f"{lowest} bit/s" if lowest else "none") if r["link"] == "serial" else ""
        lines.append(f"| {r['link']} | {r['frames_per_packet']} | {r['redundancy']} | "
                     f"{'on' if r.get('e2e', True) else 'off'} | "
                     f"{r['forward']['packets_per_s']:.2f} / {r['back']['packets_per_s']:.2f} | "
                     f"{pair(r, 'packet_kbps')} | "
                     f"{pair(r, 'wire_kbps')} | {pair(r, 'stun_kbps')} | {rate} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench wire``."""
    parser.add_argument("--codec", default=None,
                        help="codec (default: the bundled FocalCodec model if installed)")
    parser.add_argument("--links", nargs="+", default=list(LINKS), choices=list(LINKS),
                        metavar="LINK", help=f"links to measure, of {', '.join(LINKS)} "
                                             "(default: all; pending ones are listed)")
    parser.add_argument("--frames-per-packet", type=int, nargs="+", default=[1, 2, 3],
                        metavar="N", help="frames per packet to measure (default 1 2 3)")
    parser.add_argument("--redundancy", type=int, nargs="+", default=[0, 1, 2], metavar="K",
                        help="fixed K values to measure (default 0 1 2)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured seconds of each call (default 10)")
    parser.add_argument("--e2e", nargs="+", choices=("on", "off"), default=["on"],
                        help="end-to-end encryption on, off or both (default on)")
    parser.add_argument("--quick", action="store_true",
                        help="1 frame per packet, K = 0, 3 s per call")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--markdown", action="store_true",
                        help="a Markdown table (the README's) instead of the text table")


def run(args: argparse.Namespace) -> int:
    """``voip-codec bench wire``."""
    import sys

    from voip_codec.codecs.registry import get_codec
    from voip_codec.errors import UserError
    from voip_codec.webrtc.commands import default_codec_name

    if args.quick:
        args.frames_per_packet, args.redundancy, args.seconds = [1], [0], 3.0
    if args.seconds <= 0:
        raise UserError(f"--seconds must be > 0, got {args.seconds:g}")
    bad = [n for n in args.frames_per_packet if not 1 <= n <= 16]
    bad += [k for k in args.redundancy if not 0 <= k <= 3]
    if bad:
        raise UserError("--frames-per-packet takes 1..16 and --redundancy 0..3; got "
                        f"{', '.join(map(str, bad))}")
    codec = get_codec(args.codec or default_codec_name())

    def progress(line: str) -> None:
        print(f"bench wire: {line}", file=sys.stderr, flush=True)

    e2e = tuple(dict.fromkeys(x == "on" for x in args.e2e))
    result = asyncio.run(measure(codec, args.links, args.frames_per_packet, args.redundancy,
                                 args.seconds, progress=None if args.json else progress,
                                 e2e=e2e))
    print(json.dumps(result, indent=2) if args.json
          else format_markdown(result) if args.markdown else format_table(result))
    return 0
