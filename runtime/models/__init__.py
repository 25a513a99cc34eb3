"""Generative models (flows, autoregressive networks, diffusion) and the one trainer.

`save_model` / `load_model` are the only way a model reaches or leaves a file: one format for
every kind (runtime/io/modelfile.py), each kind supplying what it stores and how it rebuilds.
The kinds' modules are imported inside the functions, so importing this package stays cheap
and no kind's module imports another.
"""
from __future__ import annotations

FLOW_KINDS = ("flow", "van")


def save_model(model, path, theory=None) -> None:
    """Write a trained flow, VAN or diffusion model (atomically). theory: the theory it was
    trained for; by default the one recorded at training time (`model.meta`)."""
    from theoryc.runtime.io.modelfile import theory_record, write_model_file
    if getattr(model, "on_torus", False):
        from theoryc.runtime.models.torus_diffusion import torus_diffusion_state as state_of
    elif model.kind == "diffusion":
        from theoryc.runtime.models.diffusion import diffusion_state as state_of
    else:
        from theoryc.runtime.models.variational import flow_state as state_of
    record = theory_record(theory) if theory is not None else (getattr(model, "meta", {}) or {})
    contents = state_of(model)
    write_model_file(path, kind=contents["kind"], theory=record, settings=contents["settings"],
                     state_dict=contents["state_dict"], history=getattr(model, "history", {}),
                     extra=contents["extra"])


def load_model(path, *, kinds=None, device=None, dtype=None, schedules=None):
    """Rebuild the model in a model file. kinds: the kinds the caller can use (a file of another
    kind is a one-line error, and so is one whose settings do not rebuild its weights);
    schedules: for a diffusion model, the compiled theory's schedules by name, of which the stored
    one is used (without it, the file's tabulated copy); dtype: default the saved one (flows) or
    float32 (diffusion). The model carries `.history` and `.meta` (its theory)."""
    from theoryc.runtime.errors import SamplerError
    from theoryc.runtime.io.modelfile import load_model_file, model_meta
    kind, payload = load_model_file(path)
    if kinds is not None and kind not in kinds:
        raise SamplerError(f"{path} holds a {kind} model; this needs a {' or '.join(kinds)} model")
    try:
        model = _rebuild(kind, payload, device, dtype, schedules)
    except (KeyError, TypeError, ValueError, RuntimeError, StopIteration) as err:
        # a file whose settings do not build the network its weights belong to
        first_line = " ".join(str(err).splitlines()[:1])
        raise SamplerError(f"{path} does not hold a usable {kind} model "
                           f"({type(err).__name__}: {first_line})") from None
    model.history = payload.get("history", {})
    model.meta = dict(model_meta(payload), training=payload["settings"].get("training", {}),
                      history=model.history)
    return model


def _rebuild(kind, payload, device, dtype, schedules):
    if kind == "diffusion":
        import torch
        from theoryc.runtime.models.diffusion import diffusion_from_file
        schedule = (schedules or {}).get(payload.get("schedule_name"))
        if payload["settings"].get("torus"):       # angles: runtime/models/torus_diffusion.py
            from theoryc.runtime.models.torus_diffusion import torus_diffusion_from_file
            return torus_diffusion_from_file(payload, schedule=schedule, device=device,
                                             dtype=dtype or torch.float32)
        return diffusion_from_file(payload, schedule=schedule, device=device,
                                   dtype=dtype or torch.float32)
    from theoryc.runtime.models.variational import flow_from_file
    return flow_from_file(payload, device=device, dtype=dtype)
