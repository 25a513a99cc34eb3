"""The compiler end to end: every example of LANGUAGE.md compiles and behaves as stated there;
schedule kernels against closed forms and against scipy quadrature; the code cache."""
from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch
from scipy import integrate

import theoryc
from conftest_compiler import LANGUAGE_MD, language_examples, load, private_cache  # noqa: F401
from theoryc.dsl.errors import TheoryError

EXAMPLES = language_examples()
needs_language_md = pytest.mark.skipif(not EXAMPLES, reason=f"{LANGUAGE_MD} is absent")


# ---- LANGUAGE.md ------------------------------------------------------------------------------
@needs_language_md
def test_language_md_has_the_documented_examples():
    assert {"phi4_2d", "phi4_0d", "complex_quartic", "double_gaussian", "ising_2d"} <= set(EXAMPLES)


# Examples of LANGUAGE.md whose language features are still open issues.
PENDING: dict[str, str] = {}


@needs_language_md
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=PENDING[n], strict=True))
                                  if n in PENDING else n for n in sorted(EXAMPLES)] or ["none"])
def test_every_language_md_example_compiles(name):
    theory = load(EXAMPLES[name], name)
    assert theory.name == name
    cfg = torch.zeros((2, *theory.shape), dtype=torch.float64) + 0.3
    assert theory.action(cfg).shape == (2,)
    assert theory.force(cfg).shape == cfg.shape
    assert set(theory.observables(cfg)) == set(theory.observable_names)


@needs_language_md
def test_phi4_2d_example_declares_what_the_text_lists():
    theory = load(EXAMPLES["phi4_2d"], "phi4_2d")
    assert theory.lattice == (32, 32) and theory.field_names == ("phi",)
    assert theory.field_kinds == ("real",) and not theory.is_complex
    assert theory.params == {"L": 32, "kappa": 0.21, "lambda": 0.022}
    assert theory.observable_names == ("M", "phi2")
    assert list(theory.estimates) == ["chi2", "chi2_abs", "U_L"]
    assert list(theory.schedules) == ["ve", "vp"]
    assert len(theory.symmetries) == 1


@needs_language_md
def test_set_L_resizes_the_lattice():
    theory = load(EXAMPLES["phi4_2d"], "phi4_2d", L=8)
    assert theory.lattice == (8, 8) and theory.volume == 64
    obs = {"M": torch.tensor([0.5, -0.5], dtype=torch.float64)}
    chi2 = theory.estimates["chi2_abs"]
    inputs = theory.estimate_inputs(obs)
    means = [inputs[k].mean() for k in chi2.inputs]
    # volume * (<M^2> - <|M|>^2) = 64 * (0.25 - 0.25): the volume follows L
    assert float(chi2.fn(means)) == pytest.approx(0.0, abs=1e-12)
    means = [torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)]
    assert float(chi2.fn(means)) == pytest.approx(64 * (0.5 - 0.25))


@needs_language_md
def test_complex_quartic_is_complex_until_sigma0_is_set_real():
    theory = load(EXAMPLES["complex_quartic"], "complex_quartic")
    assert theory.is_complex and theory.params["sigma0"] == 1 + 1j
    real = load(EXAMPLES["complex_quartic"], "complex_quartic", sigma0=2)
    assert not real.is_complex and real.params["sigma0"] == 2
    x = torch.linspace(-1, 1, 5, dtype=torch.float64).reshape(5, 1)
    torch.testing.assert_close(real.action(x), (x**2 + x**4 / 4)[:, 0])
    other = load(EXAMPLES["complex_quartic"], "complex_quartic", sigma0="1+2i")
    assert other.is_complex and other.params["sigma0"] == 1 + 2j


@needs_language_md
def test_zero_dimensional_examples_have_no_sites():
    for name in ("phi4_0d", "complex_quartic", "double_gaussian"):
        theory = load(EXAMPLES[name], name)
        assert theory.lattice == () and theory.volume == 1 and theory.shape == (1,)


