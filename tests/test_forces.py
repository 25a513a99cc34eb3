"""The compiler's derivatives against independent ones: the generated force equals autograd of the
generated action and a finite-difference derivative, for the shipped theories and for randomly
generated local actions; the drift of a complex action is its holomorphic derivative; observables,
estimates and symmetry maps against hand computations; the symmetry prover accepts what holds
(also only after summation over sites) and refuses what does not.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import theoryc
from conftest_compiler import load, private_cache  # noqa: F401  (the fixture applies to this module)
from theoryc.dsl.errors import TheoryError

DTYPE = torch.float64
# Central differences with a 5-point stencil at h and h/2, Richardson-extrapolated: truncation
# O(h^6 f^(7)) (~1e-14 at h = 2e-3 even for the double Gaussian's width 0.25), rounding
# ~ eps |S| / h ~ 1e-13 |S|; the tolerance 1e-10 max(1, |S|, |F|) covers both with room to spare.
FD_STEP = 2e-3


def random_cfg(theory, batch=3, scale=0.6, seed=0, dtype=DTYPE):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn((batch, *theory.shape), generator=g, dtype=dtype)


def autograd_force(theory, cfg):
    x = cfg.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(theory.action(x).sum(), x)
    return grad


def finite_difference_force(theory, cfg):
    """d S / d cfg[b, i]: 5-point stencils at two steps, Richardson-extrapolated."""
    coarse, fine = stencil_derivative(theory, cfg, FD_STEP), stencil_derivative(theory, cfg, FD_STEP / 2)
    return (16 * fine - coarse) / 15


def stencil_derivative(theory, cfg, h):
    """The 5-point central difference of S in every coordinate, batched per configuration."""
    batch, n = cfg.shape[0], cfg[0].numel()
    flat = cfg.reshape(batch, n)
    eye = torch.eye(n, dtype=cfg.dtype)
    out = torch.empty_like(flat)
    for b in range(batch):
        stencil = torch.cat([flat[b] + k * h * eye for k in (-2, -1, 1, 2)])
        s = theory.action(stencil.reshape(4 * n, *cfg.shape[1:])).reshape(4, n)
        out[b] = (s[0] - 8 * s[1] + 8 * s[2] - s[3]) / (12 * h)
    return out.reshape(cfg.shape)


def assert_force_correct(theory, cfg):
    force = theory.force(cfg)
    assert force.shape == cfg.shape and force.dtype == cfg.dtype
    auto = autograd_force(theory, cfg)
    scale = max(1.0, auto.abs().max().item())
    torch.testing.assert_close(force, auto, rtol=0, atol=1e-12 * scale)
    size = max(1.0, theory.action(cfg).abs().max().item())
    fd = finite_difference_force(theory, cfg)
    torch.testing.assert_close(force, fd, rtol=0, atol=1e-10 * max(scale, size))
    torch.testing.assert_close(theory.drift(cfg), -force, rtol=0, atol=0)


# ---- shipped theories -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["phi4_2d", "ising_2d", "phi4_0d", "double_gaussian"])
def test_shipped_force_matches_autograd_and_finite_differences(name):
    small = {"L": 5} if name in ("phi4_2d", "ising_2d") else {}
    theory = theoryc.load(name, **small)
    assert_force_correct(theory, random_cfg(theory))


def test_phi4_2d_force_in_the_broken_phase_with_odd_extents():
    theory = theoryc.load("phi4_2d", L=3, kappa=0.5, **{"lambda": 1.3})
    assert theory.lattice == (3, 3)
    assert_force_correct(theory, random_cfg(theory, scale=1.5))


# ---- complex actions: the drift is the holomorphic derivative ---------------------------------
def holomorphic_derivative(theory, z):
    """dS/dz for analytic S: torch's gradient of Re S with respect to a complex leaf is conj(dS/dz)."""
    x = z.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(theory.action(x).real.sum(), x)
    return grad.conj()


def complex_difference(theory, z, h=1e-4):
    """dS/dz by central differences along the real axis and along the imaginary axis: for a
    holomorphic S both must give the same number (Cauchy-Riemann)."""
    n = z[0].numel()
    out = []
    for step in (h, 1j * h):
        eye = step * torch.eye(n, dtype=z.dtype)
        cols = []
        for b in range(z.shape[0]):
            zb = z[b].reshape(n)
            plus = theory.action((zb + eye).reshape(n, *z.shape[1:]))
            minus = theory.action((zb - eye).reshape(n, *z.shape[1:]))
            cols.append((plus - minus) / (2 * step))
        out.append(torch.stack(cols).reshape(z.shape))
    return out


