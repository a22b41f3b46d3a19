"""Second pass over DICOM input: pixel values straight into the output volume.

Natively encoded frames (uncompressed little or big endian) are read from the
byte offset the header pass recorded, with one small buffer per frame, and the
modality LUT (RescaleSlope/Intercept) is applied while writing into a
preallocated float32 array, so the peak extra memory is about one float32 volume.
Asked for the stored integer type instead (``medrecon convert``), frames keep their
stored integers, read straight into the output array where the byte order allows.
Compressed and deflated files go through pydicom's decoders (pylibjpeg, gdcm,
pillow); a missing codec raises :class:`~medrecon.errors.MissingDependencyError`
naming the ``dicom-codecs`` extra. Files are read by a few threads: numpy and file
reads release the GIL.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import struct
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.errors import DicomError, MissingDependencyError
from medrecon.io.dicom_file import CappedReader, describe_error, open_capped
from medrecon.io.dicom_header import FrameHeader
from medrecon.io.dicom_mosaic import tile
from medrecon.io.limits import check_alloc
from medrecon.io.stored import rescale_into
from medrecon.progress import ProgressFn, report


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _fix_bits(buf: np.ndarray, frame: FrameHeader) -> np.ndarray:
    """Sign-extend or mask values when BitsStored < BitsAllocated and high bits are set."""
    stored, allocated = frame.bits_stored, frame.bits_allocated
    if not 0 < stored < allocated:
        return buf
    if frame.signed:
        lo, hi = -(1 << (stored - 1)), (1 << (stored - 1)) - 1
        if buf.min() >= lo and buf.max() <= hi:
            return buf
        shift = allocated - stored
        native = buf.astype(buf.dtype.newbyteorder("="))
        return (native << shift) >> shift
    if buf.max() <= (1 << stored) - 1:
        return buf
    return buf & ((1 << stored) - 1)


class NotStored(Exception):
    """A decoder gave values outside the stored integer type: read the frames as values instead."""


def _rescale_into(values: np.ndarray, frame: FrameHeader, dst: np.ndarray) -> None:
    if dst.dtype.kind == "f":
        rescale_into(values, frame.slope, frame.intercept, dst)
        return
    # stored integers (read_frames with an integer dtype): kept as they are, where they fit
    if not np.can_cast(values.dtype, dst.dtype):
        info = np.iinfo(dst.dtype)
        if values.dtype.kind not in "iu" or (values.size and not info.min <= values.min() <= values.max() <= info.max):
            raise NotStored(f"{frame.path}: decoded {values.dtype} values do not fit {dst.dtype}")
    np.copyto(dst, values, casting="unsafe")


def check_native(frame: FrameHeader) -> None:
    """Refuse a natively encoded frame whose pixel data is shorter than declared.

    Raises
    ------
    DicomError
        If the file is truncated or declares more pixels than it stores.
    """
    need = frame.stored_bytes * frame.n_frames
    have = min(frame.pixel_length, max(0, frame.file_size - frame.pixel_offset))
    if have < need:
        side = max(1, frame.mosaic)
        raise DicomError(
            f"{frame.path}: pixel data holds {have:,} bytes but the header declares "
            f"{frame.rows * side}x{frame.cols * side}x{frame.n_frames} frames of {frame.bits_allocated} bits "
            f"({need:,} bytes): the file is truncated or corrupt; re-export it"
        )


def _native_dtype(frame: FrameHeader) -> np.dtype:
    kind = "i" if frame.signed else "u"
    return np.dtype(f"{'<' if frame.little_endian else '>'}{kind}{frame.bits_allocated // 8}")


def _read_native_mosaic(path: str, frames: list[FrameHeader], dsts: list[np.ndarray]) -> None:
    """Read a natively encoded mosaic once and write its tiles ``frames[n]`` into ``dsts[n]``."""
    first = frames[0]
    shape = (first.rows * first.mosaic, first.cols * first.mosaic)
    buf = np.empty(shape, dtype=_native_dtype(first))
    with open(path, "rb", buffering=0) as fh:
        fh.seek(first.pixel_offset)
        got = fh.readinto(memoryview(buf).cast("B"))
    if got != buf.nbytes:
        raise DicomError(f"{path}: pixel data ends early; the file is truncated")
    _split_mosaic(_fix_bits(buf, first), frames, dsts)


def _split_mosaic(image: np.ndarray, frames: list[FrameHeader], dsts: list[np.ndarray]) -> None:
    for frame, dst in zip(frames, dsts, strict=True):
        _rescale_into(tile(image, frame.frame, frame.mosaic, frame.rows, frame.cols), frame, dst)


def _read_native(frame: FrameHeader, dst: np.ndarray, scratch: dict) -> None:
    """Read one native frame into ``dst``, through a per-thread buffer reused across frames or in place."""
    dtype = _native_dtype(frame)
    direct = dst.dtype == dtype  # stored integers in the file's byte order: read in place
    count = frame.rows * frame.cols
    key = (dtype.str, count)
    buf = dst if direct else scratch.get(key)
    if buf is None:
        buf = scratch[key] = np.empty(count, dtype=dtype)
    with open(frame.path, "rb", buffering=0) as fh:
        fh.seek(frame.pixel_offset + frame.frame * frame.frame_bytes)
        got = fh.readinto(memoryview(buf).cast("B"))
    if got != buf.nbytes:
        raise DicomError(f"{frame.path}: pixel data ends early; the file is truncated")
    image = buf.reshape(frame.rows, frame.cols)
    fixed = _fix_bits(image, frame)
    if not direct:
        _rescale_into(fixed, frame, dst)
    elif fixed is not image:
        np.copyto(dst, fixed)


def _decoder_check(frame: FrameHeader) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    tsyntax = UID(frame.transfer_syntax) if frame.transfer_syntax else None
    if tsyntax is None or not tsyntax.is_compressed:
        return
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise DicomError(
            f"{frame.path}: transfer syntax {tsyntax.name} ({tsyntax}) has no decoder in pydicom"
        ) from exc
    if not decoder.is_available:
        raise MissingDependencyError("pylibjpeg", "dicom-codecs", f"decoding {tsyntax.name} DICOM")


def _frames_of(path: str, frame: FrameHeader, indices: list[int]):
    """Yield decoded frames ``indices`` of one file as stored (a whole mosaic), in that order."""
    from pydicom.pixels import iter_pixels
    from pydicom.uid import UID

    if frame.transfer_syntax and UID(frame.transfer_syntax).is_deflated:
        # iter_pixels reads the raw file and cannot inflate a deflated dataset
        import pydicom

        side = max(1, frame.mosaic)
        arr = pydicom.dcmread(path).pixel_array.reshape(-1, frame.rows * side, frame.cols * side)
        yield from (arr[i] for i in indices)
        return
    # a corrupt Pixel Data length must not make pydicom allocate a buffer of that size
    with CappedReader(io.FileIO(path, "rb"), os.path.getsize(path)) as fh:
        yield from iter_pixels(fh, indices=indices)


def _decode_file(path: str, frames: list[FrameHeader], dsts: list[np.ndarray]) -> None:
    """Decode the frames of one file with pydicom, writing frame ``frames[n]`` into ``dsts[n]``."""
    _decoder_check(frames[0])
    first = frames[0]
    side = max(1, first.mosaic)
    stored = (first.rows * side, first.cols * side)
    wanted = {f.frame: (f, d) for f, d in zip(frames, dsts, strict=True)}
    indices = [0] if first.mosaic else sorted(wanted)
    try:
        for index, arr in enumerate(_frames_of(path, first, indices)):
            if arr.shape != stored:
                raise DicomError(
                    f"{path}: decoded frame has shape {'x'.join(map(str, arr.shape))}, "
                    f"expected {stored[0]}x{stored[1]}"
                )
            if first.mosaic:
                _split_mosaic(arr, frames, dsts)
            else:
                frame, dst = wanted[indices[index]]
                _rescale_into(arr, frame, dst)
    except (MissingDependencyError, DicomError, NotStored):
        raise
    except Exception as exc:  # noqa: BLE001 - decoders fail on corrupt data with any type (zlib.error, TypeError ...)
        if _ends_inside_fragments(path):
            raise DicomError(
                f"{path}: the file ends inside its compressed pixel data ({os.path.getsize(path):,} "
                "bytes): it is truncated; copy or export it again"
            ) from exc
        text = str(exc).lower()
        if ("plugin" in text or "missing" in text) and importlib.util.find_spec("pylibjpeg") is None:
            raise MissingDependencyError(
                "pylibjpeg", "dicom-codecs", f"decoding DICOM {frames[0].transfer_syntax}"
            ) from exc
        raise DicomError(
            f"{path}: cannot decode the pixel data ({_decoder_reason(exc)}); the file is corrupt"
        ) from exc


def _decoder_reason(exc: BaseException) -> str:
    """Give the first plugin's reason of a pydicom decoding error, without object reprs."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    if not lines:
        return describe_error(exc)
    return describe_error(type(exc)(re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", lines[0])))


def _ends_inside_fragments(path: str) -> bool:
    """Tell whether the file ends inside its encapsulated (compressed) Pixel Data.

    pydicom drops a Pixel Data element cut off before its sequence delimiter, and
    the decoders then report a missing element or a broken stream; walking the
    fragment items tells a truncated file from a corrupt one.
    """
    import pydicom

    size = os.path.getsize(path)
    try:
        with open_capped(Path(path), size) as fh:
            pydicom.dcmread(fh, stop_before_pixels=True, force=True)
            head = fh.read(12)  # encapsulated Pixel Data is explicit VR little endian
            if head[:4] != b"\xe0\x7f\x10\x00" or head[8:12] != b"\xff\xff\xff\xff":
                return False
            for _ in range(1 << 20):  # fragments; bounded like any loop over file contents
                item = fh.read(8)
                if len(item) < 8:
                    return True
                if item[:4] == b"\xfe\xff\xdd\xe0":  # sequence delimiter: complete
                    return False
                if item[:4] != b"\xfe\xff\x00\xe0":
                    return False  # not an item: corrupt, not (only) truncated
                if fh.seek(struct.unpack("<I", item[4:])[0], io.SEEK_CUR) > size:
                    return True
    except Exception:  # noqa: BLE001 - a header pydicom cannot parse: leave the first error to speak
        return False
    return False


def read_frames(
    frames: Sequence[FrameHeader],
    *,
    what: str = "DICOM series",
    progress: ProgressFn | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Read frames of one size into a (N, rows, cols) float32 array, modality LUT applied.

    Parameters
    ----------
    frames : sequence of FrameHeader
        Frames in output order, all of one size.
    what : str
        Name used in error messages.
    progress : ProgressFn, optional
        Called with ``("reading DICOM", fraction)``.
    dtype : dtype, optional
        float32 (the default) for values, or an integer type (the one every frame
        stores) for the stored integers as they are, without the modality LUT.

    Returns
    -------
    (N, rows, cols) ndarray of float32 or ``dtype``
        Values after RescaleSlope/Intercept (Hounsfield units for CT), or the
        stored integers.

    Raises
    ------
    NotStored
        With an integer ``dtype``: a decoder gave values that do not fit it.
    ResourceLimitError
        If the declared size is over the limits of :mod:`medrecon.io.limits`.
    DicomError
        If pixel data is truncated or cannot be decoded.
    MissingDependencyError
        If a codec for a compressed transfer syntax is not installed.
    """
    first = frames[0]
    shape = (len(frames), first.rows, first.cols)
    check_alloc(shape, np.float32, what)  # whatever dtype: the same series pass and fail as values

    def is_native(frame: FrameHeader) -> bool:
        return frame.pixel_offset >= 0 and frame.bits_allocated in (8, 16, 32) and frame.samples == 1

    for frame in frames:  # a header that claims more rows than the file holds: before allocating
        if is_native(frame):
            check_native(frame)
    out = np.empty(shape, dtype=dtype)
    native = []
    by_file: dict[str, tuple[list[FrameHeader], list[np.ndarray]]] = {}
    mosaics: dict[str, tuple[list[FrameHeader], list[np.ndarray]]] = {}
    for k, frame in enumerate(frames):
        if is_native(frame) and not frame.mosaic:
            native.append((frame, out[k]))
        else:
            fs, ds = (mosaics if frame.mosaic and is_native(frame) else by_file).setdefault(
                frame.path, ([], []))
            fs.append(frame)
            ds.append(out[k])
    jobs = [(_read_native, f, d) for f, d in native]
    jobs += [(_read_native_mosaic, path, fs, ds) for path, (fs, ds) in mosaics.items()]
    jobs += [(_decode_file, path, fs, ds) for path, (fs, ds) in by_file.items()]
    total = len(jobs)
    # chunks keep the thread-pool overhead small for hundreds of small reads
    chunk = max(1, total // (8 * _workers()))
    batches = [jobs[i:i + chunk] for i in range(0, total, chunk)]

    def run(batch: list) -> int:
        scratch: dict = {}
        for fn, *args in batch:
            if fn is _read_native:
                fn(*args, scratch)
            else:
                fn(*args)
        return len(batch)

    done = 0
    # pydicom's decoders warn about details of the files: quieted here, in the calling thread, as
    # the filters are global (catch_warnings in the reading threads raced and could leave them
    # ignoring every warning for the rest of the process)
    with warnings.catch_warnings():
        if by_file:
            warnings.simplefilter("ignore")
        if len(batches) == 1:
            done = run(batches[0])
            report(progress, "reading DICOM", 1.0)
            return out
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            for n in pool.map(run, batches):
                done += n
                report(progress, "reading DICOM", done / total)
    return out
