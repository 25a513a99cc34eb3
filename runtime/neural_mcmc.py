"""Exact sampling with a trained flow or VAN: independent Metropolis and reweighting.

A model q proposes configurations independently; the unnormalised target is p~ = exp(-S). With
log weights log w = log p~ - log q = -S - log q:
- independent Metropolis-Hastings (IMH) accepts x' from state x with probability
  min(1, w(x') / w(x)); the chain is exact for p = p~ / Z whatever q is (Albergo et al. 1904.12072);
- reweighting gives <O>_p = sum w O / sum w; Kish's ESS per sample (sum w)^2 / (N sum w^2) says
  how many independent p-samples a q-sample is worth;
- log Z = log E_q[w] (unbiased for Z, with a delta-method error) and the variational free energy
  F_q = E_q[S + log q] >= -log Z (equality iff q = p).

The diagnostics are pure functions of log weights; `sample_flow` is the sampler.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from .ensemble import SamplerRun


def _as_numpy(log_w) -> np.ndarray:
    if isinstance(log_w, torch.Tensor):
        log_w = log_w.detach().to("cpu", torch.float64).numpy()
    return np.asarray(log_w, dtype=np.float64).ravel()


def kish_ess(log_w) -> float:
    """ESS per sample, (sum w)^2 / (N sum w^2), in (0, 1]; 1 means q = p."""
    lw = _as_numpy(log_w)
    w = np.exp(lw - lw.max())
    return float(w.sum() ** 2 / (len(w) * (w**2).sum()))


def log_z_estimate(log_w) -> dict:
    """log Z = log mean w with its delta-method error sqrt(var w / N) / mean w.

    The error is reliable only when the weights have a finite variance under q, i.e. when the
    ESS is not tiny; a mode the model misses biases log Z low and is invisible in the error.
    """
    lw = _as_numpy(log_w)
    shift = lw.max()
    w = np.exp(lw - shift)
    mean = w.mean()
    error = w.std(ddof=1) / math.sqrt(len(w)) / mean if len(w) > 1 else float("inf")
    return {"mean": float(shift + math.log(mean)), "error": float(error)}


def free_energy(log_w) -> dict:
    """F_q = E_q[S + log q] = -E_q[log w], an upper bound on -log Z, with its standard error."""
    lw = _as_numpy(log_w)
    err = lw.std(ddof=1) / math.sqrt(len(lw)) if len(lw) > 1 else float("inf")
    return {"mean": float(-lw.mean()), "error": float(err)}


def expected_imh_acceptance(log_w) -> float:
    """E_{x~p, x'~q}[min(1, w(x')/w(x))] estimated on one batch (x~p by reweighting the batch).

    Deterministic (no accept/reject draws), so it is a smooth training diagnostic. O(N^2).
    """
    lw = _as_numpy(log_w)
    p_weights = np.exp(lw - lw.max())
    p_weights /= p_weights.sum()
    ratio = np.minimum(0.0, lw[None, :] - lw[:, None])      # [i, j]: from state i to proposal j
    return float((p_weights[:, None] * np.exp(ratio)).sum() / len(lw))


def imh_chain(log_w, uniforms) -> tuple[np.ndarray, np.ndarray]:
    """Run independent Metropolis over proposals in order: (state index per step, accepted flags).

    Step 0 takes proposal 0 (a q-sample; the chain forgets it after a few acceptances).
    """
    lw = _as_numpy(log_w)
    u = _as_numpy(uniforms)
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


def tau_int(series, window_c: float = 5.0) -> float:
    """Integrated autocorrelation time (Sokal's automatic window, tau = 1/2 + sum rho)."""
    x = _as_numpy(series)
    n = len(x)
    x = x - x.mean()
    var = (x * x).mean()
    if n < 4 or var == 0:
        return 0.5
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n] / (n * var)
    tau = 0.5
    for t in range(1, n):
        tau += acf[t]
        if t >= window_c * tau:
            break
    return float(max(tau, 0.5))


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
        log_q.append(_as_numpy(lq))
        action.append(_as_numpy(theory.action(x).real))
        done += b
        bar.update(b)
    bar.close()
    return torch.cat(configs), np.concatenate(log_q), np.concatenate(action)


def sample_flow(theory, model, n: int, *, seed: int = 0, device="cpu", metropolis: bool = True,
                batch_size: int = 1024, progress: bool = True) -> SamplerRun:
    """Sample a theory exactly with a trained flow (real fields) or VAN (spins).

    metropolis=True: an independent-Metropolis chain over n proposals (kind "markov", chains=1,
    no log_weights: the chain is already distributed as exp(-S)/Z).
    metropolis=False: the n proposals themselves (kind "independent") with log_weights
    -S - log q, which measurement must apply.
    Either way the summary has acceptance, ess, log_z {mean, error}, free_energy {mean, error}.
    """
    if getattr(theory, "is_complex", False):
        raise ValueError("flow sampling needs a real action: exp(-S) is not a probability here")
    model = model.to(device).eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    x, log_q, action = propose(theory, model, n, generator=gen, batch_size=batch_size,
                               progress=progress)
    log_w = -action - log_q
    summary = {"ess": kish_ess(log_w), "log_z": log_z_estimate(log_w),
               "free_energy": free_energy(log_w), "n_proposals": int(n)}
    settings = {"sampler": "flow", "model": model.kind, "metropolis": bool(metropolis),
                "batch_size": int(batch_size), "seed": int(seed), "arch": model.settings}
    if not metropolis:
        summary["acceptance"] = expected_imh_acceptance(log_w[: min(n, 4096)])
        stats = {"action": action[None], "log_q": log_q[None]}
        return SamplerRun(configs=x[None], stats=stats, summary=summary, settings=settings,
                          log_weights=log_w[None], kind="independent")
    uniforms = torch.rand(n, generator=gen, device=device, dtype=torch.float64)
    index, accepted = imh_chain(log_w, uniforms)
    summary["acceptance"] = float(accepted[1:].mean()) if n > 1 else 1.0
    summary["tau_int_action"] = tau_int(action[index])
    stats = {"accepted": accepted[None].astype(np.float64), "action": action[index][None],
             "log_weight": log_w[index][None]}
    return SamplerRun(configs=x[torch.from_numpy(index)][None], stats=stats, summary=summary,
                      settings=settings, log_weights=None, kind="markov")
