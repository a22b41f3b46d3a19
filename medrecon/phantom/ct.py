"""Tissue attenuation table and the CT image model (texture, blur, noise).

Each voxel of the phantom first gets a *tissue* (an index into :data:`TISSUES`);
the image is then ``mean HU + texture + noise``, blurred by the scanner's point
spread function, as a reconstructed CT slice would be.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from medrecon.phantom.shapes import Grid


class Tissue(NamedTuple):
    """Attenuation of one tissue class in Hounsfield units."""

    name: str
    plain: float  # mean HU without contrast
    enhanced: float  # mean HU in the portal-venous phase
    texture: float  # standard deviation of its smooth texture, HU


#: Tissue classes; a tissue's id is its index here.
TISSUES: tuple[Tissue, ...] = (
    Tissue("air", -1000, -1000, 0),
    Tissue("subcutaneous_fat", -105, -105, 12),
    Tissue("muscle", 50, 58, 8),
    Tissue("visceral_fat", -95, -95, 15),
    Tissue("bowel", 30, 85, 18),
    Tissue("bowel_gas", -880, -880, 60),
    Tissue("lung", -860, -855, 25),
    Tissue("mediastinal_fat", -90, -90, 12),
    Tissue("liver", 58, 110, 7),
    Tissue("spleen", 48, 120, 7),
    Tissue("kidney_cortex", 40, 175, 10),
    Tissue("kidney_medulla", 35, 120, 10),
    Tissue("renal_sinus", -60, -55, 20),
    Tissue("aorta", 42, 190, 5),
    Tissue("vein", 42, 145, 5),
    Tissue("pancreas", 42, 100, 10),
    Tissue("stomach_wall", 40, 95, 8),
    Tissue("fluid", 8, 12, 4),
    Tissue("gas", -990, -990, 8),
    Tissue("gallbladder", 12, 14, 4),
    Tissue("heart", 42, 160, 8),
    Tissue("cancellous_bone", 230, 230, 35),
    Tissue("cortical_bone", 750, 750, 90),
    Tissue("disc", 85, 90, 8),
    Tissue("csf", 12, 14, 4),
    Tissue("spinal_cord", 35, 38, 4),
    Tissue("cartilage", 120, 125, 15),
    Tissue("table", 160, 160, 25),
)

#: Tissue name -> id.
T = {t.name: i for i, t in enumerate(TISSUES)}


def tissue_tables(rng: np.random.Generator, *, contrast: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-tissue mean HU (jittered per patient) and texture amplitude, float32 (n_tissues,)."""
    mean = np.array([t.enhanced if contrast else t.plain for t in TISSUES], np.float32)
    # Patients differ: enhancement by a few percent, soft tissue by a few HU.
    jitter = rng.normal(0.0, 1.0, size=len(TISSUES)).astype(np.float32)
    spread = np.where(np.abs(mean) < 300, 5.0, 0.02 * np.abs(mean)).astype(np.float32)
    spread[[T["air"], T["gas"]]] = 0.0
    mean = mean + jitter * spread
    texture = np.array([t.texture for t in TISSUES], np.float32)
    return mean, texture


def smooth_field(rng: np.random.Generator, grid: Grid, length_mm: float) -> np.ndarray:
    """Draw a smooth Gaussian random field on ``grid``, correlation length ~``length_mm``.

    Random values on a coarse lattice of pitch ``length_mm`` are spread to the
    voxels with Gaussian weights, one axis at a time (three small matrix
    products instead of a 3D filter). Returns float32 ``grid.shape`` with zero
    mean and unit standard deviation.
    """
    from scipy import sparse

    mats = []
    for axis in (grid.x, grid.y, grid.z):
        nodes = np.arange(np.floor(axis[0] / length_mm) - 1, np.ceil(axis[-1] / length_mm) + 2) * length_mm
        w = np.exp(-0.5 * ((axis[:, None] - nodes[None, :]) / (0.6 * length_mm)) ** 2)
        w /= w.sum(axis=1, keepdims=True)
        w[w < 1e-4] = 0.0  # each voxel feels a few nodes: keep the products sparse
        mats.append(sparse.csr_matrix(w.astype(np.float32)))
    (nx, cx), (ny, cy), (nz, cz) = (m.shape for m in mats)
    coarse = rng.normal(size=(cx, cy, cz)).astype(np.float32)
    f = (mats[2] @ coarse.reshape(cx * cy, cz).T).T.reshape(cx, cy, nz)
    f = (mats[1] @ np.moveaxis(f, 1, 0).reshape(cy, cx * nz)).reshape(ny, cx, nz)
    f = (mats[0] @ np.moveaxis(f, 1, 0).reshape(cx, ny * nz)).reshape(nx, ny, nz)
    # Normalise with statistics of a strided subset: the field is smooth.
    probe = f[::3, ::3, ::2]
    f -= np.float32(probe.mean())
    f /= np.float32(max(float(probe.std()), 1e-6))
    return np.ascontiguousarray(f, dtype=np.float32)


