"""Adaptive redundancy: receiver loss statistics -> loss reports -> sender's choice of K.

The receiver feeds every accepted packet's sequence number (and every playout tick) into
:class:`LossStatistics`, and periodically (e.g. once a second) sends the resulting
:class:`~voip_codec.wire.packet.LossReport` back. The sender's :class:`RedundancyController` turns
reports into ``K``, the number of redundant copies of preceding frames per packet (0..3):

* the wanted ``K`` grows with the loss rate (thresholds 1 %, 4 %, 12 % for K = 1, 2, 3) and is
  at least the mean loss-burst length (rounded up) whenever there is loss, because K copies can
  only bridge bursts of up to K packets;
* hysteresis: K rises at once when a report asks for more, but falls by one step only after
  ``hold_reports`` consecutive reports in which even halved thresholds ask for less.

Redundancy is nearly free on the wire (a data-channel message costs ~100 bytes of headers, a
700C frame 7 bytes), so the thresholds lean towards protecting.

**Duplicates.** A copy of frame ``f`` in packet ``f + 1`` arrives a packet interval (80 ms)
after ``f`` was due, so the playout delay has to wait that long for it, and when packets ``f``
and ``f + 1`` are both lost (1 % of frames at 10 % random loss) the frame is concealed or the
delay grows again. With ``duplicate_loss`` set, the controller also asks for every packet to be
sent twice, back to back, while the loss rate is at least that high: a frame is then missing
at its tick only when both datagrams of packet ``f`` and both of ``f + 1`` are lost (about
0.01 % at 10 %), and at no extra delay. The receiver counts the second datagram of a sequence
number (:meth:`LossStatistics.on_duplicate`) so that its reports keep giving the *datagram*
loss rate, which is what the controller needs to decide; without that, duplicates would hide
the loss that switched them on. Back-to-back datagrams share bursts of congestion loss, so
duplicates help against random loss (radio, satellite, Wi-Fi), and K against bursts.
"""

from __future__ import annotations

import math
from collections import deque

from ..wire.packet import MAX_REDUNDANCY, LossReport
from .jitter import unwrap

__all__ = ["DUPLICATE_LOSS", "HISTORY_REPORTS", "LossStatistics", "RedundancyController",
           "wanted_redundancy"]

_THRESHOLDS = (0.01, 0.04, 0.12)

DUPLICATE_LOSS = 0.04
"""Loss rate from which calls send every packet twice by default (where K reaches 2)."""

HISTORY_REPORTS = 4096
"""Reports of K history a :class:`RedundancyController` keeps (about an hour at one a second)."""


def wanted_redundancy(loss_rate: float, mean_burst: float, scale: float = 1.0,
                      k_max: int = MAX_REDUNDANCY) -> int:
    """The redundancy K that a loss rate and burst length call for.

    Args:
        loss_rate: packet loss fraction in [0, 1].
        mean_burst: mean run of consecutive lost packets.
        scale: multiplies the thresholds (0.5 = ask for more protection, used for lowering K).
        k_max: upper bound of K.

    Returns:
        K in ``0..k_max``.
    """
    k = sum(1 for t in _THRESHOLDS if loss_rate >= t * scale)
    if loss_rate >= _THRESHOLDS[0] * scale and mean_burst > 0:
        k = max(k, math.ceil(mean_burst - 1e-9))
    return min(k, k_max)