def test_complex_quartic_drift_is_holomorphic_derivative():
    theory = theoryc.load("complex_quartic")
    assert theory.is_complex
    g = torch.Generator().manual_seed(3)
    z = torch.complex(torch.randn(4, 1, generator=g, dtype=DTYPE), torch.randn(4, 1, generator=g, dtype=DTYPE))
    drift = theory.drift(z)
    sigma0, lam = complex(theory.params["sigma0"]), theory.params["lambda"]
    torch.testing.assert_close(drift, -(sigma0 * z + lam * z**3), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(drift, -holomorphic_derivative(theory, z), rtol=1e-12, atol=1e-12)
    along_re, along_im = complex_difference(theory, z)
    torch.testing.assert_close(drift, -along_re, rtol=0, atol=1e-7)
    torch.testing.assert_close(drift, -along_im, rtol=0, atol=1e-7)


COMPLEX_LATTICE = """
theory complex_lattice
lattice 3 x 4
field phi : real
param m2 = 0.5 + 0.8i
param k = 0.3
action = sum(x)[ m2/2 * phi(x)^2 - k * sum(mu)[ phi(x) * phi(x + mu) ] + 1i * 0.1 * phi(x)^3
                 + 0.05 * exp(phi(x)) * phi(x - e1) ]
observable M = mean(x)[ phi(x) ]
"""


def test_complex_lattice_drift_is_holomorphic_derivative():
    theory = load(COMPLEX_LATTICE)
    assert theory.is_complex
    g = torch.Generator().manual_seed(4)
    shape = (2, *theory.shape)
    z = torch.complex(torch.randn(shape, generator=g, dtype=DTYPE), torch.randn(shape, generator=g, dtype=DTYPE))
    drift = theory.drift(z)
    torch.testing.assert_close(drift, -holomorphic_derivative(theory, z), rtol=1e-12, atol=1e-12)
    for d in complex_difference(theory, z):
        torch.testing.assert_close(drift, -d, rtol=0, atol=1e-6)


# ---- randomly generated local actions ---------------------------------------------------------
FIELD_NAMES = ("phi", "chi", "a", "b", "psi2", "torch", "cfg", "tmp0", "fill", "lambda_", "t", "R0")
INDEX_NAMES = ("x", "y", "s", "mu", "nu", "i", "j", "dir")
PARAM_NAMES = ("kappa", "g", "m2", "lambda", "c1", "avg0", "dS_dR0", "torch_")
UNARY = ("{}", "{}^2", "{}^3", "exp({})", "cosh({})", "sqrt(1 + {}^2)", "log(1 + {}^2)", "sin({})",
         "tanh({})", "(1 + {}^2)^(-1)", "exp(-{}^2 / 2)")


@st.composite
def local_theories(draw, complex_action=False):
    """The text of a random theory whose action is a sum of local terms (plus, sometimes, a
    nonlinear function of a site sum): products of functions of fields at random shifts. With
    complex_action, a term with a complex coefficient is added."""
    dim = draw(st.integers(0, 3))
    extents = draw(st.lists(st.integers(2, 4), min_size=dim, max_size=dim))
    fields = draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=2, unique=True))
    free_index = [n for n in INDEX_NAMES if n not in fields]
    site, mu, nu = draw(st.permutations(free_index))[:3]
    params = draw(st.lists(st.sampled_from(PARAM_NAMES), min_size=1, max_size=3, unique=True))
    values = [draw(st.sampled_from(("0.3", "0.7", "1.25", "0.05", "2", "1/3"))) for _ in params]
    lines = ["theory random_local"] + [f"param {p} = {v}" for p, v in zip(params, values)]
    if dim:
        lines.append("lattice " + " x ".join(map(str, extents)))
    lines.append(f"field {', '.join(fields)} : real")

    def coefficient():
        return draw(st.sampled_from(params + ["0.5", "-1", "(1 + " + params[0] + ")"]))

    def factor(shifts):
        f = draw(st.sampled_from(fields))
        at = f if not dim else f"{f}({site}{draw(st.sampled_from(shifts))})"
        return draw(st.sampled_from(UNARY)).format(at)

    def term(shifts):
        n = draw(st.integers(1, 3))
        return " * ".join([coefficient()] + [factor(shifts) for _ in range(n)])

    if complex_action:
        lines.insert(1, f"param zc = {draw(st.sampled_from(('0.4 + 0.3i', '-1i', '2 - 0.5i')))}")
    if not dim:
        terms = [term([""]) for _ in range(draw(st.integers(1, 3)))]
        terms += [f"zc * {term([''])}"] if complex_action else []
        lines.append("action = " + " + ".join(terms) + " + " + fields[0] + "^2")
        return "\n".join(lines) + "\n"
    fixed = [""] + [f" {sign} e{k}" for k in range(dim) for sign in "+-"]
    with_mu = fixed + [f" + {mu}", f" - {mu}", f" + 2*{mu}", f" - 2*{mu}", f" + {mu} + e0"]
    with_nu = with_mu + [f" + {mu} + {nu}", f" + {mu} - {nu}", f" - {nu}", f" + 2*{nu} - {mu}"]
    density = [term(fixed) for _ in range(draw(st.integers(0, 2)))]
    for _ in range(draw(st.integers(0, 2))):
        density.append(f"sum({mu})[ {term(with_mu)} * {fields[0]}({site} + {mu}) ]")
    if draw(st.booleans()):
        density.append(f"sum({mu})[ sum({nu})[ {term(with_nu)} * {fields[-1]}({site} - {nu})"
                       f" * {fields[0]}({site} + {mu}) ] ]")
    # keep the action bounded below-ish and never empty: a mass term for every field
    density += [f"0.5 * {f}({site})^2" for f in fields]
    density += [f"zc * sum({mu})[ {term(with_mu)} * {fields[0]}({site} + {mu}) ]"] if complex_action else []
    action = f"sum({site})[ " + " + ".join(density) + " ]"
    if draw(st.booleans()):
        action += f" + {coefficient()} * (mean({site})[ {factor(fixed)} ])^2"
    if draw(st.booleans()):
        action = f"{coefficient()} * exp(0.1 * ({action}) / volume) * volume"
    lines.append("action = " + action)
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(local_theories())
def test_random_local_action_force(text):
    try:
        theory = load(text)
    except TheoryError as err:
        pytest.fail(f"a valid theory was refused:\n{text}\n{err.format()}")
    assert_force_correct(theory, random_cfg(theory, seed=len(text)))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(local_theories(complex_action=True))
