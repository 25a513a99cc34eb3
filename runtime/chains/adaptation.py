"""Warm-up adaptation, one shape for all: `init() -> state`, `update(state, info) -> state` after
each warm-up step, `params(state)` for the next warm-up step and `final(state)` for production.

States are plain dicts of floats (they go into checkpoints as they are). `Fixed` is the no-op for
a kernel whose parameters are given. `reads` names the info entries `update` uses: the driver
hands it those only, and under torchrun gathers only those over the ranks.
"""
from __future__ import annotations

import math

from ..errors import SamplerError

# a step size tuned below this fraction of its start is a stalled run, not a tuned one
COLLAPSE_FRACTION = 1e-4


class Fixed:
    """No adaptation: the same parameters throughout."""

    reads: tuple[str, ...] = ()

    def __init__(self, **params):
        self._params = dict(params)

    def init(self) -> dict:
        return {}

    def update(self, state: dict, info: dict) -> dict:
        return state

    def params(self, state: dict) -> dict:
        return dict(self._params)

    final = params


class DualAveraging:
    """Nesterov dual averaging of log(step size) (Hoffman & Gelman, JMLR 15 (2014) 1593, alg. 5).

    Fed the chain-averaged `info["accept"]` after each warm-up step; `final` is the iterate
    average, which is what is frozen for the production run.
    """

    reads = ("accept",)

    def __init__(self, eps0: float, target: float, gamma: float = 0.05, t0: float = 10.0,
                 kappa: float = 0.75, **other):
        self.eps0, self.target, self.other = float(eps0), float(target), other
        self.gamma, self.t0, self.kappa = gamma, t0, kappa

    def init(self) -> dict:
        return {"mu": math.log(10 * self.eps0), "log_eps": math.log(self.eps0),
                "log_eps_bar": 0.0, "h_bar": 0.0, "t": 0}

    def update(self, s: dict, info: dict) -> dict:
        t = s["t"] + 1
        w = 1.0 / (t + self.t0)
        h_bar = (1 - w) * s["h_bar"] + w * (self.target - float(info["accept"].mean()))
        log_eps = s["mu"] - math.sqrt(t) / self.gamma * h_bar
        eta = t ** (-self.kappa)
        return {"mu": s["mu"], "log_eps": log_eps, "h_bar": h_bar, "t": t,
                "log_eps_bar": eta * log_eps + (1 - eta) * s["log_eps_bar"]}

    def params(self, s: dict) -> dict:
        eps = math.exp(s["log_eps"])
        if eps < self.eps0 * COLLAPSE_FRACTION:     # each trajectory would take > 1e4 x as long
            raise SamplerError(
                f"the HMC step size collapsed to {eps:.2g} during warm-up (from {self.eps0:.2g}): "
                f"no step size reaches acceptance {self.target:g}; the action may be unbounded "
                "below at these parameters (check the --set values) or the chains ran away")
        return {"step": eps, **self.other}

    def final(self, s: dict) -> dict:
        return {"step": math.exp(s["log_eps_bar"] if s["t"] else s["log_eps"]), **self.other}


class RobbinsMonro:
    """Stochastic approximation of log(step size) towards a target acceptance (MALA's tuner):
    log eps += 2 (accept - target) / sqrt(1 + t / every), spread over the `every` steps of a block
    (the step count is in units of kept configurations, as the rest of the run). Final: the last
    iterate."""

    reads = ("accept",)

    def __init__(self, eps0: float, target: float, every: int):
        self.eps0, self.target, self.every = float(eps0), float(target), int(every)

    def init(self) -> dict:
        return {"log_eps": math.log(self.eps0), "t": 0}

    def update(self, s: dict, info: dict) -> dict:
        rate = 2.0 / (self.every * math.sqrt(1 + s["t"] // self.every))
        return {"log_eps": s["log_eps"] + rate * (float(info["accept"].mean()) - self.target),
                "t": s["t"] + 1}

    def params(self, s: dict) -> dict:
        return {"step": math.exp(s["log_eps"])}

    final = params


class DriftReference:
    """Complex Langevin's reference drift K_ref (adaptive steps dt = min(eps, eps K_ref / max|K|)):
    during warm-up the running mean of max|K| over chains and steps, which the kernel also keeps
    up to date within a step; frozen at the end of warm-up (Aarts, James, Seiler, Stamatescu,
    PLB 687 (2010) 154). `warm` and `production` are the other kernel parameters of each phase;
    with measure=False (fixed steps, or a given K_ref) they are used as they are."""

    reads = ("drift_sum", "drift_count")     # sums over every rank's chains already

    def __init__(self, warm: dict, production: dict, measure: bool = True):
        self.warm, self.production, self.measure = warm, production, measure

    def init(self) -> dict:
        return {"drift_sum": 0.0, "drift_count": 0}

    def update(self, s: dict, info: dict) -> dict:
        return {"drift_sum": s["drift_sum"] + float(info["drift_sum"]),
                "drift_count": s["drift_count"] + int(info["drift_count"])}

    def params(self, s: dict) -> dict:
        return {**self.warm, "drift_ref": None, **s} if self.measure else dict(self.warm)

    def final(self, s: dict) -> dict:
        if not self.measure:
            return dict(self.production)
        return {**self.production, "drift_ref": s["drift_sum"] / max(s["drift_count"], 1)}
