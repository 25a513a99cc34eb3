"""Hand-made theories that satisfy `theoryc.runtime.theory.Theory` without the compiler.

They let runtime tests run against an independent implementation: the action is plain torch and
the force comes from autograd, so a sampler bug cannot hide behind a compiler bug (and vice versa).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from theoryc.runtime.theory import Estimate, Schedule


@dataclass
class FakeTheory:
    name: str
    action_fn: Callable[[torch.Tensor], torch.Tensor]     # (batch, *shape) -> (batch,)
    lattice: tuple[int, ...] = ()
    field_names: tuple[str, ...] = ("phi",)
    field_kinds: tuple[str, ...] = ("real",)
    is_complex: bool = False
    observable_fns: dict = field(default_factory=dict)   # name -> fn(phi) -> (batch,)
    estimates: dict = field(default_factory=dict)
    estimate_input_fns: dict = field(default_factory=dict)
    schedules: dict = field(default_factory=dict)
    symmetries: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    source: str = ""
    flip_delta_fn: Callable | None = None    # spin theories: what the compiler derives
    flip_offsets: tuple = ()

    @property
    def n_fields(self):
        return len(self.field_names)

    @property
    def shape(self):
        return (self.n_fields, *self.lattice)

    @property
    def volume(self):
        return math.prod(self.lattice)

    @property
    def observable_names(self):
        return tuple(self.observable_fns)

    def action(self, phi):
        return self.action_fn(phi)

    def flip_delta(self, s):
        return self.flip_delta_fn(s)

    def force(self, phi):
        with torch.enable_grad():
            x = phi.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.action_fn(x).sum(), x)
        return g

    def drift(self, z):
        # Holomorphic: d/dz of an analytic action equals the autograd gradient's conjugate
        # (torch returns conj(dS/dz) for a holomorphic S of a complex leaf).
        with torch.enable_grad():
            x = z.detach().requires_grad_(True)
            s = self.action_fn(x)
            if s.is_complex():
                (g,) = torch.autograd.grad(s.real.sum(), x)
                return -g.conj()
            (g,) = torch.autograd.grad(s.sum(), x)
        return -g

    def observables(self, phi):
        return {k: f(phi) for k, f in self.observable_fns.items()}

    def estimate_inputs(self, obs):
        return {k: f(obs) for k, f in self.estimate_input_fns.items()}


def gaussian_0d(mass2=1.0, sigma=None):
    """S = m2/2 x^2 (m2 may be complex): <x^2> = 1/m2."""
    m2 = complex(mass2) if isinstance(mass2, complex) else float(mass2)
    t = FakeTheory(
        name="gaussian_0d",
        action_fn=lambda phi: 0.5 * m2 * phi[:, 0] ** 2,
        is_complex=isinstance(m2, complex),
        observable_fns={"x1": lambda p: p[:, 0], "x2": lambda p: p[:, 0] ** 2},
        params={"m2": m2},
        symmetries=[lambda p: -p],
    )
    t.schedules["ve"] = ve_schedule(sigma or 10.0)
    return t


def double_gaussian_0d(mu0=1.0, s0=0.25):
    def action(phi):
        x = phi[:, 0]
        a = -(x - mu0) ** 2 / (2 * s0**2)
        b = -(x + mu0) ** 2 / (2 * s0**2)
        return -torch.logaddexp(a, b)

    return FakeTheory(name="double_gaussian", action_fn=action,
                      observable_fns={"x1": lambda p: p[:, 0]},
                      params={"mu0": mu0, "s0": s0}, symmetries=[lambda p: -p],
                      schedules={"ve": ve_schedule(10.0), "vp": vp_schedule(0.1, 20.0)})


def quartic_0d(sigma0=1 + 1j, lam=1.0):
    """The seed's complex-mass quartic S = sigma0/2 x^2 + lambda/4 x^4."""
    return FakeTheory(
        name="complex_quartic",
        action_fn=lambda p: sigma0 / 2 * p[:, 0] ** 2 + lam / 4 * p[:, 0] ** 4,
        is_complex=isinstance(sigma0, complex),
        observable_fns={"x1": lambda p: p[:, 0], "x2": lambda p: p[:, 0] ** 2,
                        "x4": lambda p: p[:, 0] ** 4},
        params={"sigma0": sigma0, "lambda": lam}, symmetries=[lambda p: -p],
        schedules={"ve": ve_schedule(10.0)})


