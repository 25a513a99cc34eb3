"""Forward SDE schedules: dx = -k(t)/2 x dt + g(t) dW, and their perturbation kernel.

x_t = f(t) x_0 + sqrt(Xi(t)) eps with f(t) = exp(-1/2 int_0^t k) and
Xi(t) = int_0^t f(t, s)^2 g(s)^2 ds, f(t, s) = f(t)/f(s) (the seed's formal solution).
Both integrals are done by SymPy when it finds a closed form quickly (checked against numerical
quadrature); otherwise the generated code tabulates them numerically at import time.
"""
from __future__ import annotations

import cmath
import math
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..dsl import checked as C
from ..dsl.errors import TheoryError
from .budget import expand, time_limit
from .lower import Internal, Lowerer, to_sympy

# Internal symbols: a parameter called t or s is a different symbol (lower.Internal).
T, S = Internal("t", real=True), Internal("s", real=True)
INTEGRATION_SECONDS = 4


@dataclass(frozen=True)
class Kernels:
    name: str
    k: sp.Expr                 # drift = -k(t)/2 x
    g: sp.Expr                 # diffusion
    f: sp.Expr | None          # None: tabulate numerically
    xi: sp.Expr | None


def derive_schedule(decl: C.ScheduleDecl, lowerer: Lowerer, values: dict) -> Kernels:
    lowerer.local_params = decl.params
    drift, g = lowerer.node(decl.drift, {}), lowerer.node(decl.diffusion, {})
    numbers = {sym: to_sympy(v) for name, sym in lowerer.symbols.params.items()
               for v in [values.get(name, decl.params.get(name))] if v is not None}
    drift = number_only(drift, decl, numbers, decl.drift_span)
    g = number_only(g, decl, numbers, decl.diffusion_span)
    x = lowerer.variables.get("x", Internal("x", real=True))
    t = lowerer.variables.get("t", T)
    drift, g = drift.xreplace({t: T}), g.xreplace({t: T})
    if not is_zero(sp.diff(drift, x, 2)):
        raise TheoryError(decl.drift_span, f"the drift of schedule '{decl.name}' is not linear in x",
                          "the perturbation kernel needs drift = -k(t) * x / 2 (or 0); "
                          "for example drift = -(beta_min + t*(beta_max - beta_min)) * x / 2.")
    if not is_zero(drift.subs(x, 0)):
        raise TheoryError(decl.drift_span, f"the drift of schedule '{decl.name}' is affine, not "
                          f"linear in x: its part {short_text(drift.subs(x, 0))} does not multiply x",
                          "the perturbation kernel needs drift = -k(t) * x / 2 (or 0): "
                          "remove the term that does not multiply x.")
    k = expand(-2 * sp.diff(drift, x))
    finite_on_unit_interval(k, decl, decl.drift_span, "drift")
    finite_on_unit_interval(g, decl, decl.diffusion_span, "diffusion")
    f, xi = kernel(k, g)
    return Kernels(decl.name, k, g, f, xi)


def finite_on_unit_interval(expr: sp.Expr, decl, span, what: str):
    """k(t) and g(t) must be finite on [0, 1]: a singular schedule (drift -x/t, diffusion 1/t)
    has no perturbation kernel, and tabulating it would give inf and nan silently."""
    for tv in np.linspace(0.0, 1.0, 21):
        try:
            value = complex(expr.subs(T, sp.Float(tv)).evalf())
            ok = cmath.isfinite(value)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            ok = False
        if not ok:
            raise TheoryError(span, f"the {what} of schedule '{decl.name}' is not finite at t = {tv:g}",
                              "a schedule needs k(t) and g(t) finite on all of [0, 1].")


def short_text(expr: sp.Expr) -> str:
    text = str(expr).replace("**", "^")
    return text if len(text) <= 40 else text[:37] + "..."


def number_only(expr, decl, numbers, span) -> sp.Expr:
    expr = expr.xreplace(numbers)
    if expr.has(sp.I):
        raise TheoryError(span, f"schedule '{decl.name}' must be real", "use real parameters in a schedule.")
    return expr


def kernel(k: sp.Expr, g: sp.Expr) -> tuple[sp.Expr | None, sp.Expr | None]:
    """f(t) and Xi(t) in closed form, or (None, None) when SymPy has none in time."""
    K = integrate(k.subs(T, S), 0, T)
    if K is None:
        return None, None
    f = sp.exp(-K / 2)
    xi = integrate(sp.powsimp(expand(g.subs(T, S) ** 2 * sp.exp(K.subs(T, S) - K))), 0, T)
    if xi is None or not agrees(K, xi, k, g):
        return None, None
    return f, xi


def is_zero(expr: sp.Expr) -> bool:
    return expand(expr) == 0 or sp.simplify(expr) == 0


def integrate(expr: sp.Expr, a, b) -> sp.Expr | None:
    if expr == 0:
        return sp.Integer(0)
    try:
        with time_limit(INTEGRATION_SECONDS):   # then the kernel is tabulated
            result = sp.integrate(expr, (S, a, b), conds="none")
    except (TimeoutError, NotImplementedError, ValueError, TypeError):
        return None
    if result.has(sp.Integral) or result.has(sp.Piecewise):
        return None
    return result


def agrees(K: sp.Expr, xi: sp.Expr, k: sp.Expr, g: sp.Expr) -> bool:
    """Guard against a wrong closed form: compare with 24-point Gauss-Legendre quadrature at
    t = 0.37 and t = 1 (smooth integrands on [0, t]: far more accurate than the 1e-7 asked)."""
    nodes, weights = GAUSS_LEGENDRE
    for tv in (0.37, 1.0):
        try:
            s_values = [tv * (1 + u) / 2 for u in nodes]
            K_num = tv / 2 * sum(w * float(k.subs(T, s)) for s, w in zip(s_values, weights))
            K_t = float(K.subs(T, tv))
            xi_num = tv / 2 * sum(w * float(g.subs(T, s)) ** 2 * math.exp(float(K.subs(T, s)) - K_t)
                                  for s, w in zip(s_values, weights))
            xi_sym = float(xi.subs(T, tv))
        except (TypeError, ValueError, OverflowError):
            return False
        if abs(K_t - K_num) > 1e-9 * max(1, abs(K_num)) or abs(xi_sym - xi_num) > 1e-7 * max(1, abs(xi_num)):
            return False
    return True


GAUSS_LEGENDRE = tuple(map(tuple, np.polynomial.legendre.leggauss(24)))
