"""RealNVP-style affine coupling flows for real fields (Albergo, Kanwar, Shanahan 1904.12072).

The flow maps prior noise z ~ N(0, 1) to configurations x of shape (n_fields, *lattice). Each
coupling layer keeps the sites of one parity (a checkerboard mask) fixed and transforms the others
elementwise, x' = x * exp(s) + t, with (s, t) a periodic convolutional net of the frozen sites; the
parities alternate from layer to layer. Hence the Jacobian is triangular and
log|det J| = sum of s over the transformed sites, exactly.

Why these choices:
- circular padding: the lattice is periodic, so the net must be translation covariant on the torus;
- tanh-bounded scales: keep exp(s) finite early in training, where an unbounded s blows up the loss;
- zero-initialised last layer: the flow starts as the identity, q = prior, a sane reverse-KL start.

Supported: lattices of dimension 1, 2, 3 (convolutions) with any number of real fields (fields are
channels, every field shares the site mask), and 0-d theories with >= 2 variables (an MLP coupling
on alternating variable masks). A 0-d theory with a single variable has nothing to condition on: it
gets n_layers // 4 learned monotone maps of the real line instead (`MonotoneElementwise`, with
`hidden` tanh components each), which reach multimodal targets such as the double Gaussian.
"""
from __future__ import annotations

import math

import torch
from torch import nn

Tensor = torch.Tensor

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def checkerboard(lattice: tuple[int, ...], parity: int, device=None, dtype=None) -> Tensor:
    """1 on sites with (sum of coordinates + parity) even, else 0; shape `lattice`."""
    grids = torch.meshgrid(*[torch.arange(n, device=device) for n in lattice], indexing="ij")
    return ((sum(grids) + parity) % 2 == 0).to(dtype or torch.get_default_dtype())


def variable_mask(n: int, parity: int, device=None, dtype=None) -> Tensor:
    """Alternating mask over the n variables of a 0-d theory."""
    return ((torch.arange(n, device=device) + parity) % 2 == 0).to(dtype or torch.get_default_dtype())


def _conv_net(dim: int, channels: int, hidden: int, depth: int, kernel: int) -> nn.Sequential:
    """Periodic CNN from `channels` to `2*channels` (scale and shift per field); last layer zero."""
    conv = _CONV[dim]
    sizes = [channels] + [hidden] * depth + [2 * channels]
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(conv(cin, cout, kernel, padding=kernel // 2, padding_mode="circular"))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU())
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


def _mlp_net(n: int, hidden: int, depth: int) -> nn.Sequential:
    sizes = [n] + [hidden] * depth + [2 * n]
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(cin, cout))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU())
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