def phi4_lattice(lattice=(8, 8), kappa=0.2, lam=0.0):
    """The seed's hopping-parameter phi^4; lam = 0 is the free field of reference/exact.json."""
    dims = tuple(range(2, 2 + len(lattice)))

    def action(phi):
        f = phi[:, 0]
        hop = sum(f * torch.roll(f, -1, d - 1) for d in dims)
        dens = -2 * kappa * hop + (1 - 2 * lam) * f**2 + lam * f**4
        return dens.flatten(1).sum(1)

    def magnetisation(phi):
        return phi[:, 0].flatten(1).mean(1)

    volume = math.prod(lattice)
    t = FakeTheory(
        name="phi4", action_fn=action, lattice=tuple(lattice),
        observable_fns={"M": magnetisation, "phi2": lambda p: (p[:, 0] ** 2).flatten(1).mean(1)},
        params={"kappa": kappa, "lambda": lam}, symmetries=[lambda p: -p],
        schedules={"ve": ve_schedule(20.0), "vp": vp_schedule(0.1, 20.0)})
    t.estimate_input_fns = {"<M^2>": lambda o: o["M"] ** 2, "<abs(M)>": lambda o: o["M"].abs(),
                            "<M^4>": lambda o: o["M"] ** 4}
    t.estimates = {
        "chi2": Estimate("chi2", ("<M^2>", "<abs(M)>"), lambda a: volume * (a[0] - a[1] ** 2)),
        "U_L": Estimate("U_L", ("<M^4>", "<M^2>"), lambda a: 1 - a[0] / (3 * a[1] ** 2)),
    }
    return t


def ising_2d(L=4, beta=0.44):
    def action(s):
        f = s[:, 0]
        return -beta * (f * torch.roll(f, -1, 1) + f * torch.roll(f, -1, 2)).flatten(1).sum(1)

    def flip_delta(s):
        """Flipping s(x) alone changes S by 2 beta s(x) (sum of its 4 neighbours), by hand."""
        f = s[:, 0]
        neighbours = sum(torch.roll(f, shift, dim) for shift in (1, -1) for dim in (1, 2))
        return (2 * beta * f * neighbours).unsqueeze(1)

    def bond(s):
        """<s_x s_y> per nearest-neighbour bond (2 bonds per site)."""
        f = s[:, 0]
        return (f * torch.roll(f, -1, 1) + f * torch.roll(f, -1, 2)).flatten(1).mean(1) / 2

    return FakeTheory(name="ising_2d", action_fn=action, lattice=(L, L), field_names=("s",),
                      field_kinds=("spin",),
                      observable_fns={"m": lambda s: s[:, 0].flatten(1).mean(1), "bond": bond},
                      params={"beta": beta}, symmetries=[lambda s: -s],
                      flip_delta_fn=flip_delta,
                      flip_offsets=((1, 0), (-1, 0), (0, 1), (0, -1)))


def ve_schedule(sigma):
    ls = math.log(sigma)
    return Schedule(
        name="ve",
        k=lambda t: torch.zeros_like(t),
        g=lambda t: sigma**t,
        f=lambda t: torch.ones_like(t),
        xi=lambda t: (sigma ** (2 * t) - 1) / (2 * ls))


def vp_schedule(bmin, bmax):
    def integral_k(t):
        return bmin * t + 0.5 * (bmax - bmin) * t**2

    return Schedule(
        name="vp",
        k=lambda t: bmin + t * (bmax - bmin),
        g=lambda t: torch.sqrt(bmin + t * (bmax - bmin)),
        f=lambda t: torch.exp(-0.5 * integral_k(t)),
        xi=lambda t: 1 - torch.exp(-integral_k(t)))
