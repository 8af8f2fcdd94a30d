"""The adversarial phase: a small multi-resolution STFT discriminator with feature matching.

Spectral losses alone leave the vocoder's output smeared between harmonics (a buzzy, muffled
sound that STOI tolerates and DistillMOS does not). The cheapest fix the codec literature agrees
on is a discriminator that looks at complex STFTs at a few resolutions (EnCodec's MS-STFT
discriminator family) plus an L1 feature-matching term, both added to the reconstruction loss.
This one is sized for a CPU: three resolutions, 8 channels, (3, 5) kernels, about 0.01 M
parameters, and it sees only a random window of part of each batch (:func:`adversarial_view`):
at full size (16 channels, (3, 9) kernels, the whole batch) a training step cost 6.2x as much.

Losses (hinge form, averaged over the resolutions):

* discriminator: ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``;
* generator: ``mean(relu(1 - D(fake)))`` plus feature matching
  ``mean_l |f_l(real) - f_l(fake)|_1 / mean |f_l(real)|`` over every layer ``l``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiResolutionSTFTDiscriminator", "adversarial_view", "discriminator_loss",
           "generator_losses"]


def adversarial_view(real: Tensor, fake: Tensor, items: int, samples: int,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The same random window of ``samples`` from the first ``items`` examples of both batches."""
    n = real.shape[-1]
    start = 0 if n <= samples else int(torch.randint(0, n - samples + 1, (1,), generator=generator))
    return real[:items, start:start + samples], fake[:items, start:start + samples]


class _STFTDiscriminator(nn.Module):
    """2-D convolutions over one resolution's complex STFT (real and imaginary parts as channels)."""

    def __init__(self, n_fft: int, channels: int = 8, kernel: int = 5) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop = n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c, k, p = channels, kernel, kernel // 2
        self.convs = nn.ModuleList([
            nn.Conv2d(2, c, (3, k), padding=(1, p)),
            nn.Conv2d(c, c, (3, k), stride=(1, 2), padding=(1, p)),
            nn.Conv2d(c, c, (3, k), stride=(1, 2), padding=(1, p)),
            nn.Conv2d(c, c, (3, k), stride=(1, 2), padding=(1, p)),
            nn.Conv2d(c, c, (3, 3), padding=(1, 1)),
        ])
        self.out = nn.Conv2d(c, 1, (3, 3), padding=(1, 1))

    def forward(self, wave: Tensor) -> tuple[Tensor, list[Tensor]]:
        window: Tensor = self.window  # type: ignore[assignment]
        spec = torch.stft(wave, self.n_fft, self.hop, window=window, return_complex=True)
        # (batch, 2, time, freq): time along the first spatial axis, strides only over frequency
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class MultiResolutionSTFTDiscriminator(nn.Module):
    """One :class:`_STFTDiscriminator` per FFT size (24 kHz audio: 21, 43 and 85 ms windows)."""

    def __init__(self, ffts: tuple[int, ...] = (512, 1024, 2048), channels: int = 8) -> None:
        super().__init__()
        self.discs = nn.ModuleList([_STFTDiscriminator(n, channels) for n in ffts])

    def forward(self, wave: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(wave) for d in self.discs]


def discriminator_loss(disc: MultiResolutionSTFTDiscriminator, real: Tensor, fake: Tensor) -> Tensor:
    """Hinge loss of the discriminator; ``fake`` must already be detached from the generator."""
    loss = real.new_zeros(())
    outs_real, outs_fake = disc(real), disc(fake)
    for (lr, _), (lf, _) in zip(outs_real, outs_fake, strict=True):
        loss = loss + F.relu(1 - lr).mean() + F.relu(1 + lf).mean()
    return loss / len(outs_real)


def generator_losses(disc: MultiResolutionSTFTDiscriminator, real: Tensor,
                     fake: Tensor) -> tuple[Tensor, Tensor]:
    """``(adversarial, feature_matching)`` for the generator (gradients flow into ``fake`` only)."""
    with torch.no_grad():
        outs_real = disc(real)
    # no weight gradients here: the discriminator's own step computes those
    for p in disc.parameters():
        p.requires_grad_(False)
    try:
        outs_fake = disc(fake)
    finally:
        for p in disc.parameters():
            p.requires_grad_(True)
    adv = real.new_zeros(())
    fm = real.new_zeros(())
    n_feats = 0
    for (_, fr), (lf, ff) in zip(outs_real, outs_fake, strict=True):
        adv = adv + F.relu(1 - lf).mean()
        for a, b in zip(fr, ff, strict=True):
            fm = fm + (a - b).abs().mean() / (a.abs().mean() + 1e-5)
            n_feats += 1
    return adv / len(outs_fake), fm / max(1, n_feats)
