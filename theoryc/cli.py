"""The `theoryc` command line: compile, sample, train, measure, plot.

Heavy imports (torch, SymPy, the runtimes) happen inside the commands that need them, so that
`theoryc compile` of a cached theory stays fast. User mistakes end in one clear message and exit
code 1, never a traceback.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import sys
from functools import wraps
from pathlib import Path

import click

from .dsl.errors import TheoryError, printable

SAMPLERS = ("hmc", "langevin", "metropolis", "flow", "diffusion")


class UserError(Exception):
    """A mistake in how a command was called, reported without a traceback."""


def friendly(command):
    """Turn every failure into a message on stderr and exit code 1 (SIGINT 130, SIGTERM 143),
    never a traceback (THEORYC_DEBUG=1 re-raises the unexpected ones, for a bug report)."""
    @wraps(command)
    def run(*args, **kwargs):
        from .runtime.io import interrupt
        from_runtime = runtime_errors()
        try:
            with interrupt.handled():
                return command(*args, **kwargs)
        except TheoryError as err:
            click.echo(err.format(), err=True)
        except (UserError, *from_runtime) as err:
            click.echo(printable(f"Error: {err}", newlines=True), err=True)
        except FileNotFoundError as err:
            click.echo(printable(f"Error: no such file: {err.filename or err}", newlines=True), err=True)
        except (OSError, ValueError) as err:
            click.echo(printable(f"Error: {err}", newlines=True), err=True)
        except KeyboardInterrupt as err:
            click.echo(printable(interrupted_message(err, kwargs.get("output")), newlines=True),
                       err=True)
            sys.exit(143 if getattr(err, "signal_name", "") == "SIGTERM" else 130)
        except RecursionError:
            click.echo("Error: an input is nested too deeply to read (a stored theory source or "
                       "a file attribute?); check the files given", err=True)
        except MemoryError:
            click.echo("Error: out of memory (a lattice, a batch or a file's content too large "
                       "for this machine); use smaller sizes", err=True)
        except Exception as err:       # a bug: still one line, and how to report it
            if os.environ.get("THEORYC_DEBUG"):
                raise
            first = " ".join(str(err).splitlines()[:1])[:300]
            click.echo(printable(f"Error: internal error ({type(err).__name__}: {first}); please "
                                 "report it with the command (THEORYC_DEBUG=1 shows the traceback)",
                                 newlines=True), err=True)
        sys.exit(1)
    return run


def interrupted_message(err, output=None) -> str:
    """What a stopped run says: the signal, and how to continue when it left a checkpoint (its
    own, or OUTPUT.ckpt for an interrupt raised where the run could not write one)."""
    name = getattr(err, "signal_name", "SIGINT")
    checkpoint = getattr(err, "checkpoint", None) or (f"{output}.ckpt" if output else None)
    if checkpoint is None or not Path(checkpoint).exists():
        return f"Interrupted ({name}); nothing was saved to resume from."
    again = " ".join(shlex.quote(a) for a in ["theoryc", *sys.argv[1:]] if a != "--resume")
    out = str(checkpoint)[:-len(".ckpt")] if str(checkpoint).endswith(".ckpt") else ""
    partial = (f"; measure it so far with: theoryc measure --partial {shlex.quote(out)}"
               if out and not out.endswith(".pt") else "")
    return (f"Interrupted ({name}); the run so far is checkpointed in {checkpoint}. Continue it "
            f"with: {again} --resume{partial}")


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


def pick_device(name: str) -> str:
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here")
    return name


force_option = click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")


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
@click.option("--trajectory-jitter", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="HMC: each trajectory's length drawn uniformly in LENGTH * [1 - J, 1 + J] "
                   "(breaks resonances of a fixed length; 0 = fixed).")
@click.option("--fourier-acceleration", is_flag=True,
              help="HMC: momentum-space mass K(p) + m^2 from the action's quadratic part (real site fields).")
@click.option("--mass2", type=float, default=None,
              help="Fourier acceleration: m^2 (default: lifts min K(p) to 4 sin^2(pi/L)).")
@click.option("--target-accept", type=float, default=0.8, show_default=True,
              help="HMC: acceptance the warm-up tunes the step size to.")
@click.option("--scheme", type=click.Choice(["em", "rk2", "bm", "mala"]), default=None,
              help="Langevin scheme (default: bm, second order, for a real action; rk2 for complex Langevin, which has em and rk2).")
@click.option("--noise-imag", type=float, default=0.0, show_default=True,
              help="Complex Langevin: noise N_y in the imaginary direction (N_x - N_y = 1).")
@click.option("--no-adaptive", is_flag=True, help="Complex Langevin: fixed step (no drift-bounding adaptive step).")
@click.option("--no-symmetry-moves", is_flag=True, help="Do not apply the declared symmetries as global moves.")
@click.option("--compile", "compile_steps", is_flag=True,
              help="HMC, Langevin (em, bm): run the theory's fused steps under torch.compile (compiles first).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), help="Model file (flow, diffusion).")
@click.option("--solver", type=click.Choice(["em", "pc", "ode"]), default="em", show_default=True,
              help="Diffusion sampler.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Diffusion integration steps.")
@click.option("--no-metropolis", is_flag=True, help="Flow: keep raw proposals with log-weights instead of an exact chain.")
@click.option("--exact", is_flag=True,
              help="Diffusion: probability-flow ODE samples with their log q, stored as log-weights -S - log q.")
@click.option("--probes", type=click.IntRange(0), default=None,
              help="--exact: Rademacher probes for the divergence (0: exact; default exact up to 16 features, else 1).")
@click.option("--dilution", type=click.IntRange(1), default=None,
              help="--exact: split each probe by site mod K in every direction (default 2; 1: plain Hutchinson).")
@click.option("--independent-metropolis", is_flag=True,
              help="--exact: an independent-Metropolis chain over the ODE samples instead of log-weights.")
@click.option("--condition", "condition", multiple=True, metavar="VALUE|FILE",
              help="Conditional diffusion: each condition's value (a,b,... or a .npy file), in training order.")
@click.option("--save-every", type=click.IntRange(1), default=1, show_default=True,
              help="Chain samplers: store every K-th configuration (observables of all).")
@click.option("--no-configs", is_flag=True, help="Chain samplers: store observables and statistics only.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT.ckpt (same theory, parameters, settings).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@force_option
@friendly
def sample(theory, sampler, n, chains, warmup, seed, sets, device, dtype, every, integrator, step,
           trajectory_length, trajectory_jitter, fourier_acceleration, mass2, target_accept, scheme, noise_imag, no_adaptive, no_symmetry_moves, compile_steps, model_path, solver,
           steps, no_metropolis, exact, probes, dilution, independent_metropolis, condition, save_every, no_configs,
           resume, quiet, output, force):
    """Sample THEORY and write an ensemble file."""
    from . import api
    check_output(output, force, resume=resume)
    check_settings(step=step, target_accept=target_accept, mass2=mass2, noise_imag=noise_imag,
                   trajectory_length=trajectory_length if sampler == "hmc" else None)
    th = api.load(theory, **parse_sets(sets))
    device = pick_device(device)
    common = dict(seed=seed, device=device, progress=not quiet)
    if sampler in api.CHAIN_SAMPLERS:
        options = chain_options(sampler, th, warmup=warmup, dtype=dtype, every=every, step=step,
                                integrator=integrator, trajectory_length=trajectory_length,
                                trajectory_jitter=trajectory_jitter,
                                fourier_acceleration=fourier_acceleration, mass2=mass2,
                                target_accept=target_accept, scheme=scheme, noise_imag=noise_imag,
                                no_adaptive=no_adaptive, no_symmetry_moves=no_symmetry_moves)
        if compile_steps:
            options["compile"] = True
        run = api.sample(th, sampler, n=n, chains=chains, output=output, resume=resume,
                         model=need_model(model_path) if model_path else None,
                         save_every=save_every, configs=not no_configs, **common, **options)
    else:   # a trained model's independent proposals (flow: through an exact Metropolis chain)
        if compile_steps:
            raise UserError("--compile applies to --sampler hmc and langevin")
        options = model_options(sampler, solver=solver, steps=steps, no_metropolis=no_metropolis,
                                exact=exact, probes=probes, dilution=dilution,
                                independent_metropolis=independent_metropolis, dtype=dtype)
        if condition:
            options["condition"] = list(condition)
        run = api.sample(th, sampler, n=n, chains=chains, output=output,
                         model=need_model(model_path), **common, **options)
    if run is None:       # a rank other than 0 of a torchrun job: rank 0 wrote and reports
        return
    if not getattr(run, "already_complete", False):
        click.echo(f"wrote {output}: {run.chains_and_n} (chains, configurations)")
    if "compile_seconds" in (run.timing or {}):      # --compile: what torch.compile took, once
        click.echo(f"compiled the fused steps in {run.timing['compile_seconds']:.1f} s")
    print_warnings(output, th)


def print_warnings(path, theory) -> None:
    """After a run: the warnings `measure` would print (runaway fields, thermalisation, ...),
    from the file's series alone (no second measurement of the run)."""
    from . import api
    from .runtime.stats.summary import declaration_order, run_warnings
    try:
        warnings = run_warnings(declaration_order(api.open_ensemble(path), theory))
    except Exception:                   # the run is written; a figure that cannot be
        return                          # summarised is measure's to report
    for w in warnings:
        click.echo(printable(f"warning: {w}", newlines=True), err=True)


