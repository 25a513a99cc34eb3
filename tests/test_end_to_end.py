"""End-to-end tests through the command line, run as a user would (`theoryc sample/train/measure/plot`).

Every physics assertion compares a `measure --json` mean with an exact value (shared/reference/
exact.json or a closed form) or with another sampler's ensemble, within 3 sigma of the measured
error (errors of both sides combined in quadrature when two ensembles are compared). The commands
run in-process through click's CliRunner (one import of torch for all of them), in a temporary
folder, with the compiled-theory cache in a temporary THEORYC_CACHE.

Slow tests (`-m slow`) run the seed talk's diffusion-model checks end to end; their wall times on
one thread are in the docstrings.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import REFERENCE as CONFTEST_REFERENCE
from theoryc.cli import main

REFERENCE = Path(os.environ.get("THEORYC_REFERENCE", CONFTEST_REFERENCE))
EXACT = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else None
needs_exact = pytest.mark.skipif(EXACT is None, reason="shared/reference/exact.json not available")

THEORIES = Path(__file__).resolve().parent.parent / "theories"


# ------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module", autouse=True)
def isolated_cache(tmp_path_factory):
    """Compiled theories go to a fresh cache, so that the tests exercise the compiler too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THEORYC_CACHE", str(tmp_path_factory.mktemp("theoryc_cache")))
        yield


