"""SerialLink on plain pipes: framing both ways, garbage on the stream, pacing, closing.
(Over pseudo-terminals, pyserial and a rate-capped noisy line: tests/integration/test_links.py.)"""

from __future__ import annotations

import asyncio
import os

import pytest

from voip_codec.transport.link import Link
from voip_codec.transport.serial import (
    SerialLink,
    SerialLinkError,
    SerialSpec,
    parse_serial_spec,
)
from voip_codec.wire.kiss import kiss_frame


def test_pipes_carry_datagrams_both_ways_and_garbage_is_counted() -> None:
    async def main() -> tuple[list[bytes], list[bytes], SerialLink, SerialLink]:
        a_to_b = os.pipe()
        b_to_a = os.pipe()
        a = SerialLink(b_to_a[0], write_fd=a_to_b[1], name="a")
        b = SerialLink(a_to_b[0], write_fd=b_to_a[1], name="b")
        assert isinstance(a, Link)
        got_a: list[bytes] = []
        got_b: list[bytes] = []
        a.set_receiver(got_a.append)
        b.set_receiver(got_b.append)
        try:
            a.send(b"hello \xc0\xdb world")
            os.write(a_to_b[1], b"\x00line noise\xdb\xc0")  # garbage between frames
            a.send(b"second")
            b.send(b"back")
            for _ in range(50):
                await asyncio.sleep(0.01)
                if len(got_b) == 2 and got_a:
                    break
        finally:
            a.close()
            b.close()
            for fd in (*a_to_b, *b_to_a):
                os.close(fd)
        return got_a, got_b, a, b

    got_a, got_b, a, b = asyncio.run(main())
    assert got_b == [b"hello \xc0\xdb world", b"second"] and got_a == [b"back"]
    assert b.decoder.stats.dropped == 1 and b.datagrams_received == 2
    assert a.datagrams_sent == 2 and a.bytes_sent == len(kiss_frame(b"hello \xc0\xdb world")) + \
        len(kiss_frame(b"second"))
    a.send(b"after close")  # dropped and counted, never raised
    assert a.dropped == 1
    with pytest.raises(ValueError, match="exceeds the link MTU of 255"):
        b.send(bytes(256))


def test_pacing_drops_what_would_wait_longer_than_the_backlog_limit() -> None:
    async def main() -> SerialLink:
        r, w = os.pipe()
        link = SerialLink(r, write_fd=w, baud=2400, max_backlog_s=0.1)
        try:
            for _ in range(10):  # 10 x 24 bytes = 1 s of line at 2400 bit/s, sent at once
                link.send(bytes(20))
            assert 0.05 < link.backlog_s <= 0.1 + 0.1
        finally:
            link.close()
            os.close(r)
            os.close(w)
        return link

    link = asyncio.run(main())
    # a 24-byte frame takes 0.1 s at 240 bytes/s: the 1st goes at once, the 2nd waits 0.1 s
    # (allowed), the 3rd would wait 0.2 s
    assert link.datagrams_sent == 2 and link.backlog_drops == 8 and link.dropped == 8


def test_serial_specs() -> None:
    assert parse_serial_spec("/dev/ttyUSB0@9600") == SerialSpec("/dev/ttyUSB0", 9600)
    assert parse_serial_spec("/dev/ttyS1") == SerialSpec("/dev/ttyS1", 2400)
    assert parse_serial_spec("/dev/odd@name@1200") == SerialSpec("/dev/odd@name", 1200)
    for bad, message in (("@2400", "names no device"), ("/dev/x@", "bad baud rate ''"),
                         ("/dev/x@9e9", "bad baud rate '9e9'"),
                         ("/dev/x@5000000", "must be in 50..4000000")):
        with pytest.raises(SerialLinkError, match=message):
            parse_serial_spec(bad)