def test_random_complex_action_drift_is_holomorphic(text):
    theory = load(text)
    assert theory.is_complex
    g = torch.Generator().manual_seed(len(text))
    shape = (2, *theory.shape)
    z = 0.5 * torch.complex(torch.randn(shape, generator=g, dtype=DTYPE), torch.randn(shape, generator=g, dtype=DTYPE))
    expected = -holomorphic_derivative(theory, z)
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(theory.drift(z), expected, rtol=0, atol=1e-12 * scale)


ZERO_D = {
    "quartic": "field q : real\nparam m = 0.3\naction = m/2*q^2 + q^4/24",
    "coupled": "field u, v : real\nparam g = 0.4\naction = u^2 + v^2 + g*u^2*v^2 + exp(u - v)",
    "roots": "field r : real\naction = sqrt(1 + r^2) + log(cosh(r)) + r^2 / (2 + sin(r))",
    "negative_power": "field r : real\naction = (2 + r^2)^(-3/2) + r^4",
}


@pytest.mark.parametrize("name", sorted(ZERO_D))
def test_zero_dimensional_force(name):
    theory = load(f"theory zd_{name}\n{ZERO_D[name]}\n")
    assert theory.lattice == ()
    assert_force_correct(theory, random_cfg(theory, batch=5))


# ---- values against hand computations ---------------------------------------------------------
CAPTURE = """
theory capture
lattice 3 x 2
field phi : real
param R0 = 1 + 1i
param dS_dR0 = 0.5 - 2i
param avg0 = 3
action = R0 * sum(x)[ phi(x)^2 ] + dS_dR0 * (sum(x)[ phi(x) * phi(x + e1) ])^2 + avg0 * sum(x)[ phi(x)^4 ]
observable m = mean(x)[ phi(x) ]
estimate e = avg0 * <m^2>
"""


