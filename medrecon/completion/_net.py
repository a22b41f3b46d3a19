"""The :class:`ShapeNet` module (imports torch and MONAI; see :mod:`.shape_net`)."""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn

from medrecon.completion.features import CHANNELS


class ShapeNet(nn.Module):
    """Drawn slices -> shared 2D encoder -> FC fusion -> latent -> 3D decoder -> occupancy.

    Parameters
    ----------
    grid : tuple of 3 int
        Box grid (gi, gj, gk), each a multiple of 8.
    latent : int
        Latent code size.
    base : int
        Convolution width.
    max_slices : int
        Most drawn slices read by the encoder.
    """

    def __init__(
        self,
        grid: tuple[int, int, int] = (32, 32, 32),
        latent: int = 128,
        base: int = 16,
        max_slices: int = 12,
    ) -> None:
        super().__init__()
        grid = tuple(int(g) for g in grid)
        if len(grid) != 3 or any(g % 8 or g < 8 for g in grid):
            raise ValueError(f"grid must be 3 multiples of 8, got {grid}")
        self.config = {"grid": list(grid), "latent": int(latent), "base": int(base),
                       "max_slices": int(max_slices)}
        b = base
        conv2 = dict(spatial_dims=2, kernel_size=3, act="RELU", norm="INSTANCE")
        self.encoder = nn.Sequential(  # shared over slices: (2, gi, gj) -> latent
            Convolution(in_channels=2, out_channels=b, strides=2, **conv2),
            Convolution(in_channels=b, out_channels=2 * b, strides=2, **conv2),
            Convolution(in_channels=2 * b, out_channels=4 * b, strides=2, **conv2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(4 * b * 16, latent),
            nn.ReLU(),
        )
        self.slice_fc = nn.Sequential(nn.Linear(latent + 1, latent), nn.ReLU())
        self.fuse = nn.Sequential(nn.Linear(2 * latent, latent), nn.ReLU(), nn.Linear(latent, latent))
        self._seed = tuple(g // 8 for g in grid)
        self.expand = nn.Sequential(nn.Linear(latent, 4 * b * self._seed[0] * self._seed[1] * self._seed[2]),
                                    nn.ReLU())
        conv3t = dict(spatial_dims=3, kernel_size=3, strides=2, is_transposed=True, act="RELU", norm="INSTANCE")
        self.decoder = nn.Sequential(
            Convolution(in_channels=4 * b, out_channels=2 * b, **conv3t),
            Convolution(in_channels=2 * b, out_channels=b, **conv3t),
            Convolution(in_channels=b, out_channels=b // 2, **conv3t),
        )
        conv3 = dict(spatial_dims=3, kernel_size=3, act="RELU", norm="INSTANCE")
        self.head = nn.Sequential(
            Convolution(in_channels=b // 2 + len(CHANNELS), out_channels=b, **conv3),
            Convolution(in_channels=b, out_channels=b, dilation=2, **conv3),
            Convolution(in_channels=b, out_channels=1, spatial_dims=3, kernel_size=1, conv_only=True),
        )
        nn.init.zeros_(self.head[-1].conv.weight)  # start as the SDF interpolation
        nn.init.zeros_(self.head[-1].conv.bias)
        self.gain = nn.Parameter(torch.tensor(4.0))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(
        self,
        volume: torch.Tensor,
        slices: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Occupancy logits and the residual over the SDF logit.

        Parameters
        ----------
        volume : (N, 5, gi, gj, gk) tensor
            Box channels (:data:`~medrecon.completion.features.CHANNELS`).
        slices : (N, S, 2, gi, gj) tensor
            Drawn slices (image, mask), zero-padded.
        positions : (N, S) tensor
            Slice positions along the box, in [0, 1].
        valid : (N, S) bool tensor
            Which of the S slices are real.

        Returns
        -------
        logits, residual : (N, 1, gi, gj, gk) tensors
        """
        n, s = slices.shape[:2]
        codes = self.encoder(slices.flatten(0, 1)).view(n, s, -1)
        codes = self.slice_fc(torch.cat([codes, positions[..., None]], dim=-1))
        weight = valid[..., None].to(codes.dtype)
        mean = (codes * weight).sum(1) / weight.sum(1).clamp_min(1.0)
        peak = codes.masked_fill(~valid[..., None], float("-inf")).amax(1)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        latent = self.fuse(torch.cat([mean, peak], dim=-1))
        feats = self.decoder(self.expand(latent).view(n, -1, *self._seed))
        residual = self.head(torch.cat([feats, volume], dim=1))
        logits = self.gain * volume[:, 2:3] + self.bias + residual
        return logits, residual
