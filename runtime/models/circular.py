"""Flows on the torus for angle fields: coupling layers whose elementwise maps are bijections of
the circle (Rezende et al. 2002.02428).

The circle map is a mixture of non-compact projections (NCP). One NCP with fixed point beta is
the lift F(u) = u + h(u), h(u) = 2 atan2(alpha sin(v/2), cos(v/2)) - v, v = wrap(u - beta):
strictly increasing, F(u + 2 pi) = F(u) + 2 pi, so it is a degree-one homeomorphism of the circle
(h vanishes at v = +-pi, so it is continuous across the cut). A convex combination of such lifts
is again one; a rotation by `shift` follows. Hence, per site,
    theta' = wrap(theta + sum_k rho_k h_k(theta) + shift),
    d theta'/d theta = sum_k rho_k alpha_k / (cos^2(v_k/2) + alpha_k^2 sin^2(v_k/2)) > 0,
exactly, and the log-det of a coupling layer is the sum of its logarithm over the active sites.
atan2 rather than atan(alpha tan(v/2)): the same value on (-pi, pi), smooth at v = +-pi where tan
(and its autograd) blow up.

Coupling layers freeze the sites of one parity (checkerboard) and feed (cos, sin) of the frozen
angles (zero on active sites, so nothing of an active angle leaks in) to a periodic CNN, which
returns the mixture's parameters per active site. The prior is uniform on the torus; the last
conv layer has zero weights and a bias that makes the map the identity (alpha = 1, shift
= 0): an untrained flow is the identity and q = uniform.
The inverse of a circle map is bisection on its lift, then one Newton step that carries the
implicit-function gradient (forward-KL training on data).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from theoryc.runtime.models.flow import _conv_net, checkerboard

Tensor = torch.Tensor
TWO_PI = 2 * math.pi
ANGLE_ARCHS = ("circular_coupling", "gauge_coupling", "circular_ar")
ALPHA_BOUND = 3.0     # |log alpha| <= 3: a component may sharpen a site's density ~ e^3 fold


def wrap(theta: Tensor) -> Tensor:
    """The representative in [-pi, pi)."""
    return torch.remainder(theta + math.pi, TWO_PI) - math.pi


def n_raw(components: int) -> int:
    """Net outputs per angle: log alpha, beta (as a plane vector), logits per component; shift."""
    return 4 * components + 2


def identity_bias(components: int) -> Tensor:
    """The raw outputs that make the circle map the identity (alpha = 1, shift = 0). With alpha = 1
    an NCP is the identity whatever its fixed point beta, so the betas start spread evenly round
    the circle: identical components would get identical gradients and stay one component."""
    bias = torch.zeros(n_raw(components))
    spread = torch.arange(components) * (2 * math.pi / components)
    bias[components:2 * components] = torch.cos(spread)
    bias[2 * components:3 * components] = torch.sin(spread)
    bias[-2] = 1.0
    return bias


def circle_params(raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(log alpha, beta, mixture logits, shift) from raw net outputs (..., 4K + 2).

    The angles beta and shift are read off plane vectors, atan2(b, a): a continuous net cannot
    output an angle as a real number (it would need a jump of 2 pi), while a vector such as the
    sum of the neighbours' (cos, sin), whose direction is their circular mean, is linear in the
    inputs. That is what lets a coupling follow the global O(2) rotation of the XY model."""
    k = (raw.shape[-1] - 2) // 4
    log_alpha = ALPHA_BOUND * torch.tanh(raw[..., :k] / ALPHA_BOUND)
    beta = torch.atan2(raw[..., 2 * k:3 * k], raw[..., k:2 * k])
    return log_alpha, beta, raw[..., 3 * k:4 * k], torch.atan2(raw[..., -1], raw[..., -2])


def _lift(u: Tensor, params) -> tuple[Tensor, Tensor]:
    """(F(u), F'(u)) of the NCP mixture plus rotation; params as from `circle_params`."""
    log_alpha, beta, logits, shift = params
    alpha = log_alpha.exp()
    rho = torch.softmax(logits, dim=-1)
    v = wrap(u[..., None] - beta)
    half_sin, half_cos = torch.sin(v / 2), torch.cos(v / 2)
    h = 2 * torch.atan2(alpha * half_sin, half_cos) - v
    slope = alpha / (half_cos**2 + alpha**2 * half_sin**2)
    return u + (rho * h).sum(-1) + shift, (rho * slope).sum(-1)


def circle_map(theta: Tensor, params) -> tuple[Tensor, Tensor]:
    """theta -> (theta' in [-pi, pi), log d theta'/d theta), elementwise."""
    f, slope = _lift(theta, params)
    return wrap(f), slope.log()


