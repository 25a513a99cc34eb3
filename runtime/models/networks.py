"""Time-conditioned networks for diffusion models.

`TimeMLP` for 0-dimensional theories (input: a flat vector of features), `TimeConvNet` for lattices
(1, 2 or 3 dimensions): a residual network of periodic (circular) convolutions, so it is
translation-equivariant exactly like the theory, with a global-average branch in every block
so that zero-momentum modes (the magnetisation) are seen at once rather than through the
receptive field, and optionally a ZeroModeHead that outputs the zero mode's score itself (the
blocks' GroupNorms remove what the branch adds to each group's mean). Both take the already preconditioned input u (unit variance at every t) and
a time embedding of (t, log std(t)); both use SiLU, which is smooth as an energy-based model
needs (its score is a gradient of the network).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .sde import shared_time

Tensor = torch.Tensor


class TimeEmbedding(nn.Module):
    """Features of the diffusion time: sin/cos of t at octave frequencies and log std(t) / 4.

    log std resolves the small-t end (where the score changes fastest) that sinusoids of t
    alone would need very high frequencies for.
    """

    def __init__(self, dim: int, n_freq: int = 6):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freq), persistent=False)
        self.proj = nn.Sequential(nn.Linear(2 * n_freq + 1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor, log_std: Tensor) -> Tensor:
        """(batch, dim), or (1, dim) when all samples share one time (broadcasts; the sampler's
        case, where it saves a third of the work of a small network)."""
        shared = shared_time(t)
        if shared is not t:
            t, log_std = shared, log_std[:1]
        arg = t[:, None] * self.freqs.to(t.dtype)
        feats = torch.cat([arg.sin(), arg.cos(), log_std[:, None] / 4], dim=1)
        return self.proj(feats)


class _ResBlockMLP(nn.Module):
    def __init__(self, width: int, emb: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.temb = nn.Linear(emb, width)
        self.act = nn.SiLU()

    def forward(self, h, e):
        z = self.fc1(self.act(h)) + self.temb(e)
        return h + self.fc2(self.act(z))


class TimeMLP(nn.Module):
    """Residual MLP (n_in -> n_out) conditioned on time; for 0-d theories."""

    def __init__(self, n_in: int, n_out: int, *, width: int = 64, depth: int = 3, emb: int = 32,
                 zero_out: bool = True):
        super().__init__()
        self.embed = TimeEmbedding(emb)
        self.inp = nn.Linear(n_in, width)
        self.blocks = nn.ModuleList(_ResBlockMLP(width, emb) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, n_out))
        if zero_out:   # start as the exact Gaussian model (see diffusion.py)
            nn.init.zeros_(self.out[1].weight)
            nn.init.zeros_(self.out[1].bias)

    def forward(self, u: Tensor, t: Tensor, log_std: Tensor) -> Tensor:
        e = self.embed(t, log_std)
        h = self.inp(u.flatten(1))
        for block in self.blocks:
            h = block(h, e)
        return self.out(h).reshape(u.shape[0], -1)

    def value_and_vjp(self, u: Tensor, t: Tensor, log_std: Tensor) -> tuple[Tensor, Tensor]:
        """(v, J^T v) with v = forward(u, t, log_std) and J = dv/du: the gradient of |v|^2 / 2
        that an energy model's score needs, by the chain rule written out (no autograd graph).

        Why: sampling an energy model spends its time in this gradient, and at width 64 its cost
        is the elementwise passes over (batch, width) tensors more than the matrix products. The
        forward folds the time embedding into the first layer's bias, and the backward uses
        aten's fused silu_backward (the kernel autograd itself calls for SiLU), so a block makes
        7 elementwise passes instead of autograd's ~16; it needs no graph (runs under no_grad)
        and agrees with autograd to rounding (tests/test_diffusion.py).
        """
        e = self.embed(t, log_std)
        h = self.inp(u.flatten(1))
        saved = []
        for block in self.blocks:
            z = torch.addmm(block.fc1.bias + block.temb(e), F.silu(h), block.fc1.weight.t())
            saved.append((h, z))
            h = torch.addmm(h, F.silu(z), block.fc2.weight.t()).add_(block.fc2.bias)
        last = self.out[1]
        v = last(F.silu(h))
        g = _silu_backward(v @ last.weight, h)
        for block, (h, z) in zip(reversed(self.blocks), reversed(saved)):
            g_z = _silu_backward(g @ block.fc2.weight, z)
            g = g + _silu_backward(g_z @ block.fc1.weight, h)
        return v.reshape(u.shape[0], -1), (g @ self.inp.weight).reshape(u.shape)


def _silu_backward(grad: Tensor, x: Tensor) -> Tensor:
    """grad * SiLU'(x) in one pass (aten's kernel behind autograd's SiLU backward)."""
    return torch.ops.aten.silu_backward(grad, x)


