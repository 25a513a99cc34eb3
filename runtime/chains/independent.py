"""Independent Metropolis-Hastings (IMH) over a trained model's proposals: a kernel for the driver.

A model q (a flow for real fields, a VAN for spins) proposes configurations independently; with
log weights log w = -S - log q, the proposal x' is accepted from state x with probability
min(1, w(x') / w(x)), and the chain is exact for exp(-S)/Z whatever q is (Albergo et al.
1904.12072). Proposals are drawn `batch` steps ahead for all chains at once (a VAN costs one pass
per site whatever the batch) and kept in the state, so a checkpoint resumes mid-batch. Each kept
configuration records the proposal's log weight too: the summary's ESS, log Z and free energy are
those of all proposals (runtime/stats/reweighting.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..stats.gamma import gamma_method
from ..stats.reweighting import free_energy, kish_ess, log_z_estimate
from .driver import Plan

Tensor = torch.Tensor


@dataclass
class IMHState:
    x: Tensor            # (chains, *shape) current configurations
    action: Tensor       # (chains,) float64
    log_w: Tensor        # (chains,) float64
    pool: dict           # proposals drawn ahead: x (batch, chains, ...), action, log_w
    used: int            # proposals of the pool already used


class IndependentKernel:
    averaged: tuple[str, ...] = ()

    def __init__(self, theory, model, batch: int):
        self.theory, self.model, self.batch = theory, model, int(batch)

    @torch.no_grad()
    def _draw(self, count: int, generator) -> tuple[Tensor, Tensor, Tensor]:
        x, log_q = self.model.sample(count, generator)
        action = self.theory.action(x).real.to(torch.float64)
        return x, action, -action - log_q.to(torch.float64)

    def init(self, chains: int, generator) -> IMHState:
        """The chains start at a proposal each (`start` gives the number of chains)."""
        x, action, log_w = self._draw(chains, generator)
        return IMHState(x, action, log_w, {}, self.batch)

    def step(self, s: IMHState, generator: torch.Generator, params: dict):
        chains = s.x.shape[0]
        pool, used = s.pool, s.used
        if used == self.batch:
            x, action, log_w = self._draw(self.batch * chains, generator)
            pool = {"x": x.reshape(self.batch, chains, *x.shape[1:]),
                    "action": action.reshape(self.batch, chains),
                    "log_w": log_w.reshape(self.batch, chains)}
            used = 0
        x1, s1, lw1 = pool["x"][used], pool["action"][used], pool["log_w"][used]
        u = torch.rand(chains, generator=generator, device=s.x.device, dtype=torch.float64)
        ok = torch.log(u) < lw1 - s.log_w
        mask = ok.view(-1, *([1] * (s.x.dim() - 1)))
        new = IMHState(torch.where(mask, x1, s.x), torch.where(ok, s1, s.action),
                       torch.where(ok, lw1, s.log_w), pool, used + 1)
        return new, {"accepted": ok, "proposal_log_weight": lw1}

    # -- what the driver needs besides init/step
    def fields(self, s: IMHState) -> Tensor:
        return s.x

    def transform(self, s: IMHState, fn) -> IMHState:
        x = fn(s.x)
        action = self.theory.action(x).real.to(torch.float64)
        # a symmetry of the target that the model shares (log q invariant) keeps log w exact
        return IMHState(x, action, s.log_w + s.action - action, s.pool, s.used)

    def record(self, s: IMHState, info: dict, params: dict) -> dict:
        return {"accepted": info["accepted"], "action": s.action, "log_weight": s.log_w,
                "proposal_log_weight": info["proposal_log_weight"]}

    def summary(self, stats: dict, params: dict, settings: dict) -> dict:
        lw = stats["proposal_log_weight"].ravel()
        return {"ess": kish_ess(lw), "log_z": log_z_estimate(lw), "free_energy": free_energy(lw),
                "n_proposals": int(lw.size), "acceptance": float(stats["accepted"].mean()),
                "tau_int_action": gamma_method(stats["action"]).tau_int}

    def final_settings(self, params: dict) -> dict:
        return {}

    def timing(self, seconds: float, stats: dict, plan: Plan) -> dict:
        return {"seconds": seconds, "seconds_per_step": seconds / max(1, plan.n * plan.every)}

    def state_dict(self, s: IMHState) -> dict:
        return {"x": s.x, "action": s.action, "log_w": s.log_w, "pool": s.pool, "used": s.used}

    def load_state(self, d: dict, device) -> IMHState:
        pool = {k: v.to(device) for k, v in d["pool"].items()}
        return IMHState(d["x"].to(device), d["action"].to(device), d["log_w"].to(device), pool,
                        int(d["used"]))
