"""The gauge-equivariant U(1) flow of Kanwar et al. (PRL 125 (2020) 121601, 2003.06413) for a 2-d
`gauge` link field: configurations (batch, 2, L0, L1), component mu = the link A(x, mu).

The plaquette P(x) = A(x, 0) + A(x + e0, 1) - A(x + e1, 0) - A(x, 1) is gauge invariant. A
coupling layer with stripe direction mu and offset o (mu = 0, 1; o = 0..3; lattice side along mu
a multiple of 4) sorts plaquettes by x_mu mod 4:
  active  x_mu = o:          transformed, P -> f(P | frozen) by a circle map (circular.py);
  frozen  x_mu = o + 1, o + 2: unchanged, the conditioner's input ((cos, sin) through a CNN);
  passive x_mu = o + 3:      change as a consequence.
The links updated are A(x, nu) (nu != mu) with x_mu = o: each occurs in exactly one active
plaquette, P(x), with coefficient c = -1 (nu = 1) or +1 (nu = 0), and in a passive one, and in
no frozen one. A(x, nu) -> A(x, nu) + c (f(P) - P) makes the active plaquette exactly f(P); the
Jacobian is triangular with diagonal f'(P), so log det = sum over active plaquettes of log f'.
The prior is uniform (Haar) on every link and the layers see plaquettes only, so a gauge
transformation of the input transforms the output alike with the same log-det: q is gauge
invariant (tests/test_torus_flows.py checks it). 16 layers cycle through the 8 (mu, o) masks twice.

Before the couplings comes one `PlaquetteMarginal` layer: on a 2-d torus the plaquettes are
independent under the Haar prior except for one constraint (their sum is 2 pi Q), and the Wilson
action is a sum of one-plaquette terms, so the target is, but for that constraint, a product of
one-plaquette densities exp(beta cos P). The layer maps every plaquette but P(0) through one
learned circle map f (the same at every site) and lets P(0) absorb the change (sum unchanged);
the links move by a fixed linear "inverse curl" of the changes (`links_with_curl`), gauge
invariant because the changes are. In the coordinates (gauge, holonomies, plaquettes but P(0)) it
is diagonal: log det = sum over x != 0 of log f'(P(x)). Untrained it is the identity; trained
(~100 numbers, seconds) it leaves only the weight of P(0), whose q-density is then ~ uniform:
ESS ~ I0(beta)^2 / I0(2 beta) (0.46 at beta = 2, 0.22 at beta = 7) before any coupling layer, and
q samples Q as the product measure does, at any beta: the flow does not freeze topologically.
"""
from __future__ import annotations

import torch
from torch import nn

from theoryc.runtime.models.circular import (TorusFlow, _resize_last, circle_map,
                                             circle_map_inverse, circle_params, identity_bias,
                                             wrap)
from theoryc.runtime.models.flow import _conv_net
from theoryc.runtime.models.lattice_gauge import plaquettes

Tensor = torch.Tensor


def plaquette(links: Tensor) -> Tensor:
    """P(x) for links (batch, 2, L0, L1) -> (batch, L0, L1): the one plane of lattice_gauge's."""
    return plaquettes(links)[:, 0]


def gauge_transform(links: Tensor, alpha: Tensor) -> Tensor:
    """A(x, mu) -> A(x, mu) + alpha(x) - alpha(x + mu), alpha (batch, L0, L1)."""
    return torch.stack([links[:, 0] + alpha - torch.roll(alpha, -1, dims=1),
                        links[:, 1] + alpha - torch.roll(alpha, -1, dims=2)], dim=1)


def stripes(lattice: tuple[int, int], mu: int, offsets, dtype=None) -> Tensor:
    """1 on sites with x_mu mod 4 in offsets, else 0; shape `lattice`."""
    coord = torch.arange(lattice[mu]).view([-1 if d == mu else 1 for d in range(2)])
    hit = sum((coord % 4 == (o % 4)).to(torch.int64) for o in offsets).bool()
    return hit.expand(*lattice).to(dtype or torch.get_default_dtype())


def links_with_curl(delta: Tensor) -> Tensor:
    """Link changes (batch, 2, L0, L1) whose plaquettes change by delta (batch, L0, L1), which must
    sum to zero over the lattice (the curl's image). A(x, 0) changes only on the last column
    x0 = L0 - 1, by c(x1) with c(x1) - c(x1 + 1) = the row sum of delta (solvable as the sums add up
    to zero); A(x, 1) is then the running sum along x0 of what remains, whose row sums vanish."""
    rows = delta.sum(1)                                          # (batch, L1)
    c = -(torch.cumsum(rows, 1) - rows)                          # c(x1) = -sum_{y1 < x1} rows
    a0 = torch.zeros_like(delta)
    a0[:, -1] = c
    rest = delta.clone()
    rest[:, -1] -= c - torch.roll(c, -1, 1)
    a1 = torch.cumsum(rest, 1) - rest                            # sum_{y0 < x0}
    return torch.stack([a0, a1], 1)


