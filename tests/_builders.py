"""Builders the test files share: synthetic DICOM series, analytic masks, RTSTRUCT files.

Plain functions, imported as ``from _builders import ...`` (pytest puts ``tests/`` on
``sys.path``; the fuzz harness in ``_fuzz/`` imports them the same way). A test file
never imports from another test file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    RTStructureSetStorage,
    generate_uid,
)
from scipy.spatial.transform import Rotation

# --- analytic masks on an oblique, reflected grid ----------------------------------------------

CENTRE = np.array([12.0, -40.0, 100.0])
OBLIQUE = Rotation.from_rotvec(np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0) * 0.5).as_matrix()


def oblique_grid(spacing, extent_mm, *, flip=True):
    """An oblique, reflected affine (det < 0) whose grid covers +-extent_mm around CENTRE."""
    lin = OBLIQUE @ np.diag(spacing) @ (np.diag([-1.0, 1.0, 1.0]) if flip else np.eye(3))
    shape = (2 * extent_mm / np.asarray(spacing)).astype(int) + 4
    affine = np.eye(4)
    affine[:3, :3] = lin
    # an off-grid centre: the shape is not symmetric in voxel space
    affine[:3, 3] = CENTRE - lin @ ((shape - 1) / 2) + np.array([0.31, -0.22, 0.13])
    return affine, tuple(int(s) for s in shape)


def world_points(affine, shape):
    """World coordinates (mm) of every voxel centre of a ``shape`` grid, as (N, 3)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def ellipsoid_mask(axes, spacing):
    """A boolean ellipsoid of semi-axes ``axes`` (mm) at CENTRE on an oblique grid; (mask, affine)."""
    affine, shape = oblique_grid(spacing, 1.3 * max(axes))
    xyz = world_points(affine, shape) - CENTRE
    inside = ((xyz / np.asarray(axes, float)) ** 2).sum(axis=1) <= 1.0
    return inside.reshape(shape), affine


# --- synthetic single-frame DICOM series (known geometry, known values) -------------------

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
ROWS, COLS = 12, 10
DX, DY = 0.7, 0.9  # between columns, between rows (mm)


def base_dataset(modality="CT", series_uid=None, series_number=1, description="synthetic") -> Dataset:
    """Patient, study, series and pixel-format attributes shared by every synthetic slice."""
    ds = Dataset()
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "P1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.StudyID = "1"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260101", "120000", ""
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.Modality = modality
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    return ds


def save_dataset(ds: Dataset, path: Path, sop_class: str, syntax: str) -> Path:
    """Give ``ds`` its file meta and write it with the given transfer syntax."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    path.parent.mkdir(parents=True, exist_ok=True)
    big = syntax == ExplicitVRBigEndian
    implicit = syntax == "1.2.840.10008.1.2"
    ds.save_as(path, enforce_file_format=True, little_endian=not big, implicit_vr=implicit)
    return path


def write_slice(
    path: Path,
    pixels: np.ndarray,
    position,
    *,
    orientation=AXIAL,
    spacing=(DY, DX),
    series_uid: str,
    sop_uid: str | None = None,
    instance: int = 1,
    modality: str = "CT",
    series_number: int = 1,
    description: str = "synthetic",
    image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
    syntax: str = ExplicitVRLittleEndian,
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> Path:
    """Write one single-frame slice; ``pixels`` is (rows, cols) int16 raw values."""
    ds = base_dataset(modality, series_uid, series_number, description)
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.InstanceNumber = instance
    ds.ImageType = list(image_type)
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.PixelSpacing = [f"{v:g}" for v in spacing]
    ds.SliceThickness = "1.5"
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    pixels = np.asarray(pixels, dtype=np.int16)
    ds.Rows, ds.Columns = pixels.shape
    if UID(syntax).is_compressed:
        plugin = {"encoding_plugin": "pydicom"} if syntax == RLELossless else {}
        ds.compress(syntax, pixels, **plugin)
        return save_dataset(ds, path, CTImageStorage, syntax)
    order = ">i2" if syntax == ExplicitVRBigEndian else "<i2"
    ds.PixelData = pixels.astype(order).tobytes()
    return save_dataset(ds, path, CTImageStorage, syntax)


def slice_values(k: int, rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    """Raw values of slice k: every voxel unique, encodes (row, col, k)."""
    r, c = np.mgrid[:rows, :cols]
    return (1000 + 100 * k + 10 * r + c).astype(np.int16)


def write_series(
    folder: Path,
    positions,
    *,
    values=None,
    names=None,
    instances=None,
    series_uid: str | None = None,
    **kwargs,
) -> tuple[str, list[Path]]:
    """Write one slice per position (slice k gets ``values(k)``); returns (uid, paths)."""
    uid = series_uid or generate_uid()
    values = values or slice_values
    paths = []
    for k, pos in enumerate(positions):
        name = names[k] if names else f"s{k:03d}.dcm"
        inst = instances[k] if instances else k + 1
        paths.append(write_slice(folder / name, values(k), pos, series_uid=uid, instance=inst,
                                 **kwargs))
    return uid, paths


def z_positions(n: int, dz: float = 1.5, z0: float = -20.0, x0=-3.0, y0=4.0):
    """Positions of ``n`` axial slices ``dz`` mm apart."""
    return [(x0, y0, z0 + dz * k) for k in range(n)]


# --- RT Structure Sets -------------------------------------------------------------------------

def write_rtstruct(path: Path, rois: list, *, frame_uid: str | None = None,
                   sop_uid: str | None = None) -> Path:
    """Write an RTSTRUCT of closed planar contours.

    Parameters
    ----------
    path : Path
        Output file.
    rois : list of (int, str, list of (N, 3) ndarray)
        ROI number, ROI name and its contours in LPS mm.
    frame_uid : str, optional
        FrameOfReferenceUID to reference (ReferencedFrameOfReferenceSequence);
        none when not given.
    sop_uid : str, optional
        SOPInstanceUID; a new UID when not given.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.StructureSetLabel = "test"
    if frame_uid:
        ref = Dataset()
        ref.FrameOfReferenceUID = frame_uid
        ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for number, name, contours in rois:
        item = Dataset()
        item.ROINumber = number
        item.ROIName = name
        if frame_uid:
            item.ReferencedFrameOfReferenceUID = frame_uid
        ds.StructureSetROISequence.append(item)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ContourSequence = Sequence()
        for pts in contours:
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [f"{v:.4f}" for v in np.asarray(pts).ravel()]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    ds.save_as(path, enforce_file_format=True)
    return path


