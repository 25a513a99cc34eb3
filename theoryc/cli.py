"""The `theoryc` command line: compile, sample, train, measure, plot.

Heavy imports (torch, SymPy, the runtimes) happen inside the commands that need them, so that
`theoryc compile` of a cached theory stays fast. User mistakes end in one clear message and exit
code 1, never a traceback.
"""
from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path

import click

from .dsl.errors import TheoryError, printable

SAMPLERS = ("hmc", "langevin", "flow", "diffusion")


class UserError(Exception):
    """A mistake in how a command was called, reported without a traceback."""


def friendly(command):
    """Turn every expected failure into a message on stderr and exit code 1."""
    @wraps(command)
    def run(*args, **kwargs):
        from_runtime = runtime_errors()
        try:
            return command(*args, **kwargs)
        except TheoryError as err:
            click.echo(err.format(), err=True)
        except (UserError, *from_runtime) as err:
            click.echo(printable(f"Error: {err}", newlines=True), err=True)
        except FileNotFoundError as err:
            click.echo(printable(f"Error: no such file: {err.filename or err}", newlines=True), err=True)
        except (OSError, ValueError) as err:
            click.echo(printable(f"Error: {err}", newlines=True), err=True)
        except KeyboardInterrupt:
            click.echo("Interrupted. A run with a checkpoint can continue with --resume.", err=True)
            sys.exit(130)
        sys.exit(1)
    return run


def runtime_errors() -> tuple:
    try:
        from .runtime.errors import SamplerError
        return (SamplerError,)
    except ImportError:
        return ()


def parse_sets(values) -> dict:
    out = {}
    for item in values:
        if "=" not in item:
            raise UserError(f"--set expects NAME=VALUE, got '{item}'")
        name, value = item.split("=", 1)
        out[name.strip()] = value.strip()
    return out


def torch_dtype(name: str):
    import torch
    return {"float32": torch.float32, "float64": torch.float64}[name]


def pick_device(name: str) -> str:
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here")
    return name