class LossStatistics:
    """Receiver-side packet-loss statistics for loss reports.

    Args:
        reorder_margin: the newest ``reorder_margin`` sequence numbers are left out of a report
            (they may still arrive out of order) and counted in the next one.
    """

    def __init__(self, reorder_margin: int = 2) -> None:
        if reorder_margin < 0:
            raise ValueError(f"reorder_margin must be >= 0, got {reorder_margin}")
        self.reorder_margin = reorder_margin
        self._received: set[int] = set()
        self._doubled: set[int] = set()  # sequence numbers whose second datagram came too
        self._highest: int | None = None
        self._from: int | None = None
        self._ticks = 0
        self._concealed = 0
        self._report_seq = 0

    def on_packet(self, seq: int) -> None:
        """Record an accepted packet's 16-bit sequence number (duplicates are harmless)."""
        ext = seq if self._highest is None else unwrap(seq, self._highest, 16)
        if self._from is None:
            self._from = ext
        if ext < self._from:
            return  # belongs to an interval already reported
        self._received.add(ext)
        self._highest = ext if self._highest is None else max(self._highest, ext)

    def on_duplicate(self, seq: int) -> None:
        """Record the second datagram of a sequence number already seen (the sender sends
        duplicates): while they come, reports give the loss rate per datagram."""
        if self._highest is None or self._from is None:
            return
        ext = unwrap(seq, self._highest, 16)
        if ext >= self._from:
            self._doubled.add(ext)

    def on_tick(self, concealed: bool) -> None:
        """Record one playout tick (``concealed``: the decoder had no payload)."""
        self._ticks += 1
        self._concealed += int(concealed)

    def make_report(self, jitter_ms: float = 0.0, playout_delay_ms: float = 0.0) -> LossReport | None:
        """Summarise the interval since the last report and start a new one.

        Returns:
            A report, or None when no packet has been seen in the interval yet.
        """
        if self._highest is None or self._from is None:
            return None
        end = self._highest - self.reorder_margin
        if end < self._from:
            return None
        expected = end - self._from + 1
        received = 0
        lost = 0
        runs = 0
        in_run = False
        for s in range(self._from, end + 1):
            if s in self._received:
                received += 1
                in_run = False
            else:
                lost += 1
                runs += 0 if in_run else 1
                in_run = True
        doubled = sum(1 for s in self._doubled if s <= end)
        if doubled:
            # the sender sent every packet twice: 2 datagrams expected per sequence number, and
            # a number that arrived once lost one of them
            loss_rate = (2 * expected - received - doubled) / (2 * expected)
        else:
            loss_rate = lost / expected
        self._received = {s for s in self._received if s > end}
        self._doubled = {s for s in self._doubled if s > end}
        self._from = end + 1
        residual = self._concealed / self._ticks if self._ticks else 0.0
        self._ticks = self._concealed = 0
        report = LossReport(
            report_seq=self._report_seq & 0xFFFF,
            highest_seq=self._highest & 0xFFFF,
            expected=min(expected, 0xFFFF),
            received=min(received, 0xFFFF),
            loss_rate=loss_rate,
            mean_burst=min(lost / runs, 255.0) if runs else 0.0,
            residual_loss=residual,
            jitter_ms=min(round(jitter_ms), 0xFFFF),
            playout_delay_ms=min(round(playout_delay_ms), 0xFFFF),
        )
        self._report_seq += 1
        return report


class RedundancyController:
    """Sender-side choice of K from loss reports, with hysteresis.

    Args:
        initial: K before any report.
        k_min: lowest K ever used.
        k_max: highest K ever used (at most 3).
        hold_reports: consecutive "less is enough" reports needed before K drops by one.
        duplicate_loss: send every packet twice (:attr:`duplicates`) while reports give at
            least this loss rate; they stop after ``hold_reports`` reports below half of it.
            None: never (narrow links, where the second datagram would not fit).
    """

    def __init__(self, initial: int = 1, k_min: int = 0, k_max: int = MAX_REDUNDANCY,
                 hold_reports: int = 3, duplicate_loss: float | None = None) -> None:
        if not 0 <= k_min <= k_max <= MAX_REDUNDANCY:
            raise ValueError(f"need 0 <= k_min <= k_max <= {MAX_REDUNDANCY}, got {k_min}, {k_max}")
        if not k_min <= initial <= k_max:
            raise ValueError(f"initial K {initial} is outside {k_min}..{k_max}")
        if hold_reports < 1:
            raise ValueError(f"hold_reports must be >= 1, got {hold_reports}")
        if duplicate_loss is not None and not 0.0 < duplicate_loss <= 1.0:
            raise ValueError(f"duplicate_loss must be in (0, 1] or None, got {duplicate_loss}")
        self.k = initial
        self.duplicate_loss = duplicate_loss
        self.duplicates = False
        """Whether every packet should go out twice (see the module docstring)."""
        self._dup_calm = 0
        self.k_min, self.k_max = k_min, k_max
        self.hold_reports = hold_reports
        self._calm = 0
        self._last_report: int | None = None
        self.history: deque[int] = deque(maxlen=HISTORY_REPORTS)
        """K after each of the last ``HISTORY_REPORTS`` accepted reports (bounded: a call of
        days must not grow it)."""

    def on_report(self, report: LossReport) -> int:
        """Update K from a report (stale or repeated reports are ignored).

        Returns:
            The K to use from now on.
        """
        if self._last_report is not None:
            ext = unwrap(report.report_seq, self._last_report, 16)
            if ext <= self._last_report:
                return self.k
            self._last_report = ext
        else:
            self._last_report = report.report_seq
        up = wanted_redundancy(report.loss_rate, report.mean_burst, 1.0, self.k_max)
        down = wanted_redundancy(report.loss_rate, report.mean_burst, 0.5, self.k_max)
        if up > self.k:
            self.k = up
            self._calm = 0
        elif down < self.k:
            self._calm += 1
            if self._calm >= self.hold_reports:
                self.k -= 1
                self._calm = 0
        else:
            self._calm = 0
        self.k = min(max(self.k, self.k_min), self.k_max)
        if self.duplicate_loss is not None:
            if report.loss_rate >= self.duplicate_loss:
                self.duplicates = True
                self._dup_calm = 0
            elif self.duplicates and report.loss_rate < self.duplicate_loss / 2:
                self._dup_calm += 1
                if self._dup_calm >= self.hold_reports:
                    self.duplicates = False
                    self._dup_calm = 0
            else:
                self._dup_calm = 0
        self.history.append(self.k)
        return self.k
