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
    fast: bool = False,
    organs: Sequence[str] = (),
    force_labels: bool = False,
) -> LabelSource:
    """Turn the user's choice of labels into a :class:`~medrecon.sources.base.LabelSource`.

    At most one of ``model``, ``preset`` and ``labels`` may be given; with none,
    the default network labels the study. Nothing is loaded or read here
    except the preset table (unknown preset names fail at once).

    Parameters
    ----------
    model : str or path-like, optional
        ``"default"``, a checkpoint folder or file, a MONAI bundle folder,
        ``"totalsegmentator[:TASK]"`` (TotalSegmentator's weights, TASK ``total``
        or ``total_mr``) or ``"nnunet:FOLDER"`` (an nnU-Net v2 trained-model folder).
    preset : str or sequence of str, optional
        HU-threshold preset name(s); ``"bone,lung"`` lists two.
    labels : path-like, optional
        An existing segmentation: label image, DICOM SEG, RTSTRUCT or a
        TotalSegmentator output folder.
    names : mapping or JSON path, optional
        Label id -> name table for ``labels``.
    device, planes, trust_bundle, batch_size
        Settings of the network (see :class:`~medrecon.sources.network.NetworkSource`).
    fast : bool
        TotalSegmentator's 3 mm variant.
    organs : sequence of str
        With TotalSegmentator: run only the parts that hold these structures.
    force_labels : bool
        Accept ``labels`` that look like an intensity image.

    Returns
    -------
    LabelSource

    Raises
    ------
    InputError
        If more than one source is asked for, ``names`` comes without
        ``labels``, ``fast`` without TotalSegmentator, or a preset name or
        TotalSegmentator task is unknown.
    MissingDependencyError
        An nnU-Net engine is asked for and nnunetv2 is not installed.
    """
    asked = [flag for flag, value in (("--model", model), ("--preset", preset), ("--labels", labels)) if value]
    if len(asked) > 1:
        raise InputError(f"choose one label source, got {' and '.join(asked)}")
    if names is not None and not labels:
        raise InputError("--names goes with --labels FILE")
    engine, _, target = str(model or "").partition(":")
    if fast and engine.lower() != "totalsegmentator":
        raise InputError("--fast goes with --model totalsegmentator")
    if engine.lower() in ("totalsegmentator", "nnunet") and not os.path.exists(str(model)):
        from medrecon.models.nnunet import require_nnunet

        if engine.lower() == "totalsegmentator":
            from medrecon.sources.totalseg import TotalSegmentatorSource

            source = TotalSegmentatorSource(target or "total", fast=fast, organs=tuple(organs), device=device)
            require_nnunet("--model totalsegmentator", load=False)
            return source
        if not target:
            raise InputError("--model nnunet:FOLDER needs the trained-model folder after 'nnunet:'")
        from medrecon.sources.nnunet import NnunetSource

        require_nnunet("--model nnunet:FOLDER", load=False)
        return NnunetSource(target, device=device)
    if preset:
        from medrecon.sources.presets import PresetSource

        return PresetSource(preset)
    if labels:
        from medrecon.sources.imported import ImportedSource

        return ImportedSource(os.fspath(labels), names=names, force_labels=force_labels)
    from medrecon.sources.network import NetworkSource

    return NetworkSource(model or "default", device=device, planes=planes, trust_bundle=trust_bundle,
                         batch_size=batch_size)