class PlaquetteMarginal(nn.Module):
    """Every plaquette but P(0) -> f(P), f a composition of `maps` circle maps whose parameters all
    sites share (see the module docstring). One NCP mixture's slope stays within
    e^(+-ALPHA_BOUND), so one map cannot sharpen the uniform density more than e^(2 ALPHA_BOUND)
    ~ 400-fold, while exp(beta cos P) peaks e^(2 beta)-fold (e^14 at beta = 7): composing 4 maps
    reaches e^24."""

    def __init__(self, lattice: tuple[int, int], components: int, dtype, maps: int = 4):
        super().__init__()
        self.raw = nn.Parameter(identity_bias(components).to(dtype).repeat(maps, 1))
        mask = torch.ones(lattice, dtype=dtype)
        mask[0, 0] = 0.0
        self.register_buffer("moved", mask)

    def _move(self, links: Tensor, delta: Tensor) -> Tensor:
        """links + the inverse curl of delta (P(x) -> P(x) + delta(x) for x != 0)."""
        delta = self.moved * delta
        delta[:, 0, 0] = -delta.flatten(1).sum(1)
        return wrap(links + links_with_curl(delta))

    def forward(self, links: Tensor) -> tuple[Tensor, Tensor]:
        plaq = new = wrap(plaquette(links))
        log_slope = torch.zeros_like(plaq)
        for raw in self.raw:
            new, ls = circle_map(new, circle_params(raw))
            log_slope = log_slope + ls
        return self._move(links, new - plaq), (self.moved * log_slope).flatten(1).sum(1)

    def inverse(self, links: Tensor) -> tuple[Tensor, Tensor]:
        plaq = old = wrap(plaquette(links))
        log_slope = torch.zeros_like(plaq)
        for raw in reversed(self.raw):
            old, ls = circle_map_inverse(old, circle_params(raw))
            log_slope = log_slope + ls
        return self._move(links, old - plaq), (self.moved * log_slope).flatten(1).sum(1)


class PlaquetteCoupling(nn.Module):
    def __init__(self, net: nn.Module, lattice: tuple[int, int], mu: int, offset: int, dtype):
        super().__init__()
        self.net, self.nu = net, 1 - mu
        self.sign = -1.0 if self.nu == 1 else 1.0          # coefficient of A(x, nu) in P(x)
        self.register_buffer("active", stripes(lattice, mu, [offset], dtype))
        self.register_buffer("frozen", stripes(lattice, mu, [offset + 1, offset + 2], dtype))

    def _params(self, plaq: Tensor):
        feats = torch.stack([torch.cos(plaq), torch.sin(plaq)], dim=1) * self.frozen
        return circle_params(self.net(feats).movedim(1, -1))      # (batch, L0, L1, 4K+2)

    def _update(self, links: Tensor, delta: Tensor) -> Tensor:
        change = torch.zeros_like(links)
        change[:, self.nu] = self.sign * self.active * delta
        return wrap(links + change)

    def forward(self, links: Tensor) -> tuple[Tensor, Tensor]:
        plaq = wrap(plaquette(links))
        new, log_slope = circle_map(plaq, self._params(plaq))
        return (self._update(links, new - plaq),
                (self.active * log_slope).flatten(1).sum(1))

    def inverse(self, links: Tensor) -> tuple[Tensor, Tensor]:
        plaq = wrap(plaquette(links))          # frozen plaquettes are those of the input
        old, log_slope = circle_map_inverse(plaq, self._params(plaq))
        return (self._update(links, old - plaq),
                (self.active * log_slope).flatten(1).sum(1))


def gauge_flow_fits(theory) -> bool:
    """A theory of one 2-d `gauge` link field with sides multiple of 4 (the masks' period)."""
    shape = tuple(theory.shape)
    return (len(getattr(theory, "gauge", ())) == 1 and len(theory.field_names) == 2
            and len(shape) == 3 and shape[0] == 2 and shape[1] % 4 == 0 and shape[2] % 4 == 0)


def build_gauge_flow(shape: tuple[int, ...], *, n_layers: int = 16, hidden: int = 16,
                     depth: int = 2, kernel: int = 3, components: int = 6, marginal: bool = True,
                     device=None, dtype=None) -> TorusFlow:
    """The PlaquetteMarginal layer (unless marginal=False, as in models saved before it existed),
    then n_layers plaquette couplings."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] != 2 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"the gauge-equivariant flow needs 2-d links (2, L0, L1) with sides "
                         f"multiple of 4, not {shape}")
    dtype = dtype or torch.get_default_dtype()
    layers = [PlaquetteMarginal(shape[1:], components, dtype)] if marginal else []
    for i in range(n_layers):
        mu, offset = i % 2, (i // 2) % 4
        net = _conv_net(2, 2, hidden, depth, kernel)
        _resize_last(net, identity_bias(components))
        layers.append(PlaquetteCoupling(net, shape[1:], mu, offset, dtype))
    settings = dict(arch="gauge_coupling", shape=list(shape), n_layers=n_layers, hidden=hidden,
                    depth=depth, kernel=kernel, components=components, marginal=bool(marginal))
    return TorusFlow(layers, shape, settings).to(device=device, dtype=dtype)
