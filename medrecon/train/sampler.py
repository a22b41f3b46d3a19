"""Batches of slice stacks (2.5D) or patches (3D), cut and augmented on the device.

All cases sit in one padded tensor on the training device. A batch is drawn
without the host ever waiting for the device: sample centres (mostly on
foreground voxels), windows, the gather of the slice stacks and the
augmentation (random in-plane rotation and scale, intensity scale/shift,
Gaussian noise) are a handful of batched tensor operations there. On a GPU the
host can thus queue the next batch while the previous step runs. Left/right
flips are never applied: kidney_left and kidney_right must stay apart.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from medrecon.models.inference import plane_axis
from medrecon.train.data import FOREGROUND_SAMPLE, Case, foreground_sample


class Batcher:
    """Random training batches from a set of cases.

    Parameters
    ----------
    cases : sequence of Case
        Model-grid cases (copied to ``device``). Cases larger than the first ones
        by more than ``margin`` voxels along an axis are centre-cropped.
    batch : int
        Samples per batch.
    patch : int or tuple of int
        In-plane patch size (2D) or patch shape (3D), in model voxels.
    context : int
        Slices per stack (2D); 0 for 3D patches.
    planes : sequence of str
        Planes to cut 2D stacks from, one plane per batch (repeat a name to weight it).
    orientation : str
        Model-grid orientation codes.
    device : torch.device
        Where batches are made.
    background : float
        Image value used for padding (air).
    seed : int
        Seed of the batcher's generators.
    augment : bool
        Apply random spatial and intensity augmentation.
    foreground : float
        Probability that a sample is centred on a foreground voxel.
    margin : int
        Extra room per axis of the padded store, for later (larger) cases.
    """

    def __init__(self, cases: Sequence[Case], *, batch: int, patch, context: int,
                 planes: Sequence[str] = ("axial",), orientation: str = "LPS", device=None,
                 background: float = -1.0, seed: int = 0, augment: bool = True,
                 foreground: float = 0.8, margin: int = 16) -> None:
        import torch

        if not cases:
            raise ValueError("the batcher needs at least one case")
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
        self.rng = random.Random(seed)
        self.gen = torch.Generator(device="cpu").manual_seed(int(seed))
        self.dgen = torch.Generator(device=self.device).manual_seed(int(seed) + 1)
        self.slot = tuple(max(c.image.shape[d] for c in cases) + margin for d in range(3))
        n = len(cases)
        self.images = torch.full((n, *self.slot), self.background, device=self.device)
        self.labels = torch.zeros((n, *self.slot), dtype=torch.uint8, device=self.device)
        self.shapes = torch.zeros((n, 3), dtype=torch.long, device=self.device)
        self.fg = torch.zeros((n, FOREGROUND_SAMPLE, 3), dtype=torch.long, device=self.device)
        for i, case in enumerate(cases):
            self._put(i, case)
        self._ring = 0

    @property
    def n_cases(self) -> int:
        """Cases held."""
        return int(self.images.shape[0])

    def _put(self, i: int, case: Case) -> None:
        import torch

        src = []
        for d in range(3):
            n = case.image.shape[d]
            start = max(0, (n - self.slot[d]) // 2)
            src.append(slice(start, start + min(n, self.slot[d])))
        img = case.image[tuple(src)]
        lab = case.labels[tuple(src)]
        dst = tuple(slice(0, s) for s in img.shape)
        self.images[i].fill_(self.background)
        self.labels[i].zero_()
        self.images[i][dst] = img.to(self.device, non_blocking=True)
        self.labels[i][dst] = lab.to(self.device, dtype=torch.uint8, non_blocking=True)
        # non-blocking copies only: a blocking one would make the host wait for the GPU
        self.shapes[i] = torch.tensor(img.shape).to(self.device, non_blocking=True)
        # sample centres: a fixed-size table per case, so a new case is one small copy
        fg = case.foreground if case.foreground is not None else foreground_sample(lab)
        if fg is None:  # no labels: centre anywhere in the volume
            fg = (torch.rand(FOREGROUND_SAMPLE, 3, generator=self.gen)
                  * torch.tensor(img.shape)).long()
        else:
            fg = fg - torch.tensor([s.start for s in src])
            fg = torch.minimum(fg.clamp(min=0), torch.tensor(img.shape) - 1)
        self.fg[i] = fg.to(self.device, non_blocking=True)

    def add(self, case: Case, *, replace: bool = True) -> None:
        """Put ``case`` in place of the oldest one (the store has a fixed number of slots)."""
        if not replace:
            raise ValueError("the batcher holds a fixed number of cases; use replace=True")
        self._put(self._ring % self.n_cases, case)
        self._ring += 1

    def _centres(self):
        """(B, 4) device tensor: case index and a voxel to centre each sample on."""
        import torch

        b, dev, g = self.batch, self.device, self.dgen
        case = torch.randint(0, self.n_cases, (b,), device=dev, generator=g)
        uniform = (torch.rand(b, 3, device=dev, generator=g) * self.shapes[case]).long()
        row = torch.randint(0, FOREGROUND_SAMPLE, (b,), device=dev, generator=g)
        use = torch.rand(b, device=dev, generator=g) < self.foreground
        voxel = torch.where(use[:, None], self.fg[case, row], uniform)
        return torch.cat([case[:, None], voxel], 1)

    def _starts(self, centre, size: int):
        import torch

        jitter = torch.randint(-(size // 4), size // 4 + 1, centre.shape, device=self.device,
                               generator=self.dgen)
        return centre - size // 2 + jitter

    def __call__(self):
        """One batch: (x, y) with x (B, k, P, P) or (B, 1, P, P, P) float32, y (B, ...) int64."""
        return self.make(self.next_kind())

    @property
    def kinds(self) -> int:
        """Kinds of batch: one per entry of ``planes`` (2D), one for 3D patches."""
        return len(self.axes) if self.context else 1

    def next_kind(self) -> int:
        """Draw which kind of batch comes next: an index into the planes (0 for 3D patches)."""
        return self.rng.randrange(len(self.axes)) if self.context else 0

    def make(self, kind: int):
        """One batch of ``kind`` (see :meth:`next_kind`); only device work, no host waits."""
        x, y = self._stacks(self.axes[kind]) if self.context else self._patches()
        if self.augment:
            x, y = self._augment(x, y)
        return x, y

    def _gather(self, idx):
        """Image and labels at (case, i, j, k) index tensors; outside the store: background."""
        import torch

        inside = None
        clamped = [idx[0]]
        for d in range(3):
            ix = idx[d + 1]
            ok = (ix >= 0) & (ix < self.slot[d])
            inside = ok if inside is None else inside & ok
            clamped.append(ix.clamp(0, self.slot[d] - 1))
        img = self.images[tuple(clamped)]
        lab = self.labels[tuple(clamped)]
        img = torch.where(inside, img, torch.full_like(img, self.background))
        lab = torch.where(inside, lab, torch.zeros_like(lab))
        return img, lab

    def _stacks(self, axis: int):
        import torch

        inplane = [d for d in range(3) if d != axis]
        c = self._centres()
        b, dev = self.batch, self.device
        half = self.context // 2
        offsets = torch.arange(-half, half + 1, device=dev)
        # the slice axis clamps at the volume's ends, as inference does
        last = self.shapes[c[:, 0], axis] - 1
        s_idx = torch.minimum((c[:, axis + 1, None] + offsets).clamp(min=0), last[:, None])
        idx = [None, None, None]
        idx[axis] = s_idx.view(b, -1, 1, 1)
        for n, (d, size) in enumerate(zip(inplane, self.patch, strict=True)):
            start = self._starts(c[:, d + 1], size)
            shape = [b, 1, 1, 1]
            shape[2 + n] = size
            idx[d] = (start[:, None] + torch.arange(size, device=dev)).view(shape)
        case = c[:, 0].view(b, 1, 1, 1)
        x, _ = self._gather([case, *idx])
        idx[axis] = c[:, axis + 1].view(b, 1, 1, 1)
        _, y = self._gather([case, *idx])
        return x, y[:, 0].long()

    def _patches(self):
        import torch

        c = self._centres()
        b, dev = self.batch, self.device
        idx = []
        for d, size in enumerate(self.patch):
            start = self._starts(c[:, d + 1], size)
            shape = [b, 1, 1, 1]
            shape[1 + d] = size
            idx.append((start[:, None] + torch.arange(size, device=dev)).view(shape))
        x, y = self._gather([c[:, 0].view(b, 1, 1, 1), *idx])
        return x[:, None], y.long()

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
            zero = torch.zeros_like(cos)
            theta = torch.stack([torch.stack([cos, -sin, zero], 1),
                                 torch.stack([sin, cos, zero], 1)], 1)
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
