"""A continuous autoregressive network for angle fields (after Wang, Jiang, He, Zhou, CPL 39,
120502 (2022)): q(theta) = prod_i q(theta_i | theta_<i) over the n = n_fields * volume angles in
raster order, each conditional a mixture of K von Mises densities
    q(theta_i | .) = sum_k pi_k exp(kappa_k cos(theta_i - mu_k)) / (2 pi I0(kappa_k)),
normalised on the circle, so log q is exact (one pass of a MADE network fed with (cos, sin) of
the angles, the masked layers of van.py) and sampling is exact (site by site: a component, then
a von Mises draw by the Best-Fisher rejection method, with the caller's generator; the MADE is
evaluated incrementally by van.MadeStepper, the direct sampler `sample_angles_reference` runs one
full pass per site and draws the same angles).

Each component's parameters are natural ones, eta_k = kappa_k (cos mu_k, sin mu_k), so that
log of a component is eta_k . (cos theta_i, sin theta_i): the exact Gibbs conditional of a
nearest-neighbour action like XY's, eta = beta sum_j (cos theta_j, sin theta_j), is linear in
the network's input features, which the masked layers represent directly (an angle mu output
by a linear layer could not: it would need the atan2 of those sums). Files saved before
(settings without "natural") keep the (mu, log kappa) outputs they were trained with.

The draws are not reparameterised, so training is REINFORCE with the batch mean as baseline, as
for the spin VAN (`reinforce = True` tells the trainer). The output bias starts with the K means
spread evenly round the circle and kappa = 1: a nearly uniform start. kappa is bounded to
[e^-4, e^4] (smoothly: tanh) so that no conditional collapses early in training.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .circular import wrap
from .van import MadeStepper, made

Tensor = torch.Tensor
LOG_KAPPA_BOUND = 4.0


def log_i0(kappa: Tensor) -> Tensor:
    """log I0(kappa), stable for large kappa."""
    return torch.log(torch.special.i0e(kappa)) + kappa


def von_mises_mixture_log_prob(theta: Tensor, mu: Tensor, kappa: Tensor, logits: Tensor) -> Tensor:
    """log sum_k pi_k VM(theta | mu_k, kappa_k); parameters (..., K), theta (...)."""
    comp = kappa * torch.cos(theta[..., None] - mu) - math.log(2 * math.pi) - log_i0(kappa)
    return torch.logsumexp(torch.log_softmax(logits, -1) + comp, -1)


def sample_von_mises(mu: Tensor, kappa: Tensor, generator=None) -> Tensor:
    """Draws from VM(mu, kappa) (Best & Fisher 1979), in [-pi, pi); kappa > 0, computed in float64."""
    k = kappa.double()
    tau = 1 + torch.sqrt(1 + 4 * k**2)
    rho = (tau - torch.sqrt(2 * tau)) / (2 * k)
    r = (1 + rho**2) / (2 * rho)
    out = torch.empty_like(k)
    todo = torch.ones_like(k, dtype=torch.bool)
    while bool(todo.any()):
        u = torch.rand((3, *k.shape), generator=generator, device=k.device, dtype=k.dtype)
        z = torch.cos(math.pi * u[0])
        f = (1 + r * z) / (r + z)
        c = k * (r - f)
        ok = (c * (2 - c) - u[1] > 0) | (torch.log(c / u[1]) + 1 - c >= 0)
        angle = torch.sign(u[2] - 0.5) * torch.acos(f.clamp(-1, 1))
        take = todo & ok
        out = torch.where(take, angle, out)
        todo = todo & ~ok
    return wrap(out.to(mu.dtype) + mu)


class CircularAR(nn.Module):
    """MADE over the flattened angles of `shape` (n_fields, *lattice), von Mises mixture outputs.

    reference=True (for an action unchanged when a field is rotated by a constant, as XY's): the
    first angle of each field is uniform and the network models the others relative to it,
    theta_i - theta_ref; the shear has unit Jacobian on the torus, so q stays exact and
    normalised, and is exactly rotation invariant: the network never has to learn the direction
    of the magnetisation, the slowest mode of a finite lattice, from the first few angles.
    """

    kind = "van"
    reinforce = True

    def __init__(self, shape: tuple[int, ...], *, hidden: int = 4, depth: int = 2,
                 components: int = 4, reference: bool = False, natural: bool = True):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.n, self.k, self.reference = math.prod(self.shape), int(components), bool(reference)
        self.refs = set(range(0, self.n, self.n // self.shape[0])) if self.reference else set()
        self.natural = bool(natural)
        self.settings = dict(arch="circular_ar", shape=list(self.shape), hidden=hidden,
                             depth=depth, components=self.k, reference=self.reference,
                             natural=self.natural)
        self.meta: dict = {}
        self.net = made(self.n, [2] + [hidden] * (depth - 1) + [3 * self.k])
        with torch.no_grad():
            bias = self.net[-1].linear.bias.view(self.n, 3, self.k)
            bias.zero_()
            means = torch.linspace(-math.pi, math.pi, self.k + 1)[:-1]
            if self.natural:
                bias[:, 0], bias[:, 1] = torch.cos(means), torch.sin(means)
            else:
                bias[:, 0] = means

    def conditionals(self, theta: Tensor):
        """(mu, kappa, logits), each (batch, n, K), of q(theta_i | theta_<i) for every i (of the
        relative angles with a reference)."""
        flat = theta.reshape(theta.shape[0], self.n)
        out = self.net(self.features(flat)).view(flat.shape[0], self.n, 3 * self.k)
        return self.mixture(out)

    def features(self, theta: Tensor) -> Tensor:
        """The MADE's input, (cos, sin) of each angle: (batch, 2 n) from (batch, n)."""
        return torch.stack([torch.cos(theta), torch.sin(theta)], -1).flatten(-2)

    def mixture(self, out: Tensor):
        """(mu, kappa, logits), each (..., K), from raw outputs (..., 3 K): the natural
        parameters (kappa cos mu, kappa sin mu) or (mu, log kappa); kappa bounded."""
        out = out.unflatten(-1, (3, self.k))
        a, b, logits = out[..., 0, :], out[..., 1, :], out[..., 2, :]
        if not self.natural:
            return a, torch.exp(LOG_KAPPA_BOUND * torch.tanh(b / LOG_KAPPA_BOUND)), logits
        low, high = math.exp(-LOG_KAPPA_BOUND), math.exp(LOG_KAPPA_BOUND)
        kappa = low + high * torch.tanh(torch.hypot(a, b) / high)
        return torch.atan2(b, a), kappa, logits

    def log_prob(self, theta: Tensor) -> Tensor:
        rel = self.relative(theta.reshape(theta.shape[0], self.n))
        terms = von_mises_mixture_log_prob(rel, *self.conditionals(rel))
        if not self.reference:
            return terms.sum(1)
        drawn = torch.ones(self.n, dtype=torch.bool, device=rel.device)
        drawn[sorted(self.refs)] = False
        return terms[:, drawn].sum(1) - len(self.refs) * math.log(2 * math.pi)

    def relative(self, flat: Tensor) -> Tensor:
        """The network's variables: the angles, or with a reference theta_i - theta_ref."""
        if not self.reference:
            return flat
        per_field = flat.view(flat.shape[0], self.shape[0], -1)
        return wrap(per_field - per_field[:, :, :1]).view(flat.shape)

    def place(self, rel: Tensor, generator=None) -> Tensor:
        """Configurations (batch, *shape) from drawn relative angles (batch, n): with a reference,
        each field turned by a uniform angle (drawn last, by both samplers)."""
        if self.reference:
            turn = torch.rand(rel.shape[0], self.shape[0], 1, generator=generator,
                              device=rel.device, dtype=rel.dtype)
            rel = wrap(rel.view(rel.shape[0], self.shape[0], -1) + (2 * turn - 1) * math.pi)
        return rel.reshape(rel.shape[0], *self.shape)

    @torch.no_grad()
    def sample_angles(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n configurations drawn angle by angle, (n, *shape); the MADE stepped incrementally."""
        step = MadeStepper(self.net, n)
        theta = torch.zeros(n, self.n, device=step.a.device, dtype=step.a.dtype)
        for i in range(self.n):
            if i not in self.refs:      # a reference angle is 0 relative to itself
                theta[:, i] = draw_mixture(*self.mixture(step.output(i)), generator)
            step.feed(i, self.features(theta[:, i:i + 1]))
        return self.place(theta, generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(angles, log q): the angles carry no gradient, log q does (for REINFORCE)."""
        theta = self.sample_angles(n, generator)
        return theta, self.log_prob(theta)


def draw_mixture(mu: Tensor, kappa: Tensor, logits: Tensor, generator=None) -> Tensor:
    """One draw per row from a von Mises mixture with parameters (batch, K): a component, then
    its von Mises (the order of random numbers both samplers share)."""
    pick = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
    return sample_von_mises(mu.gather(1, pick)[:, 0], kappa.gather(1, pick)[:, 0], generator)


@torch.no_grad()
def sample_angles_reference(model: CircularAR, n: int, generator=None) -> Tensor:
    """The direct sampler (a full MADE pass per angle, O(n) times the work of
    CircularAR.sample_angles), kept as the reference that one is tested and benchmarked against."""
    ref = model.net[0].linear.weight
    theta = torch.zeros(n, model.n, device=ref.device, dtype=ref.dtype)
    for i in range(model.n):
        if i not in model.refs:
            theta[:, i] = draw_mixture(*(p[:, i] for p in model.conditionals(theta)), generator)
    return model.place(theta, generator)


def circular_ar_from_settings(settings: dict, device=None, dtype=None) -> CircularAR:
    model = CircularAR(tuple(settings["shape"]), hidden=settings["hidden"],
                       depth=settings["depth"], components=settings["components"],
                       reference=settings.get("reference", False),
                       natural=settings.get("natural", False))
    return model.to(device=device, dtype=dtype or torch.get_default_dtype())
