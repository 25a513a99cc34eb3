"""Generated code of the shipped theories against golden files, and its determinism.

tests/golden/code/NAME.py is `theoryc.emit(NAME)`; THEORYC_UPDATE_GOLDEN=1 rewrites them after a
deliberate change of the code generator (review the diff: it is the generated code's changelog).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import theoryc
from conftest_compiler import GOLDEN, REPO, check_golden, private_cache  # noqa: F401

SHIPPED = theoryc.shipped_theories()
EMIT_ALL = "import sys, theoryc; sys.stdout.write(''.join(theoryc.emit(n) for n in theoryc.shipped_theories()))"


def test_all_shipped_theories_have_golden_code():
    assert set(SHIPPED) >= {"phi4_2d", "phi4_0d", "complex_quartic", "double_gaussian", "ising_2d"}
    assert {p.stem for p in (GOLDEN / "code").glob("*.py")} == set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_generated_code_matches_golden(name):
    check_golden(GOLDEN / "code" / f"{name}.py", theoryc.emit(name))


@pytest.mark.parametrize("name", SHIPPED)
def test_generated_code_is_what_compile_caches(name):
    """The cache entry is one header line (key, SHA-256 of the code) and the emitted code."""
    result = theoryc.compile(name)
    header, _, code = result.path.read_text().partition("\n")
    assert code == theoryc.emit(name) == result.code
    assert header.startswith(f"# theoryc cache entry {result.key} sha256 ")


def test_generation_is_deterministic_across_processes(tmp_path):
    """Set iteration order follows PYTHONHASHSEED; the generated text must not."""
    outputs = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "THEORYC_CACHE": str(tmp_path / seed)}
        run = subprocess.run([sys.executable, "-c", EMIT_ALL], cwd=REPO, env=env,
                             capture_output=True, timeout=300)
        assert run.returncode == 0, run.stderr.decode()
        outputs.append(run.stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0].decode() == "".join(theoryc.emit(n) for n in SHIPPED)
