"""Fused sampler steps, generated at the end of a theory's module for `--compile`.

Each is the whole update of one sampler step written as one function of the module's own `force`
or `drift`, so that `torch.compile` traces the update and the force together and emits one loop
over the lattice (rolls as index arithmetic, no lattice-sized temporaries) instead of the ~10
elementwise kernels the eager force and update take:

- `drift_kick(cfg, p, eps, kick)`: phi + eps p, then p - kick dS/dphi at the new phi; one step of
  leapfrog, half a step of the Omelyan integrator (runtime/chains/hmc.py composes them);
- `langevin_step(cfg, k, eta, eps, scale)`: phi + eps K + scale eta and the drift K there; an
  Euler-Maruyama step (scale sqrt(2 eps)) or the BAOAB-limit step (eta the sum of two noises,
  scale sqrt(eps / 2)) of runtime/chains/langevin.py.

Step sizes are arguments (0-d tensors at run time), so a tuned step size never recompiles. The
functions are plain assignments and calls, so compiler/verify.py's whitelist accepts them as is.
Their two names are reserved (codegen.MODULE_NAMES); their arguments' names are claimed last, so
they cannot change any other function's text.
"""
from __future__ import annotations


def fused_steps(writer) -> str:
    """The fused steps of the theory `writer` (a codegen.ModuleWriter) is printing; none for a
    complex action (HMC refuses it, complex Langevin has its own kernels)."""
    if writer.ir.is_complex:
        return ""
    claim = writer.namer.claim
    p, eps, kick, frc, k, eta, scale = (claim(n) for n in ("p", "eps", "kick", "frc", "k", "eta", "scale"))
    hmc = writer.function(
        f"drift_kick(cfg, {p}, {eps}, {kick})",
        "phi + eps p, then p - kick dS/dphi there: one leapfrog step, returns (phi, p, force).",
        [f"cfg = cfg + {eps}*{p}", f"{frc} = force(cfg)", f"return (cfg, {p} - {kick}*{frc}, {frc})"])
    langevin = writer.function(
        f"langevin_step(cfg, {k}, {eta}, {eps}, {scale})",
        "phi + eps K + scale eta, then the drift K there: one Langevin step, returns (phi, K).",
        [f"cfg = cfg + {eps}*{k} + {scale}*{eta}", "return (cfg, drift(cfg))"])
    return hmc + "\n\n" + langevin
