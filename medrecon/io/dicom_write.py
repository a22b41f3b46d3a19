"""Write a :class:`~medrecon.volume.Volume` as a DICOM CT series, one file per slice.

Geometry: the volume's i axis is the DICOM row direction (the first triplet of
ImageOrientationPatient), j the column direction and k the slice axis; slice
``k`` is ``array[:, :, k].T`` (rows = j, columns = i) and its
ImagePositionPatient is ``affine @ [0, 0, k, 1]``. Any affine with orthogonal
i and j axes is written exactly (oblique, flipped, slices in either order);
readers that sort slices by position along the normal reconstruct the same
voxels at the same LPS positions.

The files carry the modules a scanner's PACS export has (SOP Common, Patient,
General Study, General Series, Frame of Reference, General Equipment, General
Image, Image Plane, Image Pixel, CT Image, VOI LUT), explicit VR little endian,
with UIDs that are deterministic for the same inputs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from medrecon.atomic import atomic_path
from medrecon.errors import GeometryError, InputError
from medrecon.progress import ProgressFn, report
from medrecon.volume import Volume

#: Written into ImplementationVersionName and SoftwareVersions.
IMPLEMENTATION_VERSION = "MEDRECON_0_1"


def _ds(value: float) -> str:
    """Format ``value`` as a DICOM decimal string (at most 16 characters)."""
    for digits in range(10, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return "0" if text in ("-0", "0") else text
    raise ValueError(f"cannot write {value!r} as a DICOM decimal string")


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _pixel_encoding(array: np.ndarray) -> tuple[np.ndarray, float, float, bool]:
    """Choose stored pixel values, RescaleSlope, RescaleIntercept and signedness for HU."""
    finite = np.isfinite(array)
    if not finite.all():
        raise InputError("the volume holds NaN or infinite values; DICOM cannot store them")
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    integral = bool(np.all(array == np.round(array)))
    if integral and lo >= -1024 and hi <= 65535 - 1024:
        # The usual CT export: unsigned stored values with intercept -1024.
        return (array + 1024).astype(np.uint16), 1.0, -1024.0, False
    if integral and lo >= -32768 and hi <= 32767:
        return array.astype(np.int16), 1.0, 0.0, True
    # Non-integer or out-of-range values: a linear map onto int16 (lossy by < slope/2).
    slope = max((hi - lo) / 65534.0, 1e-6)
    intercept = lo + 32767.0 * slope
    stored = np.clip(np.round((array - intercept) / slope), -32767, 32767).astype(np.int16)
    return stored, float(np.float32(slope)), float(np.float32(intercept)), True


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike,
    *,
    patient_name: str = "PHANTOM^ABDOMEN",
    patient_id: str = "MEDRECON0001",
    patient_sex: str = "O",
    patient_birth_date: str = "",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    study_date: str = "20250101",
    study_time: str = "120000",
    study_id: str = "1",
    accession_number: str = "",
    study_description: str = "Synthetic abdominal CT",
    series_number: int = 1,
    description: str | None = None,
    uid_seed: object = None,
    prefix: str = "CT",
    progress: ProgressFn | None = None,
) -> list[Path]:
    """Write ``volume`` as a DICOM CT series in ``folder``, one file per k slice.

    Parameters
    ----------
    volume : Volume
        (I, J, K) image in Hounsfield units with its LPS affine (mm). Integer
        HU in [-1024, 64511] are stored losslessly as uint16 with
        RescaleIntercept -1024 (in [-32768, 32767]: int16, intercept 0); other
        values through a linear int16 rescale.
    folder : path-like
        Output folder, created if needed. Existing files of the same names are replaced.
    patient_name, patient_id, patient_sex, patient_birth_date : str
        Patient module values (no real patient data: phantoms are synthetic).
    study_uid, series_uid, frame_of_reference_uid : str, optional
        UIDs to use; by default derived deterministically from ``uid_seed``
        (default: a hash of the voxel data and affine) so the same input gives
        the same files.
    study_date, study_time, study_id, accession_number, study_description : str
        General Study values (DA ``YYYYMMDD``, TM ``HHMMSS``).
    series_number : int
        SeriesNumber.
    description : str, optional
        SeriesDescription (default: ``volume.description``).
    uid_seed : object, optional
        Anything with a stable ``str``; seeds the generated UIDs.
    prefix : str
        File names are ``<prefix><instance number, 5 digits>.dcm``.
    progress : ProgressFn, optional
        Called with ``("write DICOM", fraction)`` after each slice.

    Returns
    -------
    list of Path
        The files written, in k order.

    Raises
    ------
    GeometryError
        If the i and j axes of the affine are not orthogonal (DICOM cannot
        express a sheared image plane).
    InputError
        If the values are not finite or the modality is not CT.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    if volume.modality not in ("", "CT"):
        raise InputError(f"write_dicom_series writes CT series; this volume's modality is {volume.modality!r}")
    direction = volume.direction
    row, col = direction[:, 0], direction[:, 1]
    if abs(float(row @ col)) > 1e-4:
        raise GeometryError(
            f"the volume's i and j axes are not orthogonal (cos = {float(row @ col):.4f}); "
            "resample it onto an orthogonal grid (Volume.resample_to) before writing DICOM"
        )
    normal = np.cross(row, col)
    array = np.asarray(volume.array)
    stored, slope, intercept, signed = _pixel_encoding(array)

    if uid_seed is None:
        digest = hashlib.sha1(np.ascontiguousarray(array).tobytes())
        digest.update(np.asarray(volume.affine, np.float64).tobytes())
        uid_seed = digest.hexdigest()
    study_uid = study_uid or _uid("study", uid_seed, patient_id)
    series_uid = series_uid or volume.series_uid or _uid("series", uid_seed, series_number)
    frame_uid = frame_of_reference_uid or _uid("frame", study_uid, uid_seed)
    description = volume.description if description is None else description
    # LO values hold at most 64 characters.
    description, study_description = description[:64], study_description[:64]
    spacing = volume.spacing
    k_step = volume.affine[:3, 2]
    between = abs(float(k_step @ normal))  # distance between slice planes
    thickness = float(volume.meta.get("slice_thickness_mm", between))

    # Slices across the body axis are axial images; anything else is a reformat.
    axial = abs(float(normal[2])) >= 0.7
    image_type = ["ORIGINAL", "PRIMARY", "AXIAL"] if axial else ["DERIVED", "SECONDARY", "REFORMATTED"]

    folder = Path(folder)
    paths: list[Path] = []
    n_slices = array.shape[2]
    for k in range(n_slices):
        position = volume.affine[:3, :3] @ np.array([0.0, 0.0, k]) + volume.affine[:3, 3]
        sop_uid = _uid("instance", series_uid, k)

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION

        ds = Dataset()
        ds.file_meta = meta
        # SOP Common
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate = study_date
        ds.InstanceCreationTime = study_time
        # Patient
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = patient_birth_date
        ds.PatientSex = patient_sex
        ds.PatientIdentityRemoved = "YES"
        # General Study
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = study_date
        ds.StudyTime = study_time
        ds.ReferringPhysicianName = ""
        ds.StudyID = study_id
        ds.AccessionNumber = accession_number
        ds.StudyDescription = study_description
        # General Series
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = int(series_number)
        ds.SeriesDescription = description
        ds.SeriesDate = study_date
        ds.SeriesTime = study_time
        ds.BodyPartExamined = "ABDOMEN"
        ds.PatientPosition = "HFS"
        # Frame of Reference
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        # General Equipment
        ds.Manufacturer = "medrecon"
        ds.ManufacturerModelName = "synthetic phantom"
        ds.SoftwareVersions = IMPLEMENTATION_VERSION
        # General Image
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.ContentDate = study_date
        ds.ContentTime = study_time
        ds.ImageType = image_type
        ds.PatientOrientation = ""
        # Image Plane
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (j), column spacing (i)
        ds.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceThickness = _ds(thickness)
        ds.SpacingBetweenSlices = _ds(between)
        ds.SliceLocation = _ds(float(position @ normal))
        # Image Pixel
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = array.shape[1]
        ds.Columns = array.shape[0]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        # CT Image
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "HU"
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
        # VOI LUT: a soft-tissue window.
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype(stored.dtype.newbyteorder("<")).tobytes()

        path = folder / f"{prefix}{k + 1:05d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
        report(progress, "write DICOM", (k + 1) / n_slices)
    return paths
