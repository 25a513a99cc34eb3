"""Shared helpers for the compiler's tests: a private code cache, theory text -> loaded theory,
and the examples of LANGUAGE.md.

Imported by the test files (`from conftest_compiler import ...`): pytest does not collect this file
as a conftest, so importing the `private_cache` fixture is what makes it apply to a test module.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
LANGUAGE_MD = REPO.parent / "shared" / "LANGUAGE.md"
GOLDEN = TESTS / "golden"
UPDATE_GOLDEN = os.environ.get("THEORYC_UPDATE_GOLDEN") == "1"


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory):
    """Compile into a fresh cache directory: tests never read (or pollute) the user's cache."""
    old = os.environ.get("THEORYC_CACHE")
    path = tmp_path_factory.mktemp("theoryc_cache")
    os.environ["THEORYC_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("THEORYC_CACHE", None)
    else:
        os.environ["THEORYC_CACHE"] = old


def load(text: str, name: str = "test", **params):
    """Compile theory source text (through the cache) and load it as the runtime sees it."""
    import theoryc
    return theoryc.load_text(text, f"{name}.theory", **params)


def language_examples() -> dict[str, str]:
    """The fenced code blocks of LANGUAGE.md that are theories, keyed by their theory name."""
    if not LANGUAGE_MD.is_file():
        return {}
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", LANGUAGE_MD.read_text(), re.S | re.M)
    out = {}
    for block in blocks:
        m = re.search(r"^theory\s+(\w+)", block, re.M)
        if m:
            out[m.group(1)] = block
    return out


def check_golden(path: Path, actual: str):
    """Compare with a golden file; THEORYC_UPDATE_GOLDEN=1 rewrites it instead."""
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; regenerate with THEORYC_UPDATE_GOLDEN=1")
    expected = path.read_text()
    assert actual == expected, f"{path.name} differs from its golden file (THEORYC_UPDATE_GOLDEN=1 to accept)"
