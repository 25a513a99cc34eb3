"""Generated modules cached on disk under a hash of everything that determines their text.

The cache is a private directory (created 0700; one that belongs to another user or that others
may write to is refused). An entry is one file, written atomically with mode 0600, whose first
line names its key and the SHA-256 of the code below it. Reading an entry opens it without
following symbolic links, checks the owner, the key, the hash and the generated code's AST
(compiler/verify.py); anything that fails is regenerated and never imported. The code that is
imported is the very text that was checked (it is not read from disk a second time).
"""
from __future__ import annotations

import hashlib
import importlib.abc
import importlib.metadata
import importlib.util
import json
import os
import stat
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from .. import __version__
from .verify import UntrustedCode, verify_generated

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
MAX_ENTRY_BYTES = 16 * 2**20        # far above any generated module; a larger file is foreign
HEADER = "# theoryc cache entry {key} sha256 {digest}"


class CacheError(OSError):
    """The cache directory cannot be used safely (reported to the user in one line)."""


def cache_dir() -> Path:
    root = os.environ.get("THEORYC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "theoryc")
    return Path(root)


def private_dir() -> Path:
    """The cache directory, created private; refused when someone else could plant files in it."""
    root = cache_dir()
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(root)
    except OSError as err:
        raise CacheError(f"cannot use the cache directory {root}: {err.strerror or err}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"the cache path {root} is not a directory; set THEORYC_CACHE to a private directory")
    if hasattr(os, "getuid"):
        if st.st_uid != os.getuid():
            raise CacheError(f"the cache directory {root} belongs to another user; "
                             "set THEORYC_CACHE to a directory of your own")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise CacheError(f"the cache directory {root} is writable by other users (mode "
                             f"{stat.S_IMODE(st.st_mode):o}); make it private (chmod 700) or set THEORYC_CACHE")
    return root


@lru_cache(maxsize=1)
def compiler_fingerprint() -> str:
    """theoryc's version, its compiler's own source, and the versions of the libraries whose
    output is part of the generated text (SymPy's printer and simplifier, Lark) or that run it."""
    h = hashlib.sha256(__version__.encode())
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent / "dsl" if (here.parent / "dsl").is_dir() else here):
        for p in sorted(folder.glob("*.py")) + sorted(folder.glob("*.lark")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    for package in ("torch", "sympy", "lark"):
        try:
            h.update(f"{package}={importlib.metadata.version(package)}".encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    return h.hexdigest()


def cache_key(text: str, overrides: dict) -> str:
    payload = json.dumps({"source": text, "set": {k: str(v) for k, v in sorted(overrides.items())},
                          "compiler": compiler_fingerprint()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def cached_path(key: str) -> Path:
    return private_dir() / f"theory_{key[:32]}.py"


def header(key: str, code: str) -> str:
    return HEADER.format(key=key, digest=hashlib.sha256(code.encode()).hexdigest())


def fetch(key: str) -> str | None:
    """The code of the cache entry for `key`, verified; None when there is none or when it is not
    an entry this compiler wrote for this key (then it will be regenerated)."""
    path = cached_path(key)
    data = read_entry(path)
    if data is None:
        return None
    first, _, code = data.partition("\n")
    problem = ""
    if first != header(key, code):
        problem = "its key or checksum does not match"
    else:
        try:
            verify_generated(code)
        except UntrustedCode as err:
            problem = f"its code is not what this compiler emits ({err})"
    if problem:
        sys.stderr.write(f"theoryc: the cache entry {path} was not produced by this compiler "
                         f"({problem}); regenerating it.\n")
        return None
    return code


def read_entry(path: Path) -> str | None:
    """An entry's text, read without following a symbolic link; None for a missing, foreign,
    oversized or undecodable file."""
    # O_NONBLOCK: opening a FIFO planted under the entry's name must not wait for a writer
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError:                      # a symbolic link (ELOOP) or unreadable: not ours
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ENTRY_BYTES or \
                (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            return None
        data = fh.read(MAX_ENTRY_BYTES + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def store(key: str, code: str) -> Path:
    """Check the code, then write it atomically (a reader never sees half a module) and privately."""
    try:
        verify_generated(code)
    except UntrustedCode as err:         # a bug of the compiler, never the user's doing
        raise AssertionError(f"theoryc generated code outside its whitelist: {err}") from None
    path = cached_path(key)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix=".py")   # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(header(key, code) + "\n" + code)
        os.replace(tmp, path)            # replaces a planted symbolic link itself, never its target
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


class VerifiedSource(importlib.abc.SourceLoader):
    """Imports the text that was verified, not whatever the file holds by the time it is read
    again; writes no bytecode next to the cache entry."""

    def __init__(self, path: Path, code: str):
        self.path, self.code = path, code

    def get_filename(self, fullname):
        return str(self.path)

    def get_data(self, path):
        return self.code.encode("utf-8")


def import_code(key: str, code: str, path: Path):
    """The generated module of `code` (already verified), imported once per process."""
    name = f"theoryc_generated_{key[:32]}"
    if name in sys.modules:
        return sys.modules[name]
    verify_generated(code)
    loader = VerifiedSource(path, code)
    spec = importlib.util.spec_from_loader(name, loader, origin=str(path))
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[name] = module
    return module