def cli(*args, expect: int = 0):
    """Run `theoryc ARGS` in-process; fail with its output unless it exits with `expect`."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, f"theoryc {' '.join(map(str, args))}\n{result.output}"
    return result


def measure(path, *extra) -> dict:
    return json.loads(cli("measure", path, "--json", *extra).stdout)


def value(entry):
    """A measured mean or error as a Python number (complex ones are stored as [re, im])."""
    return complex(*entry) if isinstance(entry, list) else entry


def assert_within(entry: dict, exact, sigmas: float = 3.0, other: dict | None = None):
    """|mean - exact| < sigmas * error, separately for the real and imaginary parts.

    With `other` (a second ensemble's entry) the comparison is mean vs other's mean with both
    errors combined in quadrature."""
    mean, err = value(entry["mean"]), value(entry["error"])
    if other is not None:
        exact, err2 = value(other["mean"]), value(other["error"])
        err = complex(math.hypot(err.real, complex(err2).real), math.hypot(complex(err).imag, complex(err2).imag))
    for part in ("real", "imag"):
        m, e, x = (getattr(complex(v), part) for v in (mean, err, exact))
        if part == "imag" and e == 0 and m == 0 and x == 0:
            continue
        assert e > 0, f"{part}: zero error {entry}"
        assert abs(m - x) < sigmas * e, f"{part}: {m} vs {x}: {abs(m - x) / e:.1f} sigma (error {e})"


def write_theory(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.theory"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------ module ensembles
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def phi4_hmc(work) -> Path:
    out = work / "phi4.h5"
    cli("sample", "phi4_2d", "--set", "L=8", "--sampler", "hmc", "--n", 300, "--chains", 2,
        "--warmup", 100, "--seed", 1, "--quiet", "-o", out)
    return out


@pytest.fixture(scope="module")
def quartic_cl(work) -> Path:
    """Complex Langevin on the complex quartic; 64 x 1000 gives errors of 0.7% on <x^2>."""
    out = work / "quartic_cl.h5"
    cli("sample", "complex_quartic", "--sampler", "langevin", "--chains", 64, "--n", 1000,
        "--seed", 2, "--quiet", "-o", out)
    return out


@pytest.fixture(scope="module")
def van_model(work) -> Path:
    out = work / "van.pt"
    cli("train", "ising_2d", "--set", "L=4", "--model", "flow", "--steps", 200, "--quiet", "-o", out)
    return out


# ------------------------------------------------------------------------------ fast tests
def test_measure_json_has_the_documented_shape(phi4_hmc):
    """DESIGN.md: observables {mean, error, tau_int}, estimates {mean, error}, sampler figures."""
    summary = measure(phi4_hmc)
    assert set(summary) >= {"observables", "estimates", "cumulants", "sampler"}
    for name in ("M", "phi2"):
        assert set(summary["observables"][name]) >= {"mean", "error", "tau_int"}
        assert summary["observables"][name]["error"] > 0
    for name in ("chi2", "U_L"):
        assert set(summary["estimates"][name]) >= {"mean", "error"}
        assert summary["estimates"][name]["error"] > 0
    assert 0.5 < summary["sampler"]["acceptance"] <= 1
    assert_within(summary["sampler"]["exp_minus_dH"], 1.0)       # Creutz: <e^-dH> = 1
    assert_within(summary["observables"]["M"], 0.0)              # Z2 symmetric phase


@needs_exact
def test_free_field_phi2_matches_exact(work):
    ref = EXACT["free_scalar_2d"]
    assert ref["params"]["shape"] == [16, 16]
    out = work / "free.h5"
    cli("sample", "phi4_2d", "--set", "L=16", "--set", f"kappa={ref['params']['kappa']}",
        "--set", "lambda=0", "--sampler", "hmc", "--n", 400, "--chains", 2, "--warmup", 100,
        "--seed", 3, "--quiet", "-o", out)
    summary = measure(out)
    assert summary["observables"]["phi2"]["error"] < 0.01
    assert_within(summary["observables"]["phi2"], ref["phi2"])


def test_hmc_on_complex_action_is_refused_with_a_hint(work):
    result = cli("sample", "complex_quartic", "--sampler", "hmc", "-o", work / "no.h5", expect=1)
    assert "complex Langevin" in result.output
    assert "Traceback" not in result.output
    assert not (work / "no.h5").exists()


@needs_exact
def test_complex_langevin_quartic_moments_and_cumulants(quartic_cl):
    exact = EXACT["complex_quartic"]
    summary = measure(quartic_cl, "--cumulants", 4)
    x2 = summary["observables"]["x2"]
    assert isinstance(x2["mean"], list) and len(x2["mean"]) == 2      # complex as [re, im]
    assert abs(value(x2["error"])) < 0.01 * abs(complex(*exact["moments"]["mu2"]))
    assert_within(x2, complex(*exact["moments"]["mu2"]))
    assert_within(summary["observables"]["x4"], complex(*exact["moments"]["mu4"]))
    kappa = summary["cumulants"]["x1"]
    assert_within(kappa["kappa2"], complex(*exact["cumulants"]["kappa2"]))
    assert_within(kappa["kappa4"], complex(*exact["cumulants"]["kappa4"]))


COMPLEX_GAUSSIAN = """\
# a user's complex Gaussian: <z^2> = 1/s for Re s > 0
theory complex_gaussian
field z : real
param s = 2 - 0.5i
action = s/2 * z^2
observable z2 = z^2
"""


@pytest.mark.parametrize("sets, s", [((), 2 - 0.5j), (("--set", "s=1+2i"), 1 + 2j)])
def test_user_complex_gaussian(work, sets, s):
    theory = write_theory(work, "complex_gaussian", COMPLEX_GAUSSIAN)
    out = work / f"cg_{s}.h5"
    cli("sample", theory, *sets, "--sampler", "langevin", "--chains", 64, "--n", 500, "--seed", 4,
        "--quiet", "-o", out)
    summary = measure(out)
    assert summary["observables"]["z2"]["mean"] != [0, 0]
    assert_within(summary["observables"]["z2"], 1 / s)


def test_resume_after_interrupt_is_bitwise_identical(work, monkeypatch):
    """Interrupt an HMC run after trajectory 250 (checkpoints every 100 kept configurations: the
    last at trajectory 200): the CLI says how to go on,
    `--resume` finishes it, and the ensemble equals an uninterrupted run's bit for bit."""
    import h5py
    from theoryc.runtime.chains import hmc

    args = ("sample", "phi4_2d", "--set", "L=4", "--sampler", "hmc", "--n", 200, "--chains", 2,
            "--warmup", 100, "--seed", 5, "--quiet")
    cli(*args, "-o", work / "whole.h5")

    original = hmc.HMCKernel.step
    calls = {"n": 0}

    def counted(self, *a, **kw):
        calls["n"] += 1
        return original(self, *a, **kw)

    def interrupted(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 250:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(hmc.HMCKernel, "step", interrupted)
    result = cli(*args, "-o", work / "parts.h5", expect=130)
    assert "--resume" in result.output
    assert (work / "parts.h5.ckpt").exists() and not (work / "parts.h5").exists()
    calls["n"] = 0
    monkeypatch.setattr(hmc.HMCKernel, "step", counted)
    cli(*args, "--resume", "-o", work / "parts.h5")
    assert calls["n"] == 300 - 200                    # it continued from the checkpoint
    assert not (work / "parts.h5.ckpt").exists()
    with h5py.File(work / "whole.h5") as a, h5py.File(work / "parts.h5") as b:
        assert np.array_equal(a["configs"][...], b["configs"][...])
        for name in a["stats"]:
            assert np.array_equal(a["stats"][name][...], b["stats"][name][...]), name


def is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_plot_ensembles_and_a_model(work, phi4_hmc, quartic_cl, van_model):
    cli("plot", phi4_hmc, "-o", work / "hmc.png")
    cli("plot", quartic_cl, "-o", work / "cl.png")
    cli("plot", van_model, "-o", work / "van.png")
    assert all(is_png(work / f) for f in ("hmc.png", "cl.png", "van.png"))
    # several inputs: -o is a pattern with {name}, one figure per input (issue 15: -o names
    # exactly the files written; a plain -o with several inputs is refused)
    cli("plot", phi4_hmc, quartic_cl, "-o", work / "both_{name}.png")
    assert is_png(work / "both_phi4.png") and is_png(work / "both_quartic_cl.png")


def test_train_and_sample_a_van(work, van_model):
    """VAN on the 4x4 Ising model: an exact independence-Metropolis chain, log Z with an error,
    and <m> = 0 (Z2) within errors."""
    out = work / "van.h5"
    cli("sample", "ising_2d", "--set", "L=4", "--sampler", "flow", "--model", van_model,
        "--n", 20000, "--seed", 6, "--quiet", "-o", out)
    summary = measure(out)
    sampler = summary["sampler"]
    assert set(sampler["log_z"]) >= {"mean", "error"} and sampler["log_z"]["error"] > 0
    assert 0.1 < sampler["acceptance"] <= 1
    assert_within(summary["observables"]["m"], 0.0)
    assert_within(sampler["log_z"], ising_log_z(4, 0.44), sigmas=4)


def ising_log_z(L: int, beta: float) -> float:
    """log Z of the L x L periodic Ising model by transfer matrix (exact, 2^L states)."""
    states = np.array([[1 - 2 * ((s >> i) & 1) for i in range(L)] for s in range(2 ** L)], float)
    row = beta * (states * np.roll(states, 1, axis=1)).sum(1)               # within a row
    between = beta * states @ states.T                                       # between rows
    transfer = np.exp(row[:, None] / 2 + between + row[None, :] / 2)
    return float(np.log(np.trace(np.linalg.matrix_power(transfer, L))))


def test_shipped_lattice_mass_theory_compiles_and_its_force_is_the_gradient():
    import theoryc
    th = theoryc.load("phi4_lattice_mass")
    assert th.shape == (1, 8, 8)
    assert th.params["m2"] == -4 and th.params["lam"] == 8
    gen = torch.Generator().manual_seed(7)
    phi = torch.randn((3, *th.shape), generator=gen, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(th.action(phi).sum(), phi)
    assert torch.allclose(th.force(phi.detach()), grad, rtol=1e-10, atol=1e-10)
    # the action by hand: sum_x [ sum_mu phi (2 phi - phi(x+mu) - phi(x-mu)) + m2 phi^2 + lam phi^4 ]
    p = phi.detach()[:, 0]
    kinetic = sum(p * (2 * p - torch.roll(p, 1, d) - torch.roll(p, -1, d)) for d in (1, 2))
    by_hand = (kinetic - 4 * p ** 2 + 8 * p ** 4).sum((1, 2))
    assert torch.allclose(th.action(phi.detach()), by_hand, rtol=1e-12)
    m = th.observables(phi.detach())["M"]
    assert torch.allclose(m, p.mean((1, 2)))
    assert [e for e in th.estimates] and "chi2" in th.estimates


# ------------------------------------------------------------------------------ slow tests
def double_gaussian_cumulants(mu0: float, s0: float) -> dict:
    """kappa_n = d^n W / dj^n at j = 0 for W(j) = s0^2 j^2 / 2 + log cosh(mu0 j) (the generating
    function of exp(-(x - mu0)^2 / 2 s0^2) + exp(-(x + mu0)^2 / 2 s0^2))."""
    import sympy
    j = sympy.Symbol("j")
    w = sympy.Rational(1, 2) * sympy.nsimplify(s0) ** 2 * j**2 + sympy.log(sympy.cosh(sympy.nsimplify(mu0) * j))
    return {f"kappa{n}": float(sympy.diff(w, j, n).subs(j, 0)) for n in (2, 4, 6, 8)}


@needs_exact
def test_double_gaussian_exact_cumulants_agree_with_the_reference():
    ref = EXACT["double_gaussian"]
    exact = double_gaussian_cumulants(ref["params"]["mu0"], ref["params"]["sigma0"])
    assert exact == pytest.approx(ref["cumulants"], rel=1e-12)


DG_TOLERANCE = {"ve": (0.01, 0.02, 0.04, 0.06), "vp": (0.02, 0.04, 0.06, 0.10)}   # the seed's


@pytest.fixture(scope="module")
def double_gaussian_hmc(work):
    """8 chains x 25000 HMC configurations (the symmetry move x -> -x makes HMC visit both
    modes), one ensemble per parameter point."""
    made = {}

    def ensemble(mu0, s0):
        if (mu0, s0) not in made:
            out = work / f"dg_{mu0}_{s0}.h5"
            cli("sample", "double_gaussian", "--set", f"mu0={mu0}", "--set", f"s0={s0}", "--sampler", "hmc",
                "--chains", 8, "--n", 25000, "--seed", 11, "--quiet", "-o", out)
            made[(mu0, s0)] = out
        return made[(mu0, s0)]
    return ensemble


@pytest.mark.slow
@pytest.mark.parametrize("schedule, mu0, s0", [("ve", 1.0, 0.25), ("vp", 1.0, 0.25), ("ve", 1.5, 0.5)])
def test_double_gaussian_diffusion_cumulants(work, double_gaussian_hmc, schedule, mu0, s0):
    """Issue "Diffusion": HMC data -> diffusion model -> 200000 samples; kappa2..kappa8 of x within
    the seed's tolerances of exact, and the HMC data themselves within 3 sigma of exact.
    Wall time (one thread): 64-71 s each at 300 sampling steps (HMC 13 s per parameter point,
    training 20 s, sampling 50 s); measured then ve 1, 0.25: kappa2..8 rel +0.3, -0.1, -0.1,
    -0.1 %; vp: +0.2, -0.1, -0.1, -0.1 %; ve 1.5, 0.5: -0.5, -1.7, -2.4, -3.2 %. Sampled with 500
    steps: Euler-Maruyama's discretisation is part of the 1.5, 0.5 kappa4 bias, which sits at the
    seed's 2% (-2.02% at 300 steps on the jittered-HMC data, -1.54% at 500, -1.44% at 1000;
    kappa2..8 at 500: -0.3, -1.5, -2.1, -2.9 %)."""
    data = double_gaussian_hmc(mu0, s0)
    exact = double_gaussian_cumulants(mu0, s0)
    hmc = measure(data, "--cumulants", 8)["cumulants"]["x1"]
    for name, ex in exact.items():
        assert_within(hmc[name], ex)
    tag = f"{schedule}_{mu0}_{s0}"
    cli("train", "double_gaussian", "--set", f"mu0={mu0}", "--set", f"s0={s0}", "--model", "diffusion",
        "--schedule", schedule, "--data", data, "--steps", 5000, "--seed", 1, "--quiet", "-o", work / f"{tag}.pt")
    cli("sample", "double_gaussian", "--set", f"mu0={mu0}", "--set", f"s0={s0}", "--sampler", "diffusion",
        "--model", work / f"{tag}.pt", "--n", 200000, "--steps", 500, "--seed", 2, "--quiet",
        "-o", work / f"{tag}.h5")
    generated = measure(work / f"{tag}.h5", "--cumulants", 8)["cumulants"]["x1"]
    for (name, ex), tol in zip(exact.items(), DG_TOLERANCE[schedule]):
        got = generated[name]
        print(f"{tag} {name} = {got['mean']:.4f} +- {got['error']:.4f} (exact {ex:.4f}, HMC "
              f"{hmc[name]['mean']:.4f} +- {hmc[name]['error']:.4f}), rel {got['mean'] / ex - 1:+.4f}")
        assert abs(got["mean"] / ex - 1) < tol
        assert got["error"] < tol * abs(ex) / 3            # the tolerance is above the noise


PHI4_TRAIN_STEPS = 1500   # batch 64, as the runtime's free-field test


@pytest.mark.slow
def test_phi4_8x8_diffusion_reproduces_the_seed_table(work):
    """The seed's table at L = 8: HMC training and test ensembles (4 x 1280 each, other seeds),
    a VE diffusion model trained on the first, 5120 generated configurations: chi2 and U_L of
    the generated ones within 3 sigma (errors combined) of the test ensemble's, <M> within 3
    sigma of its exact 0. (This test had 2 sigma: two comparisons at 2 sigma fail ~9% of the
    time for a perfect model, and after the unrelated change of random streams U_L came out
    2.2 sigma off.) Wall time 4.5 min on one thread; measured: train chi2 2.499(79), U_L
    0.056(23); test 2.518(79), 0.036(26); generated 2.449(46), 0.103(15)."""
    theory = ("phi4_2d", "--set", "L=8")
    for name, seed in (("train", 21), ("test", 22)):
        cli("sample", *theory, "--sampler", "hmc", "--chains", 4, "--n", 1280, "--every", 2,
            "--seed", seed, "--quiet", "-o", work / f"phi4_{name}.h5")
    cli("train", *theory, "--model", "diffusion", "--schedule", "ve", "--data", work / "phi4_train.h5",
        "--steps", PHI4_TRAIN_STEPS, "--batch-size", 64, "--seed", 23, "--quiet", "-o", work / "phi4_dm.pt")
    cli("sample", *theory, "--sampler", "diffusion", "--model", work / "phi4_dm.pt", "--n", 5120,
        "--steps", 200, "--seed", 24, "--quiet", "-o", work / "phi4_generated.h5")
    table = {name: measure(work / f"phi4_{name}.h5") for name in ("train", "test", "generated")}
    for name, s in table.items():
        m, chi2, ul = s["observables"]["M"], s["estimates"]["chi2"], s["estimates"]["U_L"]
        print(f"{name:<10} <M> {m['mean']:.4f}({m['error']:.4f})  chi2 {chi2['mean']:.4f}({chi2['error']:.4f})"
              f"  U_L {ul['mean']:.4f}({ul['error']:.4f})")
    test, gen = table["test"], table["generated"]
    # <M> = 0 exactly (phi -> -phi): the generated <M> against it, not against the test
    # ensemble's own fluctuation (-0.0039(28) vs 0.0050(28) after the chain-block streams)
    assert_within(gen["observables"]["M"], 0.0)
    for name in ("chi2", "U_L"):
        assert_within(gen["estimates"][name], None, other=test["estimates"][name])
    assert_within(table["train"]["estimates"]["chi2"], None, other=test["estimates"]["chi2"])



@pytest.mark.slow
def test_flow_on_the_tutorial_phi4(work):
    """Issue "Flows": a flow trained by reverse KL on phi4_lattice_mass (3000 steps) samples it
    exactly by independence Metropolis: acceptance >= 0.2 and chi2 within 3 sigma (combined) of
    HMC's (about 0.74). Wall time 2.2 min on one thread; measured acceptance 0.51, chi2 flow
    0.764(19), HMC 0.721(15)."""
    cli("train", "phi4_lattice_mass", "--model", "flow", "--steps", 3000, "--seed", 31, "--quiet",
        "-o", work / "lm_flow.pt")
    cli("sample", "phi4_lattice_mass", "--sampler", "flow", "--model", work / "lm_flow.pt", "--n", 20000,
        "--seed", 32, "--quiet", "-o", work / "lm_flow.h5")
    cli("sample", "phi4_lattice_mass", "--sampler", "hmc", "--chains", 4, "--n", 2000, "--seed", 33,
        "--quiet", "-o", work / "lm_hmc.h5")
    flow, hmc = measure(work / "lm_flow.h5"), measure(work / "lm_hmc.h5")
    print("flow", flow["estimates"]["chi2"], flow["sampler"]["acceptance"], "hmc", hmc["estimates"]["chi2"])
    assert flow["sampler"]["acceptance"] >= 0.2
    assert_within(flow["estimates"]["chi2"], None, other=hmc["estimates"]["chi2"])
    assert_within(flow["observables"]["phi2"], None, other=hmc["observables"]["phi2"])
    assert_within(flow["observables"]["M"], 0.0)


@pytest.mark.slow
@needs_exact
def test_complex_quartic_diffusion_and_mcmc_on_the_learnt_energy(work):
    """CL data (1000 chains x 200) -> score model and energy model (t-power 3) -> 100000 samples
    each: Re and Im of <x^2>, <x^4> within 3% of exact; HMC on the energy model's E(x, y, t_eps)
    within 5%. MCMC-EBM needs a well-trained energy at t_eps: HMC (64 x 800) on the energy after
    6000 steps (the runtime test's count) gave <x^2> = 0.399(4) - 0.137(2)i, 7% low, although the
    diffusion samples of that model were within 1%; after 12000 steps <x^4> = 0.401(5) - 0.269(3)i
    (5.4% low, two HMC seeds); after 20000, <x^2> = 0.424(3) - 0.148(1)i, <x^4> = 0.413(5) -
    0.277(3)i. Wall time 3.4 min on one thread."""
    exact = {name: complex(*EXACT["complex_quartic"]["moments"][mu]) for name, mu in (("x2", "mu2"), ("x4", "mu4"))}
    cli("sample", "complex_quartic", "--sampler", "langevin", "--chains", 1000, "--n", 200, "--warmup", 200,
        "--seed", 41, "--quiet", "-o", work / "cq_cl.h5")
    data = measure(work / "cq_cl.h5")
    check_moments(data, exact, 0.03, "CL")
    for flavour, extra in (("score", ("--steps", 3000)), ("energy", ("--steps", 20000, "--t-power", 3))):
        cli("train", "complex_quartic", "--model", "diffusion", "--flavour", flavour, *extra,
            "--data", work / "cq_cl.h5", "--seed", 42, "--quiet", "-o", work / f"cq_{flavour}.pt")
        cli("sample", "complex_quartic", "--sampler", "diffusion", "--model", work / f"cq_{flavour}.pt",
            "--n", 100000, "--steps", 300, "--seed", 43, "--quiet", "-o", work / f"cq_{flavour}.h5")
        check_moments(measure(work / f"cq_{flavour}.h5"), exact, 0.03, flavour, data=data)
    cli("sample", "complex_quartic", "--sampler", "hmc", "--model", work / "cq_energy.pt", "--chains", 64,
        "--n", 800, "--warmup", 200, "--seed", 44, "--quiet", "-o", work / "cq_mcmc_ebm.h5")
    check_moments(measure(work / "cq_mcmc_ebm.h5"), exact, 0.05, "MCMC-EBM", data=data)


def check_moments(summary: dict, exact: dict, tolerance: float, label: str, data: dict | None = None):
    """Re and Im within `tolerance` (relative), and the sample's own error well below it. A model
    trained on `data` (an ensemble's summary) inherits that ensemble's statistical error, so 3 of
    its sigmas are allowed on top (the CL ensemble's <x^4> is itself 1.3 sigma, 0.9%, off)."""
    for name, ex in exact.items():
        got, err = value(summary["observables"][name]["mean"]), value(summary["observables"][name]["error"])
        print(f"{label} <{name}> = {got:.4f} +- {err:.4f} (exact {ex:.4f})")
        inherited = value(data["observables"][name]["error"]) if data is not None else 0j
        for part in ("real", "imag"):
            g, e, x = (getattr(complex(v), part) for v in (got, err, ex))
            allowed = tolerance * abs(x) + 3 * abs(getattr(complex(inherited), part))
            assert abs(g - x) < allowed, f"{label} {name} {part}: {g} vs {x}"
            assert e < tolerance * abs(x) / 3, f"{label} {name} {part}: error {e} too large for the check"
