"""Exceptions of medrecon. Every message says what is wrong and how to recover."""

from __future__ import annotations


class MedreconError(Exception):
    """Base class of every error medrecon raises on purpose (bad input, bad state)."""


class InputError(MedreconError, ValueError):
    """A file or folder that cannot be read as a medical image or label map."""


class DicomError(InputError):
    """A DICOM file or series that cannot be loaded (corrupt, mixed, incomplete)."""


class SeriesSelectionError(DicomError):
    """Several series are present and none was chosen; the message lists them."""

    def __init__(self, message: str, series: list | None = None) -> None:
        super().__init__(message)
        self.series = series or []


class GeometryError(InputError):
    """An affine, spacing or slice layout that makes no geometric sense."""


class UnsupportedFormatError(InputError):
    """A file format medrecon does not read or write."""


class ResourceLimitError(InputError):
    """A header declares sizes beyond what medrecon agrees to allocate."""


class ImageKindError(InputError):
    """An image given where a label map is expected, or a label map given as the image."""


class EmptySegmentationError(MedreconError):
    """A label map (or a requested organ) holds no voxels."""


class ImplausibleSegmentationError(EmptySegmentationError):
    """A label source found organs, but none of them is plausible anatomy (nothing to mesh).

    ``report`` is the run's report (a dict, each organ with its ``reasons``) where
    the run made one, else None.
    """

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report


class ModelError(MedreconError):
    """A checkpoint or bundle that cannot be loaded safely or does not fit."""


class OutputError(MedreconError, OSError):
    """An output that cannot be written (unwritable folder, disk full)."""


class MissingDependencyError(MedreconError, ImportError):
    """An optional dependency is needed for this feature and is not installed."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the optional package '{package}', which is not installed: "
            f"run  pip install 'medrecon[{extra}]'"
        )
        self.package = package
        self.extra = extra


def require(module: str, *, extra: str, feature: str, package: str | None = None):
    """Import an optional module or raise :class:`MissingDependencyError`.

    Parameters
    ----------
    module : str
        Module to import, e.g. ``"monai.networks"``.
    extra : str
        The medrecon extra that installs it, named in the error message.
    feature : str
        What the user was trying to do, named in the error message.
    package : str, optional
        Distribution name when it differs from the top-level module name.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(package or module.split(".")[0], extra, feature) from exc


class Cancelled(MedreconError):
    """The user cancelled a running job (raised from a progress callback)."""