def check_output(path, force: bool, resume: bool = False) -> None:
    """An existing output is never replaced without --force (--resume continues its run)."""
    if path and Path(path).exists() and not force and not resume:
        raise UserError(f"{path} exists; use --force to replace it, or choose another -o")
    if path and Path(path).is_dir():
        raise UserError(f"{path} is a folder; -o names the file to write")


def check_settings(**values) -> None:
    """Ranges that make sense, before anything runs (a step of 1e-12 would never end)."""
    ranges = {"step": (0, 10, "a step size in (0, 10]"),
              "target_accept": (0, 1, "an acceptance strictly between 0 and 1"),
              "trajectory_length": (0, 1e3, "a trajectory length in (0, 1000]"),
              "mass2": (0, 1e6, "a mass squared in [0, 1e6]"),
              "noise_imag": (0, 1e3, "a noise N_y in [0, 1000]")}
    for name, value in values.items():
        if value is None:
            continue
        lo, hi, what = ranges[name]
        flag = "--" + name.replace("_", "-")
        ok = math.isfinite(value) and (lo <= value if name in ("mass2", "noise_imag") else lo < value)
        ok = ok and (value < hi if name == "target_accept" else value <= hi)
        if not ok:
            raise UserError(f"{flag} {value:g}: expected {what}")
    step, length = values.get("step"), values.get("trajectory_length")
    if step is not None and length is not None and length / step > 1e5:   # HMC
        raise UserError(f"--step {step:g} makes {length / step:.3g} leapfrog steps per trajectory "
                        f"of length {length:g}; use a step of at least {length / 1e5:g}")