set_option = click.option("--set", "sets", multiple=True, metavar="P=V",
                          help="Override a parameter (repeatable), e.g. --set kappa=0.3 --set sigma0=1+2i.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="theoryc")
def main():
    """theoryc: compile lattice field theories to torch code and sample them."""


# ---------------------------------------------------------------------------------- compile
@main.command()
@click.argument("theory")
@set_option
@click.option("--emit", type=click.Choice(["python", "sympy"]), help="Print the generated code or the derived expressions.")
@friendly
def compile(theory, sets, emit):
    """Check, derive and generate code for THEORY (a .theory file or a shipped name)."""
    from . import api
    overrides = parse_sets(sets)
    if emit:
        click.echo(api.emit(theory, overrides, emit), nl=False)
        return
    result = api.compile(theory, overrides)
    click.echo(f"{result.path}{'  (cached)' if result.cached else ''}")


# ----------------------------------------------------------------------------------- sample
@main.command()
@click.argument("theory")
@click.option("--sampler", type=click.Choice(SAMPLERS), required=True)
@click.option("--n", "n", type=click.IntRange(1), default=1000, show_default=True,
              help="Configurations kept per chain (Markov chains) or generated (models).")
@click.option("--chains", type=click.IntRange(1), default=4, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=None, help="Warm-up trajectories or steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@set_option
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float64", show_default=True)
@click.option("--every", type=click.IntRange(1), default=None, help="Keep every K-th trajectory/step.")
@click.option("--integrator", type=click.Choice(["leapfrog", "omelyan"]), default="leapfrog", show_default=True,
              help="HMC integrator.")
@click.option("--step", type=float, default=None, help="Step size (HMC: fixes it; Langevin: eps).")
@click.option("--trajectory-length", type=float, default=1.0, show_default=True, help="HMC trajectory length.")
@click.option("--target-accept", type=float, default=0.8, show_default=True,
              help="HMC: acceptance the warm-up tunes the step size to.")
@click.option("--scheme", type=click.Choice(["em", "rk2", "bm", "mala"]), default=None,
              help="Langevin scheme (default bm, second order).")
@click.option("--noise-imag", type=float, default=0.0, show_default=True,
              help="Complex Langevin: noise N_y in the imaginary direction (N_x - N_y = 1).")
@click.option("--no-adaptive", is_flag=True, help="Complex Langevin: fixed step (no drift-bounding adaptive step).")
@click.option("--no-symmetry-moves", is_flag=True, help="Do not apply the declared symmetries as global moves.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), help="Model file (flow, diffusion).")
@click.option("--solver", type=click.Choice(["em", "pc", "ode"]), default="em", show_default=True,
              help="Diffusion sampler.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Diffusion integration steps.")
@click.option("--no-metropolis", is_flag=True, help="Flow: keep raw proposals with log-weights instead of an exact chain.")
@click.option("--resume", is_flag=True, help="Continue from OUT.ckpt.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@friendly
def sample(theory, sampler, n, chains, warmup, seed, sets, device, dtype, every, integrator, step,
           trajectory_length, target_accept, scheme, noise_imag, no_adaptive, no_symmetry_moves, model_path, solver, steps, no_metropolis, resume, quiet, output):
    """Sample THEORY and write an ensemble file."""
    from . import api
    th = api.load(theory, **parse_sets(sets))
    device = pick_device(device)
    common = dict(seed=seed, device=device, progress=not quiet)
    checkpoint = output + ".ckpt"
    target = th
    if sampler in ("hmc", "langevin") and model_path:
        target = energy_potential(need_model(model_path), th, device)   # MCMC on a learned energy
    if sampler == "hmc":
        from .runtime.hmc import run_hmc
        opts = dict(n=n, chains=chains, dtype=torch_dtype(dtype), integrator=integrator, step_size=step,
                    trajectory_length=trajectory_length, target_accept=target_accept, every=every or 1, checkpoint=checkpoint, resume=resume, **common)
        run = run_hmc(target, **({"warmup": warmup} if warmup is not None else {}), **opts)
    elif sampler == "langevin":
        from .runtime.langevin import run_langevin
        opts = dict(n=n, chains=chains, dtype=torch_dtype(dtype), step=step, scheme=scheme,
                    checkpoint=checkpoint, resume=resume, **common)
        if every:
            opts["every"] = every
        if warmup is not None:
            opts["warmup"] = warmup
        if th.is_complex:
            opts.update(noise_imag=noise_imag, adaptive=not no_adaptive)
        elif noise_imag or no_adaptive:
            raise UserError("--noise-imag and --no-adaptive apply to complex Langevin; this action is real")
        else:
            opts["symmetrize"] = not no_symmetry_moves
        run = run_langevin(target, **opts)
    elif sampler == "flow":
        from .runtime.neural_mcmc import sample_flow
        from .runtime.models.variational import load_model
        model_payload(need_model(model_path), ("flow", "van"))
        model = load_model(model_path, device=device)
        check_model_theory(model_path, getattr(model, "meta", {}), th)
        run = sample_flow(th, model, n, metropolis=not no_metropolis, **common)
    else:
        from .runtime.models.diffusion import load_model, sample_diffusion
        model = load_diffusion(need_model(model_path), th, device)
        run = sample_diffusion(model, n, solver=solver, **({"steps": steps} if steps else {}), **common)
    write(th, target, run, sampler, seed, output)
    Path(checkpoint).unlink(missing_ok=True)      # the run finished: nothing left to resume
    click.echo(f"wrote {output}: {tuple(run.configs.shape[:2])} (chains, configurations)")


def need_model(path):
    if not path:
        raise UserError("this sampler needs a trained model: --model MODEL.pt (see 'theoryc train')")
    if not Path(path).is_file():
        raise UserError(f"no such model file: {path}")
    return path


def check_model_theory(path, meta: dict, th):
    name = meta.get("theory_name")
    if name and name != th.name:
        raise UserError(f"{path} was trained for theory '{name}', not '{th.name}'")


def model_payload(path, kinds) -> dict:
    """The contents of a model file (weights only: nothing in it is run), checked to be one of
    `kinds`; anything else is a clear error, not a traceback from the unpickler."""
    import torch
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:    # the weights-only unpickler raises many types for a foreign file
        raise UserError(f"{path} is not a model file theoryc wrote: it does not load as plain "
                        "tensors and numbers (nothing in a model file is ever run)") from None
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind not in kinds:
        raise UserError(f"{path} holds a {kind or 'foreign'} model; this needs a {' or '.join(kinds)} model")
    return payload


def read_ensemble_file(path, configs: bool = True):
    from .runtime.ensemble import read_ensemble
    try:
        return read_ensemble(path, configs=configs)
    except (OSError, KeyError) as err:
        raise UserError(f"{path} is not an ensemble file theoryc wrote ({err})") from None


def load_diffusion(path, th, device):
    from .runtime.models.diffusion import load_model
    payload_schedule = model_payload(path, ("diffusion",)).get("schedule_name")
    schedule = th.schedules.get(payload_schedule)
    model = load_model(path, schedule=schedule, device=device)
    check_model_theory(path, getattr(model, "meta", {}), th)
    return model


def energy_potential(path, th, device):
    """An energy-based diffusion model's learned energy at small t, as a theory MCMC can sample
    (the seed's "MCMC-EBM")."""
    from .runtime.models.diffusion import EnergyPotential
    model = load_diffusion(path, th, device)
    if model.flavour != "energy":
        raise UserError(f"{path} is a score-based model; MCMC needs an energy: train with --flavour energy")
    return EnergyPotential(model, th)


def write(th, target, run, sampler, seed, output):
    """Measure the theory's observables on the run (through `target`, which may be a learned
    potential over other variables) and write the ensemble with the theory it belongs to."""
    from .runtime.ensemble import write_ensemble
    from .runtime.measure import measure_observables
    observables = measure_observables(target, run.configs)
    attrs = {"theory_name": th.name, "theory_source": th.source, "params": th.params,
             "sampler": sampler if target is th else f"{sampler} on the energy of a diffusion model",
             "seed": seed}
    write_ensemble(output, run, observables, attrs)


# ------------------------------------------------------------------------------------ train
@main.command()
@click.argument("theory")
@click.option("--model", "kind", type=click.Choice(["flow", "diffusion"]), required=True)
@click.option("--schedule", default=None, help="Diffusion: the schedule of the theory to use (default: the first).")
@click.option("--flavour", type=click.Choice(["score", "energy"]), default="score", show_default=True)
@click.option("--data", type=click.Path(dir_okay=False), help="Ensemble to train on (diffusion; flow: forward KL).")
@click.option("--steps", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@set_option
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--t-power", type=float, default=None,
              help="Diffusion: draw t = eps + (1 - eps) u^p; p > 1 weights small t (helps an EBM's energy).")
@click.option("--layers", type=click.IntRange(1), default=None, help="Flow: coupling layers.")
@click.option("--hidden", type=click.IntRange(1), default=None, help="Flow: hidden channels.")
@click.option("--anneal", type=float, default=None, help="VAN: fraction of training that ramps beta up.")
@click.option("--resume", is_flag=True, help="Continue from MODEL.pt.ckpt.")
@click.option("--quiet", is_flag=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@friendly
def train(theory, kind, schedule, flavour, data, steps, batch_size, lr, seed, sets, device, dtype, t_power, layers,
          hidden, anneal, resume, quiet, output):
    """Train a flow (reverse KL against the action) or a diffusion model (on an ensemble)."""
    from . import api
    th = api.load(theory, **parse_sets(sets))
    device = pick_device(device)
    opts = dict(steps=steps, seed=seed, device=device, dtype=torch_dtype(dtype), checkpoint=output + ".ckpt",
                resume=resume, progress=not quiet)
    if batch_size:
        opts["batch_size"] = batch_size
    if lr:
        opts["lr"] = lr
    if kind == "flow":
        from .runtime.models.variational import save_model, train_flow
        configs = read_configs(data) if data else None
        arch = {k: v for k, v in (("n_layers", layers), ("hidden", hidden), ("anneal", anneal)) if v is not None}
        model = train_flow(th, data=configs, **arch, **opts)
        save_model(model, output, {"theory_name": th.name, "theory_source": th.source, "params": th.params})
    else:
        from .runtime.models.diffusion import save_model, train_diffusion
        if not data:
            raise UserError("a diffusion model learns from data: --data ENSEMBLE.h5 (see 'theoryc sample')")
        if not th.schedules:
            raise UserError(f"theory '{th.name}' declares no schedule; add 'schedule ve {{ ... }}'")
        name = schedule or next(iter(th.schedules))
        if name not in th.schedules:
            raise UserError(f"no schedule '{name}' in theory '{th.name}'; it has: {', '.join(th.schedules)}")
        extra = {"t_power": t_power} if t_power else {}
        model = train_diffusion(th, read_configs(data), schedule=th.schedules[name], flavour=flavour,
                                **extra, **opts)
        save_model(model, output, theory=th)
    Path(output + ".ckpt").unlink(missing_ok=True)
    click.echo(f"wrote {output}")


def read_configs(path):
    import torch
    return torch.as_tensor(read_ensemble_file(path).configs)


# ---------------------------------------------------------------------------------- measure
@main.command()
@click.argument("ensemble", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--cumulants", type=click.IntRange(2, 12), default=None, help="Add cumulants kappa_2..kappa_N.")
@friendly
def measure(ensemble, as_json, cumulants):
    """Means, errors and autocorrelation times of observables; estimates; cumulants."""
    from .runtime.stats.summary import format_summary, summarize
    from .runtime.measure import estimate_input_series
    ens = read_ensemble_file(ensemble, configs=False)
    th = theory_of(ens)
    inputs = estimate_input_series(th, ens.observables) if th and th.estimates else None
    summary = summarize(ens, th.estimates if th else None, inputs, cumulants)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


def theory_of(ens):
    """Recompile the theory an ensemble records (for its estimates)."""
    from . import api
    source = ens.attrs.get("theory_source")
    if not source:
        return None
    params = {k: complex(*v) if isinstance(v, list) else v for k, v in ens.params.items()}
    return api.load_text(source, f"{ens.attrs.get('theory_name', 'theory')}.theory", **params)


# ------------------------------------------------------------------------------------- plot
@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@friendly
def plot(inputs, output):
    """Plot an ensemble (histories, histograms, autocorrelations; CL: P(x, y) and drift) or a model."""
    for path in inputs:
        target = output if len(inputs) == 1 else str(Path(output).with_stem(f"{Path(output).stem}_{Path(path).stem}"))
        if path.endswith(".h5"):
            plot_ensemble_file(path, target)
        else:
            plot_model_file(path, target)
        click.echo(f"wrote {target}")


def plot_ensemble_file(path, target):
    from .runtime.figures.ensemble import plot_ensemble
    ens = read_ensemble_file(path)
    th = theory_of(ens)
    plot_ensemble(ens, target, drift=th.drift if th is not None else None)


def plot_model_file(path, target):
    kind = model_payload(path, ("diffusion", "flow", "van"))["kind"]
    if kind == "diffusion":
        from .runtime.models.diffusion import load_model
        from .runtime.figures.diffusion import plot_model
        plot_model(load_model(path), target)
    else:
        from .runtime.models.variational import load_model
        from .runtime.figures.training import plot_training
        plot_training(load_model(path), target)


if __name__ == "__main__":
    main()
