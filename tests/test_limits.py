"""The compiler's budgets: unrolled terms and compile time end in a located message, and the
nested deadlines behave (an inner limit gives up alone, the outer one still holds)."""
from __future__ import annotations

import time

import pytest

import theoryc
from theoryc.compiler import budget, lower
from theoryc.compiler.pipeline import compile_text
from theoryc.dsl.errors import TheoryError

NESTED = """theory t
lattice 4 x 4 x 4
field phi : real
action = sum(x)[ sum(mu)[ sum(nu)[ sum(rho)[ phi(x + mu + nu + rho) * phi(x) ] ] ] ]
"""
SLOW_SCHEDULE = """theory t
field x : real
action = x^2
schedule s {
  drift = -(1 + t/10 + t^2/10 + t^3/10)^200 * x / 2
  diffusion = (1 + t/10 + t^2/10 + t^3/10)^200
}
"""


def test_unrolling_beyond_the_budget_is_refused_at_the_statement(monkeypatch):
    monkeypatch.setattr(lower, "MAX_UNROLLED_TERMS", 30)
    with pytest.raises(TheoryError) as err:
        compile_text(NESTED, "t.theory")
    assert "the action unrolls to more than 30 terms" in err.value.message and err.value.span.line == 4


@pytest.mark.skipif(not budget.usable(), reason="needs SIGALRM")
def test_a_compilation_over_its_time_is_refused_at_the_statement(monkeypatch):
    monkeypatch.setattr(budget, "MAX_COMPILE_SECONDS", 1)
    start = time.monotonic()
    with pytest.raises(TheoryError) as err:
        compile_text(SLOW_SCHEDULE, "t.theory")
    assert time.monotonic() - start < 10
    assert "compiling schedule 's' takes more than 1 s" in err.value.message and err.value.span.line == 4


@pytest.mark.skipif(not budget.usable(), reason="needs SIGALRM")
def test_nested_deadlines():
    with pytest.raises(budget.CompileTimeout):
        with budget.time_limit(0.3, budget.CompileTimeout):
            with pytest.raises(TimeoutError):
                with budget.time_limit(0.05):
                    time.sleep(1)
            time.sleep(1)                       # the outer deadline still fires
    with budget.time_limit(5):
        pass                                   # no alarm is left behind
    time.sleep(0.1)