def model_options(sampler, *, solver, steps, no_metropolis, exact, probes, dilution,
                  independent_metropolis, dtype) -> dict:
    """The options of `theoryc sample` that apply to a flow or a diffusion model."""
    if (probes is not None or dilution is not None or independent_metropolis) and not exact:
        raise UserError("--probes, --dilution and --independent-metropolis apply to --sampler "
                        "diffusion --exact")
    if exact and sampler != "diffusion":
        raise UserError("--exact applies to --sampler diffusion (a flow is exact already)")
    if exact and solver != "em":
        raise UserError("--exact integrates the probability-flow ODE itself; drop --solver")
    if sampler == "flow":
        return {"metropolis": not no_metropolis}
    options = ({"exact": True, "metropolis": independent_metropolis, "dtype": dtype} if exact
               else {"solver": solver})
    if probes is not None:
        options["probes"] = probes
    if dilution is not None:
        options["dilution"] = dilution
    if steps:
        options["steps"] = steps
    return options


def chain_options(sampler, th, *, warmup, dtype, every, step, integrator, trajectory_length,
                  trajectory_jitter, fourier_acceleration, mass2, target_accept, scheme, noise_imag, no_adaptive,
                  no_symmetry_moves) -> dict:
    """The options of `theoryc sample` that apply to a chain sampler, as api.sample takes them."""
    given = {"warmup": warmup, "every": every, "step": step}
    options = {k: v for k, v in given.items() if v is not None}
    options["dtype"] = dtype
    if sampler == "hmc":
        options.update(integrator=integrator, trajectory_length=trajectory_length,
                       trajectory_jitter=trajectory_jitter, target_accept=target_accept,
                       symmetrize=not no_symmetry_moves)
        if fourier_acceleration:
            options.update(fourier_acceleration=True, mass2=mass2)
    elif fourier_acceleration or mass2 is not None:
        raise UserError("--fourier-acceleration and --mass2 apply to --sampler hmc")
    if sampler == "langevin":
        options["scheme"] = scheme
        if th.is_complex:
            options.update(noise_imag=noise_imag, adaptive=not no_adaptive)
        elif noise_imag or no_adaptive:
            raise UserError("--noise-imag and --no-adaptive apply to complex Langevin; this action is real")
        else:
            options["symmetrize"] = not no_symmetry_moves
    elif sampler != "hmc":
        options["symmetrize"] = not no_symmetry_moves
    return options


