"""nnU-Net v2 inference: the same result as nnunetv2's ``nnUNetPredictor``, in less time and memory.

What the network sees is exactly what nnU-Net's own predictor gives it:
nnunetv2's preprocessing (transpose, crop to the non-zero region, the plans'
intensity normalisation and resampling to the plans' spacing), the same
sliding-window tiles (``tile_step_size``), the same Gaussian tile weights and
the same mirroring. What differs is how the logits come back:

* nnunetv2 accumulates every class's logits for the whole image (in float16 on
  the CPU) and then resamples all classes at once to the input spacing with
  scikit-image in float64: 117 classes on a 512 x 512 x 300 CT need tens of GB.
* Here the tiles are processed row by row along the first axis; as soon as a
  slab of the network grid has all its tiles, its logits (float32) are
  resampled to the input grid with the plans' interpolation (linear, or nearest
  along the low-resolution axis when nnU-Net resamples it separately) and
  turned into labels. Memory is a few tile rows, whatever the image size.

Arrays here are in nnU-Net's axis order, (c, z, y, x) as SimpleITK reads a file;
:mod:`medrecon.sources.nnunet` turns a :class:`~medrecon.volume.Volume` into it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from medrecon.models.nnunet import NnunetModel
from medrecon.progress import ProgressFn, report


def predict_array(
    model: NnunetModel,
    image: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    mirroring: bool = True,
    tile_step_size: float = 0.5,
    device: str = "cpu",
    precision: str = "auto",
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Label an image with an nnU-Net model.

    Parameters
    ----------
    model : NnunetModel
        The trained-model folder, loaded.
    image : (z, y, x) or (1, z, y, x) ndarray
        The image in nnU-Net's axis order (SimpleITK's ``GetArrayFromImage``).
    spacing : 3 floats
        Voxel size in mm along z, y, x.
    mirroring : bool
        Test-time mirroring along the axes the trainer allows (nnU-Net's default).
    tile_step_size : float
        Sliding-window step as a fraction of the patch (nnU-Net's default 0.5).
    device : str
        Torch device of the network and the logits.
    precision : str
        Arithmetic of the network: ``"auto"`` (see :func:`resolve_precision`),
        ``"float32"`` (nnU-Net's CPU setting), ``"bfloat16"`` or ``"float16"``.
        Tile averaging, resampling and the segmentation layer stay float32.
    progress : ProgressFn, optional
        Called with (stage, fraction) per tile row.

    Returns
    -------
    (z, y, x) ndarray of uint8 or uint16
        nnU-Net label values (``dataset.json``), on the input grid.
    """
    import torch
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

    pm, cm = model.plans, model.configuration
    data = np.array(image, dtype=np.float32)  # a copy: normalisation works in place
    data = data[None] if data.ndim == 3 else data
    forward = list(pm.transpose_forward)
    data = data.transpose([0, *[a + 1 for a in forward]])
    spacing_t = [float(spacing[a]) for a in forward]
    shape_before_crop = data.shape[1:]
    data, seg, bbox = crop_to_nonzero(data, None)
    cropped_shape = data.shape[1:]
    report(progress, "preprocessing", 0.0)
    target = list(cm.spacing)
    new_shape = compute_new_shape(cropped_shape, spacing_t, target)
    preprocessor = cm.preprocessor_class(verbose=False)
    data = preprocessor._normalize(data, seg, cm, pm.foreground_intensity_properties_per_channel)
    data = cm.resampling_fn_data(data, new_shape, spacing_t, target)
    dev = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    del data

    out = np.zeros(cropped_shape, dtype=np.uint8 if len(model.labels.foreground_labels) < 255 else np.uint16)
    export = _Exporter(model, tuple(x.shape[1:]), tuple(cropped_shape), spacing_t, target, out, dev)
    for start, logits in _sliding_window(model, x, mirroring=mirroring, step=tile_step_size, device=dev,
                                         precision=precision, progress=progress):
        export.add(start, logits)
    export.finish()
    full = np.zeros(shape_before_crop, dtype=out.dtype)
    full[tuple(slice(lo, hi) for lo, hi in bbox)] = out
    return full.transpose(pm.transpose_backward)


def resolve_precision(precision: str, device) -> object:
    """Return the autocast dtype for ``precision`` on ``device`` (``None``: float32).

    ``"auto"``: float16 on CUDA, as nnU-Net's own predictor runs there; bfloat16
    on a CPU with native bfloat16 arithmetic (AVX512-BF16/AMX), through oneDNN;
    float32 elsewhere (nnU-Net's CPU setting).
    """
    import torch

    if precision not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"precision must be 'auto', 'float32', 'bfloat16' or 'float16', got {precision!r}")
    if precision == "float32":
        return None
    if precision != "auto":
        return getattr(torch, precision)
    if device.type == "cuda":
        return torch.float16
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return torch.bfloat16 if device.type == "cpu" and native else None


