"""`theoryc compile FILE|NAME [--set P=V] [--emit python|sympy]` as a user runs it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import theoryc
from conftest_compiler import GOLDEN, REPO, private_cache  # noqa: F401
from theoryc.cli import main


def invoke(*args):
    result = CliRunner().invoke(main, ["compile", *args])
    assert "Traceback" not in result.output
    return result


def test_compile_prints_the_module_path_then_cached(private_cache):
    first = invoke("phi4_0d", "--set", "g=3")
    assert first.exit_code == 0, first.output
    path = first.output.strip()
    assert path.startswith(str(private_cache)) and os.path.isfile(path)
    again = invoke("phi4_0d", "--set", "g=3")
    assert again.exit_code == 0 and again.output.strip() == f"{path}  (cached)"


def test_emit_python_is_the_generated_module():
    result = invoke("phi4_2d", "--emit", "python")
    assert result.exit_code == 0
    assert result.output == (GOLDEN / "code" / "phi4_2d.py").read_text()


def test_set_L_resizes_and_set_a_complex_value():
    result = invoke("phi4_2d", "--set", "L=8", "--emit", "python")
    assert result.exit_code == 0 and "LATTICE = (8, 8)" in result.output
    result = invoke("complex_quartic", "--set", "sigma0=2 - 0.5i", "--emit", "sympy")
    assert result.exit_code == 0 and "complex action" in result.output
    assert "param sigma0 = (2-0.5j)" in result.output
    result = invoke("complex_quartic", "--set", "sigma0=2", "--emit", "sympy")
    assert result.exit_code == 0 and "real action" in result.output


def test_emit_sympy_lists_the_derivation():
    out = invoke("phi4_2d", "--emit", "sympy").output
    assert "dS/dphi(x) =" in out
    assert "symmetry phi -> -phi: proved symbolically; used as an exact global move" in out
    assert "schedule ve: k(t) = 0" in out and "tabulated" not in out


def test_compile_a_file(tmp_path):
    path = tmp_path / "mine.theory"
    path.write_text("theory mine\nlattice 3 x 3\nfield phi : real\naction = sum(x)[ phi(x)^2 ]\n")
    result = invoke(str(path))
    assert result.exit_code == 0 and result.output.strip().endswith(".py")


@pytest.mark.parametrize("args, message", [
    (["no_such_theory"], "no file 'no_such_theory' and no shipped theory of that name"),
    (["phi4_2d", "--set", "kappa"], "--set expects NAME=VALUE"),
    (["phi4_2d", "--set", "kapa=0.3"], "did you mean 'kappa'?"),
    (["phi4_2d", "--set", "kappa=__import__('os')"], "--set kappa=__import__('os')"),
    (["phi4_2d", "--set", "L=0"], "a lattice extent must be a positive integer"),
    (["phi4_2d", "--set", "L=7.5"], "a lattice extent must be a positive integer"),
])
def test_user_mistakes_exit_1_with_one_message(args, message):
    result = invoke(*args)
    assert result.exit_code == 1
    assert message in result.output


@pytest.mark.parametrize("name", ["python_import", "bracket_never_closed", "symmetry_false"])
def test_real_process_exits_1_without_traceback(name, tmp_path):
    path = GOLDEN / "errors" / f"{name}.theory"
    env = {**os.environ, "THEORYC_CACHE": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "theoryc.cli", "compile", str(path)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr and run.stdout == ""
    expected = (GOLDEN / "errors" / f"{name}.txt").read_text().replace(f"'{name}.theory'", f"'{path}'")
    assert run.stderr == expected
