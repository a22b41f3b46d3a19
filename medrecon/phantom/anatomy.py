"""A randomly drawn patient: body, spine, ribs, lungs and abdominal organs in mm.

Coordinates are LPS millimetres in the *anatomical* frame: x = 0 on the body's
midline, y = 0 at the centre of the body's cross-section (+y posterior),
z = 0 at the centre of the L1 vertebral body (+z superior). The phantom places
this frame anywhere in the scanner's world by a translation.

Sizes follow an average adult (liver ~1.6 L, spleen ~0.2 L, kidneys ~0.15 L,
body 320 x 230 mm), scaled by one random factor per patient and jittered per
organ. Sidedness is the point of a phantom: the liver and right kidney lie at
negative x (patient right), the spleen and left kidney at positive x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrecon.phantom.shapes import Blob, Warp, random_warp, rotation


@dataclass(frozen=True)
class Vertebra:
    """One vertebra: TotalSegmentator name, body centre height and half height (mm)."""

    name: str
    z: float
    half_height: float
    lumbar: bool


@dataclass(frozen=True)
class Rib:
    """One rib: number 1..12, side (+1 left, -1 right), posterior height, descent, extent."""

    number: int
    side: int
    z_posterior: float
    drop: float
    phi_end: float  # angle from the posterior midline where the bone ends (rad)
    cartilage_end: float  # where the costal cartilage ends (rad), == phi_end if none


@dataclass(frozen=True)
class Pancreas:
    """A tapering tube from the head (right, at ``x0``) to the tail (left, at ``x1``), mm."""

    x0: float
    x1: float
    y0: float  # centre line y at x0; it runs posterior towards the tail
    dydx: float
    z0: float  # centre line z at x0; the tail rises
    dzdx: float
    r_head: float
    r_tail: float


@dataclass(frozen=True)
class Patient:
    """All random parameters of one phantom patient (anatomical frame, mm)."""

    scale: float
    body_a: float  # body semi-axis along x (left-right)
    body_b: float  # body semi-axis along y (antero-posterior)
    fat: float  # subcutaneous fat thickness
    muscle: float  # abdominal wall muscle thickness
    spine_y: float  # y of the vertebral bodies' centres (at z far from the lordosis)
    lordosis: float  # anterior bulge of the lumbar spine
    vertebrae: tuple[Vertebra, ...]
    ribs: tuple[Rib, ...]
    dome_right: float  # top of the right hemidiaphragm
    dome_left: float
    liver: tuple[Blob, Blob]  # right lobe, left lobe
    gallbladder: Blob
    spleen: Blob
    kidney_right: Blob
    kidney_left: Blob
    stomach: Blob | None
    stomach_air: float  # fraction of the stomach's depth filled with gas (anterior)
    pancreas: Pancreas | None
    aorta_x: float
    aorta_r: float
    ivc_x: float
    heart: Blob
    bowel_fraction: float  # share of the free abdominal cavity filled by bowel
    body_warp: Warp

    def spine_y_at(self, z: np.ndarray) -> np.ndarray:
        """Y of the vertebral body centre line at heights ``z`` (lumbar lordosis bulges forward)."""
        s = self.scale
        return self.spine_y - self.lordosis * np.exp(-(((z + 70 * s) / (90 * s)) ** 2))

    @property
    def top(self) -> float:
        """Highest point of interest: the higher diaphragm dome, mm."""
        return max(self.dome_right, self.dome_left)


def _blob(
    rng: np.random.Generator,
    center,
    radii,
    angles=(0.0, 0.0, 0.0),
    *,
    scale: float,
    jitter_mm: float = 6.0,
    size_jitter: float = 0.08,
    warp_mm: float = 6.0,
    exponent: float = 2.0,
) -> Blob:
    c = np.asarray(center, float) * scale + rng.normal(0.0, jitter_mm * scale, 3)
    r = np.asarray(radii, float) * scale * rng.uniform(1 - size_jitter, 1 + size_jitter, 3)
    a = np.asarray(angles, float) + rng.normal(0.0, 0.08, 3)
    warp = random_warp(rng, amplitude_mm=warp_mm * scale) if warp_mm > 0 else None
    return Blob(center=c, radii=r, rot=rotation(*a), exponent=exponent, warp=warp)


def _spine(rng: np.random.Generator, s: float) -> tuple[Vertebra, ...]:
    lumbar_pitch = 35.0 * s * rng.uniform(0.95, 1.05)
    thoracic_pitch = 27.0 * s * rng.uniform(0.95, 1.05)
    out = []
    # S1 (the top of the sacrum) below L5, then L5..L1 at z = -4p..0, then T12..T5.
    out.append(Vertebra("vertebrae_S1", -4.5 * lumbar_pitch - 18 * s, 14 * s, True))
    for i, n in enumerate(range(5, 0, -1)):
        out.append(Vertebra(f"vertebrae_L{n}", -(4 - i) * lumbar_pitch, lumbar_pitch / 2 - 4.5 * s, True))
    z = 0.5 * (lumbar_pitch + thoracic_pitch)
    for n in range(12, 4, -1):
        out.append(Vertebra(f"vertebrae_T{n}", z, thoracic_pitch / 2 - 3.0 * s, False))
        z += thoracic_pitch
    return tuple(out)


def _ribs(rng: np.random.Generator, s: float, vertebrae: tuple[Vertebra, ...]) -> tuple[Rib, ...]:
    z_of = {v.name: v.z for v in vertebrae}
    ribs = []
    for n in range(5, 13):
        for side in (1, -1):
            floating = n >= 11
            phi_end = {11: 2.0, 12: 1.55}.get(n, 2.55) + rng.normal(0, 0.05)
            cartilage = phi_end if floating else min(2.95, phi_end + 0.35)
            ribs.append(Rib(
                number=n,
                side=side,
                z_posterior=z_of[f"vertebrae_T{n}"] + 4 * s + rng.normal(0, 2 * s),
                drop=(55.0 if floating else 85.0 + 4 * (10 - n)) * s * rng.uniform(0.9, 1.1),
                phi_end=phi_end,
                cartilage_end=cartilage,
            ))
    return tuple(ribs)


def draw_patient(
    rng: np.random.Generator,
    *,
    body_scale: tuple[float, float] = (0.92, 1.08),
    stomach: bool = True,
    pancreas: bool = True,
) -> Patient:
    """Draw one patient's anatomy.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness (a seed gives the same patient).
    body_scale : (float, float)
        Range of the overall size factor relative to the reference adult.
    stomach, pancreas : bool
        Whether the patient gets these organs.
    """
    s = float(rng.uniform(*body_scale))
    body_a = 160.0 * s * rng.uniform(0.95, 1.05)
    body_b = 115.0 * s * rng.uniform(0.93, 1.07)
    fat = float(rng.uniform(12.0, 32.0) * s)
    muscle = float(rng.uniform(9.0, 14.0) * s)
    spine_y = body_b - fat - 62.0 * s
    vertebrae = _spine(rng, s)
    ribs = _ribs(rng, s, vertebrae)

    liver_r = _blob(rng, (-60, -5, 42), (80, 72, 86), (0.0, 0.1, -0.15), scale=s, warp_mm=9.0)
    liver_l = _blob(rng, (8, -50, 62), (56, 28, 38), (0.0, -0.2, -0.25), scale=s, warp_mm=6.0)
    dome_right = float(liver_r.center[2] + liver_r.radii[2] - 8 * s)
    dome_left = dome_right - float(rng.uniform(8.0, 22.0) * s)

    gallbladder = _blob(rng, (-48, -55, 0), (14, 14, 32), (0.5, 0.0, 0.3), scale=s, jitter_mm=4, warp_mm=2.0)
    spleen = _blob(rng, (84, 28, 55), (26, 48, 54), (0.0, 0.15, -0.6), scale=s, warp_mm=5.0)
    # Kidneys sit beside the spine at the depth of the vertebral bodies; the right one lower.
    kidney_y = spine_y / s + 8
    kidney_right = _blob(rng, (-72, kidney_y, -30), (28, 24, 56), (0.2, -0.25, 0.5), scale=s, jitter_mm=4, warp_mm=3.0)
    kidney_left = _blob(rng, (72, kidney_y, -12), (28, 24, 56), (0.2, 0.25, -0.5), scale=s, jitter_mm=4, warp_mm=3.0)

    stomach_blob = None
    if stomach:
        stomach_blob = _blob(rng, (48, -38, 58), (46, 34, 55), (0.0, 0.3, 0.4), scale=s, warp_mm=7.0)
    pancreas_params = None
    if pancreas:
        # From the head by the duodenum to the tail at the splenic hilum.
        pancreas_params = Pancreas(
            x0=-45.0 * s,
            x1=88.0 * s,
            y0=float(spine_y - 58 * s),
            dydx=0.38,
            z0=float(-8 * s + rng.normal(0, 4 * s)),
            dzdx=0.18,
            r_head=float(20.0 * s * rng.uniform(0.9, 1.1)),
            r_tail=float(11.0 * s * rng.uniform(0.9, 1.1)),
        )

    heart = _blob(rng, (22, -42, dome_left / s + 38), (62, 48, 55), (0.3, 0.0, -0.5), scale=s, jitter_mm=3, warp_mm=3.0)

    return Patient(
        scale=s,
        body_a=float(body_a),
        body_b=float(body_b),
        fat=fat,
        muscle=muscle,
        spine_y=float(spine_y),
        lordosis=float(rng.uniform(4.0, 12.0) * s),
        vertebrae=vertebrae,
        ribs=ribs,
        dome_right=dome_right,
        dome_left=dome_left,
        liver=(liver_r, liver_l),
        gallbladder=gallbladder,
        spleen=spleen,
        kidney_right=kidney_right,
        kidney_left=kidney_left,
        stomach=stomach_blob,
        stomach_air=float(rng.uniform(0.15, 0.45)),
        pancreas=pancreas_params,
        aorta_x=float(14 * s + rng.normal(0, 3 * s)),
        aorta_r=float(11 * s * rng.uniform(0.9, 1.15)),
        ivc_x=float(-24 * s + rng.normal(0, 3 * s)),
        heart=heart,
        bowel_fraction=float(rng.uniform(0.35, 0.65)),
        body_warp=random_warp(rng, amplitude_mm=6.0 * s, wavelength_mm=(150.0, 400.0)),
    )
