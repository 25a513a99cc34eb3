"""Variational autoregressive networks for spin fields (Wu, Wang, Zhang, PRL 122, 080602 (2019)).

q(s) = prod_i q(s_i | s_<i) over the n = n_fields * volume spins in a fixed (raster) order, with
each conditional a Bernoulli whose logit comes from a MADE network: masked dense layers in which
hidden units are grouped by site and a unit of site i only sees sites < i (strictly, in the first
layer; inclusively afterwards). This works for any lattice dimension and number of spin fields.
log q is exact (one forward pass); sampling goes one site at a time, updating the first layer
incrementally (MadeStepper, shared with the von Mises network of circular_ar.py).

Z2 symmetrisation (optional): q_sym(s) = (q(s) + q(-s)) / 2, sampled by drawing s ~ q and flipping
it with probability 1/2. It is exact and only valid when s -> -s leaves the action invariant;
`train_flow` checks the theory declares that symmetry before enabling it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class MaskedLinear(nn.Module):
    """Dense layer whose weight is masked so that output group i sees input groups < i (or <= i)."""

    def __init__(self, n: int, in_width: int, out_width: int, exclusive: bool):
        super().__init__()
        self.n, self.in_width, self.out_width = n, in_width, out_width
        self.linear = nn.Linear(n * in_width, n * out_width)
        order = torch.tril(torch.ones(n, n), diagonal=-1 if exclusive else 0)
        self.register_buffer("mask", torch.kron(order, torch.ones(out_width, in_width)))
        # As in Wu et al.'s code: masking removes fan-in, so rescale to keep the initial variance.
        with torch.no_grad():
            kept = float(self.mask.sum())
            self.linear.weight.mul_(math.sqrt(self.mask.numel() / kept) if kept else 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.linear.weight * self.mask, self.linear.bias)


def made(n: int, widths: list[int]) -> nn.Sequential:
    """A MADE stack over n sites with `widths` features per site, layer by layer: the first layer
    sees only earlier sites (exclusive), PReLU between layers."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(MaskedLinear(n, a, b, exclusive=(i == 0)))
        if i < len(widths) - 2:
            layers.append(nn.PReLU(init=0.5))
    return nn.Sequential(*layers)


class MadeStepper:
    """Evaluates a `made` stack output group by output group while the inputs are fed in the
    same order, for the autoregressive samplers (VAN, circular_ar.CircularAR).

    The first layer's pre-activations a = W x + b are updated by the columns of input group i,
    a += W[:, i] x_i, once x_i is drawn, and only output group i of the layers above is computed
    (for the default depth 2; deeper stacks recompute the layers above the first). Per
    configuration that is the work of a few full passes instead of one full pass per site.
    """

    def __init__(self, net: nn.Sequential, batch: int):
        first, self.above = net[0], net[1:]
        self.width, self.n = first.in_width, first.n
        self.weight = first.linear.weight * first.mask     # (n * hidden, n * width)
        self.a = first.linear.bias.expand(batch, -1).clone()
        self.two_layers = len(self.above) == 2
        if self.two_layers:
            act, last = self.above
            self.act, self.bias = act, last.linear.bias.view(last.n, last.out_width)
            self.w_last = (last.linear.weight * last.mask).view(last.n, last.out_width, -1)

    def output(self, i: int) -> Tensor:
        """Output group i, (batch, out_width): it depends only on the inputs fed so far."""
        if self.two_layers:
            return self.act(self.a) @ self.w_last[i].t() + self.bias[i]
        out = self.above(self.a)
        return out.view(out.shape[0], self.n, -1)[:, i]

    def feed(self, i: int, x: Tensor) -> None:
        """Add input group i, (batch, width), to the first layer's pre-activations."""
        cols = self.weight[:, i * self.width:(i + 1) * self.width]
        self.a.addmm_(x, cols.t())