_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _conv(dim: int, c_in: int, c_out: int, kernel: int) -> nn.Module:
    if dim not in _CONV:
        raise ValueError(f"lattice diffusion networks support 1, 2 or 3 dimensions, not {dim}")
    return _CONV[dim](c_in, c_out, kernel, padding=kernel // 2, padding_mode="circular")


class _ResBlockConv(nn.Module):
    def __init__(self, dim: int, width: int, emb: int, kernel: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, width), width)
        self.conv1 = _conv(dim, width, width, kernel)
        self.temb = nn.Linear(emb, width)
        self.glob = nn.Linear(width, width)
        self.norm2 = nn.GroupNorm(min(8, width), width)
        self.conv2 = _conv(dim, width, width, kernel)
        self.act = nn.SiLU()
        self.dim = dim

    def _bcast(self, v: Tensor) -> Tensor:
        return v.reshape(*v.shape, *([1] * self.dim))

    def forward(self, h, e):
        z = self.conv1(self.act(self.norm1(h)))
        glob = self.glob(h.flatten(2).mean(2))      # zero-momentum channel mixing
        z = z + self._bcast(self.temb(e) + glob)
        z = self.conv2(self.act(self.norm2(z)))
        return h + z


class ZeroModeHead(nn.Module):
    """The zero-momentum pathway of a lattice network: the output's spatially uniform part as a
    function of the input's zero mode z = sqrt(V) mean_x u (per channel), the residual stream's
    spatial mean and the time.

    Why: the zero mode is the slowest, largest-variance direction of a near-critical field, and
    in the per-site standardised u it is a uniform offset of size ~ 1/sqrt(V) under O(1) local
    fluctuations; the convolutional trunk's GroupNorms subtract each group's spatial mean (the
    zero mode itself) at every block and before the output, so the trunk learns its score poorly
    (phi4_2d 32x32: chi2 19% low). Here it is learnt directly: the uniform output g / sqrt(V)
    adds g to the output's zero-mode component and nothing to any other momentum, with
    g = A(t) z + MLP(z, mean h, t), A(t) a time-dependent c_out x c_in matrix (the Gaussian
    score of the zero mode is exactly linear in z). Translation invariant (z and mean h are), so
    the network stays equivariant. Its last layers start at zero: the network starts as without it.
    """

    def __init__(self, c_in: int, c_out: int, width: int, emb: int, hidden: int = 64):
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.gain = nn.Linear(emb, c_out * c_in)
        self.mlp = nn.Sequential(nn.Linear(c_in + width + emb, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, c_out))
        for layer in (self.gain, self.mlp[4]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, u: Tensor, h: Tensor, e: Tensor) -> Tensor:
        lattice = u.shape[2:]
        root_volume = math.sqrt(math.prod(lattice))
        z = u.flatten(2).mean(2) * root_volume            # (batch, c_in), ~unit variance
        e = e.expand(u.shape[0], -1)
        gain = self.gain(e).reshape(-1, self.c_out, self.c_in)
        g = (gain @ z[:, :, None])[:, :, 0] + self.mlp(torch.cat([z, h.flatten(2).mean(2), e], 1))
        return (g / root_volume).reshape(*g.shape, *([1] * len(lattice)))


class TimeConvNet(nn.Module):
    """Translation-equivariant periodic-convolution ResNet (channels_in -> channels_out);
    zero_mode_head adds the ZeroModeHead's uniform output."""

    def __init__(self, dim: int, c_in: int, c_out: int, *, width: int = 32, depth: int = 4,
                 kernel: int = 3, emb: int = 32, zero_out: bool = True,
                 zero_mode_head: bool = False):
        super().__init__()
        self.embed = TimeEmbedding(emb)
        self.inp = _conv(dim, c_in, width, kernel)
        self.blocks = nn.ModuleList(_ResBlockConv(dim, width, emb, kernel) for _ in range(depth))
        self.out = nn.Sequential(nn.GroupNorm(min(8, width), width), nn.SiLU(),
                                 _conv(dim, width, c_out, kernel))
        self.zero_mode = ZeroModeHead(c_in, c_out, width, emb) if zero_mode_head else None
        if zero_out:
            nn.init.zeros_(self.out[2].weight)
            nn.init.zeros_(self.out[2].bias)

    def forward(self, u: Tensor, t: Tensor, log_std: Tensor) -> Tensor:
        e = self.embed(t, log_std)
        h = self.inp(u)
        for block in self.blocks:
            h = block(h, e)
        if self.zero_mode is None:
            return self.out(h)
        return self.out(h) + self.zero_mode(u, h, e)


def build_network(feature_shape: tuple[int, ...], *, width: int | None = None,
                  depth: int | None = None, kernel: int = 3, emb: int = 32,
                  zero_out: bool = True, zero_mode_head: bool = False,
                  outputs: int | None = None) -> nn.Module:
    """The default network for configurations of `feature_shape` = (channels, *lattice);
    zero_mode_head: a lattice network's ZeroModeHead (0-d networks see everything at once);
    outputs: output channels when not the input's (the torus diffusion's features are (cos, sin)
    of what it returns one number for)."""
    channels, lattice = feature_shape[0], feature_shape[1:]
    c_out = outputs or channels
    if not lattice:
        return TimeMLP(channels, c_out, width=width or 64, depth=depth or 3, emb=emb,
                       zero_out=zero_out)
    return TimeConvNet(len(lattice), channels, c_out, width=width or 32, depth=depth or 4,
                       kernel=kernel, emb=emb, zero_out=zero_out, zero_mode_head=zero_mode_head)