def need_model(path):
    if not path:
        raise UserError("this sampler needs a trained model: --model MODEL.pt (see 'theoryc train')")
    if not Path(path).is_file():
        raise UserError(f"no such model file: {path}")
    return path


def read_ensemble_file(path, configs: bool = True):
    from .runtime.io.ensemble import read_ensemble
    try:
        return read_ensemble(path, configs=configs)
    except (OSError, KeyError) as err:
        raise UserError(f"{path} is not an ensemble file theoryc wrote ({err})") from None


# ------------------------------------------------------------------------------------ train
@main.command()
@click.argument("theory")
@click.option("--model", "kind", type=click.Choice(["flow", "diffusion"]), required=True)
@click.option("--schedule", default=None, help="Diffusion: the schedule of the theory to use (default: the first).")
@click.option("--flavour", type=click.Choice(["score", "energy"]), default="score", show_default=True)
@click.option("--data", type=click.Path(dir_okay=False), help="Ensemble to train on (diffusion; flow: forward KL).")
@click.option("--x", "x_name", default=None, metavar="DATASET",
              help="Diffusion on external data: the dataset of the HDF5 file --data to learn.")
@click.option("--condition", "conditions", multiple=True, metavar="DATASET",
              help="With --x: condition on this dataset of --data (scalars per event, or arrays on the lattice; repeatable).")
@click.option("--steps", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@set_option
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--t-power", type=float, default=None,
              help="Diffusion: draw t = eps + (1 - eps) u^p; p > 1 weights small t (helps an EBM's energy).")
@click.option("--two-point", is_flag=True,
              help="Diffusion on a lattice: start from the Gaussian of the data's power spectrum (the zero mode's variance right).")
@click.option("--zero-mode-head", is_flag=True,
              help="Diffusion on a lattice: a network pathway that learns the score of the field's mean directly.")
