"""Atomic file output and safe file names.

Every file medrecon writes goes through :func:`atomic_path`: it is written under
a temporary name in the target folder and renamed into place only when complete,
so a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from medrecon.errors import OutputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME = 100


def _file_mode() -> int:
    # mkstemp creates 0600 files; outputs get the usual permissions (0666 less the umask)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def safe_name(name: str, *, default: str = "unnamed") -> str:
    """Turn an untrusted label or series name into a safe file-name stem.

    Path separators, ``..``, control characters and other punctuation become
    ``_``; the result has no leading dots and at most :data:`MAX_NAME` characters.
    """
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    text = _UNSAFE.sub("_", text).strip("._-")
    text = re.sub(r"\.{2,}", "_", text)[:MAX_NAME].strip("._-")
    return text or default


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it
    was. ``suffix`` (default: the target's suffixes, e.g. ``.nii.gz``) lets
    libraries that choose a format by extension write the temporary file.
    """
    target = Path(path)
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from exc
    if suffix is None:
        suffix = "".join(target.suffixes)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}", dir=folder)
    except OSError as exc:
        raise OutputError(
            f"cannot write in {folder}: {exc.strerror or exc}; check that it exists and is writable"
        ) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"disk full while writing {target}; free space and run again") from exc
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return write_bytes(path, text.encode("utf-8"))
