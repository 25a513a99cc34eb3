"""--compile: the generated fused steps (compiler/fused.py) and the samplers' compiled paths.

The default tests run the compiled paths through torch.compile with backend "eager" (dynamo
traces the step and runs the traced graph; no C++ compile), which checks the plumbing and that
the traced step is the eager step in seconds; the slow tests use the real backend (inductor).
Both compare whole chains against the eager sampler on the same random numbers: in float64 the
fused and the eager arithmetic differ only in rounding (inductor may reorder a sum), which after
tens of trajectories is ~1e-13, so 1e-9 is far above rounding and far below any real change
(one different accept/reject moves a configuration by O(0.1)).
"""
from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

import theoryc
from fakes import phi4_lattice
from theoryc.cli import main
from theoryc.runtime.chains import compiling
from theoryc.runtime.chains.hmc import run_hmc
from theoryc.runtime.chains.langevin import run_langevin
from theoryc.runtime.errors import SamplerError

ROUNDING = 1e-9


@pytest.fixture
def traced_only(monkeypatch):
    monkeypatch.setitem(compiling.OPTIONS, "backend", "eager")


@pytest.fixture(scope="module")
def phi4():
    return theoryc.load("phi4_2d", L=6, kappa=0.21, **{"lambda": 0.022})


def test_drift_kick_is_a_drift_then_a_kick_with_the_force(phi4):
    g = torch.Generator().manual_seed(1)
    phi, p = torch.randn((2, 3, *phi4.shape), generator=g, dtype=torch.float64)
    new, q, f = phi4.drift_kick(phi, p, 0.1, 0.05)
    moved = phi + 0.1 * p
    assert torch.equal(new, moved)
    assert torch.equal(f, phi4.force(moved))
    assert torch.equal(q, p - 0.05 * phi4.force(moved))


def test_langevin_step_is_an_update_then_the_drift(phi4):
    g = torch.Generator().manual_seed(2)
    phi, k, eta = torch.randn((3, 3, *phi4.shape), generator=g, dtype=torch.float64)
    new, drift = phi4.langevin_step(phi, k, eta, 0.01, math.sqrt(0.02))
    assert torch.equal(new, phi + 0.01 * k + math.sqrt(0.02) * eta)
    assert torch.equal(drift, phi4.drift(new))


def test_fused_steps_do_not_clash_with_a_users_names():
    """A theory whose parameters are called like the steps' arguments keeps its own values."""
    text = theoryc.emit("phi4_0d")
    assert "def drift_kick(cfg, p, eps, kick):" in text
    src = ("theory clash\nfield x : real\nparam p = 2.0\nparam eps = 0.5\nparam drift_kick = 1.0\n"
           "action = p/2 * x^2 + eps * drift_kick * x^4\nobservable x2 = x^2\n")
    th = theoryc.load_text(src)
    x = torch.tensor([[0.3]], dtype=torch.float64)
    new, q, f = th.drift_kick(x, torch.ones_like(x), 0.1, 0.1)
    assert torch.allclose(f, 2.0 * new + 2.0 * new ** 3)     # dS/dx = p x + 4 eps dk x^3


def test_complex_theories_have_no_fused_steps():
    th = theoryc.load("complex_quartic")
    assert th.drift_kick is None and th.langevin_step is None


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_compiled_hmc_is_the_eager_chain(phi4, traced_only, integrator):
    runs = [run_hmc(phi4, n=15, chains=3, warmup=10, integrator=integrator, progress=False,
                    compile=c) for c in (False, True)]
    assert (runs[0].configs - runs[1].configs).abs().max() < ROUNDING
    assert runs[1].timing["compile_seconds"] > 0 and runs[1].settings["compile"] is True


@pytest.mark.parametrize("scheme", ["em", "bm"])
def test_compiled_langevin_is_the_eager_chain(phi4, traced_only, scheme):
    runs = [run_langevin(phi4, n=10, chains=3, warmup=10, every=3, scheme=scheme, progress=False,
                         compile=c) for c in (False, True)]
    assert (runs[0].configs - runs[1].configs).abs().max() < ROUNDING
    assert runs[1].timing["compile_seconds"] > 0


def test_compile_refusals(phi4):
    with pytest.raises(SamplerError, match="fused step 'drift_kick'"):
        run_hmc(phi4_lattice((4, 4)), n=2, warmup=2, progress=False, compile=True)
    with pytest.raises(SamplerError, match="Fourier"):
        run_hmc(phi4, n=2, warmup=2, progress=False, compile=True, fourier_acceleration=True)
    with pytest.raises(SamplerError, match="em, bm"):
        run_langevin(phi4, n=2, scheme="rk2", progress=False, compile=True)


def test_cli_sample_compile_reports_its_compile_time(tmp_path, traced_only):
    out = tmp_path / "run.h5"
    result = CliRunner().invoke(main, ["sample", "phi4_2d", "--sampler", "hmc", "--set", "L=4", "--n", "5",
                                       "--warmup", "5", "--compile", "--quiet", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "compiled the fused steps in" in result.output
    refused = CliRunner().invoke(main, ["sample", "phi4_2d", "--sampler", "metropolis", "--n", "5",
                                        "--compile", "-o", str(tmp_path / "m.h5")])
    assert refused.exit_code != 0 and "compile" in refused.output


@pytest.mark.slow
def test_inductor_compiled_samplers_are_the_eager_chains(phi4):
    """The real backend: one compile per function (~10-20 s on 2 cores), same chains."""
    hmc = [run_hmc(phi4, n=15, chains=3, warmup=10, progress=False, compile=c) for c in (False, True)]
    assert (hmc[0].configs - hmc[1].configs).abs().max() < ROUNDING
    bm = [run_langevin(phi4, n=10, chains=3, warmup=10, every=3, progress=False, compile=c)
          for c in (False, True)]
    assert (bm[0].configs - bm[1].configs).abs().max() < ROUNDING
    assert hmc[1].timing["compile_seconds"] > 0 and bm[1].timing["compile_seconds"] > 0
