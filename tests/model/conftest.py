"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch

from voip_codec.codec import FocalCodec
from voip_codec.codec.config import tiny_config
from voip_codec.threads import DEFAULT_THREADS


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    # one thread, as every command defaults to (voip_codec.threads): on the loaded 2-core CI box
    # two threads stall on each other
    torch.set_num_threads(DEFAULT_THREADS)


@pytest.fixture(scope="session")
def tiny_model() -> FocalCodec:
    """A seeded random tiny causal model (window 64 frames, so 2 s already rolls the cache)."""
    torch.manual_seed(0)
    model = FocalCodec(tiny_config(4096))
    with torch.no_grad():
        for p in model.parameters():  # perturb constant inits so every tensor matters
            p.add_(0.05 * torch.randn_like(p))
        model.decoder.head.proj.weight.mul_(0.5)
    return model.eval()
