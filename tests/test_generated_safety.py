"""Issue 8, property test: theories with hostile identifiers and comments compile to modules that
pass the AST whitelist, carry none of the file's comments, and whose force is autograd of the
action.

The identifiers are valid for the grammar ([A-Za-z_][A-Za-z0-9_]*) but biased to what can break
a generated Python module: keywords, builtins, dunders, module names and the generated module's
own names. The comments hold quotes, triple quotes, backslashes, unicode and the characters
Python's str.splitlines() breaks at but the lexer does not (\\f \\r \\x85 U+2028), after
statements and inside continued lines.
"""
from __future__ import annotations

import builtins
import keyword

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Words the language itself gives a meaning (LANGUAGE.md): not names a user can pick.
LANGUAGE_WORDS = {"theory", "lattice", "field", "param", "symmetry", "action", "observable",
                  "estimate", "schedule", "drift", "diffusion", "real", "spin", "angle", "link",
                  "gauge", "let", "in", "x", "t", "mu", "nu", "sum", "mean", "exp", "log", "sqrt",
                  "sin", "cos", "tan", "sinh", "cosh", "tanh", "abs", "re", "im", "conj", "wrap",
                  "pos", "pi", "volume", "dim"}
TEMPLATE_NAMES = {"L"}       # the template's own param
MODULE_NAMES = ["cfg", "obs", "fill", "per_config", "SITES", "force", "drift", "observables",
                "estimate_inputs", "ESTIMATES", "SYMMETRIES", "SCHEDULES", "NAME", "LATTICE",
                "FIELDS", "FIELD_KINDS", "IS_COMPLEX", "PARAMS", "OBSERVABLES", "Tabulated", "real_",
                "imag", "conj_", "a", "tmp0", "avg0", "roll", "torch", "theoryc", "os", "sys",
                "subprocess", "np", "math", "sympy", "importlib"]
DUNDERS = ["__builtins__", "__import__", "__name__", "__spec__", "__loader__", "__getattr__",
           "__file__", "__dict__", "__class__", "__init__", "__all__", "__doc__", "_"]
HOSTILE_NAMES = sorted((set(keyword.kwlist) | set(dir(builtins)) | set(MODULE_NAMES) | set(DUNDERS))
                       - LANGUAGE_WORDS - TEMPLATE_NAMES)


def allowed(name: str) -> bool:
    return name not in LANGUAGE_WORDS and name not in TEMPLATE_NAMES and not (name[0] == "e" and name[1:].isdigit())


identifiers = st.one_of(
    st.sampled_from(HOSTILE_NAMES),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(allowed),
)
COMMENT_PIECES = ['"""', "'''", '"', "'", "\\", "\\\\", "\\n", "\f", "\r", "\x85", "\u2028",
                  "\u2029", "\x0b", "\x1c", "é", "Ω", "𝔊", "\ufeff", "{", "}", "%s", "\t",
                  '"""; import os; os.system("touch canary") #', "exec(", ")", "#", " "]
comment_text = st.lists(st.one_of(st.sampled_from(COMMENT_PIECES),
                                  st.text(st.characters(blacklist_characters="\n\x00",
                                                        blacklist_categories=("Cs",)), max_size=6)),
                        max_size=6).map("".join)


@st.composite
def theories(draw):
    """A phi^4 variant (1-2 fields, 1-2 dims, small L) with hostile names and comments. Every
    comment carries a marker `cmtNNNN` that must not reach the generated code."""
    names = draw(st.lists(identifiers, min_size=11, max_size=11, unique=True))
    (tname, f1, f2, kappa, lam, g, o1, o2, e1, e2, sname), sparam = names, draw(identifiers)
    if sparam in names:
        sparam = sparam + "_s"
    markers = []

    def c():
        markers.append(f"cmt{len(markers):04d}")
        return f"  # {draw(comment_text)}{markers[-1]}{draw(comment_text)}"

    two = draw(st.booleans())
    dims = draw(st.integers(1, 2))
    L = draw(st.integers(2, 4))
    k, la, gv = (f"{draw(st.integers(0, top)) / 1000:.3f}" for top in (300, 500, 200))
    fields = [f1, f2] if two else [f1]
    local = " + ".join(f"(1 - 2*{lam}) * {f}(x)^2 + {lam} * {f}(x)^4" for f in fields)
    hop = " + ".join(f"{f}(x) * {f}(x + mu)" for f in fields)
    mix = f"+ {g} * {f1}(x)^2 * {f2}(x)^2" if two else ""
    lines = [
        f"#{draw(comment_text)}",
        f"theory {tname}{c()}",
        f"param L = {L}{c()}",
        f"lattice {' x '.join(['L'] * dims)}{c()}",
        f"field {', '.join(fields)} : real{c()}",
        f"symmetry {', '.join(f'{f} -> -{f}' for f in fields)}{c()}",
        f"param {kappa} = ({k}{c()}",
        f"    ){c()}",
        f"param {lam} = {la}{c()}",
        f"param {g} = {gv}{c()}",
        f"action = sum(x)[ -2*{kappa} * sum(mu)[ {hop} ]{c()}",
        f"                 + {local} {mix} ]{c()}",
        f"observable {o1} = mean(x)[ {f1}(x){c()}",
        f"    ]{c()}",
        f"observable {o2} = {o1}^2{c()}",
        f"estimate {e1} = volume * (<{o2}> - <{o1}>^2){c()}",
        f"estimate {e2} = <({o1}{c()}",
        f"    )^2>{c()}",
        f"schedule {sname} {{{c()}",
        f"    param {sparam} = 10{c()}",
        f"    drift = 0{c()}",
        f"    diffusion = {sparam}^t{c()}",
        f"}}{c()}",
    ]
    return "\n".join(lines) + "\n", tuple(markers), names + [sparam]


def compile_or_refuse(text, names):
    """The generated code, or None when the compiler refused one of the names with a located
    message (issue 8 lets the Namer refuse or rename a Python name)."""
    from theoryc.compiler.pipeline import compile_text
    from theoryc.dsl.errors import TheoryError
    try:
        return compile_text(text, "t.theory").code
    except TheoryError as err:
        message = err.format()
        assert "line " in message and any(f"'{n}'" in message for n in names), message
        return None


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THEORYC_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(theories())
def test_generated_module_passes_the_whitelist_and_holds_no_comment(case):
    from theoryc.compiler.verify import verify_generated
    text, markers, names = case
    code = compile_or_refuse(text, names)
    if code is None:
        return
    verify_generated(code)          # raises UntrustedCode for anything outside the whitelist
    for m in markers:
        assert m not in code, f"comment text {m} reached the generated code"


@SETTINGS
@given(theories())
def test_generated_force_is_autograd_of_the_action(case):
    from theoryc import api
    from theoryc.dsl.errors import TheoryError
    text, markers, names = case
    try:
        th = api.load_text(text, "t.theory")
    except TheoryError as err:
        message = err.format()
        assert "line " in message and any(f"'{n}'" in message for n in names), message
        return
    code = th.path.read_text()
    for m in markers:
        assert m not in code, f"comment text {m} reached the generated code"
    gen = torch.Generator().manual_seed(0)
    cfg = torch.randn((3, *th.shape), generator=gen, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(th.action(cfg).sum(), cfg)
    force = th.force(cfg.detach())
    assert force.shape == cfg.shape
    # float64 round-off of sums over at most 16 sites of O(10) terms is ~1e-14; 1e-10 leaves room
    assert torch.allclose(force, grad, rtol=0, atol=1e-10), (force - grad).abs().max()
    obs = th.observables(cfg.detach())
    assert set(obs) == set(th.observable_names)