def circle_map_inverse(y: Tensor, params) -> tuple[Tensor, Tensor]:
    """The inverse of `circle_map`: (theta in [-pi, pi), log d theta/d y)."""
    iterations = 60 if y.dtype == torch.float32 else 110
    with torch.no_grad():
        lo = torch.full_like(y, -math.pi)
        start = _lift(lo, params)[0]
        target = start + torch.remainder(y - start, TWO_PI)     # the lift's value in [F(-pi), F(pi))
        hi = torch.full_like(y, math.pi)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            below = _lift(mid, params)[0] < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        u0 = 0.5 * (lo + hi)
    f, slope = _lift(u0, params)
    u = u0 - (f - target) / slope          # value unchanged; gradient of the implicit function
    return wrap(u), -_lift(u, params)[1].log()


class CircularCoupling(nn.Module):
    """Active sites (mask 0) move by a circle map conditioned on the frozen ones (mask 1).
    Works on (batch, n_fields, *lattice); every field shares the site mask."""

    def __init__(self, net: nn.Module, mask: Tensor, n_fields: int):
        super().__init__()
        self.net, self.n_fields = net, n_fields
        self.register_buffer("mask", mask)

    def _params(self, frozen: Tensor):
        feats = torch.cat([torch.cos(frozen) * self.mask, torch.sin(frozen) * self.mask], dim=1)
        raw = self.net(feats)                                   # (batch, n_fields*(4K+2), *lat)
        raw = raw.reshape(raw.shape[0], self.n_fields, -1, *raw.shape[2:]).movedim(2, -1)
        return circle_params(raw)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        y, log_slope = circle_map(z, self._params(z))
        active = 1 - self.mask
        return self.mask * z + active * y, (active * log_slope).flatten(1).sum(1)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, log_slope = circle_map_inverse(x, self._params(x))
        active = 1 - self.mask
        return self.mask * x + active * z, (active * log_slope).flatten(1).sum(1)


class TorusFlow(nn.Module):
    """A stack of angle-space bijections from the uniform distribution on the torus to
    configurations of shape `shape` (values in [-pi, pi)). `settings` rebuilds it.

    settings["reference"] (for actions invariant under rotating each angle field by a constant,
    such as XY): the first site of every field is a reference, frozen at 0 in every layer, so
    the layers model the angles relative to it; the prior's angle there becomes a global
    rotation of the field. The map (rotation, other angles) -> configuration is a shear of unit
    Jacobian, so log q stays exact, and q is exactly rotation invariant, which a coupling net
    otherwise has to learn (and, untaught, breaks: <cos theta> != 0)."""

    kind = "flow"

    def __init__(self, layers: list[nn.Module], shape: tuple[int, ...], settings: dict):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.shape = tuple(shape)
        self.settings = dict(settings)
        self.meta: dict = {}
        self.register_buffer("_ref", torch.zeros(()))

    def prior_log_prob(self, z: Tensor) -> Tensor:
        return torch.full(z.shape[:1], -math.log(TWO_PI) * math.prod(self.shape),
                          dtype=z.dtype, device=z.device)

    @staticmethod
    def _first(x: Tensor) -> Tensor:
        """The reference (first-site) angle of each field, (batch, n_fields, 1, ...)."""
        return x[(slice(None), slice(None)) + (slice(0, 1),) * (x.dim() - 2)]

    @staticmethod
    def _set_first(x: Tensor, value: Tensor) -> Tensor:
        out = x.clone()
        out[(slice(None), slice(None)) + (slice(0, 1),) * (x.dim() - 2)] = value
        return out

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Push prior samples through the flow: returns (x, log q(x))."""
        log_q = self.prior_log_prob(z)
        reference = self.settings.get("reference", False)
        x = self._set_first(z, torch.zeros(())) if reference else z
        for layer in self.layers:
            x, log_det = layer(x)
            log_q = log_q - log_det
        if reference:
            x = wrap(x + self._first(z))
        return x, log_q

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        reference = self.settings.get("reference", False)
        z = wrap(x - self._first(x)) if reference else x
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z)
            log_det = log_det + ld
        if reference:
            z = self._set_first(z, self._first(x))
        return z, log_det

    def log_prob(self, x: Tensor) -> Tensor:
        z, log_det = self.inverse(wrap(x))
        return self.prior_log_prob(z) + log_det

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n configurations and their exact log q; differentiable (reparameterised)."""
        u = torch.rand((n, *self.shape), generator=generator, device=self._ref.device,
                       dtype=self._ref.dtype)
        return self((2 * u - 1) * math.pi)


