"""Generated modules cached on disk under a hash of everything that determines their text."""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from .. import __version__

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    root = os.environ.get("THEORYC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "theoryc")
    return Path(root)


@lru_cache(maxsize=1)
def compiler_fingerprint() -> str:
    """theoryc's version, its compiler's own source, and torch's version: a change to any of them
    may change the generated code."""
    h = hashlib.sha256(__version__.encode())
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent / "dsl" if (here.parent / "dsl").is_dir() else here):
        for p in sorted(folder.glob("*.py")) + sorted(folder.glob("*.lark")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    try:
        h.update(importlib.metadata.version("torch").encode())
    except importlib.metadata.PackageNotFoundError:
        pass
    return h.hexdigest()


def cache_key(text: str, overrides: dict) -> str:
    payload = json.dumps({"source": text, "set": {k: str(v) for k, v in sorted(overrides.items())},
                          "compiler": compiler_fingerprint()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def cached_path(key: str) -> Path:
    return cache_dir() / f"theory_{key[:32]}.py"


def store(key: str, code: str) -> Path:
    """Write atomically: a reader never sees half a module."""
    path = cached_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(code)
    os.replace(tmp, path)
    return path


def import_module(path: Path):
    name = f"theoryc_generated_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module