@needs_language_md
def test_ising_example_is_a_spin_theory_with_its_symmetry():
    theory = load(EXAMPLES["ising_2d"], "ising_2d")
    assert theory.field_kinds == ("spin",) and theory.lattice == (16, 16)
    s = torch.ones((1, 1, 16, 16), dtype=torch.float64)
    assert float(theory.action(s)) == pytest.approx(-0.44 * 2 * 256)
    torch.testing.assert_close(theory.symmetries[0](s), -s)


@needs_language_md
def test_shipped_theories_are_the_language_md_examples():
    """A shipped theory starts with its LANGUAGE.md example (phi4_2d goes on with the
    correlators LANGUAGE.md appends to it)."""
    for name in theoryc.shipped_theories():
        if name in EXAMPLES:
            assert theoryc.api.read_theory(name)[0].decode().startswith(EXAMPLES[name].strip())


# ---- schedules --------------------------------------------------------------------------------
T = torch.linspace(0, 1, 11, dtype=torch.float64)


def test_ve_schedule_matches_closed_form():
    schedule = theoryc.load("phi4_2d", L=4).schedules["ve"]
    sigma = 20.0
    torch.testing.assert_close(schedule.k(T), torch.zeros_like(T))
    torch.testing.assert_close(schedule.g(T), sigma**T, rtol=1e-14, atol=0)
    torch.testing.assert_close(schedule.f(T), torch.ones_like(T))
    xi = (sigma ** (2 * T) - 1) / (2 * math.log(sigma))
    torch.testing.assert_close(schedule.xi(T), xi, rtol=1e-13, atol=1e-15)


