"""The training's adversarial phase (training/gan.py): the losses move the right parameters."""

from __future__ import annotations

import math

import torch

from training.gan import (
    MultiResolutionSTFTDiscriminator,
    adversarial_view,
    discriminator_loss,
    generator_losses,
)


def _batch(n: int = 4, samples: int = 6000) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.arange(samples) / 24000
    real = torch.stack([0.3 * torch.sin(2 * math.pi * (150 + 40 * i) * t) for i in range(n)])
    fake = 0.3 * torch.randn(n, samples, generator=torch.Generator().manual_seed(1))
    return real, fake


def test_discriminator_learns_to_separate_real_from_fake() -> None:
    torch.manual_seed(0)
    disc = MultiResolutionSTFTDiscriminator()
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    real, fake = _batch()
    first = float(discriminator_loss(disc, real, fake).detach())
    for _ in range(30):
        loss = discriminator_loss(disc, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(discriminator_loss(disc, real, fake).detach())
    assert last < 0.5 * first, (first, last)


def test_generator_losses_reach_the_fake_only() -> None:
    torch.manual_seed(0)
    disc = MultiResolutionSTFTDiscriminator()
    real, fake = _batch()
    fake.requires_grad_(True)
    adv, fm = generator_losses(disc, real, fake)
    (adv + fm).backward()
    assert fake.grad is not None and float(fake.grad.abs().sum()) > 0
    assert all(p.grad is None for p in disc.parameters())
    assert all(p.requires_grad for p in disc.parameters())
    # feature matching vanishes when the fake is the real signal
    _, fm_same = generator_losses(disc, real, real.clone())
    assert float(fm_same) < 1e-6 < float(fm)


def test_adversarial_view_takes_the_same_window_of_both() -> None:
    real, fake = _batch(n=6, samples=24000)
    r, f = adversarial_view(real, fake, items=3, samples=12000, generator=torch.Generator().manual_seed(3))
    assert r.shape == f.shape == (3, 12000)
    start = int(torch.nonzero((real[0].unfold(0, 12000, 1) == r[0]).all(dim=1))[0])
    assert torch.equal(f, fake[:3, start:start + 12000])
