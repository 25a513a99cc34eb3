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
        self.field_names, self.field_kinds = tuple(m.FIELDS), tuple(m.FIELD_KINDS)
        self.is_complex, self.params = m.IS_COMPLEX, dict(m.PARAMS)
        self.observable_names = tuple(m.OBSERVABLES)
        self.action, self.force, self.drift = m.action, m.force, m.drift
        self.observables, self.estimate_inputs = m.observables, m.estimate_inputs
        self.estimates = {n: Estimate(n, tuple(inputs), fn) for n, (inputs, fn) in m.ESTIMATES.items()}
        self.schedules = {n: Schedule(n, *fns) for n, fns in m.SCHEDULES.items()}
        self.symmetries = list(m.SYMMETRIES)
        # spin theories with a local action: single-flip changes of S for local Metropolis
        self.flip_delta = getattr(m, "flip_delta", None)
        self.flip_offsets = tuple(getattr(m, "FLIP_OFFSETS", ()))

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
