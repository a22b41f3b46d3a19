"""Command-line options shared by ``reconstruct``, ``demo`` and ``batch``.

Mesh options have the same names, defaults and meaning as in ``medrecon mesh``.
No heavy imports here: ``medrecon --help`` must stay fast.
"""

from __future__ import annotations

import argparse

from medrecon.io.formats import MESH_FORMATS


def organ_list(text: str) -> list[str]:
    """Parse ``liver,spleen`` / ``1,5`` into a list of organ names or ids."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("give organ names or label ids separated by commas, e.g. liver,spleen")
    return items


def bed_size(text: str) -> tuple[float, float, float]:
    """Parse ``200,200,200`` (a printer's X, Y, Z in mm) into three positive sizes."""
    try:
        sizes = tuple(float(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 3 or not all(0 < v < float("inf") for v in sizes):
        raise argparse.ArgumentTypeError(f"give the printable volume as X,Y,Z in mm, e.g. 200,200,200; got {text!r}")
    return sizes[0], sizes[1], sizes[2]


def add_mesh_options(p: argparse.ArgumentParser, *, workers_flag: str = "--mesh-workers") -> None:
    """Add the mesh options (smoothing, decimation, clean-up, format, frame).

    ``medrecon mesh`` names the thread count ``--workers``; commands that also
    run studies in parallel processes name it ``--mesh-workers``.
    """
    g = p.add_argument_group("meshes")
    g.add_argument("--smooth", type=float, default=0.5, metavar="S",
                   help="smoothing factor on 3D Slicer's scale 0..1 (default 0.5, Slicer's default)")
    g.add_argument("--decimate", type=float, default=0.0, metavar="R",
                   help="fraction of triangles to remove, 0..<1 (default 0)")
    g.add_argument("--target-faces", type=int, metavar="N", help="aim for N triangles per organ instead")
    g.add_argument("--keep-largest", action="store_true", help="keep only the largest piece of each organ")
    g.add_argument("--min-component", type=float, default=0.0, metavar="MM3",
                   help="drop pieces smaller than this volume in mm^3")
    g.add_argument("--hollow", type=float, default=0.0, metavar="MM", help="hollow shell wall thickness in mm")
    g.add_argument("--iso-spacing", type=float, metavar="MM", help="resample masks to cubic voxels first")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--scale", type=float, default=1.0, metavar="S",
                      help="scale the whole scene uniformly by S (default 1: life size; the report says so)")
    size.add_argument("--fit-bed", type=bed_size, metavar="X,Y,Z",
                      help="shrink the whole scene uniformly to fit a printer's X,Y,Z mm (never enlarges)")
    g.add_argument("--process", choices=("fdm", "sla"), default="fdm", type=str.lower,
                   help="printing process the print checks judge against (default fdm)")
    g.add_argument("--min-wall", type=float, metavar="MM",
                   help="thinnest wall a print-ready mesh may have (default: 1.0 mm fdm, 0.4 mm sla)")
    g.add_argument("--drain-holes", type=int, default=0, metavar="N",
                   help="drain holes per cavity of a --hollow shell, at its lowest points (+z up)")
    g.add_argument("--drain-diameter", type=float, default=3.0, metavar="MM",
                   help="drain hole diameter in mm (default 3)")
    g.add_argument(workers_flag, dest="mesh_workers", type=int, default=1, metavar="N",
                   help="organs meshed in parallel threads (0: all cores; default 1)")
    g.add_argument("--format", dest="fmt", choices=tuple(MESH_FORMATS), default="stl",
                   help="mesh file format (default stl)")
    g.add_argument("--frame", choices=("LPS", "RAS"), default="LPS", type=str.upper,
                   help="coordinate frame of the files (default LPS, the DICOM patient frame)")


def add_reconstruct_options(p: argparse.ArgumentParser, *, labels: bool = True) -> None:
    """Add the label-source, organ, device, privacy and mesh options of ``reconstruct``."""
    src = p.add_argument_group("labels (choose one; default: --model default)")
    one = src.add_mutually_exclusive_group()
    one.add_argument("--model", metavar="MODEL",
                     help="segmentation network: 'default', a checkpoint path, a MONAI bundle folder, "
                          "'totalsegmentator[:total|total_mr]' (its downloaded weights) or 'nnunet:FOLDER'")
    one.add_argument("--preset", metavar="NAME[,NAME]",
                     help="HU-threshold preset(s) instead of a network: bone, skin, lung, airway, ... "
                          "(see 'medrecon presets'); NAME:LOW or NAME:LOW..HIGH changes its HU range, "
                          "e.g. bone:250")
    if labels:
        one.add_argument("--labels", metavar="FILE",
                         help="existing segmentation: NIfTI/NRRD label map, DICOM SEG, RTSTRUCT, "
                              "or a TotalSegmentator output folder")
        src.add_argument("--names", metavar="JSON", help="flat JSON id -> name map for --labels")
        src.add_argument("--force-labels", action="store_true",
                         help="take --labels as a label map even if it looks like an image")
    src.add_argument("--force-image", action="store_true",
                     help="segment INPUT even if it looks like a label map")
    src.add_argument("--threshold", metavar="LOW..HIGH",
                     help="HU range: alone, a custom threshold; with --preset NAME, that preset's range "
                          "(write --threshold=-1000..-400 when LOW is negative)")
    src.add_argument("--organs", type=organ_list, default=[], metavar="LIST",
                     help="organs to keep, names or ids, e.g. liver,spleen (default: all)")
    src.add_argument("--fast", action="store_true", help="with --model totalsegmentator: its 3 mm models")
    src.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    src.add_argument("--planes", default="auto", choices=("auto", "axial", "all"),
                     help="model planes: axial, or fuse axial+coronal+sagittal "
                          "(default auto: the planes the model was trained on)")
    src.add_argument("--series", default="auto",
                     help="DICOM series UID or number when a folder holds several (default auto)")
    src.add_argument("--trust-bundle", action="store_true",
                     help="allow a MONAI bundle's own code to run (only bundles you trust)")
    src.add_argument("--modality", type=str.upper, metavar="CT",
                     help="the study's modality where its files do not say: CT lets a CT-only model or "
                          "preset run on a file that fails the CT intensity test")
    src.add_argument("--keep-implausible", action="store_true",
                     help="also mesh the model's organs that fail the anatomy and confidence checks "
                          "(they stay marked implausible in report.json)")
    add_mesh_options(p)
    out = p.add_argument_group("outputs")
    out.add_argument("--keep-phi", action="store_true",
                     help="keep patient/study identifiers (UIDs, input paths) in the outputs")
    out.add_argument("--no-preview", action="store_true", help="do not write preview.png")


def mesh_options_from_args(args: argparse.Namespace):
    """Build :class:`~medrecon.mesh.MeshOptions` from the options of :func:`add_mesh_options`.

    Raises
    ------
    InputError
        If an option value is out of range (the message says which).
    """
    from medrecon.errors import InputError
    from medrecon.mesh import MeshOptions

    try:
        return MeshOptions(
            smooth=args.smooth, decimate=args.decimate, target_faces=args.target_faces,
            keep_largest=args.keep_largest, min_component_mm3=args.min_component,
            hollow_mm=args.hollow, iso_spacing=args.iso_spacing, workers=args.mesh_workers,
            scale=args.scale, fit_bed=args.fit_bed, process=args.process, min_wall_mm=args.min_wall,
            drain_holes=args.drain_holes, drain_diameter_mm=args.drain_diameter,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


def config_from_args(args: argparse.Namespace):
    """Build a :class:`~medrecon.pipeline.ReconstructConfig` from parsed options.

    Raises
    ------
    InputError
        If an option value is out of range (the message says which).
    """
    from medrecon.errors import InputError
    from medrecon.pipeline import ReconstructConfig

    labels = getattr(args, "labels", None)
    if getattr(args, "names", None) and not labels:
        raise InputError("--names goes with --labels FILE")
    preset = args.preset
    if getattr(args, "threshold", None) is not None:
        if args.model or labels:
            raise InputError("--threshold goes with --preset NAME or alone, not with --model or --labels")
        from medrecon.sources.presets import with_threshold

        preset = with_threshold(preset, args.threshold)
    if preset:
        from medrecon.sources.presets import PresetSource

        PresetSource(preset)  # unknown names and bad ranges fail here, before any study is read
    method = "labels" if labels else "preset" if preset else "model"
    mesh = mesh_options_from_args(args)
    try:
        return ReconstructConfig(
            method=method, model=args.model or "default", preset=preset or "bone",
            labels=labels, names=getattr(args, "names", None), organs=tuple(args.organs or ()),
            mesh=mesh, fmt=args.fmt, frame=args.frame, device=args.device, planes=args.planes,
            series=args.series, keep_phi=args.keep_phi, trust_bundle=args.trust_bundle,
            preview=not args.no_preview, fast=args.fast, force_labels=getattr(args, "force_labels", False),
            force_image=args.force_image, modality=args.modality, keep_implausible=args.keep_implausible,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


def print_series_note(meta) -> None:
    """Say on stderr, in one line, which DICOM series was used, why, and what else the input holds.

    ``meta`` is a volume's ``meta``; nothing is printed when the input held one series.
    """
    import sys

    choice = meta.get("series_choice") or {}
    if not choice.get("others"):
        return
    rule = choice.get("rule", "")
    why = {
        "requested": f"--series {choice.get('requested')}",
        "only volume-like series": "the only volume-like series",
        "only image series": "the only image series",
    }.get(rule, f"--series auto: {rule}")
    print(f"medrecon: using series {choice['label']}, chosen as {why}; also in the input: "
          + "; ".join(choice["others"]), file=sys.stderr)


def print_status(organ: dict) -> str:
    """``print-ready``, or ``NOT PRINT-READY: <why>``, for one organ entry of a report."""
    why = []
    if not (organ.get("watertight") and organ.get("manifold")):
        why.append("not watertight and manifold")
    if organ.get("self_intersections"):
        why.append(f"{organ['self_intersections']} self-intersecting face pairs")
    wall = organ.get("wall_thickness_mm") or {}
    limit = organ.get("min_wall_mm")
    if limit and (wall.get("area_below_min_mm2") or 0.0) > 0.1 * limit**2:  # WallThickness.passes
        why.append(f"walls under {limit} mm over {wall['area_below_min_mm2']:.1f} mm^2 (thinnest {wall.get('min') or 0:.2f} mm)")
    small = (organ.get("small_features") or {}).get("pieces_below_resolution")
    if small:
        why.append(f"{small} pieces below {organ['small_features']['resolution_mm']} mm")
    if organ.get("print_ready", not why):
        return "print-ready"
    return "NOT PRINT-READY: " + ("; ".join(why) or "a print check failed")


def print_summary(report: dict, outdir) -> None:
    """Print where the meshes are, one line per organ, and the disclaimer."""
    from pathlib import Path

    out = Path(outdir)
    for organ in report["organs"]:
        why = "; ".join(organ.get("reasons") or ())
        if not organ.get("file"):
            print(f"{organ['name']}: not meshed, implausible ({why})")
            continue
        status = print_status(organ)
        if organ.get("plausible") is False:
            status += f", IMPLAUSIBLE ({why})"
        elif organ.get("cut_at_edge"):
            status += ", cut by the edge of the scan"
        print(f"{out / organ['file']}: {organ['mesh_volume_ml']:.1f} mL, {organ['faces']} faces, {status}")
    print(f"report: {out / 'report.json'}")
    if report.get("disclaimer"):
        print(f"note: {report['disclaimer']}")