@click.option("--layers", type=click.IntRange(1), default=None, help="Flow: coupling layers.")
@click.option("--hidden", type=click.IntRange(1), default=None, help="Flow: hidden channels.")
@click.option("--anneal", type=float, default=None, help="VAN: fraction of training that ramps beta up.")
@click.option("--autoregressive", is_flag=True, help="Angle fields: a von Mises autoregressive network instead of a flow.")
@click.option("--temper", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Flow: train q towards p^T (T < 1: a broader q, for independent Metropolis).")
@click.option("--lr-decay", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Flow: cosine-decay the learning rate to this fraction of --lr.")
@click.option("--flow", "family", type=click.Choice(["realnvp", "fourier"]), default=None,
              help="Flow family: realnvp (default) or fourier (first layer: the action's exact free part).")
@click.option("--checkpoint-every", type=click.IntRange(1), default=None,
              help="Checkpoint to MODEL.pt.ckpt every K steps (default 200 flow, 500 diffusion).")
@click.option("--resume", is_flag=True, help="Continue from MODEL.pt.ckpt (made with the same settings).")
@click.option("--quiet", is_flag=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@force_option
@friendly
def train(theory, kind, schedule, flavour, data, x_name, conditions, steps, batch_size, lr, seed, sets, device,
          dtype, t_power, two_point, zero_mode_head, layers, hidden, anneal, autoregressive, temper, lr_decay, family, checkpoint_every,
          resume, quiet, output, force):
    """Train a flow (reverse KL against the action) or a diffusion model (on an ensemble)."""
    from . import api
    check_output(output, force, resume=resume)
    if lr is not None and not (math.isfinite(lr) and 0 < lr <= 1):
        raise UserError(f"--lr {lr:g}: expected a learning rate in (0, 1]")
    th = api.load(theory, **parse_sets(sets))
    given = {"batch_size": batch_size, "lr": lr, "checkpoint_every": checkpoint_every}
    if kind == "flow":
        given.update(n_layers=layers, hidden=hidden, anneal=anneal,
                     autoregressive=autoregressive or None, flow=family, temper=temper,
                     lr_final_fraction=lr_decay)
    elif family:
        raise UserError("--flow chooses a flow family; it needs --model flow")
    else:
        given.update(schedule=schedule, flavour=flavour, t_power=t_power, x=x_name,
                     conditions=conditions or None, two_point=two_point or None,
                     zero_mode_head=zero_mode_head or None)
    if (x_name or conditions) and kind != "diffusion":
        raise UserError("--x and --condition train a conditional diffusion model: --model diffusion")
    options = {k: v for k, v in given.items() if v is not None}
    trained = api.train(th, kind, data=data, output=output, resume=resume, steps=steps,
                        seed=seed, device=pick_device(device), dtype=dtype, progress=not quiet,
                        **options)
    if trained.path is not None:      # None on the ranks of a torchrun job other than 0
        click.echo(f"wrote {output}")


# ---------------------------------------------------------------------------------- measure
theory_option = click.option("--theory", "other", default=None, metavar="THEORY",
                             help="Evaluate this theory's observables and estimates on the stored "
                                  "configurations (same fields and lattice; it takes the ensemble's "
                                  "values of the parameters it shares, --set overrides them).")


@main.command()
@click.argument("ensemble", type=click.Path(dir_okay=False))
@theory_option
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (NaN and inf as null).")
@click.option("--cumulants", type=click.IntRange(2, 12), default=None, help="Add cumulants kappa_2..kappa_N.")
@click.option("--of", "of", multiple=True, metavar="NAME",
              help="--cumulants of these observables only (repeatable; default all).")
@click.option("--discard", type=click.IntRange(0), default=0, show_default=True,
              help="Drop each chain's first N configurations (thermalisation).")
@click.option("--bin", "bin_size", type=click.IntRange(1), default=1, show_default=True,
              help="Average K consecutive configurations before the error analysis.")
@click.option("--partial", is_flag=True,
              help="Measure what an interrupted run has so far (ENSEMBLE or ENSEMBLE.ckpt).")
@friendly
def measure(ensemble, other, sets, as_json, cumulants, of, discard, bin_size, partial):
    """Means, errors and autocorrelation times of observables; estimates; cumulants."""
    from . import api
    if of and not cumulants:
        raise UserError("--of chooses the observables of --cumulants N; give --cumulants too")
    partial = partial or ensemble.endswith(".ckpt")
    if not partial and not Path(ensemble).is_file():
        hint = (f"; {ensemble}.ckpt is an interrupted run: theoryc measure --partial {ensemble}"
                if Path(f"{ensemble}.ckpt").exists() else "")
        raise UserError(f"no such ensemble file: {ensemble}{hint}")
    result = api.measure(ensemble, other, cumulants, params=theory_sets(other, sets),
                         discard=discard, bin_size=bin_size, of=of or None, partial=partial)
    click.echo(json.dumps(json_safe(result.summary), indent=2, allow_nan=False) if as_json
               else result.table())


def json_safe(value):
    """NaN and infinities (not JSON) as null."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def theory_sets(other, sets) -> dict:
    if sets and not other:
        raise UserError("--set applies to the theory given with --theory")
    return parse_sets(sets)


# ---------------------------------------------------------------------------------- observe
@main.command()
@click.argument("ensemble", type=click.Path(exists=True, dir_okay=False))
@click.option("--theory", "other", required=True, metavar="THEORY",
              help="The theory whose observables to store (same fields and lattice as the ensemble's).")
@set_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@force_option
@friendly
def observe(ensemble, other, sets, output, force):
    """Write a copy of ENSEMBLE (configurations, stats) with another theory's observables."""
    from . import api
    check_output(output, force)
    chains, n = api.observe(ensemble, other, output, params=parse_sets(sets))
    click.echo(f"wrote {output}: {(chains, n)} (chains, configurations)")


# ------------------------------------------------------------------------------------- plot
@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The figure; with several inputs a pattern with {name} (each input's name "
                   "without its suffix), e.g. -o 'fig_{name}.png'.")
@force_option
@friendly
def plot(inputs, output, force):
    """Plot an ensemble (histories, histograms, autocorrelations; CL: P(x, y) and drift) or a model."""
    targets = plot_targets(inputs, output)
    for target in targets.values():
        check_output(target, force)
    for path, target in targets.items():
        if path.endswith(".h5"):
            plot_ensemble_file(path, target)
        else:
            plot_model_file(path, target)
        click.echo(f"wrote {target}")


def plot_targets(inputs, output) -> dict:
    """input -> the figure it is drawn to: -o itself for one input; for several, -o must be a
    pattern with {name}, and no two inputs may land on one file."""
    inputs = list(dict.fromkeys(inputs))
    if len(inputs) == 1 and "{name}" not in output:
        return {inputs[0]: output}
    if "{name}" not in output:
        raise UserError(f"{len(inputs)} inputs make {len(inputs)} figures: give -o a pattern with "
                        "{name}, e.g. -o 'fig_{name}.png'")
    targets = {path: output.replace("{name}", Path(path).stem) for path in inputs}
    clash = [t for t in targets.values() if list(targets.values()).count(t) > 1]
    if clash:
        raise UserError(f"two inputs would both be drawn to {clash[0]} (same name in different "
                        "folders); plot them one by one")
    return targets


def plot_ensemble_file(path, target):
    """Observables are read without the configurations; those are read only for what is drawn
    from them (a 0-d complex ensemble's P(x, y), an ensemble that stores no observables)."""
    from . import api
    from .runtime.figures.ensemble import plot_ensemble
    ens = api.open_ensemble(path)
    th = api.ensemble_theory(ens)
    if not ens.observables or (th is not None and th.is_complex and th.volume * th.n_fields == 1):
        ens = api.open_ensemble(path, configs=True)
    plot_ensemble(ens, target, drift=th.drift if th is not None else None)


def plot_model_file(path, target):
    from .runtime.models import load_model
    model = load_model(path)
    if model.kind == "diffusion":
        from .runtime.figures.diffusion import plot_model
        plot_model(model, target)
    else:
        from .runtime.figures.training import plot_training
        plot_training(model, target)


if __name__ == "__main__":
    main()