def enhanced_ct(path: Path, positions, values, *, slope=2.0, intercept=-1000.0, series_uid=None) -> None:
    """One enhanced (multi-frame) CT file: frame f at ``positions[f]`` holds ``values(f)``."""
    ds = base_dataset(series_uid=series_uid)
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = len(positions)
    ds.Rows, ds.Columns = values(0).shape
    shared = Dataset()
    orient, measures, lut = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = list(AXIAL)
    measures.PixelSpacing = [DY, DX]
    measures.SliceThickness = 1.5
    lut.RescaleSlope, lut.RescaleIntercept, lut.RescaleType = slope, intercept, "HU"
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([lut])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for pos in positions:
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = list(pos)
        item.PlanePositionSequence = Sequence([plane])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.stack([values(k) for k in range(len(positions))]).astype("<i2").tobytes()
    save_dataset(ds, path, "1.2.840.10008.5.1.4.1.1.2.1", ExplicitVRLittleEndian)


# --- a user's strokes for grow-from-seeds ----------------------------------------------------------


def seed_strokes(ct, truth, organs, *, slices, background: int):
    """Strokes as a user paints them: skeletons of each organ and of the other body tissue.

    On the axial ``slices`` only; each organ's skeleton is taken 5 mm inside it, the other
    tissue's (HU > -300, holes filled) 5 mm away from every organ, labelled ``background``.
    Returns a LabelMap on the CT's grid named after ``truth``.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    from medrecon.volume import LabelMap

    hu, lab = np.asarray(ct.array), np.asarray(truth.array)
    steps = int(round(5.0 / ct.spacing[0]))
    seeds = np.zeros(ct.shape, np.uint8)
    for k in slices:
        near = np.zeros(ct.shape[:2], bool)
        for organ in organs:
            mask = lab[:, :, k] == organ
            seeds[:, :, k][skeletonize(ndimage.binary_erosion(mask, iterations=steps))] = organ
            near |= ndimage.binary_dilation(mask, iterations=steps)
        body = ndimage.binary_fill_holes(hu[:, :, k] > -300)
        other = ndimage.binary_erosion(body & ~near, iterations=steps)
        seeds[:, :, k][skeletonize(other)] = background
    names = {o: truth.name_of(o) for o in organs} | {background: "background"}
    return LabelMap(seeds, ct.affine, names=names)


def hollow_shell(*, outer_mm: float = 5.0, wall_mm: float = 1.5, voxel_mm: float = 0.15):
    """A spherical shell around CENTRE on an oblique, reflected grid: (mask, affine)."""
    affine, shape = oblique_grid((voxel_mm,) * 3, outer_mm + 0.4)
    assert np.linalg.det(affine[:3, :3]) < 0
    r = np.linalg.norm(world_points(affine, shape) - CENTRE, axis=1).reshape(shape)
    return (r <= outer_mm) & (r > outer_mm - wall_mm), affine
