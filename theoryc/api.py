"""The Python API: find a theory, compile it (or take it from the cache), and load it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .dsl.errors import TheoryError


@dataclass
class CompileResult:
    path: Path          # the generated module
    key: str
    cached: bool
    code: str           # its text, verified (compiler/verify.py)


def shipped_theories() -> list[str]:
    folder = resources.files("theoryc.theories")
    return sorted(p.name[:-len(".theory")] for p in folder.iterdir() if p.name.endswith(".theory"))


MAX_FILE_BYTES = 1_000_000


def read_theory(name_or_path: str | Path) -> tuple[bytes, str]:
    """The bytes of a .theory file given as a path, or the name of a shipped theory (an
    identifier: a name such as '../x' never reaches outside the shipped folder)."""
    path = Path(name_or_path)
    if path.is_file():
        if path.stat().st_size > MAX_FILE_BYTES:
            raise TheoryError(None, f"the file is larger than {MAX_FILE_BYTES // 1000} kB",
                              "a .theory file is a short text; is this the right file?",
                              kind="Error").located(str(path), "")
        return path.read_bytes(), str(path)
    if str(name_or_path).isidentifier():
        shipped = resources.files("theoryc.theories") / f"{name_or_path}.theory"
        if shipped.is_file():
            return shipped.read_bytes(), f"{name_or_path}.theory"
    from .dsl.errors import did_you_mean
    names = shipped_theories()
    hint = did_you_mean(str(name_or_path), names) or f"shipped theories: {', '.join(names)}."
    raise TheoryError(None, f"no file '{name_or_path}' and no shipped theory of that name", hint,
                      kind="Error")


def compile(name_or_path, overrides: dict | None = None) -> CompileResult:
    """Compile a theory to its generated module, reusing the cached one when nothing changed.
    Does not import torch or SymPy when the module is cached."""
    data, filename = read_theory(name_or_path)
    return compile_bytes(data, filename, overrides)


def compile_bytes(data: bytes, filename: str, overrides: dict | None = None) -> CompileResult:
    from .compiler import cache
    if len(data) > MAX_FILE_BYTES:          # also a theory_source stored in a foreign file
        raise TheoryError(None, f"the theory text is larger than {MAX_FILE_BYTES // 1000} kB",
                          "a .theory file is a short text; is this the right file?",
                          kind="Error").located(filename, "")
    overrides = as_text(overrides)
    key = cache.cache_key(data.decode("utf-8", errors="replace"), overrides)
    code = cache.fetch(key)
    if code is not None:
        return CompileResult(cache.cached_path(key), key, True, code)
    from .compiler.pipeline import compile_text
    compiled = compile_text(data, filename, overrides)
    return CompileResult(cache.store(key, compiled.code), key, False, compiled.code)


def emit(name_or_path, overrides: dict | None = None, what: str = "python") -> str:
    """The generated Python module, or the derived SymPy expressions, as text."""
    from .compiler.pipeline import compile_text
    data, filename = read_theory(name_or_path)
    overrides = as_text(overrides)
    compiled = compile_text(data, filename, overrides)
    return compiled.code if what == "python" else compiled.ir.describe()


def as_text(overrides: dict | None) -> dict[str, str]:
    return {k: format_value(v) for k, v in (overrides or {}).items()}


def format_value(v) -> str:
    """A --set value as text of the language: numbers and complex numbers (1+2j -> '1.0 + 2.0i')."""
    if isinstance(v, bool):
        raise TheoryError(None, f"a parameter value must be a number, not {v!r}", kind="Error")
    if isinstance(v, complex):
        return f"({v.real!r} + {v.imag!r}i)"
    if isinstance(v, (int, float)):
        return repr(v)
    return str(v).strip()


def load(name_or_path, **params) -> "CompiledTheory":
    """Compile (or take from the cache) and load a theory: `theoryc.load('phi4_2d', L=8)`."""
    data, filename = read_theory(name_or_path)
    return load_bytes(data, filename, **params)


def load_text(text: str, filename: str = "<text>", **params) -> "CompiledTheory":
    """Load a theory from its source text (an ensemble or model file records the text it used)."""
    return load_bytes(text.encode("utf-8"), filename, **params)


def load_bytes(data: bytes, filename: str, **params) -> "CompiledTheory":
    from .compiler.cache import import_code
    result = compile_bytes(data, filename, params)
    return CompiledTheory(import_code(result.key, result.code, result.path), data.decode("utf-8"),
                          result.path)


class CompiledTheory:
    """A compiled theory, as the runtime sees it (runtime/theory.py)."""

    def __init__(self, module, source: str, path: Path):
        from .runtime.theory import Estimate, Schedule
        m = self.module = module
        self.source, self.path = source, path
        self.name, self.lattice = m.NAME, tuple(m.LATTICE)
        # What the runtime sees as fields are the components of a configuration: a link field A
        # of a d-dimensional lattice is d of them ('A:0', ...), each an angle.
        self.fields = tuple(zip(m.FIELDS, m.FIELD_KINDS))
        self.field_names, self.field_kinds = tuple(m.CHANNELS), tuple(m.CHANNEL_KINDS)
        self.gauge = tuple(getattr(m, "GAUGE", ()))
        self.is_complex, self.params = m.IS_COMPLEX, dict(m.PARAMS)
        self.observable_names = tuple(m.OBSERVABLES)
        # vector observables C(t): name -> (lo, hi) of their index; vector estimates m_eff(t):
        # name -> the names of their component estimates 'm_eff(0)', ... (in `estimates`)
        self.observable_indices = dict(getattr(m, "OBSERVABLE_INDICES", {}))
        self.estimate_vectors = {k: tuple(v) for k, v in getattr(m, "ESTIMATE_VECTORS", {}).items()}
        self.action, self.force, self.drift = m.action, m.force, m.drift
        self.observables, self.estimate_inputs = m.observables, m.estimate_inputs
        self.estimates = {n: Estimate(n, tuple(inputs), fn) for n, (inputs, fn) in m.ESTIMATES.items()}
        self.schedules = {n: Schedule(n, *fns) for n, fns in m.SCHEDULES.items()}
        self.symmetries = list(m.SYMMETRIES)
        # spin theories with a local action: single-flip changes of S for local Metropolis
        self.flip_delta = getattr(m, "flip_delta", None)
        self.flip_offsets = tuple(getattr(m, "FLIP_OFFSETS", ()))
        # real site fields with a local action: the stencil of its quadratic part per field
        self.quadratic_stencil = getattr(m, "QUADRATIC_STENCIL", None)
        # a data set's theory: shape and schedules, no action (only diffusion models use it)
        self.data_only = bool(getattr(m, "DATA_ONLY", False))
        # whole sampler steps that --compile hands to torch.compile (compiler/fused.py)
        self.drift_kick = getattr(m, "drift_kick", None)
        self.langevin_step = getattr(m, "langevin_step", None)

    def torch_compiled(self, **options) -> "CompiledTheory":
        """The same theory with action, force and observables wrapped by `torch.compile`
        (fuses the elementwise kernels; pays a compilation on first call per shape)."""
        import copy
        import torch
        other = copy.copy(self)
        for name in ("action", "force", "observables"):
            setattr(other, name, torch.compile(getattr(self.module, name), **options))
        other.drift = lambda z: -other.force(z)
        return other

    @property
    def n_fields(self) -> int:
        return len(self.field_names)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_fields, *self.lattice)

    @property
    def volume(self) -> int:
        return math.prod(self.lattice)

    def __repr__(self):
        lat = " x ".join(map(str, self.lattice)) or "0-d"
        return f"<theory {self.name}: {lat}, fields {', '.join(self.field_names)}, params {self.params}>"


CHAIN_SAMPLERS = ("hmc", "langevin", "metropolis")


def sample(theory, sampler: str = "hmc", *, n: int = 1000, chains: int = 4, output=None,
           resume: bool = False, model=None, save_every: int = 1, configs: bool = True,
           **options):
    """Run a Markov-chain sampler on `theory`, as `theoryc sample` does, and return its run
    (runtime/io/ensemble.py `SamplerRun`): observables as (chains, n) arrays measured block by
    block, stats, summary, settings, timing; configs in memory, or None when streamed to `output`
    (then `path`).

    theory: a loaded theory or a name/path. sampler: "hmc", "langevin" (complex Langevin for a
    complex action) or "metropolis" (spin fields); "flow" or "diffusion" with a trained `model`
    draw from it instead (`sample_model`). output: stream the ensemble to that file,
    checkpointing to OUTPUT.ckpt; resume: continue from it (it must have been made with the same
    settings). model: an energy-based diffusion model (file or loaded) whose learned energy is
    sampled instead of the action (observables still measured on the theory's fields).
    save_every: store every K-th configuration (observables of all); configs=False: store none.
    options: those of run_hmc / run_langevin / run_metropolis (runtime/chains/), e.g. warmup,
    seed, device, dtype ("float32"), step, every, scheme, integrator, progress.
    """
    from .runtime.chains.driver import Output
    from .runtime.errors import SamplerError
    from .runtime.io.ensemble import theory_attrs
    from .runtime.parallel import world
    from .runtime.measure import measure_observables
    th = load(theory) if isinstance(theory, (str, Path)) else theory
    if getattr(th, "data_only", False) and (sampler != "diffusion" or options.get("exact")):
        raise SamplerError(refuse_data_only(th))
    if sampler in MODEL_SAMPLERS:
        if world().spread:
            raise SamplerError(f"sampler {sampler} runs in one process; start it without torchrun")
        if sampler == "flow" and options.get("metropolis", True):
            options.setdefault("chains", chains)     # independent-Metropolis chains, n each
        return sample_model(th, sampler, model, n, output, options)
    run_sampler = chain_sampler(sampler)
    target = th if model is None else energy_target(model, th, options.get("device", "cpu"))
    if sampler == "hmc" and "step" in options:
        options["step_size"] = options.pop("step")
    dtype_option(options)
    takers = [run_sampler]
    if th.is_complex and sampler == "langevin":
        from .runtime.chains.complex_langevin import run_complex_langevin
        takers.append(run_complex_langevin)
    refuse_unknown_options(options, takers, f"sampler {sampler}")
    name = sampler if model is None else f"{sampler} on the energy of a diffusion model"
    attrs = {**theory_attrs(th), "sampler": name, "seed": options.get("seed", 0)}
    out = Output(output, attrs, observe=lambda cfg: measure_observables(target, cfg))
    checkpoint = options.pop("checkpoint", f"{output}.ckpt" if output else None)
    check_memory(th, chains, options.get("dtype"))
    if resume:
        how, found = check_resume(output, checkpoint, th)
        if how == "complete":
            return finished_run(found, output, th)
        resume = found if how == "resume" else False      # the checkpoint, read once
    run = run_sampler(target, n=n, chains=chains, output=out, checkpoint=checkpoint,
                      resume=resume, save_every=save_every, store_configs=configs, **options)
    if run is None:                 # a torchrun rank other than 0: rank 0 wrote the file
        return None
    if output and checkpoint:
        Path(checkpoint).unlink(missing_ok=True)     # finished: nothing left to resume
    run.theory = th                 # what `measure(run)` takes the estimates of
    return run


def note(message: str) -> None:
    """Something the user should know that is not an error (stderr, one line)."""
    import sys
    from .dsl.errors import printable
    print(printable(f"Note: {message}", newlines=True), file=sys.stderr)


def check_resume(output, checkpoint, th) -> tuple[str, object]:
    """--resume: refuse a checkpoint (or a finished output) of another theory or parameters.
    ("complete", the ensemble read back) when the output is finished and there is nothing to
    resume (said, not rerun); ("fresh", None), said, when there is neither; else ("resume", the
    checkpoint read), which the driver takes as it is instead of reading it again."""
    import json
    from .runtime.errors import SamplerError
    from .runtime.io.checkpoint import load_checkpoint
    from .runtime.io.provenance import ensemble_fingerprint, fingerprint, from_text, refuse_mismatch
    if checkpoint is None or not Path(checkpoint).exists():
        if output and Path(output).exists():
            ens = open_ensemble(output)
            refuse_mismatch(output, "was sampled for", ensemble_fingerprint(ens), fingerprint(th),
                            "to sample this theory, drop --resume and add --force")
            note(f"{output} is already complete: nothing to resume (to sample it again, drop "
                 "--resume and add --force)")
            return "complete", ens
        note(f"no checkpoint {checkpoint} to resume: starting from the beginning")
        return "fresh", None
    snap = load_checkpoint(checkpoint)
    try:
        saved = from_text(json.loads(snap.get("attrs", "{}")).get("provenance"))
    except (ValueError, AttributeError):
        raise SamplerError(f"{checkpoint}: a damaged checkpoint (its attributes are not JSON); "
                           "remove it to start again") from None
    refuse_mismatch(checkpoint, "was made for", saved, fingerprint(th),
                    "remove it to start again, or resume with the run's own --set values")
    return "resume", snap


def finished_run(ens, output, th):
    """The run of a finished ensemble file (`ens`, read back from `output`), as `sample`
    returns it (configurations on file)."""
    from .runtime.io.ensemble import SamplerRun
    run = SamplerRun(configs=None, stats=ens.stats, summary=ens.summary, settings=ens.settings,
                     kind=ens.kind, observables=ens.observables or None,
                     timing=ens.attrs.get("timing", {}), path=Path(output))
    run.theory, run.already_complete = th, True
    return run


def check_memory(th, chains: int, dtype) -> None:
    """Refuse a run whose lattice and chains need more memory than is free (the fields, their
    force and momenta and a block of kept configurations: about 16 copies of the chains' fields)."""
    from .runtime.errors import SamplerError
    itemsize = 4 if str(dtype).endswith("float32") else 8
    need = 16 * chains * th.n_fields * th.volume * itemsize * (2 if th.is_complex else 1)
    free = available_memory()
    if free is not None and need > free:
        raise SamplerError(f"{chains} chains of a {' x '.join(map(str, th.lattice))} lattice need "
                           f"about {need / 2**30:.3g} GiB; {free / 2**30:.3g} GiB are free (use a "
                           "smaller lattice or fewer --chains)")


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where it cannot be read)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def chain_sampler(name: str):
    from .runtime.errors import SamplerError
    if name == "hmc":
        from .runtime.chains.hmc import run_hmc
        return run_hmc
    if name == "langevin":
        from .runtime.chains.langevin import run_langevin
        return run_langevin
    if name == "metropolis":
        from .runtime.chains.metropolis import run_metropolis
        return run_metropolis
    raise SamplerError(f"unknown chain sampler {name!r}; choose one of {', '.join(CHAIN_SAMPLERS)}"
                       " (flows and diffusion models: theoryc sample --sampler flow|diffusion)")


def energy_target(model, th, device):
    """An energy-based diffusion model's learned energy at small t, as a theory HMC/Langevin can
    sample (the seed's "MCMC-EBM"); `model` is a model file or a loaded model."""
    from .runtime.errors import SamplerError
    from .runtime.models.diffusion import EnergyPotential
    model = trained_model(model, th, ("diffusion",), device)
    if getattr(model, "flavour", None) != "energy":
        raise SamplerError("a score-based model has no energy to sample: train with --flavour energy")
    return EnergyPotential(model, th)


MODEL_SAMPLERS = ("flow", "diffusion")


def trained_model(model, th, kinds, device, exact: bool = False):
    """A model file (or an already loaded model) of one of `kinds`, trained for theory `th`
    (provenance checked: `check_model_theory`); a diffusion model takes the theory's compiled
    schedule of the name it records."""
    from .runtime.errors import SamplerError
    model_path = model
    if isinstance(model, (str, Path)):
        from .runtime.models import load_model
        if not Path(model).is_file():
            raise SamplerError(f"no such model file: {model}")
        model = load_model(model, kinds=kinds, device=device, schedules=th.schedules)
    elif model is None:
        raise SamplerError("this sampler needs a trained model: --model MODEL.pt (see 'theoryc train')")
    check_model_theory(model, th, path=model_path if isinstance(model_path, (str, Path))
                       else "the model", exact=exact)
    return model


def check_model_theory(model, th, *, path, exact: bool) -> None:
    """Refuse a model of another theory, lattice or source; one trained at other parameter
    values is used only where the result is still exact for this theory (`exact`: independent
    Metropolis or reweighting against this theory's action), and then says so."""
    from .runtime.io.provenance import model_fingerprint, fingerprint, params_mismatch, refuse_mismatch
    meta = getattr(model, "meta", {}) or {}
    if not meta:
        return
    saved, current = model_fingerprint(meta), fingerprint(th)
    refuse_mismatch(path, "was trained for", saved, current,
                    "retrain" if exact else "retrain for these parameters (a diffusion model "
                    "samples only the distribution it learned)", allow_params=exact)
    differs = params_mismatch(saved, current)
    if differs:
        note(f"{path} was trained at other parameters ({'; '.join(differs)}); its proposals "
             "are corrected exactly to this theory's action (see acceptance and ESS)")
        model.meta["params_differ"] = differs


def sample_model(th, sampler, model, n, output, options):
    """`sample` with a trained model: "flow" (a flow or VAN: an exact independent-Metropolis
    chain over its proposals, or with metropolis=False the proposals with log-weights) or
    "diffusion" (n independent configurations from the reverse SDE/ODE; with exact=True the
    probability-flow ODE's samples with log-weights -S - log q, or an independent-Metropolis
    chain over them). options: those of sample_flow (runtime/models/sampling.py) /
    sample_diffusion (runtime/models/diffusion.py) / sample_exact (runtime/models/likelihood.py)."""
    from .runtime.io.ensemble import theory_attrs, write_ensemble
    from .runtime.measure import measure_observables
    exact = bool(options.pop("exact", False)) and sampler == "diffusion"
    conditions = options.pop("condition", None)
    dtype_option(options)
    if sampler == "flow":
        from .runtime.models import FLOW_KINDS as kinds
        from .runtime.models.sampling import sample_flow as draw
    elif exact:     # ODE samples with their log q: log-weights, or independent Metropolis
        from .runtime.models.likelihood import sample_exact as draw
        kinds = ("diffusion",)
    else:
        from .runtime.models.diffusion import sample_diffusion as draw
        kinds = ("diffusion",)
    refuse_unknown_options(options, [draw], f"sampler {sampler}")
    model = trained_model(model, th, kinds, options.get("device", "cpu"),
                          exact=sampler == "flow" or exact)
    draw = conditioned(draw, model, conditions, n, exact)
    if getattr(model, "on_torus", False) and not exact:   # runtime/models/torus_diffusion.py
        from .runtime.models.torus_diffusion import sample_torus_diffusion as draw
    run = draw(th, model, n, **options) if sampler == "flow" or exact else draw(model, n, **options)
    run.observables = measure_observables(th, run.configs)
    if output:
        attrs = {**theory_attrs(th), "sampler": sampler, "seed": options.get("seed", 0),
                 "model_params_differ": model.meta.get("params_differ")}
        write_ensemble(output, run, run.observables, attrs)
        run.path = Path(output)
    run.theory = th
    return run


@dataclass
class Trained:
    """What `train` returns: the model (ready to sample), its kind ('flow', 'van', 'diffusion'),
    the training history, the settings it was trained with, and the model file if written."""
    model: object
    kind: str
    history: dict
    settings: dict
    path: Path | None = None


def train(theory, model: str = "flow", *, data=None, output=None, resume: bool = False,
          **options) -> Trained:
    """Train a flow (reverse KL against the action; a VAN for spin fields) or a diffusion model
    (denoising score matching on `data`) for `theory`, as `theoryc train` does.

    theory: a loaded theory or a name/path; data: an ensemble file or a tensor of configurations
    (diffusion; flow: optional forward-KL term); output: write the model file there (atomically),
    checkpointing to OUTPUT.ckpt on the way; resume: continue from that checkpoint, which must
    have been made with the same settings. options: those of train_flow / train_diffusion
    (runtime/models/variational.py, diffusion.py), e.g. steps, batch_size, lr, seed, device,
    dtype, progress; a flow also flow="fourier" (the Fourier flow, runtime/models/fourier_flow.py;
    default "realnvp"); diffusion also schedule (a name of the theory's; default its first),
    flavour, t_power.
    """
    from .runtime.errors import SamplerError
    from .runtime.models import save_model
    from .runtime.parallel import is_main
    th = load(theory) if isinstance(theory, (str, Path)) else theory
    if model not in ("flow", "diffusion"):
        raise SamplerError(f"unknown model {model!r}; choose 'flow' or 'diffusion'")
    if getattr(th, "data_only", False) and model == "flow":
        raise SamplerError(refuse_data_only(th))
    x_name = options.pop("x", None) if model == "diffusion" else None
    conditions = tuple(options.pop("conditions", None) or ())
    if conditions and not x_name:
        raise SamplerError("conditions are datasets of a data file: give the arrays to learn "
                           "with --x DATASET too")
    configs = None if data is None or x_name else training_data(data, th)
    if model == "flow":
        from .runtime.models.variational import train_flow as fit
        args = {"data": configs}
    elif x_name:     # arrays of any HDF5 file, conditioned on some of its datasets
        from .runtime.models.conditional import train_conditional as fit
        if options.pop("flavour", "score") != "score":
            raise SamplerError("a conditional model is score-based: drop --flavour energy")
        args = external_data(th, data, x_name, conditions)
        args["schedule"] = pick_schedule(th, options.pop("schedule", None))
    else:
        from .runtime.models.diffusion import train_diffusion as fit
        if th.field_kinds and all(k == "angle" for k in th.field_kinds):
            from .runtime.models.torus_diffusion import train_torus_diffusion as fit
        if configs is None:
            raise SamplerError("a diffusion model learns from data: pass an ensemble "
                               "(--data ENSEMBLE.h5; see 'theoryc sample')")
        args = {"data": configs, "schedule": pick_schedule(th, options.pop("schedule", None))}
    refuse_unknown_options(options, [fit], f"{model} training", ignore=("theory_like",))
    dtype_option(options)
    checkpoint = options.pop("checkpoint", f"{output}.ckpt" if output else None)
    if resume and (checkpoint is None or not Path(checkpoint).exists()):
        if output and Path(output).exists():
            return finished_model(output, th, model)
        note(f"no checkpoint {checkpoint} to resume: training from the beginning")
    # a checkpoint of another theory or other settings is refused by the trainer, which reads it
    trained = fit(th, **args, checkpoint=checkpoint, resume=resume, **options)
    written = bool(output) and is_main()     # torchrun: rank 0 writes the model file
    if written:
        save_model(trained, output, th)
        Path(checkpoint).unlink(missing_ok=True)     # finished: nothing left to resume
    return Trained(trained, trained.kind, trained.history, trained.meta.get("training", {}),
                   Path(output) if written else None)


def refuse_unknown_options(options: dict, takers, what: str, ignore=()) -> None:
    """One line naming the options that none of the functions `takers` has a parameter for
    (`what`: 'sampler hmc', 'flow training')."""
    import inspect
    from .runtime.errors import SamplerError
    accepted = set().union(*(inspect.signature(f).parameters for f in takers)) - set(ignore)
    unknown = set(options) - accepted
    if unknown:
        raise SamplerError(f"{what} has no option {', '.join(sorted(unknown))}")


def dtype_option(options: dict) -> None:
    """A dtype given by name ('float32') becomes the torch dtype, in place."""
    import torch
    if isinstance(options.get("dtype"), str):
        options["dtype"] = getattr(torch, options["dtype"])


def refuse_data_only(th) -> str:
    return (f"theory '{th.name}' has no action (it declares a data set's shape and schedules): "
            "only a diffusion model learns it, from data (theoryc train THEORY --model diffusion "
            "--data DATA.h5 --x DATASET), and generates from it (--sampler diffusion)")


def conditioned(draw, model, conditions, n, exact):
    """sample_conditional with the --condition values for a conditional diffusion model;
    `draw` itself for any other model (which takes no conditions)."""
    from .runtime.errors import SamplerError
    from .runtime.models.conditional import is_conditional, sample_conditional
    if not is_conditional(model):
        if conditions:
            raise SamplerError("--condition: this model is not conditional (train one with "
                               "--x DATASET --condition DATASET)")
        return draw
    if exact:
        raise SamplerError("--exact reweights to a theory's action; a conditional model of "
                           "external data has none to reweight to")
    values = condition_values(model, list(conditions or ()), n)
    return lambda model, n, **options: sample_conditional(model, n, values, **options)


def external_data(th, path, x_name, conditions) -> dict:
    """train_conditional's data, conditions and their specs from an HDF5 file's datasets."""
    from .runtime.errors import SamplerError
    from .runtime.io.dataset import read_training_set
    if path is None:
        raise SamplerError("--x names a dataset of a data file: give it with --data DATA.h5")
    data, tensors, specs = read_training_set(path, x_name, conditions, tuple(th.shape))
    return {"data": data.float(), "conditions": tensors, "specs": specs}


def condition_values(model, values, n: int) -> list:
    """`--condition VALUE|FILE` per condition of a conditional model, as tensors of 1 or n rows:
    VALUE is numbers separated by commas (a scalar condition's k values), FILE a .npy array
    (read without pickle) of one condition, or of one per sample."""
    import numpy as np
    import torch
    from .runtime.errors import SamplerError
    specs = model.net.specs
    if len(values) != len(specs):
        names = ", ".join(s["name"] for s in specs)
        raise SamplerError(f"the model is conditioned on {names}: give --condition once for each, "
                           f"in that order ({len(values)} given)")
    lattice = tuple(model.config_shape[1:])
    out = []
    for spec, value in zip(specs, values):
        if str(value).endswith(".npy"):
            array = np.load(value, allow_pickle=False).astype(np.float64)
        else:
            try:
                array = np.array([float(v) for v in str(value).split(",")])
            except ValueError:
                raise SamplerError(f"--condition {value}: give numbers (a,b,...) or a .npy file "
                                   f"for condition '{spec['name']}'") from None
        one = (spec["width"],) if spec["kind"] == "scalar" else (spec["width"], *lattice)
        rows = array.size // max(1, int(np.prod(one)))
        if array.size != rows * int(np.prod(one)) or rows not in (1, n):
            raise SamplerError(f"--condition {value}: condition '{spec['name']}' takes "
                               f"{int(np.prod(one))} numbers {one} per sample, for 1 or {n} samples")
        out.append(torch.as_tensor(array.reshape(rows, *one)))
    return out


def finished_model(output, th, kind: str) -> Trained:
    """--resume of a training that has finished: its model file (checked against the theory),
    said and not retrained."""
    from .runtime.models import FLOW_KINDS
    trained = trained_model(output, th, FLOW_KINDS if kind == "flow" else ("diffusion",), None)
    note(f"{output} is already complete: nothing to resume (to train it again, drop --resume "
         "and add --force)")
    return Trained(trained, trained.kind, trained.history, trained.meta.get("training", {}),
                   Path(output))


def training_data(data, th=None):
    """Configurations to train on: an ensemble file's (of this theory, lattice and parameters:
    checked against the fingerprint it records), or a tensor/array as given."""
    import torch
    from .runtime.errors import SamplerError
    from .runtime.io.provenance import ensemble_fingerprint, fingerprint, refuse_mismatch
    if not isinstance(data, (str, Path)):
        return torch.as_tensor(data)
    ens = open_ensemble(data, configs=True)
    if th is not None:
        refuse_mismatch(data, "was sampled for", ensemble_fingerprint(ens), fingerprint(th),
                        "sample training data for this theory")
        if tuple(ens.configs.shape[2:]) != tuple(th.shape):
            raise SamplerError(f"{data} holds configurations of shape {tuple(ens.configs.shape[2:])}"
                               f"; theory '{th.name}' has {tuple(th.shape)} (sample data for it)")
    return torch.as_tensor(ens.configs)


def pick_schedule(th, name):
    """The theory's schedule of that name (default: its first), or a one-line error."""
    from .runtime.errors import SamplerError
    if not th.schedules:
        raise SamplerError(f"theory '{th.name}' declares no schedule; add 'schedule ve {{ ... }}'")
    name = name or next(iter(th.schedules))
    if name not in th.schedules:
        raise SamplerError(f"no schedule '{name}' in theory '{th.name}'; it has: {', '.join(th.schedules)}")
    return th.schedules[name]


# --------------------------------------------------------------------------------- measurement

def measure(path_or_run, theory=None, cumulants: int | None = None, *, params: dict | None = None,
            batch_size: int = 4096, discard: int = 0, bin_size: int = 1, of=None,
            partial: bool = False):
    """What `theoryc measure` computes, as a `Measurement` (runtime/measure.py): observables as
    (chains, n) arrays, the summary dict the CLI prints as JSON (.summary; .table() is the text),
    the sampler's settings.

    path_or_run: an ensemble file, or a sampler's run in memory (then `theory` says what to
    measure on its configurations when it carries no observables). theory: None for the
    observables the file stores and the estimates of the theory it records; a loaded theory, or
    a name/path, to evaluate that theory's observables and estimates on the stored
    configurations (re-measurement: same fields and lattice). A name/path theory takes the
    values of the parameters it shares with the ensemble's; `params` override them.
    cumulants: add kappa_2..kappa_N of every observable (of those named in `of`).
    discard: drop each chain's first N configurations; bin_size: bins of K configurations for
    the errors. partial: measure what an interrupted run (OUT or OUT.ckpt) has so far.
    """
    from .runtime import measure as m
    from .runtime.errors import SamplerError
    cuts = {"discard": discard, "bin_size": bin_size, "of": of}
    path = ensemble_path(path_or_run)
    if path is None:
        return measure_run(path_or_run, theory, cumulants, cuts)
    if partial:
        from .runtime.io.partial import partial_ensemble
        ens = partial_ensemble(path)
        if theory is not None:
            raise SamplerError("--partial measures the stored observables; --theory needs the "
                               "finished file")
        return m.measure_ensemble(ens, ensemble_theory(ens), cumulants, **cuts)
    ens = open_ensemble(path)
    recorded = ensemble_theory(ens)
    if theory is None:
        return m.measure_ensemble(ens, recorded, cumulants, **cuts)
    other = theory_for(theory, ens, params)
    return m.remeasure(path, ens, other, recorded, cumulants, batch_size, **cuts)


def observe(path, theory, output, *, params: dict | None = None, batch_size: int = 4096):
    """What `theoryc observe` does: write `output`, a copy of the ensemble at `path` (its stored
    configurations, their stats and log weights) with `theory`'s observables, attributes and
    source, so that `measure output` gives its estimates. Returns (chains, n)."""
    from .runtime.measure import write_observed
    ens = open_ensemble(path)
    return write_observed(path, output, theory_for(theory, ens, params), ensemble_theory(ens),
                          batch_size)


def ensemble_path(path_or_run):
    """The file behind `measure`'s argument: a path, or a run streamed to a file; else None."""
    if isinstance(path_or_run, (str, Path)):
        return path_or_run
    path = getattr(path_or_run, "path", None)
    return path if path is not None and getattr(path_or_run, "configs", None) is None else None


def measure_run(run, theory, cumulants, cuts=None):
    """`measure` of a run in memory: its own observables, or those of `theory` on its configs;
    without `theory`, the estimates of the theory the run's configurations were sampled from
    when the run knows it (`run.theory`)."""
    from .runtime.errors import SamplerError
    from .runtime.io.ensemble import Ensemble
    from .runtime.measure import measure_ensemble, measure_observables
    th = load(theory) if isinstance(theory, (str, Path)) else theory
    if th is None:
        th = getattr(run, "theory", None)
    observables = getattr(run, "observables", None)
    if th is not None and run.configs is not None:
        observables = measure_observables(th, run.configs)
    if not observables:
        raise SamplerError("this run carries no observables: pass the theory to measure on it")
    attrs = {"summary": run.summary, "settings": run.settings,
             "theory_name": th.name if th is not None else ""}
    return measure_ensemble(Ensemble(None, observables, run.stats, run.log_weights, attrs), th,
                            cumulants, **(cuts or {}))


def open_ensemble(path, configs: bool = False):
    """An ensemble file read back (without its configurations unless asked), or a one-line
    error for a file that is not one."""
    from .runtime.errors import SamplerError
    from .runtime.io.ensemble import read_ensemble
    if not Path(path).is_file():
        raise SamplerError(f"no such ensemble file: {path}")
    try:
        return read_ensemble(path, configs=configs)
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise SamplerError(f"{path} is not an ensemble file theoryc wrote ({err})") from None


def ensemble_theory(ens):
    """The theory an ensemble records, compiled with the parameters it was sampled at (None when
    the file records no source)."""
    from .runtime.io.attrs import decode_params
    source = ens.attrs.get("theory_source")
    if not source:
        return None
    return load_text(source, f"{ens.attrs.get('theory_name') or 'theory'}.theory",
                     **decode_params(ens.params))


def theory_for(theory, ens, params: dict | None = None):
    """The theory to re-measure an ensemble with: a loaded one as given; a name/path loaded with
    the ensemble's values of the parameters it declares, then `params`."""
    from .runtime.errors import SamplerError
    from .runtime.io.attrs import decode_params
    if not isinstance(theory, (str, Path)):
        if params:
            raise SamplerError("params apply to a theory given by name or path, not a loaded one")
        return theory
    declared = load(theory).params
    values = {k: v for k, v in decode_params(ens.params).items() if k in declared}
    values.update(params or {})
    return load(theory, **values)

# ------------------------------------------------------------------------- end of measurement