def render_ct(
    tissue: np.ndarray,
    grid: Grid,
    spacing: np.ndarray,
    rng: np.random.Generator,
    *,
    contrast: bool,
    noise_sd: float,
    psf_mm: float,
    slice_mm: float,
    subslices: int = 1,
) -> np.ndarray:
    """Turn a tissue map into a CT image in HU.

    Parameters
    ----------
    tissue : (nx, ny, nz * subslices) ndarray of uint8
        Tissue ids (indices into :data:`TISSUES`), sampled ``subslices`` times
        across each slice's thickness (consecutive along the last axis).
    grid : Grid
        World coordinates of the output voxels, mm (texture is a function of them).
    spacing : (3,) ndarray
        Voxel size along x, y, z, mm.
    rng : numpy.random.Generator
        Source of the texture, the per-patient HU jitter and the noise.
    contrast : bool
        Portal-venous enhancement.
    noise_sd : float
        Standard deviation of the image noise after blurring, HU.
    psf_mm, slice_mm : float
        In-plane blur and slice thickness (full widths at half maximum), mm.
    subslices : int
        Samples per slice: each voxel averages the attenuation across its
        slice's thickness (partial volume), as a detector row does.

    Returns
    -------
    (nx, ny, nz) ndarray of float32
        Integer-valued Hounsfield units in [-1024, 3071].
    """
    from scipy import ndimage

    mean, texture = tissue_tables(rng, contrast=contrast)
    nx, ny, nz = grid.shape
    if tissue.shape != (nx, ny, nz * subslices):
        raise ValueError(f"tissue shape {tissue.shape} does not match the grid {grid.shape} x {subslices} subslices")
    # Sub-slice averaging already integrates the slice profile; what is left is
    # the blur within one sub-slice.
    fwhm = np.array([psf_mm, psf_mm, slice_mm / subslices], float)
    sigma = fwhm / 2.3548 / np.asarray(spacing, float)
    # The noise is blurred with the image (CT noise is correlated); pre-scale it so
    # that its standard deviation after the blur is noise_sd.
    noise_scale = np.float32(noise_sd / _blur_gain(sigma))
    texture_field = smooth_field(rng, grid, 6.0)
    hu = np.empty((nx, ny, nz), np.float32)
    # Blocks of rows keep the temporaries small on 512 x 512 x 300 studies; the
    # noise stream is the same as drawn in one piece.
    for start in range(0, nx, 32):
        rows = slice(start, min(start + 32, nx))
        block = tissue[rows]
        values = mean[block]
        if subslices > 1:
            values = values.reshape(values.shape[0], ny, nz, subslices).mean(axis=3)
        # Texture amplitude of the tissue at the slice centre.
        values += texture[block[:, :, subslices // 2 :: subslices]] * texture_field[rows]
        values += rng.standard_normal(size=values.shape, dtype=np.float32) * noise_scale
        hu[rows] = values
    del texture_field
    ndimage.gaussian_filter(hu, sigma, mode="nearest", truncate=3.0, output=hu)
    np.clip(np.rint(hu, out=hu), -1024, 3071, out=hu)
    return hu


def _blur_gain(sigma: np.ndarray) -> float:
    """Factor by which the Gaussian blur of ``sigma`` voxels shrinks white noise."""
    from scipy import ndimage

    size = 2 * int(np.ceil(3 * max(sigma.max(), 0.5))) + 1
    delta = np.zeros((size,) * 3, np.float64)
    delta[(size // 2,) * 3] = 1.0
    kernel = ndimage.gaussian_filter(delta, sigma, mode="constant", truncate=3.0)
    return float(np.sqrt(np.sum(kernel**2)))
