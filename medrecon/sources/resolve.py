"""The one place where what the user asked for (``--model``, ``--preset``, ``--labels``) becomes a source."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from medrecon.errors import InputError
from medrecon.sources.base import LabelSource


def resolve_source(
    *,
    model: str | os.PathLike | None = None,
    preset: str | Sequence[str] | None = None,
    labels: str | os.PathLike | None = None,
    names: Mapping[int, str] | str | os.PathLike | None = None,
    device: str = "cpu",
    planes: str = "auto",
    trust_bundle: bool = False,
    batch_size: int | None = None,
    force_labels: bool = False,
) -> LabelSource:
    """Turn the user's choice of labels into a :class:`~medrecon.sources.base.LabelSource`.

    At most one of ``model``, ``preset`` and ``labels`` may be given; with none,
    the default network labels the study. Nothing is loaded or read here
    except the preset table (unknown preset names fail at once).

    Parameters
    ----------
    model : str or path-like, optional
        ``"default"``, a checkpoint folder or file, or a MONAI bundle folder.
    preset : str or sequence of str, optional
        HU-threshold preset name(s); ``"bone,lung"`` lists two.
    labels : path-like, optional
        An existing segmentation: label image, DICOM SEG, RTSTRUCT or a
        TotalSegmentator output folder.
    names : mapping or JSON path, optional
        Label id -> name table for ``labels``.
    device, planes, trust_bundle, batch_size
        Settings of the network (see :class:`~medrecon.sources.network.NetworkSource`).
    force_labels : bool
        Accept ``labels`` that look like an intensity image.

    Returns
    -------
    LabelSource

    Raises
    ------
    InputError
        If more than one source is asked for, ``names`` comes without
        ``labels``, or a preset name is unknown.
    """
    asked = [flag for flag, value in (("--model", model), ("--preset", preset), ("--labels", labels)) if value]
    if len(asked) > 1:
        raise InputError(f"choose one label source, got {' and '.join(asked)}")
    if names is not None and not labels:
        raise InputError("--names goes with --labels FILE")
    if preset:
        from medrecon.sources.presets import PresetSource

        return PresetSource(preset)
    if labels:
        from medrecon.sources.imported import ImportedSource

        return ImportedSource(os.fspath(labels), names=names, force_labels=force_labels)
    from medrecon.sources.network import NetworkSource

    return NetworkSource(model or "default", device=device, planes=planes, trust_bundle=trust_bundle,
                         batch_size=batch_size)
