"""Reweighting by log weights: normalised weights, Kish's ESS, log Z and the free energy.

A model q proposes configurations; the unnormalised target is p~ = exp(-S). With log weights
log w = log p~ - log q = -S - log q:
- reweighting gives <O>_p = sum w O / sum w; Kish's ESS per sample (sum w)^2 / (N sum w^2) says
  how many independent p-samples a q-sample is worth;
- log Z = log E_q[w] (unbiased for Z, with a delta-method error) and the variational free energy
  F_q = E_q[S + log q] >= -log Z (equality iff q = p);
- independent Metropolis over q's proposals accepts with min(1, w(x') / w(x)), whose expectation
  is a smooth training diagnostic.
Pure functions of arrays (numpy, or torch tensors, which are converted).
"""
from __future__ import annotations

import math

import numpy as np


def as_float64(log_w) -> np.ndarray:
    """Log weights (numpy or torch, any shape) as a flat float64 numpy array."""
    if hasattr(log_w, "detach"):      # a torch tensor, without importing torch here
        log_w = log_w.detach().to("cpu").double().numpy()
    return np.asarray(log_w, dtype=np.float64).ravel()


def weights(log_w) -> np.ndarray:
    """exp(log_w - max log_w), in log_w's shape: the largest weight is 1, so nothing overflows."""
    lw = np.asarray(log_w, dtype=np.float64)
    return np.exp(lw - np.max(lw))


def kish_ess(log_w) -> float:
    """ESS per sample, (sum w)^2 / (N sum w^2), in (0, 1]; 1 means q = p."""
    w = weights(as_float64(log_w))
    return float(w.sum() ** 2 / (len(w) * (w**2).sum()))


def log_z_estimate(log_w) -> dict:
    """log Z = log mean w with its delta-method error sqrt(var w / N) / mean w.

    The error is reliable only when the weights have a finite variance under q, i.e. when the
    ESS is not tiny; a mode the model misses biases log Z low and is invisible in the error.
    """
    lw = as_float64(log_w)
    w = weights(lw)
    mean = w.mean()
    error = w.std(ddof=1) / math.sqrt(len(w)) / mean if len(w) > 1 else float("inf")
    return {"mean": float(lw.max() + math.log(mean)), "error": float(error)}


def free_energy(log_w) -> dict:
    """F_q = E_q[S + log q] = -E_q[log w], an upper bound on -log Z, with its standard error."""
    lw = as_float64(log_w)
    err = lw.std(ddof=1) / math.sqrt(len(lw)) if len(lw) > 1 else float("inf")
    return {"mean": float(-lw.mean()), "error": float(err)}


def expected_imh_acceptance(log_w) -> float:
    """E_{x~p, x'~q}[min(1, w(x')/w(x))] estimated on one batch (x~p by reweighting the batch).

    Deterministic (no accept/reject draws), so it is a smooth training diagnostic. O(N^2).
    """
    lw = as_float64(log_w)
    p_weights = weights(lw)
    p_weights /= p_weights.sum()
    ratio = np.minimum(0.0, lw[None, :] - lw[:, None])      # [i, j]: from state i to proposal j
    return float((p_weights[:, None] * np.exp(ratio)).sum() / len(lw))