class VAN(nn.Module):
    """MADE over flattened spins in {-1, +1}; `shape` is (n_fields, *lattice)."""

    kind = "van"

    def __init__(self, shape: tuple[int, ...], *, hidden: int = 2, depth: int = 2,
                 z2: bool = False):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.n = math.prod(self.shape)
        self.z2 = bool(z2)
        self.settings = dict(arch="made", shape=list(self.shape), hidden=hidden, depth=depth,
                             z2=self.z2)
        self.meta: dict = {}
        self.net = made(self.n, [1] + [hidden] * (depth - 1) + [1])

    def logits(self, s: Tensor) -> Tensor:
        """Logit of q(s_i = +1 | s_<i) for every i, shape (batch, n)."""
        return self.net(s.reshape(s.shape[0], self.n))

    def _log_q_plain(self, s: Tensor) -> Tensor:
        flat = s.reshape(s.shape[0], self.n)
        return F.logsigmoid(flat * self.logits(flat)).sum(1)

    def log_prob(self, s: Tensor) -> Tensor:
        """Exact log q(s) (symmetrised when z2)."""
        log_q = self._log_q_plain(s)
        if self.z2:
            log_q = torch.logaddexp(log_q, self._log_q_plain(-s)) - math.log(2.0)
        return log_q

    @torch.no_grad()
    def sample_spins(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n spin configurations drawn site by site (MadeStepper: O(n) less work than a full
        pass per site), shape (n, *shape). The random numbers are drawn exactly as by
        `sample_spins_reference`, so the spins are the same up to rounding in the logits
        (tests/test_van.py)."""
        step = MadeStepper(self.net, n)
        s = torch.zeros(n, self.n, device=step.a.device, dtype=step.a.dtype)
        for i in range(self.n):
            logit = step.output(i)[:, 0]
            u = torch.rand(n, generator=generator, device=s.device, dtype=s.dtype)
            s[:, i] = torch.where(u < torch.sigmoid(logit), 1.0, -1.0).to(s.dtype)
            step.feed(i, s[:, i:i + 1])
        return self._z2_flip(s, generator).reshape(n, *self.shape)

    def _z2_flip(self, s: Tensor, generator) -> Tensor:
        if self.z2:
            flip = torch.rand(s.shape[0], generator=generator, device=s.device, dtype=s.dtype) < 0.5
            s = torch.where(flip[:, None], -s, s)
        return s

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(spins, log q): the spins carry no gradient, log q does (for REINFORCE)."""
        s = self.sample_spins(n, generator)
        return s, self.log_prob(s)


@torch.no_grad()
def sample_spins_reference(van: VAN, n: int, generator: torch.Generator | None = None) -> Tensor:
    """The direct site-by-site sampler (a full forward pass per site, O(n^2) per configuration),
    kept as the reference VAN.sample_spins is tested and benchmarked against."""
    ref = van.net[0].linear.weight
    s = torch.zeros(n, van.n, device=ref.device, dtype=ref.dtype)
    for i in range(van.n):
        p_up = torch.sigmoid(van.logits(s)[:, i])
        u = torch.rand(n, generator=generator, device=ref.device, dtype=ref.dtype)
        s[:, i] = torch.where(u < p_up, 1.0, -1.0).to(ref.dtype)
    return van._z2_flip(s, generator).reshape(n, *van.shape)


def van_from_settings(settings: dict, device=None, dtype=None) -> VAN:
    model = VAN(tuple(settings["shape"]), hidden=settings["hidden"], depth=settings["depth"],
                z2=settings["z2"])
    return model.to(device=device, dtype=dtype or torch.get_default_dtype())


def is_spin_flip(symmetry, shape: tuple[int, ...], generator: torch.Generator | None = None) -> bool:
    """Whether a declared symmetry acts as s -> -s (checked by applying it to random spins)."""
    s = torch.randint(0, 2, (4, *shape), generator=generator).to(torch.get_default_dtype()) * 2 - 1
    try:
        out = symmetry(s)
    except Exception:   # a symmetry that cannot act on this batch is simply not the spin flip
        return False
    return isinstance(out, Tensor) and out.shape == s.shape and bool(torch.equal(out, -s))