def build_torus_flow(shape: tuple[int, ...], *, n_layers: int = 16, hidden: int = 16,
                     depth: int = 2, kernel: int = 3, components: int = 6,
                     reference: bool = False, device=None, dtype=None) -> TorusFlow:
    """A circular coupling flow for angle configurations of shape (n_fields, *lattice), lattices
    of dimension 1-3: n_layers checkerboard layers of alternating parity, each conditioned by a
    periodic CNN (`depth` hidden layers of `hidden` channels) and a mixture of `components` NCPs;
    reference: model angles relative to each field's first site (see TorusFlow)."""
    shape = tuple(int(s) for s in shape)
    n_fields, lattice = shape[0], shape[1:]
    if not 1 <= len(lattice) <= 3:
        raise ValueError(f"torus flows support lattices of dimension 1-3, not {len(lattice)}")
    if kernel % 2 != 1:
        raise ValueError(f"kernel must be odd (got {kernel}) so the convolution is centred")
    dtype = dtype or torch.get_default_dtype()
    layers = []
    for i in range(n_layers):
        net = _conv_net(len(lattice), 2 * n_fields, hidden, depth, kernel)
        _resize_last(net, identity_bias(components).repeat(n_fields))
        mask = checkerboard(lattice, i % 2, dtype=dtype)
        if reference:
            mask[(0,) * len(lattice)] = 1.0
        layers.append(CircularCoupling(net, mask, n_fields))
    settings = dict(arch="circular_coupling", shape=list(shape), n_layers=n_layers, hidden=hidden,
                    depth=depth, kernel=kernel, components=components, reference=bool(reference))
    return TorusFlow(layers, shape, settings).to(device=device, dtype=dtype)


def _resize_last(net: nn.Sequential, bias: Tensor) -> None:
    """Replace the net's last conv by one of zero weights and the given bias (identity start)."""
    last = net[-1]
    new = type(last)(last.in_channels, len(bias), last.kernel_size, padding=last.padding,
                     padding_mode=last.padding_mode)
    nn.init.zeros_(new.weight)
    with torch.no_grad():
        new.bias.copy_(bias)
    net[-1] = new


def angle_model(theory, *, n_layers=16, hidden=16, depth=2, kernel=3, components=6,
                autoregressive=False, device=None, dtype=None, **_ignored):
    """The model for a theory of angle fields: with `autoregressive`, the von Mises mixture
    network (circular_ar.py; hidden and depth its MADE's, `components` per conditional);
    else the gauge-equivariant plaquette flow for a 2-d `gauge` link field whose lattice sides
    are multiples of 4, else the circular coupling flow (exact after independent Metropolis
    either way; only the gauge flow respects gauge symmetry)."""
    from theoryc.runtime.models.gauge_flow import build_gauge_flow, gauge_flow_fits
    if autoregressive:
        from theoryc.runtime.models.circular_ar import CircularAR
        model = CircularAR(tuple(theory.shape), hidden=hidden, depth=depth, components=components,
                           reference=rotation_invariant(theory))
        return model.to(device=device, dtype=dtype or torch.get_default_dtype())
    arch = dict(n_layers=n_layers, hidden=hidden, depth=depth, kernel=kernel,
                components=components, device=device, dtype=dtype)
    if gauge_flow_fits(theory):
        return build_gauge_flow(tuple(theory.shape), **arch)
    return build_torus_flow(tuple(theory.shape), reference=rotation_invariant(theory), **arch)


def rotation_invariant(theory, tries: int = 4) -> bool:
    """Whether the action is unchanged (to float32 rounding) when any one angle field is rotated
    by a constant, checked at random configurations and rotations."""
    gen = torch.Generator().manual_seed(0)
    theta = (2 * torch.rand((tries, *theory.shape), generator=gen) - 1) * math.pi
    base = theory.action(theta)
    for f in range(theory.shape[0]):
        turned = theta.clone()
        turned[:, f] += (2 * torch.rand((tries,) + (1,) * (theta.dim() - 2), generator=gen) - 1) * 3
        if not torch.allclose(theory.action(turned), base, rtol=1e-4, atol=1e-3):
            return False
    return True


def angle_model_from_settings(settings: dict, device=None, dtype=None):
    """Rebuild an (untrained) angle model from the settings a saved model carries."""
    if settings["arch"] == "circular_ar":
        from theoryc.runtime.models.circular_ar import circular_ar_from_settings
        return circular_ar_from_settings(settings, device=device, dtype=dtype)
    keys = ("n_layers", "hidden", "depth", "kernel", "components")
    arch = {k: settings[k] for k in keys}
    if settings["arch"] == "gauge_coupling":
        from theoryc.runtime.models.gauge_flow import build_gauge_flow
        return build_gauge_flow(tuple(settings["shape"]), **arch, device=device, dtype=dtype,
                                marginal=settings.get("marginal", False))
    return build_torus_flow(tuple(settings["shape"]), **arch, reference=settings["reference"],
                            device=device, dtype=dtype)
