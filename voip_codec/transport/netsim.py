"""Seeded network models for tests and the simulator.

A :class:`NetworkSimulator` takes datagrams as ``(send_time, bytes)`` (seconds) and returns
``(arrival_time, bytes)`` sorted by arrival. It applies, in this order:

1. loss: none, Bernoulli, or two-state Gilbert-Elliott bursts (:class:`GilbertElliottLoss`,
   parametrised by the mean loss rate and the mean burst length);
2. a rate cap: a FIFO link of ``rate_bps`` bits per second (serialization delay, queueing),
   dropping datagrams that would wait longer than ``queue_limit_ms``;
3. delay: ``delay_ms`` plus an independent jitter sample per datagram (half-normal with
   scale ``jitter_ms``), so jitter larger than the packet spacing reorders naturally;
4. explicit reordering: with probability ``reorder_prob`` a datagram is held back by an extra
   ``reorder_delay_ms``;
5. duplication: with probability ``duplicate_prob`` a second copy arrives ``1 ms`` later.

Every random draw comes from one ``numpy.random.Generator`` seeded from ``seed``: the same seed and
input give exactly the same output.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "BernoulliLoss",
    "GilbertElliottLoss",
    "LossModel",
    "loss_model",
    "NetworkConditions",
    "NetworkSimulator",
    "NetworkStats",
    "NoLoss",
]


class LossModel(abc.ABC):
    """Decides, datagram by datagram, whether it is lost."""

    @abc.abstractmethod
    def lost(self, rng: np.random.Generator) -> bool:
        """Draw the fate of the next datagram (True = lost)."""

    def reset(self) -> None:  # noqa: B027 - stateless models have nothing to reset
        """Return to the initial state."""


class NoLoss(LossModel):
    """Nothing is lost."""

    def lost(self, rng: np.random.Generator) -> bool:
        """Never lost."""
        return False


class BernoulliLoss(LossModel):
    """Independent losses with probability ``rate``.

    Args:
        rate: loss probability in [0, 1].
    """

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"loss rate must be in [0, 1], got {rate}")
        self.rate = rate

    def lost(self, rng: np.random.Generator) -> bool:
        """Lost with probability ``rate``."""
        return bool(rng.random() < self.rate)


class GilbertElliottLoss(LossModel):
    """Two-state bursty loss: a Good state (loss ``good_loss``) and a Bad state (loss
    ``bad_loss``).

    With the defaults (``good_loss=0``, ``bad_loss=1``, the simple Gilbert model) the stationary
    loss rate is ``rate`` and bursts of consecutive losses have mean length ``mean_burst``:
    ``P(Bad -> Good) = 1 / mean_burst`` and ``P(Good -> Bad) = rate * P(B->G) / (1 - rate)``.

    Args:
        rate: long-run loss rate in [0, 1).
        mean_burst: mean number of consecutive losses, >= 1.
        good_loss: loss probability in the Good state (0 for pure bursts).
        bad_loss: loss probability in the Bad state (1 for pure bursts).

    Raises:
        ValueError: parameters outside their ranges, or a rate too high for the burst length
            (``P(Good -> Bad) > 1``, i.e. ``rate / (1 - rate) > mean_burst``).
    """

    def __init__(self, rate: float, mean_burst: float, good_loss: float = 0.0,
                 bad_loss: float = 1.0) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"loss rate must be in [0, 1), got {rate}")
        if mean_burst < 1.0:
            raise ValueError(f"mean burst length must be >= 1 packet, got {mean_burst}")
        if not 0.0 <= good_loss <= 1.0 or not 0.0 <= bad_loss <= 1.0:
            raise ValueError("good_loss and bad_loss must be probabilities in [0, 1]")
        self.rate = rate
        self.mean_burst = mean_burst
        self.good_loss = good_loss
        self.bad_loss = bad_loss
        self.p_bad_to_good = 1.0 / mean_burst
        self.p_good_to_bad = rate * self.p_bad_to_good / (1.0 - rate)
        if self.p_good_to_bad > 1.0:
            raise ValueError(f"no two-state chain has loss rate {rate} with mean burst "
                             f"{mean_burst}: P(Good->Bad) would be {self.p_good_to_bad:.3f} > 1")
        self.bad = False

    def lost(self, rng: np.random.Generator) -> bool:
        """Advance the chain by one datagram and draw its fate."""
        if self.bad:
            self.bad = not rng.random() < self.p_bad_to_good
        else:
            self.bad = bool(rng.random() < self.p_good_to_bad)
        return bool(rng.random() < (self.bad_loss if self.bad else self.good_loss))

    def reset(self) -> None:
        """Back to the Good state."""
        self.bad = False


@dataclass
class NetworkConditions:
    """One direction of a simulated path."""

    loss: LossModel = field(default_factory=NoLoss)
    """Loss model (applied first)."""
    delay_ms: float = 40.0
    """Fixed one-way delay in milliseconds."""
    jitter_ms: float = 0.0
    """Scale of the half-normal extra delay per datagram, in milliseconds."""
    reorder_prob: float = 0.0
    """Probability that a datagram is held back by ``reorder_delay_ms``."""
    reorder_delay_ms: float = 100.0
    """Extra delay of a reordered datagram, in milliseconds."""
    duplicate_prob: float = 0.0
    """Probability that a datagram arrives twice (the copy 1 ms later)."""
    rate_bps: float | None = None
    """Link rate in bits per second (None: unlimited)."""
    queue_limit_ms: float = 500.0
    """Datagrams that would queue longer than this behind the rate cap are dropped."""

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms", "reorder_delay_ms", "queue_limit_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("reorder_prob", "duplicate_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError(f"rate_bps must be > 0 or None, got {self.rate_bps}")


@dataclass
class NetworkStats:
    """Counters of one simulator."""

    sent: int = 0
    lost: int = 0
    queue_dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delivered: int = 0


class NetworkSimulator:
    """Applies :class:`NetworkConditions` to a stream of datagrams, deterministically.

    Args:
        conditions: the path's impairments.
        seed: seed of the random generator.
    """

    def __init__(self, conditions: NetworkConditions | None = None, seed: int = 0) -> None:
        self.conditions = conditions if conditions is not None else NetworkConditions()
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.stats = NetworkStats()
        self._link_free = -np.inf

    def send(self, send_time: float, data: bytes) -> list[tuple[float, bytes]]:
        """Pass one datagram (sent at ``send_time`` seconds) through the path.

        Returns:
            Zero, one or two ``(arrival_time, bytes)`` deliveries.
        """
        c = self.conditions
        self.stats.sent += 1
        if c.loss.lost(self.rng):
            self.stats.lost += 1
            return []
        t = send_time
        if c.rate_bps is not None:
            start = max(t, self._link_free)
            if start - t > c.queue_limit_ms / 1000:
                self.stats.queue_dropped += 1
                return []
            self._link_free = start + len(data) * 8 / c.rate_bps
            t = self._link_free
        t += c.delay_ms / 1000
        if c.jitter_ms > 0:
            t += abs(float(self.rng.normal(0.0, c.jitter_ms))) / 1000
        if c.reorder_prob > 0 and self.rng.random() < c.reorder_prob:
            self.stats.reordered += 1
            t += c.reorder_delay_ms / 1000
        out = [(t, data)]
        if c.duplicate_prob > 0 and self.rng.random() < c.duplicate_prob:
            self.stats.duplicated += 1
            out.append((t + 0.001, data))
        self.stats.delivered += len(out)
        return out

    def transmit(self, datagrams: Iterable[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        """Pass datagrams (in send order) through the path.

        Args:
            datagrams: ``(send_time_s, bytes)`` pairs, sorted by send time.

        Returns:
            ``(arrival_time_s, bytes)`` pairs sorted by arrival time (stable for ties).
        """
        out: list[tuple[float, bytes]] = []
        for send_time, data in datagrams:
            out.extend(self.send(send_time, data))
        out.sort(key=lambda item: item[0])
        return out


def loss_model(loss: float, burst: float = 1.0) -> LossModel:
    """The loss model the command line's ``--loss`` / ``--burst`` describe.

    Args:
        loss: packet loss rate in [0, 1).
        burst: mean burst length in packets; 1 or less gives independent (Bernoulli) loss, more
            gives Gilbert-Elliott bursts of that mean length.

    Raises:
        ValueError: ``loss`` outside [0, 1).
    """
    if not 0.0 <= loss < 1.0:
        raise ValueError(f"loss must be in [0, 1), got {loss}")
    if loss == 0.0:
        return NoLoss()
    return BernoulliLoss(loss) if burst <= 1.0 else GilbertElliottLoss(loss, burst)
