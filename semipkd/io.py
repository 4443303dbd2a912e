"""Atomic file output and content hashing.

Every file the pipeline writes goes through these helpers: the bytes go to a temporary file in
the destination's folder, are flushed and fsynced, and only then renamed over the destination
(``os.replace`` is atomic on POSIX). A process killed mid-write therefore leaves either the old
file or the new one, never a half-written one; a full disk raises before the rename, so the
previous file stays intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from semipkd.errors import SemipkdError

__all__ = [
    "WriteError",
    "atomic_path",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "atomic_torch_save",
    "sha256_file",
    "sha256_bytes",
]


def _umask() -> int:
    """The process umask (read without changing it where the kernel reports it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it the portable way, by setting and restoring it
    os.umask(mask)
    return mask


def _as_if_opened(path: Path, dest: Path, *, folder: bool = False) -> None:
    """Give ``path`` the mode writing ``dest`` in place would have given it.

    That is ``dest``'s own mode when it exists (``open(dest, "w")`` keeps it), else 0o666 (0o777 for
    a folder) less the umask. ``tempfile.mkstemp``/``mkdtemp`` create 0o600/0o700 and the rename
    keeps the mode, so without this every output would be unreadable by the machine's other users.
    """
    try:
        mode = stat.S_IMODE(dest.stat().st_mode)
    except FileNotFoundError:
        mode = (0o777 if folder else 0o666) & ~_umask()
    os.chmod(path, mode)


class WriteError(SemipkdError, OSError):
    """Writing an output failed (disk full, quota, file-size limit, I/O error).

    The message names the destination and says that the previous file there is intact; the
    original ``errno`` is kept, so ``exc.errno == errno.ENOSPC`` still tells a full disk.
    """


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success fsync it and rename it to ``dest``.

    On any exception the temporary file is removed and ``dest`` is left untouched; an
    ``OSError`` (a full disk, say) is raised again as :class:`WriteError` naming ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        _as_if_opened(tmp_path, dest)
        os.replace(tmp_path, dest)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            previous = f"the previous {dest.name} is intact" if dest.exists() else f"no {dest.name} was written"
            msg = f"cannot write {dest}: {exc.strerror or exc}; {previous}"
            raise (WriteError(exc.errno, msg) if exc.errno is not None else WriteError(msg)) from exc
        raise


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest``; on success replace ``dest`` with it.

    An existing ``dest`` is moved aside first and deleted only after the rename succeeded, so a
    crash leaves either the complete old folder or the complete new one.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _as_if_opened(tmp, dest, folder=True)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``dest`` atomically."""
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON (sorted keys, trailing newline) to ``dest`` atomically.

    NaN and infinity are refused: a metrics file that says NaN is a bug upstream, and JSON has
    no spelling for it that every reader accepts.
    """
    text = json.dumps(obj, indent=indent, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_text(dest, text)


def atomic_save_npy(dest: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` in .npy format to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def atomic_torch_save(dest: str | os.PathLike, obj: Any) -> str:
    """``torch.save`` ``obj`` to ``dest`` atomically and return the sha256 of the bytes written."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    atomic_write_bytes(dest, data)
    return sha256_bytes(data)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path``, read in chunks (memory stays flat for large files)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
