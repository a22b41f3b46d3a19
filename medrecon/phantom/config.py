"""Settings of the synthetic CT phantom generator."""

from __future__ import annotations

from dataclasses import dataclass, fields

#: Orientation modes besides explicit three-letter codes such as ``"LPS"``.
ORIENTATION_MODES = ("axial", "random")

# Values a ``None`` field takes, per preset. "default" is a 256 x 256 adult abdomen
# at about 1.3-1.6 mm in-plane (the body must fit a 256 matrix) with 2.5-5 mm
# slices; "small" is a coarse, fast study for tests (96 x 96 x 32).
_PRESETS: dict[str, dict[str, object]] = {
    "default": {
        "matrix": 256,
        "spacing_xy": (1.25, 1.6),
        "slice_thickness": (2.5, 5.0),
        "coverage_mm": (220.0, 300.0),
        "slices": None,
    },
    "small": {
        "matrix": 96,
        "spacing_xy": (3.6, 4.2),
        "slice_thickness": (7.0, 8.5),
        "coverage_mm": None,
        "slices": 32,
    },
}


@dataclass(frozen=True)
class PhantomConfig:
    """How :func:`medrecon.phantom.make_phantom` draws a study.

    Ranges are ``(low, high)`` and sampled uniformly per seed. Fields left at
    ``None`` take the value of the preset (``small=True`` for the test preset,
    else the default one); set a field to override it, e.g.
    ``PhantomConfig(matrix=512, spacing_xy=(0.6, 1.0), slice_thickness=(1.0, 5.0))``
    for clinical-resolution studies. Preset values are filled in at
    construction, so ``dataclasses.replace(config, small=True)`` keeps the
    sizes already resolved; build a new ``PhantomConfig(small=True, ...)`` instead.

    Attributes
    ----------
    small : bool
        Test preset: 96 x 96 in-plane, 32 slices of 7-8.5 mm (< 1 s to make).
    matrix : int
        In-plane voxels along each of the two axial axes.
    spacing_xy : (float, float)
        In-plane voxel size range, mm. When the drawn body would not fit the
        matrix at the drawn spacing, the spacing is raised until it does (as a
        CT operator widens the reconstruction field of view).
    slice_thickness : (float, float)
        Slice spacing (= thickness; contiguous slices) range, mm.
    coverage_mm : (float, float) or None
        Range of the cranio-caudal extent; the slice count follows from it.
    slices : int or None
        Fixed slice count (overrides ``coverage_mm``).
    orientation : str
        How the stored array is laid out relative to the patient: ``"axial"``
        (slices along the body axis, random in-plane flips/swaps, k along the
        row x column normal as DICOM readers return axial series),
        ``"random"`` (any of the 48 axis permutations and flips) or a fixed
        code such as ``"LPS"`` or ``"RAS"``.
        The anatomy in world coordinates is the same whatever is chosen.
    contrast : bool or None
        Portal-venous contrast enhancement; ``None`` draws it (70 % enhanced).
    noise_hu : (float, float)
        Range of the standard deviation of the Gaussian image noise, HU.
    body_scale : (float, float)
        Range of the overall patient size relative to a reference adult
        (body 320 x 230 mm).
    psf_mm : float
        Full width at half maximum of the in-plane blur (scanner resolution), mm.
        Through-plane blur follows the slice thickness.
    stomach, pancreas : bool
        Include these organs (with their labels).
    """

    small: bool = False
    matrix: int | None = None
    spacing_xy: tuple[float, float] | None = None
    slice_thickness: tuple[float, float] | None = None
    coverage_mm: tuple[float, float] | None = None
    slices: int | None = None
    orientation: str = "axial"
    contrast: bool | None = None
    noise_hu: tuple[float, float] = (10.0, 20.0)
    body_scale: tuple[float, float] = (0.92, 1.08)
    psf_mm: float = 1.2
    stomach: bool = True
    pancreas: bool = True

    def __post_init__(self) -> None:
        preset = _PRESETS["small" if self.small else "default"]
        explicit = {f.name for f in fields(self) if getattr(self, f.name) is not None}
        if "coverage_mm" in explicit and "slices" not in explicit:
            explicit.add("slices")  # an explicit coverage wins over the preset's slice count
        for name, value in preset.items():
            if name not in explicit:
                object.__setattr__(self, name, value)
        if self.slices is None and self.coverage_mm is None:
            raise ValueError("PhantomConfig needs either coverage_mm or slices")
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.matrix, int) or not 16 <= self.matrix <= 2048:
            raise ValueError(f"matrix must be an int in 16..2048, got {self.matrix!r}")
        for name in ("spacing_xy", "slice_thickness", "coverage_mm", "noise_hu", "body_scale"):
            value = getattr(self, name)
            if value is None:
                continue
            lo, hi = (float(v) for v in value)
            floor = 0.0 if name == "noise_hu" else 1e-3
            if not (floor <= lo <= hi) or hi != hi:
                raise ValueError(f"{name} must be a range (low, high) with {floor} <= low <= high, got {value!r}")
        if self.slices is not None and not (isinstance(self.slices, int) and 1 <= self.slices <= 4096):
            raise ValueError(f"slices must be an int in 1..4096, got {self.slices!r}")
        orientation = self.orientation
        if orientation not in ORIENTATION_MODES:
            codes = orientation.upper()
            axes = {"R": 0, "L": 0, "A": 1, "P": 1, "I": 2, "S": 2}
            if len(codes) != 3 or any(c not in axes for c in codes) or len({axes[c] for c in codes}) != 3:
                raise ValueError(
                    f"orientation must be 'axial', 'random' or three LPS codes such as 'LPS', got {orientation!r}"
                )
        if self.psf_mm < 0:
            raise ValueError(f"psf_mm must be >= 0, got {self.psf_mm}")