def _sliding_window(model: NnunetModel, x, *, mirroring: bool, step: float, device, precision: str,
                    progress: ProgressFn | None) -> Iterator[tuple[int, object]]:
    """Yield ``(start, logits)``: finished slabs of the network grid, in order along the first axis.

    ``logits`` is (classes, n, y, x) float32 for rows ``start .. start + n`` of the
    unpadded grid: the Gaussian-weighted mean over every tile (and fold, and
    mirror) that covers them, as nnunetv2 computes it. Where the networks end in
    a 1 x 1 x 1 segmentation layer and their features are fewer than the
    classes, the features are averaged and the layer applied once per voxel.
    """
    import contextlib
    import itertools

    import torch
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import (
        compute_gaussian,
        compute_steps_for_sliding_window,
    )

    patch = tuple(int(p) for p in model.configuration.patch_size)
    data, revert = pad_nd_image(x, patch, "constant", {"value": 0}, True, None)
    lo_keep, hi_keep = revert[1].start or 0, revert[1].stop if revert[1].stop is not None else data.shape[1]
    keep_yx = (slice(None), slice(None), *revert[2:])
    steps = compute_steps_for_sliding_window(tuple(data.shape[1:]), patch, step)
    gaussian = compute_gaussian(patch, sigma_scale=1.0 / 8, value_scaling_factor=10, dtype=torch.float16,
                                device=torch.device("cpu")).float().to(device)
    axes = model.mirror_axes if mirroring else None
    flips = ([()] + [tuple(a + 2 for a in c) for n in range(len(axes)) for c in itertools.combinations(axes, n + 1)]
             if axes else [()])
    n_cls, n_nets = model.labels.num_segmentation_heads, len(model.networks)
    heads = [h.to(device) if h is not None else None for h in model.heads]
    features = all(h is not None for h in heads) and sum(h.in_channels for h in heads) < n_cls
    width = sum(h.in_channels for h in heads) if features else n_cls
    nets = [net.to(device) for net in model.networks]
    p0 = patch[0]
    acc = torch.zeros((width, p0, *data.shape[2:]), dtype=torch.float32, device=device)
    weight = torch.zeros((p0, *data.shape[2:]), dtype=torch.float32, device=device)
    rows = steps[0]
    dtype = resolve_precision(precision, device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.inference_mode():
        for r, s0 in enumerate(rows):
            for s1, s2 in itertools.product(steps[1], steps[2]):
                sl = (slice(s1, s1 + patch[1]), slice(s2, s2 + patch[2]))
                tile = data[:, s0:s0 + p0, sl[0], sl[1]][None].to(device)
                outs = []
                for net, head in zip(nets, heads, strict=True):
                    mean = None
                    for f in flips:
                        with autocast:
                            out = net(torch.flip(tile, f) if f else tile)
                        out = (torch.flip(out, f) if f else out).float()
                        mean = out if mean is None else mean.add_(out)
                    mean = mean[0].div_(len(flips)) if len(flips) > 1 else mean[0]
                    outs.append(mean if features or head is None else _apply_head(head, mean))
                if len(outs) == 1:
                    pred = outs[0]
                else:
                    pred = torch.cat(outs) if features else sum(outs[1:], outs[0]) / n_nets
                acc[(slice(None), slice(None), *sl)].addcmul_(pred, gaussian)
                weight[(slice(None), *sl)].add_(gaussian)
            report(progress, "segmenting", (r + 1) / len(rows))
            nxt = rows[r + 1] if r + 1 < len(rows) else data.shape[1]
            done = nxt - s0 if r + 1 < len(rows) else 0
            # rows before the next tile row are final: hand them on a few at a time
            for lo in range(max(s0, lo_keep), min(nxt, hi_keep), 8):
                hi = min(lo + 8, nxt, hi_keep)
                slab = (acc[:, lo - s0:hi - s0] / weight[lo - s0:hi - s0])[keep_yx]
                if features:
                    parts = slab.split([h.in_channels for h in heads])
                    slab = sum(_apply_head(h, part) for h, part in zip(heads, parts, strict=True)) / n_nets
                yield lo - lo_keep, slab
            _shift_left(acc, done, 1)
            _shift_left(weight, done, 0)


def _apply_head(head, features):
    """Apply the 1 x 1 x 1 segmentation convolution to (C, z, y, x) float32 features."""
    import torch

    return torch.nn.functional.conv3d(features[None], head.weight.float(), head.bias.float())[0]


def _shift_left(t, n: int, dim: int) -> None:
    """Move ``t`` by ``n`` along ``dim`` in place (towards index 0) and zero the freed end."""
    size = t.shape[dim]
    n = min(n, size)
    if n <= 0:
        return
    for a in range(0, size - n, n):  # chunks of n never read what an earlier chunk overwrote
        b = min(a + n, size - n)
        t.narrow(dim, a, b - a).copy_(t.narrow(dim, a + n, b - a))
    t.narrow(dim, size - n, n).zero_()


def _axis_plan(n_in: int, n_out: int, linear: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``i0, i1`` and weight ``w`` of each output index along one axis.

    scikit-image's ``resize`` / ``scipy.ndimage.zoom(grid_mode=True, mode='nearest')``
    sampling: output ``o`` samples ``(o + 0.5) * n_in / n_out - 0.5``; order 0
    rounds half up, as ``map_coordinates`` does.
    """
    c = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    if n_in == n_out:
        i = np.arange(n_out)
        return i, i, np.zeros(n_out, np.float32)
    if not linear:
        i = np.clip(np.floor(c + 0.5), 0, n_in - 1).astype(np.int64)
        return i, i, np.zeros(n_out, np.float32)
    c = np.clip(c, 0, n_in - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (c - i0).astype(np.float32)


class _Exporter:
    """Resample finished logit slabs to the input grid and write their labels, slab by slab."""

    def __init__(self, model: NnunetModel, net_shape, out_shape, spacing, target, out: np.ndarray, device):
        import torch
        from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis

        cm = model.configuration
        kwargs = dict(cm.configuration.get("resampling_fn_probabilities_kwargs", {}))
        name = cm.configuration.get("resampling_fn_probabilities")
        if name != "resample_data_or_seg_to_shape" or int(kwargs.get("order", 1)) != 1 \
                or int(kwargs.get("order_z", 0)) not in (0, 1):
            from medrecon.errors import ModelError

            raise ModelError(f"{model.folder}: probability resampling {name}{kwargs} is not supported "
                             "(medrecon follows nnU-Net's default: linear, nearest along a separate z)")
        if tuple(net_shape) == tuple(out_shape):
            sep, axis = False, None
        else:
            sep, axis = determine_do_sep_z_and_axis(kwargs.get("force_separate_z"), target, spacing)
        linear = [not (sep and a == axis and int(kwargs.get("order_z", 0)) == 0) for a in range(3)]
        self.plans = [_axis_plan(n, m, lin) for n, m, lin in zip(net_shape, out_shape, linear, strict=True)]
        self.bilinear = linear[1] and linear[2]  # in-plane: torch's bilinear is the same sampling
        self.out_yx = tuple(out_shape[1:])
        self.same = tuple(net_shape) == tuple(out_shape)
        self.torch, self.device, self.out, self.model = torch, device, out, model
        self.buf = None  # finished network-grid rows not yet fully used, from row self.buf_lo
        self.buf_lo = 0
        self.next_out = 0

    def add(self, start: int, logits) -> None:
        """Take finished network rows ``start .. start + n`` and write every output row they complete."""
        torch = self.torch
        if self.buf is None:
            self.buf, self.buf_lo = logits, start
        else:
            self.buf = torch.cat([self.buf, logits], 1)
        self._emit(self.buf_lo + self.buf.shape[1])

    def finish(self) -> None:
        """Write the remaining output rows."""
        if self.buf is not None:
            self._emit(10**12)

    def _emit(self, available: int) -> None:
        torch = self.torch
        i0, i1, w = self.plans[0]
        stop = self.next_out
        while stop < len(i0) and i1[stop] < available:
            stop += 1
        for a in range(self.next_out, stop, 4):
            b = min(a + 4, stop)
            rows0 = torch.from_numpy(i0[a:b] - self.buf_lo).to(self.device)
            rows1 = torch.from_numpy(i1[a:b] - self.buf_lo).to(self.device)
            wz = torch.from_numpy(w[a:b]).to(self.device).view(1, -1, 1, 1)
            block = self.buf.index_select(1, rows0)
            if self.plans[0][2].any():
                block = torch.lerp(block, self.buf.index_select(1, rows1), wz)
            if self.bilinear and tuple(block.shape[2:]) != self.out_yx:
                block = torch.nn.functional.interpolate(block, size=self.out_yx, mode="bilinear",
                                                        align_corners=False)
            else:
                for axis in (1, 2):
                    block = self._resample(block, axis, *self.plans[axis])
            self.out[a:b] = self._labels(block)
        self.next_out = stop
        if stop < len(i0):  # drop rows no later output row needs
            keep = int(i0[stop]) - self.buf_lo
            if keep > 0:
                self.buf, self.buf_lo = self.buf[:, keep:], self.buf_lo + keep

    def _resample(self, block, dim: int, i0: np.ndarray, i1: np.ndarray, w: np.ndarray):
        torch = self.torch
        if len(i0) == block.shape[dim + 1] and not w.any() and np.array_equal(i0, np.arange(len(i0))):
            return block
        lo = block.index_select(dim + 1, torch.from_numpy(i0).to(self.device))
        if not w.any():
            return lo
        hi = block.index_select(dim + 1, torch.from_numpy(i1).to(self.device))
        shape = [1] * block.ndim
        shape[dim + 1] = -1
        return torch.lerp(lo, hi, torch.from_numpy(w).to(self.device).view(shape))

    def _labels(self, logits) -> np.ndarray:
        lm = self.model.labels
        if lm.has_regions:
            seg = lm.convert_logits_to_segmentation(logits.float().cpu())
            return np.asarray(seg, dtype=self.out.dtype)
        return logits.argmax(0).cpu().numpy().astype(self.out.dtype)