class AffineCoupling(nn.Module):
    """x_active' = x_active * exp(s(x_frozen)) + t(x_frozen); frozen sites pass unchanged.

    `mask` is 1 on frozen sites (broadcast over fields). Works on (batch, n_fields, *lattice) with a
    conv net, or on (batch, n) with an MLP (0-d).
    """

    def __init__(self, net: nn.Module, mask: Tensor, scale_bound: float = 1.0):
        super().__init__()
        self.net = net
        self.register_buffer("mask", mask)
        self.scale_bound = scale_bound

    def _scale_shift(self, frozen: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.net(frozen).chunk(2, dim=1)
        active = 1 - self.mask
        return self.scale_bound * torch.tanh(s) * active, t * active

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z -> x and log|det dx/dz| per sample."""
        frozen = z * self.mask
        s, t = self._scale_shift(frozen)
        x = frozen + (1 - self.mask) * z * torch.exp(s) + t
        return x, s.flatten(1).sum(1)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x -> z and log|det dz/dx| per sample."""
        frozen = x * self.mask
        s, t = self._scale_shift(frozen)
        z = frozen + (1 - self.mask) * (x - t) * torch.exp(-s)
        return z, -s.flatten(1).sum(1)


class MonotoneElementwise(nn.Module):
    """x = a z + sum_k b_k tanh(c_k z + d_k) + shift, elementwise, with a, c_k > 0.

    For a 0-d theory with one variable a coupling has nothing to condition on, so the flow is this
    strictly increasing map of the real line (a 1-d bijection: multimodal targets such as the
    double Gaussian are reachable). The inverse is found by bisection on the bracket
    |x - a z - shift| <= sum |b|, then one Newton step that carries the implicit-function gradient
    dz/dtheta = -(df/dtheta) / f'(z) for forward-KL training. Monotone by construction:
    b_k c_k = a (exp(beta_k) - 1) / K > -a / K, so dx/dz > a (1 - sum_k sech^2 / K) > 0, while a
    component may stretch without bound; beta = 0 at the start makes it exactly the identity.
    """

    def __init__(self, n: int, components: int = 8):
        super().__init__()
        self.log_a = nn.Parameter(torch.zeros(n))
        self.shift = nn.Parameter(torch.zeros(n))
        self.beta = nn.Parameter(torch.zeros(n, components))
        self.log_c = nn.Parameter(torch.zeros(n, components))
        self.d = nn.Parameter(torch.linspace(-2.0, 2.0, components).repeat(n, 1))

    def _map(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(x, dx/dz) elementwise."""
        a, c = self.log_a.exp(), self.log_c.exp()
        bc = a[..., None] * torch.expm1(self.beta) / self.beta.shape[-1]    # b_k c_k
        th = torch.tanh(c * z[..., None] + self.d)
        return a * z + (bc / c * th).sum(-1) + self.shift, a + (bc * (1 - th**2)).sum(-1)

    def forward(self, z):
        x, slope = self._map(z)
        return x, slope.log().flatten(1).sum(1)

    def inverse(self, x):
        with torch.no_grad():
            a = self.log_a.exp()
            reach = (a[..., None] * torch.expm1(self.beta).abs() / self.beta.shape[-1]
                     / self.log_c.exp()).sum(-1)
            lo, hi = (x - self.shift - reach) / a, (x - self.shift + reach) / a
            for _ in range(60 if x.dtype == torch.float32 else 110):
                mid = 0.5 * (lo + hi)
                below = self._map(mid)[0] < x
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            z0 = 0.5 * (lo + hi)
        fx, slope = self._map(z0)
        z = z0 - (fx - x) / slope
        return z, -self._map(z)[1].log().flatten(1).sum(1)


class Flow(nn.Module):
    """A stack of bijections from N(0, 1) noise to configurations of shape `shape`.

    `settings` (a JSON-able dict) is everything needed to rebuild the network (see `build_flow`).
    """

    kind = "flow"

    def __init__(self, layers: list[nn.Module], shape: tuple[int, ...], settings: dict):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.shape = tuple(shape)
        self.settings = dict(settings)
        self.meta: dict = {}

    def _dev(self):
        return self.layers[0].mask if hasattr(self.layers[0], "mask") else next(self.parameters())

    def prior_log_prob(self, z: Tensor) -> Tensor:
        return (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Push prior samples through the flow: returns (x, log q(x))."""
        log_q = self.prior_log_prob(z)
        x = z
        for layer in self.layers:
            x, log_det = layer(x)
            log_q = log_q - log_det
        return x, log_q

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map configurations back to noise: returns (z, log|det dz/dx|)."""
        log_det = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        z = x
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z)
            log_det = log_det + ld
        return z, log_det

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log q(x), for forward KL and density evaluation."""
        z, log_det = self.inverse(x)
        return self.prior_log_prob(z) + log_det

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n configurations and their exact log q; differentiable (reparameterised)."""
        ref = self._dev()
        z = torch.randn((n, *self.shape), generator=generator, device=ref.device, dtype=ref.dtype)
        return self(z)


def build_flow(shape: tuple[int, ...], *, n_layers: int = 16, hidden: int = 16, depth: int = 2,
               kernel: int = 3, scale_bound: float = 1.0, device=None, dtype=None) -> Flow:
    """A coupling flow for configurations of shape (n_fields, *lattice).

    n_layers coupling layers with alternating parity; each net has `depth` hidden layers of
    `hidden` channels (conv kernel `kernel`, or MLP width `hidden` in 0-d).
    """
    shape = tuple(int(s) for s in shape)
    n_fields, lattice = shape[0], shape[1:]
    settings = dict(arch="affine_coupling", shape=list(shape), n_layers=n_layers, hidden=hidden,
                    depth=depth, kernel=kernel, scale_bound=scale_bound)
    dtype = dtype or torch.get_default_dtype()
    layers: list[nn.Module] = []
    if len(lattice) == 0 and n_fields == 1:
        # Few maps suffice in 1-d; many composed maps made reverse KL drop a mode (double Gaussian).
        layers = [MonotoneElementwise(1, components=hidden) for _ in range(max(1, n_layers // 4))]
    elif len(lattice) == 0:
        for i in range(n_layers):
            mask = variable_mask(n_fields, i % 2, dtype=dtype)
            layers.append(AffineCoupling(_mlp_net(n_fields, hidden, depth), mask, scale_bound))
    elif len(lattice) in _CONV:
        if kernel % 2 != 1:
            raise ValueError(f"kernel must be odd (got {kernel}) so the convolution is centred")
        for i in range(n_layers):
            mask = checkerboard(lattice, i % 2, dtype=dtype)
            net = _conv_net(len(lattice), n_fields, hidden, depth, kernel)
            layers.append(AffineCoupling(net, mask, scale_bound))
    else:
        raise ValueError(f"coupling flows support lattices of dimension 0-3, not {len(lattice)}")
    return Flow(layers, shape, settings).to(device=device, dtype=dtype)


def flow_from_settings(settings: dict, device=None, dtype=None) -> Flow:
    """Rebuild an (untrained) flow from the settings a saved model carries."""
    keys = ("n_layers", "hidden", "depth", "kernel", "scale_bound")
    return build_flow(tuple(settings["shape"]), **{k: settings[k] for k in keys},
                      device=device, dtype=dtype)
