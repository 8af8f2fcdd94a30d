"""Binary spherical quantizer (BSQ): sign patterns of L2-normalised latents.

No learned parameters. With ``D = log2(codebook_size)`` bits per token and ``v = 1/sqrt(D)``:
latent > 0 -> bit 1 -> code ``+v``; latent <= 0 -> bit 0 -> code ``-v``. Token = the bits read
most-significant first (latent dimension 0 is the MSB). See spec §2.5.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BinarySphericalQuantizer"]


class BinarySphericalQuantizer(nn.Module):
    """Tokens <-> codes <-> latents for a ``2**D`` codebook."""

    weights: Tensor
    """``(D,)`` int64 buffer: the value of each bit, MSB first."""

    def __init__(self, codebook_size: int) -> None:
        super().__init__()
        if codebook_size < 2 or codebook_size & (codebook_size - 1):
            raise ValueError(f"codebook_size must be a power of two, got {codebook_size}")
        self.codebook_size = codebook_size
        self.dim = codebook_size.bit_length() - 1
        self.code_value = float(torch.tensor(1.0 / self.dim ** 0.5, dtype=torch.float32))
        # non-persistent: recomputed, never read from or written to checkpoints
        self.register_buffer(
            "weights", 2 ** torch.arange(self.dim - 1, -1, -1, dtype=torch.long), persistent=False
        )

    def lats_to_codes(self, lats: Tensor) -> Tensor:
        """``(..., D)`` latents -> ``(..., D)`` codes of ``+-1/sqrt(D)`` (float32)."""
        v = torch.full((), self.code_value, dtype=torch.float32, device=lats.device)
        return torch.where(lats > 0, v, -v)

    def lats_to_toks(self, lats: Tensor) -> Tensor:
        """``(..., D)`` latents or codes -> ``(...)`` int64 tokens (MSB first)."""
        return ((lats > 0).long() * self.weights).sum(-1)

    def toks_to_codes(self, toks: Tensor) -> Tensor:
        """``(...)`` int64 tokens -> ``(..., D)`` float32 codes.

        Raises:
            ValueError: a token outside ``[0, codebook_size)``.
        """
        if toks.numel() and (int(toks.min()) < 0 or int(toks.max()) >= self.codebook_size):
            raise ValueError(
                f"tokens must lie in [0, {self.codebook_size}), got range "
                f"[{int(toks.min())}, {int(toks.max())}]"
            )
        bits = torch.div(toks.long().unsqueeze(-1), self.weights, rounding_mode="floor") % 2
        return (2.0 * bits.float() - 1.0) * self.code_value

    def codebook(self) -> Tensor:
        """All ``codebook_size`` codes, ``(codebook_size, D)``."""
        return self.toks_to_codes(torch.arange(self.codebook_size, device=self.weights.device))