def test_vp_schedule_matches_closed_form():
    schedule = theoryc.load("double_gaussian").schedules["vp"]
    bmin, bmax = 0.1, 20.0
    integral = bmin * T + (bmax - bmin) * T**2 / 2
    torch.testing.assert_close(schedule.k(T), bmin + T * (bmax - bmin), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(schedule.g(T) ** 2, bmin + T * (bmax - bmin), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(schedule.f(T), torch.exp(-integral / 2), rtol=1e-13, atol=1e-15)
    # g^2 = k: variance preserving, Xi = 1 - f^2
    torch.testing.assert_close(schedule.xi(T), 1 - torch.exp(-integral), rtol=1e-13, atol=1e-15)


def test_set_a_schedule_parameter():
    schedule = theoryc.load("complex_quartic", sigma=3).schedules["ve"]  # a schedule-local param
    torch.testing.assert_close(schedule.xi(T), (3.0 ** (2 * T) - 1) / (2 * math.log(3.0)), rtol=1e-13, atol=1e-15)


def quadrature_kernel(k, g, t):
    """f(t) and Xi(t) by scipy: f = exp(-1/2 int_0^t k), Xi = int_0^t (f(t)/f(s))^2 g(s)^2 ds."""
    K = lambda u: integrate.quad(k, 0, u, epsabs=1e-13, epsrel=1e-13)[0]
    Kt = K(t)
    xi = integrate.quad(lambda s: g(s) ** 2 * math.exp(K(s) - Kt), 0, t, epsabs=1e-13, epsrel=1e-13)[0]
    return math.exp(-Kt / 2), xi


HARD_SCHEDULE = """
theory hard_schedule
field x : real
action = x^2 / 2
schedule hard {
    param a = 0.7
    drift     = -exp(a * t^2) * x / 2
    diffusion = (1 + t) * cosh(t)
}
schedule mild {
    drift     = -2 * x / 2
    diffusion = 1
}
"""


def test_schedule_without_closed_form_is_tabulated_and_matches_quadrature():
    described = sympy_description(HARD_SCHEDULE)
    line = next(l for l in described.splitlines() if l.startswith("schedule hard"))
    assert "f(t) = (tabulated)" in line and "Xi(t) = (tabulated)" in line
    schedule = load(HARD_SCHEDULE).schedules["hard"]
    for t in (0.0, 0.13, 0.5, 0.77, 1.0):
        f, xi = quadrature_kernel(lambda s: math.exp(0.7 * s * s), lambda s: (1 + s) * math.cosh(s), t)
        tt = torch.tensor([t], dtype=torch.float64)
        assert float(schedule.f(tt)) == pytest.approx(f, abs=1e-6)
        assert float(schedule.xi(tt)) == pytest.approx(xi, abs=1e-6)


def test_constant_drift_schedule_has_closed_form():
    described = sympy_description(HARD_SCHEDULE)
    line = next(l for l in described.splitlines() if l.startswith("schedule mild"))
    assert "tabulated" not in line
    schedule = load(HARD_SCHEDULE).schedules["mild"]
    torch.testing.assert_close(schedule.f(T), torch.exp(-T), rtol=1e-14, atol=0)
    torch.testing.assert_close(schedule.xi(T), (1 - torch.exp(-2 * T)) / 2, rtol=1e-13, atol=1e-15)


@lru_cache(maxsize=None)
def sympy_description(text: str) -> str:
    """What `--emit sympy` prints. SymPy tries to integrate for seconds before it gives up, so the
    code of the same compilation goes into the cache for `load` to find."""
    from theoryc.compiler import cache
    from theoryc.compiler.pipeline import compile_text
    compiled = compile_text(text, "hard.theory")
    cache.store(cache.cache_key(text, {}), compiled.code)
    return compiled.ir.describe()


# ---- the cache --------------------------------------------------------------------------------
def test_second_compile_is_cached_and_edits_change_the_key(tmp_path):
    src = tmp_path / "cached.theory"
    text = "theory cached\nlattice 4\nfield phi : real\nparam m = 1\naction = sum(x)[ m * phi(x)^2 ]\n"
    src.write_text(text)
    first = theoryc.compile(src)
    second = theoryc.compile(src)
    assert not first.cached and second.cached
    assert second.key == first.key and second.path == first.path and first.path.is_file()
    set_m = theoryc.compile(src, {"m": 2})
    assert set_m.key != first.key and not set_m.cached
    assert theoryc.compile(src, {"m": 3}).key not in (first.key, set_m.key)
    assert theoryc.compile(src, {"m": 2}).cached
    src.write_text(text.replace("m * phi", "m * 0.5 * phi"))
    edited = theoryc.compile(src)
    assert edited.key != first.key and not edited.cached


def test_cache_lives_where_THEORYC_CACHE_says(private_cache):
    result = theoryc.compile("phi4_0d")
    assert result.path.parent == private_cache


def test_cached_module_gives_the_same_theory():
    first = theoryc.load("phi4_0d", g=2)
    again = theoryc.load("phi4_0d", g=2)
    x = torch.tensor([[0.3], [1.2]], dtype=torch.float64)
    torch.testing.assert_close(first.action(x), again.action(x))
    torch.testing.assert_close(first.action(x), (x**2 / 2 + 2 * x**4 / 24)[:, 0])


# ---- expressions ------------------------------------------------------------------------------
EXPRESSIONS = """
theory expressions
field z : real
param a = 2^3^2
param b = -2^2
param c = 2^-1
param d = 1e-3
param e = .5
param f = 2.5i
param g = 1e-1i
param h = pi/2
param k = sqrt(-4)
param m = 7/2
param n = 8/2
param q = (1 + 1i)^2 - a
action = z^2 / 2 + f * z
observable r = re(z^2)
observable i = im(z^2)
observable cz = conj(z)
observable az = abs(z)
"""


def test_constant_expressions_follow_the_documented_rules():
    """^ is right-associative and binds tighter than unary minus; integers stay integers when
    they divide; imaginary literals and pi; sqrt of a negative number is imaginary."""
    theory = load(EXPRESSIONS)
    expected = {"a": 512, "b": -4, "c": 0.5, "d": 1e-3, "e": 0.5, "f": 2.5j, "g": 0.1j,
                "h": math.pi / 2, "k": 2j, "m": 3.5, "n": 4, "q": 2j - 512}
    assert theory.params == pytest.approx(expected)
    assert isinstance(theory.params["n"], int) and theory.is_complex


def test_re_im_conj_abs_on_complex_configurations():
    theory = load(EXPRESSIONS)
    z = torch.tensor([[1 + 2j], [-0.5 + 0.25j]], dtype=torch.complex128)
    obs = theory.observables(z)
    torch.testing.assert_close(obs["r"], (z**2).real[:, 0])
    torch.testing.assert_close(obs["i"], (z**2).imag[:, 0])
    torch.testing.assert_close(obs["cz"], z.conj()[:, 0])
    torch.testing.assert_close(obs["az"], z.abs()[:, 0])
    torch.testing.assert_close(theory.drift(z), -(z + 2.5j))


CLASHING_NAMES = """
theory clashing
lattice 4
field phi : real
param t = 0.5
param s = 2
param estimate_chi = 3
param symmetry_0 = 1
param schedule_ve_k = 1
symmetry phi -> -phi
action = sum(x)[ t * s * estimate_chi * symmetry_0 * schedule_ve_k * phi(x)^2 ]
observable M = mean(x)[ phi(x) ]
estimate inputs = <M^2>
estimate chi = estimate_chi * <M^2>
schedule ve {
    param sigma = 3
    drift     = -x * s
    diffusion = sigma^t
}
"""


def test_user_names_never_clash_with_generated_ones():
    """Parameters called t and s (the schedule's time and integration variable), an estimate
    called 'inputs' (estimate_inputs is a generated function) and parameters named like
    generated functions all keep their meaning."""
    theory = load(CLASHING_NAMES)
    cfg = torch.full((1, 1, 4), 0.5, dtype=torch.float64)
    assert float(theory.action(cfg)) == pytest.approx(0.5 * 2 * 3 * 4 * 0.25)
    inputs = theory.estimate_inputs(theory.observables(cfg))
    assert list(inputs) == ["<M^2>"]
    assert float(theory.estimates["inputs"].fn([torch.tensor(0.2)])) == pytest.approx(0.2)
    assert float(theory.estimates["chi"].fn([torch.tensor(0.2)])) == pytest.approx(0.6)
    schedule = theory.schedules["ve"]
    torch.testing.assert_close(schedule.g(T), 3.0**T, rtol=1e-14, atol=0)
    torch.testing.assert_close(schedule.f(T), torch.exp(-2 * T), rtol=1e-14, atol=0)
    xi = torch.exp(-4 * T) * (torch.exp((4 + math.log(9)) * T) - 1) / (4 + math.log(9))
    torch.testing.assert_close(schedule.xi(T), xi, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(theory.symmetries[0](cfg), -cfg)


# ---- devices ----------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["phi4_2d", "complex_quartic", "double_gaussian"])
def test_generated_code_runs_on_cuda_as_on_cpu(name):
    """Nothing in generated code may pin the cpu: results on cuda equal those on cpu."""
    theory = theoryc.load(name, **({"L": 6} if name == "phi4_2d" else {}))
    g = torch.Generator().manual_seed(0)
    cfg = torch.randn((3, *theory.shape), generator=g, dtype=torch.float64)
    if theory.is_complex:
        cfg = torch.complex(cfg, torch.randn(cfg.shape, generator=g, dtype=torch.float64))
    for fn in (theory.action, theory.force, theory.drift):
        on_gpu = fn(cfg.cuda())
        assert on_gpu.is_cuda
        torch.testing.assert_close(on_gpu.cpu(), fn(cfg), rtol=1e-12, atol=1e-12)
    for key, value in theory.observables(cfg.cuda()).items():
        torch.testing.assert_close(value.cpu(), theory.observables(cfg)[key], rtol=1e-12, atol=1e-12)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    for schedule in theory.schedules.values():
        for part in (schedule.k, schedule.g, schedule.f, schedule.xi):
            torch.testing.assert_close(part(t.cuda()).cpu(), part(t), rtol=1e-12, atol=1e-12)
