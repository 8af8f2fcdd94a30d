"""Seeded network models: determinism, loss statistics, delay, reordering, duplication, rate."""

from __future__ import annotations

import numpy as np
import pytest

from voip_codec.transport.netsim import (
    BernoulliLoss,
    GilbertElliottLoss,
    LossModel,
    NetworkConditions,
    NetworkSimulator,
)


def stream(n: int, size: int = 20, spacing: float = 0.08) -> list[tuple[float, bytes]]:
    return [(i * spacing, i.to_bytes(4, "big") + b"\x00" * (size - 4)) for i in range(n)]


def ids(out: list[tuple[float, bytes]]) -> list[int]:
    return [int.from_bytes(d[:4], "big") for _, d in out]


def fates(model: LossModel, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([model.lost(rng) for _ in range(n)])


def burst_lengths(lost: np.ndarray) -> list[int]:
    runs, k = [], 0
    for x in lost:
        if x:
            k += 1
        elif k:
            runs.append(k)
            k = 0
    return runs + ([k] if k else [])


def conditions() -> NetworkConditions:
    return NetworkConditions(loss=GilbertElliottLoss(0.1, 2), delay_ms=30, jitter_ms=40,
                             reorder_prob=0.05, duplicate_prob=0.05)


def test_same_seed_same_outcome_and_different_seed_differs() -> None:
    a = NetworkSimulator(conditions(), seed=7).transmit(stream(500))
    b = NetworkSimulator(conditions(), seed=7).transmit(stream(500))
    c = NetworkSimulator(conditions(), seed=8).transmit(stream(500))
    assert a == b
    assert a != c


def test_bernoulli_rate() -> None:
    lost = fates(BernoulliLoss(0.1), 40_000)
    assert lost.mean() == pytest.approx(0.1, abs=0.01)
    assert np.mean(burst_lengths(lost)) == pytest.approx(1 / 0.9, abs=0.05)


@pytest.mark.parametrize("rate, burst", [(0.05, 2.0), (0.2, 3.0), (0.1, 1.0)])
def test_gilbert_elliott_rate_and_burst(rate: float, burst: float) -> None:
    lost = fates(GilbertElliottLoss(rate, burst), 60_000, seed=1)
    assert lost.mean() == pytest.approx(rate, rel=0.1)
    assert np.mean(burst_lengths(lost)) == pytest.approx(burst, rel=0.1)


def test_gilbert_elliott_rejects_impossible_parameters() -> None:
    with pytest.raises(ValueError, match="P\\(Good->Bad\\)"):
        GilbertElliottLoss(0.9, 1.0)
    with pytest.raises(ValueError, match="mean burst"):
        GilbertElliottLoss(0.1, 0.5)
    with pytest.raises(ValueError, match="loss rate"):
        BernoulliLoss(1.5)


def test_fixed_delay_keeps_order_and_times() -> None:
    out = NetworkSimulator(NetworkConditions(delay_ms=50), seed=0).transmit(stream(10))
    assert ids(out) == list(range(10))
    assert [t for t, _ in out] == pytest.approx([i * 0.08 + 0.05 for i in range(10)])


def test_jitter_reorders_and_delays_at_least_base() -> None:
    sim = NetworkSimulator(NetworkConditions(delay_ms=20, jitter_ms=100), seed=3)
    out = sim.transmit(stream(300))
    order = ids(out)
    assert sorted(order) == list(range(300))
    assert order != sorted(order)  # jitter beyond the spacing reorders
    sent = {i: i * 0.08 for i in range(300)}
    delays = [t - sent[i] for (t, _), i in zip(out, order, strict=True)]
    assert min(delays) >= 0.02 and np.mean(delays) == pytest.approx(0.02 + 0.1 * 0.798, abs=0.02)


def test_explicit_reordering_and_duplication() -> None:
    sim = NetworkSimulator(NetworkConditions(reorder_prob=0.2, duplicate_prob=0.1), seed=5)
    out = sim.transmit(stream(1000))
    assert len(out) == 1000 + sim.stats.duplicated
    assert sim.stats.duplicated == pytest.approx(100, abs=35)
    assert sim.stats.reordered == pytest.approx(200, abs=45)
    assert ids(out) != sorted(ids(out))


def test_rate_cap_serialises_and_drops_when_queue_overflows() -> None:
    # 100-byte datagrams on an 8 kbit/s link take 100 ms each; sent every 50 ms they queue up.
    sim = NetworkSimulator(NetworkConditions(delay_ms=0, rate_bps=8000, queue_limit_ms=300),
                           seed=0)
    out = sim.transmit(stream(20, size=100, spacing=0.05))
    times = [t for t, _ in out]
    assert times[:3] == pytest.approx([0.1, 0.2, 0.3])
    assert np.all(np.diff(times) >= 0.1 - 1e-9)
    assert sim.stats.queue_dropped > 0
    assert len(out) + sim.stats.queue_dropped == 20


def test_bad_conditions() -> None:
    with pytest.raises(ValueError, match="delay_ms"):
        NetworkConditions(delay_ms=-1)
    with pytest.raises(ValueError, match="reorder_prob"):
        NetworkConditions(reorder_prob=2)
    with pytest.raises(ValueError, match="rate_bps"):
        NetworkConditions(rate_bps=0)
