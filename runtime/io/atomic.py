"""The one atomic writer: ensembles, checkpoints and model files all appear complete or not at all.

A file is written under a temporary name in the target's folder (so that the final `os.replace` is a
rename within one filesystem), flushed to disk with fsync, and only then renamed onto the target. A
crash before the rename leaves the previous file (if any) untouched.
"""
from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path


def atomic_replace(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)` on a fresh temporary file next to `path`, then rename it onto `path`.

    On any exception the temporary file is removed and the exception propagates (no partial file).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=folder_of(path), prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsync the finished temporary file `tmp` and rename it onto `path` (same folder), with the
    mode a plain open() would give it (mkstemp makes 0600; the user's umask decides), then
    remove what killed writers of the same target left behind."""
    with open(tmp, "rb+") as fh:   # the data must be on disk before the rename makes it visible
        os.fsync(fh.fileno())
        os.fchmod(fh.fileno(), 0o666 & ~current_umask())
    os.replace(tmp, path)
    remove_stale(Path(path))


def current_umask() -> int:
    mask = os.umask(0o022)       # the only way to read it is to set it
    os.umask(mask)
    return mask


def remove_stale(path: Path) -> None:
    """Temporary files of earlier writes of `path` (`.NAME.*.tmp`, from a writer killed before
    its rename): the target is now complete, so they can never be needed."""
    for stale in folder_of(path).glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass


def folder_of(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")