def test_internal_symbols_never_capture_a_parameter_of_the_same_name():
    """The compiler names site sums R0, R1, ..., their factors dS_dR0 and averages avg0: a user's
    parameter of the same name must still mean the parameter."""
    theory = load(CAPTURE)
    z = random_cfg(theory, seed=5).to(torch.complex128)
    phi = z[:, 0]
    r0 = (phi**2).sum((1, 2))
    r1 = (phi * torch.roll(phi, -1, 2)).sum((1, 2))
    expected = (1 + 1j) * r0 + (0.5 - 2j) * r1**2 + 3 * (phi**4).sum((1, 2))
    torch.testing.assert_close(theory.action(z), expected, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(theory.drift(z), -holomorphic_derivative(theory, z), rtol=1e-12, atol=1e-12)
    est = theory.estimates["e"]
    assert est.inputs == ("<m^2>",)
    assert float(est.fn([torch.tensor(0.25, dtype=DTYPE)])) == pytest.approx(0.75)


def test_phi4_2d_action_observables_and_estimates_by_hand():
    theory = theoryc.load("phi4_2d", L=4, kappa=0.3, **{"lambda": 0.1})
    cfg = random_cfg(theory, batch=4, seed=6)
    phi = cfg[:, 0]
    hop = (phi * torch.roll(phi, -1, 1) + phi * torch.roll(phi, -1, 2)).sum((1, 2))
    expected = -2 * 0.3 * hop + ((1 - 2 * 0.1) * phi**2 + 0.1 * phi**4).sum((1, 2))
    torch.testing.assert_close(theory.action(cfg), expected, rtol=1e-13, atol=1e-13)
    obs = theory.observables(cfg)
    assert list(obs) == ["M", "phi2", "C", "G0", "G1"]   # the correlators: test_correlators.py
    torch.testing.assert_close(obs["M"], phi.mean((1, 2)), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(obs["phi2"], (phi**2).mean((1, 2)), rtol=1e-14, atol=1e-14)
    inputs = theory.estimate_inputs(obs)
    m = obs["M"]
    torch.testing.assert_close(inputs["<M^2>"], m**2)
    torch.testing.assert_close(inputs["<abs(M)>"], m.abs())
    torch.testing.assert_close(inputs["<M^4>"], m**4)
    torch.testing.assert_close(inputs["<M>"], m)
    means = {k: v.mean() for k, v in inputs.items()}
    chi2, chi2_abs, u_l = (theory.estimates[k] for k in ("chi2", "chi2_abs", "U_L"))
    got = chi2.fn([means[k] for k in chi2.inputs])
    assert float(got) == pytest.approx(16 * (means["<M^2>"] - means["<M>"] ** 2).item(), rel=1e-13)
    got = chi2_abs.fn([means[k] for k in chi2_abs.inputs])
    assert float(got) == pytest.approx(16 * (means["<M^2>"] - means["<abs(M)>"] ** 2).item(), rel=1e-13)
    got = u_l.fn([means[k] for k in u_l.inputs])
    assert float(got) == pytest.approx(1 - (means["<M^4>"] / (3 * means["<M^2>"] ** 2)).item(), rel=1e-13)


def test_ising_action_and_magnetisation_by_hand():
    theory = theoryc.load("ising_2d", L=4, beta=0.3)
    g = torch.Generator().manual_seed(7)
    s = torch.randint(0, 2, (3, 1, 4, 4), generator=g).to(DTYPE) * 2 - 1
    spins = s[:, 0]
    bonds = (spins * torch.roll(spins, 1, 1) + spins * torch.roll(spins, 1, 2)).sum((1, 2))
    torch.testing.assert_close(theory.action(s), -0.3 * bonds, rtol=1e-14, atol=1e-13)
    torch.testing.assert_close(theory.observables(s)["m"], spins.mean((1, 2)))
    assert theory.field_kinds == ("spin",)


# ---- symmetries -------------------------------------------------------------------------------
def assert_symmetry_holds(theory, cfg):
    assert theory.symmetries, "the proved symmetry is missing from the compiled theory"
    for move in theory.symmetries:
        image = move(cfg)
        assert image.shape == cfg.shape
        torch.testing.assert_close(theory.action(image), theory.action(cfg), rtol=1e-12, atol=1e-12)
    return [move(cfg) for move in theory.symmetries]


SWAP = """
theory swap
lattice 4 x 3
field a, b : real
param g = 0.4
symmetry a -> b, b -> a
action = sum(x)[ a(x)^2 + b(x)^2 + g * a(x)^2 * b(x)^2
                 - 0.3 * sum(mu)[ a(x) * a(x + mu) + b(x) * b(x + mu) ] ]
observable d = mean(x)[ a(x) - b(x) ]
"""


def test_field_swap_symmetry_maps_a_to_b():
    theory = load(SWAP)
    cfg = random_cfg(theory, seed=8)
    (image,) = assert_symmetry_holds(theory, cfg)
    torch.testing.assert_close(image[:, 0], cfg[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(image[:, 1], cfg[:, 0], rtol=0, atol=0)


def test_z2_symmetry_of_phi4_negates_the_field():
    theory = theoryc.load("phi4_2d", L=4)
    cfg = random_cfg(theory, seed=9)
    (image,) = assert_symmetry_holds(theory, cfg)
    torch.testing.assert_close(image, -cfg, rtol=0, atol=0)


MASSLESS_SHIFT = """
theory massless
lattice 4 x 4
field phi : real
symmetry phi -> phi + 1
action = sum(x)[ sum(mu)[ -phi(x) * phi(x + mu) + phi(x)^2 ] ]
"""


def test_shift_symmetry_holding_only_after_summation_is_accepted():
    """-phi(x)phi(x+mu) + phi(x)^2 changes pointwise by phi(x) - phi(x+mu) under phi -> phi + 1:
    a lattice total difference, zero only once summed over sites."""
    theory = load(MASSLESS_SHIFT)
    cfg = random_cfg(theory, seed=10)
    (image,) = assert_symmetry_holds(theory, cfg)
    torch.testing.assert_close(image, cfg + 1, rtol=0, atol=1e-15)


def test_shift_symmetry_of_a_massive_action_is_refused():
    text = MASSLESS_SHIFT.replace("phi(x)^2 ]", "phi(x)^2 ] + 0.1 * phi(x)^2")
    with pytest.raises(TheoryError, match="does not leave the action invariant"):
        load(text)


@pytest.mark.parametrize("symmetry, action", [
    ("phi -> -phi", "sum(x)[ phi(x)^2 + 0.1 * phi(x)^3 ]"),
    ("phi -> -phi", "sum(x)[ phi(x)^2 + phi(x) * phi(x + e0)^2 ]"),
    ("a -> b, b -> a", "sum(x)[ a(x)^2 + 2 * b(x)^2 ]"),
    ("phi -> phi + 1", "sum(x)[ sum(mu)[ phi(x) * phi(x + mu) ] ]"),
])
def test_false_symmetry_is_refused(symmetry, action):
    fields = "a, b" if "a ->" in symmetry else "phi"
    text = f"theory wrong\nlattice 3 x 3\nfield {fields} : real\nsymmetry {symmetry}\naction = {action}\n"
    with pytest.raises(TheoryError, match="does not leave the action invariant") as info:
        load(text)
    assert info.value.span.line == 4


@pytest.mark.parametrize("extra", [
    "0.1 * (sum(x)[ phi(x) ])^2",                       # odd site sum inside an even function
    "0.1 * (mean(x)[ phi(x) ])^4 + cosh(mean(x)[ phi(x) * phi(x + e0)^2 ])",
    "log(1 + (sum(x)[ phi(x)^3 ])^2)",
])
def test_symmetry_of_a_function_of_odd_site_sums_is_accepted(extra):
    """S = F(R) is invariant when the map sends R -> -R and F is even, although R itself is not."""
    theory = load(f"theory even\nlattice 3 x 4\nfield phi : real\nsymmetry phi -> -phi\n"
                  f"action = sum(x)[ phi(x)^2 ] + {extra}\n")
    assert_symmetry_holds(theory, random_cfg(theory, seed=11))


def test_swap_of_fields_in_separate_site_sums_is_accepted():
    theory = load("theory swap_sums\nlattice 4\nfield a, b : real\nsymmetry a -> b, b -> a\n"
                  "action = (sum(x)[ a(x) ])^2 + (sum(x)[ b(x) ])^2 + sum(x)[ a(x)^2 * b(x)^2 ]\n")
    (image,) = assert_symmetry_holds(theory, random_cfg(theory, seed=12))


@pytest.mark.parametrize("extra", ["0.1 * (sum(x)[ phi(x) ])^3", "sum(x)[ phi(x) ]",
                                   "(sum(x)[ phi(x) ])^2 * sum(x)[ phi(x)^2 * phi(x + e1) ]"])
def test_symmetry_of_an_odd_function_of_site_sums_is_refused(extra):
    with pytest.raises(TheoryError, match="does not leave the action invariant"):
        load(f"theory odd\nlattice 3 x 4\nfield phi : real\nsymmetry phi -> -phi\n"
             f"action = sum(x)[ phi(x)^2 ] + {extra}\n")
