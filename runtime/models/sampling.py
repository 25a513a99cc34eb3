"""Exact sampling with a trained flow or VAN: independent Metropolis and reweighting.

A model q proposes configurations independently; the unnormalised target is p~ = exp(-S). With
log weights log w = log p~ - log q = -S - log q:
- independent Metropolis-Hastings (IMH) accepts x' from state x with probability
  min(1, w(x') / w(x)); the chain is exact for p = p~ / Z whatever q is (Albergo et al. 1904.12072);
- reweighting gives <O>_p = sum w O / sum w; Kish's ESS per sample (sum w)^2 / (N sum w^2) says
  how many independent p-samples a q-sample is worth;
- log Z = log E_q[w] (unbiased for Z, with a delta-method error) and the variational free energy
  F_q = E_q[S + log q] >= -log Z (equality iff q = p).

The diagnostics are pure functions of log weights (runtime/stats/reweighting.py); `sample_flow` is
the sampler.
"""
from __future__ import annotations


import numpy as np
import torch
from tqdm.auto import tqdm

from ..chains.adaptation import Fixed
from ..chains.driver import Plan, run_chains
from ..chains.independent import IndependentKernel
from ..io.ensemble import SamplerRun
from ..stats.reweighting import (as_float64, expected_imh_acceptance, free_energy,
                                 kish_ess, log_z_estimate)


def imh_chain(log_w, uniforms) -> tuple[np.ndarray, np.ndarray]:
    """Independent Metropolis over given proposals in order: (state index per step, accepted
    flags). The numpy reference of the IMH kernel's rule (runtime/chains/independent.py), for
    tests and for reading a chain off a table of log weights.

    Step 0 takes proposal 0 (a q-sample; the chain forgets it after a few acceptances).
    """
    lw = as_float64(log_w)
    u = as_float64(uniforms)
    index = np.empty(len(lw), dtype=np.int64)
    accepted = np.zeros(len(lw), dtype=bool)
    current, accepted[0] = 0, True
    index[0] = 0
    log_u = np.log(u)
    for i in range(1, len(lw)):
        if log_u[i] < lw[i] - lw[current]:
            current, accepted[i] = i, True
        index[i] = current
    return index, accepted


@torch.no_grad()
def propose(theory, model, n: int, *, generator: torch.Generator, batch_size: int,
            progress: bool = False) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """n model samples on the cpu with their log q and action (float64 numpy)."""
    configs, log_q, action = [], [], []
    bar = tqdm(total=n, disable=not progress, desc="flow samples")
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        x, lq = model.sample(b, generator)
        configs.append(x.cpu())
        log_q.append(as_float64(lq))
        action.append(as_float64(theory.action(x).real))
        done += b
        bar.update(b)
    bar.close()
    return torch.cat(configs), np.concatenate(log_q), np.concatenate(action)


def sample_flow(theory, model, n: int, *, seed: int = 0, device="cpu", metropolis: bool = True,
                batch_size: int = 1024, progress: bool = True, chains: int = 1, checkpoint=None,
                resume: bool = False) -> SamplerRun:
    """Sample a theory exactly with a trained flow (real fields) or VAN (spins).

    metropolis=True: `chains` independent-Metropolis chains of n steps each (kind "markov", no
    log_weights: the chains are already distributed as exp(-S)/Z), run by the chain driver with
    the IMH kernel (runtime/chains/independent.py).
    metropolis=False: the n proposals themselves (kind "independent") with log_weights
    -S - log q, which measurement must apply.
    Either way the summary has acceptance, ess, log_z {mean, error}, free_energy {mean, error}.
    """
    if getattr(theory, "is_complex", False):
        raise ValueError("flow sampling needs a real action: exp(-S) is not a probability here")
    model = model.to(device).eval()
    settings = {"sampler": "flow", "model": model.kind, "metropolis": bool(metropolis),
                "batch_size": int(batch_size), "seed": int(seed), "arch": model.settings}
    if metropolis:
        plan = Plan(n=n, chains=chains, seed=seed, device=device)
        run = run_chains(IndependentKernel(theory, model, batch_size), lambda generator: chains,
                         plan, Fixed(), settings, checkpoint=checkpoint, resume=resume,
                         progress=progress, label="flow")
        return run
    gen = torch.Generator(device=device).manual_seed(seed)
    x, log_q, action = propose(theory, model, n, generator=gen, batch_size=batch_size,
                               progress=progress)
    log_w = -action - log_q
    summary = {"ess": kish_ess(log_w), "log_z": log_z_estimate(log_w),
               "free_energy": free_energy(log_w), "n_proposals": int(n),
               "acceptance": expected_imh_acceptance(log_w[: min(n, 4096)])}
    stats = {"action": action[None], "log_q": log_q[None]}
    return SamplerRun(configs=x[None], stats=stats, summary=summary, settings=settings,
                      log_weights=log_w[None], kind="independent")
