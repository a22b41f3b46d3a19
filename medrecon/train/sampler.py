"""Batches of slice stacks (2.5D) or patches (3D), cut and augmented on the device.

The cases live on the training device; indexing, cropping and augmentation
(random in-plane rotation and scale, intensity scale/shift, Gaussian noise)
are tensor operations there, so on a GPU the data pipeline costs a small
fraction of a training step. Left/right flips are never applied: kidney_left
and kidney_right must stay apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from medrecon.models.inference import plane_axis
from medrecon.train.data import Case


class Batcher:
    """Random training batches from a set of cases.

    Parameters
    ----------
    cases : sequence of Case
        Model-grid cases (moved to ``device``).
    batch : int
        Samples per batch.
    patch : int or tuple of 3 int
        In-plane patch size (2D) or patch shape (3D), in model voxels.
    context : int
        Slices per stack (2D); 0 for 3D patches.
    planes : sequence of str
        Planes to cut 2D stacks from (one plane per batch).
    orientation : str
        Model-grid orientation codes.
    device : torch.device
        Where batches are made.
    background : float
        Image value used for padding (air).
    seed : int
        Seed of the batcher's own generator.
    augment : bool
        Apply random spatial and intensity augmentation.
    foreground : float
        Probability that a sample is centred on a foreground voxel.
    """

    MAX_FOREGROUND = 200_000

    def __init__(self, cases: Sequence[Case], *, batch: int, patch, context: int,
                 planes: Sequence[str] = ("axial",), orientation: str = "LPS", device=None,
                 background: float = -1.0, seed: int = 0, augment: bool = True,
                 foreground: float = 0.8) -> None:
        import torch

        self.device = device or torch.device("cpu")
        self.batch = int(batch)
        self.context = int(context)
        dims = 2 if context else 3
        self.patch = (tuple(int(p) for p in patch) if isinstance(patch, Sequence)
                      else (int(patch),) * dims)
        self.axes = [plane_axis(p, orientation) for p in planes]
        self.background = float(background)
        self.augment = augment
        self.foreground = float(foreground)
        self.gen = torch.Generator(device="cpu").manual_seed(int(seed))
        self.dgen = torch.Generator(device=self.device).manual_seed(int(seed) + 1)
        self.cases: list[tuple] = []
        for case in cases:
            self.add(case)
        self._ring = 0

    def add(self, case: Case, *, replace: bool = False) -> None:
        """Add ``case`` (or, with ``replace``, put it in place of the oldest one)."""
        import torch

        img = case.image.to(self.device, non_blocking=True)
        lab = case.labels.to(self.device, non_blocking=True)
        # foreground positions stay on the host (a random subset), so that drawing a
        # sample never waits for the device
        fg = torch.nonzero(case.labels.cpu() > 0)
        if len(fg) > self.MAX_FOREGROUND:
            keep = torch.randperm(len(fg), generator=self.gen)[: self.MAX_FOREGROUND]
            fg = fg[keep]
        entry = (img, lab, fg)
        if replace and self.cases:
            self.cases[self._ring % len(self.cases)] = entry
            self._ring += 1
        else:
            self.cases.append(entry)

    def _randint(self, high: int) -> int:
        import torch

        return int(torch.randint(0, max(1, high), (1,), generator=self.gen))

    def _centre(self, lab, fg) -> list[int]:
        import torch

        if len(fg) and float(torch.rand(1, generator=self.gen)) < self.foreground:
            return [int(v) for v in fg[self._randint(len(fg))].tolist()]
        return [self._randint(s) for s in lab.shape]

    def __call__(self):
        """One batch: (x, y) with x (B, k, P, P) / (B, 1, P, P, P) float32, y (B, ...) int64."""
        import torch

        if not self.cases:
            raise ValueError("the batcher holds no cases")
        axis = self.axes[self._randint(len(self.axes))]
        xs, ys = [], []
        for _ in range(self.batch):
            img, lab, fg = self.cases[self._randint(len(self.cases))]
            c = self._centre(lab, fg)
            if self.context:
                x, y = self._stack(img, lab, c, axis)
            else:
                x, y = self._patch3d(img, lab, c)
            xs.append(x)
            ys.append(y)
        x = torch.stack(xs)
        y = torch.stack(ys)
        if self.augment:
            x, y = self._augment(x, y)
        return x, y

    def _window(self, n: int, centre: int, size: int) -> tuple[int, int, int, int]:
        """Source [a, b) and destination offset for a window of ``size`` around ``centre``."""
        jitter = self._randint(size // 2 + 1) - size // 4
        start = min(max(0, centre - size // 2 + jitter), max(0, n - size)) if n >= size else 0
        a, b = start, min(n, start + size)
        dst = 0 if n >= size else (size - n) // 2
        return a, b, dst, dst + (b - a)

    def _stack(self, img, lab, c, axis):
        import torch

        xs = img.movedim(axis, 0)
        ys = lab.movedim(axis, 0)
        centre = [c[axis]] + [c[i] for i in range(3) if i != axis]
        n = xs.shape[0]
        half = self.context // 2
        idx = torch.arange(centre[0] - half, centre[0] + half + 1, device=xs.device).clamp(0, n - 1)
        ph, pw = self.patch
        a0, b0, d0, e0 = self._window(xs.shape[1], centre[1], ph)
        a1, b1, d1, e1 = self._window(xs.shape[2], centre[2], pw)
        x = torch.full((self.context, ph, pw), self.background, device=xs.device)
        y = torch.zeros((ph, pw), dtype=torch.int64, device=xs.device)
        x[:, d0:e0, d1:e1] = xs[idx, a0:b0, a1:b1]
        y[d0:e0, d1:e1] = ys[centre[0], a0:b0, a1:b1]
        return x, y

    def _patch3d(self, img, lab, c):
        import torch

        x = torch.full((1, *self.patch), self.background, device=img.device)
        y = torch.zeros(self.patch, dtype=torch.int64, device=img.device)
        src, dst = [], []
        for d in range(3):
            a, b, s, e = self._window(img.shape[d], c[d], self.patch[d])
            src.append(slice(a, b))
            dst.append(slice(s, e))
        x[(slice(None), *dst)] = img[tuple(src)]
        y[tuple(dst)] = lab[tuple(src)]
        return x, y

    def _augment(self, x, y):
        import torch
        import torch.nn.functional as F

        b = x.shape[0]
        dev = x.device
        g = self.dgen

        def rand(*shape):
            return torch.rand(*shape, generator=g, device=dev)

        if x.ndim == 4:  # 2D: rotation +-15 deg, scale 0.85-1.15
            angle = (rand(b) - 0.5) * (math.pi / 6)
            scale = 0.85 + 0.3 * rand(b)
            cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
            theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                                 torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1)
        else:  # 3D: scale only
            scale = 0.9 + 0.2 * rand(b)
            theta = torch.zeros(b, 3, 4, device=dev)
            for i in range(3):
                theta[:, i, i] = 1 / scale
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x - self.background, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False) + self.background
        y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)[:, 0].long()
        view = (b,) + (1,) * (x.ndim - 1)
        x = x * (0.9 + 0.2 * rand(*view)) + 0.1 * (rand(*view) - 0.5)
        x = x + 0.03 * rand(*view) * torch.randn(x.shape, generator=g, device=dev)
        return x, y
